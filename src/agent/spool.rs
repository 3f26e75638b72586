//! The spool's files, kept honest: a file is trusted only under the name of the listing its
//! bytes are for ([`super::work::spool_name`]); anything else in a camera's spool dir is a
//! leftover (a download of a listing the camera has since changed, whose removal a kill
//! interrupted, or a name from before the spool named listings) and is removed by
//! [`Agent::sweep_spool`] at the start of a pass's downloads (with `retention.keep_local`,
//! only `.part` leftovers: finished files are kept, and only an exact listing's is used).
//! [`Agent::adopt_legacy_spool`] renames, once at start, the finished file of a clip past
//! its download from its pre-upgrade name to its current one (its SHA-256 is checked again
//! by the upload).

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use tracing::{debug, info, warn};

use super::Agent;
use super::work::{legacy_spool_name, spool_name};
use crate::store::{Clip, Group};

/// Regular files directly in `dir` (none if it cannot be read).
fn files_in(dir: &Path) -> Vec<String> {
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
fn wanted(clips: &[Clip]) -> HashSet<String> {
    clips
        .iter()
        .filter(|c| c.state.is_still_to_do())
        .flat_map(|c| {
            let name = spool_name(c);
            [format!("{name}.part"), name]
        })
        .collect()
}

impl Agent {
    /// Removes every file of camera `imei`'s spool dir that no clip with work left names
    /// (see the module doc). The dir is read before the clips, so a file whose clip exists
    /// is never taken for a leftover.
    pub(super) async fn sweep_spool(&self, imei: &str) -> Result<()> {
        let dir = self.camera_dir(imei);
        let found = {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || files_in(&d)).await?
        };
        if found.is_empty() {
            return Ok(());
        }
        let keep = wanted(&self.store.clips_of(imei).await?);
        // `keep_local` keeps every finished file (only an exact listing's is ever used).
        let keep_local = self.cfg.retention.keep_local;
        let leftover = |f: &String| !keep.contains(f) && (!keep_local || f.ends_with(".part"));
        for f in found.into_iter().filter(leftover) {
            match tokio::fs::remove_file(dir.join(&f)).await {
                Ok(()) => debug!(imei = %imei, file = %f, "removed a leftover spool file"),
                Err(e) => {
                    warn!(imei = %imei, file = %f, "cannot remove a leftover spool file: {e}")
                }
            }
        }
        Ok(())
    }

    /// Before any loop starts: gives each clip past its download whose finished file still
    /// has its pre-upgrade name (with the clip's size) its current name. Without it the
    /// clip would be downloaded again (or lost, if the camera no longer has it).
    pub(super) async fn adopt_legacy_spool(&self) {
        let Ok(rd) = std::fs::read_dir(&self.spool) else {
            return;
        };
        let imeis: Vec<String> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        for imei in imeis {
            let clips = match self.store.clips_of(&imei).await {
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
    /// [`Agent::adopt_legacy_spool`]).
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
