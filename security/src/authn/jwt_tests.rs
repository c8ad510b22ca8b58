//! JWT tests: every algorithm, every refusal. The PEM files in `security/testdata/` are
//! throwaway keys made for these tests (openssl genpkey); nothing else trusts them.

use std::sync::Arc;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{EncodingKey, Header, encode};
use neo_protocol::{Authenticator, ErrorCode, PeerInfo};
use serde_json::{Value, json};

use super::*;
use crate::authn::Authenticators;

const RSA_PRIVATE: &[u8] = include_bytes!("../../testdata/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../testdata/rsa_public.pem");
const RSA2_PRIVATE: &[u8] = include_bytes!("../../testdata/rsa2_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../../testdata/ec_private.pem");
const EC_PUBLIC: &[u8] = include_bytes!("../../testdata/ec_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("../../testdata/ed_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../../testdata/ed_public.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-hs";

const NOW: u64 = 1_800_000_000;

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    jwt_ring::install();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn claims() -> Value {
    json!({
        "sub": "alice",
        "exp": NOW + 600,
        "iss": "neo-test",
        "aud": "neo",
        "roles": ["writer", "reader"],
    })
}

fn with(claim: &str, value: Value) -> Value {
    let mut c = claims();
    c[claim] = value;
    c
}

fn without(claim: &str) -> Value {
    let mut c = claims();
    c.as_object_mut().unwrap().remove(claim);
    c
}

fn hs() -> EncodingKey {
    EncodingKey::from_secret(SECRET).unwrap()
}

fn rs() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap()
}

fn all_keys() -> JwtKeySet {
    JwtKeySet::new()
        .with(JwtKey::hs256(SECRET).unwrap().with_kid("hs"))
        .unwrap()
        .with(JwtKey::from_public_pem(RSA_PUBLIC).unwrap().with_kid("rs"))
        .unwrap()
        .with(JwtKey::from_public_pem(EC_PUBLIC).unwrap().with_kid("ec"))
        .unwrap()
        .with(JwtKey::from_public_pem(ED_PUBLIC).unwrap().with_kid("ed"))
        .unwrap()
}

fn authenticator(keys: JwtKeySet) -> JwtAuthenticator {
    let config = JwtConfig {
        issuer: Some("neo-test".into()),
        audience: Some("neo".into()),
        ..JwtConfig::default()
    };
    JwtAuthenticator::new(config, keys).unwrap()
}

fn reason(auth: &JwtAuthenticator, token: &str) -> AuthFailure {
    auth.verify(token.as_bytes(), NOW)
        .unwrap_err()
        .auth_failure()
        .unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[test]
fn every_algorithm_verifies_with_and_without_kid() {
    let auth = authenticator(all_keys());
    let signers = [
        (Algorithm::HS256, hs(), "hs"),
        (Algorithm::RS256, rs(), "rs"),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE).unwrap(),
            "ec",
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
            "ed",
        ),
    ];
    for (alg, key, kid) in signers {
        for kid in [Some(kid), None] {
            let token = sign(alg, &key, kid, &claims());
            let id = auth.verify(token.as_bytes(), NOW).unwrap();
            assert_eq!(id.principal, "alice", "{alg:?}");
            assert_eq!(id.roles, ["writer", "reader"]);
            assert_eq!(id.method, AuthMethod::Jwt);
            assert_eq!(id.expires_at_unix_secs, Some(NOW + 600));
            assert_eq!(id.key_id.as_deref(), kid);
        }
    }
}

#[test]
fn expiry_with_bounded_skew() {
    let auth = authenticator(all_keys());
    let token = |exp: u64| sign(Algorithm::HS256, &hs(), None, &with("exp", json!(exp)));
    // Default skew: 60 s.
    assert!(auth.verify(token(NOW - 59).as_bytes(), NOW).is_ok());
    assert_eq!(reason(&auth, &token(NOW - 60)), AuthFailure::Expired);
    assert_eq!(reason(&auth, &token(NOW - 3_600)), AuthFailure::Expired);
    // Fractional NumericDate.
    let fractional = sign(
        Algorithm::HS256,
        &hs(),
        None,
        &with("exp", json!(NOW as f64 + 0.5)),
    );
    assert!(auth.verify(fractional.as_bytes(), NOW).is_ok());
    // The identity says when to close the connection.
    let id = auth.verify(token(NOW + 10).as_bytes(), NOW).unwrap();
    assert!(!id.is_expired(NOW + 9));
    assert!(id.is_expired(NOW + 10));
    // No skew.
    let strict = JwtAuthenticator::new(
        JwtConfig {
            clock_skew_secs: 0,
            ..auth.config().clone()
        },
        all_keys(),
    )
    .unwrap();
    assert_eq!(reason(&strict, &token(NOW)), AuthFailure::Expired);
    assert!(strict.verify(token(NOW + 1).as_bytes(), NOW).is_ok());
}

#[test]
fn not_yet_valid() {
    let auth = authenticator(all_keys());
    let token = |nbf: u64| sign(Algorithm::HS256, &hs(), None, &with("nbf", json!(nbf)));
    assert!(auth.verify(token(NOW + 60).as_bytes(), NOW).is_ok());
    assert_eq!(reason(&auth, &token(NOW + 61)), AuthFailure::NotYetValid);
    assert_eq!(
        reason(&auth, &token(NOW + 86_400)),
        AuthFailure::NotYetValid
    );
}

#[test]
fn wrong_or_missing_issuer_and_audience() {
    let auth = authenticator(all_keys());
    let token = |claims: Value| sign(Algorithm::RS256, &rs(), Some("rs"), &claims);
    assert_eq!(
        reason(&auth, &token(with("aud", json!("other")))),
        AuthFailure::WrongAudience
    );
    assert_eq!(
        reason(&auth, &token(with("aud", json!(["x", "y"])))),
        AuthFailure::WrongAudience
    );
    assert!(
        auth.verify(token(with("aud", json!(["x", "neo"]))).as_bytes(), NOW)
            .is_ok()
    );
    assert_eq!(
        reason(&auth, &token(without("aud"))),
        AuthFailure::MissingClaim { claim: "aud" }
    );
    assert_eq!(
        reason(&auth, &token(with("iss", json!("evil")))),
        AuthFailure::WrongIssuer
    );
    assert_eq!(
        reason(&auth, &token(without("iss"))),
        AuthFailure::MissingClaim { claim: "iss" }
    );
    // Without configured issuer/audience, neither is required.
    let open = JwtAuthenticator::new(JwtConfig::default(), all_keys()).unwrap();
    let bare = token(json!({"sub": "bob", "exp": NOW + 5}));
    assert_eq!(open.verify(bare.as_bytes(), NOW).unwrap().principal, "bob");
}

#[test]
fn alg_none_is_refused() {
    let auth = authenticator(all_keys());
    for alg in ["none", "None", "NONE"] {
        let header = b64(&json!({"alg": alg, "typ": "JWT"}));
        let unsigned = format!("{header}.{}.", b64(&claims()));
        assert_eq!(reason(&auth, &unsigned), AuthFailure::AlgorithmNone);
        // Even with a signature segment attached.
        let with_sig = format!("{header}.{}.AAAA", b64(&claims()));
        assert_eq!(reason(&auth, &with_sig), AuthFailure::AlgorithmNone);
    }
}

#[test]
fn tampered_signature_or_payload() {
    let auth = authenticator(all_keys());
    for (alg, key, kid) in [
        (Algorithm::HS256, hs(), "hs"),
        (Algorithm::RS256, rs(), "rs"),
    ] {
        let token = sign(alg, &key, Some(kid), &claims());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut sig: Vec<u8> = signature.bytes().collect();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{message}.{}", String::from_utf8(sig).unwrap());
        assert_eq!(reason(&auth, &tampered), AuthFailure::BadSignature);
        // A payload swapped for another principal's, signature kept.
        let header = message.split('.').next().unwrap();
        let forged = format!("{header}.{}.{signature}", b64(&with("sub", json!("root"))));
        assert_eq!(reason(&auth, &forged), AuthFailure::BadSignature);
    }
}

#[test]
fn key_confusion_rs256_key_as_hs256_secret() {
    // The classic attack: sign HS256 with the server's RSA *public* key as the secret.
    let confused = EncodingKey::from_secret(RSA_PUBLIC).unwrap();
    let rsa_only = authenticator(
        JwtKeySet::new()
            .with(JwtKey::from_public_pem(RSA_PUBLIC).unwrap().with_kid("rs"))
            .unwrap(),
    );
    let named = sign(Algorithm::HS256, &confused, Some("rs"), &claims());
    assert_eq!(reason(&rsa_only, &named), AuthFailure::AlgorithmNotAllowed);
    let unnamed = sign(Algorithm::HS256, &confused, None, &claims());
    assert_eq!(
        reason(&rsa_only, &unnamed),
        AuthFailure::AlgorithmNotAllowed
    );
    // With an HS256 key configured too, the forgery still fails its signature.
    let mixed = authenticator(all_keys());
    assert_eq!(reason(&mixed, &named), AuthFailure::AlgorithmNotAllowed);
    assert_eq!(reason(&mixed, &unnamed), AuthFailure::BadSignature);
}

#[test]
fn wrong_key_unknown_kid_and_disallowed_algorithms() {
    let auth = authenticator(all_keys());
    let other_rsa = EncodingKey::from_rsa_pem(RSA2_PRIVATE).unwrap();
    assert_eq!(
        reason(
            &auth,
            &sign(Algorithm::RS256, &other_rsa, Some("rs"), &claims())
        ),
        AuthFailure::BadSignature
    );
    assert_eq!(
        reason(&auth, &sign(Algorithm::RS256, &other_rsa, None, &claims())),
        AuthFailure::BadSignature
    );
    assert_eq!(
        reason(
            &auth,
            &sign(Algorithm::RS256, &rs(), Some("rotated-away"), &claims())
        ),
        AuthFailure::UnknownKey
    );
    // The RSA key allows RS256 only: not RS384/PS256, and not ES256 under its kid.
    for alg in [Algorithm::RS384, Algorithm::PS256] {
        assert_eq!(
            reason(&auth, &sign(alg, &rs(), Some("rs"), &claims())),
            AuthFailure::AlgorithmNotAllowed
        );
    }
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    assert_eq!(
        reason(&auth, &sign(Algorithm::ES256, &ec, Some("rs"), &claims())),
        AuthFailure::AlgorithmNotAllowed
    );
    let hs512 = sign(Algorithm::HS512, &hs(), Some("hs"), &claims());
    assert_eq!(reason(&auth, &hs512), AuthFailure::AlgorithmNotAllowed);
}

#[test]
fn malformed_truncated_and_oversized() {
    let auth = authenticator(all_keys());
    let good = sign(Algorithm::HS256, &hs(), None, &claims());
    let (header, rest) = good.split_once('.').unwrap();
    let cases = [
        "a.b.c".to_string(),
        "!!!.@@@.###".to_string(),
        format!("{header}.{rest}.extra"),
        format!("{header}.{}", rest.split_once('.').unwrap().0),
        format!("{}.{rest}", b64(&json!("not an object"))),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(b"{\"alg\":")),
        format!("{}.{}.", header, rest.split_once('.').unwrap().0),
        // A critical header we do not understand.
        format!(
            "{}.{rest}",
            b64(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1}))
        ),
        // Payload that is not JSON.
        format!(
            "{header}.{}.{}",
            URL_SAFE_NO_PAD.encode(b"nope"),
            rest.split_once('.').unwrap().1
        ),
    ];
    for token in &cases {
        let why = reason(&auth, token);
        assert!(
            matches!(why, AuthFailure::Malformed | AuthFailure::BadSignature),
            "{token}: {why:?}"
        );
    }
    assert_eq!(
        auth.verify(b"\xff\xfe.a.b", NOW)
            .unwrap_err()
            .auth_failure(),
        Some(AuthFailure::Malformed)
    );
    // Truncated: a signature cut short never verifies.
    let truncated = &good[..good.len() - 7];
    assert!(matches!(
        reason(&auth, truncated),
        AuthFailure::Malformed | AuthFailure::BadSignature
    ));
    // 1 MiB, and just over the limit.
    let huge = format!("{header}.{}.sig", "A".repeat(1024 * 1024));
    assert_eq!(reason(&auth, &huge), AuthFailure::Oversized);
    let over = "a".repeat(TOKEN_SIZE_BYTES_MAX + 1);
    assert_eq!(reason(&auth, &over), AuthFailure::Oversized);
}

#[test]
fn claim_types_are_checked() {
    let auth = authenticator(all_keys());
    let token = |claims: Value| sign(Algorithm::HS256, &hs(), None, &claims);
    assert_eq!(
        reason(&auth, &token(without("sub"))),
        AuthFailure::MissingClaim { claim: "sub" }
    );
    assert_eq!(
        reason(&auth, &token(with("sub", json!(42)))),
        AuthFailure::BadClaim { claim: "sub" }
    );
    assert_eq!(
        reason(&auth, &token(with("sub", json!("")))),
        AuthFailure::BadClaim { claim: "sub" }
    );
    assert_eq!(
        reason(&auth, &token(without("exp"))),
        AuthFailure::MissingClaim { claim: "exp" }
    );
    // A string `exp` must not read as "never expires".
    assert_eq!(
        reason(&auth, &token(with("exp", json!((NOW + 600).to_string())))),
        AuthFailure::BadClaim { claim: "exp" }
    );
    assert_eq!(
        reason(&auth, &token(with("exp", json!(-1)))),
        AuthFailure::BadClaim { claim: "exp" }
    );
    assert_eq!(
        reason(&auth, &token(with("nbf", json!("0")))),
        AuthFailure::BadClaim { claim: "nbf" }
    );
    assert_eq!(
        reason(&auth, &token(with("roles", json!("admin")))),
        AuthFailure::BadClaim { claim: "roles" }
    );
    assert_eq!(
        reason(&auth, &token(with("roles", json!([1, 2])))),
        AuthFailure::BadClaim { claim: "roles" }
    );
    let many: Vec<String> = (0..=ROLES_PER_TOKEN_MAX).map(|i| format!("r{i}")).collect();
    assert_eq!(
        reason(&auth, &token(with("roles", json!(many)))),
        AuthFailure::BadClaim { claim: "roles" }
    );
    assert!(
        auth.verify(token(without("roles")).as_bytes(), NOW)
            .unwrap()
            .roles
            .is_empty()
    );
    // A configurable roles claim.
    let groups = JwtAuthenticator::new(
        JwtConfig {
            roles_claim: "groups".into(),
            ..auth.config().clone()
        },
        all_keys(),
    )
    .unwrap();
    let id = groups
        .verify(token(with("groups", json!(["ops"]))).as_bytes(), NOW)
        .unwrap();
    assert_eq!(id.roles, ["ops"]);
}

fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    jwt_ring::install();
    let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

#[test]
fn jwks_keys_and_rotation() {
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    let ed = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
    let mut enc_only = jwk(&rs(), Algorithm::RS256, "enc");
    enc_only.common.public_key_use = Some(PublicKeyUse::Encryption);
    let set = JwkSet {
        keys: vec![
            jwk(&rs(), Algorithm::RS256, "rsa-1"),
            jwk(&ec, Algorithm::ES256, "ec-1"),
            jwk(&ed, Algorithm::EdDSA, "ed-1"),
            // Skipped: an encryption key and an algorithm we do not accept.
            enc_only,
            jwk(&rs(), Algorithm::RS512, "rsa-512"),
        ],
    };
    let keys = JwtKeySet::from_jwks(&serde_json::to_vec(&set).unwrap()).unwrap();
    assert_eq!(keys.len(), 3);
    let auth = authenticator(keys);
    for (alg, key, kid) in [
        (Algorithm::RS256, rs(), "rsa-1"),
        (Algorithm::ES256, ec.clone(), "ec-1"),
        (Algorithm::EdDSA, ed, "ed-1"),
    ] {
        let token = sign(alg, &key, Some(kid), &claims());
        assert_eq!(
            auth.verify(token.as_bytes(), NOW)
                .unwrap()
                .key_id
                .as_deref(),
            Some(kid)
        );
    }
    assert_eq!(
        reason(
            &auth,
            &sign(Algorithm::RS256, &rs(), Some("enc"), &claims())
        ),
        AuthFailure::UnknownKey
    );
    // Rotation: the reloaded JWKS has only the EC key.
    let old = sign(Algorithm::RS256, &rs(), Some("rsa-1"), &claims());
    let rotated = JwkSet {
        keys: vec![jwk(&ec, Algorithm::ES256, "ec-1")],
    };
    auth.replace_keys(JwtKeySet::from_jwks(&serde_json::to_vec(&rotated).unwrap()).unwrap());
    assert_eq!(reason(&auth, &old), AuthFailure::UnknownKey);
    // Unusable documents.
    assert!(JwtKeySet::from_jwks(b"{\"keys\": []}").is_err());
    assert!(JwtKeySet::from_jwks(b"not json").is_err());
    assert!(JwtKeySet::from_jwks(&vec![b' '; JWKS_SIZE_BYTES_MAX + 1]).is_err());
}

#[test]
fn key_and_config_checks() {
    assert!(JwtKey::hs256(b"short").is_err());
    assert!(JwtKey::from_public_pem(RSA_PRIVATE).is_err());
    assert!(JwtKey::from_public_pem(b"garbage").is_err());
    assert_eq!(
        JwtKey::from_public_pem(RSA_PUBLIC).unwrap().algorithm(),
        JwtAlgorithm::Rs256
    );
    assert_eq!(
        JwtKey::from_public_pem(EC_PUBLIC).unwrap().algorithm(),
        JwtAlgorithm::Es256
    );
    assert_eq!(
        JwtKey::from_public_pem(ED_PUBLIC).unwrap().algorithm(),
        JwtAlgorithm::EdDsa
    );
    let skewed = JwtConfig {
        clock_skew_secs: CLOCK_SKEW_SECS_MAX + 1,
        ..JwtConfig::default()
    };
    assert!(JwtAuthenticator::new(skewed, JwtKeySet::new()).is_err());
    let mut full = JwtKeySet::new();
    for _ in 0..JWT_KEYS_MAX {
        full = full.with(JwtKey::hs256(SECRET).unwrap()).unwrap();
    }
    assert!(full.with(JwtKey::hs256(SECRET).unwrap()).is_err());
    // Debug output never shows key material.
    let debug = format!("{:?}", JwtKey::hs256(SECRET).unwrap());
    assert!(!debug.contains("0123456789"));
}

#[test]
fn through_the_protocol_authenticator() {
    let jwt = Arc::new(authenticator(all_keys()));
    let chain = Authenticators::new().with_jwt(jwt);
    let peer = PeerInfo {
        addr: "127.0.0.1:9".parse().unwrap(),
        identity: None,
    };
    let now = super::super::unix_now_secs();
    let live = sign(
        Algorithm::HS256,
        &hs(),
        None,
        &with("exp", json!(now + 600)),
    );
    assert_eq!(
        chain.authenticate(live.as_bytes(), &peer).unwrap().name,
        "alice"
    );
    let dead = sign(
        Algorithm::HS256,
        &hs(),
        None,
        &with("exp", json!(now - 600)),
    );
    let err = chain.authenticate(dead.as_bytes(), &peer).unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::Unauthenticated));
    assert_eq!(err.message, "authentication failed: token expired");
}
