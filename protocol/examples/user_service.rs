//! The seed's example: register a `user_service` with `get_user` and call it from a
//! `NeoClient` in the same process (server on an ephemeral loopback port).
//!
//! `cargo run -p neo-protocol --example user_service`

use std::time::Duration;

use neo_protocol::{
    ClientConfig, ErrorCode, MethodBuilder, NeoClient, NeoConfig, NeoServer, RpcError,
    ServiceBuilder,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct GetUserRequest {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    email: String,
}

fn get_user(req: GetUserRequest) -> Result<User, RpcError> {
    match req.id {
        42 => Ok(User {
            id: 42,
            name: "Ada Lovelace".into(),
            email: "ada@example.com".into(),
        }),
        id => Err(RpcError::custom(2000, format!("no user {id}"))),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = NeoServer::new(NeoConfig::default());
    server.register(
        ServiceBuilder::new("user_service")
            .version("1.0")
            .namespace("neo.example")
            .method(
                MethodBuilder::new("get_user")
                    .input("GetUserRequest")
                    .output("User")
                    .timeout(Duration::from_secs(5))
                    .sync_handler(get_user),
            ),
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let handle = server.start(listener)?;
    println!("neo rpc server on {}", handle.local_addr());

    let client =
        NeoClient::connect(handle.local_addr().to_string(), ClientConfig::default()).await?;
    let user: User = client
        .call("user_service", "get_user", &GetUserRequest { id: 42 })
        .await?;
    println!("get_user(42) = {user:?}");

    match client
        .call::<_, User>("user_service", "get_user", &GetUserRequest { id: 7 })
        .await
    {
        Err(err) => println!("get_user(7) failed as expected: {err}"),
        Ok(user) => println!("unexpected user {user:?}"),
    }
    match client
        .call::<_, User>("user_service", "delete_user", &GetUserRequest { id: 7 })
        .await
    {
        Err(err) if err.rpc_code() == Some(ErrorCode::UnknownMethod as u16) => {
            println!("delete_user: {err}")
        }
        other => println!("unexpected: {other:?}"),
    }

    handle.shutdown().await;
    Ok(())
}
