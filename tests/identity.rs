//! Clip identity against real cameras' habits: a name the camera writes again after its
//! clip was deleted (a clock reset), a clip that changes after it was downloaded, a path
//! rewritten before retention, a vehicle swap at the shared hotspot address mid-pass, and
//! the same file name in two directories. The agent runs in-process against `qucam-sim`
//! and the S3 stores on 127.0.0.1; every delete is checked as it happens: the bucket must
//! hold the exact bytes being deleted, under the IMEI of the camera that deletes them.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::fleet::{Fleet, IMEI, Knobs, sha256_hex};
use common::s3::Store;
use common::sim::content;
use qucam_offload::agent::PassOutcome;
use qucam_sim::{self as sim, VIDEO_ROOT};

/// An event clip (`_01_`, selected by default).
const NAME: &str = "20210101_000012_01_1.mp4";
const SIZE: usize = 50_000;
/// The vehicle that takes the address in the swap scenarios.
const OTHER_IMEI: &str = "359881234567890";

fn knobs() -> Knobs {
    Knobs::default()
}

/// Keeps verified clips on the camera (this pass).
fn keep() -> Knobs {
    Knobs {
        retention: "min_age_on_camera = \"1h\"".into(),
        ..knobs()
    }
}

fn key(imei: &str, name: &str) -> String {
    format!("dashcam/{imei}/2021-01-01/{name}")
}

/// The key of a later generation (or a second path) holding `bytes`.
fn hashed_key(imei: &str, bytes: &[u8]) -> String {
    let stem = NAME.trim_end_matches(".mp4");
    key(imei, &format!("{stem}~{}.mp4", &sha256_hex(bytes)[..8]))
}

/// Writes `NAME` with `bytes` under `dir` (camera layout); its camera path.
fn write(dir: &std::path::Path, bytes: &[u8]) -> String {
    sim::write_clip(dir, NAME, bytes).expect("write clip")
}

fn file_of(dir: &std::path::Path, camera_path: &str) -> PathBuf {
    dir.join(
        camera_path
            .trim_start_matches(VIDEO_ROOT)
            .trim_start_matches('/'),
    )
}

/// Records every delete the bucket does not vouch for: the file about to be deleted must
/// be held, byte for byte, under the IMEI of the camera answering at that moment.
fn guard_deletes(f: &Fleet) -> Arc<Mutex<Vec<String>>> {
    let objects = f.s3.objects();
    let device = f.sim.device();
    let bad = Arc::new(Mutex::new(Vec::new()));
    let seen = bad.clone();
    f.sim.set_on_delete(move |path| {
        let imei = device.imei();
        let bytes = std::fs::read(file_of(&device.dir(), path)).unwrap_or_default();
        let sha = sha256_hex(&bytes);
        let held = objects.keys().iter().any(|k| {
            k.starts_with(&format!("dashcam/{imei}/"))
                && objects.bytes(k).is_some_and(|b| sha256_hex(&b) == sha)
        });
        if !held {
            seen.lock().unwrap().push(format!("{imei}: {path}"));
        }
    });
    bad
}

fn done(imei: &str) -> PassOutcome {
    PassOutcome::Done {
        imei: imei.into(),
        remaining: 0,
    }
}

/// Rows of `imei` at `path`: (generation, state).
fn generations(f: &Fleet, imei: &str, path: &str) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = f
        .db()
        .clips()
        .into_iter()
        .filter(|c| c.imei == imei && c.path == path)
        .map(|c| (c.generation, c.state))
        .collect();
    rows.sort_by_key(|(generation, _)| *generation);
    rows
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_name_written_again_after_its_clip_was_deleted_is_offloaded_under_a_suffixed_key
);
async fn a_name_written_again_after_its_clip_was_deleted_is_offloaded_under_a_suffixed_key(
    store: Store,
) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (old, new) = (content(1, SIZE), content(2, SIZE));
    let path = write(&f.camera_dir, &old);
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
    // The camera's clock resets and it records the same name again (same size even).
    write(&f.camera_dir, &new);
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(old), "untouched");
    assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &new)), Some(new));
    assert_eq!(f.bucket_keys().len(), 2);
    assert_eq!(f.sim.deletes(), [path.clone(), path.clone()]);
    assert_eq!(
        generations(&f, IMEI, &path),
        [(0, "deleted".into()), (1, "deleted".into())]
    );
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_large_clip_written_again_is_hashed_before_its_upload_never_overlapping
);
/// A later generation that goes multipart: its key carries its hash, so it must not upload
/// while it downloads (its key is not known yet); the first generation of the same size did.
async fn a_large_clip_written_again_is_hashed_before_its_upload_never_overlapping(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let big = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"".into(),
        ..knobs()
    };
    let size = 12 * 1024 * 1024;
    let (old, new) = (content(3, size), content(4, size));
    let path = write(&f.camera_dir, &old);
    assert_eq!(f.run_once(&big).await, done(IMEI));
    write(&f.camera_dir, &new);
    assert_eq!(f.run_once(&big).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(old), "untouched");
    assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &new)), Some(new));
    assert_eq!(f.bucket_keys().len(), 2, "{:?}", f.bucket_keys());
    assert_eq!(
        generations(&f, IMEI, &path),
        [(0, "deleted".into()), (1, "deleted".into())]
    );
    let later = f
        .db()
        .clips()
        .into_iter()
        .find(|c| c.generation == 1)
        .expect("a generation 1");
    let (attempts, reason) = (later.attempts, later.reason);
    assert_eq!(
        (attempts, reason),
        (0, None),
        "the later generation stumbled"
    );
    assert_eq!(f.s3.list_incomplete_multipart().await, Vec::<String>::new());
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_clip_that_grew_after_its_download_is_offloaded_again_in_full
);
async fn a_clip_that_grew_after_its_download_is_offloaded_again_in_full(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let first = content(3, SIZE);
    let path = write(&f.camera_dir, &first);
    // Offloaded and verified, kept on the camera for now.
    f.run_once(&keep()).await;
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(first.clone()));
    assert!(f.sim.deletes().is_empty());
    // It was still recording: the camera's file grows.
    let mut grown = first.clone();
    grown.extend(content(4, 20_000));
    std::fs::write(file_of(&f.camera_dir, &path), &grown).unwrap();
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(
        f.s3.object_bytes(&key(IMEI, NAME)),
        Some(first),
        "untouched"
    );
    assert_eq!(
        f.s3.object_bytes(&hashed_key(IMEI, &grown)),
        Some(grown),
        "the whole grown clip, under its own key"
    );
    assert!(
        bad.lock().unwrap().is_empty(),
        "deleted on the old object's strength: {:?}",
        bad.lock().unwrap()
    );
    assert_eq!(
        f.sim.deletes(),
        std::slice::from_ref(&path),
        "once its own object is verified"
    );
    assert_eq!(
        generations(&f, IMEI, &path),
        [(0, "retained".into()), (1, "deleted".into())]
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_path_rewritten_after_its_verification_is_not_deleted_on_the_old_one
);
async fn a_path_rewritten_after_its_verification_is_not_deleted_on_the_old_one(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (old, new) = (content(5, SIZE), content(6, SIZE + 1_000));
    let path = write(&f.camera_dir, &old);
    // The camera rewrites the path after the clip was verified, before retention lists it
    // again (the pass's first two listings are the listing and its head re-read).
    let listings = Arc::new(Mutex::new(0));
    let (dir, rewrite) = (f.camera_dir.clone(), new.clone());
    f.sim.set_on_request(move |p, _| {
        if p == "/device/get_video_files_info" {
            let mut n = listings.lock().unwrap();
            *n += 1;
            if *n == 3 {
                write(&dir, &rewrite);
            }
        }
    });
    f.run_once(&knobs()).await;
    assert!(
        f.sim.deletes().is_empty(),
        "deleted the rewritten file on the old verification"
    );
    assert_eq!(std::fs::read(file_of(&f.camera_dir, &path)).unwrap(), new);
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(old.clone()));
    // The next pass offloads the new clip under its own key, then deletes it.
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(old), "untouched");
    assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &new)), Some(new));
    assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

/// A second vehicle: a camera dir holding its own clip at the same path as ours.
fn other_vehicle(f: &Fleet, bytes: &[u8]) -> PathBuf {
    other_vehicle_with(f, NAME, bytes).0
}

/// The other vehicle's clip directory holding `name` with `bytes`, and that clip's path.
fn other_vehicle_with(f: &Fleet, name: &str, bytes: &[u8]) -> (PathBuf, String) {
    let dir = f.dir.path().join("other-camera");
    std::fs::create_dir_all(&dir).unwrap();
    let path = sim::write_clip(&dir, name, bytes).expect("write clip");
    (dir, path)
}

/// The states of the clips of `imei`, in id order.
fn states_of(f: &Fleet, imei: &str) -> Vec<String> {
    f.db()
        .clips()
        .into_iter()
        .filter(|c| c.imei == imei)
        .map(|c| c.state)
        .collect()
}

/// How many clips of `imei` are at camera path `path`.
fn rows_at(f: &Fleet, imei: &str, path: &str) -> i64 {
    f.db()
        .clips()
        .iter()
        .filter(|c| c.imei == imei && c.path == path)
        .count() as i64
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_vehicle_swap_during_a_download_discards_it_and_offloads_the_new_camera
);
async fn a_vehicle_swap_during_a_download_discards_it_and_offloads_the_new_camera(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (ours, theirs) = (content(7, SIZE), content(8, SIZE));
    let path = write(&f.camera_dir, &ours);
    let other_dir = other_vehicle(&f, &theirs);
    // The other vehicle takes the address as our clip's download starts: it serves its
    // own clip at the same path, with the same size.
    let swapped = Arc::new(Mutex::new(false));
    let to = other_dir.clone();
    f.sim.set_on_request(move |p, device| {
        let mut s = swapped.lock().unwrap();
        if p.starts_with(VIDEO_ROOT) && !*s {
            *s = true;
            device.swap(OTHER_IMEI, to.clone());
        }
    });
    let out = f.run_once(&knobs()).await;
    assert_eq!(
        out,
        done(OTHER_IMEI),
        "a pass for the camera that answers now"
    );
    assert_eq!(
        f.s3.object_bytes(&key(IMEI, NAME)),
        None,
        "the other vehicle's bytes were attributed to ours"
    );
    assert_eq!(f.s3.object_bytes(&key(OTHER_IMEI, NAME)), Some(theirs));
    // Ours is waiting for its own camera, no attempt counted; its file is untouched.
    let waiting = f
        .db()
        .clips()
        .into_iter()
        .find(|c| c.imei == IMEI)
        .expect("our clip");
    assert_eq!((waiting.state.as_str(), waiting.attempts), ("queued", 0));
    assert!(file_of(&f.camera_dir, &path).exists());
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
    // Our vehicle comes back: its clip is offloaded.
    f.sim.device().swap(IMEI, f.camera_dir.clone());
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_vehicle_swap_before_the_deletes_deletes_nothing_of_ours_on_it
);
async fn a_vehicle_swap_before_the_deletes_deletes_nothing_of_ours_on_it(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (ours, theirs) = (content(9, SIZE), content(10, SIZE));
    write(&f.camera_dir, &ours);
    let other_dir = other_vehicle(&f, &theirs);
    // The other vehicle answers the IMEI check right before the deletes: the second one
    // after the listing retention takes (the pass's third), the first being that listing's.
    let (listings, checks) = (Arc::new(Mutex::new(0)), Arc::new(Mutex::new(0)));
    let to = other_dir.clone();
    f.sim.set_on_request(move |p, device| {
        let (mut n, mut k) = (listings.lock().unwrap(), checks.lock().unwrap());
        if p == "/device/get_video_files_info" {
            *n += 1;
        } else if p == "/device/get_device_info" && *n == 3 {
            *k += 1;
            if *k == 2 {
                device.swap(OTHER_IMEI, to.clone());
            }
        }
    });
    let out = f.run_once(&knobs()).await;
    assert_eq!(
        out,
        done(OTHER_IMEI),
        "a pass for the camera that answers now"
    );
    assert!(
        bad.lock().unwrap().is_empty(),
        "deleted from the other vehicle on our verification: {:?}",
        bad.lock().unwrap()
    );
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert_eq!(f.s3.object_bytes(&key(OTHER_IMEI, NAME)), Some(theirs));
    assert_eq!(
        states_of(&f, IMEI),
        ["verified"],
        "deleted next time our camera is here"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_same_name_in_two_directories_makes_two_objects
);
async fn the_same_name_in_two_directories_makes_two_objects(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (a, b) = (content(11, SIZE), content(12, SIZE + 10));
    let pa = write(&f.camera_dir, &a);
    // A second folder on the card, the same name.
    write(&f.camera_dir.join("second"), &b);
    let pb = pa.replace(VIDEO_ROOT, &format!("{VIDEO_ROOT}/second"));
    assert!(file_of(&f.camera_dir, &pb).exists());
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    let objects: Vec<Vec<u8>> = f
        .bucket_keys()
        .iter()
        .map(|k| f.s3.object_bytes(k).unwrap())
        .collect();
    assert_eq!(objects.len(), 2, "{:?}", f.bucket_keys());
    assert!(objects.contains(&a) && objects.contains(&b));
    // One keeps the plain key; the other's key carries its own digest.
    let plain = f.s3.object_bytes(&key(IMEI, NAME)).unwrap();
    let other = if plain == a { &b } else { &a };
    assert_eq!(
        f.s3.object_bytes(&hashed_key(IMEI, other)).as_ref(),
        Some(other)
    );
    let mut deleted = f.sim.deletes();
    deleted.sort();
    assert_eq!(deleted, [pa, pb]);
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_vehicle_swap_between_a_failed_delete_and_its_retry_deletes_nothing_on_it
);
/// Our camera answers the first delete "busy"; before the retry another vehicle, holding a
/// clip at the same path, takes the address (a swap looks just like a dropped connection).
async fn a_vehicle_swap_between_a_failed_delete_and_its_retry_deletes_nothing_on_it(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (ours, theirs) = (content(13, SIZE), content(14, SIZE));
    let path = write(&f.camera_dir, &ours);
    let other_dir = other_vehicle(&f, &theirs);
    let step = Arc::new(Mutex::new(0));
    f.sim.set_on_request(move |p, device| {
        let mut s = step.lock().unwrap();
        if *s == 0 && p == "/device/delete_file" {
            *s = 1;
            device.set_faults(|x| x.busy_deletes = 1);
        } else if *s == 1 {
            // The request right after the failed attempt.
            *s = 2;
            device.swap(OTHER_IMEI, other_dir.clone());
        }
    });
    let out = f.run_once(&knobs()).await;
    assert!(
        bad.lock().unwrap().is_empty(),
        "deleted from the other vehicle on our verification: {:?}",
        bad.lock().unwrap()
    );
    assert_eq!(
        out,
        done(OTHER_IMEI),
        "a pass for the camera that answers now"
    );
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert_eq!(f.s3.object_bytes(&key(OTHER_IMEI, NAME)), Some(theirs));
    assert_eq!(
        states_of(&f, IMEI),
        ["verified"],
        "deleted next time our camera is here"
    );
    assert!(file_of(&f.camera_dir, &path).exists());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_vehicle_swap_between_download_attempts_puts_none_of_its_bytes_in_ours
);
/// Our camera's download breaks halfway; before the retry another vehicle (the same path,
/// the same size) takes the address, and our camera is back by the check after the download.
/// Without a check before each request the retry appends the other vehicle's bytes to our
/// `.part`, the check after says "ours", and the mix is uploaded and our file deleted.
async fn a_vehicle_swap_between_download_attempts_puts_none_of_its_bytes_in_ours(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (ours, theirs) = (content(15, SIZE), content(16, SIZE));
    write(&f.camera_dir, &ours);
    let other_dir = other_vehicle(&f, &theirs);
    f.sim.set_faults(|x| {
        x.drop_after_bytes = Some(SIZE as u64 / 2);
        x.drop_downloads = 1;
    });
    let (home, step) = (f.camera_dir.clone(), Arc::new(Mutex::new(0)));
    f.sim.set_on_request(move |p, device| {
        let mut s = step.lock().unwrap();
        let download = p.starts_with(VIDEO_ROOT);
        match *s {
            // Our camera serves half the clip, then the connection drops.
            0 if download => *s = 1,
            // The next request, whatever it is, reaches the other vehicle.
            1 => {
                device.swap(OTHER_IMEI, other_dir.clone());
                *s = if download { 3 } else { 2 };
            }
            2 if download => *s = 3,
            // Ours is back for the check after that download.
            3 if p == "/device/get_device_info" => {
                device.swap(IMEI, home.clone());
                *s = 4;
            }
            _ => {}
        }
    });
    let out = f.run_once(&knobs()).await;
    assert!(
        bad.lock().unwrap().is_empty(),
        "deleted on the strength of another vehicle's bytes: {:?}",
        bad.lock().unwrap()
    );
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert_eq!(out, done(IMEI));
    // Our clip resumed its half from our camera: never a byte of the other one's. (The
    // delete challenge's spot checks, closed ranges, come after.)
    let ranges: Vec<Option<String>> = f
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with(VIDEO_ROOT))
        .filter(|r| r.range.as_deref().is_none_or(|x| x.ends_with('-')))
        .map(|r| r.range.clone())
        .collect();
    assert_eq!(
        ranges.last(),
        Some(&Some(format!("bytes={}-", SIZE / 2))),
        "{ranges:?}"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_download_whose_camera_cannot_be_asked_afterwards_is_kept_not_fetched_again
);
/// The IMEI check after a download gets no usable answer (not another IMEI): every request
/// was confirmed before it was sent, so the download is kept for the next pass, which
/// checks it again and offloads it without fetching a byte again.
async fn a_download_whose_camera_cannot_be_asked_afterwards_is_kept_not_fetched_again(
    store: Store,
) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let ours = content(17, SIZE);
    write(&f.camera_dir, &ours);
    let step = Arc::new(Mutex::new(0));
    f.sim.set_on_request(move |p, device| {
        let mut s = step.lock().unwrap();
        if p.starts_with(VIDEO_ROOT) && *s == 0 {
            *s = 1;
        } else if p == "/device/get_device_info" {
            // The check right after the download gets an unusable reply, once.
            let garbled = (*s == 1).then(|| "<html>rebooting</html>".to_string());
            if *s == 1 {
                *s = 2;
            }
            device.set_faults(|x| x.device_info_override = garbled);
        }
    });
    let out = f.run_once(&knobs()).await;
    assert!(matches!(out, PassOutcome::Failed { .. }), "{out:?}");
    let clip = f.db().clips().remove(0);
    assert_eq!((clip.state.as_str(), clip.attempts), ("downloading", 0));
    assert!(f.bucket_keys().is_empty(), "uploaded unconfirmed bytes");
    assert_eq!(f.sim.bytes_served(), SIZE as u64);
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert_eq!(
        f.sim.bytes_served(),
        SIZE as u64,
        "the kept download was fetched again"
    );
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_vehicle_swap_during_the_listing_takes_none_of_its_listing_for_ours
);
/// Another vehicle takes the address right after our camera's first listing page: its
/// listing must not be reconciled into our camera's clips (phantom clips, later "lost").
async fn a_vehicle_swap_during_the_listing_takes_none_of_its_listing_for_ours(store: Store) {
    const THEIR_NAME: &str = "20210101_000044_01_1.mp4";
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (ours, theirs) = (content(18, SIZE), content(19, SIZE));
    write(&f.camera_dir, &ours);
    let (other_dir, their_path) = other_vehicle_with(&f, THEIR_NAME, &theirs);
    let (to, step) = (other_dir.clone(), Arc::new(Mutex::new(0)));
    f.sim.set_on_request(move |p, device| {
        let mut s = step.lock().unwrap();
        if *s == 0 && p == "/device/get_video_files_info" {
            *s = 1;
        } else if *s == 1 {
            // The request right after our first listing page.
            *s = 2;
            device.swap(OTHER_IMEI, to.clone());
        }
    });
    assert_eq!(f.run_once(&knobs()).await, done(OTHER_IMEI));
    assert_eq!(
        rows_at(&f, IMEI, &their_path),
        0,
        "the other vehicle's listing was taken for ours"
    );
    let their_key = format!("dashcam/{OTHER_IMEI}/2021-01-01/{THEIR_NAME}");
    assert_eq!(f.s3.object_bytes(&their_key), Some(theirs));
    // Our camera comes back: its clip is offloaded, nothing of ours is lost.
    f.sim.device().swap(IMEI, f.camera_dir.clone());
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert_eq!(states_of(&f, IMEI), ["deleted"]);
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_vehicle_swap_during_the_retention_listing_takes_none_of_it_for_ours
);
/// Another vehicle answers the listing retention takes before the deletes (minutes after the
/// pass's own): nothing of it is reconciled into our camera's clips, nothing is deleted.
async fn a_vehicle_swap_during_the_retention_listing_takes_none_of_it_for_ours(store: Store) {
    const THEIR_NAME: &str = "20210101_000055_01_1.mp4";
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (ours, theirs) = (content(20, SIZE), content(21, SIZE));
    write(&f.camera_dir, &ours);
    let (other_dir, their_path) = other_vehicle_with(&f, THEIR_NAME, &theirs);
    let (to, listings) = (other_dir.clone(), Arc::new(Mutex::new(0)));
    f.sim.set_on_request(move |p, device| {
        let mut n = listings.lock().unwrap();
        if p == "/device/get_video_files_info" {
            *n += 1;
            if *n == 3 {
                device.swap(OTHER_IMEI, to.clone());
            }
        }
    });
    assert_eq!(f.run_once(&knobs()).await, done(OTHER_IMEI));
    assert_eq!(
        rows_at(&f, IMEI, &their_path),
        0,
        "the other vehicle's listing was taken for ours"
    );
    assert_eq!(
        states_of(&f, IMEI),
        ["verified"],
        "deleted next time our camera is here"
    );
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(ours));
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_partial_download_of_an_earlier_listing_is_never_resumed
);
/// A kill left the `.part` of a clip's earlier listing behind after the grown size was
/// committed (the row is back to `seen`, the file's removal never ran): the download must
/// start over, never append the grown file's tail to the old bytes.
async fn a_partial_download_of_an_earlier_listing_is_never_resumed(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let old = content(7, SIZE);
    let path = write(&f.camera_dir, &old);
    // Downloaded, not uploaded: the destination refuses connections.
    f.s3.set_refusing(true);
    f.run_once(&knobs()).await;
    f.s3.set_refusing(false);
    let dir = f.state_dir.join("spool").join(IMEI);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // The agent's own partial download of the old listing: its first half.
    let part = PathBuf::from(format!("{}.part", files[0].display()));
    std::fs::write(&part, &old[..SIZE / 2]).unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    let mut grown = old.clone();
    grown.extend(content(8, 20_000));
    std::fs::write(file_of(&f.camera_dir, &path), &grown).unwrap();
    let changed = f.db().set_back_to_seen(&path, grown.len() as i64);
    assert_eq!(changed, 1);
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(grown));
    assert!(!part.exists(), "the old listing's partial file was removed");
    assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_clip_whose_plain_key_holds_other_bytes_goes_to_its_hashed_key
);
/// A fresh state dir (or a second gateway) does not know the earlier generation whose object
/// holds the plain key: its clip is a later one and lands under its hashed key, no attempt
/// counted, the object there untouched; a small clip and one that goes multipart.
async fn a_clip_whose_plain_key_holds_other_bytes_goes_to_its_hashed_key(store: Store) {
    let big = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"".into(),
        ..knobs()
    };
    for (size, k) in [(SIZE, knobs()), (12 * 1024 * 1024, big)] {
        let f = Fleet::start_on(store, 0, 1).await;
        let bad = guard_deletes(&f);
        let (theirs, ours) = (content(9, 1_000), content(10, size));
        f.s3.client()
            .put_object()
            .bucket("fleet-video")
            .key(key(IMEI, NAME))
            .body(theirs.clone().into())
            .send()
            .await
            .unwrap();
        let path = write(&f.camera_dir, &ours);
        assert_eq!(f.run_once(&k).await, done(IMEI), "{size}");
        assert_eq!(
            f.s3.object_bytes(&key(IMEI, NAME)),
            Some(theirs),
            "untouched"
        );
        assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &ours)), Some(ours));
        assert_eq!(f.bucket_keys().len(), 2, "{:?}", f.bucket_keys());
        assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
        let clip = f.db().clips().remove(0);
        assert_eq!((clip.attempts, clip.hashed_key), (0, true), "{size}");
        assert_eq!(f.s3.list_incomplete_multipart().await, Vec::<String>::new());
        assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
    }
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_object_with_the_clips_size_and_metadata_but_other_bytes_is_not_taken_for_ours
);
/// The plain key holds other bytes of the clip's size under the very metadata the agent
/// writes for it, its `sha256` included (an older version's upload that a corrupt part
/// spoiled, which that version could not tell). It is not "already there": found different
/// exactly, it is a conflict, the clip lands under its hashed key at once, no attempt
/// counted, and the object there is untouched (before, every attempt took it for the clip,
/// failed its verification, and read it back again, for ever). A small clip and one that
/// goes multipart.
async fn an_object_with_the_clips_size_and_metadata_but_other_bytes_is_not_taken_for_ours(
    store: Store,
) {
    let big = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"".into(),
        ..knobs()
    };
    for (size, k) in [(SIZE, knobs()), (12 * 1024 * 1024, big)] {
        let f = Fleet::start_on(store, 0, 1).await;
        let bad = guard_deletes(&f);
        let (theirs, ours) = (content(13, size), content(14, size));
        f.s3.client()
            .put_object()
            .bucket("fleet-video")
            .key(key(IMEI, NAME))
            .metadata("sha256", sha256_hex(&ours))
            .body(theirs.clone().into())
            .send()
            .await
            .unwrap();
        let path = write(&f.camera_dir, &ours);
        assert_eq!(f.run_once(&k).await, done(IMEI), "{size}");
        assert_eq!(
            f.s3.object_bytes(&key(IMEI, NAME)),
            Some(theirs),
            "untouched"
        );
        assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &ours)), Some(ours));
        assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
        let clip = f.db().clips().remove(0);
        assert_eq!((clip.attempts, clip.hashed_key), (0, true), "{size}");
        assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
    }
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_overlapped_object_of_the_same_size_at_the_plain_key_is_not_taken_for_ours
);
/// The plain key holds an object another gateway uploaded while it downloaded (metadata
/// `overlapped: true`, no `sha256`) with other bytes of the same size (a clock reset and
/// fixed-size segments). Size alone must not make it ours: its bytes are read back, found
/// different, and the clip lands under its hashed key at once, no attempt counted.
async fn an_overlapped_object_of_the_same_size_at_the_plain_key_is_not_taken_for_ours(
    store: Store,
) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let (theirs, ours) = (content(11, SIZE), content(12, SIZE));
    f.s3.client()
        .put_object()
        .bucket("fleet-video")
        .key(key(IMEI, NAME))
        .metadata("overlapped", "true")
        .body(theirs.clone().into())
        .send()
        .await
        .unwrap();
    let path = write(&f.camera_dir, &ours);
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(
        f.s3.object_bytes(&key(IMEI, NAME)),
        Some(theirs),
        "untouched"
    );
    assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &ours)), Some(ours));
    assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
    let attempts = f.db().clips().remove(0).attempts;
    assert_eq!(attempts, 0);
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    bytes_a_spoofed_camera_served_never_get_the_real_clip_deleted
);
/// An access point with the truck's SSID answers with its IMEI and lists a clip the agent has
/// not taken yet, with its real path, size and `date`, but serves other bytes; the agent
/// uploads and verifies those. At the real truck's next visit the listing matches: the
/// delete challenge reads the real bytes, deletes nothing, and offloads them as a new
/// generation, which the next pass verifies and only then deletes.
async fn bytes_a_spoofed_camera_served_never_get_the_real_clip_deleted(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let real = content(21, SIZE);
    let path = write(&f.camera_dir, &real);
    let spoofed: Vec<u8> = real.iter().map(|b| !b).collect();
    f.sim.set_faults(|x| x.other_bytes = vec![NAME.into()]);
    assert_eq!(f.run_once(&keep()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(spoofed.clone()));
    // The real truck: the same listing, its own bytes.
    f.sim.set_faults(|x| x.other_bytes.clear());
    f.run_once(&knobs()).await;
    assert!(f.sim.deletes().is_empty(), "deleted on the spoof's bytes");
    assert!(
        f.sim.spot_bytes_served() > 0,
        "the challenge read the camera"
    );
    assert_eq!(
        generations(&f, IMEI, &path),
        [(0, "deleted".into()), (1, "queued".into())]
    );
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.s3.object_bytes(&key(IMEI, NAME)), Some(spoofed));
    assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &real)), Some(real));
    assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_camera_that_ignores_range_keeps_its_clips_and_status_says_why
);
/// The delete challenge needs `Range`: a camera that ignores it deletes nothing, and says so;
/// with the challenge turned off, the listing's word is enough again.
async fn a_camera_that_ignores_range_keeps_its_clips_and_status_says_why(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    write(&f.camera_dir, &content(22, SIZE));
    f.sim.set_faults(|x| x.no_range = true);
    f.run_once(&knobs()).await;
    assert!(f.sim.deletes().is_empty());
    assert_eq!(f.db().clips()[0].state, "verified");
    let agent = f.agent(&knobs());
    let st = qucam_offload::commands::collect_status(agent.store())
        .await
        .unwrap();
    let text = qucam_offload::commands::format_status(&st);
    assert!(
        text.contains("DELETES HELD") && text.contains("does not honour Range"),
        "{text}"
    );
    drop(agent);
    let off = Knobs {
        retention: "challenge_blocks = 0".into(),
        ..knobs()
    };
    assert_eq!(f.run_once(&off).await, done(IMEI));
    assert_eq!(f.sim.deletes().len(), 1);
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_clip_verified_before_block_digests_is_kept_on_the_camera
);
/// A clip verified by a version before the delete challenge has no block digests: its bytes
/// on the camera cannot be checked, so it is kept there, and `status` says why.
async fn a_clip_verified_before_block_digests_is_kept_on_the_camera(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    write(&f.camera_dir, &content(23, SIZE));
    assert_eq!(f.run_once(&keep()).await, done(IMEI));
    assert_eq!(f.db().forget_block_digests(), 1);
    f.run_once(&knobs()).await;
    assert!(f.sim.deletes().is_empty(), "deleted without its digests");
    assert_eq!(f.sim.spot_bytes_served(), 0);
    let notice = f.db().notice(&format!("delete-challenge:{IMEI}"));
    assert!(
        notice
            .as_deref()
            .is_some_and(|n| n.contains("before the delete challenge")),
        "{notice:?}"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_clip_whose_due_challenge_cannot_be_made_is_offloaded_again_never_lost
);
/// The camera records a name again with the same size and `date` after the agent deleted it
/// (a clock reset), and ignores `Range`: the challenge that would tell the bytes apart cannot
/// be made, so the camera's bytes are offloaded again as a new generation (a second copy,
/// never a clip lost), and nothing is deleted without the challenge.
async fn a_clip_whose_due_challenge_cannot_be_made_is_offloaded_again_never_lost(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let path = write(&f.camera_dir, &content(24, SIZE));
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    assert_eq!(f.sim.deletes(), std::slice::from_ref(&path));
    let new = content(25, SIZE);
    write(&f.camera_dir, &new);
    f.sim.set_faults(|x| x.no_range = true);
    f.run_once(&knobs()).await;
    assert_eq!(f.s3.object_bytes(&hashed_key(IMEI, &new)), Some(new));
    assert_eq!(
        f.sim.deletes(),
        std::slice::from_ref(&path),
        "no delete without the challenge"
    );
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_clip_whose_blocks_cannot_be_read_holds_up_nothing_else
);
/// A clip whose due challenge cannot read its blocks (the connection drops) is neither
/// deleted nor taken for a new clip; it waits for the next pass, and the camera's other
/// clips are offloaded meanwhile.
async fn a_clip_whose_blocks_cannot_be_read_holds_up_nothing_else(store: Store) {
    let f = Fleet::start_on(store, 0, 1).await;
    let bad = guard_deletes(&f);
    let path = write(&f.camera_dir, &content(26, SIZE));
    // A card that acknowledges the delete and keeps the file: its challenge is due next pass.
    f.sim.set_faults(|x| x.ignore_deletes = true);
    assert_eq!(f.run_once(&knobs()).await, done(IMEI));
    let other = "20210101_000112_01_1.mp4";
    let other_bytes = content(27, SIZE);
    sim::write_clip(&f.camera_dir, other, &other_bytes).expect("write clip");
    f.sim.set_faults(|x| {
        x.ignore_deletes = false;
        // The next request for clip bytes (the due challenge's) breaks off.
        x.drop_after_bytes = Some(100);
        x.drop_downloads = 1;
    });
    f.run_once(&knobs()).await;
    assert_eq!(
        f.s3.object_bytes(&key(IMEI, other)),
        Some(other_bytes),
        "the other clip was offloaded"
    );
    assert_eq!(
        generations(&f, IMEI, &path),
        [(0, "verified".into())],
        "neither deleted nor a new generation"
    );
    assert!(
        !f.sim.deletes().contains(&path),
        "deleted without its challenge"
    );
    assert!(bad.lock().unwrap().is_empty(), "{:?}", bad.lock().unwrap());
}
