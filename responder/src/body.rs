//! HTTP response bodies: small fixed ones, and generated ones (photos,
//! the responsiveness test's large download) produced a chunk at a time,
//! so no response is held in memory whole.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use vantage_wire::photo::{self, PhotoBytes};

/// A response body.
pub(crate) enum ResponseBody {
    /// All of it at once.
    Full(Option<Bytes>),
    /// A generated photo: bytes `offset..end` of `source`, announced as
    /// `size` bytes (less than `size` only under an injected cut), with
    /// the byte at `flip` inverted, if any.
    Photo {
        source: PhotoBytes,
        offset: u64,
        end: u64,
        size: u64,
        flip: Option<u64>,
        /// Held until the body is dropped: counts against the photo limit.
        _slot: tokio::sync::OwnedSemaphorePermit,
    },
    /// `left` zero bytes, sliced from the static buffer.
    Zeros { left: u64 },
}

impl ResponseBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        ResponseBody::Full(Some(bytes.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = match this {
            ResponseBody::Full(b) => b.take(),
            ResponseBody::Photo {
                source,
                offset,
                end,
                flip,
                ..
            } => {
                if *offset >= *end {
                    None
                } else {
                    let n = ((*end - *offset) as usize).min(photo::CHUNK);
                    let mut buf = vec![0u8; n];
                    source.fill(*offset, &mut buf);
                    if let Some(at) = *flip {
                        if (*offset..*offset + n as u64).contains(&at) {
                            buf[(at - *offset) as usize] ^= 0x01;
                        }
                    }
                    *offset += n as u64;
                    Some(Bytes::from(buf))
                }
            }
            ResponseBody::Zeros { left } => {
                if *left == 0 {
                    None
                } else {
                    let n = (*left).min(crate::ZEROS.len() as u64) as usize;
                    *left -= n as u64;
                    Some(Bytes::from_static(&crate::ZEROS[..n]))
                }
            }
        };
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Photo { offset, end, .. } => offset >= end,
            ResponseBody::Zeros { left } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            // The announced size, so a cut-short photo is a short body
            // that the client sees as broken, not as a smaller photo.
            ResponseBody::Photo { size, offset, .. } => SizeHint::with_exact(size - offset),
            ResponseBody::Zeros { left } => SizeHint::with_exact(*left),
        }
    }
}
