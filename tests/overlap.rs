//! Large clips overlap (issue 9, item 8): a clip that goes multipart uploads its parts while
//! it downloads, and nothing is completed before the whole download is hashed and matches.
//! Real `qucam-sim` over HTTP (its bandwidth fault keeps a download going long enough to be
//! observed), the agent in-process, both S3 stores.
//!
//! The signal that the upload overlaps is deterministic: the state database shows a part
//! journaled (sent and acknowledged) for a clip that is still `downloading`; without the
//! overlap a clip has parts only once it is `uploading`.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::fleet::{Fleet, Knobs, clip_path, sha256_hex};
use common::s3::Store;
use md5::{Digest as _, Md5};
use sha2::Sha256;

const MIB: u64 = 1024 * 1024;
const CLIP: u64 = 16 * MIB;
const PART: u64 = 5 * MIB;
/// Slow enough that a clip downloads for seconds: parts are sent long before its end.
const SLOW: u64 = 2_000_000;

fn knobs() -> Knobs {
    Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"\npart_concurrency = 2".into(),
        ..Knobs::default()
    }
}

/// A clip that is `downloading` with parts journaled: (name, upload id, parts).
fn overlapping(f: &Fleet) -> Option<(String, String, i64)> {
    if !f.db_path().exists() {
        return None;
    }
    f.db()
        .try_clips()
        .ok()?
        .into_iter()
        .filter(|c| c.state == "downloading" && c.parts > 0)
        .find_map(|c| Some((c.name, c.upload_id?, c.parts)))
}

/// Polls until a clip uploads while it downloads (deadline: a failure, not a wait).
async fn wait_for_overlap(f: &Fleet) -> (String, String, i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(o) = overlapping(f) {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "no part was uploaded while its clip downloaded: {:?}",
            f.states()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The clip's state and its journaled upload id.
fn row(f: &Fleet, name: &str) -> (String, Option<String>) {
    let c = f.db().clip(name);
    (c.state, c.upload_id)
}

/// The object of `name` is tied exactly to its bytes in the store's own terms: its ETag is
/// the MD5 of the part MD5s (`-N`), and a SHA-256 checksum, if the store reports one, is the
/// composite of the part digests; its metadata says it was uploaded while downloading.
async fn assert_exact_forms(f: &Fleet, name: &str) {
    let key = f.key(name);
    let bytes = f.s3.object_bytes(&key).expect("object");
    let (mut md5s, mut shas) = (Vec::new(), Vec::new());
    for chunk in bytes.chunks(PART as usize) {
        md5s.extend_from_slice(&Md5::digest(chunk));
        shas.extend_from_slice(&Sha256::digest(chunk));
    }
    let n = bytes.len().div_ceil(PART as usize);
    let head =
        f.s3.client()
            .head_object()
            .bucket("fleet-video")
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .expect("head");
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned();
    assert_eq!(etag, format!("{}-{n}", hex::encode(Md5::digest(&md5s))));
    if let Some(c) = head.checksum_sha256() {
        let composite = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&shas));
        assert_eq!(c.split('-').next(), Some(composite.as_str()), "{c}");
    }
    let meta = head.metadata().cloned().unwrap_or_default();
    assert_eq!(meta.get("overlapped").map(String::as_str), Some("true"));
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    parts_are_uploaded_while_the_clip_downloads_and_the_object_verifies_exactly
);
async fn parts_are_uploaded_while_the_clip_downloads_and_the_object_verifies_exactly(store: Store) {
    let f = Fleet::start_on(store, 3, CLIP).await;
    let k = knobs();
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = Some(SLOW));
    let agent = f.agent(&k);
    let run = tokio::spawn(async move { agent.run_once().await });
    let (name, _, parts) = wait_for_overlap(&f).await;
    assert!(parts >= 1);
    assert!(
        f.s3.object_bytes(&f.key(&name)).is_none(),
        "nothing is completed while the clip downloads"
    );
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    run.await.expect("run");
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
        let state = row(&f, &n).0;
        assert!(
            ["verified", "deleted"].contains(&state.as_str()),
            "{n}: {state}"
        );
    }
    assert_exact_forms(&f, &name).await;
    assert!(f.s3.list_incomplete_multipart().await.is_empty());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_camera_gone_mid_overlap_completes_nothing_and_resumes_both_sides
);
async fn a_camera_gone_mid_overlap_completes_nothing_and_resumes_both_sides(store: Store) {
    let f = Fleet::start_on(store, 3, CLIP).await;
    let k = knobs();
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = Some(SLOW));
    let agent = f.agent(&k);
    let run = tokio::spawn(async move { agent.run_once().await });
    let (name, upload_id, _) = wait_for_overlap(&f).await;
    f.sim.set_reachable(false);
    run.await.expect("run");

    // The download stopped: the upload waits, with its parts, and nothing was completed.
    let key = f.key(&name);
    assert!(
        f.s3.object_bytes(&key).is_none(),
        "completed from partial bytes"
    );
    let (state, journaled) = row(&f, &name);
    assert_eq!(
        state, "downloading",
        "the clip failed only as its camera went away"
    );
    assert_eq!(journaled.as_deref(), Some(upload_id.as_str()));
    assert!(f.s3.stored_parts(&upload_id) >= 1, "the parts sent stay");
    assert!(f.sim.deletes().is_empty());

    f.sim.set_reachable(true);
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    f.run_until_done(&k, 5).await;
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
    }
    assert_exact_forms(&f, &name).await;
    assert!(f.s3.list_incomplete_multipart().await.is_empty());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_clip_that_changes_under_its_partial_file_aborts_the_upload_of_the_old_bytes
);
async fn a_clip_that_changes_under_its_partial_file_aborts_the_upload_of_the_old_bytes(
    store: Store,
) {
    let mut f = Fleet::start_on(store, 3, CLIP).await;
    // Listed in full at every pass (see the note at the end of the issue 20 work: a clip
    // rewritten under its partial file is not yet settled by windowed listings).
    let k = Knobs {
        sync: "full_listing_every = \"0s\"".into(),
        ..knobs()
    };
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = Some(SLOW));
    let agent = f.agent(&k);
    let run = tokio::spawn(async move { agent.run_once().await });
    let (name, old_upload, _) = wait_for_overlap(&f).await;
    f.sim.set_reachable(false);
    run.await.expect("run");
    assert!(f.s3.stored_parts(&old_upload) >= 1);

    // The camera now holds other bytes under that name (a clock reset, a rewrite).
    let new: Vec<u8> = (0..CLIP + MIB).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(clip_path(&f.camera_dir, &name), &new).expect("rewrite the clip");
    f.originals.insert(name.clone(), sha256_hex(&new));
    f.sim.set_reachable(true);
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);

    // The resume finds another size: the partial file is discarded, and with it the upload
    // begun from it.
    f.run_once(&k).await;
    let (_, journaled) = row(&f, &name);
    assert_ne!(journaled.as_deref(), Some(old_upload.as_str()));
    assert!(
        !f.s3.list_incomplete_multipart().await.contains(&old_upload),
        "the upload of the old bytes is aborted"
    );
    f.run_until_done(&k, 6).await;
    f.assert_in_bucket(&name);
    assert!(f.s3.list_incomplete_multipart().await.is_empty());
}
