//! Resumable multipart uploads: create or resume (from the [`UploadJournal`]), send the
//! missing parts, complete, or abort (the part planning is `parts`). The file is read once, in
//! order, to compute each part's SHA-256 and MD5 and the whole file's SHA-256; parts are
//! sent as their digests arrive, and Complete waits until the whole file matched the
//! download's SHA-256: the parts' digests, and so the composite checksum and ETag that
//! verification compares, are those of the downloaded bytes. (A resumed upload hashes the
//! whole file first, to decide which parts the store already holds.)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Part};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::super::digests::{PartDigests, WholeFileCheck, hash_in_parts};
use super::super::{
    DonePart, MultipartProgress, ObjectMeta, SentDigests, UploadError, UploadJournal, UploadOutcome,
};
use super::errors::{is_precondition_failed, map_sdk_err};
use super::forms::{encryption, part_etag_differs, unquote};
use super::parts::{PartPlan, digest_of, plan_digests, plan_parts, reusable_parts};
use super::settings::{ChecksumMode, MAX_PARTS, MIN_PART_SIZE, part_count};
use super::verify::compare_head;
use super::{S3Destination, content_type_for, file_body, to_i64};

/// How many times a part whose ETag is not its MD5 is sent before the upload fails.
const PART_TRIES: u32 = 3;

/// The multipart upload being worked on and the parts already safely in the store.
pub(super) struct Session {
    pub(super) upload_id: String,
    pub(super) part_size: u64,
    pub(super) done: BTreeMap<i32, DonePart>,
    /// The digests of every planned part, in order (part `n` at `n - 1`), when already
    /// computed (a resumed upload); else they are computed while the parts are sent.
    pub(super) digests: Option<Vec<PartDigests>>,
}

impl S3Destination {
    /// Aborts a multipart upload; an upload that no longer exists counts as aborted.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), UploadError> {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        match result.map_err(|e| map_sdk_err("AbortMultipartUpload", e)) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub(super) fn effective_part_size(&self, size: u64) -> u64 {
        self.part_size.max(size.div_ceil(MAX_PARTS))
    }

    /// Aborts (best effort) and forgets the journaled multipart upload, if any.
    pub(super) async fn forget_multipart(
        &self,
        key: &str,
        journal: &dyn UploadJournal,
    ) -> Result<(), UploadError> {
        if let Some(progress) = journal.multipart().await {
            if let Err(e) = self.abort_multipart(key, &progress.upload_id).await {
                tracing::warn!(key, error = %e, "could not abort a stale multipart upload");
            }
            journal
                .clear_multipart()
                .await
                .map_err(UploadError::Journal)?;
        }
        Ok(())
    }

    pub(super) async fn put_multipart(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        let mut session = self.open_session(file, key, size, meta, journal).await?;
        let (missing, check) = self.parts_to_send(file, (size, &meta.sha256_hex), &session);
        if let Err(e) = self
            .send_parts(file, key, &mut session, journal, missing, check)
            .await
        {
            return Err(self.fail_upload(key, &session.upload_id, journal, e).await);
        }
        self.complete_session(key, (size, &meta.sha256_hex), session, journal)
            .await
    }

    /// Completes the upload of `session`, whose parts were all sent and checked against the
    /// download (`expected`: its size and SHA-256).
    pub(super) async fn complete_session(
        &self,
        key: &str,
        expected: (u64, &str),
        session: Session,
        journal: &dyn UploadJournal,
    ) -> Result<UploadOutcome, UploadError> {
        let (size, sha256_hex) = expected;
        let parts: Vec<DonePart> = session.done.into_values().collect();
        let sent = SentDigests::of_parts(&parts);
        match self.complete(key, &session.upload_id, &parts).await {
            Ok(etag) => {
                journal
                    .clear_multipart()
                    .await
                    .map_err(UploadError::Journal)?;
                Ok(UploadOutcome::Uploaded { etag, sent })
            }
            Err(e) if is_precondition_failed(&e) => {
                self.forget_multipart(key, journal).await?;
                self.after_precondition_failed(key, size, sha256_hex).await
            }
            Err(e) => {
                // A retried Complete whose first try went through fails (the upload id is
                // gone): if the object is there and right, the upload did complete.
                if !e.is_transient()
                    && let Ok(Some(head)) = self.head(key).await
                    && compare_head(&head, size, sha256_hex).is_ok()
                {
                    journal
                        .clear_multipart()
                        .await
                        .map_err(UploadError::Journal)?;
                    let etag = head.e_tag().unwrap_or_default().to_owned();
                    return Ok(UploadOutcome::Uploaded { etag, sent });
                }
                Err(self.fail_upload(key, &session.upload_id, journal, e).await)
            }
        }
    }

    /// Resumes the journaled upload if the store still has it, else creates a new one.
    async fn open_session(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<Session, UploadError> {
        if let Some(progress) = journal.multipart().await {
            if let Some(session) = self
                .resume(file, key, size, &meta.sha256_hex, &progress, journal)
                .await?
            {
                return Ok(session);
            }
            journal
                .clear_multipart()
                .await
                .map_err(UploadError::Journal)?;
        }
        self.new_session(key, size, meta, journal).await
    }

    /// Creates a multipart upload and journals it.
    pub(super) async fn new_session(
        &self,
        key: &str,
        size: u64,
        meta: &ObjectMeta,
        journal: &dyn UploadJournal,
    ) -> Result<Session, UploadError> {
        let part_size = self.effective_part_size(size);
        let upload_id = self.create(key, meta).await?;
        if let Err(e) = journal.begin_multipart(&upload_id, part_size).await {
            let _ = self.abort_multipart(key, &upload_id).await;
            return Err(UploadError::Journal(e));
        }
        tracing::debug!(key, upload_id, part_size, "multipart upload created");
        Ok(Session {
            upload_id,
            part_size,
            done: BTreeMap::new(),
            digests: None,
        })
    }

    /// `None` when the journaled upload cannot be resumed (gone, or an unusable part size).
    async fn resume(
        &self,
        file: &Path,
        key: &str,
        size: u64,
        sha256_hex: &str,
        progress: &MultipartProgress,
        journal: &dyn UploadJournal,
    ) -> Result<Option<Session>, UploadError> {
        if progress.part_size < MIN_PART_SIZE || part_count(size, progress.part_size) > MAX_PARTS {
            let _ = self.abort_multipart(key, &progress.upload_id).await;
            return Ok(None);
        }
        let Some(listed) = self.parts_to_resume(key, &progress.upload_id).await? else {
            return Ok(None);
        };
        let digests = plan_digests(file, size, progress.part_size, sha256_hex).await?;
        let done = reusable_parts(size, progress, &listed, &digests, journal).await?;
        tracing::info!(
            key,
            upload_id = progress.upload_id,
            reused = done.len(),
            "resuming multipart upload"
        );
        Ok(Some(Session {
            upload_id: progress.upload_id.clone(),
            part_size: progress.part_size,
            done,
            digests: Some(digests),
        }))
    }

    pub(super) async fn create(&self, key: &str, meta: &ObjectMeta) -> Result<String, UploadError> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type_for(key))
            .set_metadata(Some(meta.to_metadata()));
        if self.checksum == ChecksumMode::Sha256 {
            request = request.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        let out = request
            .send()
            .await
            .map_err(|e| map_sdk_err("CreateMultipartUpload", e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| UploadError::Other("CreateMultipartUpload returned no upload id".into()))
    }

    /// The parts the store holds for the journaled upload `upload_id`, to resume it;
    /// `None` when it cannot be resumed: the upload is gone, or the store's answer is not
    /// one retrying can change (moto 5.2.5 names the root of its ListParts reply
    /// `ListPartsResponse`, which the SDK cannot read): that upload is then aborted and a
    /// new one starts, costing the parts already sent but no failed attempt.
    pub(super) async fn parts_to_resume(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Option<Vec<Part>>, UploadError> {
        match self.list_parts_all(key, upload_id).await {
            Ok(listed) => Ok(Some(listed)),
            Err(e) if e.code() == Some("NoSuchUpload") => {
                tracing::info!(key, "journaled multipart upload is gone; starting over");
                Ok(None)
            }
            Err(e) if e.is_transient() || e.is_destination_wide() => Err(e),
            Err(e) => {
                tracing::warn!(
                    key,
                    upload_id,
                    "cannot resume the multipart upload ({e}); aborting it and starting over"
                );
                let _ = self.abort_multipart(key, upload_id).await;
                Ok(None)
            }
        }
    }

    /// All parts the store holds for the upload (following ListParts pagination).
    pub(super) async fn list_parts_all(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<Part>, UploadError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.clone())
                .send()
                .await
                .map_err(|e| map_sdk_err("ListParts", e))?;
            parts.extend_from_slice(out.parts());
            let next = out.next_part_number_marker().map(str::to_owned);
            if out.is_truncated() != Some(true) || next.is_none() || next == marker {
                return Ok(parts);
            }
            marker = next;
        }
    }

    /// Sends the parts `missing` yields, `part_concurrency` at a time, journaling each as it
    /// completes, then `check`s that the file read was the one downloaded. After the first
    /// failure no new part starts, but parts already in flight finish and are journaled, so
    /// a resume repeats as little as possible.
    pub(super) async fn send_parts(
        &self,
        file: &Path,
        key: &str,
        session: &mut Session,
        journal: &dyn UploadJournal,
        missing: BoxStream<'static, (PartPlan, PartDigests)>,
        check: Option<WholeFileCheck>,
    ) -> Result<(), UploadError> {
        let stop = AtomicBool::new(false);
        let upload_id = session.upload_id.as_str();
        let mut results = missing
            .map(|(part, digests)| {
                let stop = &stop;
                async move {
                    if stop.load(Ordering::SeqCst) {
                        return None;
                    }
                    Some(self.send_part(file, key, upload_id, part, digests).await)
                }
            })
            .buffer_unordered(self.part_concurrency);
        let mut failure: Option<UploadError> = None;
        while let Some(result) = results.next().await {
            let error = match result {
                None => continue,
                Some(Ok(done)) => match journal.part_done(&done).await {
                    Ok(()) => {
                        session.done.insert(done.number, done);
                        continue;
                    }
                    Err(e) => UploadError::Journal(e),
                },
                Some(Err(e)) => e,
            };
            stop.store(true, Ordering::SeqCst);
            // Keep the first permanent error if there is one: it decides whether to abort.
            if failure.as_ref().is_none_or(UploadError::is_transient) {
                failure = Some(error);
            }
        }
        // Dropping the stream stops the hashing if it is still going (after a failure).
        drop(results);
        match (failure, check) {
            (Some(e), _) => Err(e),
            (None, Some(check)) => check.finish().await.map(drop),
            (None, None) => Ok(()),
        }
    }

    /// The parts not in `session.done`, each with its digests: known already (a resumed
    /// upload), or as the one read of the file computes them, with the check of the whole
    /// file that must pass before the upload is completed.
    fn parts_to_send(
        &self,
        file: &Path,
        expected: (u64, &str),
        session: &Session,
    ) -> (
        BoxStream<'static, (PartPlan, PartDigests)>,
        Option<WholeFileCheck>,
    ) {
        let (size, sha256_hex) = expected;
        let plan = plan_parts(size, session.part_size);
        if let Some(digests) = &session.digests {
            let missing: Vec<(PartPlan, PartDigests)> = plan
                .into_iter()
                .filter(|p| !session.done.contains_key(&p.number))
                .filter_map(|p| Some((p, digest_of(digests, p.number)?.clone())))
                .collect();
            return (futures_util::stream::iter(missing).boxed(), None);
        }
        let lens = plan.iter().map(|p| p.len).collect();
        let (rx, check) = hash_in_parts(file, lens, sha256_hex, self.part_concurrency);
        let arriving =
            futures_util::stream::unfold((rx, plan.into_iter()), |(mut rx, mut plan)| async move {
                let digests = rx.recv().await?;
                Some(((plan.next()?, digests), (rx, plan)))
            });
        (arriving.boxed(), Some(check))
    }

    /// Uploads one part with its checksum (computed by the one read of the file), streamed
    /// from disk: a part in flight holds one read buffer, not the whole part, so memory does
    /// not grow with `part_size` × `part_concurrency` × `upload_concurrency`. (Bytes that
    /// changed between that read and this one are refused by the store in
    /// [`ChecksumMode::Sha256`], and do not match the ETag verification compares otherwise.)
    /// Where the store's ETags are MD5s, a part whose ETag is not its MD5 reached the store
    /// as other bytes (a store that checks no checksum, or `when_required`): it is sent
    /// again, up to [`PART_TRIES`] times in all, then the upload fails naming the part.
    async fn send_part(
        &self,
        file: &Path,
        key: &str,
        upload_id: &str,
        part: PartPlan,
        digests: PartDigests,
    ) -> Result<DonePart, UploadError> {
        let PartDigests {
            sha256_b64,
            md5_hex,
        } = digests;
        let mut tries = 0;
        let etag = loop {
            tries += 1;
            let (etag, encrypted) = self
                .send_part_once(file, key, upload_id, part, &sha256_b64)
                .await?;
            if !part_etag_differs(&etag, &md5_hex, encrypted) {
                break etag;
            }
            let mismatch = format!(
                "UploadPart: part {} of {key}: the store's ETag {} is not the MD5 of the part \
                 sent, {md5_hex}",
                part.number,
                unquote(&etag)
            );
            if tries >= PART_TRIES {
                return Err(UploadError::ChecksumMismatch(format!(
                    "{mismatch} ({tries} tries)"
                )));
            }
            tracing::warn!(key, part = part.number, "{mismatch}; sending it again");
        };
        tracing::debug!(key, part = part.number, len = part.len, "part uploaded");
        Ok(DonePart {
            number: part.number,
            etag,
            sha256_b64,
            md5_hex,
            size: part.len,
        })
    }

    /// One UploadPart request for `part`: the ETag the store returned and why it is not an
    /// MD5 of the bytes, if the part is encrypted (`forms::encryption`).
    async fn send_part_once(
        &self,
        file: &Path,
        key: &str,
        upload_id: &str,
        part: PartPlan,
        sha256_b64: &str,
    ) -> Result<(String, Option<&'static str>), UploadError> {
        let body = file_body(file, part.offset, part.len).await?;
        let mut request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(part.number)
            .content_length(to_i64(part.len)?)
            .body(body);
        if self.checksum == ChecksumMode::Sha256 {
            request = request.checksum_sha256(sha256_b64);
        }
        let started = Instant::now();
        let out = request
            .send()
            .await
            .map_err(|e| map_sdk_err("UploadPart", e))?;
        self.rate.observe(part.len, started);
        let etag = out
            .e_tag()
            .ok_or_else(|| UploadError::Other("UploadPart returned no ETag".into()))?;
        let encrypted = encryption(out.server_side_encryption(), out.sse_customer_algorithm());
        Ok((etag.to_owned(), encrypted))
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[DonePart],
    ) -> Result<String, UploadError> {
        let completed: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                let part = CompletedPart::builder()
                    .part_number(p.number)
                    .e_tag(&p.etag);
                if self.checksum == ChecksumMode::Sha256 {
                    part.checksum_sha256(&p.sha256_b64).build()
                } else {
                    part.build()
                }
            })
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await
            .map_err(|e| map_sdk_err("CompleteMultipartUpload", e))?;
        Ok(out.e_tag().unwrap_or_default().to_owned())
    }

    /// Decides what a failed multipart attempt leaves behind: transient failures keep the
    /// upload and journal for a resume; a vanished upload is forgotten (the retry starts
    /// over, so it is reported transient); any other permanent failure aborts the upload.
    pub(super) async fn fail_upload(
        &self,
        key: &str,
        upload_id: &str,
        journal: &dyn UploadJournal,
        err: UploadError,
    ) -> UploadError {
        if err.is_transient() {
            return err;
        }
        if let Err(e) = journal.clear_multipart().await {
            tracing::warn!(key, error = %e, "could not clear the upload journal");
        }
        if err.code() == Some("NoSuchUpload") {
            return match err {
                UploadError::Service {
                    op,
                    status,
                    code,
                    message,
                    ..
                } => UploadError::Service {
                    op,
                    status,
                    code,
                    message,
                    transient: true,
                },
                other => other,
            };
        }
        tracing::warn!(key, error = %err, "aborting multipart upload after a permanent failure");
        if let Err(e) = self.abort_multipart(key, upload_id).await {
            tracing::warn!(key, error = %e, "could not abort the multipart upload");
        }
        err
    }
}
