//! The configuration file: one TOML document, loaded and validated as a whole.
//!
//! Every key is parsed and checked even when no code uses it yet, so a typo never
//! goes unnoticed. A bad file produces one [`ConfigError`] naming the file, the key
//! and what is wrong; the CLI turns it into exit code 2.

mod file;
mod redact;
mod validate;
mod values;
mod wifi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qucam::ParamStyle;
use serde::Deserialize;

pub use file::exposed_secrets_warning;
pub use redact::redact_url;
use values::{de_bytes, de_duration, de_threshold};
pub use values::{parse_bytes, parse_duration};
pub use wifi::{WifiConfig, check_psk, check_ssid, normalize_bssid};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "QUCAM_OFFLOAD_CONFIG";

/// A configuration problem, always naming the file and (where there is one) the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "no config file given and none found at {default}: pass --config FILE or set {CONFIG_ENV}"
    )]
    NotFound { default: String },
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SQLite database and download spool. Default: the platform data dir.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default, rename = "camera")]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub sync: SyncConfig,
    #[serde(default)]
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub local: Option<LocalConfig>,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[wifi]`: depot Wi-Fi (Linux); `None` = off.
    #[serde(default)]
    pub wifi: Option<WifiConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub name: String,
    /// Optional only with `[wifi]`: then the hotspot address (`wifi.camera_url`).
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub params: ParamStyle,
    /// Connect timeout: how fast an absent camera is noticed.
    #[serde(default = "d_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// A download or reply that sends nothing for this long is abandoned.
    #[serde(default = "d_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// The camera's hotspot (`[wifi]`): SSID, BSSID (normalised `AA:BB:CC:DD:EE:FF`),
    /// WPA password and the IMEI expected behind it.
    #[serde(default)]
    pub ssid: Option<String>,
    #[serde(default)]
    pub bssid: Option<String>,
    #[serde(default)]
    pub password: Option<qucam::Secret>,
    #[serde(default)]
    pub imei: Option<String>,
    /// Reached only by joining its hotspot (no `url` was given; set by validation).
    #[serde(skip)]
    pub hotspot_only: bool,
}

/// Which clips are offloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClipSelection {
    /// Clips with an event code (not `00`).
    #[default]
    Events,
    /// Loop recordings too.
    All,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default = "d_poll", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    #[serde(default)]
    pub clips: ClipSelection,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub camera_type: String,
    #[serde(default = "d_page_size")]
    pub page_size: u32,
    /// A clip whose recording time is more recent than this may still be recording.
    #[serde(default = "d_stable_after", deserialize_with = "de_duration")]
    pub stable_after: Duration,
    /// Downloads running at once (per agent).
    #[serde(default = "d_one")]
    pub download_concurrency: usize,
    /// Uploads running at once (per agent).
    #[serde(default = "d_two")]
    pub upload_concurrency: usize,
    /// Attempts (each with backoff retries inside) before a clip is parked as failed.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// How long a failed clip waits before it is tried again.
    #[serde(default = "d_quiet", deserialize_with = "de_duration")]
    pub retry_after: Duration,
    /// How long `run --once` waits for a paused destination (S3 unreachable or refusing
    /// the agent) before it gives up and exits 1.
    #[serde(default = "d_destination_wait", deserialize_with = "de_duration")]
    pub destination_wait: Duration,
    /// Rows in final states untouched for this long leave the state database (what is
    /// kept: `docs/clip-lifecycle.md`, "Pruning"); zero: never.
    #[serde(default = "d_prune_after", deserialize_with = "de_duration")]
    pub prune_after: Duration,
    /// How far before the newest clip already known a windowed listing reaches back: the
    /// longest clip, an event's pre-roll and a DST fall-back must fit in it.
    #[serde(default = "d_window_margin", deserialize_with = "de_duration")]
    pub window_margin: Duration,
    /// How often a camera is listed in full between windowed listings; `"0s"`: every
    /// listing is a full one.
    #[serde(default = "d_full_listing_every", deserialize_with = "de_duration")]
    pub full_listing_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// Send SHA-256 checksums on every PUT and part (default).
    #[default]
    Sha256,
    /// Send checksums only where the API requires them (for S3-compatible stores
    /// that reject the SDK's default CRC32 headers).
    WhenRequired,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default)]
    pub checksum: ChecksumMode,
    /// `"auto"` (the default, `None`): multipart from 16 MiB unless the link is fast enough
    /// to send the clip in one PUT within seconds; a size: multipart from that size on.
    #[serde(default, deserialize_with = "de_threshold")]
    pub multipart_threshold: Option<u64>,
    #[serde(default = "d_part_size", deserialize_with = "de_bytes")]
    pub part_size: u64,
    #[serde(default = "d_part_conc")]
    pub part_concurrency: usize,
    /// Static credentials. Prefer the AWS chain (environment, profile, instance role);
    /// a file holding keys must be readable by the agent only (a warning says so).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<qucam::Secret>,
    /// How long a connect to the store may take.
    #[serde(default = "d_s3_connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// A request that sends and receives no bytes for this long fails (no limit on the
    /// length of a transfer that keeps moving).
    #[serde(default = "d_s3_stall_timeout", deserialize_with = "de_duration")]
    pub stall_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    pub dir: PathBuf,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeletePolicy {
    /// Delete verified clips from the camera (default).
    #[default]
    AfterUpload,
    /// Never delete anything from a camera.
    Never,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default)]
    pub delete_from_camera: DeletePolicy,
    #[serde(default, deserialize_with = "de_duration")]
    pub min_age_on_camera: Duration,
    #[serde(default)]
    pub keep_local: bool,
    /// Blocks of a clip read back from the camera right before its delete and compared with
    /// those downloaded (the delete challenge); 0 turns it off.
    #[serde(default = "d_challenge_blocks")]
    pub challenge_blocks: u32,
}

/// The most blocks the challenge reads per clip (1 MiB each).
pub const MAX_CHALLENGE_BLOCKS: u32 = 64;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Downloads pause while the spool holds this many bytes (0 = no cap).
    #[serde(default, deserialize_with = "de_bytes")]
    pub max_bytes: u64,
    /// Downloads pause while the spool's file system has less free space than this.
    #[serde(default = "d_min_free", deserialize_with = "de_bytes")]
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal when started by systemd with stderr connected to it (`JOURNAL_STREAM`),
    /// else stderr.
    #[default]
    Auto,
    Stderr,
    /// The systemd journal, with levels as priorities (stderr if its socket is absent).
    Journald,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "d_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub target: LogTarget,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub desktop: bool,
    #[serde(default)]
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

fn d_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn d_s3_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_s3_stall_timeout() -> Duration {
    Duration::from_secs(60)
}
fn d_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_poll() -> Duration {
    Duration::from_secs(30)
}
fn d_challenge_blocks() -> u32 {
    2
}

fn d_page_size() -> u32 {
    50
}
fn d_stable_after() -> Duration {
    Duration::from_secs(0)
}
fn d_one() -> usize {
    1
}
fn d_two() -> usize {
    2
}
fn d_attempts() -> u32 {
    5
}
fn d_destination_wait() -> Duration {
    Duration::from_secs(120)
}
fn d_window_margin() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn d_full_listing_every() -> Duration {
    Duration::from_secs(3 * 3600)
}
fn d_quiet() -> Duration {
    Duration::from_secs(600)
}
fn d_prune_after() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn d_part_size() -> u64 {
    8 * 1024 * 1024
}
fn d_part_conc() -> usize {
    4
}
fn d_min_free() -> u64 {
    256 * 1024 * 1024
}
fn d_level() -> String {
    "info".to_string()
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            poll_interval: d_poll(),
            clips: ClipSelection::default(),
            event_types: Vec::new(),
            camera_type: String::new(),
            page_size: d_page_size(),
            stable_after: d_stable_after(),
            download_concurrency: d_one(),
            upload_concurrency: d_two(),
            max_attempts: d_attempts(),
            retry_after: d_quiet(),
            destination_wait: d_destination_wait(),
            prune_after: d_prune_after(),
            window_margin: d_window_margin(),
            full_listing_every: d_full_listing_every(),
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delete_from_camera: DeletePolicy::default(),
            min_age_on_camera: Duration::ZERO,
            keep_local: false,
            challenge_blocks: d_challenge_blocks(),
        }
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 0,
            min_free_bytes: d_min_free(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: d_level(),
            format: LogFormat::default(),
            target: LogTarget::default(),
        }
    }
}

impl Config {
    /// The state directory: as configured, else the platform data dir.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        directories::ProjectDirs::from("", "", "qucam-offload")
            .map(|d| d.data_dir().to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/var/lib/qucam-offload"))
    }

    /// Finds a camera by name, or the only one when `name` is `None`.
    pub fn camera(&self, name: Option<&str>) -> Result<&CameraConfig, String> {
        match name {
            Some(n) => self.cameras.iter().find(|c| c.name == n).ok_or_else(|| {
                let names: Vec<&str> = self.cameras.iter().map(|c| c.name.as_str()).collect();
                format!(
                    "no camera named {n:?} in the config (have: {})",
                    names.join(", ")
                )
            }),
            None => match self.cameras.as_slice() {
                [one] => Ok(one),
                [] => Err("the config has no [[camera]]".into()),
                _ => Err("the config has several cameras: pick one with --name".into()),
            },
        }
    }

    /// The destination prefix (S3 or local), without leading or trailing slashes.
    pub fn prefix(&self) -> &str {
        let p = match (&self.s3, &self.local) {
            (Some(s3), _) => s3.prefix.as_str(),
            (None, Some(l)) => l.prefix.as_str(),
            _ => "",
        };
        p.trim_matches('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MIN: &str =
        "[[camera]]\nname = \"t\"\nurl = \"http://127.0.0.1:2345\"\n[s3]\nbucket = \"b\"\n";

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn windowed_listing_keys_are_bounded_durations() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.sync.window_margin, Duration::from_secs(2 * 3600));
        assert_eq!(c.sync.full_listing_every, Duration::from_secs(3 * 3600));
        let c = parse(&format!(
            "{MIN}[sync]\nwindow_margin = \"6h\"\nfull_listing_every = \"0s\"\n"
        ))
        .unwrap();
        assert_eq!(c.sync.window_margin, Duration::from_secs(6 * 3600));
        assert_eq!(c.sync.full_listing_every, Duration::ZERO);
        for bad in ["10m", "3d"] {
            let e = parse(&format!("{MIN}[sync]\nwindow_margin = \"{bad}\"\n")).unwrap_err();
            assert!(e.to_string().contains("sync.window_margin"), "{e}");
        }
        let e = parse(&format!("{MIN}[sync]\nfull_listing_every = \"8d\"\n")).unwrap_err();
        assert!(e.to_string().contains("sync.full_listing_every"), "{e}");
    }

    #[test]
    fn destination_wait_is_a_bounded_duration() {
        let c = parse(&format!("{MIN}[sync]\ndestination_wait = \"30s\"\n")).unwrap();
        assert_eq!(c.sync.destination_wait, Duration::from_secs(30));
        let e = parse(&format!("{MIN}[sync]\ndestination_wait = \"2d\"\n")).unwrap_err();
        assert!(e.to_string().contains("sync.destination_wait"), "{e}");
    }

    #[test]
    fn prune_after_is_zero_or_at_least_a_day() {
        assert_eq!(
            parse(MIN).unwrap().sync.prune_after,
            Duration::from_secs(30 * 86400)
        );
        let c = parse(&format!("{MIN}[sync]\nprune_after = \"0\"\n")).unwrap();
        assert_eq!(c.sync.prune_after, Duration::ZERO);
        let c = parse(&format!("{MIN}[sync]\nprune_after = \"90d\"\n")).unwrap();
        assert_eq!(c.sync.prune_after, Duration::from_secs(90 * 86400));
        for bad in ["\"1h\"", "\"soon\"", "30"] {
            let e = parse(&format!("{MIN}[sync]\nprune_after = {bad}\n")).unwrap_err();
            assert!(e.to_string().contains("sync.prune_after"), "{bad}: {e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.sync.poll_interval, Duration::from_secs(30));
        assert_eq!(c.sync.destination_wait, Duration::from_secs(120));
        assert_eq!(c.sync.page_size, 50);
        assert_eq!(c.retention.delete_from_camera, DeletePolicy::AfterUpload);
        assert_eq!(c.cameras[0].params, ParamStyle::Form);
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_bytes(" 8 MiB ").unwrap(), 8 << 20);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("512k").unwrap(), 512_000);
        assert_eq!(parse_bytes("2kib").unwrap(), 2048);
        assert_eq!(parse_bytes("0.5TiB").unwrap(), 1 << 39);
        for bad in ["", "-5MiB", "8 fortnights", "1e400", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        // Values that parsing through f64 got wrong: 1.005 * 1000 was 1004.999…, truncated
        // to 1004; 2^53 + 1 has no f64.
        assert_eq!(parse_bytes("1.005KB").unwrap(), 1005);
        assert_eq!(
            parse_bytes("9007199254740993").unwrap(),
            9_007_199_254_740_993
        );
        assert_eq!(
            parse_bytes("9007199254740993 B").unwrap(),
            9_007_199_254_740_993
        );
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("30 parsecs").is_err());
    }

    #[test]
    fn s3_timeouts_have_defaults_and_bounds() {
        let s3 = |line: &str| parse(&format!("{MIN}{line}\n")).map(|c| c.s3.unwrap());
        let d = s3("").unwrap();
        assert_eq!(d.connect_timeout, Duration::from_secs(10));
        assert_eq!(d.stall_timeout, Duration::from_secs(60));
        let t = s3("connect_timeout = \"2s\"\nstall_timeout = \"5m\"").unwrap();
        assert_eq!(t.connect_timeout, Duration::from_secs(2));
        assert_eq!(t.stall_timeout, Duration::from_secs(300));
        for (line, key) in [
            ("stall_timeout = \"0s\"", "s3.stall_timeout"),
            ("stall_timeout = \"2h\"", "s3.stall_timeout"),
            ("connect_timeout = \"0s\"", "s3.connect_timeout"),
            ("connect_timeout = \"soon\"", "s3.connect_timeout"),
        ] {
            let m = s3(line).unwrap_err().to_string();
            assert!(m.contains(key), "{line}: {m}");
        }
    }

    #[test]
    fn multipart_threshold_is_auto_or_a_size() {
        let s3 = |line: &str| parse(&format!("{MIN}{line}\n")).map(|c| c.s3.unwrap());
        assert_eq!(s3("").unwrap().multipart_threshold, None, "default: auto");
        assert_eq!(
            s3("multipart_threshold = \"auto\"")
                .unwrap()
                .multipart_threshold,
            None
        );
        assert_eq!(
            s3("multipart_threshold = \"64MiB\"")
                .unwrap()
                .multipart_threshold,
            Some(64 << 20)
        );
        let m = s3("multipart_threshold = \"often\"")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("s3.multipart_threshold") && m.contains("auto"),
            "{m}"
        );
        let m = s3("multipart_threshold = -1").unwrap_err().to_string();
        assert!(
            m.contains("s3.multipart_threshold") && m.contains("negative"),
            "{m}"
        );
        let m = s3("multipart_threshold = \"6MiB\"\npart_size = \"8MiB\"")
            .unwrap_err()
            .to_string();
        assert!(m.contains("s3.multipart_threshold"), "{m}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MIN}[sync]\npol_interval = \"3s\"\n")).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("pol_interval"), "{m}");
    }

    #[test]
    fn bad_duration_names_key() {
        let e = parse(&format!("{MIN}[sync]\npoll_interval = \"soon\"\n")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("sync.poll_interval") && m.contains("invalid duration"),
            "{m}"
        );
    }

    #[test]
    fn bad_url_names_camera() {
        let e = parse("[[camera]]\nname=\"a\"\nurl=\"ftp://x\"\n[s3]\nbucket=\"b\"\n").unwrap_err();
        assert!(e.to_string().contains("camera[0].url"), "{e}");
    }

    #[test]
    fn missing_bucket_is_named() {
        let e =
            parse("[[camera]]\nname=\"a\"\nurl=\"http://h\"\n[s3]\nprefix=\"p\"\n").unwrap_err();
        assert!(e.to_string().contains("s3.bucket"), "{e}");
    }

    #[test]
    fn prefix_with_dotdot_is_refused() {
        let e = parse(
            "[[camera]]\nname=\"a\"\nurl=\"http://h\"\n[s3]\nbucket=\"b\"\nprefix=\"a/../b\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("s3.prefix"), "{e}");
    }

    #[test]
    fn log_target_is_checked() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.log.target, LogTarget::Auto);
        let c = parse(&format!("{MIN}[log]\ntarget = \"journald\"\n")).unwrap();
        assert_eq!(c.log.target, LogTarget::Journald);
        let e = parse(&format!("{MIN}[log]\ntarget = \"syslog\"\n")).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("log.target") && m.contains("auto") && m.contains("journald"),
            "{m}"
        );
    }
}
