//! How the probe decides to trust a responder's certificate: a pinned
//! SHA-256 fingerprint, a CA file, or (only when asked explicitly) nothing.

use crate::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The trust decision for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Accept only a leaf certificate with one of these fingerprints.
    Pinned(Vec<Fingerprint>),
    /// Verify the chain against the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Accept any certificate. Every output of such a run says so.
    Insecure,
    /// Verify the chain against the public web's roots (Mozilla's, as
    /// shipped by webpki-roots): the default for `--url`.
    PublicRoots,
}

/// Why a TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The CA file is unreadable or holds no certificate.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The configuration cannot carry QUIC (it needs TLS 1.3).
    #[error("QUIC client configuration: {0}")]
    Quic(String),
    /// No local UDP socket could be bound for a QUIC client.
    #[error("binding a local UDP socket for QUIC: {0}")]
    Socket(#[source] std::io::Error),
}

/// A rustls client configuration together with what its pin verifier saw.
#[derive(Clone)]
pub struct TlsClient {
    /// The configuration to connect with.
    pub config: Arc<rustls::ClientConfig>,
    pin: Option<Arc<PinVerifier>>,
}

impl TlsClient {
    /// Builds a TLS 1.3-only client offering `alpn` (Vantage's own services).
    pub fn new(trust: &Trust, alpn: &[&[u8]]) -> Result<Self, TrustError> {
        Self::with_versions(trust, alpn, &[&rustls::version::TLS13])
    }

    /// Builds a client for the open web: TLS 1.3 or 1.2, as a browser would
    /// accept, offering `alpn`.
    pub fn for_web(trust: &Trust, alpn: &[&[u8]]) -> Result<Self, TrustError> {
        Self::with_versions(
            trust,
            alpn,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )
    }

    fn with_versions(
        trust: &Trust,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self, TrustError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?;
        let (mut config, pin) = match trust {
            Trust::PublicRoots => {
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                (
                    builder.with_root_certificates(roots).with_no_client_auth(),
                    None,
                )
            }
            Trust::CaFile(path) => {
                let err = |reason: String| TrustError::CaFile {
                    path: path.clone(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pemfile_certs(&pem).map_err(err)? {
                    roots.add(cert)?;
                }
                if roots.is_empty() {
                    return Err(err("no certificate in the file".into()));
                }
                (
                    builder.with_root_certificates(roots).with_no_client_auth(),
                    None,
                )
            }
            Trust::Pinned(pins) => {
                let v = Arc::new(PinVerifier {
                    pins: pins.clone(),
                    provider: provider.clone(),
                    accept_any: false,
                    mismatch: Mutex::new(None),
                });
                (
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(v.clone())
                        .with_no_client_auth(),
                    Some(v),
                )
            }
            Trust::Insecure => {
                let v = Arc::new(PinVerifier {
                    pins: Vec::new(),
                    provider,
                    accept_any: true,
                    mismatch: Mutex::new(None),
                });
                (
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(v)
                        .with_no_client_auth(),
                    None,
                )
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsClient {
            config: Arc::new(config),
            pin,
        })
    }

    /// A QUIC client endpoint for peers of `peer`'s address family, using
    /// this configuration, closing connections idle for `idle` and keeping
    /// live ones open with a ping every `keep_alive`.
    pub fn quic_endpoint(
        &self,
        peer: std::net::SocketAddr,
        idle: std::time::Duration,
        keep_alive: std::time::Duration,
    ) -> Result<quinn::Endpoint, TrustError> {
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(self.config.clone())
            .map_err(|e| TrustError::Quic(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok())
            .keep_alive_interval(Some(keep_alive));
        client.transport_config(Arc::new(transport));
        let local: SocketAddr = if peer.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(local).map_err(TrustError::Socket)?;
        endpoint.set_default_client_config(client);
        Ok(endpoint)
    }

    /// The fingerprint presented by a server that failed the pin, if any did.
    pub fn pin_mismatch(&self) -> Option<Fingerprint> {
        self.pin
            .as_ref()
            .and_then(|p| p.mismatch.lock().ok().and_then(|m| *m))
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))
}

/// A server certificate that matched none of the pins: what the server
/// presented and what was expected. The pin verifier returns it inside
/// `rustls::Error::Other`, so a failure is told apart by its type; only
/// over QUIC, where quinn keeps nothing but the message, by its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{MESSAGE_START}: the server presented {presented}, expected {}; check --pin against the fingerprint `vantage serve` prints", expected_text(.expected))]
pub struct PinMismatch {
    /// The leaf certificate the server presented.
    pub presented: Fingerprint,
    /// The pins it was checked against.
    pub expected: Vec<Fingerprint>,
}

const MESSAGE_START: &str = "certificate pin mismatch";

fn expected_text(pins: &[Fingerprint]) -> String {
    pins.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

impl PinMismatch {
    /// The mismatch a rustls error carries, if it is one.
    pub fn in_rustls(e: &rustls::Error) -> Option<&PinMismatch> {
        match e {
            rustls::Error::Other(other) => other.0.downcast_ref::<PinMismatch>(),
            _ => None,
        }
    }

    /// Whether an error's text (all quinn keeps of a QUIC handshake's TLS
    /// failure) is a pin mismatch's.
    pub fn in_text(text: &str) -> bool {
        text.contains(MESSAGE_START)
    }
}

/// Accepts a leaf certificate by its SHA-256 fingerprint. Names and expiry
/// are not checked (the pin is the identity), but the handshake signature
/// is, so the server must hold the pinned certificate's key.
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<Fingerprint>,
    provider: Arc<CryptoProvider>,
    accept_any: bool,
    mismatch: Mutex<Option<Fingerprint>>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity.as_ref());
        if self.accept_any || self.pins.contains(&presented) {
            return Ok(ServerCertVerified::assertion());
        }
        if let Ok(mut m) = self.mismatch.lock() {
            *m = Some(presented);
        }
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(
            PinMismatch {
                presented,
                expected: self.pins.clone(),
            },
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
