//! `qucam-offload status [--json]`: per camera, what the state database knows: clips
//! pending, offloaded today, lost and failed, uploads in flight, paused downloads, clips
//! from the spool quarantine, and uploads paused while the destination is down.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::agent;
use crate::config::Config;
use crate::store::{Clip, ClipState, HotspotRow, JoinFailure, Origin, Store, Suspicious, now};

/// One camera in `status`.
#[derive(Debug, Serialize)]
pub struct CameraStatus {
    pub imei: String,
    pub name: Option<String>,
    pub device: Option<String>,
    pub firmware: Option<String>,
    pub last_seen: i64,
    pub clips: BTreeMap<String, i64>,
    pub bytes_offloaded: i64,
    pub lost: i64,
    pub failures: Vec<Failure>,
    pub uploads_in_flight: Vec<String>,
    /// Why downloads from this camera are paused (e.g. the spool's disk is full).
    pub downloads_paused: Option<String>,
    /// Why uploads to the destination are paused (it is down or refuses the agent), and
    /// since when (Unix time); the same for every camera.
    pub uploads_paused: Option<(String, i64)>,
    /// Selected clips not yet verified (queued, downloading, downloaded, uploading, uploaded).
    pub pending: i64,
    /// Clips in `failed` (retried later) and `refused` (never).
    pub failed: i64,
    /// Clips verified in the destination since local midnight, and their bytes.
    pub uploaded_today: i64,
    pub uploaded_today_bytes: i64,
    /// Offloaded clips verified by size and metadata only (nothing the store reports ties
    /// their objects to the bytes: SSE-KMS/SSE-C without checksums), and the first reason.
    pub weakly_verified: i64,
    pub weakly_verified_why: Option<String>,
    /// Depot Wi-Fi: the camera's hotspot as last seen (none for a camera never met on one).
    pub hotspot: Option<HotspotStatus>,
    /// Depot Wi-Fi: verified clips whose deletes from the camera wait for its next visit.
    pub waiting_for_next_visit: i64,
    /// Clips whose delete the camera acknowledged but did not perform (still listed with
    /// the verified size and `date`): verified, their deletes tried again later.
    pub deletes_not_taken: usize,
    /// Why the delete challenge holds this camera's deletes, if it does.
    pub deletes_held: Option<String>,
    /// Clips offloaded from the spool quarantine (finished spool files a replaced state
    /// database did not name), in any state: never deleted from the camera.
    pub from_quarantine: i64,
    /// Of those, the ones not yet offloaded (their files still in the quarantine).
    pub from_quarantine_pending: i64,
    /// What is wrong with the camera's windowed listings, if anything: a window left out a
    /// clip (it is listed in full every poll), or returns clips outside it (each windowed
    /// poll costs as much as a full listing).
    pub listing_window: Option<String>,
}

/// A camera hotspot as the radio last saw it (times in Unix seconds). Never a password.
#[derive(Debug, Serialize)]
pub struct HotspotStatus {
    pub ssid: String,
    pub bssid: String,
    pub last_in_range: Option<i64>,
    pub last_joined: Option<i64>,
    /// Signal strength when last in range, percent.
    pub signal: Option<u8>,
    /// The password known for it was refused since the last join that succeeded (shown
    /// until a join succeeds, whatever failed after it).
    pub wrong_password: bool,
    /// Why the last join failed (`wrong_password`, `gone`, `activation_failed`, `timeout`,
    /// `networkmanager`, `suspicious`); none once a join succeeds.
    pub last_join_failure: Option<JoinFailure>,
    /// Failed joins in a row since the last one that succeeded.
    pub join_failures: u32,
    pub retry_at: Option<i64>,
    /// Why its network failed the check after a join (left at once, not joined again for
    /// `wifi.suspicious_for` unless its password changes); none when it did not.
    pub suspicious: Option<String>,
}

impl HotspotStatus {
    /// The hotspot camera `imei` was last seen behind, if any.
    fn of_camera(hotspots: &[HotspotRow], imei: &str) -> Option<HotspotStatus> {
        hotspots
            .iter()
            .filter(|h| h.imei.as_deref() == Some(imei))
            .max_by_key(|h| h.last_seen)
            .map(HotspotStatus::of)
    }

    fn of(h: &HotspotRow) -> HotspotStatus {
        let s = |ms: Option<i64>| ms.map(|t| t / 1000);
        HotspotStatus {
            ssid: h.ssid.clone(),
            bssid: h.bssid.clone(),
            last_in_range: s(h.last_seen),
            last_joined: s(h.last_joined),
            signal: h.signal,
            wrong_password: h.wrong_password,
            last_join_failure: h.last_failure,
            join_failures: h.failures,
            retry_at: s(h.retry_at),
            suspicious: suspicious_now(h).map(|m| m.reason.clone()),
        }
    }
}

/// Its suspicious mark, while it holds.
fn suspicious_now(h: &HotspotRow) -> Option<&Suspicious> {
    h.suspicious.as_ref().filter(|m| m.until > now() * 1000)
}

/// The hotspots whose network failed the check after a join, while the mark holds (a rogue
/// access point has no camera behind it: these are listed apart from the cameras).
pub async fn suspicious_hotspots(store: &Store) -> Result<Vec<HotspotRow>> {
    let rows = store.hotspots().await?;
    Ok(rows
        .into_iter()
        .filter(|h| suspicious_now(h).is_some())
        .collect())
}

/// One line per suspicious hotspot: SSID, BSSID, why, until when.
pub fn suspicious_lines(rows: &[HotspotRow]) -> Vec<String> {
    rows.iter()
        .filter_map(|h| {
            let m = suspicious_now(h)?;
            let left = in_secs((m.until / 1000 - now()).max(0));
            Some(format!(
                "{} ({}): SUSPICIOUS network, left at once: {}; not joined until its password changes or in {left}",
                h.ssid,
                h.bssid,
                m.reason
            ))
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub clip: String,
    pub state: String,
    pub attempts: i64,
    pub error: String,
    pub retry_after: Option<i64>,
}

/// Text that came from a camera, as `status` shows it: cut, control characters replaced.
fn shown(s: &str) -> String {
    qucam::text::clean(s, qucam::text::MESSAGE_CHARS)
}

/// What `status` says of a camera's windowed listings, when something is wrong with them.
fn window_note(w: &crate::store::ListingWindow) -> Option<String> {
    if let Some(why) = &w.broken {
        Some(format!("LISTED IN FULL at every poll: {}", shown(why)))
    } else if w.overreach {
        Some(
            "windowed listings return clips outside the window (the camera seems to ignore `time_type`): each poll costs as much as a full listing"
                .into(),
        )
    } else {
        None
    }
}

/// Everything `status` reports, per camera.
pub async fn collect_status(store: &Store) -> Result<Vec<CameraStatus>> {
    let mut out = Vec::new();
    let uploads_paused = store
        .notice(agent::DESTINATION_PAUSED_KEY.to_string())
        .await?;
    let hotspots = store.hotspots().await?;
    let not_taken = store.deletes_not_taken().await?;
    for cam in store.cameras().await? {
        let hotspot = HotspotStatus::of_camera(&hotspots, &cam.imei);
        let counts = store.counts(&cam.imei).await?;
        let clips: BTreeMap<String, i64> = counts
            .iter()
            .map(|r| (r.state.to_string(), r.clips))
            .collect();
        let count = |f: fn(ClipState) -> bool| -> i64 {
            counts.iter().filter(|r| f(r.state)).map(|r| r.clips).sum()
        };
        let bytes_offloaded = counts
            .iter()
            .filter(|r| r.state.is_offloaded())
            .map(|r| r.bytes)
            .sum();
        let all = store.clips_of(&cam.imei).await?;
        let failures = all
            .iter()
            .filter(|c| c.state.is_failure())
            .map(|c| Failure {
                clip: shown(&c.name),
                state: c.state.to_string(),
                attempts: c.attempts,
                error: c.reason.as_deref().map(shown).unwrap_or_default(),
                retry_after: c.retry_after,
            })
            .collect();
        let uploads_in_flight = all
            .iter()
            .filter(|c| c.state == ClipState::Uploading || c.upload_id.is_some())
            .map(|c| c.name.clone())
            .collect();
        let downloads_paused = store
            .notice(agent::pause_key(&cam.imei))
            .await?
            .map(|(m, _)| m);
        let weak = weak_proofs(&all);
        let (from_quarantine, from_quarantine_pending) = from_quarantine(&all);
        let pending = count(ClipState::is_pending);
        let failed = count(ClipState::is_failure);
        let today = store.tally(&cam.imei, local_midnight()).await?;
        let (uploaded_today, uploaded_today_bytes) =
            (today.verified as i64, today.verified_bytes as i64);
        let listing_window = store
            .listing_window(&cam.imei)
            .await?
            .and_then(|w| window_note(&w));
        out.push(CameraStatus {
            listing_window,
            deletes_not_taken: not_taken.get(&cam.imei).copied().unwrap_or(0),
            deletes_held: store
                .notice(agent::challenge_key(&cam.imei))
                .await?
                .map(|(m, _)| m),
            waiting_for_next_visit: match hotspot {
                Some(_) => clips.get("verified").copied().unwrap_or(0),
                None => 0,
            },
            hotspot,
            from_quarantine,
            from_quarantine_pending,
            downloads_paused,
            uploads_paused: uploads_paused.clone(),
            pending,
            failed,
            uploaded_today,
            uploaded_today_bytes,
            weakly_verified: weak.len() as i64,
            weakly_verified_why: weak.first().map(|w| (*w).to_owned()),
            lost: clips.get("lost").copied().unwrap_or(0),
            imei: cam.imei,
            name: cam.config_name,
            // Camera text, cleaned again here for rows an older version stored raw.
            device: cam.device_name.as_deref().map(shown),
            firmware: cam.firmware.as_deref().map(shown),
            last_seen: cam.last_seen,
            clips,
            bytes_offloaded,
            failures,
            uploads_in_flight,
        });
    }
    Ok(out)
}

/// Why offloaded clips among `all` were verified by size and metadata only, one each.
fn weak_proofs(all: &[Clip]) -> Vec<&str> {
    all.iter()
        .filter(|c| c.state.is_offloaded())
        .filter_map(|c| c.weak_proof.as_deref())
        .collect()
}

/// Clips from the spool quarantine among `all`, and those of them still to offload.
fn from_quarantine(all: &[Clip]) -> (i64, i64) {
    let from: Vec<&Clip> = all.iter().filter(|c| c.origin == Origin::Spool).collect();
    let pending = from.iter().filter(|c| c.state.is_still_to_do()).count();
    (from.len() as i64, pending as i64)
}

fn ago(t: i64) -> String {
    let d = (now() - t).max(0);
    match d {
        0..=59 => format!("{d}s ago"),
        60..=3599 => format!("{}m ago", d / 60),
        3600..=86399 => format!("{}h ago", d / 3600),
        _ => format!("{}d ago", d / 86400),
    }
}

/// Unix time of the last local midnight.
fn local_midnight() -> i64 {
    use chrono::TimeZone as _;
    let today = chrono::Local::now().date_naive();
    today
        .and_hms_opt(0, 0, 0)
        .and_then(|t| chrono::Local.from_local_datetime(&t).earliest())
        .map_or(now() - now().rem_euclid(86_400), |t| t.timestamp())
}

/// A size in at most 5 characters: `512B`, `12k`, `1.2M`, `340M`, `2.0G`.
fn short_bytes(b: i64) -> String {
    let b = b.max(0) as f64;
    let (v, unit) = match b {
        x if x < 1e3 => return format!("{b}B"),
        x if x < 1e6 => (x / 1e3, "k"),
        x if x < 1e9 => (x / 1e6, "M"),
        x if x < 1e12 => (x / 1e9, "G"),
        x => (x / 1e12, "T"),
    };
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

/// `s` cut to `n` characters (with `…` when cut).
fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The status table (80 columns), then failures and notices below it.
pub fn format_status(st: &[CameraStatus]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    if st.is_empty() {
        o.push_str("no camera seen yet\n");
        return o;
    }
    let _ = writeln!(
        o,
        "{:<12}  {:<15}  {:<9}  {:>7}  {:>14}  {:>4}  {:>6}",
        "CAMERA", "IMEI", "LAST SEEN", "PENDING", "UPLOADED TODAY", "LOST", "FAILED"
    );
    for c in st {
        let today = format!(
            "{} ({})",
            c.uploaded_today,
            short_bytes(c.uploaded_today_bytes)
        );
        let _ = writeln!(
            o,
            "{:<12}  {:<15}  {:<9}  {:>7}  {:>14}  {:>4}  {:>6}",
            fit(c.name.as_deref().unwrap_or("?"), 12),
            fit(&c.imei, 15),
            ago(c.last_seen),
            c.pending,
            today,
            c.lost,
            c.failed
        );
    }
    let label = |c: &CameraStatus| c.name.clone().unwrap_or_else(|| c.imei.clone());
    let notes = notes(st);
    if !notes.is_empty() {
        o.push('\n');
        for n in notes {
            let _ = writeln!(o, "{n}");
        }
    }
    if st.iter().any(|c| !c.failures.is_empty()) {
        o.push_str("\nfailures:\n");
        for c in st {
            for f in &c.failures {
                let retry = match f.retry_after {
                    Some(t) if f.state == "failed" && t > now() => {
                        format!(", retry in {}", in_secs(t - now()))
                    }
                    _ => String::new(),
                };
                let _ = writeln!(
                    o,
                    "  {} {} {} (attempts {}{retry})\n    {}",
                    label(c),
                    f.clip,
                    f.state,
                    f.attempts,
                    f.error
                );
            }
        }
    }
    o
}

/// The notices below the table: uploads paused (once), then per camera downloads paused,
/// clips from the spool quarantine waiting, and uploads in flight.
fn notes(st: &[CameraStatus]) -> Vec<String> {
    let label = |c: &CameraStatus| c.name.clone().unwrap_or_else(|| c.imei.clone());
    let paused = st.iter().find_map(|c| c.uploads_paused.as_ref());
    let uploads = paused.map(|(why, since)| format!("  {why} (since {})", ago(*since)));
    uploads
        .into_iter()
        .chain(st.iter().flat_map(|c| {
            let mut v = Vec::new();
            if let Some(p) = &c.downloads_paused {
                v.push(format!("  {}: {p}", label(c)));
            }
            if c.deletes_not_taken > 0 {
                v.push(format!(
                    "  {}: NOT DELETING: the camera acknowledged deleting {} clip(s) but still lists them (a read-only card?); they stay verified and are deleted again later",
                    label(c),
                    c.deletes_not_taken
                ));
            }
            if let Some(why) = &c.deletes_held {
                v.push(format!("  {}: DELETES HELD: {why}", label(c)));
            }
            if let Some(w) = &c.listing_window {
                v.push(format!("  {}: {w}", label(c)));
            }
            if let Some(why) = &c.weakly_verified_why {
                v.push(format!(
                    "  {}: {} clip(s) verified by size and metadata only ({why}); with checksum = \"sha256\" a store that keeps checksums ties objects to their bytes",
                    label(c),
                    c.weakly_verified
                ));
            }
            if c.from_quarantine_pending > 0 {
                v.push(format!(
                    "  {}: {} clip(s) from the spool quarantine (spool files the state database did not name) waiting to be offloaded; never deleted from the camera",
                    label(c),
                    c.from_quarantine_pending
                ));
            }
            if let Some(h) = &c.hotspot {
                v.push(hotspot_note(&label(c), h, c.waiting_for_next_visit));
            }
            if !c.uploads_in_flight.is_empty() {
                v.push(format!(
                    "  {}: uploads in flight: {}",
                    label(c),
                    c.uploads_in_flight.join(", ")
                ));
            }
            v
        }))
        .collect()
}

/// One camera's hotspot line: in range when, joined when, signal, what waits for its next
/// visit, why the last join failed (a refused password in capitals).
fn hotspot_note(label: &str, h: &HotspotStatus, waiting: i64) -> String {
    let when = |t: Option<i64>| t.map_or_else(|| "never".to_string(), ago);
    let mut n = format!(
        "  {label}: hotspot {} ({}), in range {}, joined {}, signal {}",
        h.ssid,
        h.bssid,
        when(h.last_in_range),
        when(h.last_joined),
        h.signal.map_or_else(|| "?".into(), |s| format!("{s}%"))
    );
    if waiting > 0 {
        n.push_str(&format!(
            "; {waiting} clip(s) verified, deletes at next visit"
        ));
    }
    if let Some(why) = h.last_join_failure {
        let retry = match h.retry_at {
            Some(t) if t > now() => format!("in {}", in_secs(t - now())),
            _ => "at the next scan".to_string(),
        };
        let in_a_row = match h.join_failures {
            0 | 1 => String::new(),
            k => format!(" ({k} in a row)"),
        };
        if let Some(r) = &h.suspicious {
            n.push_str(&format!("; SUSPICIOUS network, left at once: {r}"));
        }
        n.push_str(&if why.counts_as_wrong_password() {
            format!("; last join failed: WRONG PASSWORD, not joined until it changes or {retry}")
        } else {
            format!(
                "; last join failed: {}{in_a_row}, tried again {retry}",
                why.describe()
            )
        });
    }
    n
}

fn in_secs(d: i64) -> String {
    match d {
        ..=59 => format!("{d}s"),
        60..=3599 => format!("{}m", d / 60),
        _ => format!("{}h", d / 3600),
    }
}

/// Prints the status of the store at `state_dir`.
pub async fn print_status(store: &Store, json: bool) -> Result<()> {
    let st = collect_status(store).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", format_status(&st));
        let lines = suspicious_lines(&suspicious_hotspots(store).await?);
        if !lines.is_empty() {
            println!("suspicious hotspots (docs/depot-wifi.md):");
            for l in lines {
                println!("  {l}");
            }
        }
    }
    Ok(())
}

/// `status`: the state database of the config's state dir, as a table or JSON.
pub async fn status(config: Option<&Path>, json: bool) -> Result<u8> {
    let cfg = Config::find_and_load(config)?;
    let db = agent::db_path(&cfg.state_dir());
    if !db.exists() {
        if json {
            println!("[]");
        } else {
            println!("no state yet at {} (the agent has not run)", db.display());
        }
        return Ok(0);
    }
    let store = Store::open(&db)?;
    print_status(&store, json).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::CameraRow;

    const BSSID: &str = "0A:00:00:00:00:10";
    const IMEI: &str = "867867432500010";

    /// A store with camera `truck-0` met behind its hotspot.
    async fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.db")).unwrap();
        let cam = CameraRow {
            imei: IMEI.into(),
            config_name: Some("truck-0".into()),
            url: None,
            device_name: None,
            firmware: None,
            storage: None,
            first_seen: 0,
            last_seen: 0,
        };
        s.camera_seen(cam).await.unwrap();
        let seen = vec![(BSSID.to_string(), "truck-0".to_string(), 61)];
        s.hotspots_seen(seen, now() * 1000).await.unwrap();
        s.hotspot_identified(BSSID.into(), IMEI.into())
            .await
            .unwrap();
        (d, s)
    }

    async fn fail(s: &Store, why: JoinFailure, retry_in_s: i64) {
        let at = (now() + retry_in_s) * 1000;
        s.hotspot_failed(BSSID.into(), why, "fp".into(), move |_| at)
            .await
            .unwrap();
    }

    /// The text and the JSON of `status`.
    async fn shown(s: &Store) -> (String, serde_json::Value) {
        let st = collect_status(s).await.unwrap();
        let mut json = serde_json::to_value(&st).unwrap();
        (format_status(&st), json[0]["hotspot"].take())
    }

    #[tokio::test]
    async fn the_last_join_failure_shows_with_its_reason_until_a_join_succeeds() {
        let (_d, s) = store().await;
        let (text, json) = shown(&s).await;
        assert!(
            text.contains("hotspot truck-0 (0A:00:00:00:00:10)"),
            "{text}"
        );
        assert!(!text.contains("last join failed"), "{text}");
        assert_eq!(json["last_join_failure"], serde_json::Value::Null);
        assert_eq!(
            (
                json["join_failures"].as_u64(),
                json["wrong_password"].as_bool()
            ),
            (Some(0), Some(false))
        );

        fail(&s, JoinFailure::Timeout, 60).await;
        fail(&s, JoinFailure::Timeout, 150).await;
        let (text, json) = shown(&s).await;
        assert!(
            text.contains(
                "; last join failed: activation timed out (2 in a row), tried again in 2m\n"
            ),
            "{text}"
        );
        assert_eq!(json["last_join_failure"], "timeout");
        assert_eq!(
            (
                json["join_failures"].as_u64(),
                json["wrong_password"].as_bool()
            ),
            (Some(2), Some(false))
        );

        fail(&s, JoinFailure::WrongPassword, 6 * 3600 + 30).await;
        let (text, json) = shown(&s).await;
        assert!(
            text.contains(
                "; last join failed: WRONG PASSWORD, not joined until it changes or in 6h\n"
            ),
            "{text}"
        );
        assert_eq!(json["last_join_failure"], "wrong_password");
        assert_eq!(json["wrong_password"], true);

        fail(&s, JoinFailure::Gone, -1).await;
        let (text, json) = shown(&s).await;
        assert!(
            text.contains("; last join failed: the hotspot was gone (4 in a row), tried again at the next scan\n"),
            "{text}"
        );
        assert_eq!(
            (
                json["last_join_failure"].as_str(),
                json["wrong_password"].as_bool()
            ),
            (Some("gone"), Some(true)),
            "a refused password stays shown until a join succeeds"
        );

        s.hotspot_joined(BSSID.into(), now() * 1000).await.unwrap();
        let (text, json) = shown(&s).await;
        assert!(!text.contains("last join failed"), "{text}");
        assert_eq!(json["wrong_password"], false);
        assert_eq!(json["last_join_failure"], serde_json::Value::Null);
        assert_eq!(json["join_failures"], 0);
    }

    /// An entry of camera `IMEI`'s listing at `path`; `skip`: not selected.
    fn listed(path: &str, skip: bool) -> crate::store::Listed {
        crate::store::Listed {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or(path).to_string(),
            size: 1000,
            event: if skip { "00" } else { "04" }.into(),
            camera: 1,
            recorded_at: "2021-01-01 00:00:12".into(),
            priority: 0,
            skip: skip.then(|| "a loop recording".to_string()),
            refuse: None,
            size_unknown: false,
            too_recent: false,
            date_ms: Some(1000),
        }
    }

    #[tokio::test]
    async fn status_shows_the_same_counts_after_pruning() {
        let (_d, s) = store().await;
        let page = vec![
            listed("/DCIM/20210101_000012_00_1.mp4", true),
            listed("/DCIM/20210101_000112_00_1.mp4", true),
            listed("/DCIM/20210101_000212_04_1.mp4", false),
        ];
        s.reconcile_page(IMEI, page, HashSet::new()).await.unwrap();
        // All of them left the camera; the event clip was not in the bucket either.
        for lost in s.mark_missing(IMEI, HashSet::new()).await.unwrap() {
            s.lost_confirmed(lost.id).await.unwrap();
        }
        let before = collect_status(&s).await.unwrap();
        assert_eq!(before[0].lost, 1);
        assert_eq!(before[0].clips.get("skipped"), Some(&2));
        assert_eq!(s.prune(now() + 1).await.unwrap(), 3);
        assert!(
            s.clips_of(IMEI).await.unwrap().is_empty(),
            "every row pruned"
        );
        let after = collect_status(&s).await.unwrap();
        assert_eq!(format_status(&after), format_status(&before));
        assert_eq!(
            serde_json::to_value(&after).unwrap(),
            serde_json::to_value(&before).unwrap()
        );
    }
}
