//! When a camera met by URL is worked on: the one component that decides.
//!
//! Each camera worker's loop asks [`Turns::next`] "wait until this camera's next pass is
//! due, or tell me to stop" (see `camera::CameraWorker::run`); it does not decide.
//!
//! **Today** a camera's first pass is due at once and each later one `sync.poll_interval`
//! after the previous pass ended (a pass begins by probing the camera's URL, so an absent
//! camera costs one failed probe per interval), or at once when the previous pass ended
//! because another camera took the address ([`Schedule::again`]), unless the IMEI at the
//! address keeps alternating: after [`SWAPS_AT_ONCE`] swaps within [`SWAP_WINDOW`], the
//! next pass waits for the poll interval (a hostile or broken camera cannot make the agent
//! pass over it in a tight loop). A shutdown or a soft stop (config reload) ends every wait
//! and stops the loops.
//!
//! **Depot Wi-Fi** (`rotation`): the camera hotspots are not polled on a timer; the radio
//! rotation joins one at a time and runs its pass itself. While the radio that carries the
//! uplink is not home (`radio`: leaving for a hotspot, or on one), a camera met by URL
//! waits for its turn, and so do uploads ([`crate::agent::radio::RadioState`] says which).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Stops;
use super::radio::RadioView;

/// Swaps at one address within [`SWAP_WINDOW`] that each start the next pass at once; one
/// more waits for the poll interval.
pub(crate) const SWAPS_AT_ONCE: usize = 3;
/// The window in which [`SWAPS_AT_ONCE`] is counted.
pub(crate) const SWAP_WINDOW: Duration = Duration::from_secs(60);

/// Whether a pass ended on a swap is followed by another at once ([`Schedule::again`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Again {
    /// The next pass starts at once.
    Now,
    /// The IMEI keeps alternating (this many swaps within [`SWAP_WINDOW`]): the next pass
    /// waits for the poll interval.
    BackedOff(usize),
}

/// Decides when each camera's pass is due.
pub(crate) struct Schedule {
    poll_interval: Duration,
    stops: Stops,
    /// Cameras whose next pass is due at once (see [`Schedule::again`]).
    again: Mutex<HashSet<usize>>,
    /// When each camera's recent passes ended on a swap (within [`SWAP_WINDOW`]).
    swaps: Mutex<HashMap<usize, VecDeque<Instant>>>,
    woken: Notify,
    /// Where the radio that carries the uplink is (read only).
    radio: RadioView,
}

impl Schedule {
    /// A timer schedule: a pass every `poll_interval` per camera, until a stop.
    pub(crate) fn new(poll_interval: Duration, stops: Stops, radio: RadioView) -> Schedule {
        Schedule {
            poll_interval,
            stops,
            again: Mutex::new(HashSet::new()),
            swaps: Mutex::new(HashMap::new()),
            woken: Notify::new(),
            radio,
        }
    }

    /// Camera `camera`'s pass ended on a swap: another camera answers at its address now,
    /// and that one is worked on without waiting ([`Again::Now`]), unless this is more
    /// than the [`SWAPS_AT_ONCE`]th swap within [`SWAP_WINDOW`] ([`Again::BackedOff`]: the
    /// next pass waits for the poll interval).
    pub(crate) fn again(&self, camera: usize) -> Again {
        self.again_at(camera, Instant::now())
    }

    /// [`Schedule::again`] at time `now`.
    fn again_at(&self, camera: usize, now: Instant) -> Again {
        let recent = match self.swaps.lock() {
            Ok(mut swaps) => {
                let times = swaps.entry(camera).or_default();
                times.push_back(now);
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > SWAP_WINDOW)
                {
                    times.pop_front();
                }
                times.len()
            }
            Err(_) => 0,
        };
        if recent > SWAPS_AT_ONCE {
            return Again::BackedOff(recent);
        }
        if let Ok(mut a) = self.again.lock() {
            a.insert(camera);
        }
        self.woken.notify_waiters();
        Again::Now
    }

    /// Whether camera `camera`'s next pass was made due at once (and clears it).
    pub(crate) fn take_again(&self, camera: usize) -> bool {
        self.again.lock().is_ok_and(|mut a| a.remove(&camera))
    }

    /// The turns of camera `camera` (its index in the config). The timer schedule treats
    /// every camera alike; a hotspot scheduler tells them apart.
    pub(crate) fn turns(&self, camera: usize) -> Turns<'_> {
        Turns {
            schedule: self,
            camera,
            started: false,
        }
    }

    fn stopped(&self) -> bool {
        self.stops.stopping()
    }
}

/// One camera's passes as the schedule hands them out.
pub(crate) struct Turns<'a> {
    schedule: &'a Schedule,
    camera: usize,
    started: bool,
}

impl Turns<'_> {
    /// Waits until the camera's next pass is due; `false` when the loop must stop
    /// (shutdown or soft stop) instead.
    pub(crate) async fn next(&mut self) -> bool {
        let s = self.schedule;
        if self.started && !s.take_again(self.camera) {
            let sleep = tokio::time::sleep(s.poll_interval);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = s.stops.shutdown.cancelled() => return false,
                    _ = s.stops.soft.cancelled() => return false,
                    _ = &mut sleep => break,
                    _ = s.woken.notified() => {
                        if s.take_again(self.camera) {
                            break;
                        }
                    }
                }
            }
        }
        self.started = true;
        // A camera reached by URL waits while the uplink's radio is on a hotspot (it is
        // out of reach, and so is the bucket).
        loop {
            let changed = s.radio.changed();
            if s.radio.now().uploads_may_run() || s.stopped() {
                break;
            }
            tokio::select! {
                _ = s.stops.shutdown.cancelled() => return false,
                _ = s.stops.soft.cancelled() => return false,
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        !s.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use crate::agent::radio::{RadioEvent, RadioStates};
    use tokio_util::sync::CancellationToken;

    fn schedule(poll: Duration) -> (Schedule, CancellationToken, CancellationToken) {
        schedule_with_radio(poll).0
    }

    type Tokens = (Schedule, CancellationToken, CancellationToken);

    fn schedule_with_radio(poll: Duration) -> (Tokens, RadioStates) {
        let stops = Stops::new(CancellationToken::new());
        let (states, view) = RadioStates::new();
        let s = Schedule::new(poll, stops.clone(), view);
        ((s, stops.shutdown, stops.soft), states)
    }

    fn leave() -> RadioEvent {
        RadioEvent::Leave {
            hotspot: "0A:00:00:00:00:01".into(),
        }
    }

    #[tokio::test]
    async fn first_pass_at_once_then_every_poll_interval() {
        let (s, _, _) = schedule(Duration::from_millis(150));
        let mut t = s.turns(0);
        let start = Instant::now();
        assert!(t.next().await);
        assert!(start.elapsed() < Duration::from_millis(150));
        assert!(t.next().await);
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_camera_made_due_again_is_worked_on_at_once() {
        let (s, _, _) = schedule(Duration::from_secs(3600));
        let mut t = s.turns(0);
        assert!(t.next().await);
        assert_eq!(s.again(0), Again::Now);
        let r = tokio::time::timeout(Duration::from_secs(5), t.next()).await;
        assert_eq!(r.ok(), Some(true), "no hour-long wait");
        assert!(!s.take_again(0), "taken by the turn");
        // Made due while the loop already waits.
        let waiting = tokio::time::timeout(Duration::from_secs(5), t.next());
        let again = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.again(0);
        };
        let (r, ()) = tokio::join!(waiting, again);
        assert_eq!(r.ok(), Some(true));
        s.again(1);
        assert!(!s.take_again(0) && s.take_again(1), "per camera");
    }

    #[tokio::test]
    async fn an_imei_that_keeps_alternating_waits_for_the_poll_interval() {
        let poll = Duration::from_millis(300);
        let (s, _, _) = schedule(poll);
        let mut t = s.turns(0);
        assert!(t.next().await);
        for _ in 0..SWAPS_AT_ONCE {
            assert_eq!(s.again(0), Again::Now);
            let before = Instant::now();
            assert!(t.next().await);
            assert!(before.elapsed() < poll, "at once");
        }
        // One swap too many within the minute: the poll interval, not a tight loop.
        assert_eq!(s.again(0), Again::BackedOff(SWAPS_AT_ONCE + 1));
        assert_eq!(s.again(1), Again::Now, "per camera");
        let before = Instant::now();
        assert!(t.next().await);
        assert!(before.elapsed() >= poll, "waited for the poll interval");
        // Still alternating: still backed off; once the window has passed with no swap,
        // at once again.
        assert!(matches!(s.again(0), Again::BackedOff(_)));
        let later = Instant::now() + SWAP_WINDOW + Duration::from_secs(1);
        assert_eq!(s.again_at(0, later), Again::Now);
    }

    #[tokio::test]
    async fn a_camera_met_by_url_waits_while_the_radio_is_leaving_or_away() {
        let ((s, shutdown, _), radio) = schedule_with_radio(Duration::ZERO);
        let mut t = s.turns(0);
        assert!(t.next().await);
        for away in [false, true] {
            radio.apply(leave());
            if away {
                radio.apply(RadioEvent::Join);
            }
            let wait = tokio::time::timeout(Duration::from_millis(300), t.next()).await;
            assert!(
                wait.is_err(),
                "no pass while the radio is not home (away: {away})"
            );
            let back = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                radio.apply(RadioEvent::Back);
            };
            let (r, ()) =
                tokio::join!(tokio::time::timeout(Duration::from_secs(5), t.next()), back);
            assert_eq!(r.ok(), Some(true), "due once the radio is home");
        }
        radio.apply(leave());
        shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(5), t.next()).await;
        assert_eq!(r.ok(), Some(false), "a shutdown ends the wait");
    }

    #[tokio::test]
    async fn stops_cut_the_wait_short() {
        let (s, shutdown, soft) = schedule(Duration::from_secs(3600));
        let mut t = s.turns(0);
        assert!(t.next().await);
        soft.cancel();
        // A one-hour wait that returns at once, with "stop".
        let r = tokio::time::timeout(Duration::from_secs(5), t.next()).await;
        assert_eq!(r.ok(), Some(false));
        let (s, _, _) = schedule(Duration::from_secs(3600));
        shutdown.cancel();
        let mut t = s.turns(1);
        assert!(
            t.next().await,
            "another schedule's shutdown does not stop this one"
        );
        let (s, shutdown, _) = schedule(Duration::ZERO);
        shutdown.cancel();
        assert!(!s.turns(0).next().await, "no first pass after a shutdown");
    }
}
