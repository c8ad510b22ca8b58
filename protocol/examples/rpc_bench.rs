//! Neo RPC against its baselines, in one run on loopback, 100-byte payloads:
//!
//! - `neo`: Neo RPC echo (raw-bytes sync handler; client calls by id); its 64 calls in
//!   flight are kept going by one `Pipeline` (default options), which sends a call as
//!   each reply comes in, as the floor's writer and reader do with frames,
//! - `neo-calls`: the same server, 64 calls in flight as 64 `Call` futures in a
//!   `FuturesUnordered` (independent calls, each with its own future and wake-up),
//! - `tonic`: a tonic gRPC unary echo (service and client written by hand, prost codec),
//! - `tcp-floor`: raw tokio TCP, u32 length prefix + payload, echoed back (the floor).
//!
//! For each: p50/p99 of sequential round trips (for Neo: `call_raw_by_id(..).await`),
//! and calls/s with 64 calls in flight on one connection (the floor: 64 pipelined
//! frames).
//!
//! `cargo run --release -p neo-protocol --example rpc_bench -- --json`
//! Options: `--sequential N` (round trips per latency run), `--pipelined N` (calls per
//! throughput run), `--systems neo,tcp-floor` (run only these; default: all four),
//! `--write-batch N` (the `neo` pipeline writes every N requests instead of its default),
//! `--in-task` (the clients run inside a spawned runtime task, as most applications
//! call, instead of on the thread that blocks on the runtime), `--server-process`
//! (each server runs in a child process of this binary with its own runtime, instead
//! of sharing the clients' runtime), `--json` (JSON lines only).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use neo_protocol::{
    CallOptions, ClientConfig, MethodBuilder, NeoClient, NeoConfig, NeoServer, ServiceBuilder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

const PAYLOAD_BYTES: usize = 100;
const IN_FLIGHT: usize = 64;

struct Report {
    system: &'static str,
    p50_us: f64,
    p99_us: f64,
    calls_per_s: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

async fn latency<F, Fut>(calls: usize, mut call: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..calls / 10 {
        call().await;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        call().await;
        samples.push(start.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.50), percentile(&samples, 0.99))
}

/// Keep `IN_FLIGHT` calls going until `calls` have completed.
async fn throughput<F, Fut>(calls: usize, call: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let run = |n: usize| {
        let call = &call;
        async move {
            let mut inflight = FuturesUnordered::new();
            let mut started = 0;
            while started < IN_FLIGHT.min(n) {
                inflight.push(call());
                started += 1;
            }
            while inflight.next().await.is_some() {
                if started < n {
                    inflight.push(call());
                    started += 1;
                }
            }
        }
    };
    run(calls / 10).await;
    let start = Instant::now();
    run(calls).await;
    calls as f64 / start.elapsed().as_secs_f64()
}

/// Start `system`'s echo server on a free loopback port, in the current runtime; it
/// serves until the process ends.
async fn serve(system: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    match system {
        "neo" => {
            let mut server = NeoServer::new(NeoConfig::default());
            server
                .register(
                    ServiceBuilder::new("bench")
                        .method(MethodBuilder::new("echo").raw_sync_handler(|_, body| Ok(body))),
                )
                .unwrap();
            // Leaked: the server lives as long as the benchmark.
            std::mem::forget(server.start(listener).unwrap());
        }
        "tcp-floor" => {
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    tokio::spawn(floor_server(socket));
                }
            });
        }
        "tonic" => {
            let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .tcp_nodelay(true)
                    .add_service(grpc::EchoServer)
                    .serve_with_incoming(incoming),
            );
        }
        other => panic!("unknown system {other:?}"),
    }
    addr
}

/// Where the servers run: in the benchmark's own runtime, or each in a child process
/// of this binary (`--server-process`: client and server do not share a runtime, as
/// in production).
struct Servers {
    in_process: bool,
    children: Vec<std::process::Child>,
}

impl Servers {
    async fn start(&mut self, system: &str) -> SocketAddr {
        if self.in_process {
            return serve(system).await;
        }
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("path of this benchmark");
        let mut child = std::process::Command::new(exe)
            .args(["--serve", system])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the server's address");
        self.children.push(child);
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{system} server printed {line:?}, not its address"))
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How Neo keeps 64 calls in flight in the throughput run.
#[derive(Clone, Copy, PartialEq)]
enum NeoWindow {
    /// One [`neo_protocol::Pipeline`]: the calling task sends, and sends again as each
    /// reply comes in (the counterpart of the floor's writer and reader).
    Pipeline,
    /// One `Call` future per call in a `FuturesUnordered` (64 independent calls).
    Calls,
}

async fn bench_neo(
    addr: SocketAddr,
    sequential: usize,
    pipelined: usize,
    window: NeoWindow,
    write_batch: Option<usize>,
) -> Report {
    let client = NeoClient::connect(addr.to_string(), ClientConfig::default())
        .await
        .unwrap();
    let (service_id, method_id) = client.resolve("bench", "echo").await.unwrap();
    let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
    let call = || {
        let client = &client;
        let payload = payload.clone();
        async move {
            let reply = client
                .call_raw_by_id(service_id, method_id, payload, CallOptions::default())
                .await
                .unwrap();
            assert_eq!(reply.len(), PAYLOAD_BYTES);
        }
    };
    let (p50_us, p99_us) = latency(sequential, call).await;
    let calls_per_s = match window {
        NeoWindow::Calls => throughput(pipelined, call).await,
        NeoWindow::Pipeline => {
            let run = |n: usize| {
                let (client, payload) = (&client, &payload);
                async move {
                    let mut pipe = client.pipeline().await.unwrap();
                    if let Some(frames) = write_batch {
                        pipe = pipe.with_write_batch(frames);
                    }
                    let mut sent = 0;
                    while sent < IN_FLIGHT.min(n) {
                        pipe.send(service_id, method_id, payload.clone())
                            .await
                            .unwrap();
                        sent += 1;
                    }
                    while let Some((_, reply)) = pipe.recv().await {
                        assert_eq!(reply.unwrap().len(), PAYLOAD_BYTES);
                        if sent < n {
                            pipe.send(service_id, method_id, payload.clone())
                                .await
                                .unwrap();
                            sent += 1;
                        }
                    }
                }
            };
            run(pipelined / 10).await;
            let start = Instant::now();
            run(pipelined).await;
            pipelined as f64 / start.elapsed().as_secs_f64()
        }
    };
    Report {
        system: match window {
            NeoWindow::Pipeline => "neo",
            NeoWindow::Calls => "neo-calls",
        },
        p50_us,
        p99_us,
        calls_per_s,
    }
}

/// The tcp floor's server: echo every length-prefixed frame, flushing only when the
/// input buffer is drained (so pipelined frames are answered in batches).
async fn floor_server(socket: TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut writer = BufWriter::with_capacity(64 * 1024, write);
    let mut body = vec![0u8; 64 * 1024];
    loop {
        let len = match reader.read_u32().await {
            Ok(len) => len as usize,
            Err(_) => return Ok(()),
        };
        reader.read_exact(&mut body[..len]).await?;
        writer.write_u32(len as u32).await?;
        writer.write_all(&body[..len]).await?;
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

async fn bench_floor(addr: SocketAddr, sequential: usize, pipelined: usize) -> Report {
    let mut frame = Vec::with_capacity(4 + PAYLOAD_BYTES);
    frame.extend_from_slice(&(PAYLOAD_BYTES as u32).to_be_bytes());
    frame.extend_from_slice(&[7u8; PAYLOAD_BYTES]);

    // Sequential: one frame out, one frame back.
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let socket = tokio::sync::Mutex::new(socket);
    let (p50_us, p99_us) = latency(sequential, || async {
        let mut socket = socket.lock().await;
        socket.write_all(&frame).await.unwrap();
        let mut reply = [0u8; 4 + PAYLOAD_BYTES];
        socket.read_exact(&mut reply).await.unwrap();
    })
    .await;

    // Pipelined: a writer keeps 64 frames in flight, the reader counts replies. Frames
    // written while replies are outstanding are batched into one write.
    let socket = TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let (read, mut write) = socket.into_split();
    let window = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let total = pipelined + pipelined / 10;
    let reader_window = Arc::clone(&window);
    let reader = tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, read);
        let mut reply = [0u8; 4 + PAYLOAD_BYTES];
        let mut start = None;
        for i in 0..total {
            if i == pipelined / 10 {
                start = Some(Instant::now());
            }
            reader.read_exact(&mut reply).await.unwrap();
            reader_window.add_permits(1);
        }
        start.unwrap().elapsed()
    });
    let mut sent = 0;
    let mut batch = Vec::with_capacity(IN_FLIGHT * frame.len());
    while sent < total {
        let permit = window.acquire().await.unwrap();
        permit.forget();
        batch.extend_from_slice(&frame);
        sent += 1;
        while sent < total
            && let Ok(permit) = window.try_acquire()
        {
            permit.forget();
            batch.extend_from_slice(&frame);
            sent += 1;
        }
        write.write_all(&batch).await.unwrap();
        batch.clear();
    }
    let elapsed = reader.await.unwrap();
    Report {
        system: "tcp-floor",
        p50_us,
        p99_us,
        calls_per_s: pipelined as f64 / elapsed.as_secs_f64(),
    }
}

/// gRPC echo without protoc: a prost message and a hand-written service.
mod grpc {
    use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EchoMessage {
        #[prost(bytes = "vec", tag = "1")]
        pub payload: Vec<u8>,
    }

    pub const PATH: &str = "/neo.bench.Echo/Echo";

    #[derive(Clone, Default)]
    pub struct EchoServer;

    impl tonic::server::NamedService for EchoServer {
        const NAME: &'static str = "neo.bench.Echo";
    }

    struct EchoUnary;

    impl tonic::server::UnaryService<EchoMessage> for EchoUnary {
        type Response = EchoMessage;
        type Future = BoxFuture<tonic::Response<EchoMessage>, tonic::Status>;

        fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
            Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
        }
    }

    impl<B> Service<http::Request<B>> for EchoServer
    where
        B: tonic::codegen::Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<B>) -> Self::Future {
            if request.uri().path() == PATH {
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                    Ok(grpc.unary(EchoUnary, request).await)
                })
            } else {
                Box::pin(async move {
                    let mut response = http::Response::new(tonic::body::Body::default());
                    let headers = response.headers_mut();
                    headers.insert("grpc-status", http::HeaderValue::from_static("12"));
                    headers.insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    Ok(response)
                })
            }
        }
    }
}

async fn bench_tonic(addr: SocketAddr, sequential: usize, pipelined: usize) -> Report {
    use tonic::codegen::http::uri::PathAndQuery;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    let client = tonic::client::Grpc::new(channel);
    let payload = vec![7u8; PAYLOAD_BYTES];
    let call = || {
        let mut client = client.clone();
        let message = grpc::EchoMessage {
            payload: payload.clone(),
        };
        async move {
            client.ready().await.unwrap();
            let reply: tonic::Response<grpc::EchoMessage> = client
                .unary(
                    tonic::Request::new(message),
                    PathAndQuery::from_static(grpc::PATH),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .unwrap();
            assert_eq!(reply.into_inner().payload.len(), PAYLOAD_BYTES);
        }
    };
    let (p50_us, p99_us) = latency(sequential, call).await;
    let calls_per_s = throughput(pipelined, call).await;
    Report {
        system: "tonic",
        p50_us,
        p99_us,
        calls_per_s,
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    let in_task = args.iter().any(|a| a == "--in-task");
    let sequential = arg(&args, "--sequential", 20_000);
    let pipelined = arg(&args, "--pipelined", 200_000);
    let write_batch = args
        .iter()
        .any(|a| a == "--write-batch")
        .then(|| arg(&args, "--write-batch", usize::MAX));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(system) = args
        .iter()
        .position(|a| a == "--serve")
        .and_then(|i| args.get(i + 1))
    {
        // A child of `--server-process`: serve, print the address, and stay until the
        // parent closes our stdin (or kills us).
        println!("{}", runtime.block_on(serve(system)));
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        return;
    }
    let in_process = !args.iter().any(|a| a == "--server-process");
    let systems: Vec<String> = args
        .iter()
        .position(|a| a == "--systems")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| {
            ["tcp-floor", "neo", "neo-calls", "tonic"]
                .map(str::to_owned)
                .to_vec()
        });
    let bench = async move {
        let wanted = |name: &str| systems.iter().any(|s| s == name);
        let mut servers = Servers {
            in_process,
            children: Vec::new(),
        };
        let mut reports = Vec::new();
        if wanted("tcp-floor") {
            let addr = servers.start("tcp-floor").await;
            reports.push(bench_floor(addr, sequential, pipelined).await);
        }
        if wanted("neo") {
            let addr = servers.start("neo").await;
            reports.push(
                bench_neo(
                    addr,
                    sequential,
                    pipelined,
                    NeoWindow::Pipeline,
                    write_batch,
                )
                .await,
            );
        }
        if wanted("neo-calls") {
            let addr = servers.start("neo").await;
            reports.push(bench_neo(addr, sequential, pipelined, NeoWindow::Calls, None).await);
        }
        if wanted("tonic") {
            let addr = servers.start("tonic").await;
            reports.push(bench_tonic(addr, sequential, pipelined / 4).await);
        }
        reports
    };
    let reports = if in_task {
        runtime.block_on(async { tokio::spawn(bench).await.unwrap() })
    } else {
        runtime.block_on(bench)
    };
    for r in &reports {
        println!(
            "{{\"system\":\"{}\",\"p50_us\":{:.1},\"p99_us\":{:.1},\"calls_per_s\":{:.0}}}",
            r.system, r.p50_us, r.p99_us, r.calls_per_s
        );
    }
    let find = |name: &str| reports.iter().find(|r| r.system == name);
    if !json
        && let (Some(floor), Some(neo), Some(tonic)) =
            (find("tcp-floor"), find("neo"), find("tonic"))
    {
        println!(
            "neo p50 / floor p50      = {:.2} (goal <= 1.2)",
            neo.p50_us / floor.p50_us
        );
        println!(
            "neo calls/s / tonic      = {:.2} (goal >= 5)",
            neo.calls_per_s / tonic.calls_per_s
        );
        println!(
            "neo calls/s / floor      = {:.2} (goal >= 0.8)",
            neo.calls_per_s / floor.calls_per_s
        );
        if let Some(calls) = find("neo-calls") {
            println!(
                "neo-calls calls/s / floor = {:.2}",
                calls.calls_per_s / floor.calls_per_s
            );
        }
    }
}
