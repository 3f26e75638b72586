//! The radio's state machine: where the radio that carries the uplink is (depot Wi-Fi with
//! one radio, `wifi.uplink` set; see `rotation`).
//!
//! - [`RadioState::Home`]: on the uplink. Uploads may run. With no `[wifi]`, or with a
//!   second radio for the cameras, the uplink never leaves and the state stays here.
//! - [`RadioState::Leaving`]: about to leave for a camera's hotspot. No new upload starts,
//!   those in flight finish; S3 is still reachable, so its failures are outages as usual.
//! - [`RadioState::Away`]: joining or on a camera's hotspot. S3 is out of reach by design:
//!   it is not probed, and no S3 failure of that time is an outage or a clip's failure.
//!
//! The transitions are [`RadioState::next`], in one place. Only the rotation writes the
//! state ([`RadioStates`], of which there is one per run); the schedule and the uploader
//! read it through [`RadioView::now`].

use tokio::sync::watch;
use tracing::debug;

/// Where the radio that carries the uplink is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RadioState {
    /// On the uplink (or the uplink has a radio of its own).
    Home,
    /// About to leave for the camera hotspot `hotspot` (its BSSID).
    Leaving { hotspot: String },
    /// Joining or on the camera hotspot `hotspot` (its BSSID).
    Away { hotspot: String },
}

/// What happens to the radio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RadioEvent {
    /// The rotation is about to leave the uplink for `hotspot`.
    Leave { hotspot: String },
    /// The join starts: the uplink is gone from here on.
    Join,
    /// Back on the uplink (restored, or the visit ended without leaving it).
    Back,
}

impl RadioState {
    /// The state after `event`; `None` when the event makes no sense in this state (it is
    /// ignored: the state stays).
    pub(crate) fn next(&self, event: &RadioEvent) -> Option<RadioState> {
        use RadioEvent as E;
        use RadioState as S;
        match (self, event) {
            (S::Home, E::Leave { hotspot }) => Some(S::Leaving {
                hotspot: hotspot.clone(),
            }),
            (S::Leaving { hotspot }, E::Join) => Some(S::Away {
                hotspot: hotspot.clone(),
            }),
            (_, E::Back) => Some(S::Home),
            (S::Leaving { .. } | S::Away { .. }, E::Leave { .. })
            | (S::Home | S::Away { .. }, E::Join) => None,
        }
    }

    /// Whether uploads may start now: only on the uplink.
    pub(crate) fn uploads_may_run(&self) -> bool {
        matches!(self, RadioState::Home)
    }

    /// Whether the destination is out of reach by design (an S3 failure now is no outage).
    pub(crate) fn destination_away(&self) -> bool {
        matches!(self, RadioState::Away { .. })
    }
}

/// The one writer of the radio's state (held by the rotation).
#[derive(Debug)]
pub(crate) struct RadioStates {
    tx: watch::Sender<RadioState>,
}

impl RadioStates {
    /// A radio at home, and the view the readers get.
    pub(crate) fn new() -> (RadioStates, RadioView) {
        let (tx, rx) = watch::channel(RadioState::Home);
        (RadioStates { tx }, RadioView { rx })
    }

    /// Applies `event` (see [`RadioState::next`]); the readers are woken.
    pub(crate) fn apply(&self, event: RadioEvent) {
        self.tx.send_if_modified(|s| match s.next(&event) {
            Some(n) => {
                let changed = n != *s;
                *s = n;
                changed
            }
            None => {
                debug!(state = ?s, event = ?event, "radio: event ignored in this state");
                false
            }
        });
    }
}

/// A reader's view of the radio's state.
#[derive(Debug, Clone)]
pub(crate) struct RadioView {
    rx: watch::Receiver<RadioState>,
}

impl RadioView {
    /// The radio's state now.
    pub(crate) fn now(&self) -> RadioState {
        self.rx.borrow().clone()
    }

    /// Resolves when the state changes after this call (never, once the writer is gone).
    pub(crate) fn changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        rx.borrow_and_update();
        async move {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RadioEvent as E;
    use RadioState as S;

    fn leaving() -> RadioState {
        S::Leaving {
            hotspot: "0A:00:00:00:00:01".into(),
        }
    }

    fn away() -> RadioState {
        S::Away {
            hotspot: "0A:00:00:00:00:01".into(),
        }
    }

    fn leave() -> RadioEvent {
        E::Leave {
            hotspot: "0A:00:00:00:00:01".into(),
        }
    }

    #[test]
    fn home_then_leave_is_leaving_uploads_held_s3_still_reachable() {
        let s = S::Home.next(&leave()).expect("a transition");
        assert_eq!(s, leaving());
        assert!(!s.uploads_may_run() && !s.destination_away());
        assert!(S::Home.uploads_may_run() && !S::Home.destination_away());
    }

    #[test]
    fn leaving_then_join_is_away_with_its_hotspot_s3_out_of_reach() {
        let s = leaving().next(&E::Join).expect("a transition");
        assert_eq!(s, away());
        assert!(!s.uploads_may_run() && s.destination_away());
    }

    #[test]
    fn back_from_anywhere_is_home() {
        for s in [S::Home, leaving(), away()] {
            assert_eq!(s.next(&E::Back), Some(S::Home), "from {s:?}");
        }
    }

    #[test]
    fn events_that_make_no_sense_are_not_transitions() {
        assert_eq!(S::Home.next(&E::Join), None, "a join is always announced");
        assert_eq!(away().next(&E::Join), None);
        assert_eq!(leaving().next(&leave()), None);
        assert_eq!(away().next(&leave()), None);
    }

    #[tokio::test]
    async fn readers_see_what_the_writer_applies_and_are_woken() {
        let (states, view) = RadioStates::new();
        assert_eq!(view.now(), S::Home);
        let waiting = view.changed();
        states.apply(leave());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken by the change");
        assert_eq!(view.now(), leaving());
        states.apply(leave());
        assert_eq!(view.now(), leaving(), "ignored: the state stays");
        states.apply(E::Join);
        assert_eq!(view.now(), away());
        states.apply(E::Back);
        assert_eq!(view.now(), S::Home);
    }
}
