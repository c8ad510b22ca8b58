//! The node's HTTP admin API as the runner uses it: `/ready`, `/v1/cluster` (who leads
//! which partition) and `/v1/partitions/{topic}/{p}/digest`. A minimal HTTP/1.0 GET
//! over tokio: the node answers one request per connection.
//!
//! With security on, every path but `/health` and `/ready` needs
//! `Authorization: Bearer <token>` (docs/security.md, "The HTTP admin port"): the
//! functions that read those take the token ([`ClientSecurity::bearer`]).
//!
//! [`ClientSecurity::bearer`]: crate::security::ClientSecurity::bearer

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::history::ReplicaDigest;

/// Bound on one admin request (connect, write, read).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// `GET path` on `addr`, with `Authorization: Bearer <token>` when a token is given:
/// status code and body.
pub async fn get(addr: &str, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = request_head(addr, path, token);
        stream.write_all(head.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(HTTP_TIMEOUT, request)
        .await
        .with_context(|| format!("GET http://{addr}{path}: timed out"))?
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The request line and headers of `GET path`.
fn request_head(addr: &str, path: &str, token: Option<&str>) -> String {
    let auth = match token {
        Some(token) => format!("Authorization: Bearer {token}\r\n"),
        None => String::new(),
    };
    format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
}

/// Whether the node at `addr` answers `/ready` with 200 (open even with security on).
pub async fn ready(addr: &str) -> bool {
    matches!(get(addr, "/ready", None).await, Ok((200, _)))
}

/// One partition in `/v1/cluster`.
#[derive(Debug, Clone, Deserialize)]
pub struct PartitionView {
    /// Topic.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// Leader as this node sees it (`null` when it does not know or host it).
    pub leader: Option<u64>,
    /// Replica node ids.
    pub replicas: Vec<u64>,
}

/// `/v1/cluster` (the fields the runner needs).
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterView {
    /// The answering node.
    pub node_id: u64,
    /// Every partition.
    pub partitions: Vec<PartitionView>,
}

/// The cluster as the node at `addr` sees it.
pub async fn cluster(addr: &str, token: Option<&str>) -> anyhow::Result<ClusterView> {
    let (status, body) = get(addr, "/v1/cluster", token).await?;
    if status != 200 {
        bail!("GET http://{addr}/v1/cluster: {status} {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("/v1/cluster of {addr}: {body}"))
}

/// The leaders of `topic`'s partitions, by majority of the claims of the nodes that
/// answer (a paused or isolated node may still believe it leads). Partitions nobody
/// names a leader for are absent.
pub async fn leaders(
    http: &[(u64, String)],
    topic: &str,
    token: Option<&str>,
) -> BTreeMap<u32, u64> {
    let views = futures::future::join_all(http.iter().map(|(_, a)| cluster(a, token))).await;
    let mut votes: BTreeMap<u32, BTreeMap<u64, usize>> = BTreeMap::new();
    for view in views.into_iter().flatten() {
        for p in view.partitions.iter().filter(|p| p.topic == topic) {
            if let Some(leader) = p.leader {
                *votes
                    .entry(p.partition)
                    .or_default()
                    .entry(leader)
                    .or_default() += 1;
            }
        }
    }
    votes
        .into_iter()
        .filter_map(|(p, v)| {
            v.into_iter()
                .max_by_key(|(id, n)| (*n, std::cmp::Reverse(*id)))
                .map(|(id, _)| (p, id))
        })
        .collect()
}

/// The replica sets of `topic`'s partitions, from the first node that answers.
pub async fn replicas(
    http: &[(u64, String)],
    topic: &str,
    token: Option<&str>,
) -> anyhow::Result<BTreeMap<u32, Vec<u64>>> {
    let mut last = None;
    for (_, addr) in http {
        match cluster(addr, token).await {
            Ok(view) => {
                return Ok(view
                    .partitions
                    .into_iter()
                    .filter(|p| p.topic == topic)
                    .map(|p| (p.partition, p.replicas))
                    .collect());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no node to ask")))
}

#[derive(Deserialize)]
struct DigestBody {
    node_id: u64,
    leader: bool,
    start_offset: u64,
    high_watermark: u64,
    batches: u64,
    bytes: u64,
    crc32: String,
}

/// The digest of the replica of `topic`/`partition` on the node at `addr`.
pub async fn digest(
    addr: &str,
    topic: &str,
    partition: u32,
    token: Option<&str>,
) -> anyhow::Result<ReplicaDigest> {
    let path = format!("/v1/partitions/{topic}/{partition}/digest");
    let (status, body) = get(addr, &path, token).await?;
    if status != 200 {
        bail!("GET http://{addr}{path}: {status} {}", body.trim());
    }
    let d: DigestBody =
        serde_json::from_str(&body).with_context(|| format!("{path} of {addr}: {body}"))?;
    Ok(ReplicaDigest {
        node: d.node_id,
        start_offset: d.start_offset,
        high_watermark: d.high_watermark,
        batches: d.batches,
        bytes: d.bytes,
        crc32: d.crc32,
        leader: d.leader,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_is_sent_only_with_a_token() {
        let open = request_head("127.0.0.1:7271", "/ready", None);
        assert_eq!(
            open,
            "GET /ready HTTP/1.0\r\nHost: 127.0.0.1:7271\r\nConnection: close\r\n\r\n"
        );
        let secure = request_head("127.0.0.1:7271", "/v1/cluster", Some("a.b.c"));
        assert!(secure.starts_with("GET /v1/cluster HTTP/1.0\r\n"));
        assert!(secure.contains("\r\nAuthorization: Bearer a.b.c\r\n"));
        assert!(secure.ends_with("\r\n\r\n"));
    }
}
