//! The spool: where clips wait between the camera and the bucket, `spool/{imei}/…` under
//! the state dir ([`Spool`] names the paths). Its files are kept honest: a file is trusted
//! only under the name of the listing its bytes are for ([`spool_name`]); anything else in
//! a camera's spool dir is a leftover (a download of a listing the camera has since
//! changed, whose removal a kill interrupted, or a name from before the spool named
//! listings), dealt with by [`Spool::sweep`] at the start of a pass's downloads: a `.part`
//! leftover, or the finished file of a clip verified in the bucket, is removed; a finished
//! file no clip names as offloaded (a state database moved aside or restored from a backup)
//! may be a clip's only copy, and goes to `quarantine/{imei}/` beside the spool, never
//! deleted, to be offloaded from there (`agent::quarantine`; with `retention.keep_local`,
//! only `.part` leftovers go: finished files are kept, and only an exact listing's is used).
//! [`Spool::adopt_legacy`] renames, once at start, the finished file of a clip past
//! its download from its pre-upgrade name to its current one (its SHA-256 is checked again
//! by the upload).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{debug, info, warn};

use crate::config::SpoolConfig;
use crate::store::{Clip, ClipState, Group, Origin, Store};

/// The spool dir: the paths of clips' files in it, and its upkeep.
#[derive(Debug, Clone)]
pub(crate) struct Spool {
    root: PathBuf,
}

/// The clip's file name in the spool (`spool/{imei}/…`, `.part` while downloading): its file
/// name, its row id and the listing its bytes are for (size and `date`, `none` when the
/// listing gave none): `{name}~{id}-{size}-{date_ms}`. Bytes fetched for one listing are
/// never resumed or taken as whole for another (a clip listed with another size or `date`
/// before its download has another name), two clips of one name never share a file, and
/// the same listing gives the same name after a restart (a download resumes).
pub(crate) fn spool_name(clip: &Clip) -> String {
    let date = clip
        .date_ms
        .map_or_else(|| "none".into(), |d| d.to_string());
    format!("{}~{}-{}-{date}", clip.name, clip.id, clip.size)
}

/// The spool name before it named the listing (schema 5 and earlier): the file
/// name, `~{row id}` for a hashed key. Only to adopt a finished file left by an upgrade.
pub(crate) fn legacy_spool_name(clip: &Clip) -> String {
    if clip.hashed_key {
        format!("{}~{}", clip.name, clip.id)
    } else {
        clip.name.clone()
    }
}

/// The path a clip from the quarantine is recorded at: its file, relative to the state dir
/// (`quarantine/{imei}/{file}`). Never a camera's path (those are absolute), and the row's
/// `origin` keeps it apart from camera clips in any case.
pub(crate) fn quarantine_row_path(imei: &str, file: &str) -> String {
    format!("{QUARANTINE}/{imei}/{file}")
}

/// The quarantined file of clip `c` (origin `spool`): the last part of its path, when the
/// path is exactly [`quarantine_row_path`] of its IMEI and a plain file name.
pub(crate) fn quarantined_file(c: &Clip) -> Option<&str> {
    let file = c
        .path
        .strip_prefix(QUARANTINE)?
        .strip_prefix('/')?
        .strip_prefix(c.imei.as_str())?
        .strip_prefix('/')?;
    let plain = !file.is_empty()
        && file != "."
        && file != ".."
        && !file.contains(['/', '\\'])
        && !file.chars().any(char::is_control);
    plain.then_some(file)
}

/// The quarantine's dir inside the state dir.
const QUARANTINE: &str = "quarantine";

/// Regular files directly in `dir` (none if it cannot be read).
pub(crate) fn files_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The spool files clips of one camera may have: both names (`.part` and finished) of every
/// clip with work left.
/// Whether `need` more bytes fit on a disk with `free` bytes free and keep `floor` free.
fn floor_allows(free: u64, floor: u64, need: u64) -> bool {
    free >= floor.saturating_add(need)
}

/// The states of [`Group::UPLOAD_WORK`] (`failed` of either stage: the group sorts them).
const UPLOAD_STATES: &[ClipState] = &[
    ClipState::Downloaded,
    ClipState::Uploading,
    ClipState::Uploaded,
    ClipState::Failed,
];

fn wanted(clips: &[Clip]) -> HashSet<String> {
    clips
        .iter()
        .filter(|c| c.origin == Origin::Camera && c.state.is_still_to_do())
        .flat_map(|c| {
            let name = spool_name(c);
            [format!("{name}.part"), name]
        })
        .collect()
}

/// Moves `from` to `dir/name`, never leaving a partial file under the final name: a rename
/// (then the dir is synced), or across file systems (a spool on its own mount) a copy under
/// a temporary name, synced, renamed into place, and only then the original removed. A kill
/// at any point leaves the original in the spool, or the whole copy in place.
fn move_whole(from: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // A name quarantined before (row ids start again in a new database) is never
    // overwritten: the new one gets a suffix.
    let name = (0..)
        .map(|n| match n {
            0 => name.to_string(),
            n => format!("{name}.{n}"),
        })
        .find(|n| !dir.join(n).exists())
        .unwrap_or_else(|| name.to_string());
    let name = name.as_str();
    let to = dir.join(name);
    match std::fs::rename(from, &to) {
        Ok(()) => return std::fs::File::open(dir).and_then(|d| d.sync_all()),
        // EXDEV: another file system.
        Err(e) if e.raw_os_error() == Some(18) => {}
        Err(e) => return Err(e),
    }
    copy_whole(from, dir, name)
}

/// The copy half of [`move_whole`].
fn copy_whole(from: &Path, dir: &Path, name: &str) -> std::io::Result<()> {
    let (tmp, to) = (dir.join(format!("{name}.copying")), dir.join(name));
    std::fs::copy(from, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &to)?;
    std::fs::File::open(dir)?.sync_all()?;
    std::fs::remove_file(from)
}

/// The finished spool names of clips whose bytes are verified in the bucket (their files
/// may go: the bucket holds them).
fn offloaded(clips: &[Clip]) -> HashSet<String> {
    clips
        .iter()
        .filter(|c| c.origin == Origin::Camera && c.state.is_offloaded())
        .map(spool_name)
        .collect()
}

impl Spool {
    /// The spool under `state_dir`, created if missing.
    pub(crate) fn open(state_dir: &Path) -> Result<Spool> {
        let root = state_dir.join("spool");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create the spool {}", root.display()))?;
        Ok(Spool { root })
    }

    /// Camera `imei`'s dir.
    pub(crate) fn camera_dir(&self, imei: &str) -> PathBuf {
        self.root.join(imei)
    }

    /// Where clip `c` is downloaded to (see [`spool_name`]).
    pub(crate) fn part_path(&self, c: &Clip) -> PathBuf {
        let name = spool_name(c);
        self.camera_dir(&c.imei).join(format!("{name}.part"))
    }

    /// Where clip `c` waits for its upload once downloaded; a clip from the quarantine waits
    /// there, in its quarantined file (see [`quarantined_file`]).
    pub(crate) fn file_path(&self, c: &Clip) -> PathBuf {
        match c.origin {
            Origin::Camera => self.camera_dir(&c.imei).join(spool_name(c)),
            Origin::Spool => self
                .quarantine_dir(&c.imei)
                .join(quarantined_file(c).unwrap_or_default()),
        }
    }

    /// Whether the spool may take a download that still needs `need` bytes (its listed
    /// size less what its `.part` holds): the cap, and the free-disk floor with those bytes
    /// written (the floor also holds while it streams, see `download::SpaceFloor`).
    pub(crate) async fn has_room(
        &self,
        store: &Store,
        cfg: &SpoolConfig,
        need: u64,
    ) -> Result<bool> {
        let cap = cfg.max_bytes;
        if cap > 0 && store.spool_bytes().await? >= cap {
            return Ok(false);
        }
        let floor = cfg.min_free_bytes;
        if floor > 0
            && let Ok(free) = fs4::available_space(&self.root)
            && !floor_allows(free, floor, need)
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether a download needing `need` bytes could ever have room: the space free now
    /// plus what the spool's own clips hold (all of it freed once they are uploaded) is
    /// at least `need` above `spool.min_free_bytes`. (When the free space cannot be read,
    /// it could.)
    pub(crate) async fn could_ever_fit(
        &self,
        store: &Store,
        cfg: &SpoolConfig,
        need: u64,
    ) -> Result<bool> {
        let Ok(free) = fs4::available_space(&self.root) else {
            return Ok(true);
        };
        let ours = store.spool_bytes().await?;
        Ok(free.saturating_add(ours) >= cfg.min_free_bytes.saturating_add(need))
    }

    /// Bytes a download of `c` still needs: its listed size less what its `.part` holds.
    pub(crate) async fn still_needed(&self, c: &Clip) -> u64 {
        let have = tokio::fs::metadata(self.part_path(c))
            .await
            .map_or(0, |m| m.len());
        c.size.saturating_sub(have)
    }

    /// Removes every file of camera `imei`'s spool dir that no clip with work left names
    /// (see the module doc). The dir is read before the clips, so a file whose clip exists
    /// is never taken for a leftover. With `keep_local`, finished files stay. Returns how
    /// many files went to the quarantine.
    pub(crate) async fn sweep(&self, store: &Store, imei: &str, keep_local: bool) -> Result<usize> {
        let dir = self.camera_dir(imei);
        let found = {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || files_in(&d)).await?
        };
        if found.is_empty() {
            return Ok(0);
        }
        // Only the clips with work left name files to keep: read by state, not the
        // camera's whole history.
        let keep = wanted(&store.clips_in(imei, ClipState::STILL_TO_DO).await?);
        // `keep_local` keeps every finished file (only an exact listing's is ever used).
        let leftover = |f: &String| !keep.contains(f) && (!keep_local || f.ends_with(".part"));
        let leftovers: Vec<String> = found.into_iter().filter(leftover).collect();
        // Built only when a finished leftover needs it (rare): it names the camera's history.
        // A pruned row no longer names its file: such a leftover goes to the quarantine,
        // never deleted.
        let safe = if leftovers.iter().any(|f| !f.ends_with(".part")) {
            offloaded(&store.clips_in(imei, ClipState::OFFLOADED).await?)
        } else {
            HashSet::new()
        };
        let mut quarantined = 0;
        for f in leftovers {
            let file = dir.join(&f);
            if !f.ends_with(".part") && !safe.contains(&f) {
                // A finished clip no row names as offloaded (a state database moved aside
                // or restored from a backup): it may be the only copy. Never deleted.
                quarantined += usize::from(self.quarantine(imei, &f).await);
                continue;
            }
            match tokio::fs::remove_file(&file).await {
                Ok(()) => debug!(imei = %imei, file = %f, "removed a leftover spool file"),
                Err(e) => {
                    warn!(imei = %imei, file = %f, "cannot remove a leftover spool file: {e}")
                }
            }
        }
        Ok(quarantined)
    }

    /// The quarantine: `quarantine/{imei}/` beside the spool, where finished spool files
    /// that no clip names go (see [`Spool::sweep`]) and are offloaded from (`quarantine`).
    pub(crate) fn quarantine_dir(&self, imei: &str) -> PathBuf {
        self.quarantine_root().join(imei)
    }

    /// The quarantine's dir, `quarantine/` in the state dir.
    pub(crate) fn quarantine_root(&self) -> PathBuf {
        let state_dir = self.root.parent().unwrap_or(&self.root);
        state_dir.join(QUARANTINE)
    }

    /// Moves finished spool file `f` of camera `imei` to the quarantine (warned once per
    /// file: it leaves the spool). The spool keeps it until the quarantine holds it whole.
    /// Whether it moved.
    async fn quarantine(&self, imei: &str, f: &str) -> bool {
        let to_dir = self.quarantine_dir(imei);
        let from = self.camera_dir(imei).join(f);
        let (dir, name) = (to_dir.clone(), f.to_string());
        let moved = tokio::task::spawn_blocking(move || move_whole(&from, &dir, &name)).await;
        match moved {
            Ok(Ok(())) => {
                warn!(
                    imei = %imei, file = %f, quarantine = %to_dir.display(),
                    "a finished spool file no clip in the state database names (was the database replaced?) is kept in the quarantine, never deleted: it is offloaded from there"
                );
                true
            }
            Ok(Err(e)) => {
                warn!(imei = %imei, file = %f, "cannot move an unnamed spool file to the quarantine (it stays in the spool): {e}");
                false
            }
            Err(e) => {
                warn!(imei = %imei, file = %f, "moving a spool file to the quarantine failed: {e}");
                false
            }
        }
    }

    /// Before any loop starts: gives each clip past its download whose finished file still
    /// has its pre-upgrade name (with the clip's size) its current name. Without it the
    /// clip would be downloaded again (or lost, if the camera no longer has it).
    pub(crate) async fn adopt_legacy(&self, store: &Store) {
        let Ok(rd) = std::fs::read_dir(&self.root) else {
            return;
        };
        let imeis: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for imei in imeis {
            let clips = match store.clips_in(&imei, UPLOAD_STATES).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(imei = %imei, "cannot read the clips to adopt spool files: {e:#}");
                    continue;
                }
            };
            for c in clips
                .iter()
                .filter(|c| Group::UPLOAD_WORK.contains(c.state, c.failed_stage))
            {
                self.adopt_one(c).await;
            }
        }
    }

    /// Renames clip `c`'s pre-upgrade finished file to its current name (see
    /// [`Spool::adopt_legacy`]).
    async fn adopt_one(&self, c: &Clip) {
        let (old, new) = (
            self.camera_dir(&c.imei).join(legacy_spool_name(c)),
            self.file_path(c),
        );
        if tokio::fs::metadata(&new).await.is_ok()
            || !tokio::fs::metadata(&old)
                .await
                .is_ok_and(|m| m.is_file() && m.len() == c.size)
        {
            return;
        }
        match tokio::fs::rename(&old, &new).await {
            Ok(()) => {
                info!(imei = %c.imei, clip = %c.name, "spool file renamed to its listing's name")
            }
            Err(e) => {
                warn!(imei = %c.imei, clip = %c.name, "cannot rename the spool file {}: {e}", old.display())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_moves_whole_by_rename_or_by_copy() {
        let d = tempfile::tempdir().unwrap();
        let (spool, quarantine) = (d.path().join("spool"), d.path().join("q"));
        std::fs::create_dir_all(&spool).unwrap();
        for (i, by_copy) in [false, true].into_iter().enumerate() {
            let name = format!("clip{i}.mp4~1-4-none");
            let from = spool.join(&name);
            std::fs::write(&from, b"clip").unwrap();
            if by_copy {
                std::fs::create_dir_all(&quarantine).unwrap();
                copy_whole(&from, &quarantine, &name).unwrap();
            } else {
                move_whole(&from, &quarantine, &name).unwrap();
            }
            assert!(!from.exists(), "by copy: {by_copy}");
            assert_eq!(std::fs::read(quarantine.join(&name)).unwrap(), b"clip");
            assert!(!quarantine.join(format!("{name}.copying")).exists());
        }
        // A name already in the quarantine is kept; the newcomer gets a suffix.
        let name = "clip0.mp4~1-4-none";
        std::fs::write(spool.join(name), b"other").unwrap();
        move_whole(&spool.join(name), &quarantine, name).unwrap();
        assert_eq!(std::fs::read(quarantine.join(name)).unwrap(), b"clip");
        assert_eq!(
            std::fs::read(quarantine.join(format!("{name}.1"))).unwrap(),
            b"other"
        );
    }
}
