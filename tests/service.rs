//! `qucam-offload run` as a service, the real binary as a child process against a simulated
//! camera and an S3 server on 127.0.0.1: the systemd notify protocol (READY, STATUS,
//! WATCHDOG, STOPPING) on a datagram socket the test binds, SIGHUP config reloads (a
//! changed config takes effect without dropping the transfer in flight; an invalid one is
//! refused and the agent goes on, without quoting a secret; a rotated S3 secret alone is a
//! change), SIGTERM stopping it within 5 s, and the watchdog: fed while the agent idles or
//! progresses (a camera that answers slowly included), starved by a wedged loop.
//!
//! Every wait polls with a deadline; every child is killed when its handle drops.
#![cfg(unix)]

mod common;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{Fleet, IMEI, Knobs};

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");

/// A `NOTIFY_SOCKET` of our own: every datagram the child sends, split into lines.
struct NotifySocket {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (lines, stop) = (lines.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let mut l = lines.lock().unwrap();
                        l.extend(text.lines().map(str::to_string));
                    }
                }
            })
        };
        NotifySocket {
            path,
            lines,
            stop,
            reader: Some(reader),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    fn has(&self, pred: impl Fn(&str) -> bool) -> bool {
        self.lines().iter().any(|l| pred(l))
    }

    /// `count(line)` once it is at least `want`, or after `timeout`: a datagram the child sent
    /// just before it exited may not have been read by the reader thread yet.
    async fn count_settled(&self, line: &str, want: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.count(line) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.count(line)
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The agent daemon as a child: `qucam-offload -c CONFIG run`.
struct Daemon {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Daemon {
    /// Nothing inherited (no real AWS profile, config, HOME or JOURNAL_STREAM), the test
    /// credentials, and the notify socket. No WATCHDOG_PID: sd-notify accepts its absence.
    fn spawn(f: &Fleet, cfg: &Path, notify: &NotifySocket) -> Daemon {
        let home = f.child_home();
        let stderr = f.dir.path().join("daemon.stderr");
        let child = std::process::Command::new(BIN)
            .env_clear()
            .envs(f.child_env())
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "2000000")
            .current_dir(&home)
            .args(["-c", cfg.to_str().expect("utf-8 path"), "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn qucam-offload");
        Daemon { child, stderr }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends a signal with the system `kill` command (`libc` is not a dependency).
    fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} failed");
    }

    /// SIGTERM; the exit must come within 5 s. Returns the exit code and the time taken.
    async fn terminate(mut self) -> (Option<i32>, Duration) {
        let sent = Instant::now();
        self.signal("-TERM");
        let deadline = sent + Duration::from_secs(5);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return (st.code(), sent.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "still running 5 s after SIGTERM\n--- stderr\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms until it holds; fails the test after `timeout`, with
/// the daemon's stderr.
async fn poll(d: &mut Daemon, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if !d.running() {
            panic!(
                "the daemon exited while waiting for: {what}\n--- stderr\n{}",
                d.stderr()
            );
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {what}\n--- stderr\n{}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Event code (`_XX_`) of a clip name.
fn code(name: &str) -> String {
    format!("_{}_", &name[16..18])
}

/// Object keys in the bucket.
fn keys(f: &Fleet) -> BTreeSet<String> {
    f.bucket_keys().into_iter().collect()
}

fn want_keys(f: &Fleet, names: &[String]) -> BTreeSet<String> {
    names.iter().map(|n| f.key(n)).collect()
}

/// `.part` files of the camera in the spool, with their sizes.
fn part_files(f: &Fleet) -> Vec<(PathBuf, u64)> {
    let dir = f.state_dir.join("spool").join(IMEI);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "part"))
        .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.len())))
        .collect()
}

/// The event clips split by event code: those of the first code, and the others.
fn split_events(f: &Fleet) -> (String, Vec<String>, Vec<String>) {
    let events = f.event_clips();
    let first = code(&events[0]);
    let (a, b): (Vec<String>, Vec<String>) = events.into_iter().partition(|n| code(n) == first);
    assert!(
        !a.is_empty() && !b.is_empty(),
        "seed 42 gives event clips of several codes"
    );
    (first, a, b)
}

fn knobs(sync: &str) -> Knobs {
    Knobs {
        sync: sync.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_status_watchdog_and_stopping() {
    let f = Fleet::start(12, 200_000).await;
    let events = f.event_clips();
    let cfg = f.write_config(&Knobs::default());
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);

    poll(&mut d, "READY=1", Duration::from_secs(20), || {
        notify.count("READY=1") == 1
    })
    .await;
    // A status line that says what happened, and then that nothing is left.
    poll(
        &mut d,
        "STATUS=truck-12: N clips offloaded this pass, 0 pending",
        Duration::from_secs(60),
        || {
            notify.has(|l| {
                l.starts_with("STATUS=truck-12: ")
                    && l.contains("offloaded this pass")
                    && l.ends_with(", 0 pending")
            })
        },
    )
    .await;
    let statuses: Vec<String> = notify
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("STATUS="))
        .collect();
    // Passes offloaded every event clip (the newest ones may wait for a second listing
    // to prove they finished recording), and said so as they went.
    let offloaded: usize = statuses
        .iter()
        .filter_map(|l| {
            let n = l.strip_prefix("STATUS=truck-12: ")?.split(' ').next()?;
            n.parse::<usize>().ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        offloaded >= 1,
        "a status counted offloaded clips: {statuses:#?}"
    );
    // WATCHDOG_USEC=2 s: pings every second.
    poll(&mut d, "two WATCHDOG=1", Duration::from_secs(10), || {
        notify.count("WATCHDOG=1") >= 2
    })
    .await;

    let (code, took) = d.terminate().await;
    println!("SIGTERM: exited {code:?} after {took:?}");
    assert_eq!(code, Some(0));
    assert_eq!(
        notify
            .count_settled("STOPPING=1", 1, Duration::from_secs(10))
            .await,
        1,
        "{:#?}",
        notify.lines()
    );
    assert_eq!(notify.count("READY=1"), 1, "one READY=1 without a reload");
    // State saved: every event clip verified in the bucket and deleted from the camera.
    assert_eq!(keys(&f), want_keys(&f, &events));
    let states = f.states();
    for name in &events {
        f.assert_in_bucket(name);
        assert_eq!(
            states.get(name).map(String::as_str),
            Some("deleted"),
            "{name}"
        );
        assert!(!f.clip_on_camera(name), "{name} deleted from the camera");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_config_without_dropping_the_transfer_in_flight() {
    let f = Fleet::start(20, 400_000).await;
    let (first, firsts, others) = split_events(&f);
    // 400 kB at 200 kB/s: each download takes about 2 s.
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(200_000));
    let cfg = f.write_config(&knobs(&format!("event_types = [\"{first}\"]")));
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(&mut d, "READY=1", Duration::from_secs(20), || {
        notify.count("READY=1") == 1
    })
    .await;
    poll(
        &mut d,
        "a download in flight",
        Duration::from_secs(30),
        || part_files(&f).iter().any(|(_, len)| *len > 0),
    )
    .await;

    // Every event clip now, while that download is in flight.
    f.write_config(&Knobs::default());
    d.signal("-HUP");
    poll(&mut d, "RELOADING=1", Duration::from_secs(10), || {
        notify.count("RELOADING=1") == 1
    })
    .await;
    f.sim.set_faults(|x| x.bandwidth_bytes_per_sec = None);
    poll(
        &mut d,
        "READY=1 after the reload",
        Duration::from_secs(30),
        || notify.count("READY=1") == 2,
    )
    .await;
    let all: Vec<String> = firsts.iter().chain(&others).cloned().collect();
    poll(
        &mut d,
        "every event clip in the bucket",
        Duration::from_secs(60),
        || keys(&f) == want_keys(&f, &all),
    )
    .await;
    let log = d.stderr();
    let reloads = [the_reload_line(&log)];
    assert!(reloads[0].contains("changed sync"), "{}", reloads[0]);
    // The download in flight at the SIGHUP finished under the old agent: no download was
    // resumed (a dropped one would come back with a Range from its offset).
    let resumed: Vec<_> = f
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.range.as_deref().is_some_and(|x| x != "bytes=0-"))
        .collect();
    assert!(resumed.is_empty(), "downloads resumed: {resumed:#?}\n{log}");

    let (code, _) = d.terminate().await;
    assert_eq!(code, Some(0));
    for name in &all {
        f.assert_in_bucket(name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_on_sighup_is_refused_and_the_agent_goes_on() {
    let f = Fleet::start(20, 100_000).await;
    let (first, firsts, others) = split_events(&f);
    let cfg = f.write_config(&knobs(&format!("event_types = [\"{first}\"]")));
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(
        &mut d,
        "the first code's clips in the bucket",
        Duration::from_secs(60),
        || keys(&f) == want_keys(&f, &firsts),
    )
    .await;

    let line = reload_refused(&mut d, &f, &cfg, &knobs("max_attempts = \"many\"")).await;
    assert!(line.contains("sync.max_attempts"), "names the key: {line}");
    assert!(d.running(), "the agent keeps running");
    assert_eq!(notify.count("RELOADING=1"), 0, "no reload began");
    // Still on the old config: the other codes' clips are not offloaded.
    assert_eq!(keys(&f), want_keys(&f, &firsts));

    // A valid file later is applied.
    f.write_config(&Knobs::default());
    d.signal("-HUP");
    let all: Vec<String> = firsts.iter().chain(&others).cloned().collect();
    poll(
        &mut d,
        "every event clip after the valid reload",
        Duration::from_secs(60),
        || keys(&f) == want_keys(&f, &all),
    )
    .await;
    let (code, _) = d.terminate().await;
    assert_eq!(code, Some(0));
}

/// The daemon's stderr by path (for closures that cannot borrow the daemon).
/// Writes the config `k` to `cfg`, sends SIGHUP and waits for the reload to be refused:
/// the refusal line of the log.
async fn reload_refused(d: &mut Daemon, f: &Fleet, cfg: &std::path::Path, k: &Knobs) -> String {
    std::fs::write(cfg, f.config_text(k)).unwrap();
    d.signal("-HUP");
    poll(d, "the refusal logged", Duration::from_secs(10), || {
        d_stderr(f).contains("config reload (SIGHUP) refused")
    })
    .await;
    let log = d.stderr();
    log.lines()
        .find(|l| l.contains("refused"))
        .expect("refusal line")
        .to_owned()
}

fn d_stderr(f: &Fleet) -> String {
    std::fs::read_to_string(f.dir.path().join("daemon.stderr")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_reload_still_stops_within_5_s_and_keeps_the_partial_download() {
    let f = Fleet::start(12, 2_000_000).await;
    // 2 MB at 100 kB/s: a download takes 20 s, far beyond the 5 s allowed for SIGTERM.
    f.sim
        .set_faults(|x| x.bandwidth_bytes_per_sec = Some(100_000));
    let cfg = f.write_config(&Knobs::default());
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(
        &mut d,
        "a download in flight",
        Duration::from_secs(30),
        || part_files(&f).iter().any(|(_, len)| *len > 0),
    )
    .await;
    f.write_config(&knobs("download_concurrency = 2"));
    d.signal("-HUP");
    poll(
        &mut d,
        "RELOADING=1 (the old agent drains)",
        Duration::from_secs(10),
        || notify.count("RELOADING=1") == 1,
    )
    .await;
    let (code, took) = d.terminate().await;
    println!("SIGTERM while draining: exited {code:?} after {took:?}");
    assert_eq!(code, Some(0));
    assert_eq!(
        notify
            .count_settled("STOPPING=1", 1, Duration::from_secs(10))
            .await,
        1,
        "{:#?}",
        notify.lines()
    );
    // The interrupted download was kept for a resume; its state was recorded.
    assert!(
        part_files(&f).iter().any(|(_, len)| *len > 0),
        "partial download kept"
    );
    let states = f.states();
    assert!(
        states.values().any(|s| s == "downloading" || s == "queued"),
        "the interrupted clip is still due: {states:?}"
    );
}

/// `[s3]` lines giving the static keys: the test access key id and `secret`.
fn static_keys(secret: &str) -> Knobs {
    Knobs {
        sync: "max_attempts = 1000".into(),
        s3: format!(
            "access_key_id = \"{}\"\nsecret_access_key = \"{secret}\"",
            common::s3::TEST_ACCESS_KEY
        ),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_error_on_the_secret_line_at_sighup_is_refused_without_quoting_it() {
    const NEW_SECRET: &str = "rotated-wJalrXUtnFEMIK7MDENGbPxRfiCY";
    let f = Fleet::start(6, 10_000).await;
    let cfg = f.write_config(&static_keys(common::s3::TEST_SECRET_KEY));
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(&mut d, "READY=1", Duration::from_secs(20), || {
        notify.count("READY=1") == 1
    })
    .await;

    // The closing quote forgotten on the rotated key's line.
    let mut typo = static_keys(NEW_SECRET);
    typo.s3 = typo.s3.trim_end_matches('"').to_string();
    let line = reload_refused(&mut d, &f, &cfg, &typo).await;
    assert!(
        line.contains("secret_access_key") && line.contains("line "),
        "says where: {line}"
    );
    let log = d.stderr();
    for secret in [NEW_SECRET, "wJalrXUtnFEMI", common::s3::TEST_SECRET_KEY] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    assert!(d.running(), "the agent keeps running");
    let (code, _) = d.terminate().await;
    assert_eq!(code, Some(0));
    let log = d_stderr(&f);
    assert!(!log.contains(NEW_SECRET), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_that_only_rotates_the_s3_secret_is_applied() {
    const OLD_SECRET: &str = "revoked-secret-the-store-no-longer-knows";
    let f = Fleet::start(20, 10_000).await;
    let events = f.event_clips();
    // The store knows only the test key's secret: the agent starts with a revoked one.
    let cfg = f.write_config(&static_keys(OLD_SECRET));
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(
        &mut d,
        "uploads paused: refused for their signature (HTTP 403)",
        Duration::from_secs(30),
        || d_stderr(&f).contains("uploads paused"),
    )
    .await;
    assert!(
        keys(&f).is_empty(),
        "nothing uploaded with the revoked secret"
    );

    // Only the secret changes.
    f.write_config(&static_keys(common::s3::TEST_SECRET_KEY));
    d.signal("-HUP");
    poll(
        &mut d,
        "every event clip in the bucket with the rotated secret",
        Duration::from_secs(60),
        || keys(&f) == want_keys(&f, &events),
    )
    .await;
    let log = d.stderr();
    let reloads = [the_reload_line(&log)];
    assert!(reloads[0].contains("changed s3"), "{}", reloads[0]);
    for secret in [OLD_SECRET, common::s3::TEST_SECRET_KEY] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
    let (code, _) = d.terminate().await;
    assert_eq!(code, Some(0));
}

// ---------------------------------------------------------------------------------------------
// The watchdog is fed only while the agent progresses or idles by design

/// A 127.0.0.1 listener that accepts every connection and holds it in silence: a camera
/// that answers nothing, with `idle_timeout = "1h"` a call that never returns.
fn silent_listener() -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    (url, t)
}

/// WATCHDOG=1 pings seen over `span` (WATCHDOG_USEC=2 s: one a second when fed).
async fn pings_over(notify: &NotifySocket, span: Duration) -> usize {
    let before = notify.count("WATCHDOG=1");
    tokio::time::sleep(span).await;
    notify.count("WATCHDOG=1") - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_idle_agent_keeps_feeding_the_watchdog() {
    // Nothing to offload: the camera loop only sleeps out its poll interval between passes.
    let f = Fleet::start(0, 1_000).await;
    let cfg = f.write_config(&Knobs::default());
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(&mut d, "READY=1", Duration::from_secs(30), || {
        notify.count("READY=1") >= 1
    })
    .await;
    let n = pings_over(&notify, Duration::from_secs(5)).await;
    assert!(
        n >= 3,
        "{n} pings in 5 s from an idle agent\n{}",
        d.stderr()
    );
    assert!(d.running(), "{}", d.stderr());
    assert!(
        !d.stderr().contains("not feeding the watchdog"),
        "{}",
        d.stderr()
    );
    let (code, _) = d.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_loop_stops_the_watchdog_pings() {
    // The camera accepts and never answers, and the config lets a reply take an hour: the
    // pass is stuck in its first call, busy and silent.
    let f = Fleet::start(1, 1_000).await;
    let (silent, _t) = silent_listener();
    let text = f
        .config_text(&Knobs::default())
        .replace(&f.sim.url(), &silent)
        .replace("idle_timeout = \"2s\"", "idle_timeout = \"1h\"");
    assert!(text.contains(&silent) && text.contains("\"1h\""));
    let cfg = f.dir.path().join("wedged.toml");
    std::fs::write(&cfg, text).expect("write config");
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(
        &mut d,
        "the watchdog starved",
        Duration::from_secs(30),
        || d_stderr(&f).contains("not feeding the watchdog"),
    )
    .await;
    let n = pings_over(&notify, Duration::from_secs(4)).await;
    assert_eq!(n, 0, "pings while wedged\n{}", d.stderr());
    assert!(d.running(), "{}", d.stderr());
    // What systemd does next (a SIGTERM does not cut a camera call short: the pass is
    // stuck in it, which is the point).
    d.child.kill().expect("kill the wedged daemon");
    let _ = d.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_answers_slowly_keeps_the_watchdog_fed() {
    // The camera's reply comes a slice every 250 ms (under the 2 s idle timeout), 5 s for
    // the whole reply: more than twice the 2 s watchdog window, inside the 60 s a call may
    // take. Every reply is device info, so each pass reads it slowly for the identity
    // check, then fails on a listing that is not one, and the next pass starts after the
    // 1 s poll interval: the agent is busy most of the time, and progressing.
    let f = Fleet::start(0, 1_000).await;
    let info = reqwest::get(format!("{}/device/get_device_info", f.sim.url()))
        .await
        .expect("device info from the simulator")
        .bytes()
        .await
        .expect("its body");
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        info.len()
    )
    .into_bytes();
    reply.extend_from_slice(&info);
    let slow = common::sim::RawServer::start_paced(reply, 20, Duration::from_millis(250));
    let text = f
        .config_text(&Knobs::default())
        .replace(&f.sim.url(), &slow.url());
    let cfg = f.dir.path().join("slow.toml");
    std::fs::write(&cfg, text).expect("write config");
    let notify = NotifySocket::bind(f.dir.path());
    let mut d = Daemon::spawn(&f, &cfg, &notify);
    poll(&mut d, "READY=1", Duration::from_secs(30), || {
        notify.count("READY=1") >= 1
    })
    .await;
    // Two slow replies (one pass) at least, over several watchdog windows.
    poll(&mut d, "two slow replies", Duration::from_secs(30), || {
        slow.requests().len() >= 2
    })
    .await;
    let n = pings_over(&notify, Duration::from_secs(6)).await;
    assert!(n >= 4, "{n} pings in 6 s\n{}", d.stderr());
    assert!(
        !d.stderr().contains("not feeding the watchdog"),
        "a slow camera starved the watchdog\n{}",
        d.stderr()
    );
    assert!(slow.requests().len() >= 3, "{}", d.stderr());
    let (code, _) = d.terminate().await;
    assert_eq!(code, Some(0), "{}", d_stderr(&f));
}

/// The one "config reloaded (SIGHUP)" line of `log` (a reload says what changed in one line).
fn the_reload_line(log: &str) -> &str {
    let reloads: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("config reloaded (SIGHUP)"))
        .collect();
    assert_eq!(reloads.len(), 1, "one line for the reload:\n{log}");
    reloads[0]
}
