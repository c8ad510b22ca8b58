//! Bearer tokens on the HTTP admin port (security on only): `/health` and `/ready` stay
//! open (probes), `/metrics` too with `--metrics-open true`; every other path needs
//! `Authorization: Bearer <token>` with a JWT or an API key the client port would
//! accept, and the permission of the path (checked by the broker's authorizer):
//!
//! | path | permission |
//! |---|---|
//! | `/metrics` | `describe` on `cluster:metrics` |
//! | `/v1/cluster` | `describe` on `cluster:cluster` |
//! | `/v1/groups` | the groups the caller may `describe` |
//! | `/v1/groups/{name}` | `describe` on `group:{name}` (and what its offsets need, as the caller) |
//! | `/v1/partitions/{topic}/{p}/digest` | `describe` on `topic:{topic}` |
//! | `/`, `/console/{file}` | none: the console's static files (no data) |
//! | `/v1/topics` | the topics the caller may `describe` (as the caller, through the client port) |
//! | `/v1/topics/{t}/messages` | `consume` on `topic:{t}` (what a fetch needs) |
//! | `/v1/queues/{q}` | `describe` on `queue:{q}` |
//! | `/v1/stats` | `describe` on `cluster:metrics` |
//! | POST `/v1/topics` | `create` on `topic:{name}` (checked once the body is read) |
//! | POST `/v1/topics/{t}/delete` | `delete` on `topic:{t}` |
//! | POST `/v1/groups/{g}/reset-offsets` | `consume` on `group:{g}` (and on the topic, as the caller) |
//! | POST `/v1/queues/{q}/purge` | `delete` on `queue:{q}` |
//! | POST `/v1/queues/{q}/redrive` | `consume` on `queue:{q}` (and `produce` on the sources, as the caller) |
//!
//! Every read of cluster data and every action is then done through the node's client
//! port as the caller (with its token), which checks the same permissions again.
//!
//! A missing or refused token is 401, a denial 403; neither says more than the client
//! port would.

use std::net::SocketAddr;

use neo_broker::SecurityContext;
use neo_protocol::PeerInfo;
use neo_security::authn::unix_now_secs;

use crate::node::Shared;

/// Who asks, as the bearer token proved, and the token (to act as the caller).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The security context of the request.
    pub ctx: SecurityContext,
    /// The token as sent.
    pub token: String,
}

/// Why a request was refused: the HTTP status and a short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// The `Authorization: Bearer` token of a request head (header names are
/// case-insensitive).
fn bearer(head: &str) -> Option<&str> {
    head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let value = value.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
            .filter(|t| !t.is_empty())
    })
}

/// The caller of a request on a node with security on (`Ok(None)`: security off).
pub(crate) fn caller(
    shared: &Shared,
    head: &str,
    peer: SocketAddr,
) -> Result<Option<Caller>, Refusal> {
    let Some(authenticators) = &shared.authenticators else {
        return Ok(None);
    };
    let Some(token) = bearer(head) else {
        return Err(Refusal {
            status: 401,
            reason: "security is on: send Authorization: Bearer <JWT or API key>".into(),
        });
    };
    let info = PeerInfo {
        addr: peer,
        identity: None,
    };
    match authenticators.identify(token.as_bytes(), &info, unix_now_secs()) {
        Ok(identity) => {
            if let Some(key_id) = identity.key_id.as_deref()
                && identity.method == neo_security::AuthMethod::ApiKey
                && !shared.broker.state().security.api_keys.is_valid(key_id)
            {
                return Err(Refusal {
                    status: 401,
                    reason: "the API key was revoked".into(),
                });
            }
            let mut ctx = SecurityContext::client(Some(identity.principal), peer);
            ctx.roles = identity.roles;
            Ok(Some(Caller {
                ctx,
                token: token.to_string(),
            }))
        }
        Err(e) => {
            tracing::info!(target: "neo::audit", %peer, "HTTP authentication refused: {e}");
            Err(Refusal {
                status: 401,
                reason: e.to_string(),
            })
        }
    }
}

/// Whether `caller` (none: security off) may `op` on `resource`:`name`, for filtering
/// a listing (a hidden entry is neither counted nor logged as a denial).
pub(crate) fn allows(
    shared: &Shared,
    caller: Option<&Caller>,
    resource: neo_security::ResourceType,
    name: &str,
    op: neo_security::Operation,
) -> bool {
    caller.is_none_or(|c| shared.broker.allows(&c.ctx, resource, name, op))
}

/// 403 unless `caller` (none: security off) may `op` on `resource`:`name`.
pub(crate) fn authorize(
    shared: &Shared,
    caller: Option<&Caller>,
    resource: neo_security::ResourceType,
    name: &str,
    op: neo_security::Operation,
) -> Result<(), Refusal> {
    let Some(caller) = caller else {
        return Ok(());
    };
    shared
        .broker
        .authorize(&caller.ctx, resource, name, op)
        .map_err(|e| Refusal {
            status: 403,
            reason: e.message,
        })
}

/// The permission check of a request path (before its handler runs); paths not
/// listed here need none of their own (listings filter what they show).
pub(crate) fn check_path(
    shared: &Shared,
    caller: Option<&Caller>,
    method: crate::http::Method,
    segments: &[&str],
) -> Result<(), Refusal> {
    use crate::http::{Method, percent_decode};
    use neo_security::{Operation as Op, ResourceType as R};
    let check = |resource, name: &str, op| authorize(shared, caller, resource, name, op);
    match (method, segments) {
        (Method::Get, ["metrics"] | ["v1", "stats"]) => check(R::Cluster, "metrics", Op::Describe),
        (Method::Get, ["v1", "cluster"]) => check(R::Cluster, "cluster", Op::Describe),
        (Method::Get, ["v1", "groups", name]) => {
            check(R::Group, &percent_decode(name), Op::Describe)
        }
        (Method::Get, ["v1", "partitions", topic, _, "digest"]) => {
            check(R::Topic, &percent_decode(topic), Op::Describe)
        }
        (Method::Get, ["v1", "topics", topic, "messages"]) => {
            check(R::Topic, &percent_decode(topic), Op::Consume)
        }
        (Method::Get, ["v1", "queues", name]) => {
            check(R::Queue, &percent_decode(name), Op::Describe)
        }
        (Method::Post, ["v1", "topics", topic, "delete"]) => {
            check(R::Topic, &percent_decode(topic), Op::Delete)
        }
        (Method::Post, ["v1", "groups", group, "reset-offsets"]) => {
            check(R::Group, &percent_decode(group), Op::Consume)
        }
        (Method::Post, ["v1", "queues", name, "purge"]) => {
            check(R::Queue, &percent_decode(name), Op::Delete)
        }
        (Method::Post, ["v1", "queues", name, "redrive"]) => {
            check(R::Queue, &percent_decode(name), Op::Consume)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_found_case_insensitively() {
        let head = "GET /v1/cluster HTTP/1.1\r\nHost: x\r\nauthorization: bearer abc.def.ghi\r\n";
        assert_eq!(bearer(head), Some("abc.def.ghi"));
        let head = "GET / HTTP/1.1\r\nAuthorization: Basic dXNlcg==\r\n";
        assert_eq!(bearer(head), None);
        assert_eq!(bearer("GET / HTTP/1.1\r\nAuthorization: Bearer \r\n"), None);
        assert_eq!(bearer("GET / HTTP/1.1\r\n"), None);
        // The request line is never a header.
        assert_eq!(bearer("authorization: Bearer x\r\n"), None);
    }
}
