//! A `jsonwebtoken` crypto provider on `ring`.
//!
//! jsonwebtoken 10+ delegates all signing and verifying to a process-wide
//! [`CryptoProvider`]; its built-in ones are aws-lc-rs (a C/CMake build) and RustCrypto
//! (a second crypto stack: rsa, p256, ed25519-dalek, …). `ring` is already in the tree
//! through rustls, so this module plugs it in instead. [`install`] is called by every
//! constructor of the JWT authenticator; if the process already chose a provider (a
//! crate enabled one of jsonwebtoken's backend features), that one is used and works just
//! as well.
//!
//! Verification covers every algorithm jsonwebtoken names (HS*, RS*, PS*, ES256/384,
//! EdDSA); which ones a token may use is decided by the authenticator, not here. RSA
//! keys under 2048 bits are refused by ring.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use ring::{digest, hmac};

/// The provider.
pub(crate) static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key,
        rsa_pub_components_from_public_key,
        ec_pub_components_from_private_key,
        ed_pub_components_from_private_key,
        compute_digest,
    },
};

/// Make [`RING_PROVIDER`] the process default unless one is already chosen.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if CryptoProvider::try_get_default().is_none() {
            // Losing a race to another installer is fine: any provider verifies.
            let _ = RING_PROVIDER.install_default();
        }
    });
}

fn key_error() -> Error {
    ErrorKind::InvalidKeyFormat.into()
}

fn check_family(expected: AlgorithmFamily, actual: AlgorithmFamily) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(key_error())
    }
}

struct HmacVerifier {
    algorithm: Algorithm,
    key: hmac::Key,
}

impl signature::Verifier<Vec<u8>> for HmacVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // Constant-time tag comparison inside ring.
        hmac::verify(&self.key, msg, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for HmacVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl signature::Signer<Vec<u8>> for HmacVerifier {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.key, msg).as_ref().to_vec())
    }
}

impl JwtSigner for HmacVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

enum PublicKeyBytes {
    /// PKCS#1 RSAPublicKey DER, an uncompressed SEC1 EC point, or a raw Ed25519 key.
    Der(Vec<u8>),
    /// RSA modulus and exponent, big-endian (from a JWK).
    RsaComponents { n: Vec<u8>, e: Vec<u8> },
}

struct PublicKeyVerifier {
    algorithm: Algorithm,
    scheme: &'static dyn sig::VerificationAlgorithm,
    key: PublicKeyBytes,
}

impl signature::Verifier<Vec<u8>> for PublicKeyVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match &self.key {
            PublicKeyBytes::Der(der) => sig::UnparsedPublicKey::new(self.scheme, der)
                .verify(msg, signature)
                .is_ok(),
            PublicKeyBytes::RsaComponents { n, e } => {
                let params = rsa_params(self.algorithm).ok_or_else(signature::Error::new)?;
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, signature)
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for PublicKeyVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn rsa_params(algorithm: Algorithm) -> Option<&'static sig::RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn hmac_algorithm(algorithm: Algorithm) -> Option<hmac::Algorithm> {
    Some(match algorithm {
        Algorithm::HS256 => hmac::HMAC_SHA256,
        Algorithm::HS384 => hmac::HMAC_SHA384,
        Algorithm::HS512 => hmac::HMAC_SHA512,
        _ => return None,
    })
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let algorithm = *algorithm;
    if let Some(mac) = hmac_algorithm(algorithm) {
        check_family(AlgorithmFamily::Hmac, key.family())?;
        let secret = key.try_get_as_bytes()?;
        return Ok(Box::new(HmacVerifier {
            algorithm,
            key: hmac::Key::new(mac, secret),
        }));
    }
    let (family, scheme): (_, &'static dyn sig::VerificationAlgorithm) = match algorithm {
        Algorithm::ES256 => (AlgorithmFamily::Ec, &sig::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => (AlgorithmFamily::Ec, &sig::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, &sig::ED25519),
        rsa => (
            AlgorithmFamily::Rsa,
            rsa_params(rsa).ok_or_else(|| Error::from(ErrorKind::UnsupportedAlgorithm))?,
        ),
    };
    check_family(family, key.family())?;
    let key = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => PublicKeyBytes::Der(der.clone()),
        DecodingKeyKind::RsaModulusExponent { n, e } => PublicKeyBytes::RsaComponents {
            n: n.clone(),
            e: e.clone(),
        },
    };
    Ok(Box::new(PublicKeyVerifier {
        algorithm,
        scheme,
        key,
    }))
}

/// Signing exists for tests and tools that mint tokens; the broker only verifies.
enum SigningKey {
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

struct RingSigner {
    algorithm: Algorithm,
    key: SigningKey,
}

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let rng = SystemRandom::new();
        match &self.key {
            SigningKey::Rsa(pair, encoding) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(*encoding, &rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                Ok(out)
            }
            SigningKey::Ecdsa(pair) => pair
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
            SigningKey::Ed25519(pair) => Ok(pair.sign(msg).as_ref().to_vec()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let algorithm = *algorithm;
    if let Some(mac) = hmac_algorithm(algorithm) {
        check_family(AlgorithmFamily::Hmac, key.family())?;
        return Ok(Box::new(HmacVerifier {
            algorithm,
            key: hmac::Key::new(mac, key.as_bytes()),
        }));
    }
    let rng = SystemRandom::new();
    let signing = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => {
            check_family(AlgorithmFamily::Ec, key.family())?;
            let scheme = if algorithm == Algorithm::ES256 {
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &sig::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            sig::EcdsaKeyPair::from_pkcs8(scheme, key.as_bytes(), &rng)
                .map(SigningKey::Ecdsa)
                .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?
        }
        Algorithm::EdDSA => {
            check_family(AlgorithmFamily::Ed, key.family())?;
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.as_bytes())
                .map(SigningKey::Ed25519)
                .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?
        }
        rsa => {
            check_family(AlgorithmFamily::Rsa, key.family())?;
            let encoding: &'static dyn sig::RsaEncoding = match rsa {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
            };
            let pair = sig::RsaKeyPair::from_der(key.as_bytes())
                .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
            SigningKey::Rsa(pair, encoding)
        }
    };
    Ok(Box::new(RingSigner {
        algorithm,
        key: signing,
    }))
}

fn rsa_pub_components_from_private_key(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pair = sig::RsaKeyPair::from_der(der)
        .map_err(|e| Error::from(ErrorKind::InvalidRsaKey(e.to_string())))?;
    let components = sig::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    Ok((components.n, components.e))
}

fn rsa_pub_components_from_public_key(_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    // ring parses RSA public keys only inside a verification; no JWK is built from one.
    Err(ErrorKind::Provider("ring provider: RSA public key to JWK is not supported".into()).into())
}

fn ec_pub_components_from_private_key(
    der: &[u8],
    algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    let (curve, scheme, coordinate_len) = match algorithm {
        Algorithm::ES256 => (
            EllipticCurve::P256,
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            32,
        ),
        Algorithm::ES384 => (
            EllipticCurve::P384,
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
            48,
        ),
        _ => return Err(ErrorKind::InvalidEcdsaKey.into()),
    };
    let pair = sig::EcdsaKeyPair::from_pkcs8(scheme, der, &SystemRandom::new())
        .map_err(|_| Error::from(ErrorKind::InvalidEcdsaKey))?;
    let point = pair.public_key().as_ref();
    if point.len() != 1 + 2 * coordinate_len {
        return Err(ErrorKind::InvalidEcdsaKey.into());
    }
    let (x, y) = point[1..].split_at(coordinate_len);
    Ok((curve, x.to_vec(), y.to_vec()))
}

fn ed_pub_components_from_private_key(der: &[u8], curve: &EllipticCurve) -> Result<Vec<u8>, Error> {
    if *curve != EllipticCurve::Ed25519 {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    let pair = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
        .map_err(|_| Error::from(ErrorKind::InvalidEddsaKey))?;
    Ok(pair.public_key().as_ref().to_vec())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Result<Vec<u8>, Error> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    Ok(digest::digest(algorithm, data).as_ref().to_vec())
}
