//! The HTTP admin listener (port 7072): a minimal HTTP/1.1 server over tokio, one
//! request per connection (`Connection: close`): GET for reads, POST (JSON body) for
//! the console's actions; and the built-in web console (`crate::console`).
//!
//! | path | answer |
//! |---|---|
//! | `/health` | 200 `ok`: the process is up |
//! | `/ready` | 200 when the metadata group and every partition group hosted here have a leader, no hosted replica stopped (`groups_stopped`: its log failed, being reopened) and this node is registered; else 503. JSON body either way |
//! | `/metrics` | OpenMetrics text (`prometheus-client`; see docs/metrics.md) |
//! | `/v1/cluster` | JSON: nodes (id, client and cluster addresses, alive), controller, partitions (topic, partition, group, leader, replicas) |
//! | `/v1/queues` | JSON: every queue (settings) with the counts of its partitions this node leads |
//! | `/v1/groups` | JSON: every consumer group (name, state, members) from this node's applied metadata, and the coordinator |
//! | `/v1/groups/{name}` | JSON: the group as `neo group describe --format json` prints it (members, and per partition committed offset, log end offset, lag), asked of the cluster through this node's client port (TLS too: see `crate::admin_tls`); 404 for an unknown group |
//! | `/v1/partitions/{topic}/{p}/digest` | JSON digest of this replica's committed log (for comparing replicas) |
//! | `/`, `/console/{file}` | the web console's static files (embedded in the binary) |
//! | `/v1/topics`, `/v1/topics/{t}/messages`, `/v1/queues/{name}`, `/v1/stats` | the console's reads (see `crate::console`) |
//! | POST `/v1/topics`, `/v1/topics/{t}/delete`, `/v1/groups/{g}/reset-offsets`, `/v1/queues/{q}/purge`, `/v1/queues/{q}/redrive` | the console's actions (see `crate::console`) |
//!
//! With security on (`--auth`), every path but `/health`, `/ready`, the console's
//! static files (and `/metrics` with `--metrics-open true`) needs `Authorization:
//! Bearer <JWT or API key>` and the path's permission: 401 / 403 otherwise (see
//! `crate::security::http`).
//!
//! The console, its files and the `/v1` API answer only a `Host` that is an IP address,
//! `localhost`, a cluster node's host name or one of `--http-allowed-hosts` (403
//! otherwise: the DNS-rebinding guard, see `host`).
//!
//! A POST must carry `Content-Type: application/json` and `X-Neo-Console: 1` (CSRF
//! guard: a cross-site form can send neither) and a `Content-Length` body of at most
//! [`request::REQUEST_BODY_BYTES_MAX`]; bad requests get a typed 4xx (`request`).
//! Every answer carries `Cache-Control: no-cache`, `X-Content-Type-Options: nosniff`
//! and a strict `Content-Security-Policy` (no inline script or style, same origin
//! only, no framing).
//!
//! Limits: request head at most [`REQUEST_HEAD_BYTES_MAX`], head and body read within
//! [`REQUEST_TIMEOUT_MS`]; at most `http_connections_max` connections at once (more
//! wait in the listen backlog). Every call into the cluster has its own deadline
//! below that.

mod host;
mod request;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub(crate) use host::host_of;
pub(crate) use request::{BadRequest, Head, Method, json_body, percent_decode, query_u64};
pub(crate) use views::caller_client;

use crate::node::Shared;
use crate::security::http as http_auth;

/// Largest request head (request line + headers) read.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// A request must arrive (and its answer be written) within this long.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

/// The `Content-Security-Policy` of every answer: same-origin scripts, styles and
/// fetches only, no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(shared.limits.http_connections_max));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let (socket, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
            let _ = tokio::time::timeout(timeout, connection(socket, shared)).await;
            drop(permit);
        });
    }
}

/// One answer.
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub(crate) fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// JSON, with `<`, `>` and `&` escaped as `\u003c`, `\u003e`, `\u0026` (they
    /// occur only inside strings, so the value is the same; no byte of the answer can
    /// be taken for markup even by a client that sniffs).
    pub(crate) fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: format!("{}\n", json_text(&v)),
        }
    }

    /// `{"error": reason}` with `status`.
    pub(crate) fn error(status: u16, reason: impl std::fmt::Display) -> Reply {
        Reply::json(status, json!({ "error": reason.to_string() }))
    }
}

/// `v` as JSON text with `<`, `>` and `&` escaped (see [`Reply::json`]).
pub(crate) fn json_text(v: &serde_json::Value) -> String {
    let text = v.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

impl From<BadRequest> for Reply {
    fn from(b: BadRequest) -> Reply {
        Reply::error(b.status, b.reason)
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Internal Server Error",
    }
}

async fn connection(mut socket: TcpStream, shared: Arc<Shared>) {
    let Ok(peer) = socket.peer_addr() else {
        return;
    };
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let reply = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end > REQUEST_HEAD_BYTES_MAX {
                break Reply::text(431, "request head too large\n");
            }
            let head = match request::parse_head(&buf[..end]) {
                Ok(head) => head,
                Err(bad) => break Reply::from(bad),
            };
            // The body (bounded by `parse_head`), read within the connection's timeout.
            let body_start = end + 4;
            while buf.len() < body_start + head.body_len {
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = &buf[body_start..body_start + head.body_len];
            break route(&shared, &head, body, peer).await;
        }
        if buf.len() >= REQUEST_HEAD_BYTES_MAX {
            break Reply::text(431, "request head too large\n");
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: {CONTENT_SECURITY_POLICY}\r\n\
         Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(reply.body.as_bytes()).await;
    let _ = socket.shutdown().await;
}

async fn route(shared: &Arc<Shared>, head: &Head, body: &[u8], peer: SocketAddr) -> Reply {
    let segments: Vec<&str> = head.path.trim_matches('/').split('/').collect();
    if head.method == Method::Post
        && let Err(bad) = request::check_csrf(head)
    {
        return bad.into();
    }
    // The DNS-rebinding guard (`host`): all but probes and metrics.
    if !matches!(segments.as_slice(), ["health"] | ["ready"] | ["metrics"])
        && let Err(bad) = host::check_host(head, &shared.http_allowed_hosts, |name| {
            shared.is_node_host(name)
        })
    {
        return bad.into();
    }
    // Probes, the console's static files (and metrics, if configured so) stay open; the
    // rest needs a bearer token when security is on (see `crate::security::http`).
    let open = match segments.as_slice() {
        ["health"] | ["ready"] => true,
        ["metrics"] => shared.metrics_open,
        s => head.method == Method::Get && crate::console::is_asset(s),
    };
    let caller = if open {
        None
    } else {
        match http_auth::caller(shared, &head.text, peer) {
            Ok(caller) => caller,
            Err(refusal) => return refused(refusal),
        }
    };
    let caller = caller.as_ref();
    if let Err(refusal) = http_auth::check_path(shared, caller, head.method, &segments) {
        return refused(refusal);
    }
    if head.method == Method::Post {
        return crate::console::post(shared, &segments, body, caller).await;
    }
    match segments.as_slice() {
        ["health"] => Reply::text(200, "ok\n"),
        ["ready"] => views::ready(shared),
        ["metrics"] => {
            // A scrape walks every hosted group and reads /proc (the open-file count
            // lists /proc/self/fd): O(partitions) of synchronous work, kept off the
            // executor's workers.
            let shared = Arc::clone(shared);
            match tokio::task::spawn_blocking(move || shared.metrics.render(&shared.gauges())).await
            {
                Ok(body) => Reply {
                    status: 200,
                    content_type: crate::metrics::CONTENT_TYPE,
                    body,
                },
                Err(e) => Reply::error(500, format!("rendering the metrics failed: {e}")),
            }
        }
        ["v1", "cluster"] => Reply::json(200, views::cluster(shared)),
        ["v1", "groups"] => Reply::json(200, views::groups(shared, caller)),
        ["v1", "groups", name] => views::group(shared, name, caller).await,
        ["v1", "queues"] => Reply::json(200, views::queues(shared, caller)),
        ["v1", "partitions", topic, p, "digest"] => views::digest(shared, topic, p).await,
        s => match crate::console::get(shared, s, &head.query, caller).await {
            Some(reply) => reply,
            None => Reply::text(404, "not found\n"),
        },
    }
}

fn refused(r: http_auth::Refusal) -> Reply {
    Reply::error(r.status, r.reason)
}

/// `neo-node healthcheck`: GET `/health` at `addr`; `true` on a 200 within `timeout`.
pub async fn healthcheck(addr: &str, timeout: Duration) -> bool {
    let check = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 1024 {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        Some(line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_escape_markup_characters() {
        let v = json!({ "error": "bad name \"<script>a&b</script>\"", "n": 1 });
        let text = json_text(&v);
        assert!(
            !text.contains('<') && !text.contains('>') && !text.contains('&'),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
