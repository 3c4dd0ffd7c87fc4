use std::fmt;
use std::str::FromStr;

/// What a series measures. Names are stable: they appear on the wire, in CSV
/// and in reports, so a variant is never renamed once shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Round trip of a STAMP test packet to the responder's reflector.
    UdpRtt,
    /// A fresh QUIC connection until the handshake completes.
    QuicHandshake,
    /// One request/response on an established (warm) QUIC connection.
    QuicRequest,
    /// Handshake plus first request on a fresh QUIC connection.
    QuicColdRequest,
    /// TCP three-way handshake (connect call) to the responder.
    TcpConnect,
    /// TLS 1.3 handshake on a fresh TCP connection.
    TlsHandshake,
    /// One HTTP/1.1 request on a warm keep-alive TLS connection.
    HttpsRequest,
    /// DNS lookup of a real URL's host (a cold request's first phase).
    HttpDns,
    /// TCP connect to a real URL's host (cold).
    HttpConnect,
    /// TLS handshake with a real URL's host (cold).
    HttpTls,
    /// Cold request: request sent until the response head.
    HttpTtfb,
    /// Cold request: response head until the body's last byte.
    HttpTransfer,
    /// Cold request, whole: DNS to last byte, from the intended start.
    HttpTotal,
    /// Warm request (reused connection): request sent until the response head.
    HttpWarmTtfb,
    /// Warm request: response head until the body's last byte.
    HttpWarmTransfer,
    /// Warm request, whole, from the intended start.
    HttpWarmTotal,
    /// One photo upload, first byte until the responder's receipt.
    PhotosyncUpload,
    /// One photo download, request until the last byte.
    PhotosyncDownload,
    /// Bytes acknowledged per second over a sync batch.
    PhotosyncGoodput,
    /// `quic_request` measured while a photo sync runs.
    LoadedRtt,
    /// Responsiveness under a sync's load, in round trips per minute, by
    /// the method of draft-ietf-ippm-responsiveness (one value per batch).
    ResponsivenessRpm,
    /// One-way delay of a STAMP test packet to the reflector (T2 − T1),
    /// only when both clocks are known to agree; else counted
    /// `unsynchronized`.
    UdpOwdForward,
    /// One-way delay of a STAMP reply back from the reflector (T4 − T3),
    /// on the same terms.
    UdpOwdBackward,
    /// How far a one-way delay may be off: the two clocks' error
    /// estimates summed (RFC 8762 §4.2's Error Estimate), per sample.
    UdpOwdError,
    /// A traceroute toward the target: one attempt per trace, its value
    /// the round trip to the target when reached; a trace that never
    /// reaches it is lost (its hops travel beside the series).
    PathTrace,
}

/// The unit a metric's histogram values are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Microseconds: every latency metric.
    Microseconds,
    /// Kilobits per second: throughput metrics.
    KilobitsPerSecond,
    /// Round trips per minute: responsiveness.
    RoundTripsPerMinute,
}

impl Unit {
    /// Short suffix used in column names, such as `us` in `p50_us`.
    pub fn suffix(self) -> &'static str {
        match self {
            Unit::Microseconds => "us",
            Unit::KilobitsPerSecond => "kbps",
            Unit::RoundTripsPerMinute => "rpm",
        }
    }
}

const METRICS: &[(Metric, &str)] = &[
    (Metric::UdpRtt, "udp_rtt"),
    (Metric::QuicHandshake, "quic_handshake"),
    (Metric::QuicRequest, "quic_request"),
    (Metric::QuicColdRequest, "quic_cold_request"),
    (Metric::TcpConnect, "tcp_connect"),
    (Metric::TlsHandshake, "tls_handshake"),
    (Metric::HttpsRequest, "https_request"),
    (Metric::HttpDns, "http_dns"),
    (Metric::HttpConnect, "http_connect"),
    (Metric::HttpTls, "http_tls"),
    (Metric::HttpTtfb, "http_ttfb"),
    (Metric::HttpTransfer, "http_transfer"),
    (Metric::HttpTotal, "http_total"),
    (Metric::HttpWarmTtfb, "http_warm_ttfb"),
    (Metric::HttpWarmTransfer, "http_warm_transfer"),
    (Metric::HttpWarmTotal, "http_warm_total"),
    (Metric::PhotosyncUpload, "photosync_upload"),
    (Metric::PhotosyncDownload, "photosync_download"),
    (Metric::PhotosyncGoodput, "photosync_goodput"),
    (Metric::LoadedRtt, "loaded_rtt"),
    (Metric::ResponsivenessRpm, "responsiveness_rpm"),
    (Metric::UdpOwdForward, "udp_owd_forward"),
    (Metric::UdpOwdBackward, "udp_owd_backward"),
    (Metric::UdpOwdError, "udp_owd_error"),
    (Metric::PathTrace, "path_trace"),
];

impl Metric {
    /// Every metric, in a stable order.
    pub fn all() -> impl Iterator<Item = Metric> {
        METRICS.iter().map(|(m, _)| *m)
    }

    /// The stable name, as on the wire and in CSV.
    pub fn name(self) -> &'static str {
        METRICS
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, n)| *n)
            .unwrap_or("unknown")
    }

    /// The unit of this metric's histogram values.
    pub fn unit(self) -> Unit {
        match self {
            Metric::PhotosyncGoodput => Unit::KilobitsPerSecond,
            Metric::ResponsivenessRpm => Unit::RoundTripsPerMinute,
            _ => Unit::Microseconds,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the known metrics or error classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`; known: {known}")]
pub struct ParseNameError {
    /// "metric" or "error class".
    pub kind: &'static str,
    /// The name as given.
    pub name: String,
    /// The known names, comma separated, for the message.
    pub known: String,
}

impl FromStr for Metric {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        METRICS
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(m, _)| *m)
            .ok_or_else(|| ParseNameError {
                kind: "metric",
                name: s.to_string(),
                known: METRICS
                    .iter()
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Why a measurement attempt did not produce a latency. Every attempt that
/// fails is counted under exactly one class; nothing is dropped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// No answer before the timeout: counted as lost.
    Timeout,
    /// The peer refused the connection (TCP RST on connect, ICMP port unreachable).
    Refused,
    /// An established connection was reset or closed under the request.
    Reset,
    /// No route to the host or network.
    Unreachable,
    /// TLS failed: certificate, pin mismatch, handshake alert.
    Tls,
    /// The peer spoke, but not the expected protocol (bad message, bad status line).
    Protocol,
    /// The responder answered with an error status.
    ServerError,
    /// DNS lookup failed.
    Dns,
    /// An HTTP status other than the expected one.
    HttpStatus,
    /// Received data failed its integrity check.
    Integrity,
    /// The probe itself could not start the attempt in time (too many in flight).
    ProbeOverload,
    /// A one-way delay withheld: the two ends' clocks are not known to be
    /// synchronised (or their timestamps contradict their stated error),
    /// so only the round trip is given.
    Unsynchronized,
    /// Any other local IO error.
    Io,
}

const ERROR_CLASSES: &[(ErrorClass, &str)] = &[
    (ErrorClass::Timeout, "timeout"),
    (ErrorClass::Refused, "refused"),
    (ErrorClass::Reset, "reset"),
    (ErrorClass::Unreachable, "unreachable"),
    (ErrorClass::Tls, "tls"),
    (ErrorClass::Protocol, "protocol"),
    (ErrorClass::ServerError, "server_error"),
    (ErrorClass::Dns, "dns"),
    (ErrorClass::HttpStatus, "http_status"),
    (ErrorClass::Integrity, "integrity"),
    (ErrorClass::ProbeOverload, "probe_overload"),
    (ErrorClass::Unsynchronized, "unsynchronized"),
    (ErrorClass::Io, "io"),
];

impl ErrorClass {
    /// Every class, in a stable order.
    pub fn all() -> impl Iterator<Item = ErrorClass> {
        ERROR_CLASSES.iter().map(|(c, _)| *c)
    }

    /// The stable name, as on the wire and in CSV.
    pub fn name(self) -> &'static str {
        ERROR_CLASSES
            .iter()
            .find(|(c, _)| *c == self)
            .map(|(_, n)| *n)
            .unwrap_or("unknown")
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ErrorClass {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ERROR_CLASSES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(c, _)| *c)
            .ok_or_else(|| ParseNameError {
                kind: "error class",
                name: s.to_string(),
                known: ERROR_CLASSES
                    .iter()
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// A finer cause under an error class, where the probe can tell it: why a
/// TLS handshake failed (the fix differs for an expired certificate and a
/// wrong name) or how a DNS lookup failed. Counted beside the class, never
/// instead of it: each reason's count is part of its class's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The certificate's validity period has ended.
    TlsExpired,
    /// The certificate's validity period has not begun (or the probe's clock is wrong).
    TlsNotYetValid,
    /// The certificate is not valid for the name asked for.
    TlsNameMismatch,
    /// The certificate does not chain to a trusted root (or the given CA file).
    TlsUnknownIssuer,
    /// The certificate was revoked.
    TlsRevoked,
    /// A signature in the chain or handshake does not verify.
    TlsBadSignature,
    /// The certificate is malformed or unusable for a server.
    TlsBadCertificate,
    /// The certificate is not the one pinned on the probe.
    TlsPinMismatch,
    /// The server sent an alert and ended the handshake.
    TlsAlertReceived,
    /// No common protocol version, cipher suite or ALPN protocol.
    TlsIncompatible,
    /// Any other TLS failure.
    TlsOther,
    /// The name does not exist (NXDOMAIN).
    DnsNoSuchName,
    /// The name exists but has no address record.
    DnsNoAddress,
    /// Any other DNS failure (server failure, refused, malformed answer).
    DnsOther,
}

const REASONS: &[(Reason, &str, ErrorClass)] = &[
    (Reason::TlsExpired, "tls_expired", ErrorClass::Tls),
    (Reason::TlsNotYetValid, "tls_not_yet_valid", ErrorClass::Tls),
    (
        Reason::TlsNameMismatch,
        "tls_name_mismatch",
        ErrorClass::Tls,
    ),
    (
        Reason::TlsUnknownIssuer,
        "tls_unknown_issuer",
        ErrorClass::Tls,
    ),
    (Reason::TlsRevoked, "tls_revoked", ErrorClass::Tls),
    (
        Reason::TlsBadSignature,
        "tls_bad_signature",
        ErrorClass::Tls,
    ),
    (
        Reason::TlsBadCertificate,
        "tls_bad_certificate",
        ErrorClass::Tls,
    ),
    (Reason::TlsPinMismatch, "tls_pin_mismatch", ErrorClass::Tls),
    (
        Reason::TlsAlertReceived,
        "tls_alert_received",
        ErrorClass::Tls,
    ),
    (Reason::TlsIncompatible, "tls_incompatible", ErrorClass::Tls),
    (Reason::TlsOther, "tls_other", ErrorClass::Tls),
    (Reason::DnsNoSuchName, "dns_no_such_name", ErrorClass::Dns),
    (Reason::DnsNoAddress, "dns_no_address", ErrorClass::Dns),
    (Reason::DnsOther, "dns_other", ErrorClass::Dns),
];

impl Reason {
    /// Every reason, in a stable order.
    pub fn all() -> impl Iterator<Item = Reason> {
        REASONS.iter().map(|(r, _, _)| *r)
    }

    /// The stable name, as on the wire and in CSV.
    pub fn name(self) -> &'static str {
        REASONS
            .iter()
            .find(|(r, _, _)| *r == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("unknown")
    }

    /// The error class this reason refines.
    pub fn class(self) -> ErrorClass {
        REASONS
            .iter()
            .find(|(r, _, _)| *r == self)
            .map(|(_, _, c)| *c)
            .unwrap_or(ErrorClass::Io)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Reason {
    type Err = ParseNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        REASONS
            .iter()
            .find(|(_, n, _)| *n == s)
            .map(|(r, _, _)| *r)
            .ok_or_else(|| ParseNameError {
                kind: "error reason",
                name: s.to_string(),
                known: REASONS
                    .iter()
                    .map(|(_, n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for m in Metric::all() {
            assert!(seen.insert(m.name()), "duplicate name {}", m.name());
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
        }
        assert_eq!(seen.len(), 25);
    }

    #[test]
    fn reason_names_round_trip_and_refine_one_class() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::all() {
            assert!(seen.insert(r.name()), "duplicate name {}", r.name());
            assert_eq!(r.name().parse::<Reason>().unwrap(), r);
            let prefix = r.name().split('_').next().unwrap();
            assert_eq!(prefix, r.class().name(), "{r} refines {}", r.class());
        }
        assert_eq!(seen.len(), 14);
        assert!("tls_bogus".parse::<Reason>().is_err());
    }

    #[test]
    fn unknown_metric_names_the_known_ones() {
        let err = "udp_rt".parse::<Metric>().unwrap_err();
        assert!(err.to_string().contains("udp_rtt"), "{err}");
    }

    #[test]
    fn error_class_names_round_trip() {
        for c in ErrorClass::all() {
            assert_eq!(c.name().parse::<ErrorClass>().unwrap(), c);
        }
        assert!("bogus".parse::<ErrorClass>().is_err());
    }
}
