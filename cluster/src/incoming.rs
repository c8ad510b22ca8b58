//! The cluster port's accept side: at most [`PEER_CONNECTIONS_MAX`] TCP connections at
//! once (counted before any TLS or HTTP/2 work). A connection above the limit is closed
//! as it is accepted: nothing is read from it, no handshake is started, no task is
//! spawned; a node that needs it retries later (its channel reconnects with backoff).
//!
//! [`PEER_CONNECTIONS_MAX`]: crate::limits::PEER_CONNECTIONS_MAX

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// An accepted connection and its share of the limit, released when the server drops
/// the connection.
pub(crate) struct LimitedConn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

/// Counts connections refused by the limit (shared with the [`crate::ServerHandle`]).
#[derive(Clone, Default)]
pub(crate) struct Refused(Arc<AtomicU64>);

impl Refused {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The accepted connections of `listener` (TCP_NODELAY set), at most `max` open at once;
/// the others are closed at once and counted in `refused`.
pub(crate) fn limited(
    listener: TcpListener,
    max: usize,
    refused: Refused,
) -> impl Stream<Item = io::Result<LimitedConn>> {
    let permits = Arc::new(Semaphore::new(max));
    // `Server::tcp_nodelay` is ignored by `serve_with_incoming*`: the accepted sockets
    // get TCP_NODELAY here. Without it a follower's AppendEntries answer (headers, then
    // data and trailers in separate small writes) waited for the leader's delayed ACK:
    // ~40 ms stalls, the 3-node produce p999 (measured: docs/BENCHMARKS.md).
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .filter_map(move |conn| match conn {
            Ok(stream) => match permits.clone().try_acquire_owned() {
                Ok(permit) => Some(Ok(LimitedConn {
                    stream,
                    _permit: permit,
                })),
                Err(_) => {
                    let n = refused.0.fetch_add(1, Ordering::Relaxed) + 1;
                    // Log the 1st, 2nd, 4th, ... refusal: a flood is visible, not a
                    // flood of log lines.
                    if n.is_power_of_two() {
                        tracing::warn!(
                            peer = ?stream.peer_addr().ok(),
                            refused_total = n,
                            "cluster port: more than {max} peer connections; connection closed"
                        );
                    }
                    drop(stream);
                    None
                }
            },
            // Passed on as before: tonic logs and goes on accepting.
            Err(e) => Some(Err(e)),
        })
}

impl Connected for LimitedConn {
    // The plain TCP info, so that tonic's TLS layer wraps it as it wraps a bare
    // `TcpStream` (`Request::peer_certs` looks for `TlsConnectInfo<TcpConnectInfo>`).
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use crate::server::serve_limited;
    use crate::{ControlPlane, HealthMonitor};

    /// Reads from `conn` until it ends or `wait` passes: `true` if the server closed it.
    async fn closed(conn: &mut tokio::net::TcpStream, wait: Duration) -> bool {
        let mut buf = [0u8; 256];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue, // the server's HTTP/2 settings
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_above_the_limit_are_closed_at_accept() {
        const MAX: usize = 2;
        let plane = ControlPlane {
            node_id: 1,
            registry: Arc::new(neo_raft::Registry::new()),
            health: HealthMonitor::new(),
            meta: neo_broker::meta::MetaMachine::new().1,
        };
        let server = serve_limited("127.0.0.1:0".parse().expect("addr"), plane, None, MAX)
            .await
            .expect("serve");
        let addr = server.local_addr();
        let connect = || tokio::net::TcpStream::connect(addr);
        let mut held = Vec::new();
        for _ in 0..MAX {
            held.push(connect().await.expect("connect"));
        }
        // The server has accepted both (it answers the next one), then:
        let mut extra = connect().await.expect("the kernel accepts");
        assert!(
            closed(&mut extra, Duration::from_secs(10)).await,
            "a connection above the limit is closed"
        );
        assert_eq!(server.refused_connections(), 1);
        for conn in &mut held {
            assert!(
                !closed(conn, Duration::from_millis(200)).await,
                "connections within the limit stay open"
            );
        }
        // One held connection closes: its share is released and a real call gets in.
        drop(held.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match crate::membership::status(&addr.to_string()).await {
                Err(crate::Error::Rpc { reason }) if reason.contains("metadata group") => break,
                other if tokio::time::Instant::now() > deadline => {
                    panic!("no call got in after a connection closed: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        drop(held);
        server.shutdown().await;
    }
}
