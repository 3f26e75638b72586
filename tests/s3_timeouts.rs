//! S3 timeouts end to end: an endpoint that accepts connections and never answers (it
//! neither reads nor writes) must make `run --once` end by itself, exit 1, and say that S3
//! stalled, naming the key that sets the limit; and it must wait out each stall once, not
//! once per SDK retry, backoff retry and clip (with the defaults, 60 s of stall times 3 SDK
//! attempts times 5 tries kept a `run --once` going for over 15 minutes).

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fleet::{Fleet, Knobs};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");

/// A 127.0.0.1 listener that accepts every connection and then holds it in silence; the
/// counter is how many connections it accepted.
async fn black_hole() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (url, accepted, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holing_endpoint_ends_run_once_with_exit_1() {
    let f = Fleet::start(2, 20_000).await;
    let (hole, accepted, _task) = black_hole().await;
    let knobs = Knobs {
        s3: "connect_timeout = \"1s\"\nstall_timeout = \"2s\"\n".into(),
        sync: "destination_wait = \"6s\"\n".into(),
        ..Knobs::default()
    };
    let text = f.config_text(&knobs).replace(&f.s3.endpoint, &hole);
    assert!(text.contains(&hole));
    let cfg = f.dir.path().join("hole.toml");
    std::fs::write(&cfg, text).expect("write config");

    let started = Instant::now();
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs(f.child_env())
        .current_dir(f.child_home())
        .args(["-c", cfg.to_str().expect("utf-8"), "run", "--once"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), child)
        .await
        .expect("run --once still running after 180 s against a black hole")
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let described = format!(
        "exit {:?} after {:?}\n--- stdout\n{}\n--- stderr\n{stderr}",
        out.status.code(),
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout)
    );
    println!("{described}");
    assert_eq!(out.status.code(), Some(1), "{described}");
    assert!(stderr.contains("s3.stall_timeout"), "{described}");
    assert!(!stderr.contains("panicked"), "{described}");
    assert!(f.sim.deletes().is_empty(), "deleted with S3 unreachable");
    // Each stalled request held one connection for the whole stall_timeout. Two clips'
    // first requests, then the HeadBucket probes of the pause (at 1, 2, 4 s: at most a
    // handful within destination_wait): well under 12. Retrying a stalled request at once
    // (3 SDK attempts, times 5 backoff tries, per clip) makes it 30 or more.
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n < 12,
        "{n} connections to the black hole: stalled requests were retried on the spot\n{described}"
    );
}

/// One upload request stalls while the store answers everything else (its probe included):
/// the stall is that request's, not the destination's nor the clip's. The request is tried
/// again at once, no clip is charged an attempt, and `run --once` finishes everything.
/// (The agent runs as its own process: its S3 client is the one with the stall guard.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_stall_costs_no_attempt() {
    let f = Fleet::start(2, 20_000).await;
    let cfg = f.write_config(&Knobs {
        s3: "connect_timeout = \"1s\"\nstall_timeout = \"1s\"\n".into(),
        ..Knobs::default()
    });
    f.s3.stall_next_puts(1, Duration::from_secs(4));
    let out = tokio::process::Command::new(BIN)
        .env_clear()
        .envs(f.child_env())
        .current_dir(f.child_home())
        .args(["-c", cfg.to_str().expect("utf-8"), "run", "--once"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(f.s3.stalls_left(), 0, "no upload stalled\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for n in f.event_clips() {
        f.assert_in_bucket(&n);
    }
    let charged: i64 = f.db().clips().iter().map(|c| c.attempts).sum();
    assert_eq!(
        charged, 0,
        "a one-off stall was charged to a clip\n{stderr}"
    );
}
