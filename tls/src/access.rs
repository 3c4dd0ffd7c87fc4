//! Access tokens for a responder's heavy endpoints (photos, large echoes,
//! the responsiveness test's large transfers).
//!
//! An operator makes one Ed25519 key pair ([`AccessSigner::generate`]),
//! keeps the private half where tokens are issued and gives every
//! responder the public half ([`AccessKeys`]). A token names one probe and
//! the second it expires, and is signed:
//!
//! ```text
//! vt1.<probe id>.<expires, Unix seconds>.<Ed25519 signature, 128 hex digits>
//! ```
//!
//! The signature covers everything before its own dot. A responder checks
//! a token offline, with no database and no call to the collector, and a
//! responder that is broken into holds no key that can make one. Several
//! public keys may be trusted at once, so a key can be rotated without a
//! gap; a token is withdrawn by letting it expire (issue short-lived ones)
//! or by rotating the key.

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use std::path::Path;

/// The first field of every token, its format version.
pub const TOKEN_VERSION: &str = "vt1";
/// The longest token accepted anywhere (a 64-byte probe id gives 219).
pub const MAX_TOKEN_LEN: usize = 512;
const SIGNATURE_LEN: usize = 64;
const PUBLIC_KEY_LEN: usize = 32;

/// The issuing side: the private key that signs tokens.
pub struct AccessSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AccessSigner {
    /// Shows the public half only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSigner")
            .field("public", &to_hex(self.pair.public_key().as_ref()))
            .finish()
    }
}

/// The public keys a responder accepts tokens signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKeys {
    keys: Vec<[u8; PUBLIC_KEY_LEN]>,
}

/// A token that checked out: whom it names, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    /// The probe id the token was issued to.
    pub probe: String,
    /// When it expires, Unix seconds.
    pub expires_unix: u64,
}

/// Why a token does not give access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    /// No token came with the request.
    #[error("no access token; this responder requires one for photos and large transfers")]
    Missing,
    /// The text is not a token of this format.
    #[error("not an access token: {0}")]
    Malformed(&'static str),
    /// No trusted key signed it, or it was altered.
    #[error("access token not signed by a key this responder trusts")]
    BadSignature,
    /// Its time is over.
    #[error("access token expired at {at} (Unix seconds)")]
    Expired {
        /// When it expired, Unix seconds.
        at: u64,
    },
}

/// Why a key cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum AccessKeyError {
    /// The key file could not be read or written.
    #[error("access key {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's text is not a key of the kind expected.
    #[error("access key {path}: {why}")]
    Invalid {
        /// The file, or "text" when parsed from a string.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A token cannot be issued with these fields.
    #[error("cannot issue a token: {0}")]
    Issue(String),
}

impl AccessSigner {
    /// A new random key pair, and its private half as the text of a key
    /// file (PKCS#8, hex, after a comment line).
    pub fn generate() -> Result<(AccessSigner, String), AccessKeyError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| AccessKeyError::Issue("the system's random source failed".into()))?;
        let text = format!(
            "# vantage access signing key (Ed25519, PKCS#8); keep it private\n{}\n",
            to_hex(pkcs8.as_ref())
        );
        let signer = AccessSigner::from_text(&text, "generated")?;
        Ok((signer, text))
    }

    /// Reads a key file written by [`AccessSigner::generate`].
    pub fn load(path: &Path) -> Result<AccessSigner, AccessKeyError> {
        let text = read(path)?;
        AccessSigner::from_text(&text, &path.display().to_string())
    }

    fn from_text(text: &str, path: &str) -> Result<AccessSigner, AccessKeyError> {
        let invalid = |why: &str| AccessKeyError::Invalid {
            path: path.into(),
            why: why.into(),
        };
        let line = key_lines(text)
            .next()
            .ok_or_else(|| invalid("no key in it"))?;
        let der = from_hex(line).ok_or_else(|| invalid("the key line is not hex"))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| invalid("not an Ed25519 private key (PKCS#8)"))?;
        Ok(AccessSigner { pair })
    }

    /// The public half as the text of a file for responders (64 hex digits
    /// after a comment line).
    pub fn public_text(&self) -> String {
        format!(
            "# vantage access public key (Ed25519); give it to responders with --require-token\n{}\n",
            to_hex(self.pair.public_key().as_ref())
        )
    }

    /// A token for `probe` that expires at `expires_unix`.
    pub fn issue(&self, probe: &str, expires_unix: u64) -> Result<String, AccessKeyError> {
        if !valid_probe_id(probe) {
            return Err(AccessKeyError::Issue(format!(
                "`{probe}` is not a probe id: use 1 to 64 letters, digits, `-`, `_` or `.`"
            )));
        }
        let signed = format!("{TOKEN_VERSION}.{probe}.{expires_unix}");
        let signature = self.pair.sign(signed.as_bytes());
        Ok(format!("{signed}.{}", to_hex(signature.as_ref())))
    }
}

impl AccessKeys {
    /// Reads a file of public keys: one per line (64 hex digits), with
    /// blank lines and `#` comments, as [`AccessSigner::public_text`]
    /// writes. Several files' lines may be concatenated.
    pub fn load(path: &Path) -> Result<AccessKeys, AccessKeyError> {
        let text = read(path)?;
        AccessKeys::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a public-key file; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<AccessKeys, AccessKeyError> {
        let mut keys = Vec::new();
        for line in key_lines(text) {
            let key = from_hex(line)
                .and_then(|b| <[u8; PUBLIC_KEY_LEN]>::try_from(b).ok())
                .ok_or_else(|| AccessKeyError::Invalid {
                    path: path.into(),
                    why: format!("`{line}` is not a public key (64 hex digits)"),
                })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(AccessKeyError::Invalid {
                path: path.into(),
                why: "no public key in it".into(),
            });
        }
        Ok(AccessKeys { keys })
    }

    /// Checks `token` at `now_unix`: well formed, signed by one of the
    /// keys, not expired.
    pub fn check(&self, token: &str, now_unix: u64) -> Result<AccessGrant, AccessRefusal> {
        let (grant, signed, signature) = split(token)?;
        let valid = self.keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(signed.as_bytes(), &signature)
                .is_ok()
        });
        if !valid {
            return Err(AccessRefusal::BadSignature);
        }
        if now_unix >= grant.expires_unix {
            return Err(AccessRefusal::Expired {
                at: grant.expires_unix,
            });
        }
        Ok(grant)
    }
}

/// What a token says, without checking its signature: for a probe to warn
/// that its own token has expired or soon will.
pub fn read_token(token: &str) -> Result<AccessGrant, AccessRefusal> {
    split(token).map(|(grant, _, _)| grant)
}

/// The token's fields, the signed text and the signature bytes.
fn split(token: &str) -> Result<(AccessGrant, &str, Vec<u8>), AccessRefusal> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AccessRefusal::Malformed("longer than any token"));
    }
    let (signed, signature) = token
        .rsplit_once('.')
        .ok_or(AccessRefusal::Malformed("no signature"))?;
    let signature = from_hex(signature)
        .filter(|s| s.len() == SIGNATURE_LEN)
        .ok_or(AccessRefusal::Malformed(
            "the signature is not 128 hex digits",
        ))?;
    let rest = signed
        .strip_prefix(TOKEN_VERSION)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or(AccessRefusal::Malformed("it does not begin with vt1."))?;
    let (probe, expires) = rest
        .rsplit_once('.')
        .ok_or(AccessRefusal::Malformed("no expiry"))?;
    if !valid_probe_id(probe) {
        return Err(AccessRefusal::Malformed("the probe id is not valid"));
    }
    let expires_unix = expires
        .parse::<u64>()
        .map_err(|_| AccessRefusal::Malformed("the expiry is not a number"))?;
    let grant = AccessGrant {
        probe: probe.to_string(),
        expires_unix,
    };
    Ok((grant, signed, signature))
}

/// The probe ids `vantage-probe` accepts: 1 to 64 letters, digits, `-`,
/// `_` or `.`.
fn valid_probe_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn read(path: &Path) -> Result<String, AccessKeyError> {
    std::fs::read_to_string(path).map_err(|source| AccessKeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The non-blank lines of a key file that are not `#` comments, trimmed.
fn key_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (AccessSigner, AccessKeys) {
        let (signer, _) = AccessSigner::generate().unwrap();
        let keys = AccessKeys::parse(&signer.public_text(), "test").unwrap();
        (signer, keys)
    }

    #[test]
    fn an_issued_token_checks_until_it_expires() {
        let (signer, keys) = pair();
        let token = signer.issue("in-1.wifi", 1_000).unwrap();
        assert!(token.starts_with("vt1.in-1.wifi.1000."), "{token}");
        assert!(token.len() <= MAX_TOKEN_LEN);
        let grant = keys.check(&token, 999).unwrap();
        assert_eq!(grant.probe, "in-1.wifi");
        assert_eq!(grant.expires_unix, 1_000);
        assert_eq!(
            keys.check(&token, 1_000),
            Err(AccessRefusal::Expired { at: 1_000 })
        );
        assert_eq!(read_token(&token).unwrap(), grant);
    }

    #[test]
    fn an_altered_token_or_another_key_is_refused() {
        let (signer, keys) = pair();
        let token = signer.issue("in-1", 2_000_000_000).unwrap();
        // Changing the probe or the expiry breaks the signature.
        let other_probe = token.replacen("in-1", "in-2", 1);
        assert_eq!(
            keys.check(&other_probe, 0),
            Err(AccessRefusal::BadSignature)
        );
        let later = token.replacen("2000000000", "2000000001", 1);
        assert_eq!(keys.check(&later, 0), Err(AccessRefusal::BadSignature));
        // A key the responder does not trust.
        let (stranger, _) = pair();
        let forged = stranger.issue("in-1", 2_000_000_000).unwrap();
        assert_eq!(keys.check(&forged, 0), Err(AccessRefusal::BadSignature));
    }

    #[test]
    fn either_of_two_keys_is_trusted_during_a_rotation() {
        let (old, _) = pair();
        let (new, _) = pair();
        let both = format!("{}{}", old.public_text(), new.public_text());
        let keys = AccessKeys::parse(&both, "both").unwrap();
        for signer in [&old, &new] {
            let token = signer.issue("p", 10).unwrap();
            assert!(keys.check(&token, 5).is_ok());
        }
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let (signer, keys) = pair();
        let good = signer.issue("p", 10).unwrap();
        let sig = good.rsplit_once('.').unwrap().1;
        for (token, why) in [
            ("", "no signature"),
            ("vt1.p.10.abcd", "128 hex"),
            (&format!("vt2.p.10.{sig}") as &str, "vt1."),
            (&format!("vt1.p.ten.{sig}"), "not a number"),
            (&format!("vt1.p q.10.{sig}"), "probe id"),
            (&format!("vt1.10.{sig}"), "no expiry"),
            (&"v".repeat(MAX_TOKEN_LEN + 1), "longer"),
        ] {
            match keys.check(token, 0) {
                Err(AccessRefusal::Malformed(m)) => assert!(m.contains(why), "{token}: {m}"),
                other => panic!("{token}: {other:?}"),
            }
        }
    }

    #[test]
    fn key_files_read_back_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, text) = AccessSigner::generate().unwrap();
        let key = dir.path().join("access.key");
        std::fs::write(&key, text).unwrap();
        let again = AccessSigner::load(&key).unwrap();
        assert_eq!(again.public_text(), signer.public_text());
        let public = dir.path().join("access.pub");
        std::fs::write(&public, "# nothing\n\n").unwrap();
        let err = AccessKeys::load(&public).unwrap_err().to_string();
        assert!(
            err.contains("access.pub") && err.contains("no public key"),
            "{err}"
        );
        std::fs::write(&public, "zz\n").unwrap();
        let err = AccessKeys::load(&public).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = AccessSigner::load(&public).unwrap_err().to_string();
        assert!(err.contains("not hex"), "{err}");
        assert!(signer.issue("bad id", 1).is_err());
    }
}
