//! Local faults: a full disk under the spool, the spool cap, a corrupt state database.
//! Nothing is deleted from the camera, the database stays consistent, and work resumes
//! when the fault clears.
//!
//! The full-disk tests mount a small tmpfs under the spool, which needs root: they are
//! `#[ignore]`d so that a plain `cargo test` reports them as ignored (not passed), and CI,
//! which runs as root, runs them with `cargo test --test local_faults -- --ignored`. Run
//! that way without the right to mount, they fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::db::ClipRow;
use common::fleet::{Fleet, IMEI, Knobs};
use qucam_offload::agent::PassOutcome;

/// Why the full-disk tests are ignored by default.
const NEEDS_ROOT: &str = "needs root to mount a tmpfs: run with --ignored as root (CI does)";

/// A small tmpfs mounted for the life of the value (needs root, as in CI).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`, or fails the test saying why it could not.
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", at.display()));
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e} ({NEEDS_ROOT})"));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} ({NEEDS_ROOT}): mount {}: {}",
            at.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn integrity_ok(f: &Fleet) {
    let c = f.db();
    let r = c.try_integrity_check().unwrap();
    assert_eq!(r, "ok");
    // Every clip the database calls downloaded has its whole file in the spool.
    let rows = c.clips().into_iter().filter(|r| r.state == "downloaded");
    for ClipRow {
        name,
        size,
        id,
        date_ms: date,
        ..
    } in rows
    {
        // Named by the listing its bytes are for (`agent::work::spool_name`).
        let date = date.map_or_else(|| "none".to_string(), |d| d.to_string());
        let p = f
            .state_dir
            .join("spool")
            .join(IMEI)
            .join(format!("{name}~{id}-{size}-{date}"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            len as i64, size,
            "{name}: downloaded but the spool file is not whole"
        );
    }
}

fn paused_notice(f: &Fleet) -> Option<String> {
    f.db().notice(&format!("downloads-paused:{IMEI}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs: run with --ignored as root (CI does)"]
async fn a_full_disk_pauses_downloads_and_work_resumes_when_space_returns() {
    let f = Fleet::start(24, 1024 * 1024).await;
    let _fs = Tmpfs::mount(&f.state_dir.join("spool"), "2600k");
    let events = f.event_clips();
    assert!(events.len() >= 4, "need more event clips than fit the disk");
    // S3 is down, so the spool fills and nothing frees it.
    f.s3.set_refusing(true);
    let k = Knobs {
        spool: "min_free_bytes = 0".into(),
        ..Knobs::default()
    };
    let out = f.run_once(&k).await;
    match &out {
        PassOutcome::Failed { error, .. } => assert!(error.contains("disk full"), "{error}"),
        other => panic!("expected the pass to stop on a full disk: {other:?}"),
    }
    let notice = paused_notice(&f).expect("status shows why downloads stopped");
    assert!(notice.contains("disk full"), "{notice}");
    assert!(
        f.sim.deletes().is_empty(),
        "nothing may be deleted from the camera"
    );
    integrity_ok(&f);
    // No clip was marked failed because of the disk: they simply wait.
    let failed_for_disk = f
        .db()
        .clips()
        .iter()
        .filter(|c| c.reason_like("space"))
        .count();
    assert_eq!(failed_for_disk, 0);

    // S3 comes back: uploads free the spool, each pass takes what fits.
    f.s3.set_refusing(false);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    f.run_until_done(&k, 20).await;
    for n in &events {
        f.assert_in_bucket(n);
    }
    assert!(
        paused_notice(&f).is_none(),
        "the notice clears once downloads run"
    );
    integrity_ok(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs: run with --ignored as root (CI does)"]
async fn the_free_space_floor_pauses_before_the_disk_is_full() {
    let f = Fleet::start(24, 1024 * 1024).await;
    let _fs = Tmpfs::mount(&f.state_dir.join("spool"), "4m");
    f.s3.set_refusing(true);
    let k = Knobs {
        spool: "min_free_bytes = \"2MiB\"".into(),
        ..Knobs::default()
    };
    let out = f.run_once(&k).await;
    assert!(
        matches!(out, PassOutcome::Done { remaining, .. } if remaining > 0),
        "{out:?}"
    );
    let notice = paused_notice(&f).expect("paused");
    assert!(notice.contains("spool is full"), "{notice}");
    // It stopped at the floor: no write ever hit ENOSPC.
    let io_errors = f
        .db()
        .clips()
        .iter()
        .filter(|c| c.reason_like("No space"))
        .count();
    assert_eq!(io_errors, 0);
    assert!(f.sim.deletes().is_empty());
    integrity_ok(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root to mount a tmpfs: run with --ignored as root (CI does)"]
async fn a_download_that_would_cross_the_free_space_floor_does_not_start() {
    // 4 MiB of disk, a 2 MiB floor, clips of 3 MiB: there is room above the floor now, but
    // not for a clip.
    let f = Fleet::start(6, 3 * 1024 * 1024).await;
    // A small clip fits: it is downloaded, the large ones do not hold it up.
    let small = "20210101_000012_01_1.mp4";
    qucam_sim::write_clip(&f.camera_dir, small, &vec![7u8; 100_000]).expect("write clip");
    let spool = f.state_dir.join("spool");
    let _fs = Tmpfs::mount(&spool, "4m");
    f.s3.set_refusing(true);
    let k = Knobs {
        spool: "min_free_bytes = \"2MiB\"".into(),
        ..Knobs::default()
    };
    let out = f.run_once(&k).await;
    assert!(
        matches!(out, PassOutcome::Done { remaining, .. } if remaining > 0),
        "{out:?}"
    );
    let notice = paused_notice(&f).expect("paused");
    assert!(notice.contains("spool.min_free_bytes"), "{notice}");
    let downloaded: Vec<String> = f
        .db()
        .clips()
        .into_iter()
        .filter(|c| c.sha256.is_some())
        .map(|c| c.name)
        .collect();
    assert_eq!(downloaded, [small], "only the clip that fits");
    let free = fs4::available_space(&spool).expect("free space of the tmpfs");
    assert!(
        free >= 2 * 1024 * 1024,
        "a download went under the floor: {free} bytes free"
    );
    assert!(f.sim.deletes().is_empty());
    integrity_ok(&f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_cap_pauses_downloads_without_deleting_anything() {
    let f = Fleet::start(20, 200_000).await;
    f.s3.set_refusing(true);
    let k = Knobs {
        spool: "max_bytes = 300000".into(),
        ..Knobs::default()
    };
    let out = f.run_once(&k).await;
    assert!(matches!(out, PassOutcome::Done { remaining, .. } if remaining > 0));
    let downloaded = f.db().clips().iter().filter(|c| c.sha256.is_some()).count();
    assert!(
        (1..=2).contains(&downloaded),
        "the cap stops downloads early (got {downloaded})"
    );
    assert!(paused_notice(&f).is_some());
    assert!(f.sim.deletes().is_empty());
    f.s3.set_refusing(false);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    f.run_until_done(&k, 20).await;
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_database_is_a_clear_error_not_a_reset() {
    let f = Fleet::start(2, 1_000).await;
    std::fs::create_dir_all(&f.state_dir).unwrap();
    let db = f.state_dir.join("state.db");
    let garbage = vec![0x5au8; 8192];
    std::fs::write(&db, &garbage).unwrap();
    let cfg = f.config(&Knobs::default());
    let settings = qucam_offload::upload::s3_settings(cfg.s3.as_ref().unwrap());
    let err = qucam_offload::agent::Agent::new(
        cfg,
        qucam_offload::upload::Destination::S3(qucam_offload::upload::S3Destination::from_client(
            f.s3.client(),
            &settings,
        )),
        tokio_util::sync::CancellationToken::new(),
    )
    .err()
    .expect("a corrupt database must not open");
    let msg = format!("{err:#}");
    assert!(msg.contains("state.db"), "{msg}");
    assert!(msg.contains("move the file aside"), "{msg}");
    // The file was left as it was: no silent reset.
    assert_eq!(std::fs::read(&db).unwrap(), garbage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_state_database_is_a_clear_error_and_work_resumes_after() {
    let f = Fleet::start(6, 10_000).await;
    // A first pass creates the database.
    f.run_until_done(&Knobs::default(), 2).await;
    // Someone holds a write lock on it (an sqlite3 shell, a backup tool).
    let holder = f.db();
    holder.begin_exclusive();
    match f.run_once(&Knobs::default()).await {
        PassOutcome::Failed { error, .. } => {
            assert!(error.contains("state.db"), "{error}");
            assert!(error.contains("locked by another process"), "{error}");
        }
        other => panic!("a locked database must stop the pass: {other:?}"),
    }
    holder.rollback();
    drop(holder);
    assert_eq!(
        f.run_once(&Knobs::default()).await,
        PassOutcome::Done {
            imei: IMEI.into(),
            remaining: 0
        }
    );
    integrity_ok(&f);
}
