//! The real `qucam-offload` binary against a hostile camera (the simulator on 127.0.0.1):
//! a 60 MB device-info reply costs the agent a clear error and no memory to speak of (its
//! peak RSS, `VmHWM`, read while the daemon still runs), and a refusal whose text carries
//! line breaks and terminal escapes never reaches stderr raw: no forged log line, no
//! escape sequence.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fleet::{Fleet, Knobs};

const BIN: &str = env!("CARGO_BIN_EXE_qucam-offload");
/// The hostile device-info reply's size.
const DEVICE_INFO_BYTES: usize = 60_000_000;
/// The most peak RSS the daemon may reach with it (its own baseline included).
const MAX_PEAK_KIB: u64 = 100 * 1024;

/// `qucam-offload -c CONFIG ARGS…` with the fleet's clean environment, stderr to a file.
fn spawn(f: &Fleet, args: &[&str], label: &str) -> (tokio::process::Child, PathBuf) {
    let cfg = f.write_config(&Knobs::default());
    let stderr = f.dir.path().join(format!("{label}.stderr"));
    let child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs(f.child_env())
        .current_dir(f.child_home())
        .arg("-c")
        .arg(&cfg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn qucam-offload");
    (child, stderr)
}

/// A device-info reply of about `bytes` bytes: a real IMEI, then a long array of zeros
/// (each a JSON value 16 times its 2 bytes once parsed whole).
fn device_info_bomb(bytes: usize) -> String {
    let mut zeros = String::with_capacity(bytes);
    zeros.push('0');
    while zeros.len() < bytes {
        zeros.push_str(",0");
    }
    format!(
        r#"{{"data":{{"imei":"{}","device_name":"CV200","x":[{zeros}]}},"errorCode":200,"isSuccess":true}}"#,
        common::fleet::IMEI
    )
}

/// The peak resident set of a running process, KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in the child's status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60_mb_device_info_reply_is_a_clear_error_and_costs_the_daemon_no_memory() {
    let f = Fleet::start(1, 1000).await;
    let bomb = device_info_bomb(DEVICE_INFO_BYTES);
    f.sim.set_faults(|x| x.device_info_override = Some(bomb));
    let (mut child, stderr) = spawn(&f, &["run"], "daemon");
    let pid = child.id().expect("running");
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        if log.contains("get_device_info") {
            break log;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "the daemon exited:\n{log}"
        );
        assert!(
            Instant::now() < deadline,
            "no error naming get_device_info after 60 s (peak RSS {} KiB):\n{log}",
            vm_hwm_kib(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let peak = vm_hwm_kib(pid);
    child.kill().await.expect("stop the daemon");
    println!("60 MB device-info reply: daemon peak RSS {peak} KiB");
    assert!(
        log.contains("larger than its limit of 65536 bytes"),
        "the error names the limit:\n{log}"
    );
    assert!(
        peak < MAX_PEAK_KIB,
        "peak RSS {peak} KiB with a {DEVICE_INFO_BYTES}-byte device-info reply"
    );
    assert!(f.states().is_empty(), "nothing listed behind a bomb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_with_line_breaks_and_escapes_forges_no_log_line() {
    let f = Fleet::start(1, 1000).await;
    // 2 MB of text: each piece would start a line of its own and paint the terminal red.
    let forged =
        "denied\nFORGED qucam_offload: clip verified\r\n\u{1b}[31mred\u{1b}]0;t\u{7}\u{9b}2J";
    let refusal = serde_json::json!({
        "isSuccess": false,
        "errorCode": 7,
        "data": forged.repeat(2_000_000 / forged.len()),
    })
    .to_string();
    f.sim.set_faults(|x| x.listing_override = Some(refusal));
    let (child, stderr) = spawn(&f, &["run", "--once"], "once");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("run --once ends")
        .expect("wait");
    let log = std::fs::read_to_string(&stderr).expect("stderr");
    assert_eq!(status.status.code(), Some(1), "{log}");
    assert!(log.contains("denied"), "the refusal is reported:\n{log}");
    let forged_lines = log.lines().filter(|l| l.starts_with("FORGED")).count();
    assert_eq!(forged_lines, 0, "forged log lines:\n{log}");
    assert!(
        !log.contains(['\u{1b}', '\u{7}', '\u{9b}', '\r']),
        "a control character from the camera reached stderr"
    );
    assert!(
        log.len() < 64 * 1024,
        "{} bytes of stderr from one refusal",
        log.len()
    );
}
