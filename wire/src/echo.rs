//! The QUIC echo protocol (ALPN `vantage/1`): one request and one response
//! per bidirectional stream.
//!
//! Request (10 bytes, then `padding_len` bytes the responder reads and
//! discards, then the stream's FIN):
//!
//! ```text
//! 0x56 'V' | version=1 | kind=1 (echo) | response_len u32 BE | padding_len u24 BE
//! ```
//!
//! Response (15 bytes, then `body_len` bytes, then FIN):
//!
//! ```text
//! 0x56 'V' | version=1 | status u8 | server_time_ns u64 BE | body_len u32 BE
//! ```
//!
//! `server_time_ns` is the time between the responder reading the request's
//! last byte and writing the response header, so the probe can show the
//! responder's own time apart from the network's.

/// The QUIC ALPN protocol id of the echo service.
pub const ALPN: &[u8] = b"vantage/1";
/// Size of an encoded request header.
pub const REQUEST_LEN: usize = 10;
/// Size of an encoded response header.
pub const RESPONSE_HEADER_LEN: usize = 15;
const MAGIC: u8 = 0x56;
const VERSION: u8 = 1;
const KIND_ECHO: u8 = 1;

/// An echo request: how many bytes to send back, and how many padding bytes
/// follow so request sizes can be varied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoRequest {
    /// Response body bytes wanted.
    pub response_len: u32,
    /// Padding bytes that follow the header.
    pub padding_len: u32,
}

/// How the responder answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoStatus {
    /// Body follows.
    Ok,
    /// The request asked for more than the responder's limit.
    TooLarge,
    /// The request was malformed.
    BadRequest,
    /// The responder is at its concurrency limit, or the source over its
    /// rate of heavy requests.
    Busy,
    /// A heavy request without a valid access token, on a responder that
    /// requires one (see [`crate::access`]).
    Forbidden,
}

impl EchoStatus {
    fn to_byte(self) -> u8 {
        match self {
            EchoStatus::Ok => 0,
            EchoStatus::TooLarge => 1,
            EchoStatus::BadRequest => 2,
            EchoStatus::Busy => 3,
            EchoStatus::Forbidden => 4,
        }
    }
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => EchoStatus::Ok,
            1 => EchoStatus::TooLarge,
            2 => EchoStatus::BadRequest,
            3 => EchoStatus::Busy,
            4 => EchoStatus::Forbidden,
            _ => return None,
        })
    }
}

/// An echo response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoResponse {
    /// Outcome.
    pub status: EchoStatus,
    /// Responder's processing time, ns.
    pub server_time_ns: u64,
    /// Body bytes that follow.
    pub body_len: u32,
}

/// Why an echo message does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EchoError {
    /// Fewer bytes than a header.
    #[error("echo message truncated: {got} of {need} header bytes")]
    Truncated {
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Wrong magic or version: not a `vantage/1` peer.
    #[error("not a vantage/1 echo message (magic {magic:#04x}, version {version})")]
    NotEcho {
        /// First byte seen.
        magic: u8,
        /// Second byte seen.
        version: u8,
    },
    /// A request kind or status this version does not know.
    #[error("unknown echo {what} {value}")]
    Unknown {
        /// "kind" or "status".
        what: &'static str,
        /// The value.
        value: u8,
    },
}

fn check_head(bytes: &[u8], need: usize) -> Result<(), EchoError> {
    if bytes.len() < need {
        return Err(EchoError::Truncated {
            got: bytes.len(),
            need,
        });
    }
    if bytes[0] != MAGIC || bytes[1] != VERSION {
        return Err(EchoError::NotEcho {
            magic: bytes[0],
            version: bytes[1],
        });
    }
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl EchoRequest {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = KIND_ECHO;
        out[3..7].copy_from_slice(&self.response_len.to_be_bytes());
        // padding_len is 24 bits on the wire: see `MAX_PADDING`.
        out[7..10].copy_from_slice(&self.padding_len.min(MAX_PADDING).to_be_bytes()[1..]);
        out
    }

    /// Decodes a header from the first [`REQUEST_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EchoError> {
        check_head(bytes, REQUEST_LEN)?;
        if bytes[2] != KIND_ECHO {
            return Err(EchoError::Unknown {
                what: "kind",
                value: bytes[2],
            });
        }
        Ok(EchoRequest {
            response_len: be32(&bytes[3..7]),
            padding_len: u32::from_be_bytes([0, bytes[7], bytes[8], bytes[9]]),
        })
    }
}

/// Largest padding a request header can declare (24 bits).
pub const MAX_PADDING: u32 = (1 << 24) - 1;

impl EchoResponse {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; RESPONSE_HEADER_LEN] {
        let mut out = [0u8; RESPONSE_HEADER_LEN];
        out[0] = MAGIC;
        out[1] = VERSION;
        out[2] = self.status.to_byte();
        out[3..11].copy_from_slice(&self.server_time_ns.to_be_bytes());
        out[11..15].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }

    /// Decodes a header from the first [`RESPONSE_HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, EchoError> {
        check_head(bytes, RESPONSE_HEADER_LEN)?;
        let status = EchoStatus::from_byte(bytes[2]).ok_or(EchoError::Unknown {
            what: "status",
            value: bytes[2],
        })?;
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&bytes[3..11]);
        Ok(EchoResponse {
            status,
            server_time_ns: u64::from_be_bytes(ns),
            body_len: be32(&bytes[11..15]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_layout_is_fixed() {
        let r = EchoRequest {
            response_len: 0x0102_0304,
            padding_len: 0x05_0607,
        };
        assert_eq!(
            r.encode(),
            [0x56, 1, 1, 1, 2, 3, 4, 5, 6, 7],
            "header bytes changed: this breaks deployed responders"
        );
        assert_eq!(EchoRequest::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn response_round_trips_and_rejects_garbage() {
        let r = EchoResponse {
            status: EchoStatus::Busy,
            server_time_ns: 123_456,
            body_len: 64,
        };
        assert_eq!(EchoResponse::decode(&r.encode()).unwrap(), r);
        assert!(matches!(
            EchoResponse::decode(b"GET / HTTP/1.1\r\n"),
            Err(EchoError::NotEcho { .. })
        ));
        assert!(matches!(
            EchoResponse::decode(&r.encode()[..5]),
            Err(EchoError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn requests_round_trip(resp in any::<u32>(), pad in 0..=MAX_PADDING) {
            let r = EchoRequest { response_len: resp, padding_len: pad };
            prop_assert_eq!(EchoRequest::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = EchoRequest::decode(&bytes);
            let _ = EchoResponse::decode(&bytes);
        }
    }
}
