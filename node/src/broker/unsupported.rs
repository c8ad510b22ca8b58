//! Queues are not implemented in this release. Their methods are
//! registered (so that wire ids stay stable and clients learn the table) and answer
//! every call with `UnknownMethod` and a message saying so: nothing is faked.

use neo_protocol::api::BROKER_METHODS;
use neo_protocol::{ErrorCode, Method, MethodBuilder, RpcError};

/// The wire ids that are not implemented (`queue_receive`, `queue_ack`, `queue_nack`).
const UNSUPPORTED_IDS: std::ops::RangeInclusive<u16> = 13..=15;

pub(crate) fn methods() -> Vec<(&'static str, Method)> {
    BROKER_METHODS
        .iter()
        .filter(|(id, _, _, _)| UNSUPPORTED_IDS.contains(id))
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
                             (queues are planned)"
                        ),
                    ))
                });
            (name, m)
        })
        .collect()
}
