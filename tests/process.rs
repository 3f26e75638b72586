//! The real `qucam-offload` binary as a child process, against a simulated camera and an S3
//! server that live in the test's own runtime on 127.0.0.1: kill -9 at chosen and at random
//! moments, SIGTERM, exit codes, `status`, `demo`, and the state dir lock.
//!
//! Every wait polls with a deadline; every child is killed when its handle drops.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::db::Db;
use common::fleet::{Fleet, IMEI, Knobs, Out};
use common::s3::Store;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");
/// Longest any single child run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A `qucam-offload` child: stdout and stderr go to files under the fleet's `logs/`.
struct Proc {
    child: tokio::process::Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// The child's environment: nothing inherited (no real AWS profile, config or HOME), the
/// test credentials, and HOME/XDG dirs inside the fleet's temp dir.
fn command(f: &Fleet, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.env_clear()
        .envs(f.child_env())
        .current_dir(f.child_home())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

fn spawn_with(f: &Fleet, mut c: tokio::process::Command, label: &str) -> Proc {
    let logs = f.dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let stdout = logs.join(format!("{n}-{label}.stdout"));
    let stderr = logs.join(format!("{n}-{label}.stderr"));
    c.stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"));
    let child = c.spawn().expect("spawn qucam-offload");
    Proc {
        child,
        label: format!("{n}-{label}"),
        stdout,
        stderr,
    }
}

/// Starts `qucam-offload -c CONFIG ARGS…`.
fn spawn(f: &Fleet, cfg: &Path, args: &[&str], label: &str) -> Proc {
    let mut all = vec!["-c", cfg.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    spawn_with(f, command(f, &all), label)
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id().expect("child still running")
    }

    fn output(&self, code: Option<i32>) -> Out {
        Out {
            code,
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        }
    }

    /// Waits for the exit, at most `timeout` (then kills it and fails the test).
    async fn wait(mut self, timeout: Duration) -> Out {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for the child");
                self.output(status.code())
            }
            Err(_) => {
                let _ = self.child.kill().await;
                panic!(
                    "{} still running after {timeout:?}\n{}",
                    self.label,
                    self.output(None).describe()
                );
            }
        }
    }

    /// `kill -9` (SIGKILL), then reaps it. `false` when it had already exited.
    async fn kill9(&mut self) -> bool {
        let running = self.child.try_wait().expect("try_wait").is_none();
        self.child.kill().await.expect("SIGKILL the child");
        running
    }

    /// Sends a signal with the system `kill` command (`libc` is not a dependency).
    fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} failed");
    }
}

/// Runs `qucam-offload -c CONFIG ARGS…` to its end.
async fn run(f: &Fleet, cfg: &Path, args: &[&str]) -> Out {
    spawn(f, cfg, args, &args.join("_").replace('-', ""))
        .wait(RUN_TIMEOUT)
        .await
}

/// Runs `run --once` until it exits 0 (at most `max` runs); between runs that leave work
/// (exit 1), waits until the failed clips' `retry_after` has passed. Returns every run.
async fn run_once_until_ok(f: &Fleet, cfg: &Path, max: usize) -> Vec<Out> {
    let mut runs = Vec::new();
    for i in 1..=max {
        let out = run(f, cfg, &["run", "--once"]).await;
        match out.code {
            Some(0) => {
                runs.push(out);
                return runs;
            }
            Some(1) => {
                let due = max_retry_after(f);
                poll("failed clips become due", Duration::from_secs(30), || {
                    now_secs() > due
                })
                .await;
                runs.push(out);
            }
            _ => panic!("run --once #{i} failed:\n{}", out.describe()),
        }
    }
    panic!(
        "not done after {max} runs; last:\n{}",
        runs.last().map(Out::describe).unwrap_or_default()
    );
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn max_retry_after(f: &Fleet) -> i64 {
    f.db()
        .try_clips()
        .map(|clips| {
            clips
                .iter()
                .filter(|c| c.state == "failed")
                .filter_map(|c| c.retry_after)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Polls `cond` every 10 ms until it holds; fails the test after `timeout`.
async fn poll(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `.part` files in the camera's spool dir, with their sizes.
fn part_files(f: &Fleet) -> Vec<(PathBuf, u64)> {
    let dir = f.state_dir.join("spool").join(IMEI);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .filter_map(|p| {
            let len = std::fs::metadata(&p).ok()?.len();
            Some((p, len))
        })
        .collect()
}

/// Multipart parts journaled in the state database: (count, bytes). A database being
/// written by the child may be momentarily unreadable: that reads as nothing yet.
fn journaled_parts(f: &Fleet) -> (i64, i64) {
    if !f.db_path().exists() {
        return (0, 0);
    }
    f.db()
        .try_parts()
        .map(|parts| (parts.len() as i64, parts.iter().map(|p| p.size).sum()))
        .unwrap_or((0, 0))
}

/// Every event clip is in the bucket byte-identical, and the bucket holds nothing else.
fn assert_exactly_the_event_clips(f: &Fleet) {
    let events = f.event_clips();
    for name in &events {
        f.assert_in_bucket(name);
    }
    let want: BTreeSet<String> = events.iter().map(|n| f.key(n)).collect();
    let got: BTreeSet<String> = f.bucket_keys().into_iter().collect();
    assert_eq!(got, want, "one object per event clip, nothing else");
}

fn total_event_bytes(f: &Fleet) -> u64 {
    f.event_clips()
        .iter()
        .map(|n| {
            std::fs::metadata(common::fleet::clip_path(&f.camera_dir, n)).map_or(0, |m| m.len())
        })
        .sum()
}

/// Records every camera delete whose object is not in the bucket at that moment.
fn watch_deletes(f: &Fleet) -> Arc<Mutex<Vec<String>>> {
    let objects = f.s3.objects();
    let violations = Arc::new(Mutex::new(Vec::new()));
    let v = violations.clone();
    f.sim.set_on_delete(move |path| {
        let name = path.rsplit('/').next().unwrap_or_default();
        let ok = name.len() >= 8
            && objects.exists(&format!(
                "dashcam/{IMEI}/{}-{}-{}/{name}",
                &name[0..4],
                &name[4..6],
                &name[6..8]
            ));
        if !ok {
            v.lock().unwrap().push(path.to_string());
        }
    });
    violations
}

// ---------------------------------------------------------------------------------------------
// kill -9

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_mid_download_resumes_with_range
);
async fn kill_9_mid_download_resumes_with_range(store: Store) {
    let f = Fleet::start_on(store, 8, 400_000).await;
    let events = f.event_clips();
    assert!(events.len() >= 2, "seed 42 gives event clips");
    let total = total_event_bytes(&f);
    let cfg = f.write_config(&Knobs::default());
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(200_000));

    let mut p = spawn(&f, &cfg, &["run", "--once"], "slow");
    poll(
        "a .part file with bytes in the spool",
        Duration::from_secs(20),
        || part_files(&f).iter().any(|(_, len)| *len > 0),
    )
    .await;
    assert!(p.kill9().await, "the agent was still downloading");
    let parts = part_files(&f);
    assert_eq!(parts.len(), 1, "one download at a time: {parts:?}");
    let (part, have) = parts[0].clone();
    assert!(have > 0 && have < 400_000, "{part:?}: {have} bytes");
    assert!(f.sim.deletes().is_empty());

    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    run_once_until_ok(&f, &cfg, 3).await;

    assert_exactly_the_event_clips(&f);
    assert!(!part.exists(), "the .part was finished and renamed");
    let want = format!("bytes={have}-");
    let ranged: Vec<_> = f
        .sim
        .requests()
        .into_iter()
        .filter_map(|r| r.range)
        .collect();
    assert!(
        ranged.contains(&want),
        "the restarted download asked for {want:?}; ranges sent: {ranged:?}"
    );
    let served = f.sim.bytes_served();
    println!(
        "kill -9 mid-download: {} event clips, {total} bytes, sim served {served} (+{} over)",
        events.len(),
        served as i64 - total as i64
    );
    assert!(
        served < total + 400_000,
        "re-sent too much: served {served} for {total}"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_mid_multipart_upload_resumes_the_upload
);
async fn kill_9_mid_multipart_upload_resumes_the_upload(store: Store) {
    let clip = 24 * MIB;
    let f = Fleet::start_on(store, 5, clip).await;
    let events = f.event_clips();
    assert!(events.len() >= 2, "seed 42 gives event clips");
    let total = total_event_bytes(&f);
    let k = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"\npart_concurrency = 1".into(),
        // One upload at a time: the kill lands between parts of one upload, never between
        // another upload's CreateMultipartUpload and its journal entry.
        sync: "upload_concurrency = 1".into(),
        ..Knobs::default()
    };
    let cfg = f.write_config(&k);
    f.s3.set_delay(Some(Duration::from_millis(150)));

    let mut p = spawn(&f, &cfg, &["run", "--once"], "slow-s3");
    poll(
        "a multipart part journaled",
        Duration::from_secs(30),
        || journaled_parts(&f).0 >= 1,
    )
    .await;
    assert!(p.kill9().await, "the agent was still uploading");
    // Body bytes the dead agent left in socket buffers still reach the server after the
    // delay: count them as sent before the kill. Settled = no connection or request left on
    // the server (a quiet spell alone can be a server task starved on a loaded machine), and
    // unchanged over twice the delay.
    let mut at_kill = f.s3.bytes_received();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = f.s3.bytes_received();
        if now == at_kill && f.s3.busy() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the server kept receiving");
        at_kill = now;
    }
    let (n_parts, part_bytes) = journaled_parts(&f);
    assert!(n_parts >= 1 && (n_parts as u64) < 5 * events.len() as u64);
    let in_flight: Vec<String> = f
        .db()
        .clips()
        .into_iter()
        .filter(|c| c.upload_id.is_some())
        .map(|c| c.name)
        .collect();
    assert_eq!(in_flight.len(), 1, "one journaled upload: {in_flight:?}");
    assert!(f.sim.deletes().is_empty());

    f.s3.set_delay(None);
    let runs = run_once_until_ok(&f, &cfg, 3).await;

    assert_exactly_the_event_clips(&f);
    let resumed = format!("reused={n_parts}");
    assert!(
        runs[0]
            .stderr
            .lines()
            .any(|l| l.contains("resuming multipart upload") && l.contains(&resumed)),
        "the restart resumed the journaled upload with its {n_parts} part(s):\n{}",
        runs[0].describe()
    );
    let incomplete = f.s3.list_incomplete_multipart().await;
    assert!(
        incomplete.is_empty(),
        "incomplete uploads left: {incomplete:?}"
    );
    assert_eq!(journaled_parts(&f).0, 0, "journal cleared after completion");
    let received = f.s3.bytes_received();
    let rerun = received - at_kill;
    println!(
        "kill -9 mid-multipart: {} clips, {total} bytes; {n_parts} parts ({part_bytes} bytes) \
         journaled at the kill; S3 received {at_kill} before the kill, {rerun} after, \
         {received} in all (+{} over = {:.1}% of one clip)",
        events.len(),
        received as i64 - total as i64,
        (received as f64 - total as f64) * 100.0 / clip as f64
    );
    assert!(
        received < total + clip,
        "re-sent too much: {received} for {total}"
    );
    // Stronger: one upload with one part in flight, so at most that part was sent twice.
    assert!(
        received <= total + 5 * MIB + 64 * 1024,
        "more than the unfinished part was sent again: {received} for {total}"
    );
    // The journaled parts were not sent again: the restart sent at most the rest, plus
    // small request bodies (CompleteMultipartUpload XML).
    assert!(
        rerun <= total - part_bytes as u64 + 64 * 1024,
        "the restart re-sent journaled parts: {rerun} bytes after the kill, \
         {} not yet journaled",
        total - part_bytes as u64
    );
}

/// A clip `downloading` with a part journaled (uploaded while it downloads): its upload id.
fn overlapping_upload(f: &Fleet) -> Option<String> {
    if !f.db_path().exists() {
        return None;
    }
    f.db()
        .try_clips()
        .ok()?
        .into_iter()
        .filter(|c| c.state == "downloading" && c.parts > 0)
        .find_map(|c| c.upload_id)
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_mid_overlap_resumes_the_download_and_the_upload
);
async fn kill_9_mid_overlap_resumes_the_download_and_the_upload(store: Store) {
    let f = Fleet::start_on(store, 3, 16 * MIB).await;
    let k = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"\npart_concurrency = 1".into(),
        ..Knobs::default()
    };
    let cfg = f.write_config(&k);
    let violations = watch_deletes(&f);
    // A slow camera: the clip downloads for seconds while its parts go up.
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(2_000_000));
    let mut p = spawn(&f, &cfg, &["run", "--once"], "overlap");
    poll(
        "a part uploaded while its clip downloads",
        Duration::from_secs(60),
        || overlapping_upload(&f).is_some(),
    )
    .await;
    assert!(p.kill9().await, "the agent was still working");
    let upload_id = overlapping_upload(&f).expect("still journaled after the kill");
    assert!(
        !part_files(&f).is_empty(),
        "the partial file stays for its resume"
    );
    assert!(f.sim.deletes().is_empty());

    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    let runs = run_once_until_ok(&f, &cfg, 3).await;
    assert_exactly_the_event_clips(&f);
    assert!(
        runs[0]
            .stderr
            .lines()
            .any(|l| l.contains("resuming multipart upload") && l.contains(&upload_id)),
        "the restart resumed the upload begun while downloading:\n{}",
        runs[0].describe()
    );
    assert!(f.s3.list_incomplete_multipart().await.is_empty());
    assert_eq!(journaled_parts(&f).0, 0, "journal cleared after completion");
    assert!(
        violations.lock().unwrap().is_empty(),
        "a clip was deleted from the camera before its object was in the bucket"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_between_the_camera_delete_and_its_record
);
async fn kill_9_between_the_camera_delete_and_its_record(store: Store) {
    // The camera deletes the clips but the agent dies before it records the deletes: the
    // sim's delete hook SIGKILLs the agent, then the sim removes the files and answers a
    // dead socket. The next start must see that the verified clips left the camera and
    // finish, not report them as work forever.
    let f = Fleet::start_on(store, 8, 20_000).await;
    let events = f.event_clips();
    let cfg = f.write_config(&Knobs::default());
    let pid = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let kills = Arc::new(AtomicUsize::new(0));
    {
        let (pid, kills) = (pid.clone(), kills.clone());
        f.sim.set_on_delete(move |_| {
            let p = pid.swap(0, Ordering::SeqCst);
            if p != 0 {
                // Counted before the signal: the test sees the child die as soon as the
                // signal lands, possibly before `kill` itself has been reaped here.
                kills.fetch_add(1, Ordering::SeqCst);
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .status();
            }
        });
    }
    let p = spawn(&f, &cfg, &["run", "--once"], "killed-at-delete");
    pid.store(p.pid(), Ordering::SeqCst);
    let out = p.wait(RUN_TIMEOUT).await;
    assert_eq!(kills.load(Ordering::SeqCst), 1, "{}", out.describe());
    assert_eq!(out.code, None, "killed by SIGKILL: {}", out.describe());
    // The hook runs before the sim removes the batch's files, on the sim's own thread, which
    // goes on after the agent died: the exit can be seen before the files are gone.
    poll(
        "the camera deleted every event clip",
        Duration::from_secs(30),
        || events.iter().all(|n| !f.clip_on_camera(n)),
    )
    .await;
    for n in &events {
        assert_eq!(
            f.states()[n],
            "verified",
            "{n}: the delete was not recorded"
        );
    }

    let runs = run_once_until_ok(&f, &cfg, 2).await;
    assert_eq!(runs.len(), 1, "the first run after the kill finishes");
    assert_exactly_the_event_clips(&f);
    let states = f.states();
    for n in &events {
        assert_eq!(
            states[n], "deleted",
            "{n}: left the camera after it was verified"
        );
    }
    let out = run(&f, &cfg, &["status", "--json"]).await;
    let v: Value = serde_json::from_str(&out.stdout).expect("status json");
    assert_eq!(v[0]["clips"]["deleted"], events.len() as u64, "{v:#}");
    assert_eq!(v[0]["lost"], 0, "{v:#}");
}

/// A tiny deterministic PRNG (splitmix64) for the kill schedule.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const MIB: u64 = 1024 * 1024;

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_at_random_moments_loses_and_duplicates_nothing
);
async fn kill_9_at_random_moments_loses_and_duplicates_nothing(store: Store) {
    // Clips of 7 MiB go multipart in two parts.
    let (multipart, single) = random_kills(
        store,
        7 * MIB,
        "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"",
        0x05EE_D0FC_1195,
    )
    .await;
    assert!(
        multipart > 0 && single == 0,
        "{multipart} multipart, {single} PUT"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_at_random_moments_with_the_default_auto_threshold
);
async fn kill_9_at_random_moments_with_the_default_auto_threshold(store: Store) {
    // Clips of 17 MiB, default [s3] settings: each fresh agent sends its first upload(s)
    // multipart (no rate known), later ones in one PUT once loopback has shown its rate.
    // Which kind each upload is depends on timing (two uploads start at once in a fresh
    // agent, both before any rate is known), so the mix is reported, not asserted; the
    // choice itself is tested deterministically in tests/upload_s3.rs. Here: 3 multipart
    // and 2 PUTs on the default seed.
    let (multipart, single) = random_kills(store, 17 * MIB, "", 0xA070_0001).await;
    assert!(multipart + single > 0, "nothing was uploaded");
}

/// Runs `run --once` 8 times, each killed -9 after a random delay (`QUCAM_KILL_SEED`
/// overrides `default_seed`), then until it finishes; checks every invariant. Returns how
/// many multipart uploads were created and single PUTs sent, from the agents' debug logs.
async fn random_kills(
    store: Store,
    clip_size: u64,
    s3_knobs: &str,
    default_seed: u64,
) -> (usize, usize) {
    let seed: u64 = std::env::var("QUCAM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_seed);
    let mut rng = SplitMix(seed);
    let schedule: Vec<u64> = (0..8).map(|_| 5 + rng.below(1200)).collect();
    let ctx = format!("seed {seed} (QUCAM_KILL_SEED), kill after ms {schedule:?}");
    println!("random kills: {ctx}");

    // Downloads at 20 MB/s and a small S3 delay spread a pass over a few seconds so the
    // kills land in every stage.
    let f = Fleet::start_on(store, 10, clip_size).await;
    let events = f.event_clips();
    assert!(events.len() >= 4, "seed 42 gives event clips");
    let k = Knobs {
        s3: s3_knobs.into(),
        ..Knobs::default()
    };
    let cfg = f.write_config(&k);
    let violations = watch_deletes(&f);
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(20_000_000));
    f.s3.set_delay(Some(Duration::from_millis(20)));

    let mut killed = Vec::new();
    for (i, ms) in schedule.iter().enumerate() {
        let mut p = spawn(&f, &cfg, &["run", "--once"], &format!("random-{i}"));
        tokio::time::sleep(Duration::from_millis(*ms)).await;
        let was_running = p.kill9().await;
        killed.push(was_running);
        let st = event_states(&f);
        let (parts, _) = journaled_parts(&f);
        println!(
            "  kill #{i} after {ms} ms (running: {was_running}): {st:?}, {parts} parts journaled, \
             {} deletes",
            f.sim.deletes().len()
        );
    }
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    f.s3.set_delay(None);
    let runs = run_once_until_ok(&f, &cfg, 4).await.len();
    println!("  then {runs} run(s) to finish; kills that hit a running agent: {killed:?}");

    let events_set: BTreeSet<String> = events.iter().cloned().collect();
    for name in &events {
        let key = f.key(name);
        let got =
            f.s3.object_bytes(&key)
                .unwrap_or_else(|| panic!("{ctx}: {key} missing"));
        assert_eq!(
            common::fleet::sha256_hex(&got),
            f.originals[name],
            "{ctx}: {key} differs from the camera's clip"
        );
    }
    let want: BTreeSet<String> = events.iter().map(|n| f.key(n)).collect();
    let got: BTreeSet<String> = f.bucket_keys().into_iter().collect();
    assert_eq!(got, want, "{ctx}: exactly one object per event clip");
    assert!(
        violations.lock().unwrap().is_empty(),
        "{ctx}: deleted from the camera before the object was in the bucket: {:?}",
        violations.lock().unwrap()
    );
    let deleted: BTreeSet<String> = f
        .sim
        .deletes()
        .iter()
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        deleted, events_set,
        "{ctx}: every event clip deleted, nothing else"
    );
    let integrity = f.db().try_integrity_check().unwrap();
    assert_eq!(integrity, "ok", "{ctx}");
    let states = f.states();
    for name in &events {
        assert_eq!(states[name], "deleted", "{ctx}: {name}");
    }
    // A kill while CreateMultipartUpload is in flight can leave an upload the agent never
    // learned the id of; the id is journaled before any part is sent, so such an orphan is
    // always empty (see kill_9_during_create_multipart_leaves_at_most_an_empty_upload).
    let orphans = f.s3.list_incomplete_multipart().await;
    println!("  incomplete multipart uploads left in the bucket: {orphans:?}");
    for id in &orphans {
        assert_eq!(
            f.s3.stored_parts(id),
            0,
            "{ctx}: orphaned upload {id} holds parts"
        );
    }
    let (mut multipart, mut single) = (0, 0);
    for entry in std::fs::read_dir(f.dir.path().join("logs")).expect("logs dir") {
        let text = std::fs::read_to_string(entry.expect("log entry").path()).unwrap_or_default();
        multipart += text.matches("multipart upload created").count();
        single += text.matches("PutObject key=").count();
    }
    println!("  uploads started: {multipart} multipart, {single} single PUT");
    (multipart, single)
}

/// Event clip states for progress output; an empty list while the database is not readable
/// (a child killed before its first migration committed leaves no tables).
fn event_states(f: &Fleet) -> Vec<String> {
    let events = f.event_clips();
    let Some(c) = Db::open_read_only(&f.db_path()) else {
        return Vec::new();
    };
    let Ok(mut clips) = c.try_clips() else {
        return Vec::new();
    };
    clips.sort_by(|a, b| a.name.cmp(&b.name));
    clips
        .into_iter()
        .filter(|c| events.contains(&c.name))
        .map(|c| match c.state.as_str() {
            "failed" => format!("failed ({})", c.reason.unwrap_or_default()),
            _ => c.state,
        })
        .collect()
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    kill_9_during_create_multipart_leaves_at_most_an_empty_upload
);
async fn kill_9_during_create_multipart_leaves_at_most_an_empty_upload(store: Store) {
    // The agent journals an upload id only once CreateMultipartUpload has answered, so a
    // kill after the store created the upload but before the reply arrived leaves an upload
    // nobody knows. The agent journals the id before it sends any part, so such an orphan
    // never holds data; the restart creates its own upload and finishes it.
    let f = Fleet::start_on(store, 4, 7 * MIB).await;
    let events = f.event_clips();
    assert_eq!(events.len(), 1, "seed 42 with 4 clips gives one event clip");
    let k = Knobs {
        s3: "multipart_threshold = \"6MiB\"\npart_size = \"5MiB\"".into(),
        ..Knobs::default()
    };
    let cfg = f.write_config(&k);
    // The kill must land between the store creating the upload and the agent hearing of it:
    // this delay is the whole window for the poll below to see the upload and kill, so it
    // is seconds, not a fraction of one, for a loaded machine (the HeadObject before it
    // waits as long).
    f.s3.set_reply_delay(Some(Duration::from_secs(3)));
    let mut p = spawn(&f, &cfg, &["run", "--once"], "killed-at-create");
    let deadline = Instant::now() + Duration::from_secs(20);
    let orphans = loop {
        let ids = f.s3.list_incomplete_multipart().await;
        if !ids.is_empty() {
            break ids;
        }
        assert!(Instant::now() < deadline, "no multipart upload created");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(p.kill9().await, "the agent was still waiting for the reply");
    assert_eq!(orphans.len(), 1);
    let journaled: Option<String> = f.db().clips().into_iter().find_map(|c| c.upload_id);
    assert_eq!(journaled, None, "killed before the id reached the journal");
    f.s3.set_reply_delay(None);

    run_once_until_ok(&f, &cfg, 2).await;
    assert_exactly_the_event_clips(&f);
    let left = f.s3.list_incomplete_multipart().await;
    println!("kill -9 during CreateMultipartUpload: incomplete uploads left {left:?}");
    assert!(
        left.iter().all(|id| orphans.contains(id)),
        "the restart left an upload of its own: {left:?}"
    );
    for id in &left {
        assert_eq!(f.s3.stored_parts(id), 0, "orphaned upload {id} holds parts");
    }
}

// ---------------------------------------------------------------------------------------------
// Exit codes

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    exit_codes_of_run_once
);
async fn exit_codes_of_run_once(store: Store) {
    // One event clip: under S3 503s each clip spends seconds in the agent's upload retries.
    let f = Fleet::start_on(store, 4, 20_000).await;
    let events = f.event_clips();
    assert!(!events.is_empty());

    // 2: a config error names the key, on one line, without a panic; nothing starts.
    let bad = f.write_config(&Knobs {
        sync: "download_concurrency = 99".into(),
        ..Knobs::default()
    });
    let out = run(&f, &bad, &["run", "--once"]).await;
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("sync.download_concurrency"),
        "{}",
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "{}",
        out.describe()
    );
    assert!(
        f.sim.requests().is_empty(),
        "a bad config contacted the camera"
    );

    // 3: the configured camera is not reachable (a port nobody listens on, held for the
    // test so that no other test's server can be given it).
    let (_closed, closed) = common::sim::refusing_addr();
    let away = f.dir.path().join("away.toml");
    std::fs::write(
        &away,
        f.config_text(&Knobs::default())
            .replace(&f.sim.url(), &format!("http://{closed}")),
    )
    .unwrap();
    let out = run(&f, &away, &["run", "--once"]).await;
    assert_eq!(out.code, Some(3), "{}", out.describe());
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());

    // 1: S3 answers 503: work remains, and nothing leaves the camera.
    let cfg = f.write_config(&Knobs::default());
    f.s3.set_failing(Some(503));
    // The SDK's own retries (3 attempts, seconds of backoff) under the agent's are what a
    // real outage needs; one attempt keeps the test quick.
    let mut c = command(&f, &["-c", cfg.to_str().unwrap(), "run", "--once"]);
    c.env("AWS_MAX_ATTEMPTS", "1");
    let started = Instant::now();
    let out = spawn_with(&f, c, "s3-503").wait(RUN_TIMEOUT).await;
    println!("run --once with S3 failing 503: {:?}", started.elapsed());
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(f.sim.deletes().is_empty(), "deleted while S3 failed");
    for n in &events {
        assert!(f.clip_on_camera(n), "{n} left the camera");
    }
    assert!(f.bucket_keys().is_empty());

    // 0: S3 is back and a pass finishes everything.
    f.s3.set_failing(None);
    run_once_until_ok(&f, &cfg, 3).await;
    assert_exactly_the_event_clips(&f);
    // And a further pass with nothing to do is 0 too.
    let out = run(&f, &cfg, &["run", "--once"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
}

// ---------------------------------------------------------------------------------------------
// status, demo

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    status_reports_the_run
);
async fn status_reports_the_run(store: Store) {
    let size = 30_000u64;
    let f = Fleet::start_on(store, 10, size).await;
    let events = f.event_clips();
    let cfg = f.write_config(&Knobs::default());
    run_once_until_ok(&f, &cfg, 2).await;

    let out = run(&f, &cfg, &["status", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", out.stdout));
    let cams = v.as_array().expect("an array of cameras");
    assert_eq!(cams.len(), 1, "{v:#}");
    let c = &cams[0];
    assert_eq!(c["imei"], IMEI, "{c:#}");
    assert_eq!(c["name"], "truck-12", "{c:#}");
    let done =
        c["clips"]["deleted"].as_i64().unwrap_or(0) + c["clips"]["verified"].as_i64().unwrap_or(0);
    assert_eq!(done, events.len() as i64, "{c:#}");
    assert_eq!(c["lost"], 0, "{c:#}");
    assert_eq!(c["bytes_offloaded"], events.len() as u64 * size, "{c:#}");
    assert_eq!(
        c["clips"]["skipped"].as_u64(),
        Some((f.originals.len() - events.len()) as u64),
        "loop recordings skipped: {c:#}"
    );
    assert!(c["failures"].as_array().is_some_and(Vec::is_empty), "{c:#}");

    let out = run(&f, &cfg, &["status"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(out.stdout.contains("truck-12"), "{}", out.stdout);
    assert!(out.stdout.contains(IMEI), "{}", out.stdout);
}

// Not S3-facing (the demo writes to a local dir): s3s-fs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_offloads_to_a_local_dir() {
    let f = Fleet::start(0, 1).await;
    let dir = f.dir.path().join("demo");
    let p = spawn_with(
        &f,
        command(
            &f,
            &[
                "demo",
                "--dir",
                dir.to_str().unwrap(),
                "--clips",
                "8",
                "--size",
                "100000",
            ],
        ),
        "demo",
    );
    let out = p.wait(RUN_TIMEOUT).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let mut files = Vec::new();
    collect_files(&dir.join("bucket"), &mut files);
    assert!(
        !files.is_empty(),
        "nothing in {}\n{}",
        dir.display(),
        out.describe()
    );
    for (p, len) in &files {
        assert_eq!(*len, 100_000, "{p:?}");
        assert!(p.to_string_lossy().ends_with(".mp4"), "{p:?}");
    }
    assert!(out.stdout.contains("demo-truck"), "{}", out.stdout);
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_files(&p, out);
        } else if let Ok(m) = p.metadata() {
            out.push((p, m.len()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SIGTERM, lock

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    sigterm_stops_the_daemon_promptly_and_cleanly
);
async fn sigterm_stops_the_daemon_promptly_and_cleanly(store: Store) {
    let f = Fleet::start_on(store, 8, 400_000).await;
    let cfg = f.write_config(&Knobs::default());
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(100_000));
    let mut p = spawn(&f, &cfg, &["run"], "daemon");
    poll("a download in progress", Duration::from_secs(20), || {
        part_files(&f).iter().any(|(_, len)| *len > 0)
    })
    .await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the daemon exited by itself"
    );
    let sent = Instant::now();
    p.signal("-TERM");
    let deadline = sent + Duration::from_secs(5);
    let status = loop {
        if let Some(st) = p.child.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running 5 s after SIGTERM\n{}",
            p.output(None).describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = sent.elapsed();
    let out = p.output(status.code());
    println!("SIGTERM: exited {:?} after {took:?}", status.code());
    assert_eq!(status.code(), Some(0), "{}", out.describe());
    // The interrupted download was kept for a resume.
    let parts = part_files(&f);
    assert!(
        parts.iter().any(|(_, len)| *len > 0),
        "the partial download was kept: {parts:?}"
    );
    let have = parts.iter().map(|(_, l)| *l).max().unwrap_or(0);

    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    run_once_until_ok(&f, &cfg, 3).await;
    assert_exactly_the_event_clips(&f);
    let want = format!("bytes={have}-");
    assert!(
        f.sim
            .requests()
            .iter()
            .any(|r| r.range.as_deref() == Some(want.as_str())),
        "the next run resumed the download kept at SIGTERM with {want:?}"
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_second_agent_on_the_same_state_dir_refuses_to_start
);
async fn a_second_agent_on_the_same_state_dir_refuses_to_start(store: Store) {
    let f = Fleet::start_on(store, 8, 400_000).await;
    let cfg = f.write_config(&Knobs::default());
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(100_000));
    let mut daemon = spawn(&f, &cfg, &["run"], "daemon");
    poll("the first agent at work", Duration::from_secs(20), || {
        part_files(&f).iter().any(|(_, len)| *len > 0)
    })
    .await;
    // The first agent's own API requests (its delete batch, its next probe and listing) only
    // come once its downloads are done: at 4 kB/s (above the agent's 1 KiB/s floor) what is
    // left takes longer than the second run may, so every API request seen below is the
    // second agent's, however slow the machine.
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(4_000));
    let requests = f.sim.requests().len();

    let out = run(&f, &cfg, &["run", "--once"]).await;
    assert_ne!(out.code, Some(0), "{}", out.describe());
    assert!(out.code.is_some(), "killed by a signal: {}", out.describe());
    let msg = out.stderr.to_lowercase();
    assert!(
        msg.contains("another") && msg.contains("lock"),
        "the refusal names the other agent and the lock: {}",
        out.describe()
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    // The refused agent did not talk to the camera (only the first one's download went on).
    let extra: Vec<_> = f.sim.requests()[requests..]
        .iter()
        .filter(|r| !r.path.starts_with(qucam_sim::VIDEO_ROOT))
        .cloned()
        .collect();
    assert!(
        extra.is_empty(),
        "the second agent talked to the camera: {extra:?}"
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the first agent is unaffected"
    );
    daemon.kill9().await;
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    keys_in_a_world_readable_config_are_used_but_warned_about
);
/// S3 keys may live in the config; such a file readable by others gets a warning, and
/// the secret never reaches the log.
async fn keys_in_a_world_readable_config_are_used_but_warned_about(store: Store) {
    use std::os::unix::fs::PermissionsExt;
    let f = Fleet::start_on(store, 6, 20_000).await;
    let k = Knobs {
        s3: format!(
            "access_key_id = \"{}\"\nsecret_access_key = \"{}\"",
            common::s3::TEST_ACCESS_KEY,
            common::s3::TEST_SECRET_KEY
        ),
        ..Knobs::default()
    };
    let cfg = f.write_config(&k);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    // No credentials in the environment: only the config's keys can work.
    let mut c = command(&f, &["-c", cfg.to_str().unwrap(), "run", "--once"]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let out = spawn_with(&f, c, "keys").wait(RUN_TIMEOUT).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    // The fix takes others' read away: `chmod 600` for a file the agent owns, `chmod o=`
    // for a root-owned one (CI runs as root; `chmod 600` would lock the packaged service
    // out of a root:qucam-offload file).
    assert!(
        out.stderr.contains("holds S3 keys")
            && (out.stderr.contains("chmod 600") || out.stderr.contains("chmod o=")),
        "{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains(common::s3::TEST_SECRET_KEY),
        "the secret key reached the log"
    );
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
    }
    // Readable by the agent only: no warning.
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = command(&f, &["-c", cfg.to_str().unwrap(), "run", "--once"]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let out = spawn_with(&f, c, "keys-600").wait(RUN_TIMEOUT).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    assert!(!out.stderr.contains("holds S3 keys"), "{}", out.describe());
}
