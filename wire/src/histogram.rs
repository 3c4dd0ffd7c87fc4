//! The latency histogram: its bounds, and its codec (HdrHistogram V2,
//! deflated on the wire and plain in the store: formats other HdrHistogram
//! tools read), hardened against
//! hostile input: bounds are checked before any allocation and the inflated
//! size is capped, so a crafted header cannot make a decoder allocate
//! gigabytes.

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use std::borrow::Cow;
use std::io::{Read, Write};

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
    /// The cookie is not HdrHistogram V2 (plain or deflate).
    #[error("not an HdrHistogram V2 histogram, plain or deflate (cookie {0:#x})")]
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
    encode_histogram_at(h, out, flate2::Compression::default())
}

/// Encodes as plain HdrHistogram V2 (no deflate), with Vantage's full
/// bounds: what the store keeps. A small histogram barely compresses (a
/// minute's 60 samples: 149 bytes plain, 129 deflated), and reading it
/// back needs no inflating, which cost more than all the rest of reading a
/// stored series. Any HdrHistogram reader reads it.
pub fn encode_histogram_plain(
    h: &LatencyHistogram,
    out: &mut Vec<u8>,
) -> Result<(), HistogramError> {
    out.extend_from_slice(&plain_v2(h)?);
    Ok(())
}

/// The plain V2 encoding of `h`, its header naming the full bounds.
fn plain_v2(h: &LatencyHistogram) -> Result<Vec<u8>, HistogramError> {
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
    Ok(plain)
}

fn encode_histogram_at(
    h: &LatencyHistogram,
    out: &mut Vec<u8>,
    level: flate2::Compression,
) -> Result<(), HistogramError> {
    let plain = plain_v2(h)?;
    let start = out.len();
    out.extend_from_slice(&V2_DEFLATE_COOKIE.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut z = flate2::write::ZlibEncoder::new(&mut *out, level);
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

/// Walks a V2 payload (zig-zag LEB128-64b9B counts, negative runs of
/// zeros), handing `each` every nonzero (index, count); `None` if it is
/// malformed.
fn walk_counts(mut payload: &[u8], mut each: impl FnMut(usize, u64)) -> Option<()> {
    let mut index = 0usize;
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
        if n == i64::MIN {
            // A zero run of 2^63 fits no histogram, and negating it
            // overflows (hdrhistogram 7.6 does).
            return None;
        }
        if n < 0 {
            index = index.checked_add(n.unsigned_abs() as usize)?;
        } else {
            if n > 0 {
                each(index, n as u64);
            }
            index = index.checked_add(1)?;
        }
    }
    Some(())
}

/// The most samples a histogram may hold: V2 carries each count as a
/// signed 64-bit number, so a total beyond it could hold a count (merged
/// from repeats of one value) that no encoding carries back.
const MAX_TOTAL: u64 = i64::MAX as u64;

/// How many counts a V2 payload fills (the index past its last nonzero
/// count), or `None` if it is malformed or its counts sum past [`MAX_TOTAL`] (left
/// to the decoder to report).
fn counts_length(payload: &[u8]) -> Option<usize> {
    let (mut filled, mut total) = (0usize, Some(0u64));
    walk_counts(payload, |index, n| {
        filled = index.saturating_add(1);
        total = total
            .and_then(|t| t.checked_add(n))
            .filter(|t| *t <= MAX_TOTAL);
    })?;
    total.map(|_| filled)
}

thread_local! {
    /// One zlib inflater per thread, reset for each histogram: a new one
    /// allocates and zeroes ~40 kB of state, which cost more than the
    /// inflating itself when millions of small histograms are read.
    static INFLATER: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(true));
}

/// Inflates a zlib stream of at most [`MAX_INFLATED`] bytes.
fn inflate_capped(compressed: &[u8]) -> Result<Vec<u8>, HistogramError> {
    use flate2::{FlushDecompress, Status};
    let inflate = |e: String| HistogramError::Inflate(e);
    INFLATER.with(|cell| {
        let mut z = cell.borrow_mut();
        z.reset(true);
        let mut out = Vec::with_capacity((compressed.len() * 8).clamp(256, MAX_INFLATED + 1));
        loop {
            let (read, written) = (z.total_in(), z.total_out());
            let input = compressed.get(read as usize..).unwrap_or_default();
            let status = z
                .decompress_vec(input, &mut out, FlushDecompress::None)
                .map_err(|e| inflate(e.to_string()))?;
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if out.len() > MAX_INFLATED {
                return Err(inflate(format!("more than {MAX_INFLATED} bytes")));
            }
            if out.len() == out.capacity() {
                out.reserve((MAX_INFLATED + 1 - out.len()).min(out.capacity()));
            } else if z.total_in() == read && z.total_out() == written {
                return Err(inflate("the compressed stream ends early".into()));
            }
        }
    })
}

/// Checks HdrHistogram V2 bytes, plain or deflated, and gives their plain
/// encoding (borrowed when it was plain) and its payload's length.
fn v2_checked(bytes: &[u8]) -> Result<(Cow<'_, [u8]>, usize), HistogramError> {
    if bytes.len() < 8 {
        return Err(HistogramError::Truncated("V2 header"));
    }
    let cookie = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let plain = match cookie {
        V2_COOKIE => Cow::Borrowed(bytes),
        V2_DEFLATE_COOKIE => {
            let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
            let compressed = bytes
                .get(8..)
                .filter(|rest| rest.len() >= len)
                .map(|rest| &rest[..len])
                .ok_or(HistogramError::Truncated("compressed payload"))?;
            Cow::Owned(inflate_capped(compressed)?)
        }
        other => return Err(HistogramError::BadCookie(other)),
    };
    if plain.len() < V2_HEADER_LEN {
        return Err(HistogramError::Truncated("V2 header"));
    }
    let be32 = |at: usize| u32::from_be_bytes(plain[at..at + 4].try_into().unwrap_or([0; 4]));
    let be64 = |at: usize| u64::from_be_bytes(plain[at..at + 8].try_into().unwrap_or([0; 8]));
    let inner_cookie = be32(0);
    if inner_cookie != V2_COOKIE {
        return Err(HistogramError::BadCookie(inner_cookie));
    }
    let payload_len = be32(4) as usize;
    if payload_len > MAX_INFLATED {
        return Err(HistogramError::Payload(format!(
            "{payload_len} bytes of counts, more than {MAX_INFLATED}"
        )));
    }
    if plain.len() < V2_HEADER_LEN + payload_len {
        return Err(HistogramError::Truncated("V2 counts"));
    }
    if cookie == V2_COOKIE && plain.len() > V2_HEADER_LEN + payload_len {
        return Err(HistogramError::Payload(format!(
            "{} bytes after the counts",
            plain.len() - V2_HEADER_LEN - payload_len
        )));
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
    Ok((plain, payload_len))
}

/// Decodes HdrHistogram V2 bytes, plain or deflated, accepting only
/// Vantage's bounds.
pub fn decode_histogram(bytes: &[u8]) -> Result<LatencyHistogram, HistogramError> {
    let (plain, payload_len) = v2_checked(bytes)?;
    dense_of(&plain, payload_len)
}

/// Decodes like [`decode_histogram`], and also gives the plain V2 encoding
/// (see [`encode_histogram_plain`]), so a store keeps it without encoding
/// the histogram again or inflating it at every read.
pub fn decode_histogram_plain(bytes: &[u8]) -> Result<(LatencyHistogram, Vec<u8>), HistogramError> {
    let (plain, payload_len) = v2_checked(bytes)?;
    let h = dense_of(&plain, payload_len)?;
    let mut plain = plain.into_owned();
    plain.truncate(V2_HEADER_LEN + payload_len);
    Ok((h, plain))
}

/// The histogram of checked plain V2 bytes.
fn dense_of(plain: &[u8], payload_len: usize) -> Result<LatencyHistogram, HistogramError> {
    let payload = &plain[V2_HEADER_LEN..V2_HEADER_LEN + payload_len];
    let mut header = [0u8; V2_HEADER_LEN];
    header.copy_from_slice(&plain[..V2_HEADER_LEN]);
    // Every count is walked here first, so the library only ever sees
    // counts our own walker accepts (it panics on some it should refuse).
    let filled = counts_length(payload).ok_or_else(|| {
        HistogramError::Payload("malformed counts, or counts that sum past 2^63 - 1".into())
    })?;
    // Allocate only as far as the largest count, not the full hour: most
    // stored histograms hold milliseconds, and a full array is ~190 kB to
    // zero and later walk for every series decoded.
    let fit = value_at_index(filled.max(1))
        .saturating_mul(2)
        .clamp(2 * HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST);
    header[24..32].copy_from_slice(&fit.to_be_bytes());
    let mut h: LatencyHistogram = Deserializer::new()
        .deserialize(&mut (&header[..]).chain(payload))
        .map_err(|e| HistogramError::Payload(format!("{e:?}")))?;
    // The last bucket of the counts array reaches past the highest value;
    // a count there is one no probe records, and one we could not encode.
    if h.lowest_equivalent(h.max()) > HISTOGRAM_HIGHEST {
        return Err(HistogramError::Payload(format!(
            "a count at {} µs, above the highest value {HISTOGRAM_HIGHEST} µs",
            h.max()
        )));
    }
    h.auto(true);
    Ok(h)
}

/// Writes the plain V2 encoding of nonzero `(index, count)` pairs in
/// ascending index order, byte for byte what hdrhistogram's serializer
/// writes for the same counts with Vantage's bounds.
fn write_plain(out: &mut Vec<u8>, counts: impl Iterator<Item = (usize, u64)>) {
    let start = out.len();
    out.extend_from_slice(&V2_COOKIE.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // payload length, below
    out.extend_from_slice(&0u32.to_be_bytes()); // normalizing index offset
    out.extend_from_slice(&u32::from(HISTOGRAM_SIGFIG).to_be_bytes());
    out.extend_from_slice(&HISTOGRAM_LOWEST.to_be_bytes());
    out.extend_from_slice(&HISTOGRAM_HIGHEST.to_be_bytes());
    out.extend_from_slice(&1.0f64.to_be_bytes());
    // Counts must go out by rising index, each index once; sparse counts
    // decoded from outside may be in any order (found by fuzzing: the
    // subtraction below overflowed), so they are sorted and merged first.
    let mut counts: Vec<(usize, u64)> = counts.collect();
    if !counts.windows(2).all(|w| w[0].0 < w[1].0) {
        counts.sort_unstable_by_key(|&(index, _)| index);
        counts.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.saturating_add(later.1);
            }
            same
        });
    }
    let mut next = 0usize;
    for (index, n) in counts {
        match index - next {
            0 => {}
            1 => write_zigzag(out, 0),
            zeros => write_zigzag(out, -(zeros.min(i64::MAX as usize) as i64)),
        }
        write_zigzag(out, n.min(i64::MAX as u64) as i64);
        next = index + 1;
    }
    if next == 0 {
        // An empty histogram: one zero count, as the serializer writes.
        write_zigzag(out, 0);
    }
    let len = (out.len() - start - V2_HEADER_LEN) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_be_bytes());
}

/// Appends `n` zig-zag encoded as LEB128-64b9B (the ninth byte carries a
/// full 8 bits), the V2 payload's integer form.
fn write_zigzag(out: &mut Vec<u8>, n: i64) {
    let mut zz = ((n << 1) ^ (n >> 63)) as u64;
    for _ in 0..8 {
        if zz < 0x80 {
            out.push(zz as u8);
            return;
        }
        out.push(0x80 | (zz & 0x7f) as u8);
        zz >>= 7;
    }
    out.push(zz as u8);
}

/// A histogram's nonzero counts, decoded from its bytes without the dense
/// counts array: all a merge or a resampling unit needs, at a fraction of
/// the cost of [`decode_histogram`], which allocates and zeroes the array
/// up to the largest value (tens of kB) for every series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseCounts {
    /// (lowest value of the bucket, count), in value order.
    counts: Vec<(u64, u64)>,
}

impl SparseCounts {
    /// Decodes HdrHistogram V2 bytes, plain or deflated, with Vantage's
    /// bounds, as [`decode_histogram`] does, refusing what it refuses.
    pub fn decode(bytes: &[u8]) -> Result<Self, HistogramError> {
        let mut counts = SparseCounts::default();
        counts.decode_into(bytes)?;
        Ok(counts)
    }

    /// [`SparseCounts::decode`] into `self`, reusing its buffer (a reader
    /// of millions of rows allocates once); on error `self` is left empty.
    pub fn decode_into(&mut self, bytes: &[u8]) -> Result<(), HistogramError> {
        self.counts.clear();
        let (plain, payload_len) = v2_checked(bytes)?;
        let payload = &plain[V2_HEADER_LEN..V2_HEADER_LEN + payload_len];
        let counts = &mut self.counts;
        let (mut beyond, mut total) = (false, Some(0u64));
        let walked = walk_counts(payload, |index, n| {
            let v = value_at_index(index);
            total = total
                .and_then(|t| t.checked_add(n))
                .filter(|t| *t <= MAX_TOTAL);
            if v > HISTOGRAM_HIGHEST {
                beyond = true;
            } else {
                counts.push((v, n));
            }
        });
        if walked.is_some() && !beyond && total.is_some() {
            return Ok(());
        }
        self.counts.clear();
        Err(HistogramError::Payload(if walked.is_none() {
            "malformed counts".into()
        } else if beyond {
            format!("a count beyond the highest value {HISTOGRAM_HIGHEST}")
        } else {
            "counts that sum past 2^63 - 1 samples".into()
        }))
    }

    /// The sparse counts of a histogram in memory.
    pub fn of(h: &LatencyHistogram) -> Self {
        SparseCounts {
            counts: h
                .iter_recorded()
                .map(|v| {
                    (
                        h.lowest_equivalent(v.value_iterated_to()),
                        v.count_at_value(),
                    )
                })
                .collect(),
        }
    }

    /// (lowest value of the bucket, count), in value order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().copied()
    }

    /// (highest value of the bucket, count), in value order: what
    /// HdrHistogram's percentiles report for a bucket.
    pub fn iter_highest(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().map(|&(v, n)| (highest_equivalent(v), n))
    }

    /// Adds `other`'s counts (exactly: bucket by bucket).
    pub fn merge(&mut self, other: &SparseCounts) {
        let (x, y) = (std::mem::take(&mut self.counts), &other.counts);
        let mut merged = Vec::with_capacity(x.len() + y.len());
        let (mut i, mut j) = (0, 0);
        while i < x.len() && j < y.len() {
            let ((vx, nx), (vy, ny)) = (x[i], y[j]);
            if vx == vy {
                merged.push((vx, nx.saturating_add(ny)));
                i += 1;
                j += 1;
            } else if vx < vy {
                merged.push(x[i]);
                i += 1;
            } else {
                merged.push(y[j]);
                j += 1;
            }
        }
        merged.extend_from_slice(&x[i..]);
        merged.extend_from_slice(&y[j..]);
        self.counts = merged;
    }

    /// The plain V2 encoding of these counts (see [`encode_histogram_plain`]).
    pub fn encode_plain(&self, out: &mut Vec<u8>) {
        write_plain(out, self.counts.iter().map(|&(v, n)| (index_of(v), n)));
    }

    /// Samples counted.
    pub fn total(&self) -> u64 {
        // Saturating: a decoded set sums within u64, but merged sets may not.
        self.counts
            .iter()
            .fold(0u64, |total, &(_, n)| total.saturating_add(n))
    }

    /// A histogram holding exactly these counts.
    pub fn to_histogram(&self) -> LatencyHistogram {
        let mut h = new_latency_histogram();
        self.add_to(&mut h);
        h
    }

    /// Adds every count to `h` (exactly: each lands in its own bucket).
    pub fn add_to(&self, h: &mut LatencyHistogram) {
        // In range by construction, and `h` grows as needed. The largest
        // first: a growing histogram resizes (a copy) for each value past
        // its end, so in ascending order it would copy once per bucket.
        let Some((&(top, top_n), rest)) = self.counts.split_last() else {
            return;
        };
        let _ = h.record_n(top, top_n);
        for &(v, n) in rest {
            let _ = h.record_n(v, n);
        }
    }
}

/// The highest value equivalent to `lowest`, the lowest value of a bucket
/// at Vantage's resolution (hdrhistogram's `highest_equivalent`).
fn highest_equivalent(lowest: u64) -> u64 {
    // 2048 sub-buckets: values below 2048 are exact; above, a bucket spans
    // 2^(bits - 11) values.
    let bits = 64 - lowest.leading_zeros();
    let span = if bits <= 11 { 1 } else { 1u64 << (bits - 11) };
    lowest.saturating_add(span - 1)
}

/// The counts index of `value` at Vantage's resolution (hdrhistogram's
/// private `index_for`, for 1 µs and 3 digits); the inverse of
/// [`value_at_index`] on each bucket's lowest value.
fn index_of(value: u64) -> usize {
    let bucket = 53 - (value | 2047).leading_zeros() as usize;
    let sub_bucket = (value >> bucket) as usize;
    ((bucket + 1) << 10) + sub_bucket - 1024
}

/// A reusable dense counts array for summing many sparse histograms into
/// one, exactly: a roll-up of a day's windows is one pass over their
/// counts, not a copy of the running sum per window.
#[derive(Debug, Default)]
pub struct CountsScratch {
    counts: Vec<u64>,
}

impl CountsScratch {
    /// Writes the plain V2 encoding (see [`encode_histogram_plain`]) of
    /// the sum of `pieces` to `out`; the scratch is left zeroed for the
    /// next sum.
    pub fn sum_plain<'a>(
        &mut self,
        pieces: impl IntoIterator<Item = &'a SparseCounts>,
        out: &mut Vec<u8>,
    ) {
        let (mut low, mut high) = (usize::MAX, 0);
        for piece in pieces {
            for (v, n) in piece.iter() {
                let i = index_of(v);
                if i >= self.counts.len() {
                    self.counts.resize(i + 1, 0);
                }
                self.counts[i] = self.counts[i].saturating_add(n);
                low = low.min(i);
                high = high.max(i);
            }
        }
        let range = if low > high { 0..0 } else { low..high + 1 };
        let counts = &mut self.counts;
        write_plain(
            out,
            range.filter_map(|i| Some((i, std::mem::take(&mut counts[i]))).filter(|&(_, n)| n > 0)),
        );
    }
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

    /// Found by the `histogram_decode` fuzz target (through
    /// `SparseCounts::encode_plain` on counts decoded from outside): counts
    /// out of index order made the gap subtraction overflow. They are
    /// sorted and merged instead.
    #[test]
    fn plain_counts_out_of_order_are_sorted_and_merged() {
        let mut shuffled = Vec::new();
        write_plain(&mut shuffled, [(9, 1), (3, 2), (9, 4)].into_iter());
        let mut ordered = Vec::new();
        write_plain(&mut ordered, [(3, 2), (9, 5)].into_iter());
        assert_eq!(shuffled, ordered);
    }

    /// Found by the `histogram_decode` fuzz target: the last bucket of a
    /// 1..3.6e9 µs counts array reaches 3,718,250,495 µs, so a count there
    /// decoded, and then could not be encoded again. It is refused.
    #[test]
    fn a_count_above_the_highest_value_is_refused() {
        let full: LatencyHistogram =
            Histogram::new_with_bounds(HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST, HISTOGRAM_SIGFIG)
                .unwrap();
        let last = full.distinct_values() - 1;
        assert!(value_at_index(last) > HISTOGRAM_HIGHEST);
        let mut bytes = Vec::new();
        write_plain(&mut bytes, [(last, 1)].into_iter());
        let e = decode_histogram(&bytes).unwrap_err();
        assert!(e.to_string().contains("above the highest"), "{e}");
        assert!(decode_histogram_plain(&bytes).is_err());
        // The highest value itself still round-trips.
        let mut h = new_latency_histogram();
        h.record(HISTOGRAM_HIGHEST).unwrap();
        let mut out = Vec::new();
        encode_histogram(&h, &mut out).unwrap();
        assert_eq!(decode_histogram(&out).unwrap().max(), h.max());
    }

    /// Found by the `histogram_decode` fuzz target: counts near 2^63
    /// each decoded as sparse counts whose total overflowed (a panic in
    /// `total` under overflow checks), and repeats of one value merged
    /// into a count V2 cannot carry. A total past 2^63 - 1 is refused.
    #[test]
    fn counts_summing_past_u64_are_refused_as_sparse_counts() {
        let mut bytes = Vec::new();
        let most = i64::MAX as u64; // the largest count V2 can carry
        write_plain(&mut bytes, [(1, most), (2, most), (3, most)].into_iter());
        let e = SparseCounts::decode(&bytes).unwrap_err();
        assert!(e.to_string().contains("2^63 - 1"), "{e}");
        assert!(
            decode_histogram(&bytes).is_err(),
            "refused by both decoders"
        );
        let mut fits = Vec::new();
        write_plain(&mut fits, [(1, 1u64 << 61), (2, 1u64 << 61)].into_iter());
        assert_eq!(SparseCounts::decode(&fits).unwrap().total(), 1u64 << 62);
        let mut past = Vec::new();
        write_plain(&mut past, [(1, 1u64 << 62), (2, 1u64 << 62)].into_iter());
        assert!(SparseCounts::decode(&past).is_err());
        assert!(decode_histogram(&past).is_err());
    }

    /// Found by the `histogram_decode` fuzz target: zero runs that bring
    /// the index to `usize::MAX`, then a count, overflowed the length
    /// walk. Refused, never a panic.
    #[test]
    fn a_count_at_the_last_index_is_refused() {
        let mut payload = Vec::new();
        for n in [-i64::MAX, -i64::MAX, -1, 1] {
            write_zigzag(&mut payload, n);
        }
        let bytes = with_payload(&payload);
        assert!(decode_histogram(&bytes).is_err());
        assert!(SparseCounts::decode(&bytes).is_err());
    }

    /// Plain V2 bytes with Vantage's header and `payload` as the counts.
    fn with_payload(payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_histogram_plain(&new_latency_histogram(), &mut bytes).unwrap();
        bytes.truncate(V2_HEADER_LEN);
        bytes[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    proptest::proptest! {
        /// Any sequence of counts and zero runs, extremes included,
        /// decodes or is refused: never a panic, in this overflow-checked
        /// build.
        #[test]
        fn any_counts_decode_or_are_refused(
            ns in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<i64>(),
                    proptest::prelude::Just(i64::MIN),
                    proptest::prelude::Just(i64::MAX),
                    -3_000i64..3_000,
                ],
                0..12,
            )
        ) {
            let mut payload = Vec::new();
            for n in &ns {
                write_zigzag(&mut payload, *n);
            }
            let bytes = with_payload(&payload);
            let _ = decode_histogram(&bytes);
            let _ = decode_histogram_plain(&bytes);
        }
    }

    /// A run of zeros of length 2^63: zig-zag `u64::MAX`, nine 0xFF bytes
    /// in LEB128-64b9B. hdrhistogram 7.6 negates it, which overflows: a
    /// panic in any build with overflow checks (`cargo test` is one). It
    /// is refused before the library sees it, plain, deflated and inside
    /// a batch.
    #[test]
    fn a_zero_run_of_two_to_the_63_is_refused_not_negated() {
        let bad = with_payload(&[0xFF; 9]);
        let e = decode_histogram(&bad).unwrap_err();
        assert!(matches!(e, HistogramError::Payload(_)), "{e:?}");
        assert!(decode_histogram_plain(&bad).is_err());
        // A count of i64::MAX is a number, not a zero run: left to the
        // counter type, which refuses it or keeps it, without a panic.
        let _ = decode_histogram(&with_payload(&[
            0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]));
        // Followed by more counts, and deflated.
        let mut compressed = Vec::new();
        {
            use std::io::Write;
            let mut z =
                flate2::write::ZlibEncoder::new(&mut compressed, flate2::Compression::fast());
            z.write_all(&with_payload(&[
                0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
            ]))
            .unwrap();
            z.finish().unwrap();
        }
        let mut deflated = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        deflated.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        deflated.extend_from_slice(&compressed);
        assert!(decode_histogram(&deflated).is_err());
    }

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
                assert_eq!(index_of(value_at_index(i)), i, "index {i}");
                assert_eq!(index_of(v.value_iterated_to()), i, "index {i}");
                checked += 1;
            }
        }
        assert!(checked > 2300, "{checked}");
    }

    #[test]
    fn sparse_counts_equal_the_full_decode_and_merge_exactly() {
        // xorshift64: reproducible values without a dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let mut merged_dense = new_latency_histogram();
        let mut merged_sparse = new_latency_histogram();
        let mut pieces = Vec::new();
        for round in 0..40 {
            let mut h = new_latency_histogram();
            for _ in 0..next(300) {
                let top = [2_000u64, 400_000, HISTOGRAM_HIGHEST][round % 3];
                record_clamped(&mut h, 1 + next(top));
            }
            let mut buf = Vec::new();
            encode_histogram(&h, &mut buf).unwrap();
            let dense = decode_histogram(&buf).unwrap();
            let sparse = SparseCounts::decode(&buf).unwrap();
            assert_eq!(sparse, SparseCounts::of(&dense), "round {round}");
            assert_eq!(sparse.total(), dense.len());
            let want: Vec<(u64, u64)> = dense
                .iter_recorded()
                .map(|v| {
                    (
                        dense.highest_equivalent(v.value_iterated_to()),
                        v.count_at_value(),
                    )
                })
                .collect();
            assert_eq!(
                sparse.iter_highest().collect::<Vec<_>>(),
                want,
                "round {round}"
            );
            merged_dense.add(&dense).unwrap();
            sparse.add_to(&mut merged_sparse);
            pieces.push(sparse);
        }
        let mut scratch = CountsScratch::default();
        let sum = |scratch: &mut CountsScratch, pieces: &[SparseCounts]| {
            let mut plain = Vec::new();
            scratch.sum_plain(pieces, &mut plain);
            decode_histogram(&plain).unwrap()
        };
        let summed = sum(&mut scratch, &pieces);
        assert!(same_counts(&summed, &merged_dense) && same_counts(&merged_dense, &summed));
        assert_eq!(summed.len(), merged_dense.len());
        assert!(scratch.counts.iter().all(|&n| n == 0), "left zeroed");
        assert!(same_counts(
            &sum(&mut scratch, &pieces[..1]),
            &pieces[0].to_histogram()
        ));
        let mut merged_pairs = SparseCounts::default();
        for piece in &pieces {
            merged_pairs.merge(piece);
        }
        assert_eq!(merged_pairs, SparseCounts::of(&merged_dense));
        assert!(same_counts(&merged_dense, &merged_sparse));
        assert!(same_counts(&merged_sparse, &merged_dense));
        assert_eq!(merged_dense.len(), merged_sparse.len());
        assert_eq!(merged_dense.max(), merged_sparse.max());
    }

    #[test]
    fn the_plain_encoding_is_the_reference_serializers_and_reads_back_as_the_deflated_one() {
        let mut full =
            Histogram::new_with_bounds(HISTOGRAM_LOWEST, HISTOGRAM_HIGHEST, HISTOGRAM_SIGFIG)
                .unwrap();
        let mut grown = new_latency_histogram();
        for (round, values) in [
            &[][..],
            &[1],
            &[5, 5, 6, 3_000, 3_000, 90_000, 2_500_000, HISTOGRAM_HIGHEST],
        ]
        .into_iter()
        .enumerate()
        {
            for &v in values {
                full.record(v).unwrap();
                record_clamped(&mut grown, v);
            }
            let mut reference = Vec::new();
            V2Serializer::new()
                .serialize(&full, &mut reference)
                .unwrap();
            let (mut ours, mut from_sparse, mut deflated) = (Vec::new(), Vec::new(), Vec::new());
            encode_histogram_plain(&grown, &mut ours).unwrap();
            SparseCounts::of(&grown).encode_plain(&mut from_sparse);
            assert_eq!(ours, reference, "round {round}");
            assert_eq!(from_sparse, reference, "round {round}");
            encode_histogram(&grown, &mut deflated).unwrap();
            let (dense, plain) = decode_histogram_plain(&deflated).unwrap();
            assert_eq!(plain, reference, "round {round}");
            assert!(same_counts(&dense, &full) && same_counts(&full, &dense));
            let back = decode_histogram(&plain).unwrap();
            assert!(same_counts(&back, &full) && same_counts(&full, &back));
            assert_eq!(
                SparseCounts::decode(&plain).unwrap(),
                SparseCounts::decode(&deflated).unwrap()
            );
        }
    }

    #[test]
    fn a_plain_histogram_cut_short_or_with_bytes_after_it_is_refused() {
        let mut h = new_latency_histogram();
        for v in [7u64, 1234, 99_000] {
            h.record(v).unwrap();
        }
        let mut plain = Vec::new();
        encode_histogram_plain(&h, &mut plain).unwrap();
        for n in 0..plain.len() {
            assert!(
                decode_histogram(&plain[..n]).is_err(),
                "prefix {n} accepted"
            );
            assert!(
                SparseCounts::decode(&plain[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
        let mut longer = plain.clone();
        longer.push(0);
        assert!(matches!(
            SparseCounts::decode(&longer),
            Err(HistogramError::Payload(_))
        ));
        assert!(decode_histogram(&longer).is_err());
        // A declared payload past the cap is refused before anything is read.
        let mut huge = plain.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_histogram(&huge),
            Err(HistogramError::Payload(_))
        ));
    }

    #[test]
    fn sparse_decode_refuses_what_the_full_decode_refuses() {
        let mut h = new_latency_histogram();
        h.record(1234).unwrap();
        let mut buf = Vec::new();
        encode_histogram(&h, &mut buf).unwrap();
        for n in 0..buf.len() {
            assert!(
                SparseCounts::decode(&buf[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
        let foreign = Histogram::<u64>::new_with_bounds(1, u64::MAX / 2, 5).unwrap();
        let mut buf = Vec::new();
        hdrhistogram::serialization::V2DeflateSerializer::new()
            .serialize(&foreign, &mut buf)
            .unwrap();
        assert!(matches!(
            SparseCounts::decode(&buf),
            Err(HistogramError::WrongBounds { .. })
        ));
    }

    #[test]
    fn a_payload_that_inflates_past_the_cap_is_refused_by_both_decoders() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 4 * MAX_INFLATED]).unwrap();
        let packed = z.finish().unwrap();
        let mut bytes = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        bytes.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&packed);
        assert!(bytes.len() < 8 * 1024, "a small input");
        for err in [
            decode_histogram(&bytes).unwrap_err(),
            SparseCounts::decode(&bytes).unwrap_err(),
        ] {
            assert!(
                matches!(&err, HistogramError::Inflate(m) if m.contains("more than")),
                "{err}"
            );
        }
        // The same inflater then decodes a good histogram (its state was reset).
        let mut h = new_latency_histogram();
        h.record(77).unwrap();
        let mut good = Vec::new();
        encode_histogram(&h, &mut good).unwrap();
        assert_eq!(decode_histogram(&good).unwrap(), h);
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
