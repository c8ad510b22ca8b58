//! Shared helpers of the loopback tests.
#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use neo_protocol::frame::{self, EncodeOptions, Frame, Kind};
use neo_protocol::{
    ClientConfig, MethodBuilder, NeoClient, NeoConfig, NeoServer, RpcError, ServerHandle,
    ServiceBuilder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every wait in a test, so a bug fails the test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn echo_service() -> ServiceBuilder {
    ServiceBuilder::new("echo")
        .version("1")
        .namespace("neo.test")
        .method(
            MethodBuilder::new("echo")
                .input("bytes")
                .output("bytes")
                .raw_sync_handler(|_, body| Ok(body)),
        )
        .method(
            MethodBuilder::new("upper")
                .input("String")
                .output("String")
                .sync_handler(|s: String| Ok::<_, RpcError>(s.to_uppercase())),
        )
        .method(
            MethodBuilder::new("add")
                .input("(u64, u64)")
                .output("u64")
                .async_handler(|(a, b): (u64, u64)| async move { Ok::<_, RpcError>(a + b) }),
        )
        .method(
            // The client's port: tells the tests whether a client reconnected.
            MethodBuilder::new("port")
                .output("u16")
                .sync_handler_with_context(|ctx: &neo_protocol::RequestContext, (): ()| {
                    Ok::<_, RpcError>(ctx.peer_addr().port())
                }),
        )
}

pub async fn start(config: NeoConfig, services: Vec<ServiceBuilder>) -> ServerHandle {
    start_with(NeoServer::new(config), services).await
}

pub async fn start_with(mut server: NeoServer, services: Vec<ServiceBuilder>) -> ServerHandle {
    for service in services {
        server.register(service).unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    server.start(listener).unwrap()
}

pub async fn client(handle: &ServerHandle) -> NeoClient {
    client_with(handle, ClientConfig::default()).await
}

pub async fn client_with(handle: &ServerHandle, config: ClientConfig) -> NeoClient {
    NeoClient::connect(handle.local_addr().to_string(), config)
        .await
        .unwrap()
}

/// Read frames from a raw socket until EOF (or `WAIT`), tolerating a reset.
pub async fn read_frames_until_eof(socket: &mut TcpStream) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(frame) = frame::decode(&mut buf, 1 << 20).unwrap() {
            frames.push(frame);
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, socket.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return frames,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("connection was not closed within {WAIT:?}; got {frames:?}"),
        }
    }
}

pub fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame::encode(frame, &EncodeOptions::default(), &mut buf).unwrap();
    buf
}

pub fn request(service_id: u16, method_id: u16, correlation_id: u64, body: &'static [u8]) -> Frame {
    Frame {
        kind: Kind::Request,
        service_id,
        method_id,
        correlation_id,
        body: Bytes::from_static(body),
    }
}

pub async fn raw_connect(handle: &ServerHandle) -> TcpStream {
    TcpStream::connect(handle.local_addr()).await.unwrap()
}

pub async fn send(socket: &mut TcpStream, bytes: &[u8]) {
    socket.write_all(bytes).await.unwrap();
}
