//! Checks of a parsed config that types alone cannot make: one [`ConfigError`] naming the
//! key and the problem, for the first thing wrong.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use qucam::EVENT_CODES;

use super::redact::redact_url;
use super::{Config, ConfigError};

/// Makes the error for `key` of the file at `path`.
struct Bad<'a>(&'a Path);

impl Bad<'_> {
    fn at(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.0.to_path_buf(),
            key: key.to_string(),
            message,
        }
    }
}

impl Config {
    pub(super) fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = Bad(path);
        self.check_cameras(&bad)?;
        self.check_sync(&bad)?;
        self.check_destination(&bad)?;
        if let Some(s3) = &self.s3 {
            check_s3(s3, &bad)?;
        }
        self.check_rest(&bad)
    }

    /// `[[camera]]`: at least one (none needed with `[wifi]`, whose hotspots may be found
    /// by default passwords or the fleet file), unique names, http URLs, sane timeouts.
    fn check_cameras(&self, b: &Bad<'_>) -> Result<(), ConfigError> {
        let bad = |k: &str, m: String| b.at(k, m);
        if self.cameras.is_empty() && self.wifi.is_none() {
            return Err(bad(
                "camera",
                "at least one [[camera]] with name and url is required (or [wifi])".into(),
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
        Ok(())
    }

    /// `[sync]`: paging, selection and concurrency within their ranges.
    fn check_sync(&self, b: &Bad<'_>) -> Result<(), ConfigError> {
        let bad = |k: &str, m: String| b.at(k, m);
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
        if !s.prune_after.is_zero() && s.prune_after < std::time::Duration::from_secs(86400) {
            return Err(bad(
                "sync.prune_after",
                "must be 0 (never) or at least 1d".into(),
            ));
        }
        if s.destination_wait > std::time::Duration::from_secs(24 * 3600) {
            return Err(bad("sync.destination_wait", "must be at most 24h".into()));
        }
        let hour = std::time::Duration::from_secs(3600);
        if s.window_margin < hour || s.window_margin > 48 * hour {
            return Err(bad(
                "sync.window_margin",
                "must be between 1h and 48h (it must cover the longest clip, an event's pre-roll and a DST fall-back)".into(),
            ));
        }
        if s.full_listing_every > 7 * 24 * hour {
            return Err(bad(
                "sync.full_listing_every",
                "must be at most 7d (\"0s\": every listing is a full one)".into(),
            ));
        }
        Ok(())
    }

    /// Exactly one destination: `[s3]` or `[local]`.
    fn check_destination(&self, b: &Bad<'_>) -> Result<(), ConfigError> {
        let bad = |k: &str, m: String| b.at(k, m);
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
        Ok(())
    }

    /// `[local]`, `[log]` and `[notify]`.
    fn check_rest(&self, b: &Bad<'_>) -> Result<(), ConfigError> {
        let bad = |k: &str, m: String| b.at(k, m);
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
        let blocks = self.retention.challenge_blocks;
        if blocks > super::MAX_CHALLENGE_BLOCKS {
            return Err(bad(
                "retention.challenge_blocks",
                format!(
                    "must be between 0 (off) and {} (got {blocks})",
                    super::MAX_CHALLENGE_BLOCKS
                ),
            ));
        }
        Ok(())
    }
}

/// `[s3]`: bucket, prefix, keys given together, endpoint, part sizes within S3's limits,
/// timeouts.
fn check_s3(s3: &super::S3Config, b: &Bad<'_>) -> Result<(), ConfigError> {
    let bad = |k: &str, m: String| b.at(k, m);
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
    let (second, hour) = (Duration::from_secs(1), Duration::from_secs(3600));
    if !(second..=hour).contains(&s3.connect_timeout) {
        return Err(bad(
            "s3.connect_timeout",
            "must be between 1s and 1h".into(),
        ));
    }
    if !(second..=hour).contains(&s3.stall_timeout) {
        return Err(bad("s3.stall_timeout", "must be between 1s and 1h".into()));
    }
    Ok(())
}

/// An `http(s)` URL with a host. The messages show the URL only as [`redact_url`] does: a
/// webhook's token or a URL's password never reaches the log.
pub(super) fn check_http_url(s: &str) -> Result<(), String> {
    let shown = redact_url(s);
    let url = reqwest::Url::parse(s).map_err(|e| format!("{shown} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown} must start with http:// or https://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown} has no host"));
    }
    Ok(())
}

fn check_prefix(p: &str) -> Result<(), String> {
    crate::key::check_prefix(p).map_err(|e| e.0)
}
