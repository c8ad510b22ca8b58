//! A client that sends requests and never reads its replies is disconnected after
//! `write_timeout`, and other connections are unaffected; shutdown is not held up by it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use neo_protocol::{MethodBuilder, NeoConfig, ServiceBuilder};

/// Replies of this size fill the socket buffers after a few dozen requests.
const REPLY_BYTES: usize = 256 * 1024;
const REQUESTS: u64 = 200;

fn blob_service() -> ServiceBuilder {
    ServiceBuilder::new("blob").version("1").method(
        MethodBuilder::new("blob")
            .input("()")
            .output("bytes")
            .raw_sync_handler(|_, _| Ok(Bytes::from(vec![7u8; REPLY_BYTES]))),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_disconnected_and_others_are_served() {
    let config = NeoConfig {
        write_timeout: Duration::from_millis(300),
        // Incompressible enough: never compress, so the replies really fill the socket.
        compression_threshold_bytes: usize::MAX,
        ..NeoConfig::default()
    };
    let server = start(config, vec![blob_service(), echo_service()]).await;
    let mut slow = raw_connect(&server).await;
    for id in 1..=REQUESTS {
        send(&mut slow, &encode(&request(1, 1, id, b""))).await;
    }
    // While the slow peer holds its replies unread, another client is served.
    let client = client(&server).await;
    let upper: String = tokio::time::timeout(WAIT, client.call("echo", "upper", "ok"))
        .await
        .expect("served in time")
        .expect("call");
    assert_eq!(upper, "OK");
    // Past the write timeout the server has given up on the slow peer: reading now
    // finds the replies it managed to write, then the end of the connection, not all
    // of them (they would take ~50 MiB of socket buffers).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frames = read_frames_until_eof(&mut slow).await;
    assert!(
        (frames.len() as u64) < REQUESTS,
        "the server kept writing to a peer that did not read: {} replies",
        frames.len()
    );
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown is not held up");
}
