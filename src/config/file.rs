//! Finding, reading and parsing the config file: `--config`, else `$QUCAM_OFFLOAD_CONFIG`,
//! else the platform config dir; TOML syntax and types checked with the key named, then
//! [validated](super::validate); and the warning for keys other users can read.

use std::path::{Path, PathBuf};

use super::{CONFIG_ENV, Config, ConfigError};

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
