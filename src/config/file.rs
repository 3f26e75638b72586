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
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let file = FileAccess {
            mode: meta.mode() & 0o777,
            owner: meta.uid(),
            group: meta.gid(),
        };
        let advice = file.exposure(ProcessIds::current().as_ref())?;
        Some(format!(
            "config file {} holds {held} and {} (mode {:o}): {} (or move S3 keys to the AWS environment or a profile)",
            path.display(),
            advice.who(),
            file.mode,
            advice.fix(path),
        ))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, held);
        None
    }
}

/// Who owns a file and its permission bits, as the exposure check sees them.
#[derive(Debug, Clone, Copy)]
struct FileAccess {
    mode: u32,
    owner: u32,
    group: u32,
}

/// The package's service group.
const SERVICE_GROUP: &str = "qucam-offload";

/// Whether `gid` is root's group or the package's service group (read from `/etc/group`).
fn service_group(gid: u32) -> bool {
    gid == 0
        || std::fs::read_to_string("/etc/group")
            .is_ok_and(|g| group_has_gid(&g, SERVICE_GROUP, gid))
}

/// Whether `/etc/group` text `groups` gives `name` the id `gid`.
fn group_has_gid(groups: &str, name: &str, gid: u32) -> bool {
    groups.lines().any(|l| {
        let mut f = l.split(':');
        f.next() == Some(name) && f.nth(1).and_then(|g| g.trim().parse().ok()) == Some(gid)
    })
}

/// The agent's user and groups (effective and supplementary).
#[derive(Debug, Clone)]
struct ProcessIds {
    uid: u32,
    gids: Vec<u32>,
}

impl ProcessIds {
    /// Read from `/proc/self/status` (Linux); `None` where it cannot be read.
    fn current() -> Option<ProcessIds> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        ProcessIds::parse(&status)
    }

    /// The effective uid and gid, and the supplementary groups, of a `status` text.
    fn parse(status: &str) -> Option<ProcessIds> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| {
                    rest.split_whitespace()
                        .filter_map(|n| n.parse::<u32>().ok())
                        .collect::<Vec<_>>()
                })
        };
        let uid = *field("Uid:")?.get(1)?;
        let mut gids = vec![*field("Gid:")?.get(1)?];
        gids.extend(field("Groups:").unwrap_or_default());
        Some(ProcessIds { uid, gids })
    }
}

/// Who else can read a config file, and the fix that keeps the agent able to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposure {
    /// Readable by every user; the agent owns the file.
    OthersOwnFile,
    /// Readable by every user; someone else (root) owns it.
    Others,
    /// Readable by a group that is not the agent's own; the agent owns the file.
    ForeignGroupOwnFile,
    /// Readable by a group that is not the agent's own; someone else owns it.
    ForeignGroup,
}

impl FileAccess {
    /// `None` when only the agent's user, or root and the agent's own group (the
    /// package's `root:qucam-offload` 0640 layout), can read the file. Without the
    /// agent's ids (`me` is `None`), group access is taken for the package's layout.
    fn exposure(self, me: Option<&ProcessIds>) -> Option<Exposure> {
        // A root-owned file is never the agent's own to `chmod 600`: under the package the
        // service reads it through its group.
        let own = self.owner != 0 && me.is_some_and(|m| m.uid == self.owner);
        if self.mode & 0o007 != 0 {
            return Some(if own {
                Exposure::OthersOwnFile
            } else {
                Exposure::Others
            });
        }
        if self.mode & 0o070 == 0 {
            return None;
        }
        // Run by root (an admin's `run --once`), the group that reads the file is the
        // package's layout, not an exposure.
        let my_group = me.is_none_or(|m| {
            m.gids.contains(&self.group) || (m.uid == 0 && service_group(self.group))
        });
        if my_group {
            return None;
        }
        Some(if own {
            Exposure::ForeignGroupOwnFile
        } else {
            Exposure::ForeignGroup
        })
    }
}

impl Exposure {
    fn who(self) -> &'static str {
        match self {
            Exposure::OthersOwnFile | Exposure::Others => "other users can read it",
            Exposure::ForeignGroupOwnFile | Exposure::ForeignGroup => {
                "a group other than the agent's can read it"
            }
        }
    }

    /// A fix that never locks the agent out: `chmod 600` only on a file the agent owns.
    fn fix(self, path: &Path) -> String {
        let p = path.display();
        match self {
            Exposure::OthersOwnFile | Exposure::ForeignGroupOwnFile => format!("run chmod 600 {p}"),
            Exposure::Others => {
                format!("run chmod o= {p} (the package installs it root:qucam-offload, mode 640)")
            }
            Exposure::ForeignGroup => format!(
                "run chown root:<the agent's group> {p} && chmod 640 {p} (the package installs it root:qucam-offload)"
            ),
        }
    }
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

    const STATUS: &str = "Name:\tqucam-offload\nUid:\t998\t998\t998\t998\nGid:\t997\t997\t997\t997\nGroups:\t997 20 \n";

    fn service() -> ProcessIds {
        ProcessIds::parse(STATUS).expect("parsed")
    }

    #[test]
    fn run_by_root_only_roots_or_the_service_group_may_read_and_chmod_600_is_never_advised() {
        let root = ProcessIds {
            uid: 0,
            gids: vec![0],
        };
        let packaged = FileAccess {
            mode: 0o640,
            owner: 0,
            group: 997,
        };
        // (The service group is looked up in /etc/group: `group_has_gid` below.)
        // Root's own group is the package's layout too; the service group is looked up.
        let root_group = FileAccess {
            group: 0,
            ..packaged
        };
        assert_eq!(root_group.exposure(Some(&root)), None);
        assert!(group_has_gid(
            "root:x:0:\nqucam-offload:x:997:\n",
            SERVICE_GROUP,
            997
        ));
        assert!(!group_has_gid("users:x:100:\n", SERVICE_GROUP, 100));
        // Another group (say `users`) may read S3 keys: warned, even when root runs it.
        let users = FileAccess {
            group: 4242,
            ..packaged
        };
        assert_eq!(users.exposure(Some(&root)), Some(Exposure::ForeignGroup));
        let world = FileAccess {
            mode: 0o644,
            ..packaged
        };
        let e = world.exposure(Some(&root)).expect("warned");
        assert_eq!(e, Exposure::Others);
    }

    #[test]
    fn process_ids_come_from_the_status_file() {
        let me = service();
        assert_eq!(me.uid, 998);
        assert_eq!(me.gids, vec![997, 997, 20]);
        assert!(ProcessIds::parse("Name:\tx\n").is_none());
    }

    #[test]
    fn the_packages_root_owned_0640_layout_is_not_warned_about() {
        // /etc/qucam-offload/config.toml: root:qucam-offload, 0640 (debian/postinst).
        let file = FileAccess {
            mode: 0o640,
            owner: 0,
            group: 997,
        };
        assert_eq!(file.exposure(Some(&service())), None);
        // Where the agent's ids cannot be read, group access is taken for that layout.
        assert_eq!(file.exposure(None), None);
        // Readable by the agent alone.
        let own = FileAccess {
            mode: 0o600,
            owner: 998,
            group: 997,
        };
        assert_eq!(own.exposure(Some(&service())), None);
    }

    #[test]
    fn a_world_readable_file_is_warned_about_with_a_fix_that_keeps_the_agent_reading() {
        let root_owned = FileAccess {
            mode: 0o644,
            owner: 0,
            group: 997,
        };
        let e = root_owned.exposure(Some(&service())).expect("warned");
        assert_eq!(e, Exposure::Others);
        let fix = e.fix(Path::new("/etc/q/config.toml"));
        // chmod 600 on a root-owned file would lock the service out.
        assert!(!fix.contains("chmod 600"), "{fix}");
        assert!(fix.contains("chmod o= /etc/q/config.toml"), "{fix}");
        assert_eq!(root_owned.exposure(None), Some(Exposure::Others));
        let own = FileAccess {
            owner: 998,
            ..root_owned
        };
        let e = own.exposure(Some(&service())).expect("warned");
        assert!(e.fix(Path::new("c.toml")).contains("chmod 600 c.toml"));
    }

    #[test]
    fn a_file_readable_by_another_group_is_warned_about() {
        let staff = FileAccess {
            mode: 0o640,
            owner: 0,
            group: 50,
        };
        let e = staff.exposure(Some(&service())).expect("warned");
        assert_eq!(e, Exposure::ForeignGroup);
        let fix = e.fix(Path::new("c.toml"));
        assert!(
            !fix.contains("chmod 600") && fix.contains("chmod 640"),
            "{fix}"
        );
        let own = FileAccess {
            owner: 998,
            ..staff
        };
        assert_eq!(
            own.exposure(Some(&service())),
            Some(Exposure::ForeignGroupOwnFile)
        );
    }
}
