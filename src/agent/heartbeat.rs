//! The agent's heartbeat: whether its loops show progress, for the service watchdog.
//!
//! A loop doing work holds a [`Busy`] guard for the duration (a camera pass, one clip's
//! upload) and calls [`beat`] whenever it completes a step: a listing page, a chunk of a
//! download, a chunk of any camera reply (the camera client's `on_progress`: a camera that
//! answers slowly, within its bounds, is not a wedge), an uploaded part or clip. A wait that is by design (the poll interval, a pass
//! waiting for uploads that wait on a retry or backoff, an S3 request under way, which
//! ends by itself within `s3.stall_timeout` of silence) is not a wedge either.
//!
//! [`alive`] answers "is the agent making progress or idle by design?": no loop busy, an
//! S3 request under way, or a beat within the window. A loop stuck in a call that never
//! returns stops the beats while it stays busy, the watchdog stops pinging and the service
//! manager restarts the agent. The heartbeat is process-wide, so it outlives a config
//! reload's agent swap.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The process-wide heartbeat.
static HEARTBEAT: LazyLock<Heartbeat> = LazyLock::new(Heartbeat::new);

/// When loops last made progress, and how many are busy.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    /// Milliseconds since `start` of the last beat.
    last_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Heartbeat {
    fn new() -> Heartbeat {
        Heartbeat {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    fn quiet(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Progress within `window`, or nothing busy, or a wait that ends by itself.
    fn alive(&self, window: Duration, s3_in_flight: usize) -> bool {
        self.busy.load(Ordering::Relaxed) == 0 || s3_in_flight > 0 || self.quiet() <= window
    }
}

/// Records progress: a step of work was completed.
pub fn beat() {
    HEARTBEAT.beat();
}

/// Whether the agent showed progress within `window` or is idle by design.
pub fn alive(window: Duration) -> bool {
    HEARTBEAT.alive(window, crate::upload::s3_requests_in_flight())
}

/// Marks a loop busy (expected to [`beat`]) until dropped; starting counts as a beat.
pub(crate) fn busy() -> Busy {
    HEARTBEAT.busy.fetch_add(1, Ordering::Relaxed);
    HEARTBEAT.beat();
    Busy(())
}

/// A loop at work: see [`busy`].
#[derive(Debug)]
pub(crate) struct Busy(());

impl Drop for Busy {
    fn drop(&mut self) {
        HEARTBEAT.busy.fetch_sub(1, Ordering::Relaxed);
        HEARTBEAT.beat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_without_beats_is_not_alive_idle_is() {
        let h = Heartbeat::new();
        let w = Duration::from_millis(50);
        assert!(h.alive(w, 0), "nothing busy: idle by design");
        h.busy.fetch_add(1, Ordering::Relaxed);
        h.beat();
        assert!(h.alive(w, 0), "just beat");
        std::thread::sleep(Duration::from_millis(120));
        assert!(!h.alive(w, 0), "busy and silent for longer than the window");
        assert!(h.alive(w, 1), "an S3 request under way ends by itself");
        h.beat();
        assert!(h.alive(w, 0), "a beat revives it");
        h.busy.fetch_sub(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(120));
        assert!(h.alive(w, 0), "idle again");
    }
}
