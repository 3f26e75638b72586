//! A multipart upload that runs while its clip downloads ([`S3Destination::upload_growing`]):
//! each part is hashed and sent as soon as its bytes are on disk (one read of the growing
//! file, see `growing`), and CompleteMultipartUpload waits until the download finished and
//! its SHA-256 is the one the upload read: nothing unverified is completed.
//!
//! The object is created before the file's SHA-256 exists, so its metadata carries
//! [`OVERLAPPED_META_KEY`](super::super::OVERLAPPED_META_KEY) instead of `sha256`, and its
//! verification must tie the content to the bytes exactly (checksum, ETag, or reading it
//! back), never by size and metadata alone (`verify`).
//!
//! A resumed upload (after a kill, or a download that stopped) keeps a journaled part only
//! when the store lists it with its size and the SHA-256 journaled for it is that of the
//! bytes on disk now; every other part is sent again.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aws_sdk_s3::types::Part;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::super::digests::PartDigests;
use super::super::growing::{Growing, hash_growing};
use super::super::{DonePart, MultipartProgress, ObjectMeta, UploadError, UploadJournal};
use super::super::{UploadOutcome, check_file_size};
use super::S3Destination;
use super::multipart::Session;
use super::parts::{PartPlan, plan_parts};
use super::settings::{MAX_PARTS, MIN_PART_SIZE, part_count};

impl S3Destination {
    /// Uploads the clip being downloaded into `file` (`size` bytes when whole) as `key`,
    /// reading parts as `growing` reports them on disk; completes only once the download
    /// finished and matched. `meta.sha256_hex` is empty (not known yet). `Ok(None)`: not
    /// started, an object is already under the key (the upload after the download decides,
    /// knowing the file's SHA-256). A download that stops ends it with a transient error
    /// that keeps the upload and its journal for the resume.
    pub async fn upload_growing(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
        growing: Growing,
    ) -> Result<Option<UploadOutcome>, UploadError> {
        if self.head(key).await?.is_some() {
            return Ok(None);
        }
        let mut session = self.open_growing(key, size, meta, journal).await?;
        let plan = plan_parts(size, session.part_size);
        let lens = plan.iter().map(|p| p.len).collect();
        let (rx, check) = hash_growing(file, lens, growing, self.part_concurrency);
        let missing = missing_parts(rx, plan, &session.done);
        let sent = self
            .send_parts(file, key, &mut session, journal, missing, None)
            .await;
        let checked = match sent {
            Ok(()) => check.finish().await,
            Err(e) => Err(e),
        };
        let sha256_hex = match checked {
            Ok(sha) => sha,
            Err(e) => return Err(self.fail_upload(key, &session.upload_id, journal, e).await),
        };
        if let Err(e) = check_file_size(file, size).await {
            return Err(self.fail_upload(key, &session.upload_id, journal, e).await);
        }
        let expected = (size, sha256_hex.as_str());
        let outcome = self
            .complete_session(key, expected, session, journal)
            .await?;
        Ok(Some(outcome))
    }

    /// Resumes the journaled upload if the store still has it, else creates one.
    async fn open_growing(
        &self,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<Session, UploadError> {
        if let Some(progress) = journal.multipart().await {
            let usable = progress.part_size >= MIN_PART_SIZE
                && part_count(size, progress.part_size) <= MAX_PARTS;
            let listed = if usable {
                self.parts_to_resume(key, &progress.upload_id).await?
            } else {
                let _ = self.abort_multipart(key, &progress.upload_id).await;
                None
            };
            if let Some(listed) = listed {
                let done = listed_and_journaled(size, &progress, &listed);
                tracing::info!(
                    key,
                    upload_id = progress.upload_id,
                    reused = done.len(),
                    "resuming multipart upload (while downloading; each part checked as it lands)"
                );
                return Ok(Session {
                    upload_id: progress.upload_id,
                    part_size: progress.part_size,
                    done,
                    digests: None,
                });
            }
            journal
                .clear_multipart()
                .await
                .map_err(UploadError::Journal)?;
        }
        self.new_session(key, size, meta, journal).await
    }
}

/// The parts to send as their digests arrive: all but those the store already holds with
/// the SHA-256 of the bytes on disk (`done`).
fn missing_parts(
    rx: tokio::sync::mpsc::Receiver<PartDigests>,
    plan: Vec<PartPlan>,
    done: &BTreeMap<i32, DonePart>,
) -> BoxStream<'static, (PartPlan, PartDigests)> {
    let held: HashMap<i32, String> = done
        .iter()
        .map(|(n, p)| (*n, p.sha256_b64.clone()))
        .collect();
    futures_util::stream::unfold((rx, plan.into_iter()), |(mut rx, mut plan)| async move {
        let digests = rx.recv().await?;
        Some(((plan.next()?, digests), (rx, plan)))
    })
    .filter(move |(p, d)| std::future::ready(held.get(&p.number) != Some(&d.sha256_b64)))
    .boxed()
}

/// The journaled parts the store lists with their planned size (and the journaled SHA-256,
/// when it lists one). Whether each is the bytes on disk is checked as they are read.
fn listed_and_journaled(
    size: u64,
    progress: &MultipartProgress,
    listed: &[Part],
) -> BTreeMap<i32, DonePart> {
    let lens: HashMap<i32, u64> = plan_parts(size, progress.part_size)
        .into_iter()
        .map(|p| (p.number, p.len))
        .collect();
    let listed: HashMap<i32, &Part> = listed
        .iter()
        .filter_map(|p| Some((p.part_number()?, p)))
        .collect();
    progress
        .parts
        .iter()
        .filter(|j| lens.get(&j.number) == Some(&j.size) && !j.md5_hex.is_empty())
        .filter(|j| {
            listed.get(&j.number).is_some_and(|lp| {
                lp.size().and_then(|s| u64::try_from(s).ok()) == Some(j.size)
                    && lp.checksum_sha256().is_none_or(|c| c == j.sha256_b64)
            })
        })
        .map(|j| (j.number, j.clone()))
        .collect()
}
