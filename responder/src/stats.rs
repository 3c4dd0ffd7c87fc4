use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of a responder, shared by its tasks.
        #[derive(Default, Debug)]
        pub struct Stats {
            $($(#[$doc])* pub(crate) $name: AtomicU64,)*
        }

        /// A copy of [`Stats`] at one moment.
        #[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl StatsSnapshot {
            /// `(name, value)` pairs, for logs and metrics.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters! {
    /// QUIC connections whose handshake completed.
    quic_connections,
    /// QUIC connection attempts refused at the connection limit.
    quic_refused,
    /// QUIC connection attempts ignored: over their source's rate.
    quic_rate_limited,
    /// QUIC handshakes that failed or timed out.
    quic_handshake_failed,
    /// Echo requests answered over QUIC.
    quic_requests,
    /// QUIC streams with a malformed or oversized request.
    quic_bad_requests,
    /// TCP connections accepted.
    tcp_connections,
    /// TCP connections refused at the connection limit.
    tcp_refused,
    /// TCP connections closed at once: over their source's rate.
    tcp_rate_limited,
    /// TLS handshakes that failed or timed out (garbage, half-open, wrong ALPN).
    tls_failed,
    /// TCP connections closed before sending a byte: a client measuring
    /// its connect time (Vantage's `tcp_connect`) or checking the port.
    /// Not a failure.
    tcp_connect_only,
    /// TLS handshakes cut unfinished: the oldest of more than
    /// `max_handshakes` in progress, to let a new connection in.
    handshakes_cut,
    /// HTTP requests answered.
    http_requests,
    /// HTTP requests refused (bad path, method or size) or connections that broke HTTP.
    http_bad_requests,
    /// HTTP connections the client closed or reset mid-exchange (a
    /// responsiveness client leaving `/nq/large`, a probe stopping). Not
    /// a failure.
    http_aborted,
    /// Photos received whole with a matching checksum (receipted).
    photos_received,
    /// Photos received truncated or with a wrong checksum (error receipt).
    photos_damaged,
    /// Photos sent by the source.
    photos_sent,
    /// Photos refused at the concurrent-photo limit.
    photos_busy,
    /// STAMP test packets reflected.
    stamp_reflected,
    /// UDP datagrams on the STAMP port that are not STAMP test packets.
    stamp_malformed,
    /// STAMP packets reflected statelessly because the session table was full.
    stamp_stateless,
    /// UDP datagrams on the STAMP port dropped unanswered: over their
    /// source's rate.
    stamp_rate_limited,
    /// Heavy requests (photos, large echoes, /nq/large, /nq/upload)
    /// refused: over their source's rate.
    heavy_rate_limited,
    /// Heavy requests let in on a valid access token.
    access_granted,
    /// Heavy requests refused: no access token, and one is required.
    access_missing,
    /// Heavy requests refused: a malformed access token or one no trusted
    /// key signed.
    access_invalid,
    /// Heavy requests refused: an expired access token.
    access_expired,
    /// STAMP replies the socket would not send.
    stamp_send_failed,
}

impl StatsSnapshot {
    /// The counters of refusals, failures and malformed input.
    pub fn refusals(&self) -> [(&'static str, u64); 17] {
        [
            ("access_missing", self.access_missing),
            ("access_invalid", self.access_invalid),
            ("access_expired", self.access_expired),
            ("quic_refused", self.quic_refused),
            ("quic_rate_limited", self.quic_rate_limited),
            ("tcp_rate_limited", self.tcp_rate_limited),
            ("stamp_rate_limited", self.stamp_rate_limited),
            ("heavy_rate_limited", self.heavy_rate_limited),
            ("stamp_send_failed", self.stamp_send_failed),
            ("quic_handshake_failed", self.quic_handshake_failed),
            ("quic_bad_requests", self.quic_bad_requests),
            ("tcp_refused", self.tcp_refused),
            ("tls_failed", self.tls_failed),
            ("handshakes_cut", self.handshakes_cut),
            ("http_bad_requests", self.http_bad_requests),
            ("stamp_malformed", self.stamp_malformed),
            ("stamp_stateless", self.stamp_stateless),
        ]
    }
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
