//! Reading a camera's listing into the store: [`classify`] each entry (refused, skipped,
//! selected, too recent), page through the listing reconciling each page, tell which
//! clips finished recording ([`Latest`]), then settle the clips that left the camera
//! (lost, or offloaded by another agent when their object is in the bucket). A pass
//! records at most [`MAX_NEW_ROWS_PER_PASS`] paths new to the store (most severe first):
//! the rest wait for the next pass, so a hostile or broken camera's rows grow slowly.
//!
//! **Full and windowed listings.** A camera's first listing is a full one; so is one every
//! `sync.full_listing_every`, one after another camera answered at the address, one after
//! the camera's clock or time zone moved, and every listing of a camera whose windows
//! cannot be trusted. In between, a pass lists only the window since the newest clip known
//! (the high-water mark, `store::ListingWindow`) less `sync.window_margin`, asked for with
//! `time_type` ([`plan`]). Only a full listing settles clips that left the camera: a window
//! that does not list a clip it must contain (one on the camera recorded inside it) is
//! followed by a full listing at once, which tells a clip that left the camera from a
//! window that missed it (the camera is then listed in full from now on, with a warning).
//!
//! **IMEI checks.** Every page of a full listing is read between two IMEI checks and taken
//! only if both found the pass's camera. A window is read right after the pass's probe
//! (the check before it); a page of it that brings something to act on (a clip new or
//! changed, `store::Store::page_is_settled`) is checked after it too, and an idle page
//! is not: reconciling it changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use backon::{ExponentialBuilder, Retryable};
use chrono::{NaiveDateTime, TimeDelta};
use tracing::{debug, info, warn};

use qucam::{CameraClient, CameraError, ClipName, FileEntry, ListQuery};

use super::identity::confirm_imei;
use crate::agent::events::Events;
use crate::agent::spool::Spool;
use crate::agent::uploader::Uploader;
use crate::agent::{AgentEvent, MAX_CLIP_BYTES, MAX_LISTING, Stops};
use crate::config::{ClipSelection, SyncConfig};
use crate::store::{self, Listed, ListingWindow, Store};

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

/// How a window's reading ended.
enum WindowEnd {
    /// Every clip the window must contain was listed.
    Complete,
    /// Clips on the camera recorded inside the window were not listed (their paths).
    Missed(Vec<String>),
    /// The camera's `date` offset moved: a clock or time-zone change.
    ClockMoved,
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
    /// The newest recording time listed (`recorded_at` form), with its `date` offset.
    newest: Option<(String, Option<i64>)>,
    /// The oldest recording time listed (`recorded_at` form).
    oldest: Option<String>,
    /// A page brought something to act on (see [`Checks::WhenActing`]).
    acted: bool,
}

/// The `recorded_at` form of the store (the camera's clock, from the clip name).
const RECORDED: &str = "%Y-%m-%d %H:%M:%S";
/// The form of each end of `time_type`.
const TIME_TYPE: &str = "%Y%m%d%H%M%S";
/// A change of a camera's `date` offset from its clip names this large (ms) is a clock or
/// time-zone change: the next listing is a full one.
const OFFSET_JUMP_MS: i64 = 15 * 60 * 1000;

/// A listing's `date` less the time its clip name says (read as UTC), in ms.
fn date_offset(recorded_at: &str, date_ms: Option<i64>) -> Option<i64> {
    let t = NaiveDateTime::parse_from_str(recorded_at, RECORDED).ok()?;
    date_ms?.checked_sub(t.and_utc().timestamp_millis())
}

/// The window a pass lists (see [`plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Window {
    /// The first recording time it covers (`recorded_at` form): every clip on the camera
    /// recorded at or after it must be listed.
    pub(crate) from: String,
    /// Sent as `time_type`: `<from>:<to>`.
    pub(crate) time_type: String,
    /// Clips listed from before this (`recorded_at` form) are outside the window even if
    /// the camera filters on the end of a recording: a camera that lists them ignores the
    /// window.
    pub(crate) outside_before: String,
    /// Sent as `event_type`: the events the selection wants (empty: every clip). With
    /// `sync.clips = "events"`, a window does not list loop recordings.
    pub(crate) event_types: Vec<String>,
    /// Sent as `camera_type`: `sync.camera_type`.
    pub(crate) camera_type: String,
}

impl Window {
    /// Whether the window asks for clips with event code `event` of camera `camera`.
    pub(crate) fn asks_for(&self, event: &str, camera: i64) -> bool {
        let code = format!("_{event}_");
        let event_ok = self.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(&code));
        let camera_ok = match self.camera_type.as_str() {
            "_1." => camera == 1,
            "_2." => camera == 2,
            _ => true,
        };
        event_ok && camera_ok
    }
}

/// The clip selection, as the store keeps it with a full listing: a window is read only
/// with the selection of the last full listing (clips skipped then may be wanted now).
pub(crate) fn selection(sync: &SyncConfig) -> String {
    format!(
        "clips={:?} event_types={:?} camera_type={:?}",
        sync.clips, sync.event_types, sync.camera_type
    )
}

/// The events a window asks for: `sync.event_types`, else every event code when only
/// events are selected (an event code the agent does not know waits for the next full
/// listing), else none (every clip).
fn window_events(sync: &SyncConfig) -> Vec<String> {
    if !sync.event_types.is_empty() {
        sync.event_types.clone()
    } else if sync.clips == ClipSelection::Events {
        qucam::EVENT_CODES
            .iter()
            .map(|c| format!("_{c}_"))
            .collect()
    } else {
        Vec::new()
    }
}

/// The window a pass over a camera lists at `now_ms`, given what the store keeps of its
/// listing (`st`), or why it lists in full: a first listing, a camera without clips, a full
/// listing due (every `sync.full_listing_every`; `"0s"` is every pass), windows that cannot
/// be trusted, or `force_full` (another camera answered at the address). The window reaches
/// back from the high-water mark by `sync.window_margin` (a high-water mark later than a
/// day past the agent's clock counts as that); it ends a year past the later of the
/// high-water mark and the agent's clock (a camera's clock may run ahead). It reaches
/// further back to the oldest clip a listing still has to settle (`unsettled`: one not
/// stable yet, or listed without a size or as a directory). It asks only for
/// the clips the selection wants ([`window_events`], `sync.camera_type`).
pub(crate) fn plan(
    st: Option<&ListingWindow>,
    unsettled: Option<&str>,
    sync: &SyncConfig,
    now_ms: i64,
    force_full: bool,
) -> Result<Window, &'static str> {
    if force_full {
        return Err("another camera answered at the address since the last pass");
    }
    if sync.full_listing_every.is_zero() {
        return Err("sync.full_listing_every = \"0s\"");
    }
    let Some(st) = st else {
        return Err("first listing");
    };
    if st.broken.is_some() {
        return Err("the camera's windowed listings cannot be trusted");
    }
    if st.selection.as_deref() != Some(selection(sync).as_str()) {
        return Err("the clip selection changed");
    }
    let every = sync.full_listing_every.as_millis() as i64;
    match st.full_listed_at {
        Some(at) if now_ms.saturating_sub(at) < every => {}
        _ => return Err("full listing due"),
    }
    let Some(high) = st
        .high_water
        .as_deref()
        .and_then(|h| NaiveDateTime::parse_from_str(h, RECORDED).ok())
    else {
        return Err("no clip known");
    };
    let now = chrono::DateTime::from_timestamp_millis(now_ms)
        .map(|t| t.naive_utc())
        .ok_or("the agent's clock is out of range")?;
    let margin = TimeDelta::from_std(sync.window_margin).map_err(|_| "margin out of range")?;
    let high = high.min(now + TimeDelta::days(1));
    let open = unsettled.and_then(|u| NaiveDateTime::parse_from_str(u, RECORDED).ok());
    let from = open.map_or(high - margin, |o| o.min(high - margin));
    let to = high.max(now) + TimeDelta::days(366);
    Ok(Window {
        from: from.format(RECORDED).to_string(),
        time_type: format!("{}:{}", from.format(TIME_TYPE), to.format(TIME_TYPE)),
        outside_before: (from - margin).format(RECORDED).to_string(),
        event_types: window_events(sync),
        camera_type: sync.camera_type.clone(),
    })
}

/// Which IMEI checks a page of a listing is read between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checks {
    /// One before the listing and one after each page.
    EveryPage,
    /// None before (the pass's probe, right before, was the check), and one after a page
    /// only when it brings something to act on.
    WhenActing,
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
    async fn list_page(
        &self,
        offset: u32,
        window: Option<&Window>,
    ) -> Result<Vec<FileEntry>, CameraError> {
        let client = self.client;
        let q = ListQuery {
            time_window: window.map(|w| w.time_type.clone()).unwrap_or_default(),
            event_types: window.map(|w| w.event_types.clone()).unwrap_or_default(),
            camera_type: window.map(|w| w.camera_type.clone()).unwrap_or_default(),
            count: Some(self.sync.page_size),
            offset: Some(offset),
            // Firmware before V2.1 ignores `count` and sends the whole listing at once.
            max_entries: Some(MAX_LISTING),
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

    /// Reads the camera's listing into the store: the window since the newest clip known,
    /// or the whole listing (see [`plan`]; `force_full`: another camera answered at the
    /// address since the last pass). A window that does not list a clip it must contain
    /// is followed by a full listing at once; when that one shows a clip the window left
    /// out, the camera's windows are not trusted any more (a warning says so).
    /// Returns whether the pass listed in full.
    pub(super) async fn reconcile(&self, force_full: bool) -> Result<bool> {
        let imei = self.imei;
        let st = self.store.listing_window(imei).await?;
        let unsettled = self.store.oldest_unsettled(imei).await?;
        let now = store::now_ms();
        let window = match plan(
            st.as_ref(),
            unsettled.as_deref(),
            self.sync,
            now,
            force_full,
        ) {
            Ok(w) => w,
            Err(why) => {
                debug!(imei = %imei, "listing in full: {why}");
                self.reconcile_full().await?;
                return Ok(true);
            }
        };
        let st = st.unwrap_or_default();
        let missed = match self.reconcile_window(&window, &st).await? {
            WindowEnd::Complete => return Ok(false),
            WindowEnd::ClockMoved => {
                info!(imei = %imei, "the camera's clock or time zone moved: listing in full");
                self.reconcile_full().await?;
                return Ok(true);
            }
            WindowEnd::Missed(missed) => missed,
        };
        debug!(imei = %imei, clips = missed.len(), "the window did not list clips recorded inside it: listing in full");
        let seen = self.reconcile_full().await?;
        let shown = missed.iter().filter(|p| seen.contains(*p)).count();
        if shown > 0 {
            warn!(
                imei = %imei, clips = shown,
                "the camera's listing by time (`time_type`) left out clips it still holds: listing it in full from now on"
            );
            let why = format!(
                "a listing by time (`time_type` {}) left out {shown} clip(s) the full listing showed",
                window.time_type
            );
            self.store.window_broken(imei, &why).await?;
        }
        Ok(true)
    }

    /// Pages through the whole listing, reconciling each page; then re-reads the head
    /// until a page brings nothing new (clips recorded while paging shift offsets). Records
    /// the camera's new high-water mark. Returns the paths listed.
    async fn reconcile_full(&self) -> Result<HashSet<String>> {
        let imei = self.imei;
        let mut r = Reading::default();
        self.page_through(&mut r, None, Checks::EveryPage).await?;
        let lost = self.settle_missing(&r.seen).await?;
        self.page_through(&mut r, None, Checks::EveryPage).await?;
        let (high, offset) = r.newest.clone().unzip();
        self.store
            .listed_in_full(imei, high, offset.flatten(), &selection(self.sync))
            .await?;
        debug!(imei = %imei, clips = r.seen.len(), lost, "listing reconciled");
        Ok(r.seen)
    }

    /// Pages through `window`, reconciling each page (see [`Checks::WhenActing`]), and once
    /// more when it brought something to act on (as a full listing re-reads its head), then
    /// checks it against what the store knows (`st`): the clips on the camera recorded
    /// inside it must all be listed; clips listed from well before it mean the camera
    /// ignores the window (kept for `status`); a `date` offset moved means the clock or
    /// time zone did. Nothing is settled as gone on a window's word.
    async fn reconcile_window(&self, window: &Window, st: &ListingWindow) -> Result<WindowEnd> {
        let imei = self.imei;
        let mut r = Reading::default();
        self.page_through(&mut r, Some(window), Checks::WhenActing)
            .await?;
        if r.acted {
            // As a full listing does: a clip listed again with its size is stable, and is
            // offloaded in this pass.
            self.page_through(&mut r, Some(window), Checks::WhenActing)
                .await?;
        }
        let missed: Vec<String> = self
            .store
            .on_camera_since(imei, &window.from)
            .await?
            .into_iter()
            .filter(|(p, event, camera)| window.asks_for(event, *camera) && !r.seen.contains(p))
            .map(|(p, _, _)| p)
            .collect();
        if !missed.is_empty() {
            return Ok(WindowEnd::Missed(missed));
        }
        let overreach = r
            .oldest
            .as_deref()
            .is_some_and(|o| o < window.outside_before.as_str());
        if overreach && !st.overreach {
            warn!(
                imei = %imei,
                "the camera lists clips from outside the window asked for (it seems to ignore `time_type`): each poll costs as much as a full listing (`status` says so)"
            );
        }
        let listed_high = r.newest.as_ref().map(|(h, _)| h.clone());
        let high = st.high_water.clone().max(listed_high);
        self.store.window_listed(imei, high, overreach).await?;
        let offset = r.newest.as_ref().and_then(|(_, o)| *o);
        if let (Some(was), Some(now)) = (st.date_offset_ms, offset)
            && now.abs_diff(was) >= OFFSET_JUMP_MS.unsigned_abs()
        {
            return Ok(WindowEnd::ClockMoved);
        }
        self.settle_lost().await?;
        debug!(imei = %imei, clips = r.seen.len(), window = %window.time_type, "window reconciled");
        Ok(WindowEnd::Complete)
    }

    /// Right before retention: pages through the whole listing once more, reconciling it
    /// (a clip rewritten or grown since the pass's listing becomes a new generation, and
    /// its old one is never deleted for). After a pass that listed only a window
    /// (`listed_in_full` false), this is the pass's full listing, and settles the clips
    /// that left the camera. Returns when this listing began (ms): retention deletes only
    /// clips it showed with their verified size and `date`.
    pub(super) async fn for_retention(&self, listed_in_full: bool) -> Result<i64> {
        let since = store::now_ms();
        if listed_in_full {
            self.page_through(&mut Reading::default(), None, Checks::EveryPage)
                .await
                .context("listing again before deleting")?;
        } else {
            self.reconcile_full()
                .await
                .context("listing in full before deleting")?;
        }
        Ok(since)
    }

    /// Pages through the listing (of `window`, or the whole of it) from offset 0,
    /// reconciling each page into `r`, until a short page or a page with nothing new to
    /// `r`. With [`Checks::EveryPage`], each page is read between two checks of the IMEI
    /// (the one before the listing, or after the page before, and one right after it) and
    /// reconciled only if both found the pass's camera: another camera's listing is never
    /// taken for ours (the pass stops as a swap, see `identity`). With
    /// [`Checks::WhenActing`], the check after a page is made only when the page brings
    /// something to act on.
    async fn page_through(
        &self,
        r: &mut Reading,
        window: Option<&Window>,
        checks: Checks,
    ) -> Result<()> {
        let (client, imei) = (self.client, self.imei);
        let page_size = self.sync.page_size as usize;
        let mut offset = 0u32;
        if checks == Checks::EveryPage {
            confirm_imei(client, imei)
                .await
                .context("not listing the camera")?;
        }
        loop {
            if self.stops.shutdown.is_cancelled() {
                return Err(anyhow!("shutting down"));
            }
            let page = self
                .list_page(offset, window)
                .await
                .with_context(|| format!("listing at offset {offset}"))?;
            let n = page.len();
            let (listed, finished, fresh) = self.read_page(&page, r);
            let check = match checks {
                Checks::EveryPage => true,
                Checks::WhenActing => !self.store.page_is_settled(imei, listed.clone()).await?,
            };
            r.acted |= check;
            if check {
                confirm_imei(client, imei)
                    .await
                    .with_context(|| format!("not taking the listing at offset {offset}"))?;
            }
            self.take_page(listed, finished).await?;
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

    /// Classifies one page into `r`. Returns its entries ready to reconcile (one per path),
    /// the paths known to have finished recording, and how many paths were new to `r`.
    fn read_page(
        &self,
        page: &[FileEntry],
        r: &mut Reading,
    ) -> (Vec<Listed>, HashSet<String>, usize) {
        let mut fresh = 0;
        let mut listed = Vec::with_capacity(page.len());
        for e in page {
            if r.seen.insert(e.path.clone()) {
                fresh += 1;
            }
            let l = classify(e, self.sync, store::now() * 1000);
            if l.refuse.is_none() {
                r.latest.entry(l.camera).or_default().add(&l.recorded_at);
                if r.newest.as_ref().is_none_or(|(t, _)| l.recorded_at > *t) {
                    r.newest = Some((
                        l.recorded_at.clone(),
                        date_offset(&l.recorded_at, l.date_ms),
                    ));
                }
                if r.oldest.as_ref().is_none_or(|t| l.recorded_at < *t) {
                    r.oldest = Some(l.recorded_at.clone());
                }
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
        r.total += page.len();
        (listed, finished, fresh)
    }

    /// Reconciles one classified page into the store.
    async fn take_page(&self, mut listed: Vec<Listed>, finished: HashSet<String>) -> Result<()> {
        self.cap_new_rows(&mut listed).await?;
        let done = self
            .store
            .reconcile_page_with(self.imei, listed, finished, self.challenge)
            .await?;
        self.new_rows.fetch_add(done.new, Ordering::Relaxed);
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
        Ok(())
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

    /// After a full listing: marks the clips not in `seen` as missing, then settles every
    /// lost clip not yet looked for in the bucket ([`Listing::settle_lost`]). Returns how
    /// many were confirmed lost.
    async fn settle_missing(&self, seen: &HashSet<String>) -> Result<usize> {
        for c in self.store.mark_missing(self.imei, seen.clone()).await? {
            let _ = std::fs::remove_file(self.spool.part_path(&c));
            if c.upload_id.is_some() {
                self.uploader.forget_upload(&c).await;
            }
        }
        self.settle_lost().await
    }

    /// Settles every lost clip not yet looked for in the bucket (including those a kill or
    /// an unreachable bucket left unchecked in an earlier pass). Returns how many were
    /// confirmed lost.
    async fn settle_lost(&self) -> Result<usize> {
        let imei = self.imei;
        let mut lost = 0;
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

    /// A camera listed in full a minute before `NOW_MS`, its newest clip `high`.
    fn known(high: &str) -> ListingWindow {
        ListingWindow {
            high_water: Some(high.into()),
            full_listed_at: Some(NOW_MS - 60_000),
            selection: Some(selection(&SyncConfig::default())),
            ..ListingWindow::default()
        }
    }

    #[test]
    fn a_window_reaches_back_by_the_margin_from_the_newest_clip_known() {
        let s = SyncConfig::default(); // margin 2h, full listing every 3h, events only
        let w = plan(Some(&known("2023-11-14 20:00:00")), None, &s, NOW_MS, false).unwrap();
        assert_eq!(w.from, "2023-11-14 18:00:00");
        assert!(
            w.time_type.starts_with("20231114180000:2024"),
            "{}",
            w.time_type
        );
        assert_eq!(w.outside_before, "2023-11-14 16:00:00");
        // Events only: loop recordings are not asked for.
        assert!(!w.event_types.is_empty());
        assert!(w.asks_for("04", 1) && !w.asks_for("00", 1));
        let all = SyncConfig {
            clips: ClipSelection::All,
            camera_type: "_2.".into(),
            ..SyncConfig::default()
        };
        assert_eq!(
            plan(
                Some(&known("2023-11-14 20:00:00")),
                None,
                &all,
                NOW_MS,
                false
            ),
            Err("the clip selection changed")
        );
        let listed_with_all = ListingWindow {
            selection: Some(selection(&all)),
            ..known("2023-11-14 20:00:00")
        };
        let w = plan(Some(&listed_with_all), None, &all, NOW_MS, false).unwrap();
        assert!(w.event_types.is_empty());
        assert!(w.asks_for("00", 2) && !w.asks_for("00", 1));
        // A high-water mark far in the future (a broken clock, a hostile name) counts as a
        // day past the agent's clock (NOW_MS is 2023-11-14 22:13:20 UTC).
        let w = plan(Some(&known("2031-01-01 00:00:00")), None, &s, NOW_MS, false).unwrap();
        assert_eq!(w.from, "2023-11-15 20:13:20");
        // A clip still to settle (not stable yet) further back: the window reaches it.
        let open = Some("2023-11-10 08:00:00");
        let w = plan(Some(&known("2023-11-14 20:00:00")), open, &s, NOW_MS, false).unwrap();
        assert_eq!(w.from, "2023-11-10 08:00:00");
        let w = plan(
            Some(&known("2023-11-14 20:00:00")),
            Some("2023-11-14 19:00:00"),
            &s,
            NOW_MS,
            false,
        )
        .unwrap();
        assert_eq!(
            w.from, "2023-11-14 18:00:00",
            "one inside reaches no further"
        );
    }

    #[test]
    fn a_full_listing_comes_first_then_on_its_cadence_and_when_windows_cannot_be_trusted() {
        let s = SyncConfig::default();
        let high = "2023-11-14 20:00:00";
        assert_eq!(plan(None, None, &s, NOW_MS, false), Err("first listing"));
        assert!(
            plan(Some(&known(high)), None, &s, NOW_MS, true).is_err(),
            "after a swap"
        );
        let due = ListingWindow {
            full_listed_at: Some(NOW_MS - 3 * 3_600_000),
            ..known(high)
        };
        assert_eq!(
            plan(Some(&due), None, &s, NOW_MS, false),
            Err("full listing due")
        );
        let broken = ListingWindow {
            broken: Some("missed".into()),
            ..known(high)
        };
        assert!(plan(Some(&broken), None, &s, NOW_MS, false).is_err());
        let empty = ListingWindow {
            high_water: None,
            ..known(high)
        };
        assert_eq!(
            plan(Some(&empty), None, &s, NOW_MS, false),
            Err("no clip known")
        );
        let off = SyncConfig {
            full_listing_every: Duration::ZERO,
            ..SyncConfig::default()
        };
        assert!(plan(Some(&known(high)), None, &off, NOW_MS, false).is_err());
    }

    #[test]
    fn the_date_offset_is_the_listing_date_less_the_name_time() {
        let ms = NaiveDateTime::parse_from_str("2023-11-14 20:00:00", RECORDED)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(
            date_offset("2023-11-14 20:00:00", Some(ms + 60_000)),
            Some(60_000)
        );
        assert_eq!(date_offset("2023-11-14 20:00:00", None), None);
        assert_eq!(date_offset("", Some(ms)), None);
        assert_eq!(date_offset("2023-11-14 20:00:00", Some(i64::MIN)), None);
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
