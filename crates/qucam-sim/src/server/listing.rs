//! 3.1 `get_video_files_info`: filters, paging newest first, and the listing faults (busy
//! replies, growing clips, a new clip between pages, data as a string, a `time_type`
//! applied otherwise).
//!
//! **`time_type`, an assumption.** The vendor document gives the period's form
//! (`yyyyMMddHHmmss:yyyyMMddHHmmss`) and nothing else. The simulator lists a clip when the
//! recording time in its name (the camera's local clock, the start of the recording) is
//! within the period, both ends included ([`TimeFilter::Start`]). A real camera may filter
//! on `date` (the end of the recording), on another clock, or not at all; the agent checks
//! each camera's windows against its full listings, and [`TimeFilter`] plays the others.

use std::fs;
use std::io;
use std::path::Path;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::NaiveDateTime;
use serde_json::{Value, json};

use qucam::ClipName;

use super::{
    Params, Sim, api_ok, bad_request, blocking, format_mb, internal, json_response, param,
    read_params,
};
use crate::TimeFilter;
use crate::clips::{self, Clip, Rng};

/// Bytes added to a "still recording" clip at each listing.
const GROW_BYTES: u64 = 64 * 1024;

/// Listing filters and paging.
#[derive(Debug, Default)]
struct ListQuery {
    period: Option<(NaiveDateTime, NaiveDateTime)>,
    events: Vec<String>,
    camera: Option<u8>,
    count: Option<usize>,
    offset: usize,
}

impl ListQuery {
    fn parse(p: &Params) -> Result<ListQuery, String> {
        let mut q = ListQuery::default();
        if let Some(t) = param(p, "time_type") {
            let parse = |s: &str| NaiveDateTime::parse_from_str(s.trim(), "%Y%m%d%H%M%S").ok();
            let (a, b) = t
                .split_once(':')
                .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
                .ok_or_else(|| format!("bad time_type {t:?}"))?;
            q.period = Some((a, b));
        }
        if let Some(e) = param(p, "event_type") {
            for code in e.split(':').map(|c| c.trim().trim_matches('_')) {
                if code.is_empty() {
                    continue;
                }
                if code.len() != 2 || !code.bytes().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(format!("bad event_type {e:?}"));
                }
                q.events.push(code.to_ascii_uppercase());
            }
        }
        if let Some(c) = param(p, "camera_type") {
            q.camera = match c.trim_matches(|c| c == '_' || c == '.') {
                "1^2" | "2^1" => None,
                "1" => Some(1),
                "2" => Some(2),
                _ => return Err(format!("bad camera_type {c:?}")),
            };
        }
        if let Some(c) = param(p, "count") {
            q.count = Some(c.parse().map_err(|_| format!("bad count {c:?}"))?);
        }
        if let Some(o) = param(p, "offset") {
            q.offset = o.parse().map_err(|_| format!("bad offset {o:?}"))?;
        }
        Ok(q)
    }

    fn matches(&self, c: &ClipName, filter: TimeFilter) -> bool {
        let time = c.recorded();
        let in_period = |(a, b): (NaiveDateTime, NaiveDateTime)| match filter {
            TimeFilter::Start => a <= time && time <= b,
            TimeFilter::Ignored => true,
            TimeFilter::Skewed { hours } => {
                let skew = chrono::Duration::hours(i64::from(hours));
                a + skew <= time && time <= b + skew
            }
        };
        self.period.is_none_or(in_period)
            && (self.events.is_empty() || self.events.iter().any(|e| e == c.event_code()))
            && self.camera.is_none_or(|cam| cam == c.camera())
    }
}

/// Newest first: by recording time, then name.
fn sort_newest_first(clips: &mut [Clip]) {
    clips.sort_by(|a, b| (b.parsed.recorded(), &b.name).cmp(&(a.parsed.recorded(), &a.name)));
}

fn entry_json(c: &Clip) -> Value {
    json!({
        "date": c.parsed.recorded().and_utc().timestamp_millis(),
        "duration": "01m:00s",
        "duration_long": 60000,
        "format_size": format_mb(c.size),
        "header_title": c.parsed.recorded().format("%Y-%m-%d").to_string(),
        "icon": null,
        "isDirectory": false,
        "name": c.name,
        "path": c.camera_path,
        "permission": "rw",
        "select_mode": false,
        "size": c.size,
    })
}

/// Appends [`GROW_BYTES`] to the clip named `name`, if it exists.
fn grow_clip(dir: &Path, name: &str) -> io::Result<()> {
    use std::io::Write;
    let Some(clip) = clips::scan(dir)?.into_iter().find(|c| c.name == name) else {
        tracing::warn!(name, "growing clip not found");
        return Ok(());
    };
    let mut buf = vec![0u8; GROW_BYTES as usize];
    Rng::new(clip.size).fill(&mut buf);
    let mut f = fs::OpenOptions::new().append(true).open(&clip.file)?;
    f.write_all(&buf)
}

/// Creates a loop recording one minute newer than the newest clip.
fn add_newest_clip(dir: &Path) -> io::Result<()> {
    let newest = clips::scan(dir)?
        .into_iter()
        .map(|c| c.parsed.recorded())
        .max();
    let time =
        newest.unwrap_or_else(|| chrono::Utc::now().naive_utc()) + chrono::Duration::minutes(1);
    let name = format!("{}_00_1.mp4", time.format("%Y%m%d_%H%M%S"));
    let mut content = vec![0u8; 32 * 1024];
    Rng::new(time.and_utc().timestamp() as u64).fill(&mut content);
    let path = clips::write_clip(dir, &name, &content)?;
    tracing::info!(%path, "new clip appeared between pages");
    Ok(())
}

pub(super) async fn list_files(State(sim): State<Sim>, req: Request) -> Response {
    let growing = {
        let mut st = sim.lock();
        if let Some(raw) = st.faults.listing_override.clone() {
            drop(st);
            return json_response(StatusCode::OK, raw);
        }
        if st.faults.busy_listings > 0 {
            st.faults.busy_listings -= 1;
            drop(st);
            return api_ok(&sim, json!("Camera Busy"));
        }
        match &mut st.faults.growing {
            Some((name, n)) if *n > 0 => {
                *n -= 1;
                Some(name.clone())
            }
            _ => None,
        }
    };
    let q = match read_params(req).await.and_then(|p| ListQuery::parse(&p)) {
        Ok(q) => q,
        Err(why) => return bad_request(&sim, &why),
    };
    let (new_clip, sizeless, as_directory, shift, filter) = {
        let st = sim.lock();
        let f = &st.faults;
        let new_clip = q.offset == 0 && f.new_clip_between_pages;
        let shift = f.date_shift_ms;
        let filter = f.time_filter;
        (
            new_clip,
            f.sizeless.clone(),
            f.as_directory.clone(),
            shift,
            filter,
        )
    };
    let dir = sim.dir();
    let listed = blocking(move || {
        if let Some(name) = growing {
            grow_clip(&dir, &name)?;
        }
        let mut all: Vec<Clip> = clips::scan(&dir)?
            .into_iter()
            .filter(|c| q.matches(&c.parsed, filter))
            .collect();
        sort_newest_first(&mut all);
        let page: Vec<Value> = all
            .iter()
            .skip(q.offset)
            .take(q.count.unwrap_or(usize::MAX))
            .map(|c| {
                let mut e = entry_json(c);
                if shift != 0 {
                    let date = c.parsed.recorded().and_utc().timestamp_millis();
                    e["date"] = json!(date.saturating_add(shift));
                }
                if sizeless.contains(&c.name) {
                    e["size"] = Value::Null;
                }
                if as_directory.contains(&c.name) {
                    e["isDirectory"] = Value::Bool(true);
                }
                e
            })
            .collect();
        if new_clip {
            add_newest_clip(&dir)?;
        }
        Ok(page)
    })
    .await;
    match listed {
        Ok(page) => {
            let data = if sim.lock().faults.data_as_string {
                Value::String(Value::Array(page).to_string())
            } else {
                Value::Array(page)
            };
            api_ok(&sim, data)
        }
        Err(e) => internal(&sim, &e),
    }
}
