//! The photo-sync protocol: what a probe sends to upload a photo to a
//! responder's sink or fetch one from its source, and the receipt it gets.
//!
//! Over QUIC (ALPN `vantage/1`, one bidirectional stream per photo) the
//! request header has the echo protocol's framing with its own kind:
//!
//! ```text
//! 0x56 'V' | version=1 | kind u8 | size u64 BE | param u64 BE
//! ```
//!
//! - kind 2, upload: `param` holds the photo's CRC-32 (IEEE) in its low 32
//!   bits; `size` photo bytes follow, then the stream's FIN. The sink reads
//!   every byte, checks length and checksum, and only then answers with a
//!   [`PhotoReply`]: `Ok` is the application-level receipt, anything else an
//!   error receipt. A truncated or corrupted photo never gets `Ok`.
//! - kind 3, download: `param` is the seed; the source answers a
//!   [`PhotoReply`] (`bytes` = the size it will send) and then `size` bytes of
//!   [`PhotoBytes`] for that seed, then FIN. The probe regenerates the same
//!   bytes and compares, so a flipped or missing byte is caught.
//!
//! Over HTTPS the same is `PUT /photo` with `x-photo-crc32: HEX` and a
//! `Content-Length`, and `GET /photo?size=N&seed=S`.
//!
//! The checksum guards against corruption and truncation between the
//! probe's generator and the sink's counter (relays, buffers, bugs); TLS
//! already guards against tampering.

/// Request header length.
pub const REQUEST_LEN: usize = 19;
/// Reply length.
pub const REPLY_LEN: usize = 15;
/// The request kind byte of an upload.
pub const KIND_UPLOAD: u8 = 2;
/// The request kind byte of a download.
pub const KIND_DOWNLOAD: u8 = 3;
/// Bytes generated and checked at a time: what bounds memory per photo.
pub const CHUNK: usize = 64 * 1024;

const MAGIC: u8 = 0x56;
const VERSION: u8 = 1;

/// What a photo request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoRequest {
    /// The probe sends `size` bytes whose CRC-32 is `crc32`.
    Upload {
        /// Photo bytes that follow the header.
        size: u64,
        /// CRC-32 (IEEE) of those bytes.
        crc32: u32,
    },
    /// The probe wants `size` bytes generated from `seed`.
    Download {
        /// Photo bytes wanted.
        size: u64,
        /// Seed of [`PhotoBytes`].
        seed: u64,
    },
}

/// How the responder answered a photo request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoStatus {
    /// Upload: every byte arrived and the checksum matched (the receipt).
    /// Download: the photo follows.
    Ok,
    /// The bytes arrived but their checksum does not match.
    Integrity,
    /// The stream ended before `size` bytes, or carried more.
    Truncated,
    /// Larger than the responder's photo limit.
    TooLarge,
    /// The responder is at its concurrent-photo limit.
    Busy,
    /// The header is malformed.
    BadRequest,
    /// No valid access token, on a responder that requires one (see
    /// [`crate::access`]).
    Forbidden,
}

impl PhotoStatus {
    fn to_byte(self) -> u8 {
        match self {
            PhotoStatus::Ok => 0,
            PhotoStatus::Integrity => 1,
            PhotoStatus::Truncated => 2,
            PhotoStatus::TooLarge => 3,
            PhotoStatus::Busy => 4,
            PhotoStatus::BadRequest => 5,
            PhotoStatus::Forbidden => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => PhotoStatus::Ok,
            1 => PhotoStatus::Integrity,
            2 => PhotoStatus::Truncated,
            3 => PhotoStatus::TooLarge,
            4 => PhotoStatus::Busy,
            5 => PhotoStatus::BadRequest,
            6 => PhotoStatus::Forbidden,
            _ => return None,
        })
    }
}

/// A receipt (upload) or the header of a photo (download).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhotoReply {
    /// Outcome.
    pub status: PhotoStatus,
    /// Upload: bytes the sink received. Download: bytes that follow.
    pub bytes: u64,
    /// Upload: the CRC-32 the sink computed. Download: 0.
    pub crc32: u32,
}

/// Why a photo message does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhotoError {
    /// Fewer bytes than the message.
    #[error("photo message truncated: {got} of {need} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Wrong magic or version.
    #[error("not a vantage/1 photo message (magic {magic:#04x}, version {version})")]
    NotPhoto {
        /// First byte.
        magic: u8,
        /// Second byte.
        version: u8,
    },
    /// A kind or status this version does not know.
    #[error("unknown photo {what} {value}")]
    Unknown {
        /// "kind" or "status".
        what: &'static str,
        /// The value.
        value: u8,
    },
}

fn check(bytes: &[u8], need: usize) -> Result<(), PhotoError> {
    if bytes.len() < need {
        return Err(PhotoError::Truncated {
            got: bytes.len(),
            need,
        });
    }
    if bytes[0] != MAGIC || bytes[1] != VERSION {
        return Err(PhotoError::NotPhoto {
            magic: bytes[0],
            version: bytes[1],
        });
    }
    Ok(())
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// True when a request's kind byte (the third) names a photo request, so
/// a responder can tell photo streams from echo streams after three bytes.
pub fn is_photo_kind(kind: u8) -> bool {
    kind == KIND_UPLOAD || kind == KIND_DOWNLOAD
}

impl PhotoRequest {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let (kind, size, param) = match *self {
            PhotoRequest::Upload { size, crc32 } => (KIND_UPLOAD, size, u64::from(crc32)),
            PhotoRequest::Download { size, seed } => (KIND_DOWNLOAD, size, seed),
        };
        let mut out = [0u8; REQUEST_LEN];
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = kind;
        out[3..11].copy_from_slice(&size.to_be_bytes());
        out[11..19].copy_from_slice(&param.to_be_bytes());
        out
    }

    /// Decodes a header from the first [`REQUEST_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PhotoError> {
        check(bytes, REQUEST_LEN)?;
        let size = be64(&bytes[3..11]);
        let param = be64(&bytes[11..19]);
        match bytes[2] {
            KIND_UPLOAD => Ok(PhotoRequest::Upload {
                size,
                crc32: (param & 0xffff_ffff) as u32,
            }),
            KIND_DOWNLOAD => Ok(PhotoRequest::Download { size, seed: param }),
            other => Err(PhotoError::Unknown {
                what: "kind",
                value: other,
            }),
        }
    }
}

impl PhotoReply {
    /// Encodes the reply.
    pub fn encode(&self) -> [u8; REPLY_LEN] {
        let mut out = [0u8; REPLY_LEN];
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = self.status.to_byte();
        out[3..11].copy_from_slice(&self.bytes.to_be_bytes());
        out[11..15].copy_from_slice(&self.crc32.to_be_bytes());
        out
    }

    /// Decodes a reply from the first [`REPLY_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PhotoError> {
        check(bytes, REPLY_LEN)?;
        let status = PhotoStatus::from_byte(bytes[2]).ok_or(PhotoError::Unknown {
            what: "status",
            value: bytes[2],
        })?;
        Ok(PhotoReply {
            status,
            bytes: be64(&bytes[3..11]),
            crc32: u32::from_be_bytes([bytes[11], bytes[12], bytes[13], bytes[14]]),
        })
    }
}

/// The bytes of a generated photo: a keyed stream (SplitMix64 per 8-byte
/// block) that any side can produce at any offset, so the source stores
/// nothing and the probe checks a download without keeping it. The bytes
/// look random, so no layer on the path can compress them, like a JPEG.
#[derive(Debug, Clone, Copy)]
pub struct PhotoBytes {
    seed: u64,
}

impl PhotoBytes {
    /// The photo of `seed`.
    pub fn new(seed: u64) -> Self {
        PhotoBytes { seed }
    }

    fn block(&self, index: u64) -> [u8; 8] {
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)).to_le_bytes()
    }

    /// Fills `buf` with the photo's bytes from `offset` on.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut pos = offset;
        let mut rest = buf;
        // Head: up to the next 8-byte boundary.
        let skew = (pos % 8) as usize;
        if skew != 0 {
            let block = self.block(pos / 8);
            let n = (8 - skew).min(rest.len());
            rest[..n].copy_from_slice(&block[skew..skew + n]);
            pos += n as u64;
            rest = &mut rest[n..];
        }
        let mut chunks = rest.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.block(pos / 8));
            pos += 8;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let n = tail.len();
            tail.copy_from_slice(&self.block(pos / 8)[..n]);
        }
    }

    /// CRC-32 of the first `size` bytes, computed in [`CHUNK`]s.
    pub fn crc32(&self, size: u64) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; CHUNK.min(size as usize)];
        let mut offset = 0u64;
        while offset < size {
            let n = ((size - offset) as usize).min(buf.len());
            self.fill(offset, &mut buf[..n]);
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        hasher.finalize()
    }
}

/// Checks received bytes against the photo they should be, chunk by
/// chunk, with one buffer of at most [`CHUNK`] bytes.
#[derive(Debug)]
pub struct PhotoCheck {
    photo: PhotoBytes,
    offset: u64,
    expected: Vec<u8>,
    mismatch: Option<u64>,
}

impl PhotoCheck {
    /// A check of the photo of `seed` from its first byte.
    pub fn new(seed: u64) -> Self {
        PhotoCheck {
            photo: PhotoBytes::new(seed),
            offset: 0,
            expected: Vec::new(),
            mismatch: None,
        }
    }

    /// Compares the next received bytes.
    pub fn update(&mut self, received: &[u8]) {
        for part in received.chunks(CHUNK) {
            if self.mismatch.is_none() {
                self.expected.resize(part.len(), 0);
                self.photo.fill(self.offset, &mut self.expected);
                if let Some(i) = part.iter().zip(&self.expected).position(|(a, b)| a != b) {
                    self.mismatch = Some(self.offset + i as u64);
                }
            }
            self.offset += part.len() as u64;
        }
    }

    /// Bytes compared so far.
    pub fn received(&self) -> u64 {
        self.offset
    }

    /// Offset of the first byte that differed, if any.
    pub fn first_mismatch(&self) -> Option<u64> {
        self.mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_layout_is_fixed() {
        let up = PhotoRequest::Upload {
            size: 0x0102,
            crc32: 0xdead_beef,
        };
        assert_eq!(
            up.encode(),
            [0x56, 1, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef],
            "header bytes changed: this breaks deployed responders"
        );
        assert_eq!(PhotoRequest::decode(&up.encode()).unwrap(), up);
        let down = PhotoRequest::Download {
            size: 5_000_000,
            seed: u64::MAX,
        };
        assert_eq!(PhotoRequest::decode(&down.encode()).unwrap(), down);
    }

    #[test]
    fn echo_and_photo_kinds_do_not_collide() {
        let echo = crate::echo::EchoRequest {
            response_len: 1,
            padding_len: 0,
        }
        .encode();
        assert!(!is_photo_kind(echo[2]));
        assert!(matches!(
            PhotoRequest::decode(&[0x56, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(PhotoError::Unknown { what: "kind", .. })
        ));
    }

    #[test]
    fn replies_round_trip_and_reject_garbage() {
        let r = PhotoReply {
            status: PhotoStatus::Integrity,
            bytes: 3_000_000,
            crc32: 7,
        };
        assert_eq!(PhotoReply::decode(&r.encode()).unwrap(), r);
        assert!(matches!(
            PhotoReply::decode(&r.encode()[..14]),
            Err(PhotoError::Truncated { .. })
        ));
        assert!(matches!(
            PhotoReply::decode(b"HTTP/1.1 200 OK\r\n"),
            Err(PhotoError::NotPhoto { .. })
        ));
        let mut bad = r.encode();
        bad[2] = 200;
        assert!(matches!(
            PhotoReply::decode(&bad),
            Err(PhotoError::Unknown { what: "status", .. })
        ));
    }

    #[test]
    fn photo_bytes_differ_by_seed_and_look_random() {
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        PhotoBytes::new(1).fill(0, &mut a);
        PhotoBytes::new(2).fill(0, &mut b);
        assert_ne!(a, b);
        // Incompressible: every byte value appears, none far too often.
        let mut counts = [0u32; 256];
        for &x in &a {
            counts[x as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c < 50), "{counts:?}");
    }

    #[test]
    fn check_catches_a_flipped_byte_and_counts_bytes() {
        let photo = PhotoBytes::new(42);
        let mut bytes = vec![0u8; 200_000];
        photo.fill(0, &mut bytes);
        let mut ok = PhotoCheck::new(42);
        for part in bytes.chunks(7777) {
            ok.update(part);
        }
        assert_eq!(ok.received(), 200_000);
        assert_eq!(ok.first_mismatch(), None);
        bytes[150_001] ^= 0x10;
        let mut bad = PhotoCheck::new(42);
        bad.update(&bytes);
        assert_eq!(bad.first_mismatch(), Some(150_001));
    }

    #[test]
    fn crc_matches_a_one_shot_crc() {
        let photo = PhotoBytes::new(9);
        let mut bytes = vec![0u8; 150_003];
        photo.fill(0, &mut bytes);
        assert_eq!(photo.crc32(150_003), crc32fast::hash(&bytes));
    }

    proptest! {
        #[test]
        fn fill_at_any_offset_matches_the_whole(seed in any::<u64>(), start in 0usize..100, len in 0usize..100) {
            let photo = PhotoBytes::new(seed);
            let mut whole = vec![0u8; 200];
            photo.fill(0, &mut whole);
            let mut part = vec![0u8; len];
            photo.fill(start as u64, &mut part);
            prop_assert_eq!(&part[..], &whole[start..start + len]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = PhotoRequest::decode(&bytes);
            let _ = PhotoReply::decode(&bytes);
        }
    }
}
