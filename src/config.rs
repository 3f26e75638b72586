//! The configuration file: one TOML document, loaded and validated as a whole.
//!
//! Every key is parsed and checked even when no code uses it yet, so a typo never
//! goes unnoticed. A bad file produces one [`ConfigError`] naming the file, the key
//! and what is wrong; the CLI turns it into exit code 2.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qucam::{EVENT_CODES, ParamStyle};
use serde::{Deserialize, Deserializer};

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
#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub name: String,
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

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default)]
    pub delete_from_camera: DeletePolicy,
    #[serde(default, deserialize_with = "de_duration")]
    pub min_age_on_camera: Duration,
    #[serde(default)]
    pub keep_local: bool,
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "d_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub target: LogTarget,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub desktop: bool,
    #[serde(default)]
    pub webhook: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

fn d_connect_timeout() -> Duration {
    Duration::from_secs(3)
}
fn d_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn d_poll() -> Duration {
    Duration::from_secs(30)
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
fn d_quiet() -> Duration {
    Duration::from_secs(600)
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
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            delete_from_camera: DeletePolicy::default(),
            min_age_on_camera: Duration::ZERO,
            keep_local: false,
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

/// Parses a duration such as `30s`, `5m`, `1h 30m` or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"1h\""))
}

/// Parses a byte size: an integer, or a string such as `64MiB`, `8 MiB`, `1.5GB`, `512k`
/// (decimal `k`/`KB`, `M`/`MB`, …; binary `KiB`, `MiB`, …; case-insensitive), exactly in
/// integers by `parse-size` (a fraction of a byte rounds to the nearest byte).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s.trim())
        .map_err(|_| format!("invalid size {s:?}; write e.g. 1048576, \"64MiB\", \"2GB\""))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A size as written in the file: a number of bytes or a string such as `"16MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Num(i64),
    Str(String),
}

impl SizeValue {
    fn bytes(self) -> Result<u64, String> {
        match self {
            SizeValue::Num(n) => {
                u64::try_from(n).map_err(|_| format!("size must not be negative (got {n})"))
            }
            SizeValue::Str(s) => parse_bytes(&s),
        }
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    SizeValue::deserialize(d)?
        .bytes()
        .map_err(serde::de::Error::custom)
}

/// `"auto"` → `None`; a size (as for [`de_bytes`]) → `Some`.
fn de_threshold<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match SizeValue::deserialize(d)? {
        SizeValue::Str(s) if s.trim().eq_ignore_ascii_case("auto") => Ok(None),
        v => v
            .bytes()
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e} (or \"auto\")"))),
    }
}

/// A warning when the file at `path` holds S3 keys and other users can read it.
pub fn exposed_secrets_warning(path: &Path, cfg: &Config) -> Option<String> {
    let holds_keys = cfg
        .s3
        .as_ref()
        .is_some_and(|s| s.secret_access_key.is_some());
    if !holds_keys {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "config file {} holds S3 keys and other users can read it (mode {:o}): run chmod 600 {} (or move the keys to the AWS environment or a profile)",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    None
}

impl Config {
    /// Parses and validates a configuration document; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = key.replace('?', "");
            ConfigError::Invalid {
                path: path.to_path_buf(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                // Only the message: its Display adds "\nin `key`", which the key already says,
                // and a config error is one line.
                message: e.into_inner().message().trim().to_string(),
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// The config path: `explicit`, else `$QUCAM_OFFLOAD_CONFIG`, else the platform config dir.
    pub fn resolve_path(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let default = directories::ProjectDirs::from("", "", "qucam-offload")
            .map(|d| d.config_dir().join("config.toml"));
        match default {
            Some(p) if p.exists() => Ok(p),
            Some(p) => Err(ConfigError::NotFound {
                default: p.display().to_string(),
            }),
            None => Err(ConfigError::NotFound {
                default: "(no home directory)".into(),
            }),
        }
    }

    /// Finds ([`Config::resolve_path`]) and loads the config a command was pointed at.
    pub fn find_and_load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(&Config::resolve_path(explicit)?)
    }

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

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if self.cameras.is_empty() {
            return Err(bad(
                "camera",
                "at least one [[camera]] with name and url is required".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let k = |f: &str| format!("camera[{i}].{f}");
            if c.name.trim().is_empty() {
                return Err(bad(&k("name"), "must not be empty".into()));
            }
            if !names.insert(c.name.as_str()) {
                return Err(bad(
                    &k("name"),
                    format!("duplicate camera name {:?}", c.name),
                ));
            }
            check_http_url(&c.url).map_err(|m| bad(&k("url"), m))?;
            if let Some(id) = &c.client_id
                && (id.trim().is_empty() || id.chars().any(|ch| ch.is_control()))
            {
                return Err(bad(
                    &k("client_id"),
                    "must be a non-empty printable string".into(),
                ));
            }
            if c.connect_timeout.is_zero() || c.idle_timeout.is_zero() {
                return Err(bad(
                    &k("connect_timeout/idle_timeout"),
                    "must be greater than zero".into(),
                ));
            }
        }
        let s = &self.sync;
        if s.poll_interval.is_zero() {
            return Err(bad(
                "sync.poll_interval",
                "must be greater than zero".into(),
            ));
        }
        if !(1..=1000).contains(&s.page_size) {
            return Err(bad(
                "sync.page_size",
                format!("must be between 1 and 1000 (got {})", s.page_size),
            ));
        }
        if !["", "_1.", "_2.", "1^2"].contains(&s.camera_type.as_str()) {
            return Err(bad(
                "sync.camera_type",
                format!(
                    "must be \"\" (both), \"_1.\" (front), \"_2.\" (interior) or \"1^2\" (got {:?})",
                    s.camera_type
                ),
            ));
        }
        for e in &s.event_types {
            let code = e.trim_matches('_');
            if !(e.starts_with('_') && e.ends_with('_') && EVENT_CODES.contains(&code)) {
                return Err(bad(
                    "sync.event_types",
                    format!(
                        "unknown event type {e:?}; use codes like \"_04_\" (one of {})",
                        EVENT_CODES.join(", ")
                    ),
                ));
            }
        }
        if s.download_concurrency == 0 || s.download_concurrency > 16 {
            return Err(bad(
                "sync.download_concurrency",
                "must be between 1 and 16".into(),
            ));
        }
        if s.upload_concurrency == 0 || s.upload_concurrency > 64 {
            return Err(bad(
                "sync.upload_concurrency",
                "must be between 1 and 64".into(),
            ));
        }
        if s.max_attempts == 0 {
            return Err(bad("sync.max_attempts", "must be at least 1".into()));
        }
        match (&self.s3, &self.local) {
            (None, None) => {
                return Err(bad(
                    "s3",
                    "a destination is required: an [s3] section with a bucket (or [local] dir)"
                        .into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "local",
                    "give one destination: [s3] or [local], not both".into(),
                ));
            }
            _ => {}
        }
        if let Some(s3) = &self.s3 {
            if s3.bucket.trim().is_empty() {
                return Err(bad(
                    "s3.bucket",
                    "missing: name the bucket to upload to".into(),
                ));
            }
            if s3.bucket.contains('/') || s3.bucket.chars().any(char::is_whitespace) {
                return Err(bad(
                    "s3.bucket",
                    format!("{:?} is not a bucket name", s3.bucket),
                ));
            }
            check_prefix(&s3.prefix).map_err(|m| bad("s3.prefix", m))?;
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                return Err(bad(
                    if s3.access_key_id.is_some() {
                        "s3.secret_access_key"
                    } else {
                        "s3.access_key_id"
                    },
                    "give access_key_id and secret_access_key together (or neither, to use the AWS environment, profile or instance role)".into(),
                ));
            }
            if let Some(ep) = &s3.endpoint {
                check_http_url(ep).map_err(|m| bad("s3.endpoint", m))?;
            }
            if s3.part_size < 5 * 1024 * 1024 || s3.part_size > 5 * 1024 * 1024 * 1024 {
                return Err(bad(
                    "s3.part_size",
                    "must be between 5 MiB and 5 GiB (S3's limits)".into(),
                ));
            }
            if s3.multipart_threshold.is_some_and(|t| t < s3.part_size) {
                return Err(bad(
                    "s3.multipart_threshold",
                    "must be at least s3.part_size".into(),
                ));
            }
            if s3.part_concurrency == 0 || s3.part_concurrency > 64 {
                return Err(bad(
                    "s3.part_concurrency",
                    "must be between 1 and 64".into(),
                ));
            }
        }
        if let Some(l) = &self.local {
            if l.dir.as_os_str().is_empty() {
                return Err(bad("local.dir", "must not be empty".into()));
            }
            check_prefix(&l.prefix).map_err(|m| bad("local.prefix", m))?;
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(bad(
                "log.level",
                format!(
                    "{:?} is not a level or filter (use error, warn, info, debug, trace)",
                    self.log.level
                ),
            ));
        }
        if let Some(w) = &self.notify.webhook {
            check_http_url(w).map_err(|m| bad("notify.webhook", m))?;
        }
        Ok(())
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

fn check_http_url(s: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    Ok(())
}

fn check_prefix(p: &str) -> Result<(), String> {
    crate::key::check_prefix(p).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "[[camera]]\nname = \"t\"\nurl = \"http://127.0.0.1:2345\"\n[s3]\nbucket = \"b\"\n";

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).unwrap();
        assert_eq!(c.sync.poll_interval, Duration::from_secs(30));
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
