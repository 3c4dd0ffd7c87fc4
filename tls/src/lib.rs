//! TLS for every side of Vantage: the server identity a responder or a
//! collector presents ([`Identity`]: generated with rcgen and kept on disk,
//! or loaded from PEM), the SHA-256 [`Fingerprint`] probes pin, and the
//! client [`Trust`] decision a probe makes ([`TlsClient`]: a pin, a CA file,
//! the public web roots, or explicitly nothing), and the signed [`access`]
//! tokens a responder checks before heavy requests.
//!
//! One small crate so the collector does not link the responder, and the
//! probe's trust is chosen in one place. rustls with ring only.
#![warn(missing_docs, unreachable_pub)]

pub mod access;
mod identity;
mod trust;

pub use identity::{Fingerprint, FingerprintError, Identity, IdentityError};
pub use trust::{PinMismatch, TlsClient, Trust, TrustError};
