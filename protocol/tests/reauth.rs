//! In-place re-authentication on loopback: an `Auth` frame on an authenticated
//! connection renews its credential (roles, expiry) without reconnecting; a bad token
//! or another principal's is refused and the connection keeps its identity.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use neo_protocol::{
    Authenticator, ClientConfig, Error, ErrorCode, MethodBuilder, NeoClient, NeoConfig, NeoServer,
    PeerInfo, Principal, RequestContext, RpcError, ServiceBuilder,
};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Tokens `name:role:ttl_secs`: `name` with one role, valid for `ttl_secs` from now.
/// Counts handshakes, so a test can tell a re-authentication from a reconnect.
#[derive(Default)]
struct Timed {
    calls: AtomicUsize,
}

impl Authenticator for Timed {
    fn authenticate(&self, token: &[u8], _peer: &PeerInfo) -> Result<Principal, RpcError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let refused = || RpcError::new(ErrorCode::Unauthenticated, "bad token");
        let token = std::str::from_utf8(token).map_err(|_| refused())?;
        let mut parts = token.split(':');
        let (Some(name), Some(role), Some(ttl), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused());
        };
        let ttl: u64 = ttl.parse().map_err(|_| refused())?;
        Ok(Principal::new(name)
            .with_roles(vec![role.to_string()])
            .expiring_at(Some(now_secs() + ttl)))
    }
}

/// Who the server thinks the caller is: principal, roles, and the client's port (the
/// same port means the same connection).
type WhoAmI = (Option<String>, Vec<String>, u16);

fn whoami() -> ServiceBuilder {
    ServiceBuilder::new("whoami").method(MethodBuilder::new("get").sync_handler_with_context(
        |ctx: &RequestContext, (): ()| {
            let principal = ctx.principal();
            Ok::<_, RpcError>((
                principal.map(|p| p.name.clone()),
                principal.map(|p| p.roles.clone()).unwrap_or_default(),
                ctx.peer_addr().port(),
            ))
        },
    ))
}

async fn setup(token: &str) -> (neo_protocol::ServerHandle, Arc<Timed>, NeoClient) {
    let auth = Arc::new(Timed::default());
    let server = start_with(
        NeoServer::new(NeoConfig::default()).with_authenticator(auth.clone()),
        vec![whoami()],
    )
    .await;
    let config = ClientConfig {
        auth_token: Some(token.as_bytes().to_vec()),
        ..ClientConfig::default()
    };
    let client = client_with(&server, config).await;
    (server, auth, client)
}

async fn who(client: &NeoClient) -> neo_protocol::Result<WhoAmI> {
    client.call("whoami", "get", &()).await
}

#[tokio::test]
async fn a_renewed_credential_outlives_the_first_one_on_the_same_connection() {
    // Valid for at most 2 s (whole seconds).
    let (server, auth, client) = setup("alice:reader:2").await;
    let before = who(&client).await.unwrap();
    assert_eq!(before.0.as_deref(), Some("alice"));
    assert_eq!(before.1, vec!["reader".to_string()]);

    let principal = client.reauthenticate("alice:writer:60").await.unwrap();
    assert_eq!(principal, "alice");
    assert_eq!(client.principal().await.unwrap().as_deref(), Some("alice"));
    // Handlers see the new credential's roles at once.
    let renewed = who(&client).await.unwrap();
    assert_eq!(renewed.1, vec!["writer".to_string()]);

    // Past the first token's expiry: still the same connection, no new handshake.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let after = who(&client).await.unwrap();
    assert_eq!(after, renewed);
    assert_eq!(after.2, before.2, "the connection was replaced");
    assert_eq!(auth.calls.load(Ordering::SeqCst), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_token_is_refused_and_the_old_credential_holds_until_its_expiry() {
    let (server, auth, client) = setup("alice:reader:2").await;
    let before = who(&client).await.unwrap();
    match client.reauthenticate("garbage").await {
        Err(Error::Rpc(err)) => assert_eq!(err.error_code(), Some(ErrorCode::Unauthenticated)),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    // Same connection, same identity.
    assert_eq!(who(&client).await.unwrap(), before);
    // The old credential still expires: the server closes the connection, and the
    // client's next call dials again with the token that was accepted (the first).
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        match who(&client).await {
            Ok(w) if w.2 != before.2 => {
                assert_eq!(w.0.as_deref(), Some("alice"));
                assert_eq!(w.1, vec!["reader".to_string()]);
                break;
            }
            Ok(_) | Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("the connection outlived its credential: {other:?}"),
        }
    }
    // The handshake, the refused renewal, the reconnect.
    assert_eq!(auth.calls.load(Ordering::SeqCst), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn another_principal_is_refused_and_the_connection_keeps_its_own() {
    let (server, _auth, client) = setup("alice:reader:60").await;
    let before = who(&client).await.unwrap();
    match client.reauthenticate("mallory:admin:60").await {
        Err(Error::Rpc(err)) => {
            assert_eq!(err.error_code(), Some(ErrorCode::PrincipalMismatch));
            assert!(!err.is_retriable());
        }
        other => panic!("expected PrincipalMismatch, got {other:?}"),
    }
    assert_eq!(who(&client).await.unwrap(), before);
    assert_eq!(client.principal().await.unwrap().as_deref(), Some("alice"));
    server.shutdown().await;
}

#[tokio::test]
async fn re_authenticating_without_an_authenticator_names_nobody() {
    let server = start(NeoConfig::default(), vec![whoami()]).await;
    let client = client(&server).await;
    assert_eq!(client.reauthenticate("anything").await.unwrap(), "");
    let w = who(&client).await.unwrap();
    assert_eq!(w.0, None);
    server.shutdown().await;
}
