//! The clip lifecycle as a type: [`ClipState`], the [`Stage`] a failed clip goes back to,
//! and the named groups of states ([`Group`]) that the store's SQL and the rest of the
//! program share. Every set of states the program reasons about is defined here, once.
//!
//! The states are stored as the TEXT of [`ClipState::as_str`]; a text this program does not
//! know is an error when read, never a panic.

use std::fmt;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

/// Where a clip is in its life (see the transition table in [`crate::store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipState {
    /// Listed, not yet stable (may still be recording).
    Seen,
    /// Not selected by the configuration (kept with its reason).
    Skipped,
    /// Selected and stable: waiting for its download.
    Queued,
    /// Bytes are arriving in `spool/….part`.
    Downloading,
    /// The whole file is in the spool, fsynced, with its SHA-256.
    Downloaded,
    /// An upload has begun (a multipart upload id may be journaled).
    Uploading,
    /// The destination accepted the object; not yet verified.
    Uploaded,
    /// HeadObject confirmed size and checksum.
    Verified,
    /// Gone from the camera after it was verified.
    Deleted,
    /// Verified, kept on the camera by the retention policy (for now).
    Retained,
    /// An attempt failed; goes back to its [`Stage`] after `retry_after`.
    Failed,
    /// Left the camera before it was offloaded.
    Lost,
    /// Left the camera before this agent offloaded it, but its object is in the bucket under
    /// its key with the listed size: another agent (another depot machine) offloaded it.
    Elsewhere,
    /// Refused: a hostile or unusable listing entry (kept with its reason); for good,
    /// unless the reason can pass (`PASSING_REFUSALS`: looked at again at every listing).
    Refused,
}

use ClipState::*;

impl ClipState {
    /// Every state, in lifecycle order.
    pub const ALL: [ClipState; 14] = [
        Seen,
        Skipped,
        Queued,
        Downloading,
        Downloaded,
        Uploading,
        Uploaded,
        Verified,
        Deleted,
        Retained,
        Failed,
        Lost,
        Elsewhere,
        Refused,
    ];

    /// Selected for offload and on its way to the bucket, not yet verified: the queue depth
    /// (`status` "pending", the `queue_depth` metric, the progress bars).
    pub const PENDING: &'static [ClipState] =
        &[Queued, Downloading, Downloaded, Uploading, Uploaded];

    /// In the bucket and confirmed there (the bytes `status` counts as offloaded).
    pub const OFFLOADED: &'static [ClipState] = &[Verified, Retained, Deleted];

    /// Nothing left for the agent to do with it on its own. A listing can still reopen a
    /// `lost` clip (listed again) or a `skipped` one (the selection changed).
    pub const TERMINAL: &'static [ClipState] = &[Skipped, Deleted, Lost, Elsewhere, Refused];

    /// Still to do before the clip is in the bucket: [`Self::PENDING`], plus `seen` (not
    /// stable yet) and `failed` (retried later).
    pub const STILL_TO_DO: &'static [ClipState] = &[
        Seen,
        Queued,
        Downloading,
        Downloaded,
        Uploading,
        Uploaded,
        Failed,
    ];

    /// What `status` lists as failures: `failed` (retried later) and `refused` (looked at
    /// again only when its reason can pass).
    pub const FAILURES: &'static [ClipState] = &[Failed, Refused];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Seen => "seen",
            Skipped => "skipped",
            Queued => "queued",
            Downloading => "downloading",
            Downloaded => "downloaded",
            Uploading => "uploading",
            Uploaded => "uploaded",
            Verified => "verified",
            Deleted => "deleted",
            Retained => "retained",
            Failed => "failed",
            Lost => "lost",
            Elsewhere => "elsewhere",
            Refused => "refused",
        }
    }

    /// The state stored as `text`, if it is one.
    pub fn parse(text: &str) -> Option<ClipState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// See [`Self::PENDING`].
    pub fn is_pending(self) -> bool {
        Self::PENDING.contains(&self)
    }

    /// See [`Self::OFFLOADED`].
    pub fn is_offloaded(self) -> bool {
        Self::OFFLOADED.contains(&self)
    }

    /// See [`Self::TERMINAL`].
    pub fn is_terminal(self) -> bool {
        Self::TERMINAL.contains(&self)
    }

    /// See [`Self::FAILURES`].
    pub fn is_failure(self) -> bool {
        Self::FAILURES.contains(&self)
    }

    /// See [`Self::STILL_TO_DO`].
    pub fn is_still_to_do(self) -> bool {
        Self::STILL_TO_DO.contains(&self)
    }
}

impl fmt::Display for ClipState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for ClipState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ClipState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        ClipState::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown clip state {text:?}").into()))
    }
}

/// The stage a failed clip goes back to (`failed_stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Download,
    Upload,
}

impl Stage {
    /// The stored text (also the `stage` label of the failure metric).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Upload => "upload",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for Stage {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Stage {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "download" => Ok(Stage::Download),
            "upload" => Ok(Stage::Upload),
            other => Err(FromSqlError::Other(
                format!("unknown failed stage {other:?}").into(),
            )),
        }
    }
}

/// Where a clip came from (`origin`, schema 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Listed by its camera (stored as NULL: every row from before schema 10).
    #[default]
    Camera,
    /// A finished spool file no clip named (a state database moved aside or restored from a
    /// backup), taken from the quarantine: its camera path is unknown, and it never allows
    /// a delete from a camera.
    Spool,
}

impl Origin {
    /// The stored text (`None`: NULL).
    pub const fn as_sql(self) -> Option<&'static str> {
        match self {
            Origin::Camera => None,
            Origin::Spool => Some("spool"),
        }
    }
}

impl ToSql for Origin {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.as_sql() {
            Some(text) => ToSqlOutput::from(text),
            None => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

impl FromSql for Origin {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Null => Ok(Origin::Camera),
            v => match v.as_str()? {
                "spool" => Ok(Origin::Spool),
                other => Err(FromSqlError::Other(
                    format!("unknown clip origin {other:?}").into(),
                )),
            },
        }
    }
}

/// A named set of clips: some states, plus `failed` clips of one stage.
#[derive(Debug, Clone, Copy)]
pub struct Group {
    pub states: &'static [ClipState],
    /// `failed` clips that failed at this stage belong too.
    pub failed_at: Option<Stage>,
}

impl Group {
    /// Work for the download stage: `queued`, `downloading` (resumed), `failed` at download.
    pub const DOWNLOAD_WORK: Group = Group {
        states: &[Queued, Downloading],
        failed_at: Some(Stage::Download),
    };
    /// Work for the uploader: `downloaded`, `uploading` (resumed), `uploaded` (to verify),
    /// `failed` at upload.
    pub const UPLOAD_WORK: Group = Group {
        states: &[Downloaded, Uploading, Uploaded],
        failed_at: Some(Stage::Upload),
    };
    /// Not yet safely in the spool: leaving the camera now makes the clip `lost`.
    pub const BEFORE_DOWNLOAD: Group = Group {
        states: &[Seen, Queued, Downloading],
        failed_at: Some(Stage::Download),
    };
    /// Counts toward the spool cap (`[spool] max_bytes`): held in the spool, not yet
    /// verified. A clip that failed at download is not counted (its `.part` is resumed
    /// when the clip is `downloading` again, and counted then).
    pub const IN_SPOOL: Group = Group {
        states: &[Downloading, Downloaded, Uploading, Uploaded],
        failed_at: Some(Stage::Upload),
    };

    /// Whether a clip in `state` (failed at `failed_stage`) belongs.
    pub fn contains(&self, state: ClipState, failed_stage: Option<Stage>) -> bool {
        self.states.contains(&state)
            || (state == Failed && self.failed_at.is_some() && failed_stage == self.failed_at)
    }

    /// The SQL condition on a `clips` row (columns `state`, `failed_stage`).
    pub(crate) fn sql(&self) -> String {
        let states = in_list(self.states);
        match self.failed_at {
            Some(stage) => {
                format!("(state IN {states} OR (state = 'failed' AND failed_stage = '{stage}'))")
            }
            None => format!("(state IN {states})"),
        }
    }
}

/// `('a', 'b')`: an SQL list of states (the texts are constants, never user input).
pub(crate) fn in_list(states: &[ClipState]) -> String {
    let items: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
    format!("({})", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_unknown_is_none() {
        for s in ClipState::ALL {
            assert_eq!(ClipState::parse(s.as_str()), Some(s));
        }
        assert_eq!(ClipState::parse("exploded"), None);
    }

    #[test]
    fn groups_are_consistent() {
        for s in ClipState::ALL {
            // Pending is part of "still to do"; nothing terminal is still to do or pending.
            assert!(!s.is_pending() || s.is_still_to_do(), "{s}");
            assert!(!(s.is_terminal() && s.is_still_to_do()), "{s}");
            assert!(!(s.is_offloaded() && s.is_pending()), "{s}");
        }
        assert_eq!(
            in_list(&[Queued, Failed]),
            "('queued', 'failed')".to_string()
        );
        assert_eq!(
            Group::DOWNLOAD_WORK.sql(),
            "(state IN ('queued', 'downloading') OR (state = 'failed' AND failed_stage = 'download'))"
        );
    }
}
