//! The upload protocol between a probe and a collector.
//!
//! Over QUIC (ALPN `vantage-collect/1`), one bidirectional stream per batch.
//! The probe sends, then finishes the stream:
//!
//! ```text
//! "VNTU" | version=1 | token_len u8 | token (UTF-8) | batch (Batch::encode bytes)
//! ```
//!
//! The collector answers with an [`Ack`] and finishes:
//!
//! ```text
//! status u8 | reason_len u16 BE | reason (UTF-8)
//! ```
//!
//! Over HTTPS (the fallback where UDP is blocked): `POST /v1/batches` with
//! `Authorization: Bearer TOKEN` and the batch bytes as the body; the HTTP
//! status carries the same meaning ([`AckStatus::http_status`]) and the
//! body the reason.
//!
//! A probe deletes a batch from its spool only on `Stored` or `Duplicate`:
//! both mean the collector holds it durably.

/// The QUIC ALPN protocol id of batch upload.
pub const ALPN: &[u8] = b"vantage-collect/1";
/// The HTTPS path batches are posted to.
pub const HTTP_PATH: &str = "/v1/batches";
const MAGIC: &[u8; 4] = b"VNTU";
const VERSION: u8 = 1;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 128;

/// What the collector did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Stored durably now.
    Stored,
    /// Already stored earlier: acknowledged, not stored twice.
    Duplicate,
    /// No token, or an unknown or revoked one.
    Unauthorized,
    /// The token belongs to another probe id than the batch's.
    Forbidden,
    /// The batch is malformed or inconsistent; sending it again will not help.
    Invalid,
    /// Larger than the collector accepts.
    TooLarge,
    /// The collector could not store it now (disk, overload): retry later.
    Unavailable,
}

impl AckStatus {
    /// True when the probe may delete the batch from its spool.
    pub fn is_ack(self) -> bool {
        matches!(self, AckStatus::Stored | AckStatus::Duplicate)
    }

    /// True when sending the same batch again later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, AckStatus::Unavailable | AckStatus::Unauthorized)
    }

    fn to_byte(self) -> u8 {
        match self {
            AckStatus::Stored => 0,
            AckStatus::Duplicate => 1,
            AckStatus::Unauthorized => 2,
            AckStatus::Forbidden => 3,
            AckStatus::Invalid => 4,
            AckStatus::TooLarge => 5,
            AckStatus::Unavailable => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => AckStatus::Stored,
            1 => AckStatus::Duplicate,
            2 => AckStatus::Unauthorized,
            3 => AckStatus::Forbidden,
            4 => AckStatus::Invalid,
            5 => AckStatus::TooLarge,
            6 => AckStatus::Unavailable,
            _ => return None,
        })
    }

    /// The HTTP status of the HTTPS fallback.
    pub fn http_status(self) -> u16 {
        match self {
            AckStatus::Stored => 201,
            AckStatus::Duplicate => 200,
            AckStatus::Unauthorized => 401,
            AckStatus::Forbidden => 403,
            AckStatus::Invalid => 422,
            AckStatus::TooLarge => 413,
            AckStatus::Unavailable => 503,
        }
    }

    /// Reads an HTTP status of the HTTPS fallback.
    pub fn from_http_status(code: u16) -> Option<Self> {
        Some(match code {
            201 => AckStatus::Stored,
            200 => AckStatus::Duplicate,
            401 => AckStatus::Unauthorized,
            403 => AckStatus::Forbidden,
            400 | 422 => AckStatus::Invalid,
            413 => AckStatus::TooLarge,
            503 => AckStatus::Unavailable,
            _ => return None,
        })
    }

    /// Short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            AckStatus::Stored => "stored",
            AckStatus::Duplicate => "duplicate",
            AckStatus::Unauthorized => "unauthorized",
            AckStatus::Forbidden => "forbidden",
            AckStatus::Invalid => "invalid",
            AckStatus::TooLarge => "too_large",
            AckStatus::Unavailable => "unavailable",
        }
    }
}

/// The collector's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// What happened.
    pub status: AckStatus,
    /// Why, in words for the probe's log (empty when stored).
    pub reason: String,
}

/// Why upload bytes do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Too short.
    #[error("upload message truncated")]
    Truncated,
    /// Not an upload message of this version.
    #[error("not a vantage-collect/1 upload message")]
    BadMagic,
    /// The token is not UTF-8.
    #[error("token is not valid UTF-8")]
    BadToken,
    /// The token is longer than any token can be.
    #[error("token of {0} bytes is longer than {max}", max = MAX_TOKEN_LEN)]
    TokenTooLong(usize),
    /// An unknown acknowledgement status.
    #[error("unknown acknowledgement status {0}")]
    BadStatus(u8),
}

/// Encodes an upload request: header, token, batch bytes.
pub fn encode_request(token: &str, batch: &[u8]) -> Vec<u8> {
    let token = &token.as_bytes()[..token.len().min(MAX_TOKEN_LEN)];
    let mut out = Vec::with_capacity(6 + token.len() + batch.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(token.len() as u8);
    out.extend_from_slice(token);
    out.extend_from_slice(batch);
    out
}

/// Bytes of an upload request before its token.
pub const HEAD_LEN: usize = 6;

/// The length of the token that follows an upload request's first
/// [`HEAD_LEN`] bytes: what a collector reads first, so that it can check
/// the token before it reads the batch.
pub fn token_len(head: &[u8]) -> Result<usize, UploadError> {
    if head.len() < HEAD_LEN {
        return Err(UploadError::Truncated);
    }
    if &head[..4] != MAGIC || head[4] != VERSION {
        return Err(UploadError::BadMagic);
    }
    let n = head[5] as usize;
    if n > MAX_TOKEN_LEN {
        return Err(UploadError::TokenTooLong(n));
    }
    Ok(n)
}

/// Splits an upload request into its token and batch bytes.
pub fn decode_request(bytes: &[u8]) -> Result<(&str, &[u8]), UploadError> {
    let n = token_len(bytes)?;
    let token = bytes
        .get(HEAD_LEN..HEAD_LEN + n)
        .ok_or(UploadError::Truncated)?;
    let token = std::str::from_utf8(token).map_err(|_| UploadError::BadToken)?;
    Ok((token, &bytes[HEAD_LEN + n..]))
}

impl Ack {
    /// Encodes the answer.
    pub fn encode(&self) -> Vec<u8> {
        let reason = &self.reason.as_bytes()[..self.reason.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(3 + reason.len());
        out.push(self.status.to_byte());
        out.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        out.extend_from_slice(reason);
        out
    }

    /// Decodes an answer.
    pub fn decode(bytes: &[u8]) -> Result<Self, UploadError> {
        if bytes.len() < 3 {
            return Err(UploadError::Truncated);
        }
        let status = AckStatus::from_byte(bytes[0]).ok_or(UploadError::BadStatus(bytes[0]))?;
        let n = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
        let reason = bytes.get(3..3 + n).ok_or(UploadError::Truncated)?;
        Ok(Ack {
            status,
            reason: String::from_utf8_lossy(reason).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_round_trips() {
        let bytes = encode_request("vt_abc", b"BATCH");
        assert_eq!(&bytes[..6], b"VNTU\x01\x06");
        assert_eq!(decode_request(&bytes).unwrap(), ("vt_abc", &b"BATCH"[..]));
        assert_eq!(decode_request(&bytes[..8]), Err(UploadError::Truncated));
        assert_eq!(
            decode_request(b"GET / HTTP/1.1"),
            Err(UploadError::BadMagic)
        );
        assert_eq!(token_len(&bytes[..HEAD_LEN]), Ok(6));
        assert_eq!(
            token_len(&bytes[..HEAD_LEN - 1]),
            Err(UploadError::Truncated)
        );
        assert_eq!(token_len(b"VNTC\x01\x06"), Err(UploadError::BadMagic));
    }

    /// Found by the `upload_messages` fuzz target: a head may announce a
    /// token of up to 255 bytes, but the encoder writes at most
    /// `MAX_TOKEN_LEN`, so a longer one is no token anyone was given.
    #[test]
    fn a_token_longer_than_any_token_is_refused_from_the_head() {
        let mut bytes = b"VNTU\x01\x90".to_vec();
        bytes.extend_from_slice(&[b'a'; 0x90]);
        bytes.extend_from_slice(b"BATCH");
        assert_eq!(
            token_len(&bytes[..HEAD_LEN]),
            Err(UploadError::TokenTooLong(0x90))
        );
        assert_eq!(decode_request(&bytes), Err(UploadError::TokenTooLong(0x90)));
        let longest = "t".repeat(MAX_TOKEN_LEN);
        let ok = encode_request(&longest, b"B");
        assert_eq!(decode_request(&ok), Ok((longest.as_str(), &b"B"[..])));
    }

    #[test]
    fn acks_round_trip_and_map_to_http() {
        for status in [
            AckStatus::Stored,
            AckStatus::Duplicate,
            AckStatus::Unauthorized,
            AckStatus::Forbidden,
            AckStatus::Invalid,
            AckStatus::TooLarge,
            AckStatus::Unavailable,
        ] {
            let ack = Ack {
                status,
                reason: "why".into(),
            };
            assert_eq!(Ack::decode(&ack.encode()).unwrap(), ack);
            assert_eq!(
                AckStatus::from_http_status(status.http_status()),
                Some(status)
            );
        }
        assert!(AckStatus::Duplicate.is_ack() && !AckStatus::Invalid.is_ack());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_request(&bytes);
            let _ = Ack::decode(&bytes);
        }
    }
}
