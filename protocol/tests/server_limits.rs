//! The server's bounds against floods and slow clients (issue 22): a frame trickled
//! slower than `frame_read_timeout` closes its connection with `Timeout`; request bytes
//! in flight across the server are bounded by `inflight_request_bytes_max` (`Busy`
//! beyond); replies a peer does not read pin at most `outbound_queue_bytes_max`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use neo_protocol::frame::{Frame, Kind};
use neo_protocol::{Error, ErrorCode, MethodBuilder, NeoConfig, RpcError, ServiceBuilder};
use tokio::sync::Semaphore;

/// Serve `config` with the echo service and a `hold` service: `hold/hold` answers once
/// `gate` gives it a permit; `hold/flood` pushes 1 MiB events forever, counting them.
async fn server(
    config: NeoConfig,
    gate: Arc<Semaphore>,
    events: Arc<AtomicUsize>,
) -> neo_protocol::ServerHandle {
    let event = Bytes::from(vec![1u8; 1024 * 1024]);
    let hold = ServiceBuilder::new("hold")
        .version("1")
        .method(
            MethodBuilder::new("hold")
                .input("bytes")
                .output("bytes")
                .raw_async_handler(move |_, body: Bytes| {
                    let gate = Arc::clone(&gate);
                    async move {
                        let permit = gate.acquire().await;
                        drop(permit);
                        Ok(Bytes::from(body.len().to_string()))
                    }
                }),
        )
        .method(
            MethodBuilder::new("flood")
                .input("()")
                .output("bytes")
                .event_handler(move |_, (): (), sink| {
                    let events = Arc::clone(&events);
                    let event = event.clone();
                    async move {
                        loop {
                            sink.send_raw(event.clone()).await?;
                            events.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }),
        );
    start(config, vec![echo_service(), hold]).await
}

fn rpc_code(result: &Result<Bytes, Error>) -> Option<ErrorCode> {
    match result {
        Err(Error::Rpc(err)) => err.error_code(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_frame_times_out_and_a_prompt_one_does_not() {
    let config = NeoConfig {
        frame_read_timeout: Duration::from_millis(300),
        ..NeoConfig::default()
    };
    let handle = server(config, Arc::new(Semaphore::new(0)), Default::default()).await;
    // In two halves 100 ms apart: within the bound, answered.
    let prompt = encode(&request(1, 1, 7, b"0123456789abcdef"));
    let mut socket = raw_connect(&handle).await;
    send(&mut socket, &prompt[..20]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&mut socket, &prompt[20..]).await;
    let mut buf = bytes::BytesMut::new();
    let reply = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(frame) = neo_protocol::frame::decode(&mut buf, 1 << 20).unwrap() {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(&mut socket, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "closed before the reply");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("reply in time");
    assert_eq!(
        (reply.kind, reply.correlation_id, &reply.body[..]),
        (Kind::Response, 7, &b"0123456789abcdef"[..])
    );
    // The header, then nothing: `Timeout` on correlation id 0, then closed.
    let mut slow = raw_connect(&handle).await;
    send(
        &mut slow,
        &encode(&request(1, 1, 1, b"never finished"))[..30],
    )
    .await;
    let frames = read_frames_until_eof(&mut slow).await;
    match frames.as_slice() {
        [
            Frame {
                kind: Kind::Error,
                correlation_id: 0,
                body,
                ..
            },
        ] => {
            let err: RpcError = qiss::from_slice(body).unwrap();
            assert_eq!(err.error_code(), Some(ErrorCode::Timeout), "{err}");
        }
        other => panic!("expected one Timeout, got {other:?}"),
    }
    // The first connection is unaffected.
    send(&mut socket, &encode(&request(1, 1, 8, b"still here"))).await;
    let frames = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(frame) = neo_protocol::frame::decode(&mut buf, 1 << 20).unwrap() {
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::io::AsyncReadExt::read(&mut socket, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "closed before the reply");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("reply in time");
    assert_eq!(&frames.body[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_are_bounded_across_connections() {
    let config = NeoConfig {
        inflight_request_bytes_max: 1000,
        ..NeoConfig::default()
    };
    let gate = Arc::new(Semaphore::new(0));
    let handle = server(config, Arc::clone(&gate), Default::default()).await;
    let first = client(&handle).await;
    let second = client(&handle).await;
    // 800 bytes held by a request waiting on the gate.
    let held = {
        let first = first.clone();
        tokio::spawn(async move {
            first
                .call_raw("hold", "hold", Bytes::from(vec![0u8; 800]))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another 800 on another connection would go over 1000: `Busy`, retriable.
    let refused = second
        .call_raw("hold", "hold", Bytes::from(vec![0u8; 800]))
        .await;
    assert_eq!(rpc_code(&refused), Some(ErrorCode::Busy), "{refused:?}");
    assert!(refused.unwrap_err().is_retriable());
    // Inline (sync) methods are not held back.
    let echoed = second
        .call_raw("echo", "echo", Bytes::from(vec![3u8; 800]))
        .await;
    assert_eq!(echoed.unwrap().len(), 800);
    // Once the first is answered, its bytes are free again.
    gate.add_permits(1);
    let answered = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(&answered.unwrap()[..], b"800");
    gate.add_permits(1);
    let again = tokio::time::timeout(
        WAIT,
        second.call_raw("hold", "hold", Bytes::from(vec![0u8; 800])),
    )
    .await
    .expect("answered");
    assert_eq!(&again.unwrap()[..], b"800");
    // A body larger than the whole bound still goes, alone.
    gate.add_permits(1);
    let big = tokio::time::timeout(
        WAIT,
        first.call_raw("hold", "hold", Bytes::from(vec![0u8; 5000])),
    )
    .await
    .expect("answered");
    assert_eq!(&big.unwrap()[..], b"5000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_read_pins_a_bounded_amount_of_replies() {
    let config = NeoConfig {
        outbound_queue_bytes_max: 2 * 1024 * 1024,
        // Long enough that the peer is still connected when we count; shutdown does
        // not wait for it.
        write_timeout: Duration::from_secs(60),
        compression_threshold_bytes: usize::MAX,
        ..NeoConfig::default()
    };
    let events = Arc::new(AtomicUsize::new(0));
    let handle = server(config, Arc::new(Semaphore::new(0)), Arc::clone(&events)).await;
    // Subscribe to 1 MiB events and never read.
    let mut deaf = raw_connect(&handle).await;
    let mut flood = request(2, 2, 1, b"");
    flood.body = Bytes::from(qiss::to_vec(&()).unwrap());
    send(&mut deaf, &encode(&flood)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = events.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = events.load(Ordering::Relaxed);
    // The kernel's socket buffers take some (a few MiB each way on loopback), the bound
    // 2 more; without it the handler would queue `outbound_queue_frames_max` (1024).
    assert!(
        sent < 64,
        "{sent} MiB of events produced for a peer that reads nothing"
    );
    assert_eq!(first, sent, "the handler is held back, not still producing");
    // Other clients are served meanwhile.
    let other = client(&handle).await;
    let upper: String = tokio::time::timeout(WAIT, other.call("echo", "upper", "ok"))
        .await
        .expect("served")
        .unwrap();
    assert_eq!(upper, "OK");
    tokio::time::timeout(WAIT, handle.shutdown())
        .await
        .expect("shutdown is not held up");
}
