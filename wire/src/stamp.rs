//! STAMP test packets, RFC 8762 unauthenticated mode, byte for byte.
//!
//! Session-Sender test packet (RFC 8762 §4.2.1, Figure 1), 44 octets:
//!
//! ```text
//!  0..4   Sequence Number
//!  4..12  Timestamp (T1)
//! 12..14  Error Estimate
//! 14..44  MBZ (30 octets)
//! ```
//!
//! Session-Reflector test packet (§4.3.1, Figure 3), 44 octets:
//!
//! ```text
//!  0..4   Sequence Number (reflector's own, in stateful mode)
//!  4..12  Timestamp (T3, just before sending)
//! 12..14  Error Estimate
//! 14..16  MBZ
//! 16..24  Receive Timestamp (T2)
//! 24..28  Session-Sender Sequence Number
//! 28..36  Session-Sender Timestamp (T1)
//! 36..38  Session-Sender Error Estimate
//! 38..40  MBZ
//! 40      Ses-Sender TTL
//! 41..44  MBZ
//! ```
//!
//! Timestamps are NTP 64-bit (RFC 5905: seconds since 1900, then a 32-bit
//! fraction); the Error Estimate is RFC 4656 §4.1.2 (S, Z, Scale, Multiplier).
//! Packets longer than 44 octets (padding, RFC 8972 TLVs) are reflected at
//! their own length, the extra octets copied back unchanged.

use std::time::Duration;

/// Size of a base STAMP test packet, sender and reflector alike.
pub const PACKET_LEN: usize = 44;
/// IANA's well-known STAMP port (RFC 8762 §4.1). Binding it needs privileges.
pub const WELL_KNOWN_PORT: u16 = 862;
/// Seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (Unix epoch).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// An NTP 64-bit timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NtpTimestamp {
    /// Seconds since 1900-01-01 (modulo 2^32, era 0 until 2036).
    pub seconds: u32,
    /// Fraction of a second in units of 2^-32 s.
    pub fraction: u32,
}

impl NtpTimestamp {
    /// From a time since the Unix epoch (the wall clock; STAMP timestamps
    /// label packets, the probe times round trips with its monotonic clock).
    pub fn from_unix(since_epoch: Duration) -> Self {
        let seconds = (since_epoch.as_secs() + NTP_UNIX_OFFSET) as u32;
        let fraction = ((u64::from(since_epoch.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        NtpTimestamp { seconds, fraction }
    }

    /// Back to a time since the Unix epoch (era 0), nanosecond resolution.
    pub fn to_unix(self) -> Duration {
        let secs = u64::from(self.seconds).saturating_sub(NTP_UNIX_OFFSET);
        let nanos = (u64::from(self.fraction) * 1_000_000_000) >> 32;
        Duration::new(secs, nanos as u32)
    }

    fn write(self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.seconds.to_be_bytes());
        out[4..8].copy_from_slice(&self.fraction.to_be_bytes());
    }

    fn read(b: &[u8]) -> Self {
        NtpTimestamp {
            seconds: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            fraction: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// RFC 4656 §4.1.2 Error Estimate: `S` (clock synchronised to UTC), `Z`
/// (0: NTP timestamp format), Scale and Multiplier; the error is
/// Multiplier × 2^(Scale − 32) seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorEstimate(pub u16);

impl ErrorEstimate {
    /// A clock not known to be synchronised, error stated as one second
    /// (Scale 32, Multiplier 1): the honest default for a host whose NTP
    /// state we do not read.
    pub const UNSYNCHRONIZED: ErrorEstimate = ErrorEstimate((32 << 8) | 1);

    /// Builds an estimate from its fields. `scale` uses 6 bits.
    pub fn new(synchronized: bool, scale: u8, multiplier: u8) -> Self {
        ErrorEstimate(
            (u16::from(synchronized) << 15)
                | (u16::from(scale & 0x3f) << 8)
                | u16::from(multiplier),
        )
    }

    /// The estimate of a clock `synchronized` (to UTC) or not, within
    /// `error`: the smallest scale whose multiplier (at most 255) covers
    /// the error, rounded up so the bound is never understated.
    pub fn from_error(synchronized: bool, error: Duration) -> Self {
        let seconds = error.as_secs_f64();
        for scale in 0u8..64 {
            let unit = 2f64.powi(i32::from(scale) - 32);
            let mult = (seconds / unit).ceil();
            if mult <= 255.0 {
                return ErrorEstimate::new(synchronized, scale, (mult as u8).max(1));
            }
        }
        ErrorEstimate::new(synchronized, 63, 255)
    }

    /// The estimate a Linux host states from its kernel's clock
    /// discipline (`adjtimex`): synchronised unless `STA_UNSYNC` is set in
    /// `status` or the maximum error has reached the kernel's 16 s
    /// ceiling, within the estimated error (µs).
    pub fn from_kernel(status: i32, esterror_us: i64, maxerror_us: i64) -> Self {
        const STA_UNSYNC: i32 = 0x0040;
        const MAXERROR_CEILING_US: i64 = 16_000_000;
        let synced = status & STA_UNSYNC == 0 && maxerror_us < MAXERROR_CEILING_US;
        if !synced {
            return ErrorEstimate::UNSYNCHRONIZED;
        }
        ErrorEstimate::from_error(true, Duration::from_micros(esterror_us.max(1) as u64))
    }

    /// The S bit.
    pub fn synchronized(self) -> bool {
        self.0 & 0x8000 != 0
    }

    /// The Z bit (false: NTP format, which is all STAMP unauthenticated mode uses here).
    pub fn ptp_format(self) -> bool {
        self.0 & 0x4000 != 0
    }

    /// The stated error bound.
    pub fn error(self) -> Duration {
        let scale = i32::from((self.0 >> 8) as u8 & 0x3f);
        let mult = f64::from(self.0 as u8);
        Duration::from_secs_f64(mult * 2f64.powi(scale - 32))
    }
}

/// A Session-Sender test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderPacket {
    /// Sender's sequence number, from 0, one per packet.
    pub sequence: u32,
    /// T1: when the sender sent it.
    pub timestamp: NtpTimestamp,
    /// The sender clock's error estimate.
    pub error_estimate: ErrorEstimate,
}

/// A Session-Reflector test packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReflectorPacket {
    /// Reflector's sequence number: in stateful mode its own per-session
    /// counter, so the sender can tell forward loss from backward loss.
    pub sequence: u32,
    /// T3: when the reflector sent the reply.
    pub timestamp: NtpTimestamp,
    /// The reflector clock's error estimate.
    pub error_estimate: ErrorEstimate,
    /// T2: when the reflector received the test packet.
    pub receive_timestamp: NtpTimestamp,
    /// Copied from the sender's packet.
    pub sender_sequence: u32,
    /// Copied from the sender's packet (T1).
    pub sender_timestamp: NtpTimestamp,
    /// Copied from the sender's packet.
    pub sender_error_estimate: ErrorEstimate,
    /// TTL (IPv4) or Hop Limit (IPv6) of the received test packet; 255 when
    /// the reflector could not read it from the socket.
    pub sender_ttl: u8,
}

/// Why bytes are not a STAMP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    /// Shorter than the 44-octet base packet.
    #[error("STAMP packet too short: {0} octets, need at least {PACKET_LEN}")]
    TooShort(usize),
    /// Longer than any UDP payload we reflect.
    #[error("STAMP packet too long: {0} octets, at most {MAX_PACKET_LEN}")]
    TooLong(usize),
}

/// Largest test packet reflected (fits a 1500-byte Ethernet MTU over IPv6).
pub const MAX_PACKET_LEN: usize = 1452;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn check_len(len: usize) -> Result<(), StampError> {
    if len < PACKET_LEN {
        Err(StampError::TooShort(len))
    } else if len > MAX_PACKET_LEN {
        Err(StampError::TooLong(len))
    } else {
        Ok(())
    }
}

impl SenderPacket {
    /// Encodes into the 44-octet layout of RFC 8762 Figure 1; MBZ stays zero.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[0..4].copy_from_slice(&self.sequence.to_be_bytes());
        self.timestamp.write(&mut out[4..12]);
        out[12..14].copy_from_slice(&self.error_estimate.0.to_be_bytes());
        out
    }

    /// Decodes the first 44 octets; longer packets (padding) are accepted.
    pub fn decode(bytes: &[u8]) -> Result<Self, StampError> {
        check_len(bytes.len())?;
        Ok(SenderPacket {
            sequence: be32(&bytes[0..4]),
            timestamp: NtpTimestamp::read(&bytes[4..12]),
            error_estimate: ErrorEstimate(u16::from_be_bytes([bytes[12], bytes[13]])),
        })
    }
}

impl ReflectorPacket {
    /// Encodes into the 44-octet layout of RFC 8762 Figure 3; MBZ stays zero.
    pub fn encode(&self) -> [u8; PACKET_LEN] {
        let mut out = [0u8; PACKET_LEN];
        out[0..4].copy_from_slice(&self.sequence.to_be_bytes());
        self.timestamp.write(&mut out[4..12]);
        out[12..14].copy_from_slice(&self.error_estimate.0.to_be_bytes());
        self.receive_timestamp.write(&mut out[16..24]);
        out[24..28].copy_from_slice(&self.sender_sequence.to_be_bytes());
        self.sender_timestamp.write(&mut out[28..36]);
        out[36..38].copy_from_slice(&self.sender_error_estimate.0.to_be_bytes());
        out[40] = self.sender_ttl;
        out
    }

    /// Decodes the first 44 octets of a reflected packet.
    pub fn decode(bytes: &[u8]) -> Result<Self, StampError> {
        check_len(bytes.len())?;
        Ok(ReflectorPacket {
            sequence: be32(&bytes[0..4]),
            timestamp: NtpTimestamp::read(&bytes[4..12]),
            error_estimate: ErrorEstimate(u16::from_be_bytes([bytes[12], bytes[13]])),
            receive_timestamp: NtpTimestamp::read(&bytes[16..24]),
            sender_sequence: be32(&bytes[24..28]),
            sender_timestamp: NtpTimestamp::read(&bytes[28..36]),
            sender_error_estimate: ErrorEstimate(u16::from_be_bytes([bytes[36], bytes[37]])),
            sender_ttl: bytes[40],
        })
    }
}

/// Builds the reflection of a received sender packet: the 44-octet reflector
/// header followed by any octets past 44 copied unchanged, so the reply has
/// the same length as the test packet (RFC 8762 symmetric size).
pub fn reflect(
    received: &[u8],
    reflector_sequence: u32,
    t2: NtpTimestamp,
    t3: NtpTimestamp,
    error_estimate: ErrorEstimate,
    sender_ttl: u8,
) -> Result<Vec<u8>, StampError> {
    let sender = SenderPacket::decode(received)?;
    let header = ReflectorPacket {
        sequence: reflector_sequence,
        timestamp: t3,
        error_estimate,
        receive_timestamp: t2,
        sender_sequence: sender.sequence,
        sender_timestamp: sender.timestamp,
        sender_error_estimate: sender.error_estimate,
        sender_ttl,
    };
    let mut out = Vec::with_capacity(received.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(&received[PACKET_LEN..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ntp_epoch_offset_matches_rfc_5905() {
        // 1970-01-01 is 2 208 988 800 s after the NTP prime epoch.
        let t = NtpTimestamp::from_unix(Duration::ZERO);
        assert_eq!(t.seconds, 0x83AA_7E80);
        assert_eq!(t.fraction, 0);
        // Half a second is 2^31 in the fraction.
        let t = NtpTimestamp::from_unix(Duration::from_millis(1500));
        assert_eq!(t.seconds, 0x83AA_7E81);
        assert_eq!(t.fraction, 0x8000_0000);
        assert_eq!(t.to_unix(), Duration::from_millis(1500));
    }

    #[test]
    fn sender_packet_matches_rfc_8762_figure_1() {
        let p = SenderPacket {
            sequence: 0x0102_0304,
            timestamp: NtpTimestamp {
                seconds: 0x1112_1314,
                fraction: 0x1516_1718,
            },
            error_estimate: ErrorEstimate(0x8001),
        };
        let mut expect = [0u8; 44];
        expect[..14].copy_from_slice(&[
            0x01, 0x02, 0x03, 0x04, // Sequence Number
            0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // Timestamp
            0x80, 0x01, // Error Estimate: S=1, Z=0, Scale=0, Multiplier=1
        ]); // then 30 octets MBZ
        assert_eq!(p.encode(), expect);
        assert_eq!(SenderPacket::decode(&expect).unwrap(), p);
    }

    #[test]
    fn reflector_packet_matches_rfc_8762_figure_3() {
        let sender = SenderPacket {
            sequence: 7,
            timestamp: NtpTimestamp {
                seconds: 0xAABB_CCDD,
                fraction: 0x0011_2233,
            },
            error_estimate: ErrorEstimate(0x2001),
        }
        .encode();
        let t2 = NtpTimestamp {
            seconds: 0x0102_0304,
            fraction: 0x0506_0708,
        };
        let t3 = NtpTimestamp {
            seconds: 0x0102_0304,
            fraction: 0x0506_0709,
        };
        let out = reflect(&sender, 3, t2, t3, ErrorEstimate(0x0102), 64).unwrap();
        #[rustfmt::skip]
        let expect: [u8; 44] = [
            0, 0, 0, 3,                                     // Sequence Number (reflector)
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09, // Timestamp T3
            0x01, 0x02,                                     // Error Estimate
            0, 0,                                           // MBZ
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // Receive Timestamp T2
            0, 0, 0, 7,                                     // Session-Sender Sequence Number
            0xAA, 0xBB, 0xCC, 0xDD, 0x00, 0x11, 0x22, 0x33, // Session-Sender Timestamp
            0x20, 0x01,                                     // Session-Sender Error Estimate
            0, 0,                                           // MBZ
            64,                                             // Ses-Sender TTL
            0, 0, 0,                                        // MBZ
        ];
        assert_eq!(out, expect);
        let back = ReflectorPacket::decode(&out).unwrap();
        assert_eq!(back.sender_sequence, 7);
        assert_eq!(back.receive_timestamp, t2);
    }

    #[test]
    fn padded_packets_are_reflected_at_their_length() {
        let mut pkt = SenderPacket {
            sequence: 1,
            timestamp: NtpTimestamp::default(),
            error_estimate: ErrorEstimate::UNSYNCHRONIZED,
        }
        .encode()
        .to_vec();
        pkt.extend_from_slice(&[0xEE; 100]);
        let out = reflect(
            &pkt,
            0,
            NtpTimestamp::default(),
            NtpTimestamp::default(),
            ErrorEstimate::UNSYNCHRONIZED,
            255,
        )
        .unwrap();
        assert_eq!(out.len(), pkt.len());
        assert_eq!(&out[44..], &pkt[44..]);
    }

    #[test]
    fn short_and_long_packets_are_refused() {
        assert_eq!(
            SenderPacket::decode(&[0; 43]),
            Err(StampError::TooShort(43))
        );
        assert!(SenderPacket::decode(&[0; MAX_PACKET_LEN + 1]).is_err());
    }

    #[test]
    fn error_estimate_fields() {
        let e = ErrorEstimate::new(true, 32, 1);
        assert!(e.synchronized());
        assert!(!e.ptp_format());
        assert_eq!(e.error(), Duration::from_secs(1));
        assert_eq!(
            ErrorEstimate::UNSYNCHRONIZED.error(),
            Duration::from_secs(1)
        );
        assert!(!ErrorEstimate::UNSYNCHRONIZED.synchronized());
        // From an error: never understated, within one step of the scale.
        for us in [1u64, 37, 1_000, 250_000, 3_000_000] {
            let e = ErrorEstimate::from_error(true, Duration::from_micros(us));
            assert!(e.synchronized());
            let stated = e.error().as_secs_f64() * 1e6;
            assert!(
                stated >= us as f64 && stated < us as f64 * 1.02 + 0.5,
                "{us} µs stated as {stated}"
            );
        }
        // From the kernel: STA_UNSYNC (0x40), or a 16 s maximum error,
        // means unsynchronised.
        assert!(ErrorEstimate::from_kernel(0x2001, 500, 10_000).synchronized());
        assert!(!ErrorEstimate::from_kernel(0x0041, 500, 10_000).synchronized());
        assert!(!ErrorEstimate::from_kernel(0x2001, 500, 16_000_000).synchronized());
    }

    proptest! {
        /// UDP never amplifies: a reflection is exactly as long as the
        /// test packet, and anything not a test packet gets none.
        #[test]
        fn a_reflection_is_never_larger_than_its_test_packet(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let reflected = reflect(&bytes, 7, NtpTimestamp::default(), NtpTimestamp::default(), ErrorEstimate::UNSYNCHRONIZED, 64);
            match reflected {
                Ok(out) => prop_assert_eq!(out.len(), bytes.len()),
                Err(_) => prop_assert!(bytes.len() < PACKET_LEN || bytes.len() > MAX_PACKET_LEN),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = SenderPacket::decode(&bytes);
            let _ = ReflectorPacket::decode(&bytes);
            let _ = reflect(&bytes, 0, NtpTimestamp::default(), NtpTimestamp::default(), ErrorEstimate::UNSYNCHRONIZED, 0);
        }

        #[test]
        fn ntp_round_trip_within_a_nanosecond(secs in 0u64..2_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let back = NtpTimestamp::from_unix(d).to_unix();
            let diff = d.abs_diff(back);
            prop_assert!(diff <= Duration::from_nanos(1), "{:?}", diff);
        }
    }
}
