//! Consumer groups and queues are not implemented in this release. Their methods are
//! registered (so that wire ids stay stable and clients learn the table) and answer
//! every call with `UnknownMethod` and a message saying so: nothing is faked.

use neo_protocol::api::BROKER_METHODS;
use neo_protocol::{ErrorCode, Method, MethodBuilder, RpcError};

/// First wire id that is not implemented (`join_group`).
const FIRST_UNSUPPORTED_ID: u16 = 8;

pub(crate) fn methods() -> Vec<(&'static str, Method)> {
    BROKER_METHODS
        .iter()
        .filter(|(id, _, _, _)| *id >= FIRST_UNSUPPORTED_ID)
        .map(|(_, name, input, output)| {
            let name: &'static str = name;
            let m = MethodBuilder::new(name)
                .input(*input)
                .output(*output)
                .raw_sync_handler(move |_ctx, _body| {
                    Err(RpcError::new(
                        ErrorCode::UnknownMethod,
                        format!(
                            "neo.broker/{name} is not implemented in this release \
                             (consumer groups and queues are planned)"
                        ),
                    ))
                });
            (name, m)
        })
        .collect()
}
