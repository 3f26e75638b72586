//! The `qucam-offload` command line as a process: `camera …` against the simulator on
//! 127.0.0.1 (served from a runtime kept alive by the test while the child runs), config
//! errors, and `status` on an empty state dir.

mod common;

use std::path::Path;

use assert_cmd::Command;
use common::sim::{
    FIXTURE, FIXTURE_NEWEST_FIRST, SIM_IMEI, SIM_PASSWORD, SimRuntime, write_config,
    write_config_text,
};
use qucam_sim::{Faults, VIDEO_ROOT};
use serde_json::Value;

const CLIENT_ID: &str = "cli-test";

/// The binary with a clean environment: no config from the environment, and HOME/XDG dirs
/// in `home` so nothing is read from or written to the real user's directories.
fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qucam-offload"));
    c.env_remove("QUCAM_OFFLOAD_CONFIG")
        .env_remove("RUST_LOG")
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .current_dir(home)
        .timeout(std::time::Duration::from_secs(60));
    c
}

/// `qucam-offload camera --url URL --client-id cli-test ARGS…`
fn camera(home: &Path, url: &str, args: &[&str]) -> Command {
    let mut c = bin(home);
    c.args(["camera", "--url", url, "--client-id", CLIENT_ID])
        .args(args);
    c
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(mut c: Command) -> Out {
    let o = c.output().expect("run qucam-offload");
    Out {
        code: o.status.code().expect("exit code (not killed by a signal)"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(c: Command) -> Out {
    let o = run(c);
    assert_eq!(o.code, 0, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    o
}

fn json(c: Command) -> Value {
    let o = ok(c);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

fn assert_clean_failure(o: &Out, code: i32, needle: &str) {
    assert_eq!(o.code, code, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", o.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", lines[0]);
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    assert!(
        !o.stderr.to_lowercase().contains("backtrace"),
        "{}",
        o.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// camera info / files

#[test]
fn info_masks_the_password_unless_asked() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();

    let o = ok(camera(home.path(), &s.url(), &["info"]));
    assert!(
        o.stdout.contains(&format!("imei          {SIM_IMEI}")),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("device        CV200"), "{}", o.stdout);
    assert!(o.stdout.contains("password      ********"), "{}", o.stdout);
    assert!(!o.stdout.contains(SIM_PASSWORD), "{}", o.stdout);
    assert!(!o.stderr.contains(SIM_PASSWORD), "{}", o.stderr);

    let o = ok(camera(home.path(), &s.url(), &["info", "--show-password"]));
    assert!(
        o.stdout.contains(&format!("password      {SIM_PASSWORD}")),
        "{}",
        o.stdout
    );

    let v = json(camera(home.path(), &s.url(), &["info", "--json"]));
    assert_eq!(v["imei"], SIM_IMEI);
    assert_eq!(v["password"], "********");
    assert_eq!(v["preview"]["preview_camera_id"], -1);
    let v = json(camera(
        home.path(),
        &s.url(),
        &["--json", "info", "--show-password"],
    ));
    assert_eq!(v["password"], SIM_PASSWORD);

    let reqs = s.sim().requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter()
            .all(|r| r.client_id.as_deref() == Some(CLIENT_ID))
    );
}

#[test]
fn camera_info_and_files_print_a_hostile_cameras_strings_clean() {
    let hostile = "CV200\nimei          000000000000000\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}";
    let info = serde_json::json!({
        "data": serde_json::json!({
            "imei": SIM_IMEI, "device_name": hostile, "application_version": hostile,
            "ssid": hostile, "signal": hostile,
        })
        .to_string(),
        "errorCode": 200,
        "isSuccess": true,
    });
    let listing = serde_json::json!({
        "data": [{"name": hostile, "path": format!("/sd/{hostile}"), "size": 1}],
        "errorCode": 200,
        "isSuccess": true,
    });
    let s = SimRuntime::fixture(Faults {
        device_info_override: Some(info.to_string()),
        listing_override: Some(listing.to_string()),
        ..Faults::default()
    });
    let home = tempfile::tempdir().unwrap();
    let info = ok(camera(home.path(), &s.url(), &["info"]));
    let files = ok(camera(home.path(), &s.url(), &["files"]));
    for (o, lines) in [(&info, 8), (&files, 3)] {
        assert_eq!(o.stdout.lines().count(), lines, "{}", o.stdout);
        assert!(
            !o.stdout
                .chars()
                .any(|c| c != '\n' && (c.is_control() || c == '\u{202e}')),
            "{:?}",
            o.stdout
        );
        assert!(o.stdout.contains("CV200\u{fffd}imei"), "{}", o.stdout);
    }
    assert_eq!(
        info.stdout
            .lines()
            .filter(|l| l.starts_with("imei"))
            .count(),
        1,
        "one imei line: {}",
        info.stdout
    );
}

#[test]
fn the_default_client_id_is_kept_between_runs() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let mut c = bin(home.path());
        c.args(["camera", "--url", &s.url(), "info"]);
        ok(c);
    }
    let ids: Vec<Option<String>> = s
        .sim()
        .requests()
        .into_iter()
        .map(|r| r.client_id)
        .collect();
    assert_eq!(ids.len(), 2);
    let id = ids[0].clone().expect("a clientId header");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(
        ids[1].as_deref(),
        Some(id.as_str()),
        "same id on the second run"
    );
    let kept = std::fs::read_to_string(home.path().join("data/qucam-offload/client-id")).unwrap();
    assert_eq!(kept.trim(), id);
}

#[test]
fn files_json_parses_and_filters() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();

    let v = json(camera(home.path(), &s.url(), &["files", "--json"]));
    let list = v.as_array().expect("a JSON array");
    let names: Vec<&str> = list.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, FIXTURE_NEWEST_FIRST);
    for e in list {
        let name = e["name"].as_str().unwrap();
        let size = FIXTURE.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(e["size"], size as u64, "{name}");
        assert!(e["path"].as_str().unwrap().starts_with(VIDEO_ROOT));
        assert!(e["path"].as_str().unwrap().ends_with(name));
    }

    let v = json(camera(
        home.path(),
        &s.url(),
        &["files", "--json", "--event", "04", "--camera", "front"],
    ));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["20240302_090000_04_1.mp4"]);

    let v = json(camera(
        home.path(),
        &s.url(),
        &[
            "files",
            "--json",
            "--from",
            "20240301000000",
            "--to",
            "20240301235959",
        ],
    ));
    assert_eq!(v.as_array().unwrap().len(), 3);

    // Text output: a header, one line per clip, a count.
    let o = ok(camera(home.path(), &s.url(), &["files"]));
    assert!(o.stdout.contains("6 clip(s)"), "{}", o.stdout);
    assert!(o.stdout.contains(FIXTURE_NEWEST_FIRST[0]));

    // A bad event code or time is a usage error, and nothing is asked of the camera.
    let before = s.sim().requests().len();
    let o = run(camera(home.path(), &s.url(), &["files", "--event", "99"]));
    assert_clean_failure(&o, 2, "99");
    let o = run(camera(
        home.path(),
        &s.url(),
        &["files", "--from", "yesterday"],
    ));
    assert_clean_failure(&o, 2, "yesterday");
    assert_eq!(s.sim().requests().len(), before);
}

#[test]
fn files_all_pages_through_the_listing() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    // Query-string parameters, so the simulator's request log shows the paging.
    let v = json(camera(
        home.path(),
        &s.url(),
        &[
            "--params", "query", "files", "--all", "--count", "4", "--json",
        ],
    ));
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, FIXTURE_NEWEST_FIRST, "both pages, in order");
    let queries: Vec<String> =
        s.t.api_requests("/device/get_video_files_info")
            .into_iter()
            .map(|r| r.query.unwrap_or_default())
            .collect();
    assert_eq!(queries.len(), 2, "{queries:?}");
    assert!(queries[0].contains("count=4") && queries[0].contains("offset=0"));
    assert!(queries[1].contains("count=4") && queries[1].contains("offset=4"));

    // Without --all, one page only.
    let v = json(camera(
        home.path(),
        &s.url(),
        &["files", "--count", "4", "--json"],
    ));
    assert_eq!(v.as_array().unwrap().len(), 4);
}

// ---------------------------------------------------------------------------------------------
// camera download / delete / thumbnail / format-sd

#[test]
fn download_writes_the_bytes_and_resumes_a_partial_file() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    let clip = s.t.clip("20240302_080000_04_2.ts").clone();
    let out = home.path().join("clip.ts");
    let out_s = out.to_str().unwrap();

    let o = ok(camera(
        home.path(),
        &s.url(),
        &["download", &clip.camera_path, "-o", out_s],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), clip.content);
    assert!(o.stdout.contains(&clip.sha256_hex()), "{}", o.stdout);
    assert_eq!(s.t.download_requests().pop().unwrap().range, None);

    // The first half already there.
    let half = clip.content.len() / 2;
    std::fs::write(&out, &clip.content[..half]).unwrap();
    let o = ok(camera(
        home.path(),
        &s.url(),
        &["download", &clip.camera_path, "-o", out_s],
    ));
    assert_eq!(std::fs::read(&out).unwrap(), clip.content);
    assert!(
        o.stdout.contains(&format!("resumed from byte {half}")),
        "{}",
        o.stdout
    );
    let last = s.t.download_requests().pop().unwrap();
    assert_eq!(last.range, Some(format!("bytes={half}-")));
    assert_eq!(last.status, 206);
    assert_eq!(last.body_bytes, clip.size() - half as u64);

    // --json reports the same, and without -o the clip's own name is used (in the cwd).
    let v = json(camera(
        home.path(),
        &s.url(),
        &["download", &clip.camera_path, "--json"],
    ));
    assert_eq!(v["sha256"], clip.sha256_hex());
    assert_eq!(v["size"], clip.size());
    assert_eq!(
        std::fs::read(home.path().join(&clip.name)).unwrap(),
        clip.content
    );
}

#[test]
fn download_of_a_missing_clip_fails_with_exit_1() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    let path = format!("{VIDEO_ROOT}/20200101/00/20200101_000000_00_1.mp4");
    let out = home.path().join("x.mp4");
    let o = run(camera(
        home.path(),
        &s.url(),
        &["download", &path, "-o", out.to_str().unwrap()],
    ));
    assert_clean_failure(&o, 1, "404");
    assert!(!out.exists(), "a failed download leaves no empty file");
    // A path with `..` never reaches the camera.
    let before = s.sim().requests().len();
    let bad = format!("{VIDEO_ROOT}/../x/20200101_000000_00_1.mp4");
    let o = run(camera(
        home.path(),
        &s.url(),
        &["download", &bad, "-o", out.to_str().unwrap()],
    ));
    assert_clean_failure(&o, 1, "invalid camera path");
    assert_eq!(s.sim().requests().len(), before);
    assert!(!out.exists(), "a refused path creates no file");
}

#[test]
fn delete_removes_the_named_clips() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    let a = s.t.clip("20240301_100000_00_1.mp4").clone();
    let b = s.t.clip("20240229_235959_00_1.mp4").clone();
    let o = ok(camera(
        home.path(),
        &s.url(),
        &["delete", &a.camera_path, &b.camera_path],
    ));
    assert!(o.stdout.contains("deleted 2 clip(s)"), "{}", o.stdout);
    assert_eq!(s.sim().deletes(), [a.camera_path.clone(), b.camera_path]);
    assert!(!a.file.exists() && !b.file.exists());
    assert_eq!(s.t.clips_on_disk().len(), FIXTURE.len() - 2);

    // No path: a usage error from the argument parser.
    let o = run(camera(home.path(), &s.url(), &["delete"]));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(s.sim().deletes().len(), 2);
}

#[test]
fn thumbnail_is_saved() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    let clip = s.t.clip("20240301_100100_0A_1.mp4").clone();
    let out = home.path().join("thumb.jpg");
    let o = ok(camera(
        home.path(),
        &s.url(),
        &["thumbnail", &clip.camera_path, "-o", out.to_str().unwrap()],
    ));
    let img = std::fs::read(&out).unwrap();
    assert_eq!(&img[..2], &[0xFF, 0xD8]);
    assert_eq!(&img[img.len() - 2..], &[0xFF, 0xD9]);
    assert!(
        o.stdout.contains(&format!("{} bytes", img.len())),
        "{}",
        o.stdout
    );
}

#[test]
fn format_sd_needs_yes() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();

    let o = run(camera(home.path(), &s.url(), &["format-sd"]));
    assert_clean_failure(&o, 2, "--yes");
    assert!(
        s.t.api_requests("/device/format_sdcard").is_empty(),
        "nothing was sent"
    );
    assert_eq!(s.t.clips_on_disk().len(), FIXTURE.len(), "nothing deleted");

    let o = ok(camera(home.path(), &s.url(), &["format-sd", "--yes"]));
    assert!(o.stdout.contains("Formatted"), "{}", o.stdout);
    assert_eq!(s.t.api_requests("/device/format_sdcard").len(), 1);
    assert!(s.t.clips_on_disk().is_empty(), "{:?}", s.t.clips_on_disk());
}

// ---------------------------------------------------------------------------------------------
// camera rtmp / calibrate / calibration-params

#[test]
fn rtmp_start_and_stop() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();
    let url = "rtmp://127.0.0.1:1935/live/cab";
    let o = ok(camera(
        home.path(),
        &s.url(),
        &["rtmp", "start", url, "--camera", "interior"],
    ));
    assert_eq!(o.stdout.trim(), "ok");
    assert_eq!(
        s.sim().rtmp_state(),
        (true, url.to_string(), "1".to_string())
    );

    ok(camera(home.path(), &s.url(), &["rtmp", "stop"]));
    assert!(!s.sim().rtmp_state().0, "{:?}", s.sim().rtmp_state());

    ok(camera(
        home.path(),
        &s.url(),
        &["rtmp", "start", url, "--camera", "front"],
    ));
    assert_eq!(
        s.sim().rtmp_state(),
        (true, url.to_string(), "0".to_string())
    );
}

#[test]
fn calibrate_and_read_back_the_params() {
    let s = SimRuntime::fixture(Faults::default());
    let home = tempfile::tempdir().unwrap();

    let o = ok(camera(
        home.path(),
        &s.url(),
        &["calibrate", "adas", "--values", "1|2|3|4|5|6|7"],
    ));
    assert_eq!(o.stdout.trim(), "Successful");
    let cal = s.sim().calibration();
    assert_eq!(cal.adas, Some(1));
    assert_eq!(cal.adas_params, "1|2|3|4|5|6|7");

    ok(camera(
        home.path(),
        &s.url(),
        &["calibrate", "adas", "--values", "250|-4|182|131|96|112|71"],
    ));
    assert_eq!(
        s.sim().calibration().adas_params,
        "250|-4|182|131|96|112|71"
    );

    let o = ok(camera(home.path(), &s.url(), &["calibration-params"]));
    assert!(
        o.stdout.contains("horizon               250"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("car middle            -4"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("camera to left wheel  71"),
        "{}",
        o.stdout
    );
    let v = json(camera(
        home.path(),
        &s.url(),
        &["calibration-params", "--json"],
    ));
    assert_eq!(v["horizon"], 250.0);
    assert_eq!(v["camera_to_left_wheel"], 71.0);

    let o = ok(camera(
        home.path(),
        &s.url(),
        &["calibrate", "dms", "--failed"],
    ));
    assert_eq!(o.stdout.trim(), "Failed");
    assert_eq!(s.sim().calibration().dms, Some(0));

    // Not seven numbers: refused before anything is sent.
    let before = s.sim().requests().len();
    let o = run(camera(
        home.path(),
        &s.url(),
        &["calibrate", "adas", "--values", "1|2|3"],
    ));
    assert_clean_failure(&o, 2, "--values");
    assert_eq!(s.sim().requests().len(), before);
}

// ---------------------------------------------------------------------------------------------
// camera via the config file

#[test]
fn camera_commands_use_the_configured_camera() {
    let s = SimRuntime::fixture(Faults {
        require_client_id: true,
        ..Faults::default()
    });
    let home = tempfile::tempdir().unwrap();
    let cfg = write_config(home.path(), &s.url(), "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "name = \"truck\"\n",
        "name = \"truck\"\nclient_id = \"from-config\"\nparams = \"query\"\n",
    );
    write_config_text(home.path(), &text);

    let mut c = bin(home.path());
    c.args([
        "--config",
        cfg.to_str().unwrap(),
        "camera",
        "files",
        "--json",
    ]);
    let v = json(c);
    assert_eq!(v.as_array().unwrap().len(), FIXTURE.len());
    let r =
        s.t.api_requests("/device/get_video_files_info")
            .pop()
            .unwrap();
    assert_eq!(r.client_id.as_deref(), Some("from-config"));
    assert!(r.query.is_some(), "params = \"query\" was used");

    // An unknown camera name is a usage error.
    let mut c = bin(home.path());
    c.args([
        "-c",
        cfg.to_str().unwrap(),
        "camera",
        "--name",
        "van",
        "info",
    ]);
    assert_clean_failure(&run(c), 2, "van");
}

#[test]
fn an_absent_camera_is_a_clean_error() {
    let home = tempfile::tempdir().unwrap();
    // Held until the end: a released port could be given to another test's server.
    let (_closed, addr) = common::sim::refusing_addr();
    let o = run(camera(home.path(), &format!("http://{addr}"), &["info"]));
    assert_clean_failure(&o, 1, "unreachable");
    let o = run(camera(home.path(), "ftp://127.0.0.1:1", &["info"]));
    assert_clean_failure(&o, 2, "ftp://127.0.0.1:1");
}

// ---------------------------------------------------------------------------------------------
// Config errors and status

#[test]
fn config_errors_exit_2_with_one_line_naming_the_key() {
    let home = tempfile::tempdir().unwrap();
    let good = |extra: &str| {
        format!(
            "state_dir = {:?}\n[[camera]]\nname = \"t\"\nurl = \"http://127.0.0.1:2345\"\n[s3]\nbucket = \"b\"\n{extra}",
            home.path().join("state").display().to_string()
        )
    };
    // The good base loads (so each case below fails for its own reason).
    let cfg = write_config_text(home.path(), &good(""));
    let mut c = bin(home.path());
    c.args(["--config", cfg.to_str().unwrap(), "status"]);
    ok(c);

    let cases: Vec<(String, &str)> = vec![
        (good("[sync]\npol_interval = \"3s\"\n"), "pol_interval"),
        (
            good("[sync]\npoll_interval = \"soon\"\n"),
            "sync.poll_interval",
        ),
        (
            good("").replace("http://127.0.0.1:2345", "ftp://camera"),
            "camera[0].url",
        ),
        (
            good("").replace("bucket = \"b\"", "prefix = \"p\""),
            "s3.bucket",
        ),
        (
            good(
                "[[camera]]\nname = \"u\"\nurl = \"http://127.0.0.1:1\"\nidle_timeout = \"5 fortnights later\"\n",
            ),
            "camera[1].idle_timeout",
        ),
        (good("[spool]\nmax_bytes = \"lots\"\n"), "spool.max_bytes"),
    ];
    for (text, key) in cases {
        let cfg = write_config_text(home.path(), &text);
        let mut c = bin(home.path());
        c.env("RUST_BACKTRACE", "1")
            .args(["--config", cfg.to_str().unwrap(), "status"]);
        let o = run(c);
        assert_clean_failure(&o, 2, key);
        assert!(o.stdout.is_empty(), "{}", o.stdout);
        assert!(
            o.stderr.contains("config.toml"),
            "names the file: {}",
            o.stderr
        );
    }

    // A missing file: exit 2, one line naming it.
    let missing = home.path().join("nope.toml");
    let mut c = bin(home.path());
    c.env("RUST_BACKTRACE", "1")
        .args(["--config", missing.to_str().unwrap(), "status"]);
    assert_clean_failure(&run(c), 2, "nope.toml");

    // The same through the environment variable, and for `camera` without --url.
    let mut c = bin(home.path());
    c.env("QUCAM_OFFLOAD_CONFIG", &missing)
        .args(["camera", "info"]);
    assert_clean_failure(&run(c), 2, "nope.toml");

    // Not TOML at all.
    let cfg = write_config_text(home.path(), "this is = = not toml");
    let mut c = bin(home.path());
    c.args(["--config", cfg.to_str().unwrap(), "status"]);
    let o = run(c);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}

/// No config error quotes a secret, at the start of `run`, `run --once` or `doctor`: a TOML
/// syntax error on the `secret_access_key` line (the parser's own message quotes the line),
/// a secret of the wrong type (serde quotes the value), and an invalid webhook URL whose
/// credentials, path token and query key must not be echoed.
#[test]
fn config_errors_never_quote_a_secret() {
    const SECRET: &str = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";
    let home = tempfile::tempdir().unwrap();
    let base = |s3: &str, rest: &str| {
        format!(
            "state_dir = {:?}\n[[camera]]\nname = \"t\"\nurl = \"http://127.0.0.1:2345\"\n[s3]\nbucket = \"b\"\naccess_key_id = \"AKIAEXAMPLE\"\n{s3}\n{rest}",
            home.path().join("state").display().to_string()
        )
    };
    let hook = "https://user:pw@hooks.example.invalid:99999/T0KEN?key=abc";
    let cases = [
        (
            base(&format!("secret_access_key = \"{SECRET}"), ""),
            "secret_access_key",
            vec![SECRET, "EXAMPLEKEY"],
        ),
        (
            base(&format!("secret_access_key = {SECRET}"), ""),
            "secret_access_key",
            vec![SECRET, "EXAMPLEKEY"],
        ),
        (
            base("secret_access_key = 982451653982451653", ""),
            "s3.secret_access_key",
            vec!["982451653"],
        ),
        (
            base(
                &format!("secret_access_key = \"{SECRET}\""),
                &format!("[notify]\nwebhook = \"{hook}\"\n"),
            ),
            "notify.webhook",
            vec![SECRET, "pw", "T0KEN", "key=abc", "user"],
        ),
    ];
    for (text, key, leaks) in &cases {
        let cfg = write_config_text(home.path(), text);
        for args in [&["run", "--once"][..], &["run"], &["doctor"]] {
            let mut c = bin(home.path());
            c.env("RUST_BACKTRACE", "1")
                .args(["--config", cfg.to_str().unwrap()])
                .args(args);
            let o = run(c);
            assert_clean_failure(&o, 2, key);
            let all = format!("{}{}", o.stdout, o.stderr);
            for leak in leaks {
                assert!(!all.contains(leak), "{args:?}: {leak:?} shown in:\n{all}");
            }
        }
    }
}

/// `doctor` shows a camera URL without its userinfo, path and query.
#[test]
fn doctor_shows_the_camera_url_without_credentials() {
    let home = tempfile::tempdir().unwrap();
    let (_closed_cam, cam_addr) = common::sim::refusing_addr();
    let cfg = write_config_text(
        home.path(),
        &format!(
            "state_dir = {:?}\n[[camera]]\nname = \"t\"\nurl = \"http://us3r:Pa55w0rd@{cam_addr}/T0KEN?key=abc\"\nconnect_timeout = \"1s\"\n[local]\ndir = {:?}\n",
            home.path().join("state").display().to_string(),
            home.path().join("out").display().to_string()
        ),
    );
    let mut c = bin(home.path());
    c.args(["--config", cfg.to_str().unwrap(), "doctor"]);
    let o = run(c);
    assert_eq!(o.code, 1, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
    let all = format!("{}{}", o.stdout, o.stderr);
    assert!(
        all.contains(&format!("not reachable at http://…@{cam_addr}/…")),
        "{all}"
    );
    // (Secrets no temporary directory name can hold by chance.)
    for leak in ["Pa55w0rd", "T0KEN", "key=abc", "us3r"] {
        assert!(!all.contains(leak), "{leak:?} shown in:\n{all}");
    }
}

#[test]
fn status_on_an_empty_state_dir() {
    let home = tempfile::tempdir().unwrap();
    let cfg = write_config(home.path(), "http://127.0.0.1:2345", "");
    let mut c = bin(home.path());
    c.args(["--config", cfg.to_str().unwrap(), "status"]);
    let o = ok(c);
    assert!(o.stdout.contains("no state yet"), "{}", o.stdout);
    assert!(o.stderr.is_empty(), "{}", o.stderr);

    let mut c = bin(home.path());
    c.args(["--config", cfg.to_str().unwrap(), "status", "--json"]);
    assert_eq!(json(c), serde_json::json!([]));
    // `status` only reads: no database was created.
    assert!(!home.path().join("state/state.db").exists());
}

// ---------------------------------------------------------------------------------------------
// Errors read as sentences

/// `doctor` names S3 failures in readable words, not the SDK's `Debug` dumps: missing
/// credentials (`ProviderError(ProviderError { … `) and a refused connection
/// (`DispatchFailure(DispatchFailure { source: ConnectorError { … `).
#[test]
fn doctor_shows_s3_errors_as_readable_lines() {
    let home = tempfile::tempdir().unwrap();
    // Held until the end: nothing listens on either address.
    let (_closed_s3, s3_addr) = common::sim::refusing_addr();
    let (_closed_cam, cam_addr) = common::sim::refusing_addr();
    let cfg = write_config_text(
        home.path(),
        &format!(
            "state_dir = {:?}\n[[camera]]\nname = \"t\"\nurl = \"http://{cam_addr}\"\n[s3]\nbucket = \"b\"\nregion = \"us-east-1\"\nendpoint = \"http://{s3_addr}\"\nforce_path_style = true\n",
            home.path().join("state").display().to_string()
        ),
    );
    let doctor = |creds: bool| {
        let mut c = bin(home.path());
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            c.env_remove(var);
        }
        c.env("AWS_EC2_METADATA_DISABLED", "true")
            .env("NO_PROXY", "127.0.0.1")
            .args(["--config", cfg.to_str().unwrap(), "doctor"]);
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "AKIATEST")
                .env("AWS_SECRET_ACCESS_KEY", "test-secret");
        }
        let o = run(c);
        assert_eq!(o.code, 1, "stdout: {}\nstderr: {}", o.stdout, o.stderr);
        let all = format!("{}{}", o.stdout, o.stderr);
        for dump in [
            "DispatchFailure(",
            "ProviderError(",
            "ConnectorError {",
            " { source",
        ] {
            assert!(!all.contains(dump), "{dump:?} in:\n{all}");
        }
        o.stdout
    };

    let out = doctor(false);
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("s3 credentials"))
        .unwrap_or_else(|| panic!("no credentials failure in:\n{out}"));
    assert!(line.len() > "FAIL  s3 credentials".len() + 10, "{line}");

    let out = doctor(true);
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains("s3 bucket"))
        .unwrap_or_else(|| panic!("no bucket failure in:\n{out}"));
    assert!(line.contains("HeadBucket"), "{line}");
    assert!(
        line.to_lowercase().contains("refused") || line.contains("io error"),
        "{line}"
    );
}

#[test]
fn demo_offloads_and_says_so_without_a_terminal() {
    // The README's quick start, as a process whose stderr is a pipe: no bars, one progress
    // line per camera when its pass ends (from the store), and the status table.
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("demo");
    let mut c = bin(home.path());
    c.args(["demo", "--clips", "6", "--size", "100000", "--dir"])
        .arg(&dir);
    let o = ok(c);
    // The demo's seed makes 4 event clips among the 6.
    assert!(
        o.stderr
            .contains("progress: 4 of 4 selected clips offloaded this run (0.4 MB), done"),
        "{}",
        o.stderr
    );
    assert!(o.stdout.contains("demo-truck"), "{}", o.stdout);
}
