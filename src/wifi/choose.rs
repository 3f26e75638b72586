//! Which hotspot in range is visited next: a pure function of what is known about each
//! candidate (clips pending for its IMEI, when it was last joined and last completely
//! offloaded, whether its BSSID was seen before, its signal and its backoff).

use std::cmp::Reverse;

/// One access point in range, with what the store knows about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub bssid: String,
    /// NetworkManager's `Strength`, percent.
    pub strength: u8,
    /// Clips known to wait on the camera (from an earlier visit or a WAN listing).
    pub pending: usize,
    /// When it was last joined (ms), if ever.
    pub last_joined: Option<i64>,
    /// When its last visit offloaded everything (ms), if ever.
    pub last_complete: Option<i64>,
    /// Whether the store has a record of this BSSID.
    pub seen_before: bool,
    /// Not before this time (ms): wrong-password or failure backoff.
    pub retry_at: Option<i64>,
}

impl Candidate {
    /// Whether it may be joined at `now_ms`.
    fn eligible(&self, now_ms: i64, min_signal: u8) -> bool {
        self.strength >= min_signal && self.retry_at.is_none_or(|t| t <= now_ms)
    }

    /// The sort key: tier, then the time that puts the one waiting longest first (`None`
    /// = never = first), then the stronger signal.
    fn key(&self) -> (u8, Option<i64>, Reverse<u8>) {
        let (tier, since) = if self.pending > 0 {
            (1, self.last_joined)
        } else if self.seen_before {
            (2, self.last_complete)
        } else {
            (3, None)
        };
        (tier, since, Reverse(self.strength))
    }
}

/// Visit order (indices into `cands`): skip strength < min_signal and retry_at > now;
/// (1) pending > 0, joined longest ago first (never first); (2) seen before, longest since
/// last_complete (never = longest); (3) never-seen BSSIDs; stronger signal breaks ties
/// (then the order given).
pub fn choose(cands: &[Candidate], now_ms: i64, min_signal: u8) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].eligible(now_ms, min_signal))
        .collect();
    order.sort_by_key(|&i| cands[i].key());
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(bssid: &str) -> Candidate {
        Candidate {
            bssid: bssid.into(),
            strength: 50,
            pending: 0,
            last_joined: None,
            last_complete: None,
            seen_before: true,
            retry_at: None,
        }
    }

    fn bssids(cands: &[Candidate], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| cands[i].bssid.clone()).collect()
    }

    #[test]
    fn pending_first_then_longest_since_complete_then_new() {
        let cands = vec![
            Candidate {
                seen_before: false,
                strength: 90,
                ..cand("new")
            },
            Candidate {
                last_complete: Some(500),
                ..cand("done-late")
            },
            Candidate {
                last_complete: Some(100),
                ..cand("done-early")
            },
            Candidate {
                pending: 3,
                last_joined: Some(900),
                ..cand("cut-recently")
            },
            Candidate {
                pending: 1,
                last_joined: Some(200),
                ..cand("cut-long-ago")
            },
            Candidate {
                pending: 2,
                ..cand("pending-never-joined")
            },
            cand("never-complete"),
        ];
        assert_eq!(
            bssids(&cands, &choose(&cands, 1000, 0)),
            [
                "pending-never-joined",
                "cut-long-ago",
                "cut-recently",
                "never-complete",
                "done-early",
                "done-late",
                "new"
            ]
        );
    }

    #[test]
    fn weak_and_backed_off_hotspots_are_skipped() {
        let cands = vec![
            Candidate {
                strength: 19,
                ..cand("weak")
            },
            Candidate {
                retry_at: Some(1001),
                ..cand("wrong-password")
            },
            Candidate {
                retry_at: Some(1000),
                ..cand("retry-due")
            },
            Candidate {
                strength: 20,
                ..cand("just-enough")
            },
        ];
        assert_eq!(
            bssids(&cands, &choose(&cands, 1000, 20)),
            ["retry-due", "just-enough"]
        );
    }

    #[test]
    fn stronger_signal_breaks_ties() {
        let cands = vec![
            Candidate {
                seen_before: false,
                strength: 30,
                ..cand("a")
            },
            Candidate {
                seen_before: false,
                strength: 80,
                ..cand("b")
            },
            Candidate {
                seen_before: false,
                strength: 80,
                ..cand("c")
            },
        ];
        assert_eq!(bssids(&cands, &choose(&cands, 0, 0)), ["b", "c", "a"]);
    }

    fn any_cand() -> impl Strategy<Value = Candidate> {
        let t = || proptest::option::of(0i64..50);
        (0u8..=100, 0usize..3, t(), t(), any::<bool>(), t()).prop_map(
            |(strength, pending, last_joined, last_complete, seen_before, retry_at)| Candidate {
                bssid: String::new(),
                strength,
                pending,
                last_joined,
                last_complete,
                seen_before,
                retry_at,
            },
        )
    }

    proptest! {
        #[test]
        fn every_eligible_candidate_once_in_order(
            cands in proptest::collection::vec(any_cand(), 0..12),
            now in 0i64..50,
            min_signal in 0u8..=100,
        ) {
            let order = choose(&cands, now, min_signal);
            for (i, c) in cands.iter().enumerate() {
                let times = order.iter().filter(|&&j| j == i).count();
                let eligible = c.strength >= min_signal && c.retry_at.is_none_or(|t| t <= now);
                prop_assert_eq!(times, usize::from(eligible), "candidate {} {:?}", i, c);
            }
            let tier = |c: &Candidate| if c.pending > 0 { 1 } else if c.seen_before { 2 } else { 3 };
            for w in order.windows(2) {
                let (a, b) = (&cands[w[0]], &cands[w[1]]);
                prop_assert!(tier(a) <= tier(b), "{:?} before {:?}", a, b);
                if tier(a) != tier(b) {
                    continue;
                }
                let since = |c: &Candidate| match tier(c) {
                    1 => c.last_joined,
                    2 => c.last_complete,
                    _ => None,
                };
                prop_assert!(since(a) <= since(b), "{:?} before {:?}", a, b);
                if since(a) == since(b) {
                    prop_assert!(a.strength >= b.strength, "{:?} before {:?}", a, b);
                }
            }
        }
    }
}
