//! When a camera is worked on, and when uploads may run: the one component that decides.
//!
//! The loops ask, they do not decide:
//! - each camera's loop asks [`Turns::next`] "wait until this camera's next pass is due,
//!   or tell me to stop" (see `Agent::camera_loop` in `pass.rs`);
//! - the uploader asks [`Schedule::uploads_may_run`] before it starts an upload.
//!
//! **Today** a camera's first pass is due at once and each later one `sync.poll_interval`
//! after the previous pass ended (a pass begins by probing the camera's URL, so an absent
//! camera costs one failed probe per interval), or at once when the previous pass ended
//! because another camera took the address ([`Schedule::again`]); uploads may always run. A shutdown or a
//! soft stop (config reload) ends every wait and stops the loops.
//!
//! **Depot Wi-Fi** (`radio.rs`): the camera hotspots are not polled on a timer; the radio
//! rotation joins one at a time and runs its pass itself. When the radio that carries the
//! uplink is about to leave for a camera's hotspot, [`Schedule::hold_uploads`] makes
//! [`Schedule::uploads_may_run`] say no (store and forward: nothing new starts, those in
//! flight finish), while the uplink still carries S3: a failure then is the destination's
//! as at any other time (an outage pauses and probes). Once the join starts,
//! [`Schedule::set_radio_away`] marks the destination out of reach by design
//! ([`Schedule::destination_away`]): it is not probed, and no S3 failure of that time
//! counts as an outage.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Decides when each camera's pass is due and whether uploads may run now.
pub(crate) struct Schedule {
    poll_interval: Duration,
    shutdown: CancellationToken,
    soft_stop: CancellationToken,
    /// Cameras whose next pass is due at once (see [`Schedule::again`]).
    again: Mutex<HashSet<usize>>,
    woken: Notify,
    /// Where the one radio, which carries the uplink, is: [`HOME`], [`LEAVING`] or
    /// [`AWAY`].
    radio: AtomicU8,
}

/// The radio is on the uplink (or there is no single radio): uploads may run.
const HOME: u8 = 0;
/// The radio is about to leave for a hotspot: no new upload starts, the uplink still
/// carries S3.
const LEAVING: u8 = 1;
/// The radio is joining or on a camera's hotspot: S3 is out of reach by design.
const AWAY: u8 = 2;

impl Schedule {
    /// A timer schedule: a pass every `poll_interval` per camera, until `shutdown` or
    /// `soft_stop`.
    pub(crate) fn new(
        poll_interval: Duration,
        shutdown: CancellationToken,
        soft_stop: CancellationToken,
    ) -> Schedule {
        Schedule {
            poll_interval,
            shutdown,
            soft_stop,
            again: Mutex::new(HashSet::new()),
            woken: Notify::new(),
            radio: AtomicU8::new(HOME),
        }
    }

    /// Camera `camera`'s next pass is due at once: another camera answers at its address
    /// now (a pass ended on a swap), and that one is worked on without waiting.
    pub(crate) fn again(&self, camera: usize) {
        if let Ok(mut a) = self.again.lock() {
            a.insert(camera);
        }
        self.woken.notify_waiters();
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

    /// Whether the uploader may start uploads now: always, unless the radio that carries
    /// the uplink is on a camera's hotspot or about to leave for one.
    pub(crate) fn uploads_may_run(&self) -> bool {
        self.radio.load(Ordering::SeqCst) == HOME
    }

    /// Whether the destination is out of reach by design: the radio that carries the
    /// uplink is joining or on a camera's hotspot (an S3 failure now is no outage).
    pub(crate) fn destination_away(&self) -> bool {
        self.radio.load(Ordering::SeqCst) == AWAY
    }

    /// The radio that carries the uplink is about to leave for a camera's hotspot: no new
    /// upload starts, but S3 is still reachable (its failures are outages as usual).
    pub(crate) fn hold_uploads(&self) {
        self.radio.store(LEAVING, Ordering::SeqCst);
        self.woken.notify_waiters();
    }

    /// The radio that carries the uplink leaves for a camera's hotspot (`true`: the join
    /// starts) or is back on the uplink (`false`).
    pub(crate) fn set_radio_away(&self, away: bool) {
        self.radio
            .store(if away { AWAY } else { HOME }, Ordering::SeqCst);
        self.woken.notify_waiters();
    }

    fn stopped(&self) -> bool {
        self.shutdown.is_cancelled() || self.soft_stop.is_cancelled()
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
                    _ = s.shutdown.cancelled() => return false,
                    _ = s.soft_stop.cancelled() => return false,
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
        while !s.uploads_may_run() && !s.stopped() {
            tokio::select! {
                _ = s.shutdown.cancelled() => return false,
                _ = s.soft_stop.cancelled() => return false,
                _ = s.woken.notified() => {}
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

    fn schedule(poll: Duration) -> (Schedule, CancellationToken, CancellationToken) {
        let (shutdown, soft) = (CancellationToken::new(), CancellationToken::new());
        (
            Schedule::new(poll, shutdown.clone(), soft.clone()),
            shutdown,
            soft,
        )
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
        assert!(s.uploads_may_run() && !s.destination_away());
        s.hold_uploads();
        assert!(!s.uploads_may_run(), "the uplink's radio is about to leave");
        assert!(!s.destination_away(), "S3 is still reachable");
        s.set_radio_away(true);
        assert!(!s.uploads_may_run(), "the uplink's radio is on a hotspot");
        assert!(s.destination_away());
        s.set_radio_away(false);
        assert!(s.uploads_may_run() && !s.destination_away());
    }

    #[tokio::test]
    async fn a_camera_made_due_again_is_worked_on_at_once() {
        let (s, _, _) = schedule(Duration::from_secs(3600));
        let mut t = s.turns(0);
        assert!(t.next().await);
        s.again(0);
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
    async fn a_camera_met_by_url_waits_while_the_radio_is_leaving_or_away() {
        let (s, shutdown, _) = schedule(Duration::ZERO);
        let mut t = s.turns(0);
        assert!(t.next().await);
        for away in [false, true] {
            if away {
                s.set_radio_away(true);
            } else {
                s.hold_uploads();
            }
            let wait = tokio::time::timeout(Duration::from_millis(300), t.next()).await;
            assert!(
                wait.is_err(),
                "no pass while the radio is not home (away: {away})"
            );
            let back = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                s.set_radio_away(false);
            };
            let (r, ()) =
                tokio::join!(tokio::time::timeout(Duration::from_secs(5), t.next()), back);
            assert_eq!(r.ok(), Some(true), "due once the radio is home");
        }
        s.hold_uploads();
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
