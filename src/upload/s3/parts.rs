//! Cutting a file into parts ([`PartPlan`], [`plan_parts`]), the digests of every part
//! ([`plan_digests`]), and which journaled or listed parts a resumed upload may keep
//! ([`reusable_parts`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aws_sdk_s3::types::Part;

use super::super::digests::{PartDigests, file_digests};
use super::super::{DonePart, MultipartProgress, UploadError, UploadJournal};
use super::forms::part_etag_differs;
use super::settings::part_count;

/// One part of the file: its number, where it starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartPlan {
    pub(super) number: i32,
    pub(super) offset: u64,
    pub(super) len: u64,
}

/// Which journaled or listed parts can be kept: the store lists them with the expected size,
/// the checksum recorded for them (journal, else listing) equals the SHA-256 of that
/// range of the file now (`digests`), and their ETag (listing, else journal), where it has
/// an MD5's shape, is the MD5 of that range (`forms::part_etag_differs`; ListParts says
/// nothing of encryption, so an SSE-KMS upload's parts, whose ETags look like MD5s but are
/// not, are sent again). Listed-but-unjournaled parts that qualify, and parts journaled
/// without their MD5 (by an older version), are journaled.
pub(super) async fn reusable_parts(
    size: u64,
    progress: &MultipartProgress,
    listed: &[Part],
    digests: &[PartDigests],
    journal: &dyn UploadJournal,
) -> Result<BTreeMap<i32, DonePart>, UploadError> {
    let plan: HashMap<i32, PartPlan> = plan_parts(size, progress.part_size)
        .into_iter()
        .map(|p| (p.number, p))
        .collect();
    let journaled: HashMap<i32, &DonePart> = progress.parts.iter().map(|p| (p.number, p)).collect();
    let mut keep = BTreeMap::new();
    for lp in listed {
        let Some(plan) = lp.part_number().and_then(|n| plan.get(&n)) else {
            continue;
        };
        if lp.size().and_then(|s| u64::try_from(s).ok()) != Some(plan.len) {
            continue;
        }
        let jp = journaled.get(&plan.number).filter(|j| j.size == plan.len);
        let recorded = jp.map(|j| j.sha256_b64.as_str()).or(lp.checksum_sha256());
        let etag = lp.e_tag().or(jp.map(|j| j.etag.as_str()));
        let (Some(recorded), Some(etag), Some(actual)) =
            (recorded, etag, digest_of(digests, plan.number))
        else {
            continue;
        };
        if lp.checksum_sha256().is_some_and(|c| c != recorded) || actual.sha256_b64 != recorded {
            continue;
        }
        if part_etag_differs(etag, &actual.md5_hex, None) {
            tracing::warn!(
                part = plan.number,
                etag,
                md5 = actual.md5_hex,
                "a part the store holds has an ETag that is not its MD5: sending it again"
            );
            continue;
        }
        let done = DonePart {
            number: plan.number,
            etag: etag.to_owned(),
            sha256_b64: actual.sha256_b64.clone(),
            md5_hex: actual.md5_hex.clone(),
            size: plan.len,
        };
        if jp.is_none_or(|j| j.md5_hex.is_empty()) {
            journal
                .part_done(&done)
                .await
                .map_err(UploadError::Journal)?;
        }
        keep.insert(plan.number, done);
    }
    Ok(keep)
}

/// The digests of every part of the file cut at `part_size`, after checking the whole
/// file's SHA-256 (one read; see [`file_digests`]).
pub(super) async fn plan_digests(
    file: &Path,
    size: u64,
    part_size: u64,
    sha256_hex: &str,
) -> Result<Vec<PartDigests>, UploadError> {
    let lens = plan_parts(size, part_size).iter().map(|p| p.len).collect();
    file_digests(file, lens, sha256_hex).await
}

pub(super) fn digest_of(digests: &[PartDigests], number: i32) -> Option<&PartDigests> {
    usize::try_from(number)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| digests.get(i))
}

/// Cuts `size` bytes into parts of `part_size` (the last one shorter).
pub(super) fn plan_parts(size: u64, part_size: u64) -> Vec<PartPlan> {
    let count = part_count(size, part_size).max(1);
    (0..count)
        .map(|i| {
            let offset = i * part_size;
            PartPlan {
                number: i32::try_from(i + 1).unwrap_or(i32::MAX),
                offset,
                len: part_size.min(size.saturating_sub(offset)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn plans_parts_with_short_last_part() {
        let plan = plan_parts(12 * MIB, 5 * MIB);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[2].offset, 10 * MIB);
        assert_eq!(plan[2].len, 2 * MIB);
        assert_eq!(plan_parts(10 * MIB, 5 * MIB).len(), 2);
        assert_eq!(plan_parts(0, 5 * MIB).len(), 1);
    }
}
