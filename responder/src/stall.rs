use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An injected pause: while it lasts, every answer waits for its end.
#[derive(Default)]
pub(crate) struct Stall {
    until: Mutex<Option<Instant>>,
}

impl Stall {
    pub(crate) fn hold_for(&self, d: Duration) {
        if let Ok(mut until) = self.until.lock() {
            *until = Some(Instant::now() + d);
        }
    }

    /// Blocks the thread until the stall (if any) is over: for the STAMP
    /// reflector, which runs on a thread of its own.
    pub(crate) fn wait_blocking(&self) {
        let until = self.until.lock().ok().and_then(|u| *u);
        if let Some(until) = until {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
        }
    }

    /// Waits until the stall (if any) is over.
    pub(crate) async fn wait(&self) {
        let until = self.until.lock().ok().and_then(|u| *u);
        if let Some(until) = until {
            if until > Instant::now() {
                tokio::time::sleep_until(until.into()).await;
            }
        }
    }
}
