//! TLS, mTLS with peer identity, and the authentication handshake, on loopback.

mod common;

use std::sync::Arc;

use common::*;
use neo_protocol::tls::{self, ClientAuth};
use neo_protocol::{
    ClientConfig, ClientTls, Error, ErrorCode, MethodBuilder, NeoClient, NeoConfig, NeoServer,
    RequestContext, RpcError, ServiceBuilder, StaticTokens,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    ca: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "neo test ca");
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap().der().clone();
        Pki {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(
        &self,
        common_name: &str,
        names: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }
}

/// A service that tells the caller who the server thinks it is.
fn whoami() -> ServiceBuilder {
    ServiceBuilder::new("whoami").method(MethodBuilder::new("get").sync_handler_with_context(
        |ctx: &RequestContext, (): ()| {
            let identity = ctx.peer_identity().map(|id| {
                (
                    id.common_name.clone(),
                    id.dns_names.clone(),
                    id.certificate_chain_der.len(),
                )
            });
            Ok::<_, RpcError>((ctx.principal().map(|p| p.name.clone()), identity))
        },
    ))
}

type WhoAmI = (Option<String>, Option<(Option<String>, Vec<String>, usize)>);

async fn tls_server(pki: &Pki, client_auth: ClientAuth) -> neo_protocol::ServerHandle {
    let (chain, key) = pki.leaf("neo server", &["localhost"]);
    let config = tls::server_config(chain, key, client_auth).unwrap();
    start_with(
        NeoServer::new(NeoConfig::default()).with_tls(config),
        vec![whoami(), echo_service()],
    )
    .await
}

fn tls_client_config(
    pki: &Pki,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> ClientConfig {
    let config = tls::client_config(vec![pki.ca.clone()], client_cert).unwrap();
    ClientConfig {
        tls: Some(ClientTls::new(config, "localhost").unwrap()),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn tls_calls_work() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::None).await;
    let client = client_with(&server, tls_client_config(&pki, None)).await;
    let upper: String = client.call("echo", "upper", "secret").await.unwrap();
    assert_eq!(upper, "SECRET");
    let who: WhoAmI = client.call("whoami", "get", &()).await.unwrap();
    assert_eq!(who, (None, None));
    // A plaintext client cannot talk to a TLS server.
    let plain = NeoClient::connect(
        server.local_addr().to_string(),
        ClientConfig {
            reconnect_attempts_max: 1,
            connect_timeout: WAIT,
            call_timeout: WAIT,
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    assert!(plain.call::<_, String>("echo", "upper", "x").await.is_err());
    // A client that does not trust the server's CA fails the handshake.
    let other = Pki::new();
    let result = NeoClient::connect(
        server.local_addr().to_string(),
        ClientConfig {
            reconnect_attempts_max: 1,
            ..tls_client_config(&other, None)
        },
    )
    .await;
    assert!(matches!(result, Err(Error::Connect { .. })), "{result:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn mtls_exposes_the_peer_identity() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::Required(vec![pki.ca.clone()])).await;
    let client_cert = pki.leaf("orders-service", &["orders.neo.test"]);
    let client = client_with(&server, tls_client_config(&pki, Some(client_cert))).await;
    let who: WhoAmI = client.call("whoami", "get", &()).await.unwrap();
    assert_eq!(
        who,
        (
            None,
            Some((
                Some("orders-service".into()),
                vec!["orders.neo.test".into()],
                1
            ))
        )
    );

    // Without a client certificate the server refuses the connection.
    let anonymous = NeoClient::connect(
        server.local_addr().to_string(),
        ClientConfig {
            reconnect_attempts_max: 1,
            ..tls_client_config(&pki, None)
        },
    )
    .await;
    match anonymous {
        Err(_) => {}
        // TLS 1.3 may finish the client side of the handshake before the server's
        // rejection arrives; then the first call fails.
        Ok(client) => assert!(
            client
                .call::<_, WhoAmI>("whoami", "get", &())
                .await
                .is_err()
        ),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_certificates() {
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::Optional(vec![pki.ca.clone()])).await;
    let with_cert = client_with(
        &server,
        tls_client_config(&pki, Some(pki.leaf("a", &["a.neo.test"]))),
    )
    .await;
    let who: WhoAmI = with_cert.call("whoami", "get", &()).await.unwrap();
    assert_eq!(who.1.unwrap().1, vec!["a.neo.test".to_string()]);
    let without = client_with(&server, tls_client_config(&pki, None)).await;
    let who: WhoAmI = without.call("whoami", "get", &()).await.unwrap();
    assert_eq!(who, (None, None));
    server.shutdown().await;
}

fn auth_server() -> NeoServer {
    let tokens = StaticTokens::new().with_token("s3cret", "alice");
    NeoServer::new(NeoConfig::default()).with_authenticator(Arc::new(tokens))
}

#[tokio::test]
async fn auth_handshake_accepts_a_good_token() {
    let server = start_with(auth_server(), vec![whoami()]).await;
    let config = ClientConfig {
        auth_token: Some(b"s3cret".to_vec()),
        ..ClientConfig::default()
    };
    let client = client_with(&server, config).await;
    assert_eq!(client.principal().await.unwrap(), Some("alice".to_string()));
    let who: WhoAmI = client.call("whoami", "get", &()).await.unwrap();
    assert_eq!(who, (Some("alice".into()), None));
    server.shutdown().await;
}

#[tokio::test]
async fn auth_handshake_rejects_a_bad_token() {
    let server = start_with(auth_server(), vec![whoami()]).await;
    let config = ClientConfig {
        auth_token: Some(b"wrong".to_vec()),
        ..ClientConfig::default()
    };
    let result = NeoClient::connect(server.local_addr().to_string(), config).await;
    match result {
        Err(Error::Rpc(err)) => assert_eq!(err.error_code(), Some(ErrorCode::Unauthenticated)),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn requests_before_the_handshake_are_refused() {
    let server = start_with(auth_server(), vec![whoami()]).await;
    let client = NeoClient::connect(server.local_addr().to_string(), ClientConfig::default())
        .await
        .unwrap();
    match client.call::<_, WhoAmI>("whoami", "get", &()).await {
        Err(Error::Rpc(err)) => assert_eq!(err.error_code(), Some(ErrorCode::Unauthenticated)),
        other => panic!("expected Unauthenticated, got {other:?}"),
    }
    server.shutdown().await;
}

/// A principal whose credential expires is disconnected at expiry (and carries its
/// roles to the handlers' context until then).
#[tokio::test]
async fn a_connection_is_closed_when_its_credential_expires() {
    /// One credential, valid until a fixed time (a client that reconnects after
    /// expiry is refused).
    struct Expiring(u64);
    impl neo_protocol::Authenticator for Expiring {
        fn authenticate(
            &self,
            _token: &[u8],
            _peer: &neo_protocol::PeerInfo,
        ) -> Result<neo_protocol::Principal, RpcError> {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            if now >= self.0 {
                return Err(RpcError::new(ErrorCode::Unauthenticated, "expired"));
            }
            Ok(neo_protocol::Principal::new("eve")
                .with_roles(vec!["reader".into()])
                .expiring_at(Some(self.0)))
        }
    }
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let server = start_with(
        NeoServer::new(NeoConfig::default()).with_authenticator(Arc::new(Expiring(expiry))),
        vec![whoami()],
    )
    .await;
    let config = ClientConfig {
        auth_token: Some(b"t".to_vec()),
        ..ClientConfig::default()
    };
    let client = client_with(&server, config).await;
    let who: WhoAmI = client.call("whoami", "get", &()).await.unwrap();
    assert_eq!(who.0.as_deref(), Some("eve"));
    // Valid for at most 2 s (whole seconds): gone well before 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match client.call::<_, WhoAmI>("whoami", "get", &()).await {
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Ok(_) => panic!("the connection outlived its credential"),
            Err(_) => break,
        }
    }
    server.shutdown().await;
}

/// The client port's suite order: our two ends agree on AES-128-GCM (TLS 1.3), a peer
/// that offers only AES-256-GCM still gets it, and large frames cross the server's
/// buffered TLS reads intact.
#[tokio::test]
async fn suites_prefer_aes128_and_still_serve_aes256_peers() {
    use rustls::CipherSuite;
    let pki = Pki::new();
    let server = tls_server(&pki, ClientAuth::None).await;
    let negotiated = |config: Arc<rustls::ClientConfig>| {
        let addr = server.local_addr();
        async move {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let handshake = async {
                let socket = tokio::net::TcpStream::connect(addr).await?;
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, socket)
                    .await
            };
            let stream = tokio::time::timeout(WAIT, handshake)
                .await
                .expect("TLS handshake within WAIT")
                .unwrap();
            stream
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .unwrap()
                .suite()
        }
    };
    let ours = tls::client_config(vec![pki.ca.clone()], None).unwrap();
    assert_eq!(
        negotiated(ours).await,
        CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == CipherSuite::TLS13_AES_256_GCM_SHA384);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let aes256_only = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert_eq!(
        negotiated(Arc::new(aes256_only)).await,
        CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    // 3 MiB in one call: many TLS records, read through the server's buffer.
    let client = client_with(&server, tls_client_config(&pki, None)).await;
    let big: String = "abcdefgh".repeat(3 << 17);
    let upper: String = client.call("echo", "upper", &big).await.unwrap();
    assert_eq!(upper, big.to_uppercase());
    server.shutdown().await;
}
