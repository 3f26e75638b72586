//! Reading a camera's listing into the store: [`classify`] each entry (refused, skipped,
//! selected, too recent), page through the listing reconciling each page, tell which
//! clips finished recording ([`Latest`]), then settle the clips that left the camera
//! (lost, or offloaded by another agent when their object is in the bucket). Every page
//! is read between two IMEI checks and taken only if both found the pass's camera. A pass
//! records at most [`MAX_NEW_ROWS_PER_PASS`] paths new to the store (most severe first):
//! the rest wait for the next pass, so a hostile or broken camera's rows grow slowly.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use backon::{ExponentialBuilder, Retryable};
use tracing::{debug, info, warn};

use qucam::{CameraClient, CameraError, ClipName, FileEntry, ListQuery};

use super::identity::confirm_imei;
use crate::agent::events::Events;
use crate::agent::spool::Spool;
use crate::agent::uploader::Uploader;
use crate::agent::{AgentEvent, MAX_CLIP_BYTES, MAX_LISTING, Stops};
use crate::config::{ClipSelection, SyncConfig};
use crate::store::{self, Listed, Store};

/// Most paths new to the store one pass records (see the module doc).
pub(crate) const MAX_NEW_ROWS_PER_PASS: usize = 5_000;

/// What the store should make of one listing entry at `now_ms` (ms since the epoch):
/// refused (`refuse`: hostile or unusable), skipped by the selection (`skip`), or
/// selected; and whether it may still be recording (`too_recent`).
pub(crate) fn classify(e: &FileEntry, sync: &SyncConfig, now_ms: i64) -> Listed {
    let mut l = Listed {
        path: qucam::excerpt_long(&e.path),
        name: qucam::excerpt(&e.name),
        size: e.size.unwrap_or(0).max(0) as u64,
        event: String::new(),
        camera: 0,
        recorded_at: String::new(),
        priority: 99,
        skip: None,
        refuse: None,
        size_unknown: e.size.is_none(),
        too_recent: false,
        date_ms: e.date_ms,
    };
    let recent_ms = sync.stable_after.as_millis() as i64;
    if recent_ms > 0 {
        l.too_recent = e.date_ms.is_none_or(|d| d > now_ms - recent_ms);
    }
    // A clip listed without a size is still being written (or the listing glitched): seen,
    // never stable, until a listing gives its size.
    l.too_recent |= l.size_unknown;
    let name = match ClipName::parse(&e.name) {
        Ok(n) => n,
        Err(err) => {
            l.refuse = Some(err.to_string());
            return l;
        }
    };
    if let Err(err) = qucam::check_camera_path(&e.path, &name) {
        l.refuse = Some(err.to_string());
        return l;
    }
    l.event = name.event_code().to_string();
    l.camera = name.camera() as i64;
    l.recorded_at = name.recorded().format("%Y-%m-%d %H:%M:%S").to_string();
    l.priority = qucam::event_priority(name.event_code());
    l.refuse = refusal(e);
    if l.refuse.is_none() {
        l.skip = skip_reason(&name, sync);
    }
    l
}

/// Why a well-named entry is refused anyway (its size or kind), if it is. A directory can
/// pass (the store looks at it again at every listing); a size no clip has is refused for
/// good (another entry at the path later is another clip). No size is no refusal: the clip
/// is seen, not stable yet ([`classify`]).
fn refusal(e: &FileEntry) -> Option<String> {
    if e.is_directory {
        return Some(store::REFUSED_AS_DIRECTORY.into());
    }
    match e.size {
        None => None,
        Some(s) if s < 0 => Some(format!("listing gives a negative size ({s})")),
        Some(s) if s as u64 > MAX_CLIP_BYTES => {
            Some(format!("listing gives an implausible size ({s} bytes)"))
        }
        _ => None,
    }
}

/// Why the selection (`sync.clips`, `sync.event_types`, `sync.camera_type`) skips a clip.
fn skip_reason(name: &ClipName, sync: &SyncConfig) -> Option<String> {
    let code = format!("_{}_", name.event_code());
    if sync.clips == ClipSelection::Events && !name.is_event() {
        Some("loop recording (sync.clips = \"events\")".into())
    } else if !sync.event_types.is_empty()
        && !sync
            .event_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&code))
    {
        Some(format!("event {code} not in sync.event_types"))
    } else if (sync.camera_type == "_1." && name.camera() != 1)
        || (sync.camera_type == "_2." && name.camera() != 2)
    {
        Some(format!(
            "camera not selected by sync.camera_type {:?}",
            sync.camera_type
        ))
    } else {
        None
    }
}

/// The two latest recording times of a camera channel (with repeats).
#[derive(Default)]
pub(crate) struct Latest {
    first: Option<String>,
    second: Option<String>,
}

impl Latest {
    pub(crate) fn add(&mut self, t: &str) {
        if self.first.as_deref().is_none_or(|f| t >= f) {
            self.second = self.first.replace(t.to_string());
        } else if self.second.as_deref().is_none_or(|s| t >= s) {
            self.second = Some(t.to_string());
        }
    }

    /// Whether at least two clips of the channel started strictly after `t`.
    pub(crate) fn two_newer_than(&self, t: &str) -> bool {
        self.second.as_deref().is_some_and(|s| s > t)
    }
}

/// New refusals logged one by one per listing page; the rest are counted in one line.
const REFUSALS_LOGGED_PER_PAGE: usize = 5;

/// The log lines for the entries a page refused for the first time: one per entry (it is
/// in the store from now on, and `status` lists it) for the first few, then one line for
/// the rest, so a camera that lists thousands of hostile entries cannot flood the log.
/// Camera text is cleaned of control characters and cut short ([`qucam::excerpt`]): it
/// cannot forge a log line.
fn refusal_lines(refused: &[(String, String)]) -> Vec<String> {
    let mut lines: Vec<String> = refused
        .iter()
        .take(REFUSALS_LOGGED_PER_PAGE)
        .map(|(path, why)| {
            let (path, why) = (qucam::excerpt(path), qucam::excerpt(why));
            format!("listing entry refused: {why} (path {path})")
        })
        .collect();
    let more = refused.len().saturating_sub(REFUSALS_LOGGED_PER_PAGE);
    if more > 0 {
        lines.push(format!(
            "{more} more listing entries refused on this page (`status` lists them)"
        ));
    }
    lines
}

/// What one pass has read of the listing so far.
#[derive(Default)]
struct Reading {
    /// Paths listed.
    seen: HashSet<String>,
    /// The two latest recording times seen per camera channel: a clip with two newer
    /// clips on its channel has finished recording.
    latest: HashMap<i64, Latest>,
    /// Entries read (repeats included).
    total: usize,
}

/// One camera's listing, read for one pass (the camera confirmed as `imei`).
pub(super) struct Listing<'a> {
    pub(super) client: &'a CameraClient,
    pub(super) imei: &'a str,
    pub(super) store: &'a Store,
    pub(super) sync: &'a SyncConfig,
    pub(super) spool: &'a Spool,
    /// Asked whether the bucket is in reach, to look for clips that left the camera there,
    /// and to forget uploads begun from bytes the camera no longer lists.
    pub(super) uploader: &'a Uploader,
    pub(super) events: &'a Events,
    pub(super) stops: &'a Stops,
    /// Whether this camera was already reported as not performing its deletes.
    pub(super) warned_not_deleting: &'a AtomicBool,
    /// Whether the delete challenge is on (see `Store::reconcile_page_with`).
    pub(super) challenge: bool,
    /// Rows this pass added to the store (see [`MAX_NEW_ROWS_PER_PASS`]).
    pub(super) new_rows: AtomicUsize,
    /// Whether this pass warned that new clips wait for the next pass.
    pub(super) warned_cap: AtomicBool,
}

impl Listing<'_> {
    async fn list_page(&self, offset: u32) -> Result<Vec<FileEntry>, CameraError> {
        let client = self.client;
        let q = ListQuery {
            count: Some(self.sync.page_size),
            offset: Some(offset),
            // Firmware before V2.1 ignores `count` and sends the whole listing at once.
            max_entries: Some(MAX_LISTING),
            ..Default::default()
        };
        (|| async { client.list_files(&q).await })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(8)
                    .with_jitter(),
            )
            .when(|e: &CameraError| matches!(e, CameraError::Busy))
            .await
    }

    /// Pages through the whole listing, reconciling each page; then re-reads the head
    /// until a page brings nothing new (clips recorded while paging shift offsets).
    pub(super) async fn reconcile(&self) -> Result<()> {
        let imei = self.imei;
        let mut r = Reading::default();
        self.page_through(&mut r).await?;
        let lost = self.settle_missing(&r.seen).await?;
        self.page_through(&mut r).await?;
        debug!(imei = %imei, clips = r.seen.len(), lost, "listing reconciled");
        Ok(())
    }

    /// Right before retention: pages through the listing once more, reconciling it (a clip
    /// rewritten or grown since the pass's listing becomes a new generation, and its old one
    /// is never deleted for). Returns when this listing began (ms): retention deletes only
    /// clips it showed with their verified size and `date`.
    pub(super) async fn for_retention(&self) -> Result<i64> {
        let since = store::now_ms();
        self.page_through(&mut Reading::default())
            .await
            .context("listing again before deleting")?;
        Ok(since)
    }

    /// Pages through the listing from offset 0, reconciling each page into `r`, until a
    /// short page or a page with nothing new to `r`. Each page is read between two checks
    /// of the IMEI (the one before the listing, or after the page before, and one right
    /// after it) and reconciled only if both found the pass's camera: another camera's
    /// listing is never taken for ours (the pass stops as a swap, see `identity`).
    async fn page_through(&self, r: &mut Reading) -> Result<()> {
        let (client, imei) = (self.client, self.imei);
        let page_size = self.sync.page_size as usize;
        let mut offset = 0u32;
        confirm_imei(client, imei)
            .await
            .context("not listing the camera")?;
        loop {
            if self.stops.shutdown.is_cancelled() {
                return Err(anyhow!("shutting down"));
            }
            let page = self
                .list_page(offset)
                .await
                .with_context(|| format!("listing at offset {offset}"))?;
            confirm_imei(client, imei)
                .await
                .with_context(|| format!("not taking the listing at offset {offset}"))?;
            let n = page.len();
            let fresh = self.reconcile_page(&page, r).await?;
            crate::agent::heartbeat::beat();
            if r.total > MAX_LISTING {
                return Err(anyhow!(
                    "listing has more than {MAX_LISTING} entries: giving up"
                ));
            }
            // A short page ends the listing; so does a camera that ignores `count`
            // (firmware before V2.1 sends everything at once) or repeats itself.
            if n != page_size || fresh == 0 {
                return Ok(());
            }
            offset += n as u32;
        }
    }

    /// Classifies and reconciles one page into the store. Returns how many of its paths
    /// were new to this pass.
    async fn reconcile_page(&self, page: &[FileEntry], r: &mut Reading) -> Result<usize> {
        let mut fresh = 0;
        let mut listed = Vec::with_capacity(page.len());
        for e in page {
            if r.seen.insert(e.path.clone()) {
                fresh += 1;
            }
            let l = classify(e, self.sync, store::now() * 1000);
            if l.refuse.is_none() {
                r.latest.entry(l.camera).or_default().add(&l.recorded_at);
            }
            listed.push(l);
        }
        let finished: HashSet<String> = listed
            .iter()
            .filter(|l| {
                l.refuse.is_none()
                    && r.latest
                        .get(&l.camera)
                        .is_some_and(|t| t.two_newer_than(&l.recorded_at))
            })
            .map(|l| l.path.clone())
            .collect();
        let mut dedup = HashSet::new();
        listed.retain(|l| dedup.insert(l.path.clone()));
        self.cap_new_rows(&mut listed).await?;
        let done = self
            .store
            .reconcile_page_with(self.imei, listed, finished, self.challenge)
            .await?;
        if let Some((clips, ms)) = done.shifted {
            info!(
                imei = %self.imei, clips, shift_minutes = ms / 60_000,
                "the camera's clock or time zone moved: clips listed with every `date` shifted alike are the same clips, their bytes checked before any delete"
            );
        }
        if done.delete_not_taken > 0 && !self.warned_not_deleting.swap(true, Ordering::Relaxed) {
            // Once per camera: `status` and `/metrics` keep the count.
            warn!(
                imei = %self.imei,
                clips = done.delete_not_taken,
                "the camera acknowledges deletes but still lists the clips (a read-only card?): they stay verified, not offloaded again, and their deletes are tried again later"
            );
        }
        for line in refusal_lines(&done.refused) {
            warn!(imei = %self.imei, "{line}");
        }
        for c in done.stale_parts {
            // Its file changed on the camera before it was downloaded (parts sent from the
            // old bytes while they downloaded are never completed).
            let _ = tokio::fs::remove_file(self.spool.part_path(&c)).await;
            self.uploader.forget_upload(&c).await;
        }
        r.total += page.len();
        self.new_rows.fetch_add(done.new, Ordering::Relaxed);
        Ok(fresh)
    }

    /// Keeps in `listed` only as many paths new to the store as this pass may still record
    /// ([`MAX_NEW_ROWS_PER_PASS`]), most severe first; the others wait for the next pass
    /// (a warning, once per pass, says how many).
    async fn cap_new_rows(&self, listed: &mut Vec<Listed>) -> Result<()> {
        let left = MAX_NEW_ROWS_PER_PASS.saturating_sub(self.new_rows.load(Ordering::Relaxed));
        if listed.len() <= left {
            return Ok(());
        }
        let paths = listed.iter().map(|l| l.path.clone()).collect();
        let unknown = self.store.unknown_paths(self.imei, paths).await?;
        if unknown.len() <= left {
            return Ok(());
        }
        let mut new: Vec<&Listed> = listed
            .iter()
            .filter(|l| unknown.contains(&l.path))
            .collect();
        new.sort_by_key(|l| l.priority);
        let admitted: HashSet<String> = new.iter().take(left).map(|l| l.path.clone()).collect();
        let waiting = unknown.len() - admitted.len();
        listed.retain(|l| !unknown.contains(&l.path) || admitted.contains(&l.path));
        if !self.warned_cap.swap(true, Ordering::Relaxed) {
            warn!(
                imei = %self.imei, waiting,
                "the camera lists more new clips than one pass records ({MAX_NEW_ROWS_PER_PASS}): the rest wait for the next pass"
            );
        }
        Ok(())
    }

    /// Marks the clips not in `seen` as missing, then settles every lost clip not yet
    /// looked for in the bucket (including those a kill or an unreachable bucket left
    /// unchecked in an earlier pass). Returns how many were confirmed lost.
    async fn settle_missing(&self, seen: &HashSet<String>) -> Result<usize> {
        let imei = self.imei;
        let mut lost = 0;
        for c in self.store.mark_missing(imei, seen.clone()).await? {
            let _ = std::fs::remove_file(self.spool.part_path(&c));
            if c.upload_id.is_some() {
                self.uploader.forget_upload(&c).await;
            }
        }
        if !self.uploader.bucket_reachable() {
            // The bucket is out of reach while the radio is on the camera's hotspot: the
            // clips that left the camera are checked in it on a later pass.
            return Ok(lost);
        }
        for c in self.store.lost_unchecked(imei).await? {
            let Some(found) = self.uploader.in_bucket(&c).await else {
                continue; // checked again next pass
            };
            if found {
                let moved = self.store.found_elsewhere(c.id).await?;
                if moved {
                    info!(imei = %imei, clip = %c.name, "clip left the camera; another agent had offloaded it (its object is in the bucket)");
                }
                continue;
            }
            if self.store.lost_confirmed(c.id).await? {
                warn!(imei = %imei, clip = %c.name, "clip lost: it left the camera before it was offloaded");
                self.events.emit(AgentEvent::Lost {
                    imei: imei.to_string(),
                    clip: c.name.clone(),
                });
                lost += 1;
            }
        }
        Ok(lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_700_000_000_000;

    /// A plausible entry recorded an hour before `NOW_MS`.
    fn entry(name: &str) -> FileEntry {
        FileEntry {
            name: name.into(),
            path: format!("/sdcard/DCIM/{name}"),
            size: Some(1000),
            date_ms: Some(NOW_MS - 3_600_000),
            duration_ms: Some(60_000),
            is_directory: false,
        }
    }

    /// Everything selected; stable after two minutes.
    fn sync() -> SyncConfig {
        SyncConfig {
            clips: ClipSelection::All,
            stable_after: Duration::from_secs(120),
            ..SyncConfig::default()
        }
    }

    const EVENT: &str = "20210427_115134_04_2.mp4";
    const LOOP: &str = "20210427_115134_00_1.mp4";

    #[test]
    fn a_good_entry_is_selected_with_what_the_name_says() {
        let l = classify(&entry(EVENT), &sync(), NOW_MS);
        assert_eq!((l.refuse, l.skip, l.too_recent), (None, None, false));
        assert_eq!(l.event, "04");
        assert_eq!(l.camera, 2);
        assert_eq!(l.recorded_at, "2021-04-27 11:51:34");
        assert_eq!(l.priority, qucam::event_priority("04"));
        assert_eq!(l.size, 1000);
    }

    #[test]
    fn hostile_or_unusable_entries_are_refused() {
        let refused = |e: FileEntry| classify(&e, &sync(), NOW_MS).refuse;
        assert!(
            refused(FileEntry {
                name: "../evil.mp4".into(),
                ..entry(EVENT)
            })
            .is_some()
        );
        assert!(
            refused(FileEntry {
                path: format!("/sdcard/../{EVENT}"),
                ..entry(EVENT)
            })
            .is_some()
        );
        let why = |e: FileEntry| refused(e).unwrap_or_default();
        // No size is no refusal: a clip still being written is seen, never stable yet.
        let sizeless = classify(
            &FileEntry {
                size: None,
                ..entry(EVENT)
            },
            &sync(),
            NOW_MS,
        );
        assert_eq!(
            (sizeless.refuse, sizeless.size_unknown, sizeless.too_recent),
            (None, true, true)
        );
        assert!(
            why(FileEntry {
                size: Some(-1),
                ..entry(EVENT)
            })
            .contains("negative")
        );
        let too_big = MAX_CLIP_BYTES as i64 + 1;
        assert!(
            why(FileEntry {
                size: Some(too_big),
                ..entry(EVENT)
            })
            .contains("implausible")
        );
        assert_eq!(
            refused(FileEntry {
                size: Some(MAX_CLIP_BYTES as i64),
                ..entry(EVENT)
            }),
            None
        );
        // A directory is refused as such, whatever its size.
        assert_eq!(
            why(FileEntry {
                is_directory: true,
                size: None,
                ..entry(EVENT)
            }),
            "listed as a directory"
        );
        let l = classify(
            &FileEntry {
                size: Some(-5),
                ..entry(EVENT)
            },
            &sync(),
            NOW_MS,
        );
        assert_eq!(
            (l.size, l.skip),
            (0, None),
            "a refused entry is not also skipped"
        );
    }

    #[test]
    fn refusals_are_logged_clean_and_a_few_per_page() {
        let hostile = |i: usize| {
            (
                format!("/s/{i}.mp4\nINFO forged line\u{1b}[31m"),
                "bad name \"x\nERROR forged\"".to_string(),
            )
        };
        let lines = refusal_lines(&(0..1000).map(hostile).collect::<Vec<_>>());
        assert_eq!(lines.len(), REFUSALS_LOGGED_PER_PAGE + 1);
        assert!(lines.last().is_some_and(|l| l.starts_with("995 more")));
        for l in &lines {
            assert!(!l.chars().any(char::is_control), "{l:?}");
        }
        assert_eq!(
            refusal_lines(&[hostile(1)]).len(),
            1,
            "no summary for a few"
        );
        assert!(refusal_lines(&[]).is_empty());
    }

    #[test]
    fn the_selection_skips_what_it_does_not_want() {
        let skip = |name: &str, s: SyncConfig| classify(&entry(name), &s, NOW_MS).skip;
        assert_eq!(skip(LOOP, sync()), None, "sync.clips = \"all\" takes loops");
        let events = SyncConfig {
            clips: ClipSelection::Events,
            ..sync()
        };
        assert!(skip(LOOP, events.clone()).is_some_and(|r| r.contains("loop recording")));
        assert_eq!(skip(EVENT, events), None);
        let only_08 = SyncConfig {
            event_types: vec!["_08_".into()],
            ..sync()
        };
        assert!(skip(EVENT, only_08).is_some_and(|r| r.contains("_04_")));
        let has_04 = SyncConfig {
            event_types: vec!["_08_".into(), "_04_".into()],
            ..sync()
        };
        assert_eq!(skip(EVENT, has_04), None);
        let cam1 = SyncConfig {
            camera_type: "_1.".into(),
            ..sync()
        };
        assert!(skip(EVENT, cam1.clone()).is_some(), "camera 2 skipped");
        assert_eq!(skip(LOOP, cam1), None, "camera 1 selected");
        let cam2 = SyncConfig {
            camera_type: "_2.".into(),
            ..sync()
        };
        assert!(skip(LOOP, cam2.clone()).is_some());
        assert_eq!(skip(EVENT, cam2), None);
    }

    #[test]
    fn a_clip_recorded_within_stable_after_may_still_be_recording() {
        let at = |date_ms: Option<i64>, s: &SyncConfig| {
            classify(
                &FileEntry {
                    date_ms,
                    ..entry(EVENT)
                },
                s,
                NOW_MS,
            )
            .too_recent
        };
        let s = sync(); // stable after 120 s
        assert!(at(Some(NOW_MS - 119_000), &s));
        assert!(!at(Some(NOW_MS - 120_000), &s));
        assert!(at(None, &s), "no recording time: assumed recent");
        let off = SyncConfig {
            stable_after: Duration::ZERO,
            ..sync()
        };
        assert!(!at(Some(NOW_MS), &off), "stable_after = 0 never holds back");
    }

    #[test]
    fn a_clip_is_finished_once_two_clips_of_its_channel_started_after_it() {
        let mut l = Latest::default();
        assert!(!l.two_newer_than("1"));
        l.add("5");
        assert!(!l.two_newer_than("1"), "one newer clip is not enough");
        l.add("3");
        assert!(l.two_newer_than("2"));
        assert!(!l.two_newer_than("3"), "strictly newer");
        l.add("9");
        // The two latest are now 9 and 5.
        assert!(l.two_newer_than("4"));
        assert!(!l.two_newer_than("5"));
        l.add("1");
        assert!(!l.two_newer_than("5"), "an older clip changes nothing");
        let mut same = Latest::default();
        same.add("7");
        same.add("7");
        assert!(same.two_newer_than("6"), "repeats count");
    }
}
