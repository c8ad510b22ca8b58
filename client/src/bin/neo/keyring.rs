//! `--keyring FILE` and `--encrypt-key ID` of `neo produce` and `neo consume`
//! (docs/cli.md, "Payload encryption"): the client-side key ring of
//! `neo_client::encryption`, read from a file.
//!
//! # The file
//! One key per line, `ID ALGORITHM HEXKEY`, separated by spaces or tabs:
//!
//! ```text
//! # id       algorithm          key (32 bytes, 64 hex digits)
//! 2026-12    aes-256-gcm        8f1c...e2
//! 2027-01    chacha20-poly1305  00ab...17
//! ```
//!
//! `ALGORITHM` is `aes-256-gcm` or `chacha20-poly1305`; the id is 1 to 64 bytes without
//! spaces. Blank lines and lines starting with `#` are skipped. Keys are added in file
//! order, so the last one is current (the one a producer encrypts with) unless
//! `--encrypt-key ID` names another. A consumer decrypts with any key of the file. A
//! malformed line stops the command before anything is sent, naming the line (never
//! the key).

use std::path::Path;

use anyhow::{Context, bail, ensure};
use neo_client::{AeadAlgorithm, Keyring, SharedKeyring};

/// One line of a key-ring file.
struct KeyLine {
    id: String,
    algorithm: AeadAlgorithm,
    key: Vec<u8>,
}

fn algorithm(name: &str) -> Option<AeadAlgorithm> {
    match name.to_ascii_lowercase().as_str() {
        "aes-256-gcm" => Some(AeadAlgorithm::Aes256Gcm),
        "chacha20-poly1305" => Some(AeadAlgorithm::ChaCha20Poly1305),
        _ => None,
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse(text: &str) -> anyhow::Result<Vec<KeyLine>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, alg, key] = fields[..] else {
            bail!("line {}: expected `ID ALGORITHM HEXKEY`", n + 1);
        };
        let Some(algorithm) = algorithm(alg) else {
            bail!(
                "line {}: unknown algorithm {alg:?} (aes-256-gcm or chacha20-poly1305)",
                n + 1
            );
        };
        let Some(key) = hex(key) else {
            bail!("line {}: the key of {id:?} is not hexadecimal", n + 1);
        };
        keys.push(KeyLine {
            id: id.to_string(),
            algorithm,
            key,
        });
    }
    ensure!(!keys.is_empty(), "no key in the file");
    Ok(keys)
}

/// The ring of `text`, with `current` (or the last key) current.
fn ring_of(text: &str, current: Option<&str>) -> anyhow::Result<SharedKeyring> {
    let mut keys = parse(text)?;
    if let Some(id) = current {
        let at = keys
            .iter()
            .position(|k| k.id == id)
            .with_context(|| format!("--encrypt-key {id:?} is not in the key ring"))?;
        // `add_key` makes the key added last current.
        let chosen = keys.remove(at);
        keys.push(chosen);
    }
    let mut ring = Keyring::new();
    for k in &keys {
        ring.add_key(&k.id, k.algorithm, &k.key)
            .with_context(|| format!("key {:?}", k.id))?;
    }
    Ok(SharedKeyring::new(ring))
}

/// The key ring of `--keyring FILE` (`--encrypt-key ID` current), if given.
pub(crate) fn load(
    file: Option<&Path>,
    current: Option<&str>,
) -> anyhow::Result<Option<SharedKeyring>> {
    let Some(file) = file else {
        return Ok(None);
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("--keyring {}", file.display()))?;
    ring_of(&text, current)
        .with_context(|| format!("--keyring {}", file.display()))
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn the_last_key_is_current_unless_chosen() {
        let text = format!("# keys\n\nold aes-256-gcm {A}\n  new\tChaCha20-Poly1305 {B}\n");
        let ring = ring_of(&text, None).unwrap();
        assert_eq!(ring.current_key_id().as_deref(), Some("new"));
        assert_eq!(ring.key_ids().len(), 2);
        let ring = ring_of(&text, Some("old")).unwrap();
        assert_eq!(ring.current_key_id().as_deref(), Some("old"));
        let err = ring_of(&text, Some("nope")).unwrap_err();
        assert!(
            format!("{err:#}").contains("not in the key ring"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_lines_are_named_without_the_key() {
        for (text, needle) in [
            ("", "no key"),
            ("k aes-256-gcm", "line 1: expected"),
            (&format!("k rot13 {A}") as &str, "unknown algorithm"),
            ("k aes-256-gcm zz", "not hexadecimal"),
            ("k aes-256-gcm abc", "not hexadecimal"),
            ("k aes-256-gcm 0011", "32 bytes"),
            (
                &format!("k aes-256-gcm {A}\nk aes-256-gcm {B}"),
                "already exists",
            ),
        ] {
            let err = format!("{:#}", ring_of(text, None).unwrap_err());
            assert!(err.contains(needle), "{text:?}: {err}");
            assert!(!err.contains(&A[8..]) && !err.contains(&B[8..]), "{err}");
        }
        let err = load(Some(Path::new("/nonexistent/ring")), None).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/ring"));
        assert!(load(None, Some("x")).unwrap().is_none());
    }
}
