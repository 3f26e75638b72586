//! Windowed listings: per camera (IMEI), what the agent keeps between full listings
//! ([`ListingWindow`]): the newest recording time listed (the high-water mark the next
//! window reaches back from), when the camera was last listed in full, the offset between
//! its `date` and its clip names (a time-zone change moves it), and what its windows showed
//! of themselves (one that missed a clip the full listing shows: [`Store::window_broken`];
//! one that returns clips outside it). Also the reads a window is checked with:
//! [`Store::on_camera_since`] (what it must contain) and [`Store::page_is_settled`] (a page
//! that brings nothing to act on).

use std::collections::HashSet;

use anyhow::Result;
use rusqlite::{OptionalExtension, params};

use super::listing::{Listed, PASSING_REFUSALS, latest};
use super::state::ClipState::*;
use super::{Store, now_ms};

/// What the agent keeps of a camera's listing between full listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingWindow {
    /// The newest recording time listed (`recorded_at` form, the camera's clock), if any.
    pub high_water: Option<String>,
    /// When the camera was last listed in full (ms since the epoch).
    pub full_listed_at: Option<i64>,
    /// The listing's `date` less the clip name's time (read as UTC), in ms, for the newest
    /// clip of the last full listing: a time-zone or clock change moves it.
    pub date_offset_ms: Option<i64>,
    /// Why windowed listings are not used for this camera (a window left out a clip the
    /// full listing showed), if they are not.
    pub broken: Option<String>,
    /// The last window returned clips recorded well before it began: the camera seems to
    /// ignore `time_type`, and each windowed poll costs as much as a full listing.
    pub overreach: bool,
    /// The clip selection the last full listing was read with (see
    /// [`Store::listed_in_full`]).
    pub selection: Option<String>,
}

impl Store {
    /// What the agent keeps of `imei`'s listing; `None` before its first full listing.
    pub async fn listing_window(&self, imei: &str) -> Result<Option<ListingWindow>> {
        let imei = imei.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT high_water, full_listed_at, date_offset_ms, broken, overreach, selection
                   FROM listing_windows WHERE imei = ?1",
                params![imei],
                |r| {
                    Ok(ListingWindow {
                        high_water: r.get(0)?,
                        full_listed_at: r.get(1)?,
                        date_offset_ms: r.get(2)?,
                        broken: r.get(3)?,
                        overreach: r.get(4)?,
                        selection: r.get(5)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// `imei` was listed in full just now, with the clip selection `selection` (any text
    /// that changes with it): its high-water mark becomes `high_water` (the newest
    /// recording time listed) and its `date` offset `date_offset_ms`.
    pub async fn listed_in_full(
        &self,
        imei: &str,
        high_water: Option<String>,
        date_offset_ms: Option<i64>,
        selection: &str,
    ) -> Result<()> {
        let (imei, selection) = (imei.to_string(), selection.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO listing_windows
                     (imei, high_water, full_listed_at, date_offset_ms, selection)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (imei) DO UPDATE SET high_water = ?2, full_listed_at = ?3,
                     date_offset_ms = ?4, selection = ?5",
                params![imei, high_water, now_ms(), date_offset_ms, selection],
            )?;
            Ok(())
        })
        .await
    }

    /// A window of `imei` was listed: its high-water mark becomes `high_water` and its
    /// overreach flag `overreach`. Writes nothing when neither changed (an idle poll
    /// writes nothing here).
    pub async fn window_listed(
        &self,
        imei: &str,
        high_water: Option<String>,
        overreach: bool,
    ) -> Result<()> {
        let imei = imei.to_string();
        self.call(move |c| {
            c.execute(
                "UPDATE listing_windows SET high_water = ?2, overreach = ?3
                  WHERE imei = ?1 AND (high_water IS NOT ?2 OR overreach IS NOT ?3)",
                params![imei, high_water, overreach],
            )?;
            Ok(())
        })
        .await
    }

    /// Windowed listings of `imei` are not to be trusted (`why`): it is listed in full from
    /// now on.
    pub async fn window_broken(&self, imei: &str, why: &str) -> Result<()> {
        let (imei, why) = (imei.to_string(), why.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO listing_windows (imei, broken) VALUES (?1, ?2)
                 ON CONFLICT (imei) DO UPDATE SET broken = ?2",
                params![imei, why],
            )?;
            Ok(())
        })
        .await
    }

    /// The recording time (`recorded_at` form) of `imei`'s oldest clip on the camera that a
    /// listing still has to settle: `seen` (not stable yet, or listed without a size) or
    /// refused for a reason that can pass (listed as a directory). A window reaches back to
    /// it.
    pub async fn oldest_unsettled(&self, imei: &str) -> Result<Option<String>> {
        let imei = imei.to_string();
        self.call(move |c| {
            let passing = PASSING_REFUSALS
                .iter()
                .map(|r| format!("'{}'", r.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT MIN(recorded_at) FROM clips WHERE imei = ?1 AND on_camera = 1
                    AND origin IS NULL AND recorded_at != ''
                    AND (state = ?2 OR (state = ?3 AND reason IN ({passing})))"
            );
            Ok(c.query_row(&sql, params![imei, Seen, Refused], |r| r.get(0))?)
        })
        .await
    }

    /// `(path, event code, camera)` of `imei`'s clips still on the camera recorded at or
    /// after `from` (`recorded_at` form): those a window from `from` must list (when it
    /// asks for their event and camera).
    pub async fn on_camera_since(
        &self,
        imei: &str,
        from: &str,
    ) -> Result<Vec<(String, String, i64)>> {
        let (imei, from) = (imei.to_string(), from.to_string());
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT path, COALESCE(event, ''), COALESCE(camera, 0) FROM clips
                  WHERE imei = ?1 AND on_camera = 1 AND origin IS NULL AND recorded_at >= ?2",
            )?;
            let paths = st
                .query_map(params![imei, from], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(paths)
        })
        .await
    }

    /// Whether reconciling `page` into `imei`'s clips would change nothing that matters: each
    /// entry is a clip the store holds, on the camera, listed with the size and `date` it
    /// has, in a state no listing moves (not `seen`, which a listing brings closer to
    /// stable; not a clip that left the camera; selected or skipped as the selection says).
    /// Such a page needs no IMEI check after it: there is nothing to act on in it.
    pub async fn page_is_settled(&self, imei: &str, page: Vec<Listed>) -> Result<bool> {
        let imei = imei.to_string();
        self.call(move |c| {
            let mut paths = HashSet::new();
            for l in &page {
                if l.size_unknown || !paths.insert(l.path.as_str()) {
                    return Ok(false);
                }
                let Some(row) = latest(c, &imei, &l.path)? else {
                    return Ok(false);
                };
                if !row.on_camera {
                    return Ok(false);
                }
                if l.refuse.is_some() {
                    let passing = row
                        .reason
                        .as_deref()
                        .is_some_and(|r| PASSING_REFUSALS.contains(&r));
                    if row.state != Refused || passing {
                        return Ok(false);
                    }
                    continue;
                }
                if row.size != l.size as i64 || row.date_ms.is_none() || row.date_ms != l.date_ms {
                    return Ok(false);
                }
                let settled = match row.state {
                    Skipped => l.skip.is_some(),
                    Queued => l.skip.is_none(),
                    Downloading | Downloaded | Uploading | Uploaded | Verified | Retained
                    | Failed => true,
                    Seen | Refused | Lost | Deleted | Elsewhere => false,
                };
                if !settled {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
    }
}
