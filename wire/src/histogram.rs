//! The latency histogram: its bounds, and its codec (HdrHistogram V2 +
//! deflate, the format other HdrHistogram tools read), hardened against
//! hostile input: bounds are checked before any allocation and the inflated
//! size is capped, so a crafted header cannot make a decoder allocate
//! gigabytes.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use std::io::Read;
use std::io::Write;

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

/// A new, empty histogram with Vantage's resolution that grows its counts
/// only as far as the largest value recorded.
///
/// A full 1 µs – 1 h array is ~190 kB, and a probe holds two per (target,
/// metric); a histogram of values up to 300 ms needs under half of that, one
/// of loopback values a tenth. Record through [`record_clamped`] so nothing
/// grows past [`HISTOGRAM_HIGHEST`]; [`encode_histogram`] writes the full
/// bounds whatever the size, so the wire never sees the difference.
pub fn new_latency_histogram() -> LatencyHistogram {
    // The bounds are constants known to be valid, so this cannot fail.
    let mut h =
        Histogram::new_with_bounds(HISTOGRAM_LOWEST, 2 * HISTOGRAM_LOWEST, HISTOGRAM_SIGFIG)
            .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

/// Records `value` once, clamped into `HISTOGRAM_LOWEST..=HISTOGRAM_HIGHEST`
/// (a value beyond an hour counts as an hour: it is still counted).
pub fn record_clamped(h: &mut LatencyHistogram, value: u64) {
    let v = value.clamp(HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST);
    // In range and auto-resizing, so recording grows the array and cannot
    // fail; a histogram with fixed smaller bounds (decoded elsewhere) saturates.
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

/// Whether two histograms hold the same counts, whatever their array sizes.
/// (hdrhistogram's `==` is false when the left one's array is the longer,
/// even if the extra counts are all zero.)
pub fn same_counts(a: &LatencyHistogram, b: &LatencyHistogram) -> bool {
    let (shorter, longer) = if a.distinct_values() <= b.distinct_values() {
        (a, b)
    } else {
        (b, a)
    };
    shorter == longer
}

/// Encodes as HdrHistogram V2 + deflate, always with Vantage's full bounds.
///
/// The V2 payload holds counts only up to the largest value's index, so a
/// grown-to-fit histogram encodes to the same bytes as a full one once its
/// header names the full bounds; no full-size copy is made.
pub fn encode_histogram(h: &LatencyHistogram, out: &mut Vec<u8>) -> Result<(), HistogramError> {
    if h.lowest_equivalent(h.max()) > HISTOGRAM_HIGHEST
        || h.low() != HISTOGRAM_LOWEST
        || h.sigfig() != HISTOGRAM_SIGFIG
    {
        return Err(HistogramError::Encode(format!(
            "a histogram of {}..{} (max {}) with {} digits is not within Vantage's bounds",
            h.low(),
            h.high(),
            h.max(),
            h.sigfig()
        )));
    }
    let mut plain = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut plain)
        .map_err(|e| HistogramError::Encode(format!("{e:?}")))?;
    plain[24..32].copy_from_slice(&HISTOGRAM_HIGHEST.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(&V2_DEFLATE_COOKIE.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut z = flate2::write::ZlibEncoder::new(&mut *out, flate2::Compression::default());
    z.write_all(&plain)
        .and_then(|_| z.finish().map(|_| ()))
        .map_err(|e| HistogramError::Encode(e.to_string()))?;
    let len = (out.len() - start - 8) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// The lowest value at counts index `index` for Vantage's bounds (1 µs, 3
/// digits: 2048 sub-buckets, the upper half of each bucket indexed), the
/// same arithmetic as hdrhistogram's private `value_for`.
fn value_at_index(index: usize) -> u64 {
    const HALF_MAGNITUDE: u32 = 10;
    const HALF: usize = 1 << HALF_MAGNITUDE;
    let bucket = (index >> HALF_MAGNITUDE) as i64 - 1;
    let mut sub_bucket = (index & (HALF - 1)) + HALF;
    let bucket = if bucket < 0 {
        sub_bucket -= HALF;
        0
    } else {
        bucket as u32
    };
    (sub_bucket as u64).checked_shl(bucket).unwrap_or(u64::MAX)
}

/// How many counts a V2 payload fills (the index past its last nonzero
/// count), or `None` if it is malformed (left to the decoder to report).
fn counts_length(mut payload: &[u8]) -> Option<usize> {
    let mut index = 0usize;
    let mut filled = 0usize;
    while !payload.is_empty() {
        let mut zz = 0u64;
        let mut read = 0;
        loop {
            let b = *payload.get(read)?;
            zz |= u64::from(b & 0x7f) << (7 * read);
            read += 1;
            if b & 0x80 == 0 || read == 9 {
                if read == 9 {
                    // The ninth byte of LEB128-64b9B carries a full 8 bits.
                    zz |= u64::from(b & 0x80) << 56;
                }
                break;
            }
        }
        payload = &payload[read..];
        let n = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
        if n < 0 {
            index = index.checked_add(n.unsigned_abs() as usize)?;
        } else {
            if n > 0 {
                filled = index + 1;
            }
            index += 1;
        }
    }
    Some(filled)
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
    // Allocate only as far as the largest count, not the full hour: most
    // stored histograms hold milliseconds, and a full array is ~190 kB to
    // zero and later walk for every series decoded.
    if let Some(filled) = counts_length(&inflated[V2_HEADER_LEN..V2_HEADER_LEN + payload_len]) {
        let fit = value_at_index(filled.max(1))
            .saturating_mul(2)
            .clamp(2 * HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST);
        inflated[24..32].copy_from_slice(&fit.to_be_bytes());
    }
    let mut h: LatencyHistogram = Deserializer::new()
        .deserialize(&mut &inflated[..V2_HEADER_LEN + payload_len])
        .map_err(|e| HistogramError::Payload(format!("{e:?}")))?;
    h.auto(true);
    Ok(h)
}

/// The figures every row of series or groups shows: count, extremes, the
/// usual percentiles (HdrHistogram's `value_at_quantile`) and the mean
/// rounded to 0.1. Everything but the count is `None` for an empty
/// histogram, so no row shows a percentile of nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Minimum.
    pub min: Option<u64>,
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p999: Option<u64>,
    /// Maximum.
    pub max: Option<u64>,
    /// Mean, rounded to 0.1.
    pub mean: Option<f64>,
}

impl Summary {
    /// The summary of `h`.
    pub fn of(h: &LatencyHistogram) -> Self {
        let some = |f: &dyn Fn() -> u64| (!h.is_empty()).then(f);
        Summary {
            count: h.len(),
            min: some(&|| h.min()),
            p50: some(&|| h.value_at_quantile(0.5)),
            p90: some(&|| h.value_at_quantile(0.9)),
            p99: some(&|| h.value_at_quantile(0.99)),
            p999: some(&|| h.value_at_quantile(0.999)),
            max: some(&|| h.max()),
            mean: (!h.is_empty()).then(|| (h.mean() * 10.0).round() / 10.0),
        }
    }
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
    fn a_growing_histogram_stays_small_and_encodes_with_full_bounds() {
        let mut h = new_latency_histogram();
        for v in [0u64, 40, 900, 80_000] {
            record_clamped(&mut h, v);
        }
        let small = h.distinct_values();
        assert!(small < 12_000, "{small} counts for values up to 80 ms");
        record_clamped(&mut h, u64::MAX);
        assert!(h.max() >= HISTOGRAM_HIGHEST, "{}", h.max());
        let mut buf = Vec::new();
        encode_histogram(&h, &mut buf).unwrap();
        let back = decode_histogram(&buf).unwrap();
        assert_eq!(back.high(), HISTOGRAM_HIGHEST);
        assert_eq!(back.len(), 5);
        assert_eq!(back.min(), 1);
        assert!(same_counts(&back, &h) && same_counts(&h, &back));
        record_clamped(&mut h, 5);
        assert!(!same_counts(&back, &h) && !same_counts(&h, &back));
    }

    #[test]
    fn encoding_a_grown_histogram_gives_the_reference_serializer_bytes() {
        use hdrhistogram::serialization::V2DeflateSerializer;
        let mut grown = new_latency_histogram();
        let mut full =
            Histogram::new_with_bounds(HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST, HISTOGRAM_SIGFIG)
                .unwrap();
        for v in [3u64, 700, 701, 80_000, 80_000, 2_500_000] {
            record_clamped(&mut grown, v);
            full.record(v).unwrap();
        }
        let (mut ours, mut reference) = (Vec::new(), Vec::new());
        encode_histogram(&grown, &mut ours).unwrap();
        V2DeflateSerializer::new()
            .serialize(&full, &mut reference)
            .unwrap();
        assert_eq!(ours, reference);
        let back = decode_histogram(&reference).unwrap();
        assert!(same_counts(&back, &full));
        assert!(back.distinct_values() < full.distinct_values());
        // A decoded histogram still takes any value in range.
        let mut back = back;
        record_clamped(&mut back, HISTOGRAM_HIGHEST);
        assert_eq!(back.len(), 7);
    }

    #[test]
    fn index_arithmetic_matches_hdrhistogram() {
        let full = Histogram::<u64>::new_with_bounds(
            HISTOGRAM_LOWEST,
            HISTOGRAM_HIGHEST,
            HISTOGRAM_SIGFIG,
        )
        .unwrap();
        let mut checked = 0;
        for (i, v) in full.iter_all().enumerate() {
            if i % 97 == 0 || i < 2100 {
                assert_eq!(
                    value_at_index(i),
                    full.lowest_equivalent(v.value_iterated_to()),
                    "index {i}"
                );
                checked += 1;
            }
        }
        assert!(checked > 2300, "{checked}");
    }

    #[test]
    fn values_beyond_the_bounds_do_not_encode() {
        let mut h = new_latency_histogram();
        h.record(HISTOGRAM_HIGHEST * 4).unwrap();
        let mut buf = Vec::new();
        assert!(matches!(
            encode_histogram(&h, &mut buf),
            Err(HistogramError::Encode(_))
        ));
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
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&h, &mut buf)
            .unwrap();
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

    #[test]
    fn a_summary_shows_nothing_of_an_empty_histogram_and_hdr_quantiles_of_a_full_one() {
        let mut h = new_latency_histogram();
        let empty = Summary::of(&h);
        assert_eq!((empty.count, empty.p50, empty.mean), (0, None, None));
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!((s.min, s.max), (Some(1), Some(1000)));
        assert_eq!(s.p50, Some(h.value_at_quantile(0.5)));
        assert_eq!(s.p999, Some(h.value_at_quantile(0.999)));
        assert_eq!(s.mean, Some(500.5));
    }
}
