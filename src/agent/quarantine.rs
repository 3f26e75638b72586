//! The spool quarantine's way out. A finished spool file no clip named (a state database
//! moved aside or restored from a backup while downloaded clips waited for S3) may be a
//! clip's only copy: the spool's sweep moves it to `quarantine/{imei}/` in the state dir,
//! never deletes it, and [`take_in`] makes it a clip again, of origin `spool`
//! (`Store::take_in_quarantined`): its clip name, size and `date` are read from its spool
//! name ([`parse_spool_name`]), its bytes hashed (SHA-256). The uploader then offloads it
//! from the quarantine like any downloaded clip: under the key the usual rules give (the
//! plain key; its hashed key when the plain one holds other bytes; the same bytes already
//! there are offloaded), verified, with `origin: spool-quarantine` in the object's
//! metadata, and only once verified is the file removed. Such a clip never allows a delete
//! from a camera: its camera path is unknown, and the store keeps it apart.
//!
//! A file whose name does not parse, or whose size is not its name's, stays in the
//! quarantine with a warning (at each start of the agent), never deleted: it is the
//! operator's. The quarantine is taken in when a run starts ([`take_in_all`]) and right
//! after a sweep moved files there.

use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use qucam::ClipName;

use super::spool::{Spool, files_in, quarantine_row_path};
use crate::store::{ClipState, Origin, Quarantined, Store, TakenIn};

/// What a spool file's name says of its clip (see `spool::spool_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpoolName {
    pub(crate) name: ClipName,
    pub(crate) size: u64,
    pub(crate) date_ms: Option<i64>,
}

/// Parses a finished spool file's name, `{clip name}~{row id}-{size}-{date ms | none}`, as
/// the quarantine may hold it (`.{n}` after it when a name was quarantined before). `None`
/// for anything else (a `.part`, a temporary `.copying`, a foreign file).
pub(crate) fn parse_spool_name(file: &str) -> Option<SpoolName> {
    let base = match file.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => file,
    };
    let (name, listing) = base.rsplit_once('~')?;
    let mut fields = listing.splitn(3, '-');
    let (id, size, date) = (fields.next()?, fields.next()?, fields.next()?);
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let size = size.parse::<u64>().ok()?;
    let date_ms = match date {
        "none" => None,
        d => Some(d.parse::<i64>().ok()?),
    };
    let name = ClipName::parse(name).ok()?;
    Some(SpoolName {
        name,
        size,
        date_ms,
    })
}

/// The length and SHA-256 (hex) of the file at `path`: the hash only when the length is
/// `size` (else `None`).
fn hash_file(path: &Path, size: u64) -> std::io::Result<(u64, Option<String>)> {
    let len = std::fs::metadata(path)?.len();
    if len != size {
        return Ok((len, None));
    }
    Ok((len, Some(crate::blocks::hash_file(path)?.0)))
}

/// Takes in the quarantine of every camera (see [`take_in`]). How many clips it made.
pub(crate) async fn take_in_all(spool: &Spool, store: &Store) -> usize {
    let root = spool.quarantine_root();
    let imeis = tokio::task::spawn_blocking(move || dirs_in(&root))
        .await
        .unwrap_or_default();
    let mut n = 0;
    for imei in imeis {
        n += take_in(spool, store, &imei).await;
    }
    n
}

/// Directories directly in `dir` (none if it cannot be read).
fn dirs_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Makes each file in camera `imei`'s quarantine that no clip with work left is offloading
/// a clip of origin `spool`, `downloaded`, for the uploader; a file whose clip is already
/// offloaded with these bytes (a kill between the verification and the file's removal) is
/// removed. How many clips it made.
pub(crate) async fn take_in(spool: &Spool, store: &Store, imei: &str) -> usize {
    if let Err(e) = qucam::check_imei(imei) {
        warn!("the quarantine holds a dir that is no camera's, left alone: {e}");
        return 0;
    }
    let dir = spool.quarantine_dir(imei);
    let found = {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || files_in(&d))
            .await
            .unwrap_or_default()
    };
    if found.is_empty() {
        return 0;
    }
    let clips = match store.clips_in(imei, ClipState::STILL_TO_DO).await {
        Ok(c) => c,
        Err(e) => {
            warn!(imei = %imei, "cannot read the clips to take in the quarantine: {e:#}");
            return 0;
        }
    };
    let working: Vec<String> = clips
        .into_iter()
        .filter(|c| c.origin == Origin::Spool && c.state.is_still_to_do())
        .map(|c| c.path)
        .collect();
    let mut made = 0;
    for file in found {
        if file.ends_with(".copying") {
            // A copy under way or cut short by a kill: its original is still in the spool.
            continue;
        }
        let path = quarantine_row_path(imei, &file);
        if working.contains(&path) {
            continue;
        }
        made += usize::from(take_in_one(store, imei, dir.join(&file), &file, path).await);
    }
    made
}

/// Takes in quarantined `file` (at `at`) of camera `imei`, recorded at `path`. Whether it
/// made a clip.
async fn take_in_one(store: &Store, imei: &str, at: PathBuf, file: &str, path: String) -> bool {
    let Some(parsed) = parse_spool_name(file) else {
        warn!(imei = %imei, file = %file, "a quarantined file whose name is no spool name is left in the quarantine: offload it by hand");
        return false;
    };
    let hashed = {
        let at = at.clone();
        let size = parsed.size;
        tokio::task::spawn_blocking(move || hash_file(&at, size)).await
    };
    let sha256 = match hashed {
        Ok(Ok((_, Some(sha256)))) => sha256,
        Ok(Ok((len, None))) => {
            warn!(imei = %imei, file = %file, size = len, "a quarantined file whose size is not its name's is left in the quarantine: offload it by hand");
            return false;
        }
        Ok(Err(e)) => {
            warn!(imei = %imei, file = %file, "cannot read a quarantined file (left there): {e}");
            return false;
        }
        Err(e) => {
            warn!(imei = %imei, file = %file, "hashing a quarantined file failed: {e}");
            return false;
        }
    };
    let name = &parsed.name;
    let q = Quarantined {
        imei: imei.to_string(),
        path,
        name: name.as_str().to_string(),
        size: parsed.size,
        date_ms: parsed.date_ms,
        sha256,
        event: name.event_code().to_string(),
        camera: name.camera() as i64,
        recorded_at: name.recorded().format("%Y-%m-%d %H:%M:%S").to_string(),
        priority: qucam::event_priority(name.event_code()),
    };
    match store.take_in_quarantined(q).await {
        Ok(TakenIn::New(id)) => {
            info!(imei = %imei, file = %file, clip = %name, id, "a quarantined spool file is offloaded as a clip from the spool (never deleted from a camera)");
            true
        }
        Ok(TakenIn::Working) => false,
        Ok(TakenIn::Offloaded) => {
            // Verified in the bucket; a kill came before its removal.
            match tokio::fs::remove_file(&at).await {
                Ok(()) => {
                    debug!(imei = %imei, file = %file, "removed a quarantined file already offloaded")
                }
                Err(e) => {
                    warn!(imei = %imei, file = %file, "cannot remove a quarantined file already offloaded: {e}")
                }
            }
            false
        }
        Err(e) => {
            warn!(imei = %imei, file = %file, "cannot take in a quarantined file (left there): {e:#}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "20210427_115134_04_2.mp4";

    #[test]
    fn a_spool_name_gives_the_clip_name_size_and_date() {
        let p = parse_spool_name(&format!("{NAME}~7-1000-1609459212000")).unwrap();
        assert_eq!(p.name.as_str(), NAME);
        assert_eq!((p.size, p.date_ms), (1000, Some(1_609_459_212_000)));
        let p = parse_spool_name(&format!("{NAME}~7-1000-none.2")).unwrap();
        assert_eq!(
            (p.size, p.date_ms),
            (1000, None),
            "a second quarantined copy"
        );
        let p = parse_spool_name(&format!("{NAME}~7-10--5")).unwrap();
        assert_eq!(p.date_ms, Some(-5));
        for bad in [
            NAME.to_string(),
            format!("{NAME}~7"),
            format!("{NAME}~7-1000-none.part"),
            format!("{NAME}~7-1000-none.copying"),
            format!("{NAME}~x-1000-none"),
            format!("{NAME}~7-big-none"),
            format!("{NAME}~7-1000-soon"),
            "../x.mp4~7-1000-none".into(),
            "notes.txt".into(),
        ] {
            assert_eq!(parse_spool_name(&bad), None, "{bad}");
        }
    }
}
