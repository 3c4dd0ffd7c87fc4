//! The photo sink and source: what probes upload photos to and download
//! them from, over QUIC (one stream per photo) and HTTPS (one request per
//! photo). Memory per photo is one [`photo::CHUNK`] buffer; concurrent
//! photos are capped by [`crate::Limits::max_concurrent_photos`].

use crate::stats::Stats;
use crate::Shared;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use vantage_wire::photo::{self, PhotoBytes, PhotoReply, PhotoRequest, PhotoStatus};

/// A fault the responder injects into photos, so tests can check that a
/// probe never counts a damaged photo as throughput.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoFault {
    /// Downloads: one byte in the middle is flipped. Uploads: the sink
    /// checksums as if one received byte had been flipped in transit.
    FlipByte,
    /// Downloads: the source stops after half the photo and ends the
    /// stream. Uploads: the sink stops reading after half and resets.
    CutShort,
}

/// The fault in force, if any; lock-free so the data path pays one load.
#[derive(Debug, Default)]
pub(crate) struct FaultSwitch(AtomicU8);

impl FaultSwitch {
    pub(crate) fn set(&self, fault: Option<PhotoFault>) {
        let v = match fault {
            None => 0,
            Some(PhotoFault::FlipByte) => 1,
            Some(PhotoFault::CutShort) => 2,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<PhotoFault> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(PhotoFault::FlipByte),
            2 => Some(PhotoFault::CutShort),
            _ => None,
        }
    }
}

/// How long a photo stream may sit with no progress before it is dropped:
/// a stalled client must not hold a photo slot for ever.
pub(crate) const PHOTO_IDLE: Duration = Duration::from_secs(30);

/// Serves one photo stream on QUIC whose first three bytes are `head3`,
/// after the access `token` if the stream began with one.
pub(crate) async fn serve_quic(
    head3: [u8; 3],
    token: Option<&str>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    remote: std::net::IpAddr,
    shared: &Shared,
) -> Result<(), String> {
    let mut head = [0u8; photo::REQUEST_LEN];
    head[..3].copy_from_slice(&head3);
    tokio::time::timeout(
        shared.limits.handshake_timeout,
        recv.read_exact(&mut head[3..]),
    )
    .await
    .map_err(|_| "photo header timed out".to_string())?
    .map_err(|e| format!("reading photo header: {e}"))?;
    let request = match PhotoRequest::decode(&head) {
        Ok(r) => r,
        Err(e) => {
            reply(&mut send, PhotoStatus::BadRequest, 0, 0).await;
            return Err(e.to_string());
        }
    };
    let size = match request {
        PhotoRequest::Upload { size, .. } | PhotoRequest::Download { size, .. } => size,
    };
    if size > shared.limits.max_photo_bytes {
        reply(&mut send, PhotoStatus::TooLarge, 0, 0).await;
        let _ = recv.stop(0u32.into());
        return Err(format!("photo of {size} bytes above the limit"));
    }
    if let Err(refusal) = shared.admit_heavy(remote, token) {
        let status = match refusal {
            crate::HeavyRefusal::OverRate => PhotoStatus::Busy,
            crate::HeavyRefusal::Access(_) => PhotoStatus::Forbidden,
        };
        reply(&mut send, status, 0, 0).await;
        let _ = recv.stop(0u32.into());
        return Ok(());
    }
    let Ok(_slot) = shared.photo_slots.clone().try_acquire_owned() else {
        Stats::bump(&shared.stats.photos_busy);
        reply(&mut send, PhotoStatus::Busy, 0, 0).await;
        let _ = recv.stop(0u32.into());
        return Ok(());
    };
    match request {
        PhotoRequest::Upload { size, crc32 } => {
            let mut check = SinkCheck::new(size, crc32, shared.photo_fault.get());
            let mut buf = vec![0u8; photo::CHUNK];
            loop {
                let read = tokio::time::timeout(PHOTO_IDLE, recv.read(&mut buf))
                    .await
                    .map_err(|_| "photo upload stalled".to_string())?
                    .map_err(|e| format!("reading photo: {e}"))?;
                let Some(n) = read else { break };
                if !check.take(&buf[..n]) {
                    let _ = recv.stop(1u32.into());
                    let _ = send.reset(1u32.into());
                    return Err("photo cut short (injected fault)".into());
                }
                if check.received() > size {
                    break;
                }
            }
            let (status, got, computed) = check.finish();
            shared.stall.wait().await;
            if status == PhotoStatus::Ok {
                Stats::bump(&shared.stats.photos_received);
            } else {
                Stats::bump(&shared.stats.photos_damaged);
                let _ = recv.stop(0u32.into());
            }
            reply(&mut send, status, got, computed).await;
            Ok(())
        }
        PhotoRequest::Download { size, seed } => {
            let fault = shared.photo_fault.get();
            shared.stall.wait().await;
            let header = PhotoReply {
                status: PhotoStatus::Ok,
                bytes: size,
                crc32: 0,
            };
            send.write_all(&header.encode())
                .await
                .map_err(|e| format!("writing photo header: {e}"))?;
            let source = PhotoBytes::new(seed);
            let end = match fault {
                Some(PhotoFault::CutShort) => size / 2,
                _ => size,
            };
            let mut buf = vec![0u8; photo::CHUNK.min(end.max(1) as usize)];
            let mut offset = 0u64;
            while offset < end {
                let n = ((end - offset) as usize).min(buf.len());
                let part = &mut buf[..n];
                source.fill(offset, part);
                if fault == Some(PhotoFault::FlipByte)
                    && (offset..offset + n as u64).contains(&(size / 2))
                {
                    part[(size / 2 - offset) as usize] ^= 0x01;
                }
                tokio::time::timeout(PHOTO_IDLE, send.write_all(part))
                    .await
                    .map_err(|_| "photo download stalled".to_string())?
                    .map_err(|e| format!("writing photo: {e}"))?;
                offset += n as u64;
            }
            let _ = send.finish();
            Stats::bump(&shared.stats.photos_sent);
            Ok(())
        }
    }
}

async fn reply(send: &mut quinn::SendStream, status: PhotoStatus, bytes: u64, crc32: u32) {
    let r = PhotoReply {
        status,
        bytes,
        crc32,
    };
    let _ = send.write_all(&r.encode()).await;
    let _ = send.finish();
}

/// One upload as the sink sees it: bytes counted and checksummed as they
/// arrive (with the injected fault, if any, applied on the way), then
/// judged. The QUIC and HTTPS sinks share it, so both judge a photo alike.
pub(crate) struct SinkCheck {
    size: u64,
    crc32: u32,
    fault: Option<PhotoFault>,
    hasher: crc32fast::Hasher,
    got: u64,
    flipped: bool,
}

impl SinkCheck {
    pub(crate) fn new(size: u64, crc32: u32, fault: Option<PhotoFault>) -> Self {
        SinkCheck {
            size,
            crc32,
            fault,
            hasher: crc32fast::Hasher::new(),
            got: 0,
            flipped: false,
        }
    }

    /// Takes the next bytes; false when an injected cut ends the upload
    /// here (at half the photo).
    pub(crate) fn take(&mut self, part: &[u8]) -> bool {
        let half = self.size / 2;
        let end = self.got + part.len() as u64;
        if self.fault == Some(PhotoFault::CutShort) && end > half {
            return false;
        }
        if self.fault == Some(PhotoFault::FlipByte)
            && !self.flipped
            && end > half
            && !part.is_empty()
        {
            // As if the byte at half the photo had been flipped in transit.
            let at = (half.saturating_sub(self.got) as usize).min(part.len() - 1);
            self.hasher.update(&part[..at]);
            self.hasher.update(&[part[at] ^ 0x01]);
            self.hasher.update(&part[at + 1..]);
            self.flipped = true;
        } else {
            self.hasher.update(part);
        }
        self.got = end;
        true
    }

    /// Bytes taken so far.
    pub(crate) fn received(&self) -> u64 {
        self.got
    }

    /// The verdict: status, bytes received, and the CRC-32 computed.
    pub(crate) fn finish(self) -> (PhotoStatus, u64, u32) {
        let computed = self.hasher.finalize();
        let status = if self.got != self.size {
            PhotoStatus::Truncated
        } else if computed != self.crc32 {
            PhotoStatus::Integrity
        } else {
            PhotoStatus::Ok
        };
        (status, self.got, computed)
    }
}
