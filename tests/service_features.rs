//! Running it as a real service: Prometheus `/metrics` and `/healthz`, the webhook, desktop
//! notifications without a session bus, and `doctor`. Scenarios against the simulated camera
//! and the in-process S3 server on 127.0.0.1, with the agent in-process or the real binary
//! as a child.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{Fleet, IMEI, Knobs, Out};
use common::s3::Store;
use qucam_offload::agent::Agent;
use qucam_offload::config::Config;
use qucam_offload::upload::{Destination, S3Destination};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");

/// `qucam-offload -c CONFIG ARGS…` with nothing inherited but the test credentials, a
/// private HOME, and no session bus; waits at most a minute.
async fn run_bin(f: &Fleet, cfg: &Path, args: &[&str]) -> Out {
    let runtime = f.dir.path().join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut c = tokio::process::Command::new(BIN);
    c.env_clear()
        .envs(f.child_env())
        // No DBUS_SESSION_BUS_ADDRESS, and no bus socket where one is looked for.
        .env("XDG_RUNTIME_DIR", &runtime)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = c.spawn().expect("spawn qucam-offload");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("qucam-offload finished within 60s")
        .expect("child output");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes the fleet's config plus `extra` (whole sections) and returns its path.
fn write_config(f: &Fleet, k: &Knobs, extra: &str) -> PathBuf {
    let p = f.dir.path().join("config.toml");
    std::fs::write(&p, format!("{}\n{extra}\n", f.config_text(k))).unwrap();
    p
}

/// The agent in-process with the fleet's config plus `extra`.
fn agent_with(f: &Fleet, k: &Knobs, extra: &str) -> Arc<Agent> {
    let text = format!("{}\n{extra}\n", f.config_text(k));
    let cfg = Config::parse(&text, Path::new("test.toml")).expect("config");
    let settings = qucam_offload::upload::s3_settings(cfg.s3.as_ref().unwrap());
    let dest = Destination::S3(S3Destination::from_client(f.s3.client(), &settings));
    Arc::new(Agent::new(cfg, dest, CancellationToken::new()).expect("agent"))
}

/// Samples of a Prometheus text page: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Clip counts by state, and the bytes of verified clips, from the state database.
fn db_counts(f: &Fleet) -> (BTreeMap<String, i64>, i64) {
    let clips = f.db().clips();
    let mut by_state = BTreeMap::new();
    for c in &clips {
        *by_state.entry(c.state.clone()).or_insert(0) += 1;
    }
    let bytes = clips
        .iter()
        .filter(|c| c.verified_at.is_some())
        .map(|c| c.size)
        .sum();
    (by_state, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_reflect_a_real_offload() {
    let f = Fleet::start(8, 300_000).await;
    let events = f.event_clips();
    let agent = agent_with(&f, &Knobs::default(), "");
    let token = CancellationToken::new();
    let server = qucam_offload::metrics::start(&agent, "127.0.0.1:0".parse().unwrap(), token)
        .await
        .expect("metrics endpoint");
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let before = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(before.status(), 200);
    assert!(
        before.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    let before = samples(&before.text().await.unwrap());
    assert_eq!(
        before["qucam_offload_camera_reachable{camera=\"truck-12\"}"],
        0.0
    );

    let out = agent.run_once().await;
    assert!(
        matches!(
            out[0].1,
            qucam_offload::agent::PassOutcome::Done { remaining: 0, .. }
        ),
        "{out:?}"
    );
    let (by_state, verified_bytes) = db_counts(&f);
    assert_eq!(by_state["deleted"], events.len() as i64, "{by_state:?}");
    let offloaded = format!("qucam_offload_offloaded_bytes_total{{imei=\"{IMEI}\"}}");
    let reachable = "qucam_offload_camera_reachable{camera=\"truck-12\"}";
    // The store's figures come from a snapshot the endpoint reads again after events.
    let deleted =
        format!("qucam_offload_clips{{imei=\"{IMEI}\",camera=\"truck-12\",state=\"deleted\"}}");
    // The collector follows the events asynchronously: wait until it has them all. The
    // pass's last event (PassFinished, which sets `reachable`) comes after the offloads and
    // the deletes, and events are counted in order: once it shows, every counter is final;
    // the store's snapshot is read again after those events.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let m = samples(&text);
        if (m.get(&offloaded) == Some(&(verified_bytes as f64))
            && m.get(reachable) == Some(&1.0)
            && m.get(&deleted) == Some(&(by_state["deleted"] as f64)))
            || Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(m.get(&offloaded), Some(&(verified_bytes as f64)), "{m:#?}");
    let per_imei = |name: &str| m[&format!("{name}{{imei=\"{IMEI}\"}}")];
    assert_eq!(
        per_imei("qucam_offload_uploaded_bytes_total"),
        verified_bytes as f64
    );
    assert_eq!(
        per_imei("qucam_offload_downloaded_bytes_total"),
        verified_bytes as f64
    );
    assert_eq!(
        per_imei("qucam_offload_offloaded_clips_total"),
        events.len() as f64
    );
    assert_eq!(
        per_imei("qucam_offload_deleted_clips_total"),
        events.len() as f64
    );
    assert_eq!(per_imei("qucam_offload_lost_clips_total"), 0.0);
    assert!(per_imei("qucam_offload_upload_throughput_bytes_per_second") > 0.0);
    assert!(per_imei("qucam_offload_download_throughput_bytes_per_second") > 0.0);
    let labels = format!("imei=\"{IMEI}\",camera=\"truck-12\"");
    for state in [
        "seen",
        "skipped",
        "queued",
        "downloading",
        "downloaded",
        "uploading",
        "uploaded",
        "verified",
        "deleted",
        "retained",
        "failed",
        "lost",
        "refused",
    ] {
        let want = by_state.get(state).copied().unwrap_or(0) as f64;
        assert_eq!(
            m[&format!("qucam_offload_clips{{{labels},state=\"{state}\"}}")],
            want,
            "state {state}"
        );
    }
    assert_eq!(m[&format!("qucam_offload_queue_depth{{{labels}}}")], 0.0);
    assert_eq!(
        m["qucam_offload_camera_reachable{camera=\"truck-12\"}"],
        1.0
    );
    let last = m[&format!("qucam_offload_last_offload_timestamp_seconds{{{labels}}}")];
    assert!(
        (last - qucam_offload::store::now() as f64).abs() < 60.0,
        "{last}"
    );
    assert!(
        !m.keys()
            .any(|k| k.starts_with("qucam_offload_failures_total")),
        "{m:#?}"
    );
}

/// The metrics endpoint of `agent` on 127.0.0.1 with `limits`, and its base URL.
async fn metrics_with(
    agent: &Agent,
    limits: qucam_offload::metrics::ServeLimits,
) -> (qucam_offload::metrics::MetricsServer, String) {
    let server = qucam_offload::metrics::start_with(
        agent,
        "127.0.0.1:0".parse().unwrap(),
        CancellationToken::new(),
        limits,
    )
    .await
    .expect("metrics endpoint");
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

/// Connects to `addr` and sends nothing.
async fn idle_connection(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint")
}

/// Whether the server closed `s` within `bound` (a read ends, with EOF or a reset).
async fn closed_within(s: &mut tokio::net::TcpStream, bound: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(bound, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_client_that_sends_nothing_is_closed_after_the_header_timeout() {
    let f = Fleet::start(0, 1_000).await;
    let agent = agent_with(&f, &Knobs::default(), "");
    let limits = qucam_offload::metrics::ServeLimits {
        header_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (server, base) = metrics_with(&agent, limits).await;
    let mut silent = idle_connection(server.local_addr()).await;
    assert!(
        closed_within(&mut silent, Duration::from_secs(20)).await,
        "a connection that sent nothing was still open after 20 s"
    );
    // A real scrape on a connection of its own is answered.
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_connections_over_the_cap_are_closed_and_scrapes_go_on_once_one_ends() {
    let f = Fleet::start(0, 1_000).await;
    let agent = agent_with(&f, &Knobs::default(), "");
    let limits = qucam_offload::metrics::ServeLimits {
        header_timeout: Duration::from_secs(600),
        max_connections: 4,
        ..Default::default()
    };
    let (server, base) = metrics_with(&agent, limits).await;
    let addr = server.local_addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(idle_connection(addr).await);
    }
    // The fifth is closed as it is accepted, long before any timeout.
    let mut fifth = idle_connection(addr).await;
    assert!(
        closed_within(&mut fifth, Duration::from_secs(20)).await,
        "a connection over the cap was kept open"
    );
    // Once the idle ones are gone (their slots free as the server sees them close), a scrape
    // is answered.
    drop(held);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http.get(format!("{base}/metrics")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => assert!(
                Instant::now() < deadline,
                "no scrape answered after the idle connections closed: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_answers_from_the_snapshot_while_the_store_is_held() {
    let f = Fleet::start(2, 1_000).await;
    let agent = agent_with(&f, &Knobs::default(), "");
    let out = agent.run_once().await;
    assert!(
        matches!(out[0].1, qucam_offload::agent::PassOutcome::Done { .. }),
        "{out:?}"
    );
    let (_server, base) = metrics_with(&agent, Default::default()).await;
    let http = reqwest::Client::new();
    let first = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    // Someone holds the database's write lock (an sqlite3 shell, a backup tool), and the
    // agent's next write waits on it (up to the store's 5 s busy timeout) holding the
    // agent's store: a scrape that read the store would wait behind it.
    let holder = f.db();
    holder.begin_exclusive();
    let store = agent.store().clone();
    let write = tokio::spawn(async move {
        store
            .set_notice("metrics-test".into(), Some("x".into()))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scrape = http.get(format!("{base}/metrics")).send().await.unwrap();
    let answered_while_held = !write.is_finished();
    assert_eq!(scrape.status(), 200);
    let text = scrape.text().await.unwrap();
    assert!(
        answered_while_held,
        "the scrape waited for the agent's store"
    );
    assert!(
        text.contains(&format!(
            "qucam_offload_clips{{imei=\"{IMEI}\",camera=\"truck-12\",state="
        )),
        "{text}"
    );
    holder.rollback();
    drop(holder);
    let _ = write.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_already_taken_is_a_clear_error() {
    let f = Fleet::start(2, 10_000).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = write_config(
        &f,
        &Knobs::default(),
        &format!("[metrics]\nlisten = \"{addr}\""),
    );
    let out = run_bin(&f, &cfg, &["run", "--once"]).await;
    assert_eq!(out.code, Some(1), "{}", out.describe());
    assert!(out.stderr.contains("metrics.listen"), "{}", out.describe());
    assert!(out.stderr.contains(&addr.to_string()), "{}", out.describe());
}

/// A webhook receiver on 127.0.0.1 that answers its very first request 503 (so the
/// sender has to retry) and accepts every one after it.
struct Hook {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn start_hook() -> Hook {
    use axum::extract::State;
    use axum::http::StatusCode;
    type Shared = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<Vec<String>>>);
    async fn hook(
        State((accepted, requests)): State<Shared>,
        uri: axum::http::Uri,
        axum::Json(body): axum::Json<Value>,
    ) -> StatusCode {
        let first = {
            let mut r = requests.lock().unwrap();
            r.push(uri.to_string());
            r.len() == 1
        };
        if first {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        accepted.lock().unwrap().push(body);
        StatusCode::NO_CONTENT
    }
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/hooks/clip", axum::routing::post(hook))
        .with_state((accepted.clone(), requests.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hook {
        addr,
        accepted,
        requests,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_one_post_per_offloaded_clip() {
    let f = Fleet::start(8, 200_000).await;
    let events = f.event_clips();
    assert!(events.len() >= 2);
    let hook = start_hook().await;
    let secret = "s3cr3t-t0ken";
    let cfg = write_config(
        &f,
        &Knobs::default(),
        &format!(
            "[notify]\nwebhook = \"http://{}/hooks/clip?token={secret}\"",
            hook.addr
        ),
    );
    let out = run_bin(&f, &cfg, &["run", "--once"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());

    let accepted = hook.accepted.lock().unwrap().clone();
    assert_eq!(
        accepted.len(),
        events.len(),
        "one accepted POST per offloaded clip: {accepted:#?}"
    );
    assert_eq!(
        hook.requests.lock().unwrap().len(),
        events.len() + 1,
        "the 503 was retried once"
    );
    let mut clips: Vec<String> = accepted
        .iter()
        .map(|v| v["clip"].as_str().unwrap().to_string())
        .collect();
    clips.sort();
    assert_eq!(clips, events, "each clip exactly once");
    for v in &accepted {
        let clip = v["clip"].as_str().unwrap();
        assert_eq!(v["event"], "clip_offloaded");
        assert_eq!(v["imei"], IMEI);
        assert_eq!(v["key"], f.key(clip), "{v:#}");
        assert_eq!(v["sha256"], f.originals[clip].as_str(), "{v:#}");
        assert_eq!(v["event_code"], &clip[16..18]);
        assert!(v["event_name"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(v["size"], 200_000);
        f.assert_in_bucket(clip);
    }
    assert!(
        !out.stderr.contains(secret),
        "the webhook's token was logged:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_notifications_without_a_session_bus_do_not_fail_the_run() {
    let f = Fleet::start(8, 100_000).await;
    let events = f.event_clips();
    let cfg = write_config(&f, &Knobs::default(), "[notify]\ndesktop = true");
    let out = run_bin(&f, &cfg, &["run", "--once"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    for n in &events {
        f.assert_in_bucket(n);
    }
    assert_eq!(
        out.stderr.matches("desktop notifications disabled").count(),
        1,
        "one warning, then quiet:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    doctor_passes_on_a_healthy_setup_and_cleans_up_its_probe
);
async fn doctor_passes_on_a_healthy_setup_and_cleans_up_its_probe(store: Store) {
    let f = Fleet::start_on(store, 3, 50_000).await;
    let cfg = write_config(&f, &Knobs::default(), "");
    let out = run_bin(&f, &cfg, &["doctor", "--write-test"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    for check in [
        "config",
        "state dir",
        "free space",
        "s3 credentials",
        "s3 bucket",
        "s3 write test",
        "camera truck-12 ",
        "camera truck-12 range",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "no passing {check:?} line:\n{}",
            out.describe()
        );
    }
    assert!(out.stdout.contains(IMEI), "{}", out.stdout);
    assert!(out.stdout.contains("206"), "{}", out.stdout);
    assert!(!out.stdout.contains("FAIL"), "{}", out.stdout);
    // (s3s-fs: its files, hidden ones included; moto: the temp dir is empty and
    // `bucket_keys` below covers the probe object.)
    let leftovers: Vec<String> = files_under(&f.s3.root)
        .into_iter()
        .filter(|p| p.contains("qucam-offload-doctor"))
        .collect();
    assert!(leftovers.is_empty(), "probe left behind: {leftovers:?}");
    assert!(
        f.bucket_keys().is_empty(),
        "nothing else written: {:?}",
        f.bucket_keys()
    );
    // Nothing was taken off the camera.
    assert_eq!(
        f.originals.keys().filter(|n| f.clip_on_camera(n)).count(),
        3
    );
}

on_both_stores!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    doctor_reports_a_broken_bucket_and_an_unreachable_camera
);
async fn doctor_reports_a_broken_bucket_and_an_unreachable_camera(store: Store) {
    let f = Fleet::start_on(store, 2, 10_000).await;
    // Held until the end: a released port could be given to another test's server.
    let (_closed, closed) = common::sim::refusing_addr();
    let text = f
        .config_text(&Knobs::default())
        .replace(&f.sim.url(), &format!("http://{closed}"));
    assert!(text.contains(&closed.to_string()));
    let cfg = f.dir.path().join("broken.toml");
    std::fs::write(&cfg, text).unwrap();
    f.s3.set_failing(Some(503));
    let out = run_bin(&f, &cfg, &["doctor"]).await;
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let failing = |what: &str| {
        out.stdout
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains(what))
    };
    assert!(failing("s3 bucket"), "{}", out.describe());
    assert!(failing("camera truck-12"), "{}", out.describe());
    assert!(out.stdout.contains("503"), "{}", out.stdout);
    assert!(out.stdout.contains("not reachable"), "{}", out.stdout);
    assert!(out.stdout.contains("fix:"), "{}", out.stdout);
    // The checks that hold still pass.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("state dir")),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_with_a_bad_config_exits_2() {
    let f = Fleet::start(1, 10_000).await;
    let cfg = write_config(&f, &Knobs::default(), "[metrics]\nlisten = \"nonsense\"");
    let out = run_bin(&f, &cfg, &["doctor"]).await;
    assert_eq!(out.code, Some(2), "{}", out.describe());
    assert!(out.stderr.contains("metrics.listen"), "{}", out.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_a_table_that_fits_80_columns_and_json_keeps_its_shape() {
    let f = Fleet::start(8, 100_000).await;
    let events = f.event_clips();
    let cfg = write_config(&f, &Knobs::default(), "");
    let out = run_bin(&f, &cfg, &["run", "--once"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let out = run_bin(&f, &cfg, &["status"]).await;
    assert_eq!(out.code, Some(0), "{}", out.describe());
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("CAMERA"), "{}", out.stdout);
    for h in [
        "IMEI",
        "LAST SEEN",
        "PENDING",
        "UPLOADED TODAY",
        "LOST",
        "FAILED",
    ] {
        assert!(lines[0].contains(h), "{}", lines[0]);
    }
    for l in &lines {
        assert!(l.chars().count() <= 80, "wider than 80 columns: {l:?}");
    }
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], "truck-12");
    assert_eq!(row[1], IMEI);
    assert_eq!(row[4], "0", "pending: {}", lines[1]);
    assert_eq!(row[5], events.len().to_string(), "today: {}", lines[1]);

    let out = run_bin(&f, &cfg, &["status", "--json"]).await;
    let v: Value = serde_json::from_str(&out.stdout).expect("status json");
    let c = &v[0];
    for key in [
        "imei",
        "name",
        "device",
        "firmware",
        "last_seen",
        "clips",
        "bytes_offloaded",
        "lost",
        "failures",
        "uploads_in_flight",
        "downloads_paused",
    ] {
        assert!(c.get(key).is_some(), "status --json lost {key:?}: {c:#}");
    }
    assert_eq!(c["clips"]["deleted"], events.len() as u64);
    assert_eq!(c["uploaded_today"], events.len() as u64);
    assert_eq!(c["pending"], 0);
}
