//! Finding, reading and parsing the config file: `--config`, else `$QUCAM_OFFLOAD_CONFIG`,
//! else the platform config dir; TOML syntax and types checked with the key named, then
//! [validated](super::validate); and the warning for keys other users can read.

use std::path::{Path, PathBuf};

use super::redact::{is_sensitive_key, mask_quoted};
use super::{CONFIG_ENV, Config, ConfigError};

impl Config {
    /// Parses and validates a configuration document; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: syntax_message(text, &e),
        })?;
        let mut cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let key = key.replace('?', "");
            // Only the message: its Display adds "\nin `key`", which the key already says,
            // and a config error is one line. Serde quotes the offending value, so for a key
            // that may hold a secret the quoted parts are masked.
            let message = e.into_inner().message().trim().to_string();
            let message = if is_sensitive_key(&key) {
                mask_quoted(&message)
            } else {
                message
            };
            ConfigError::Invalid {
                path: path.to_path_buf(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            }
        })?;
        cfg.resolve_hotspots(path)?;
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

/// A warning when the file at `path` holds secrets (S3 keys, Wi-Fi passwords) and other
/// users can read it.
pub fn exposed_secrets_warning(path: &Path, cfg: &Config) -> Option<String> {
    let s3_keys = cfg
        .s3
        .as_ref()
        .is_some_and(|s| s.secret_access_key.is_some());
    let wifi_passwords = cfg.cameras.iter().any(|c| c.password.is_some())
        || cfg.wifi.as_ref().is_some_and(|w| !w.passwords.is_empty());
    let held = match (s3_keys, wifi_passwords) {
        (false, false) => return None,
        (true, false) => "S3 keys",
        (false, true) => "Wi-Fi passwords",
        (true, true) => "S3 keys and Wi-Fi passwords",
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "config file {} holds {held} and other users can read it (mode {:o}): run chmod 600 {} (or move S3 keys to the AWS environment or a profile)",
                path.display(),
                mode & 0o777,
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, held);
    None
}

/// A TOML syntax error as one line: where it is (line, column, and the key when the line
/// starts with a plain one) and the parser's message, never the offending line itself, which
/// may hold a secret (a typo on the `secret_access_key` line would otherwise put the key in
/// the journal).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = e.span() else {
        return message;
    };
    let at = span.start.min(text.len());
    let at = (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_no = text[..at].matches('\n').count() + 1;
    let column = text[line_start..at].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    match key_of_line(line) {
        Some(key) => format!("line {line_no}, column {column} (key `{key}`): {message}"),
        None => format!("line {line_no}, column {column}: {message}"),
    }
}

/// The key of a `key = value` line when it is a plain config key (lower-case letters,
/// `_` and `.`): anything else on the line, or a key of another shape, may be a secret.
fn key_of_line(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = !key.is_empty()
        && key.len() <= 40
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
    plain.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("test.toml"))
            .unwrap_err()
            .to_string()
    }

    fn with_s3(lines: &str) -> String {
        format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://127.0.0.1:2345\"\n[s3]\nbucket = \"b\"\naccess_key_id = \"AKIAEXAMPLE\"\n{lines}\n"
        )
    }

    #[test]
    fn a_syntax_error_on_the_secret_line_does_not_quote_it() {
        for line in [
            format!("secret_access_key = \"{SECRET}"),
            format!("secret_access_key = {SECRET}"),
            format!("secret_access_key = \"{SECRET}\" x"),
            format!("secret_access_key \"{SECRET}\""),
            format!("secret_access_key = \"{SECRET}\\q\""),
            format!("secret_access_key = \"\"\"{SECRET}"),
            format!("secret_access_key = \"{SECRET}\"\nsecret_access_key = \"{SECRET}\""),
            SECRET.to_string(),
        ] {
            let m = err(&with_s3(&line));
            assert!(!m.contains(SECRET), "{line:?} → {m}");
            assert!(!m.contains("EXAMPLEKEY"), "{line:?} → {m}");
            assert!(m.contains("not valid TOML") && m.contains("line "), "{m}");
            assert!(!m.contains('\n'), "one line: {m}");
        }
        let m = err(&with_s3(&format!("secret_access_key = \"{SECRET}")));
        assert!(
            m.contains("line 7") && m.contains("`secret_access_key`"),
            "says where: {m}"
        );
    }

    #[test]
    fn a_type_error_on_a_secret_does_not_quote_it() {
        let m = err(&with_s3("secret_access_key = 982451653982451653"));
        assert!(m.contains("s3.secret_access_key"), "{m}");
        assert!(!m.contains("982451653"), "{m}");
        let m = err(&with_s3("secret_access_key = 3.14159265"));
        assert!(!m.contains("14159"), "{m}");
        // Other keys keep the value in the message.
        let m = err(&with_s3(
            "secret_access_key = \"x\"\npart_concurrency = \"lots\"",
        ));
        assert!(m.contains("lots"), "{m}");
    }

    #[test]
    fn an_invalid_url_is_not_echoed() {
        let hook = "https://user:pw@hooks.example.invalid/T0KEN?key=abc";
        let bad_hooks = [
            hook.replace("https", "ftp"),
            hook.replace("invalid/", "invalid:99999/"),
            hook.replace("hooks.example.invalid", ""),
        ];
        for bad in &bad_hooks {
            let m = err(&with_s3(&format!(
                "secret_access_key = \"x\"\n[notify]\nwebhook = \"{bad}\""
            )));
            assert!(m.contains("notify.webhook"), "{m}");
            for leak in ["pw", "T0KEN", "key=abc", "user"] {
                assert!(!m.contains(leak), "{leak} in {m}");
            }
        }
        let m = err(
            "[[camera]]\nname = \"t\"\nurl = \"http://u:pw@h:70000/T0KEN\"\n[s3]\nbucket = \"b\"\n",
        );
        assert!(m.contains("camera[0].url") && !m.contains("T0KEN"), "{m}");
        let m = err(&with_s3(
            "secret_access_key = \"x\"\nendpoint = \"gopher://u:pw@h/T0KEN\"",
        ));
        assert!(m.contains("s3.endpoint") && !m.contains("T0KEN"), "{m}");
        assert!(m.contains("gopher://…@h/…"), "{m}");
    }
}
