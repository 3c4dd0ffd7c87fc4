//! The latency histogram: its bounds, and its codec (HdrHistogram V2 +
//! deflate, the format other HdrHistogram tools read), hardened against
//! hostile input: bounds are checked before any allocation and the inflated
//! size is capped, so a crafted header cannot make a decoder allocate
//! gigabytes.

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::io::Read;

/// A latency histogram in microseconds (or a throughput histogram in kbit/s).
pub type LatencyHistogram = Histogram<u64>;

/// Lowest discernible value: 1 µs.
pub const HISTOGRAM_LOWEST: u64 = 1;
/// Highest trackable value: one hour in µs (DESIGN asks for at least ten minutes).
pub const HISTOGRAM_HIGHEST: u64 = 3_600_000_000;
/// Significant decimal digits kept.
pub const HISTOGRAM_SIGFIG: u8 = 3;

/// Largest inflated histogram payload accepted. With our bounds a full
/// histogram is at most ~25 000 counts of at most 9 bytes each.
const MAX_INFLATED: usize = 512 * 1024;

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9304 | 0x10;
const V2_HEADER_LEN: usize = 40;

/// Why a histogram could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// Fewer bytes than the header or the declared length.
    #[error("histogram truncated: {0}")]
    Truncated(&'static str),
    /// The cookie is not HdrHistogram V2 (deflate).
    #[error("not an HdrHistogram V2 deflate histogram (cookie {0:#x})")]
    BadCookie(u32),
    /// Bounds other than Vantage's (1 µs .. 1 h, 3 digits).
    #[error("histogram bounds {lowest}..{highest} with {sigfig} digits differ from Vantage's {HISTOGRAM_LOWEST}..{HISTOGRAM_HIGHEST} with {HISTOGRAM_SIGFIG}")]
    WrongBounds {
        /// Declared lowest value.
        lowest: u64,
        /// Declared highest value.
        highest: u64,
        /// Declared significant digits.
        sigfig: u32,
    },
    /// Inflating failed or produced more than the cap.
    #[error("histogram payload does not inflate: {0}")]
    Inflate(String),
    /// The HdrHistogram decoder refused the payload.
    #[error("histogram payload is invalid: {0}")]
    Payload(String),
    /// Encoding failed (should not happen for in-range histograms).
    #[error("histogram could not be encoded: {0}")]
    Encode(String),
}

/// A new, empty histogram with Vantage's bounds.
pub fn new_latency_histogram() -> LatencyHistogram {
    // The bounds are constants known to be valid, so this cannot fail.
    Histogram::new_with_bounds(HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Encodes as HdrHistogram V2 + deflate.
pub fn encode_histogram(h: &LatencyHistogram, out: &mut Vec<u8>) -> Result<(), HistogramError> {
    V2DeflateSerializer::new()
        .serialize(h, out)
        .map(|_| ())
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))
}

/// Decodes HdrHistogram V2 + deflate bytes, accepting only Vantage's bounds.
pub fn decode_histogram(bytes: &[u8]) -> Result<LatencyHistogram, HistogramError> {
    if bytes.len() < 8 {
        return Err(HistogramError::Truncated("deflate header"));
    }
    let cookie = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if cookie != V2_DEFLATE_COOKIE {
        return Err(HistogramError::BadCookie(cookie));
    }
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let compressed = bytes
        .get(8..)
        .filter(|rest| rest.len() >= len)
        .map(|rest| &rest[..len])
        .ok_or(HistogramError::Truncated("compressed payload"))?;
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(MAX_INFLATED as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| HistogramError::Inflate(e.to_string()))?;
    if inflated.len() > MAX_INFLATED {
        return Err(HistogramError::Inflate(format!(
            "more than {MAX_INFLATED} bytes"
        )));
    }
    if inflated.len() < V2_HEADER_LEN {
        return Err(HistogramError::Truncated("V2 header"));
    }
    let be32 = |at: usize| u32::from_be_bytes(inflated[at..at + 4].try_into().unwrap_or([0; 4]));
    let be64 = |at: usize| u64::from_be_bytes(inflated[at..at + 8].try_into().unwrap_or([0; 8]));
    let inner_cookie = be32(0);
    if inner_cookie != V2_COOKIE {
        return Err(HistogramError::BadCookie(inner_cookie));
    }
    let payload_len = be32(4) as usize;
    if inflated.len() < V2_HEADER_LEN + payload_len {
        return Err(HistogramError::Truncated("V2 counts"));
    }
    let (sigfig, lowest, highest) = (be32(12), be64(16), be64(24));
    if lowest != HISTOGRAM_LOWEST
        || highest != HISTOGRAM_HIGHEST
        || sigfig != u32::from(HISTOGRAM_SIGFIG)
    {
        return Err(HistogramError::WrongBounds {
            lowest,
            highest,
            sigfig,
        });
    }
    let h: LatencyHistogram = Deserializer::new()
        .deserialize(&mut &inflated[..V2_HEADER_LEN + payload_len])
        .map_err(|e| HistogramError::Payload(format!("{e:?}")))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_count() {
        let mut h = new_latency_histogram();
        for v in [1u64, 37, 37, 1_000, 80_000, 600_000_000, HISTOGRAM_HIGHEST] {
            h.record(v).unwrap();
        }
        let mut buf = Vec::new();
        encode_histogram(&h, &mut buf).unwrap();
        let back = decode_histogram(&buf).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.len(), 7);
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn empty_round_trips() {
        let h = new_latency_histogram();
        let mut buf = Vec::new();
        encode_histogram(&h, &mut buf).unwrap();
        assert_eq!(decode_histogram(&buf).unwrap().len(), 0);
    }

    #[test]
    fn foreign_bounds_are_refused_before_allocating() {
        let h = Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 5).unwrap();
        let mut buf = Vec::new();
        V2DeflateSerializer::new().serialize(&h, &mut buf).unwrap();
        assert!(matches!(
            decode_histogram(&buf),
            Err(HistogramError::WrongBounds { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut h = new_latency_histogram();
        h.record(1234).unwrap();
        let mut buf = Vec::new();
        encode_histogram(&h, &mut buf).unwrap();
        for n in 0..buf.len() {
            assert!(decode_histogram(&buf[..n]).is_err(), "prefix {n} accepted");
        }
    }
}
