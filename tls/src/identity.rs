//! Certificates: generated once with rcgen and kept on disk, or loaded from
//! PEM files; and the SHA-256 fingerprint a probe pins.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// Why an identity could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// rcgen refused the parameters.
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or no private key.
    #[error("{path}: no {what} found in this PEM file")]
    Empty {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls refused the certificate or key.
    #[error("certificate or key unusable: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS configuration cannot carry QUIC (it needs TLS 1.3).
    #[error("QUIC configuration: {0}")]
    Quic(String),
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A fresh self-signed certificate for the given DNS names and IP addresses.
    pub fn generate(names: &[String]) -> Result<Self, IdentityError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        Ok(Identity {
            certs: vec![certified.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der())),
        })
    }

    /// Loads `cert.pem` and `key.pem` from `dir`, generating and saving them
    /// on first use so the fingerprint stays the same across restarts.
    pub fn load_or_generate(dir: &Path, names: &[String]) -> Result<Self, IdentityError> {
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        if cert_path.exists() && key_path.exists() {
            return Self::from_pem_files(&cert_path, &key_path);
        }
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::File { path, source }
        };
        std::fs::create_dir_all(dir).map_err(file_err(dir))?;
        let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
        write_private(&key_path, certified.key_pair.serialize_pem().as_bytes())
            .map_err(file_err(&key_path))?;
        std::fs::write(&cert_path, certified.cert.pem()).map_err(file_err(&cert_path))?;
        Self::from_pem_files(&cert_path, &key_path)
    }

    /// Loads a certificate chain and a private key from PEM files.
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| IdentityError::File {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(cert_path)?;
        let certs = rustls_pemfile::certs(&mut &cert_pem[..])
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| IdentityError::File {
                path: cert_path.to_path_buf(),
                source,
            })?;
        if certs.is_empty() {
            return Err(IdentityError::Empty {
                path: cert_path.to_path_buf(),
                what: "certificate",
            });
        }
        let key_pem = read(key_path)?;
        let key = rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|source| IdentityError::File {
                path: key_path.to_path_buf(),
                source,
            })?
            .ok_or_else(|| IdentityError::Empty {
                path: key_path.to_path_buf(),
                what: "private key",
            })?;
        Ok(Identity { certs, key })
    }

    /// SHA-256 of the leaf certificate's DER encoding.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.certs.first().map(|c| c.as_ref()).unwrap_or(&[]))
    }

    /// A TLS 1.3-only rustls server configuration offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, IdentityError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

impl Identity {
    /// A QUIC server configuration offering `alpn`, with at most
    /// `max_streams` concurrent bidirectional streams per connection, no
    /// unidirectional ones, and connections closed after `idle`.
    pub fn quic_server_config(
        &self,
        alpn: &[u8],
        max_streams: u32,
        idle: std::time::Duration,
    ) -> Result<quinn::ServerConfig, IdentityError> {
        self.quic_server_config_for(&[alpn], max_streams, 0, idle)
    }

    /// A QUIC server configuration offering several ALPN protocols, with
    /// `uni_streams` client-opened unidirectional streams (HTTP/3 needs
    /// three: its control and QPACK streams).
    pub fn quic_server_config_for(
        &self,
        alpn: &[&[u8]],
        max_streams: u32,
        uni_streams: u32,
        idle: std::time::Duration,
    ) -> Result<quinn::ServerConfig, IdentityError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(self.server_config(alpn)?)
            .map_err(|e| IdentityError::Quic(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(max_streams.into())
            .max_concurrent_uni_streams(uni_streams.into())
            .max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
        server.transport_config(Arc::new(transport));
        Ok(server)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// SHA-256 fingerprint of a certificate, written `sha256:` and 64 lower-case
/// hex digits. Parsing also takes upper case and `:`-separated pairs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of DER bytes.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a SHA-256 fingerprint.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a SHA-256 fingerprint: expected sha256: followed by 64 hex digits, as `vantage serve` prints")]
pub struct FingerprintError(String);

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FingerprintError(s.to_string());
        let hex = s.trim();
        let hex = hex
            .strip_prefix("sha256:")
            .or_else(|| hex.strip_prefix("SHA256:"))
            .unwrap_or(hex);
        let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parses_its_own_display_and_colon_form() {
        let f = Fingerprint::of(b"hello");
        let s = f.to_string();
        assert!(s.starts_with("sha256:2cf24dba5fb0a30e"), "{s}");
        assert_eq!(s.parse::<Fingerprint>().unwrap(), f);
        let colons: String = s.as_bytes()[7..]
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap().to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(colons.parse::<Fingerprint>().unwrap(), f);
        assert!("sha256:abc".parse::<Fingerprint>().is_err());
        assert!("sha256:zz".repeat(8).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn stored_identity_keeps_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let a = Identity::load_or_generate(dir.path(), &names).unwrap();
        let b = Identity::load_or_generate(dir.path(), &names).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn empty_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(&p, "nothing here").unwrap();
        let err = Identity::from_pem_files(&p, &p).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
