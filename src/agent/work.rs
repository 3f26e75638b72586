//! A clip being worked on: the store's [`Clip`] parsed once into a [`Work`] (validated
//! name, camera path and IMEI checked, object key built), when a stage takes it from the
//! store ([`take`]); a clip that fails is refused there, once. Also the bookkeeping every
//! stage shares: how long a failed clip waits ([`retry_secs`]) and how a store write's
//! result is logged ([`record`], [`applied`]).

use std::ops::Deref;

use anyhow::Result;
use tracing::{debug, warn};

use qucam::{ClipName, NameError};

use super::spool::quarantined_file;
use crate::config::SyncConfig;
use crate::key;
use crate::store::{Clip, Origin, Store};

/// A clip from the store whose name, camera path (for a clip from the quarantine: its
/// quarantined file) and IMEI passed their checks, with the
/// object key it goes to. Derefs to the [`Clip`] (so `w.name` is the stored name, as
/// logged; `w.parsed` is the checked [`ClipName`]).
pub(crate) struct Work {
    pub(crate) clip: Clip,
    pub(crate) parsed: ClipName,
    pub(crate) key: String,
}

impl Work {
    /// Parses and checks `clip` (its key under `prefix`).
    pub(crate) fn parse(clip: Clip, prefix: &str) -> Result<Work, NameError> {
        let (parsed, key) = Work::checked(&clip, prefix)?;
        Ok(Work { clip, parsed, key })
    }

    /// The name and the key; the key is empty while it is not known yet (a hashed key
    /// before the download: see [`Work::key_needs_hash`]).
    fn checked(clip: &Clip, prefix: &str) -> Result<(ClipName, String), NameError> {
        let name = ClipName::parse(&clip.name)?;
        match clip.origin {
            Origin::Camera => qucam::check_camera_path(&clip.path, &name)?,
            // Not a camera's path: the quarantined file the clip is offloaded from.
            Origin::Spool if quarantined_file(clip).is_none() => {
                return Err(NameError(format!(
                    "refused quarantine path {:?}",
                    qucam::excerpt(&clip.path)
                )));
            }
            Origin::Spool => {}
        }
        qucam::check_imei(&clip.imei)?;
        let key = match (clip.hashed_key, clip.sha256.as_deref()) {
            (false, _) => key::object_key(prefix, &clip.imei, &name)?,
            (true, Some(sha)) => key::hashed_object_key(prefix, &clip.imei, &name, sha)?,
            (true, None) => {
                // Checked all the same, so a bad prefix is refused before the download.
                key::object_key(prefix, &clip.imei, &name)?;
                String::new()
            }
        };
        Ok((name, key))
    }

    /// Whether the clip's key depends on its bytes (`~<8 hex of its SHA-256>`: a later
    /// generation of a path, or the same name at another path). Such a clip may start
    /// uploading only once its download finished and was hashed; any other clip may start
    /// uploading while it still downloads (its key is known from the start).
    pub(crate) fn key_needs_hash(&self) -> bool {
        self.clip.hashed_key
    }
}

impl Deref for Work {
    type Target = Clip;
    fn deref(&self) -> &Clip {
        &self.clip
    }
}

/// Seconds a clip that failed after `attempts` earlier failures waits: short for the
/// first attempts (5 s, doubling), then the quiet period `sync.retry_after`.
pub(crate) fn retry_secs(attempts: i64, sync: &SyncConfig) -> i64 {
    let quiet = sync.retry_after.as_secs() as i64;
    if (attempts + 1) < sync.max_attempts as i64 {
        (5i64 << attempts.clamp(0, 10)).min(quiet)
    } else {
        quiet
    }
}

/// Parses a clip a stage took from the store; refuses it (once, here) when it fails.
pub(crate) async fn take(store: &Store, c: Clip, prefix: &str) -> Option<Work> {
    match Work::checked(&c, prefix) {
        Ok((parsed, key)) => Some(Work {
            clip: c,
            parsed,
            key,
        }),
        Err(e) => {
            applied(store.refuse(c.id, e.to_string()).await, "refuse", &c);
            None
        }
    }
}

/// A store write's result: logged when it failed (a later pass repeats the work; the
/// agent carries on).
pub(crate) fn record<T>(r: Result<T>, what: &str, c: &Clip) -> Option<T> {
    r.inspect_err(|e| warn!(imei = %c.imei, clip = %c.name, "state database: {what} failed: {e:#}"))
        .ok()
}

/// A transition's result: whether it applied. Logged when it failed, and (at debug) when
/// its guard refused it because the clip is in another state.
pub(crate) fn applied(r: Result<bool>, what: &str, c: &Clip) -> bool {
    let done = record(r, what, c);
    if done == Some(false) {
        debug!(imei = %c.imei, clip = %c.name, "{what}: not applied (the clip is in another state)");
    }
    done == Some(true)
}

/// A queued clip of size 10 for unit tests (row id 1).
#[cfg(test)]
pub(crate) fn test_clip(name: &str, path: &str, imei: &str) -> Clip {
    Clip {
        id: 1,
        imei: imei.into(),
        path: path.into(),
        name: name.into(),
        size: 10,
        event: String::new(),
        camera: 1,
        recorded_at: String::new(),
        state: crate::store::ClipState::Queued,
        reason: None,
        failed_stage: None,
        attempts: 0,
        retry_after: None,
        sha256: None,
        object_key: None,
        etag: None,
        upload_id: None,
        part_size: None,
        first_seen: 0,
        generation: 0,
        hashed_key: false,
        date_ms: None,
        weak_proof: None,
        challenge_due: false,
        origin: crate::store::Origin::Camera,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::spool::{legacy_spool_name, spool_name};
    use std::time::Duration;

    const NAME: &str = "20210427_115134_04_2.mp4";
    const IMEI: &str = "867867432522518";

    #[test]
    fn a_good_clip_parses_once_with_its_key() {
        let w = Work::parse(
            test_clip(NAME, &format!("/sdcard/DCIM/{NAME}"), IMEI),
            "dashcam",
        )
        .expect("a good clip");
        assert_eq!(w.parsed.as_str(), NAME);
        assert_eq!(w.name, NAME);
        assert_eq!(w.key, format!("dashcam/{IMEI}/2021-04-27/{NAME}"));
        assert_eq!(w.imei, IMEI, "derefs to the clip");
    }

    #[test]
    fn a_hashed_key_is_known_once_the_bytes_are_hashed() {
        let mut c = test_clip(NAME, &format!("/sdcard/DCIM/{NAME}"), IMEI);
        c.hashed_key = true;
        c.id = 7;
        let w = Work::parse(c.clone(), "dashcam").expect("a good clip");
        assert!(w.key_needs_hash());
        assert_eq!(w.key, "", "not known before the download");
        assert_eq!(spool_name(&c), format!("{NAME}~7-10-none"));
        assert_eq!(legacy_spool_name(&c), format!("{NAME}~7"));
        c.sha256 = Some("0badcafe".repeat(8));
        let w = Work::parse(c, "dashcam").expect("a good clip");
        assert_eq!(
            w.key,
            format!("dashcam/{IMEI}/2021-04-27/20210427_115134_04_2~0badcafe.mp4")
        );
        let plain = test_clip(NAME, &format!("/sdcard/DCIM/{NAME}"), IMEI);
        assert!(!Work::parse(plain.clone(), "").unwrap().key_needs_hash());
        assert_eq!(spool_name(&plain), format!("{NAME}~1-10-none"));
        assert_eq!(legacy_spool_name(&plain), NAME);
        let dated = Clip {
            date_ms: Some(1_609_459_212_000),
            ..plain.clone()
        };
        assert_eq!(spool_name(&dated), format!("{NAME}~1-10-1609459212000"));
        let grown = Clip { size: 11, ..dated };
        assert_eq!(spool_name(&grown), format!("{NAME}~1-11-1609459212000"));
    }

    #[test]
    fn a_bad_name_path_or_imei_is_refused() {
        let path = format!("/sdcard/DCIM/{NAME}");
        assert!(Work::parse(test_clip("../x.mp4", &path, IMEI), "").is_err());
        assert!(Work::parse(test_clip(NAME, "/sdcard/DCIM/other.mp4", IMEI), "").is_err());
        assert!(Work::parse(test_clip(NAME, &path, "../etc"), "").is_err());
        assert!(Work::parse(test_clip(NAME, &path, IMEI), "a/../b").is_err());
    }

    #[test]
    fn a_clip_from_the_quarantine_is_offloaded_from_its_quarantined_file_only() {
        let file = format!("{NAME}~3-10-none");
        let mut c = test_clip(NAME, &format!("quarantine/{IMEI}/{file}"), IMEI);
        c.origin = crate::store::Origin::Spool;
        let w = Work::parse(c.clone(), "dashcam").expect("its quarantined file");
        assert_eq!(w.key, format!("dashcam/{IMEI}/2021-04-27/{NAME}"));
        let state_dir = tempfile::tempdir().unwrap();
        let spool = crate::agent::spool::Spool::open(state_dir.path()).unwrap();
        assert!(
            spool
                .file_path(&c)
                .ends_with(format!("quarantine/{IMEI}/{file}"))
        );
        for bad in [
            format!("/sdcard/DCIM/{NAME}"),
            format!("quarantine/{IMEI}/../{file}"),
            format!("quarantine/{IMEI}/.."),
            format!("quarantine/867867432522519/{file}"),
            format!("spool/{IMEI}/{file}"),
        ] {
            let c = Clip {
                path: bad.clone(),
                ..c.clone()
            };
            assert!(Work::parse(c, "").is_err(), "{bad}");
        }
    }

    #[test]
    fn retries_double_from_five_seconds_then_wait_the_quiet_period() {
        let sync = SyncConfig {
            max_attempts: 5,
            retry_after: Duration::from_secs(3600),
            ..SyncConfig::default()
        };
        let waits: Vec<i64> = (0..6).map(|a| retry_secs(a, &sync)).collect();
        assert_eq!(waits, [5, 10, 20, 40, 3600, 3600]);
        let short = SyncConfig {
            max_attempts: 100,
            retry_after: Duration::from_secs(30),
            ..SyncConfig::default()
        };
        assert_eq!(
            retry_secs(3, &short),
            30,
            "never longer than the quiet period"
        );
        assert_eq!(retry_secs(-1, &short), 5, "a negative count counts as none");
        assert_eq!(retry_secs(40, &short), 30);
        let huge = SyncConfig {
            max_attempts: 100,
            retry_after: Duration::from_secs(1 << 30),
            ..SyncConfig::default()
        };
        assert_eq!(retry_secs(50, &huge), 5 << 10, "the doubling stops at 2^10");
    }
}
