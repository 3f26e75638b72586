//! `[wifi]`: depot Wi-Fi (Linux, NetworkManager), off when absent; and the hotspot keys of
//! `[[camera]]` (`ssid`, `bssid`, `password`, `imei`). [`Config::resolve_hotspots`] runs
//! before the other checks: it normalises BSSIDs, and gives a camera without `url` the
//! hotspot address (`wifi.camera_url`) when `[wifi]` is on.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::de_duration;
use super::{Config, ConfigError};

/// `[wifi]`: find each vehicle's hotspot, join it, offload it, move on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifiConfig {
    /// The Wi-Fi device NetworkManager joins hotspots with (`wlan0`).
    pub interface: String,
    /// The NetworkManager profile (id or UUID) that is the depot uplink on this radio;
    /// `None` when Ethernet or a second radio carries the way to S3.
    #[serde(default)]
    pub uplink: Option<String>,
    /// The longest one camera holds the radio while others wait.
    #[serde(default = "d_max_per_camera", deserialize_with = "de_duration")]
    pub max_per_camera: Duration,
    #[serde(default = "d_scan_interval", deserialize_with = "de_duration")]
    pub scan_interval: Duration,
    /// ACTIVATING → ACTIVATED, else this visit is given up.
    #[serde(default = "d_join_timeout", deserialize_with = "de_duration")]
    pub join_timeout: Duration,
    /// Rejoining the uplink.
    #[serde(default = "d_uplink_timeout", deserialize_with = "de_duration")]
    pub uplink_timeout: Duration,
    /// Percent; weaker access points are not joined.
    #[serde(default)]
    pub min_signal: u8,
    /// Join hotspots that match a default password (`[wifi.passwords]`) but no known camera.
    #[serde(default = "d_true")]
    pub join_unknown: bool,
    /// Learn SSID, password and BSSID from `get_device_info`, kept in the state dir.
    #[serde(default)]
    pub learn: bool,
    /// The fleet file: CSV `imei,ssid,bssid,password` with that header (bssid may be empty).
    #[serde(default)]
    pub cameras_file: Option<PathBuf>,
    /// The longest a hotspot whose password was refused waits before it is tried again (the
    /// first wait is a few minutes, doubling per refused visit up to this).
    #[serde(default = "d_wrong_password_retry", deserialize_with = "de_duration")]
    pub wrong_password_retry: Duration,
    /// A camera whose last visit took everything and that has nothing pending is visited
    /// again no sooner than this (the radio stays on the uplink meanwhile).
    #[serde(default = "d_revisit_after", deserialize_with = "de_duration")]
    pub revisit_after: Duration,
    /// A hotspot whose network failed the check after a join (a lease wider than /24, one
    /// that overlaps a network another device routes, or one without the camera's address)
    /// is not joined again for this long, unless its credentials change.
    #[serde(default = "d_suspicious_for", deserialize_with = "de_duration")]
    pub suspicious_for: Duration,
    /// Where a joined camera answers: an `http://` URL whose host is an IPv4 address (the
    /// camera connection's routing rule and the network check after a join name it).
    #[serde(default = "d_camera_url")]
    pub camera_url: String,
    /// `[wifi.passwords]`: a default password per SSID (the factory case).
    #[serde(default)]
    pub passwords: BTreeMap<String, qucam::Secret>,
}

impl WifiConfig {
    /// The IPv4 address in `camera_url` (None when its host is a name or IPv6).
    pub fn camera_host(&self) -> Option<std::net::Ipv4Addr> {
        let url = reqwest::Url::parse(&self.camera_url).ok()?;
        url.host_str()?.parse().ok()
    }
}

fn d_max_per_camera() -> Duration {
    Duration::from_secs(600)
}
fn d_scan_interval() -> Duration {
    Duration::from_secs(30)
}
fn d_join_timeout() -> Duration {
    Duration::from_secs(45)
}
fn d_uplink_timeout() -> Duration {
    Duration::from_secs(60)
}
fn d_true() -> bool {
    true
}
fn d_wrong_password_retry() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn d_revisit_after() -> Duration {
    Duration::from_secs(15 * 60)
}
fn d_suspicious_for() -> Duration {
    Duration::from_secs(3600)
}
fn d_camera_url() -> String {
    "http://192.168.43.1:2345".into()
}

/// A BSSID in the form NetworkManager reports: `AA:BB:CC:DD:EE:FF`, upper case. Accepts
/// lower case and `-` separators.
pub fn normalize_bssid(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !ok {
        return Err(format!(
            "{s:?} is not a BSSID: write six hex pairs, e.g. \"AA:BB:CC:DD:EE:FF\""
        ));
    }
    Ok(parts.join(":").to_ascii_uppercase())
}

/// An SSID as NetworkManager takes it: 1 to 32 bytes.
pub fn check_ssid(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 32 {
        return Err(format!("an SSID is 1 to 32 bytes (got {})", s.len()));
    }
    Ok(())
}

/// A WPA-PSK passphrase: 8 to 63 printable ASCII characters, or 64 hex digits. The
/// message never quotes it.
pub fn check_psk(p: &qucam::Secret) -> Result<(), String> {
    let p = p.expose();
    let hex = p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit());
    let ascii = (8..=63).contains(&p.len()) && p.bytes().all(|b| (0x20..0x7f).contains(&b));
    if hex || ascii {
        Ok(())
    } else {
        Err(format!(
            "a WPA password is 8 to 63 printable ASCII characters or 64 hex digits (got {} characters, not shown)",
            p.chars().count()
        ))
    }
}

fn bad(path: &Path, key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        message,
    }
}

impl Config {
    /// Normalises BSSIDs, checks the hotspot keys, and gives each camera without `url` the
    /// hotspot address (only with `[wifi]`: without it a camera needs a `url`).
    pub(super) fn resolve_hotspots(&mut self, path: &Path) -> Result<(), ConfigError> {
        if let Some(w) = &self.wifi {
            check_platform().map_err(|m| bad(path, "wifi", m))?;
            check_wifi(w, path)?;
        }
        let camera_url = self.wifi.as_ref().map(|w| w.camera_url.clone());
        for (i, c) in self.cameras.iter_mut().enumerate() {
            let k = |f: &str| format!("camera[{i}].{f}");
            if let Some(b) = &c.bssid {
                c.bssid = Some(normalize_bssid(b).map_err(|m| bad(path, &k("bssid"), m))?);
            }
            if let Some(s) = &c.ssid {
                check_ssid(s).map_err(|m| bad(path, &k("ssid"), m))?;
            }
            if let Some(p) = &c.password {
                check_psk(p).map_err(|m| bad(path, &k("password"), m))?;
            }
            if let Some(imei) = &c.imei {
                qucam::check_imei(imei).map_err(|e| bad(path, &k("imei"), e.0))?;
            }
            if !c.url.is_empty() {
                continue;
            }
            let Some(url) = &camera_url else {
                return Err(bad(
                    path,
                    &k("url"),
                    "missing: give the camera's address, e.g. \"http://192.168.43.1:2345\" (with [wifi], a camera found by its hotspot needs none)".into(),
                ));
            };
            if c.ssid.is_none() && c.bssid.is_none() && c.imei.is_none() {
                return Err(bad(
                    path,
                    &k("url"),
                    "a camera without url is found by its hotspot: give its ssid, bssid or imei"
                        .into(),
                ));
            }
            c.url = url.clone();
            c.hotspot_only = true;
        }
        self.check_unique_hotspots(path)
    }

    /// Two `[[camera]]` with one BSSID or one IMEI: which one answered could not be told.
    fn check_unique_hotspots(&self, path: &Path) -> Result<(), ConfigError> {
        let (mut bssids, mut imeis) = (HashSet::new(), HashSet::new());
        for (i, c) in self.cameras.iter().enumerate() {
            if let Some(b) = &c.bssid
                && !bssids.insert(b)
            {
                let m = format!("BSSID {b} is given for two cameras");
                return Err(bad(path, &format!("camera[{i}].bssid"), m));
            }
            if let Some(imei) = &c.imei
                && !imeis.insert(imei)
            {
                let m = format!("IMEI {imei} is given for two cameras");
                return Err(bad(path, &format!("camera[{i}].imei"), m));
            }
        }
        Ok(())
    }
}

/// Depot Wi-Fi drives NetworkManager: Linux only.
fn check_platform() -> Result<(), String> {
    if cfg!(target_os = "linux") {
        Ok(())
    } else {
        Err("depot Wi-Fi needs Linux with NetworkManager; on this system remove [wifi] and give every [[camera]] a url (the agent probes it)".into())
    }
}

/// `[wifi]`'s own keys.
fn check_wifi(w: &WifiConfig, path: &Path) -> Result<(), ConfigError> {
    let bad = |k: &str, m: String| bad(path, k, m);
    let iface = &w.interface;
    if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) || iface == "." {
        return Err(bad(
            "wifi.interface",
            format!("{iface:?} is not an interface name (e.g. \"wlan0\")"),
        ));
    }
    if w.uplink.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(bad(
            "wifi.uplink",
            "must not be empty (omit it when Ethernet or another radio reaches S3)".into(),
        ));
    }
    if let Some(u) = &w.uplink
        && u.starts_with("qucam-offload/")
    {
        return Err(bad(
            "wifi.uplink",
            "must not start with \"qucam-offload/\": the agent deletes the profiles it named so (its camera connections)".into(),
        ));
    }
    let (second, day) = (Duration::from_secs(1), Duration::from_secs(24 * 3600));
    for (key, d) in [
        ("wifi.max_per_camera", w.max_per_camera),
        ("wifi.scan_interval", w.scan_interval),
        ("wifi.join_timeout", w.join_timeout),
        ("wifi.uplink_timeout", w.uplink_timeout),
        ("wifi.wrong_password_retry", w.wrong_password_retry),
        ("wifi.revisit_after", w.revisit_after),
        ("wifi.suspicious_for", w.suspicious_for),
    ] {
        if !(second..=day).contains(&d) {
            return Err(bad(key, "must be between 1s and 24h".into()));
        }
    }
    if w.min_signal > 100 {
        return Err(bad(
            "wifi.min_signal",
            format!("is a percentage, 0 to 100 (got {})", w.min_signal),
        ));
    }
    if w.cameras_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(bad("wifi.cameras_file", "must not be empty".into()));
    }
    super::validate::check_http_url(&w.camera_url).map_err(|m| bad("wifi.camera_url", m))?;
    if w.camera_host().is_none() {
        return Err(bad(
            "wifi.camera_url",
            "must name the camera by its IPv4 address (e.g. http://192.168.43.1:2345): the camera connection routes only to it".into(),
        ));
    }
    for (ssid, psk) in &w.passwords {
        let key = format!("wifi.passwords.{ssid}");
        check_ssid(ssid).map_err(|m| bad(&key, m))?;
        check_psk(psk).map_err(|m| bad(&key, m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: &str = "[s3]\nbucket = \"b\"\n";
    const PW: &str = "hunter2-depot";

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    fn with_wifi(camera: &str, wifi: &str) -> Result<Config, ConfigError> {
        parse(&format!(
            "[[camera]]\nname = \"t\"\n{camera}\n{S3}[wifi]\ninterface = \"wlan0\"\n{wifi}\n"
        ))
    }

    fn err(r: Result<Config, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn absent_is_off_and_a_camera_then_needs_a_url() {
        let c = parse(&format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://h\"\n{S3}"
        ))
        .unwrap();
        assert!(c.wifi.is_none());
        assert!(!c.cameras[0].hotspot_only);
        let m = err(parse(&format!(
            "[[camera]]\nname = \"t\"\nssid = \"x\"\n{S3}"
        )));
        assert!(m.contains("camera[0].url") && m.contains("missing"), "{m}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn defaults_and_the_implied_hotspot_url() {
        let c = with_wifi("ssid = \"truck-7\"", "").unwrap();
        let w = c.wifi.as_ref().unwrap();
        assert_eq!(w.interface, "wlan0");
        assert_eq!(w.uplink, None);
        assert_eq!(w.max_per_camera, Duration::from_secs(600));
        assert_eq!(w.scan_interval, Duration::from_secs(30));
        assert_eq!(w.join_timeout, Duration::from_secs(45));
        assert_eq!(w.uplink_timeout, Duration::from_secs(60));
        assert_eq!(w.wrong_password_retry, Duration::from_secs(6 * 3600));
        assert_eq!((w.min_signal, w.join_unknown, w.learn), (0, true, false));
        assert_eq!(w.camera_url, "http://192.168.43.1:2345");
        assert!(w.passwords.is_empty() && w.cameras_file.is_none());
        assert_eq!(c.cameras[0].url, "http://192.168.43.1:2345");
        assert!(c.cameras[0].hotspot_only);
        // A camera with its own url keeps it (a WAN camera next to the yard's).
        let c = with_wifi(
            "url = \"http://10.0.0.5:2345\"",
            "camera_url = \"http://127.0.0.1:9\"",
        )
        .unwrap();
        assert_eq!(c.cameras[0].url, "http://10.0.0.5:2345");
        assert!(!c.cameras[0].hotspot_only);
        let c = with_wifi(
            "imei = \"867867432522518\"",
            "camera_url = \"http://127.0.0.1:9\"",
        )
        .unwrap();
        assert_eq!(c.cameras[0].url, "http://127.0.0.1:9");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_uplink_cannot_be_named_like_a_camera_connection() {
        let m = err(with_wifi(
            "ssid = \"t\"",
            "uplink = \"qucam-offload/depot\"",
        ));
        assert!(m.contains("wifi.uplink") && m.contains("deletes"), "{m}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_camera_without_url_needs_a_way_to_find_its_hotspot() {
        let m = err(with_wifi("", ""));
        assert!(
            m.contains("camera[0].url") && m.contains("ssid, bssid or imei"),
            "{m}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bssids_are_normalised_and_a_bad_one_is_named() {
        let c = with_wifi("bssid = \"aa-bb-cc-0d-ee-ff\"", "").unwrap();
        assert_eq!(c.cameras[0].bssid.as_deref(), Some("AA:BB:CC:0D:EE:FF"));
        for bad in [
            "aa:bb:cc",
            "AA:BB:CC:DD:EE:GG",
            "AABBCCDDEEFF",
            "A:BB:CC:DD:EE:FFF",
            "",
        ] {
            let m = err(with_wifi(&format!("bssid = \"{bad}\""), ""));
            assert!(
                m.contains("camera[0].bssid") && m.contains("not a BSSID"),
                "{bad}: {m}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn imei_ssid_and_password_are_checked_and_the_password_never_shown() {
        let m = err(with_wifi("ssid = \"s\"\nimei = \"../etc\"", ""));
        assert!(m.contains("camera[0].imei"), "{m}");
        let m = err(with_wifi(&format!("ssid = \"{}\"", "x".repeat(33)), ""));
        assert!(m.contains("camera[0].ssid"), "{m}");
        let m = err(with_wifi("ssid = \"s\"\npassword = \"short7!\"", ""));
        assert!(
            m.contains("camera[0].password") && !m.contains("short7!"),
            "{m}"
        );
        let c = with_wifi(&format!("ssid = \"s\"\npassword = \"{PW}\""), "").unwrap();
        assert_eq!(c.cameras[0].password.as_ref().unwrap().expose(), PW);
        assert!(!format!("{c:?}").contains(PW));
        // A 64-hex PSK is a password too.
        with_wifi(
            &format!("ssid = \"s\"\npassword = \"{}\"", "ab".repeat(32)),
            "",
        )
        .unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn default_passwords_are_checked_and_never_quoted() {
        let c = with_wifi(
            "ssid = \"s\"",
            &format!("[wifi.passwords]\nqueclinkgh = \"{PW}\""),
        )
        .unwrap();
        let w = c.wifi.as_ref().unwrap();
        assert_eq!(w.passwords["queclinkgh"].expose(), PW);
        assert!(!format!("{c:?}").contains(PW));
        let m = err(with_wifi(
            "ssid = \"s\"",
            "[wifi.passwords]\nqueclinkgh = 98765432123",
        ));
        assert!(m.contains("wifi.passwords.queclinkgh"), "{m}");
        assert!(!m.contains("98765432123"), "{m}");
        let m = err(with_wifi(
            "ssid = \"s\"",
            "[wifi.passwords]\nqueclinkgh = \"pw1\"",
        ));
        assert!(
            m.contains("wifi.passwords.queclinkgh") && !m.contains("pw1"),
            "{m}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn wifi_keys_are_checked_by_name() {
        for (line, key) in [
            ("min_signal = 101", "wifi.min_signal"),
            ("max_per_camera = \"0s\"", "wifi.max_per_camera"),
            ("scan_interval = \"soon\"", "wifi.scan_interval"),
            ("join_timeout = \"2d\"", "wifi.join_timeout"),
            ("uplink = \" \"", "wifi.uplink"),
            ("camera_url = \"ftp://x\"", "wifi.camera_url"),
            (
                "camera_url = \"http://camera.local:2345\"",
                "wifi.camera_url",
            ),
            ("suspicious_for = \"0s\"", "wifi.suspicious_for"),
            ("suspicious_for = \"25h\"", "wifi.suspicious_for"),
            ("intrface = \"wlan1\"", "intrface"),
        ] {
            let m = err(with_wifi("ssid = \"s\"", line));
            assert!(m.contains(key), "{line}: {m}");
        }
        let m = err(parse(&format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://h\"\n{S3}[wifi]\ninterface = \"wlan0/x\"\n"
        )));
        assert!(m.contains("wifi.interface"), "{m}");
        let m = err(parse(&format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://h\"\n{S3}[wifi]\nuplink = \"depot\"\n"
        )));
        assert!(m.contains("interface"), "required: {m}");
        let c = with_wifi(
            "ssid = \"s\"",
            "uplink = \"depot-wifi\"\nmin_signal = 20\nlearn = true\njoin_unknown = false\ncameras_file = \"/etc/fleet.csv\"",
        )
        .unwrap();
        let w = c.wifi.unwrap();
        assert_eq!(w.uplink.as_deref(), Some("depot-wifi"));
        assert_eq!((w.min_signal, w.learn, w.join_unknown), (20, true, false));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_bssid_or_imei_given_twice_is_named() {
        let two = |a: &str, b: &str| {
            parse(&format!(
                "[[camera]]\nname = \"a\"\n{a}\n[[camera]]\nname = \"b\"\n{b}\n{S3}[wifi]\ninterface = \"wlan0\"\n"
            ))
        };
        let m = err(two(
            "bssid = \"aa:bb:cc:dd:ee:ff\"",
            "bssid = \"AA:BB:CC:DD:EE:FF\"",
        ));
        assert!(
            m.contains("camera[1].bssid") && m.contains("two cameras"),
            "{m}"
        );
        let m = err(two("imei = \"111\"", "imei = \"111\""));
        assert!(m.contains("camera[1].imei"), "{m}");
        two("imei = \"111\"", "imei = \"222\"").unwrap();
    }

    #[test]
    fn a_syntax_error_in_the_default_passwords_does_not_quote_it() {
        let m = err(parse(&format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://h\"\n{S3}[wifi]\ninterface = \"wlan0\"\n[wifi.passwords]\nqueclinkgh = \"{PW}\n"
        )));
        assert!(m.contains("queclinkgh") && !m.contains(PW), "{m}");
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn wifi_is_a_clear_error_off_linux() {
        let m = err(with_wifi("url = \"http://h\"", ""));
        assert!(m.contains("`wifi`") && m.contains("Linux"), "{m}");
    }

    /// The commented `[wifi]` example of `config.example.toml`, uncommented, with its
    /// camera known by its hotspot instead of a url, loads.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_commented_example_loads() {
        let text = include_str!("../../config.example.toml");
        let at = text.find("\n# [wifi]\n").expect("a [wifi] example");
        let mut doc = String::new();
        for l in text[..at].lines() {
            match l.strip_prefix("# ") {
                Some(l)
                    if ["ssid =", "bssid =", "imei ="]
                        .iter()
                        .any(|k| l.starts_with(k)) =>
                {
                    doc.push_str(l)
                }
                _ if l.starts_with("url = ") => {}
                _ => doc.push_str(l),
            }
            doc.push('\n');
        }
        for l in text[at..].lines() {
            let l = l
                .strip_prefix("# ")
                .filter(|r| !r.starts_with(' '))
                .unwrap_or(l);
            doc.push_str(l);
            doc.push('\n');
        }
        let c = parse(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        let w = c.wifi.as_ref().expect("[wifi] uncommented");
        assert_eq!(w.uplink.as_deref(), Some("depot-wifi"));
        assert_eq!(w.passwords["queclinkgh"].expose(), "12345678");
        assert!(c.cameras[0].hotspot_only);
        assert_eq!(c.cameras[0].bssid.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_file_with_wifi_passwords_is_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        let text = format!(
            "[[camera]]\nname = \"t\"\nurl = \"http://h\"\nssid = \"s\"\npassword = \"{PW}\"\n{S3}"
        );
        std::fs::write(&p, &text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cfg = Config::load(&p).unwrap();
        let w = super::super::exposed_secrets_warning(&p, &cfg).expect("warned");
        assert!(w.contains("Wi-Fi passwords") && !w.contains(PW), "{w}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(super::super::exposed_secrets_warning(&p, &cfg), None);
        // Readable by the agent's own group (the package's root:qucam-offload 0640): no
        // warning, and never the advice `chmod 600`, which would lock the service out.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(super::super::exposed_secrets_warning(&p, &cfg), None);
    }
}
