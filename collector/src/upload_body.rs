//! Reading an upload's body under bounds. The token is checked before the
//! first body byte is read (by the listeners); what is read after that is
//! bounded three ways: by size (one batch), by time (a client that drips
//! its bytes loses its slot), and by the memory of every upload in flight
//! together (a flood of large bodies waits, then is told to come back).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use vantage_wire::upload::{Ack, AckStatus};

/// The bounds on reading uploads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UploadLimits {
    /// How long one upload's body may take to arrive, from its head.
    pub body_timeout: Duration,
    /// Most bytes of all uploads being read or stored at once.
    pub in_flight_bytes: usize,
    /// How long an upload waits for room among those bytes before it is
    /// refused as unavailable (the probe keeps it and sends it again).
    pub busy_wait: Duration,
    /// Uploads one token may make: beyond it they are refused as
    /// unavailable (`rate_limited`) before their body is read. `None` (the
    /// library's default, for the lab and benches): no limit; `vantage
    /// collect` sets one.
    pub per_token: Option<vantage_wire::rate::SourceRate>,
}

impl Default for UploadLimits {
    /// 60 s a body (a 16 MiB batch at ~2 Mbit/s), 64 MiB in flight, 5 s
    /// wait for room.
    fn default() -> Self {
        UploadLimits {
            body_timeout: Duration::from_secs(60),
            in_flight_bytes: 64 << 20,
            busy_wait: Duration::from_secs(5),
            per_token: None,
        }
    }
}

/// Why a body was not read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BodyError {
    /// Longer than one batch may be.
    #[error("more than {limit} bytes")]
    TooLarge {
        /// The most a batch may have.
        limit: usize,
    },
    /// Did not arrive within the body timeout.
    #[error("the upload's body did not arrive within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// No room among the bytes in flight within the wait.
    #[error("collector busy: {0} MiB of uploads in flight; not stored, send it again later")]
    Busy(usize),
    /// The connection or stream broke off.
    #[error("the upload broke off: {0}")]
    Broken(String),
}

impl BodyError {
    /// The answer to the client.
    pub(crate) fn ack(&self) -> Ack {
        let status = match self {
            BodyError::TooLarge { .. } => AckStatus::TooLarge,
            BodyError::TimedOut(_) | BodyError::Broken(_) => AckStatus::Invalid,
            BodyError::Busy(_) => AckStatus::Unavailable,
        };
        Ack {
            status,
            reason: self.to_string(),
        }
    }

    /// The reason `/metrics` counts it under.
    pub(crate) fn counted_as(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "too_large",
            BodyError::TimedOut(_) => "body_timeout",
            BodyError::Busy(_) => "busy",
            BodyError::Broken(_) => "broken_off",
        }
    }
}

/// The room all uploads in flight share.
#[derive(Debug)]
pub(crate) struct InFlight {
    room: Arc<Semaphore>,
    limits: UploadLimits,
}

impl InFlight {
    pub(crate) fn new(limits: UploadLimits) -> Self {
        let bytes = limits.in_flight_bytes.clamp(1, Semaphore::MAX_PERMITS);
        InFlight {
            room: Arc::new(Semaphore::new(bytes)),
            limits: UploadLimits {
                in_flight_bytes: bytes,
                ..limits
            },
        }
    }

    /// Starts reading one body of at most `limit` bytes; `expected` is its
    /// length if the client said it (room for all of it is taken at once,
    /// so two half-read bodies never wait on each other for the rest).
    pub(crate) async fn body(
        &self,
        limit: usize,
        expected: Option<usize>,
    ) -> Result<BodyReader, BodyError> {
        let mut reader = BodyReader {
            room: self.room.clone(),
            limits: self.limits,
            limit,
            deadline: Instant::now() + self.limits.body_timeout,
            bytes: Vec::new(),
            reserved: None,
        };
        if let Some(n) = expected {
            if n > limit {
                return Err(BodyError::TooLarge { limit });
            }
            reader.reserve(n).await?;
            reader.bytes.reserve_exact(n);
        }
        Ok(reader)
    }
}

/// One body being read: its bytes, and the room they hold until it drops.
#[derive(Debug)]
pub(crate) struct BodyReader {
    room: Arc<Semaphore>,
    limits: UploadLimits,
    limit: usize,
    deadline: Instant,
    bytes: Vec<u8>,
    reserved: Option<OwnedSemaphorePermit>,
}

impl BodyReader {
    /// When the whole body must have arrived.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The timeout error for this body.
    pub(crate) fn timed_out(&self) -> BodyError {
        BodyError::TimedOut(self.limits.body_timeout)
    }

    /// Adds a chunk, taking room for it first if not taken yet.
    pub(crate) async fn push(&mut self, chunk: &[u8]) -> Result<(), BodyError> {
        let len = self.bytes.len() + chunk.len();
        if len > self.limit {
            return Err(BodyError::TooLarge { limit: self.limit });
        }
        let held = self.reserved.as_ref().map_or(0, |p| p.num_permits());
        if len > held {
            self.reserve(len - held).await?;
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The body read, with the room it holds (keep it until it is stored).
    pub(crate) fn finish(self) -> (Vec<u8>, Option<OwnedSemaphorePermit>) {
        (self.bytes, self.reserved)
    }

    async fn reserve(&mut self, n: usize) -> Result<(), BodyError> {
        let busy = BodyError::Busy(self.limits.in_flight_bytes >> 20);
        let n = u32::try_from(n).map_err(|_| busy.clone())?;
        let wait = self
            .limits
            .busy_wait
            .min(self.deadline.saturating_duration_since(Instant::now()));
        let permit = match tokio::time::timeout(wait, self.room.clone().acquire_many_owned(n)).await
        {
            Ok(Ok(p)) => p,
            _ => return Err(busy),
        };
        match &mut self.reserved {
            Some(held) => held.merge(permit),
            None => self.reserved = Some(permit),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(in_flight_bytes: usize) -> UploadLimits {
        UploadLimits {
            body_timeout: Duration::from_secs(60),
            in_flight_bytes,
            busy_wait: Duration::from_millis(50),
            per_token: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bodies_share_the_room_and_give_it_back_when_dropped() {
        let in_flight = InFlight::new(limits(100));
        let mut a = in_flight.body(1000, None).await.unwrap();
        a.push(&[1; 60]).await.unwrap();
        let mut b = in_flight.body(1000, None).await.unwrap();
        b.push(&[2; 40]).await.unwrap();
        assert_eq!(b.push(&[3]).await, Err(BodyError::Busy(0)));
        assert!(matches!(
            in_flight.body(1000, Some(1)).await,
            Err(BodyError::Busy(_))
        ));
        let (bytes, room) = a.finish();
        assert_eq!(bytes, vec![1; 60]);
        drop(room);
        b.push(&[3; 60]).await.unwrap();
        assert_eq!(b.finish().0.len(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_past_its_limit_is_refused_before_it_is_kept() {
        let in_flight = InFlight::new(limits(1 << 20));
        assert_eq!(
            in_flight.body(10, Some(11)).await.err(),
            Some(BodyError::TooLarge { limit: 10 })
        );
        let mut r = in_flight.body(10, Some(10)).await.unwrap();
        r.push(&[0; 10]).await.unwrap();
        assert_eq!(r.push(&[0]).await, Err(BodyError::TooLarge { limit: 10 }));
        assert_eq!(r.finish().0.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn room_waited_for_is_taken_when_it_comes_back_in_time() {
        let in_flight = Arc::new(InFlight::new(UploadLimits {
            busy_wait: Duration::from_secs(5),
            ..limits(10)
        }));
        let mut a = in_flight.body(10, Some(10)).await.unwrap();
        a.push(&[0; 10]).await.unwrap();
        let waiting = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.body(10, Some(5)).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }
}
