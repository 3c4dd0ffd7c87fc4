//! How a probe shows its access token on a heavy request, for responders
//! that require one (`vantage serve --require-token`).
//!
//! Heavy requests are photo uploads and downloads, echoes of more than
//! [`HEAVY_ECHO_BYTES`], and the responsiveness test's large transfers.
//!
//! - Over HTTPS and HTTP/3: the header `authorization: Bearer TOKEN`.
//! - Over QUIC (ALPN `vantage/1`): the stream begins with a preamble and
//!   the request's own header follows it unchanged:
//!
//!   ```text
//!   0x56 'V' | version=1 | kind=4 (access) | token_len u16 BE | token (ASCII)
//!   ```
//!
//! The token itself (its fields and signature) is checked by
//! `vantage_tls::access`; this module only frames it.

/// An echo response larger than this is a heavy request: the round-trip
/// echoes probes send every second stay far below it.
pub const HEAVY_ECHO_BYTES: u64 = 64 * 1024;
/// The request kind byte of the access preamble.
pub const KIND_ACCESS: u8 = 4;
/// Bytes of the preamble before the token.
pub const PREAMBLE_HEAD_LEN: usize = 5;
/// The longest token a preamble may carry.
pub const MAX_TOKEN_LEN: usize = 512;

const MAGIC: u8 = 0x56;
const VERSION: u8 = 1;

/// Why a preamble does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// Fewer bytes than the preamble's head.
    #[error("access preamble truncated: {got} of {PREAMBLE_HEAD_LEN} bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
    },
    /// Not an access preamble of this version.
    #[error("not a vantage/1 access preamble")]
    NotAccess,
    /// The declared token is longer than any token.
    #[error("access token of {0} bytes declared, at most {MAX_TOKEN_LEN}")]
    TooLong(usize),
    /// The token bytes are not ASCII text.
    #[error("access token is not ASCII text")]
    NotText,
}

/// The preamble carrying `token`, or `None` if the token cannot be carried
/// (longer than [`MAX_TOKEN_LEN`] or not ASCII).
pub fn encode_preamble(token: &str) -> Option<Vec<u8>> {
    if token.len() > MAX_TOKEN_LEN || !token.is_ascii() {
        return None;
    }
    let mut out = Vec::with_capacity(PREAMBLE_HEAD_LEN + token.len());
    out.extend_from_slice(&[MAGIC, VERSION, KIND_ACCESS]);
    out.extend_from_slice(&(token.len() as u16).to_be_bytes());
    out.extend_from_slice(token.as_bytes());
    Some(out)
}

/// The token length a preamble's first [`PREAMBLE_HEAD_LEN`] bytes declare,
/// checked against [`MAX_TOKEN_LEN`] before the reader allocates for it.
pub fn decode_preamble_head(bytes: &[u8]) -> Result<usize, AccessError> {
    if bytes.len() < PREAMBLE_HEAD_LEN {
        return Err(AccessError::Truncated { got: bytes.len() });
    }
    if bytes[0] != MAGIC || bytes[1] != VERSION || bytes[2] != KIND_ACCESS {
        return Err(AccessError::NotAccess);
    }
    let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if len > MAX_TOKEN_LEN {
        return Err(AccessError::TooLong(len));
    }
    Ok(len)
}

/// The token from the bytes after the preamble's head.
pub fn decode_token(bytes: &[u8]) -> Result<&str, AccessError> {
    if !bytes.is_ascii() {
        return Err(AccessError::NotText);
    }
    std::str::from_utf8(bytes).map_err(|_| AccessError::NotText)
}

/// The token of an `authorization: Bearer TOKEN` header value, if it is one.
pub fn bearer_token(header: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preamble_reads_back() {
        let token = "vt1.in-1.1000.abcd";
        let bytes = encode_preamble(token).unwrap();
        let len = decode_preamble_head(&bytes).unwrap();
        assert_eq!(len, token.len());
        assert_eq!(decode_token(&bytes[PREAMBLE_HEAD_LEN..]).unwrap(), token);
        // Its kind is neither an echo nor a photo.
        assert!(!crate::photo::is_photo_kind(bytes[2]));
        assert!(crate::echo::EchoRequest::decode(&bytes).is_err());
    }

    #[test]
    fn bad_preambles_are_refused_before_any_allocation() {
        assert_eq!(
            decode_preamble_head(&[0x56, 1]),
            Err(AccessError::Truncated { got: 2 })
        );
        assert_eq!(
            decode_preamble_head(&[0x56, 1, 1, 0, 1]),
            Err(AccessError::NotAccess)
        );
        assert_eq!(
            decode_preamble_head(&[0x56, 1, 4, 0xff, 0xff]),
            Err(AccessError::TooLong(65_535))
        );
        assert_eq!(decode_token(&[0xc3, 0xa9]), Err(AccessError::NotText));
        assert!(encode_preamble(&"t".repeat(MAX_TOKEN_LEN + 1)).is_none());
        assert!(encode_preamble("é").is_none());
    }

    #[test]
    fn the_forbidden_answers_read_back() {
        use crate::echo::{EchoResponse, EchoStatus};
        use crate::photo::{PhotoReply, PhotoStatus};
        let echo = EchoResponse {
            status: EchoStatus::Forbidden,
            server_time_ns: 0,
            body_len: 0,
        };
        assert_eq!(echo.encode()[2], 4);
        assert_eq!(EchoResponse::decode(&echo.encode()).unwrap(), echo);
        let photo = PhotoReply {
            status: PhotoStatus::Forbidden,
            bytes: 0,
            crc32: 0,
        };
        assert_eq!(photo.encode()[2], 6);
        assert_eq!(PhotoReply::decode(&photo.encode()).unwrap(), photo);
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer_token(b"Bearer vt1.a.1.ff"), Some("vt1.a.1.ff"));
        assert_eq!(bearer_token(b"bearer  tok "), Some("tok"));
        assert_eq!(bearer_token(b"Basic dXNlcg=="), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(&[0xff, 0x20, 0x41]), None);
    }
}
