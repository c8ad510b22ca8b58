//! Compiles the control-plane `.proto` files with protox (pure Rust): no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/raft.proto",
        "proto/membership.proto",
        "proto/health.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Bodies stay `bytes::Bytes`: handed to neo-raft without a copy.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
