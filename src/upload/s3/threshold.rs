//! The auto single-PUT/multipart decision: [`MultipartThreshold`] by size or by the upload
//! rate measured lately ([`LinkRate`]).

use std::time::{Duration, Instant};

/// The default multipart choice: [`MultipartThreshold::Auto`].
pub const DEFAULT_MULTIPART_THRESHOLD: MultipartThreshold = MultipartThreshold::Auto;
/// With [`MultipartThreshold::Auto`], files smaller than this (or than the part size) always
/// go in one PUT.
pub const AUTO_MULTIPART_FLOOR: u64 = 16 * 1024 * 1024;
/// With [`MultipartThreshold::Auto`], a file goes in one PUT only when, at the upload rate
/// measured lately, it takes less than this: an interruption then costs at most about this
/// much uplink time, and larger or slower uploads go multipart and resume part by part.
pub const AUTO_MULTIPART_RISK: Duration = Duration::from_secs(10);
/// A measured upload rate older than this is not trusted (the link may have changed: a
/// gateway box leaves the depot's Wi-Fi for cellular).
const RATE_MAX_AGE: Duration = Duration::from_secs(300);
/// Requests smaller than this say more about latency than about the link's rate.
const RATE_MIN_SAMPLE: u64 = 1024 * 1024;
/// S3's largest single PUT.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

/// When a file is uploaded multipart (resumable part by part) rather than in one PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartThreshold {
    /// Files of at least this many bytes go multipart, whatever the link (and so do files
    /// over S3's 5 GiB single-PUT limit, whatever the threshold).
    Fixed(u64),
    /// Files from [`AUTO_MULTIPART_FLOOR`] (or the part size, if larger) go multipart unless
    /// the upload rate measured lately would send them in under [`AUTO_MULTIPART_RISK`]. With
    /// no recent measurement, or after an upload failed, they go multipart. On a fast link
    /// a single PUT is cheaper (one request, no reassembly in the store) and an interruption
    /// costs seconds; on a slow or flaky one, parts make the upload resumable.
    Auto,
}

impl MultipartThreshold {
    /// Whether a file of `size` bytes goes multipart, given the upload rate measured lately
    /// (bytes per second per request; `None`: not known).
    pub fn wants_multipart(self, size: u64, part_size: u64, rate: Option<f64>) -> bool {
        if size > MAX_SINGLE_PUT {
            // S3 refuses a larger PUT, whatever the threshold says.
            return true;
        }
        match self {
            MultipartThreshold::Fixed(threshold) => size >= threshold,
            MultipartThreshold::Auto => {
                if size < AUTO_MULTIPART_FLOOR.max(part_size) {
                    return false;
                }
                rate.is_none_or(|r| size as f64 / r >= AUTO_MULTIPART_RISK.as_secs_f64())
            }
        }
    }
}

/// The upload rate of recent requests (PUTs and parts), each request's own bytes over its
/// own time, smoothed, for [`MultipartThreshold::Auto`]. Parts sent in parallel each see a
/// share of the link, so the figure errs low: towards multipart.
#[derive(Debug, Default)]
pub(super) struct LinkRate(std::sync::Mutex<RateState>);

#[derive(Debug, Default)]
struct RateState {
    /// Bytes per second and when it was last updated.
    rate: Option<(f64, Instant)>,
    /// When the rate was last forgotten: requests that started before then do not count.
    forgotten_at: Option<Instant>,
}

impl LinkRate {
    fn state(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a request body of `bytes` sent (and acknowledged) by a request that started
    /// at `started`.
    pub(super) fn observe(&self, bytes: u64, started: Instant) {
        if bytes < RATE_MIN_SAMPLE {
            return;
        }
        let rate = bytes as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let mut state = self.state();
        if state.forgotten_at.is_some_and(|f| started < f) {
            // It began before a failure: it says nothing about the link since.
            return;
        }
        let smoothed = match state.rate {
            Some((old, at)) if at.elapsed() < RATE_MAX_AGE => (old + rate) / 2.0,
            _ => rate,
        };
        state.rate = Some((smoothed, Instant::now()));
    }

    /// Forgets the rate: after a failed upload, the next ones are resumable until a request
    /// started since has shown the link's rate again.
    pub(super) fn forget(&self) {
        let mut state = self.state();
        state.rate = None;
        state.forgotten_at = Some(Instant::now());
    }

    pub(super) fn get(&self) -> Option<f64> {
        self.state()
            .rate
            .filter(|(_, at)| at.elapsed() < RATE_MAX_AGE)
            .map(|(rate, _)| rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn auto_threshold_weighs_the_time_a_single_put_is_at_risk() {
        let auto = MultipartThreshold::Auto;
        let part = 8 * MIB;
        // Below the floor: one PUT, whatever the link.
        assert!(!auto.wants_multipart(16 * MIB - 1, part, None));
        assert!(
            !auto.wants_multipart(20 * MIB, 32 * MIB, None),
            "floor is the part size"
        );
        // Rate unknown: multipart.
        assert!(auto.wants_multipart(16 * MIB, part, None));
        // 64 MiB at 100 MB/s is 0.7 s: one PUT. At 5 MB/s it is 13 s: multipart.
        assert!(!auto.wants_multipart(64 * MIB, part, Some(100e6)));
        assert!(auto.wants_multipart(64 * MIB, part, Some(5e6)));
        // Over S3's single-PUT limit: multipart however fast.
        assert!(auto.wants_multipart(MAX_SINGLE_PUT + 1, part, Some(1e12)));
        // A fixed threshold ignores the rate.
        let fixed = MultipartThreshold::Fixed(16 * MIB);
        assert!(fixed.wants_multipart(16 * MIB, part, Some(1e12)));
        assert!(!fixed.wants_multipart(16 * MIB - 1, part, Some(1.0)));
        // ... but not S3's single-PUT limit.
        let huge = MultipartThreshold::Fixed(8 << 30);
        assert!(huge.wants_multipart(MAX_SINGLE_PUT + 1, part, Some(1e12)));
    }

    #[test]
    fn link_rate_is_smoothed_and_forgotten() {
        let ago = |secs: u64| Instant::now() - Duration::from_secs(secs);
        let near =
            |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() / want < 0.01);
        let rate = LinkRate::default();
        assert_eq!(rate.get(), None);
        rate.observe(1000, ago(1));
        assert_eq!(rate.get(), None, "small requests are not samples");
        rate.observe(8 * MIB, ago(1));
        assert!(near(rate.get(), (8 * MIB) as f64), "{:?}", rate.get());
        rate.observe(8 * MIB, ago(4));
        assert!(
            near(rate.get(), (8 * MIB) as f64 * 0.625),
            "{:?}",
            rate.get()
        );
        // A request that was in flight when an upload failed does not bring the rate back.
        let in_flight = ago(1);
        rate.forget();
        assert_eq!(rate.get(), None);
        rate.observe(8 * MIB, in_flight);
        assert_eq!(rate.get(), None, "started before the failure");
        rate.observe(8 * MIB, Instant::now());
        assert!(rate.get().is_some(), "a request started since counts");
    }
}
