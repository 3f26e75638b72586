//! Which password opens which camera hotspot, and which IMEI is expected behind it.
//!
//! Sources, first match wins: `[[camera]]` (`ssid`/`bssid`/`password`/`imei`), then the
//! fleet file (`[wifi] cameras_file`, CSV `imei,ssid,bssid,password`), then learned
//! (`state_dir/wifi-credentials.json`, with `learn = true`: written from
//! `get_device_info`), then `[wifi.passwords]` (a default password per SSID). A camera
//! given a BSSID matches that BSSID only (its password is never offered to another access
//! point with its SSID); one without, its SSID. A known camera without a password of its
//! own takes one from a later source with the same BSSID or IMEI, else the default for its
//! SSID; a hotspot that matches no known camera gets the default password only with
//! `join_unknown`.
//!
//! A learned password is pinned to the BSSID of its first successful join (the camera with
//! its IMEI answered there, [`Credentials::pin`]); one learned from a camera met by URL has
//! none until then. A pinned learned password is never offered to another BSSID, not even
//! through a camera with its IMEI, and a later join elsewhere does not move the pin.
//!
//! Passwords are [`Secret`]s from the file to NetworkManager: no error, log line or `Debug`
//! output shows one. The learned file is created `0600` and never read when group or
//! others may read it.
//!
//! A problem in the fleet file or the learned file disables what it touches, never the
//! agent ([`Credentials::problems`], warned about at start and shown by `doctor`): a bad
//! fleet-file line is skipped (the message names the file and line, never the password), a
//! fleet file that cannot be read or has no header gives no camera; a learned file that
//! group or others may read, that cannot be read or is not valid JSON gives no learned
//! password and is never written over (learning waits until it is fixed: the operator may
//! want what it holds), and a bad entry in it is skipped (and kept in the file).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use qucam::Secret;
use serde::{Deserialize, Serialize};

use crate::config::{Config, check_psk, check_ssid, normalize_bssid};

/// What a bad BSSID in the fleet or learned file is called: the value is never quoted (a
/// line whose columns are swapped would show its password).
const NOT_A_BSSID: &str = "bssid: not a BSSID (six hex pairs, e.g. AA:BB:CC:DD:EE:FF)";

/// The learned store's file name in the state dir.
pub const LEARNED_FILE: &str = "wifi-credentials.json";

/// Where a password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `[[camera]]`, by its configured name.
    Camera(String),
    FleetFile,
    Learned,
    /// `[wifi.passwords]`.
    Default,
}

/// The credentials for one access point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub password: Secret,
    /// The IMEI expected to answer (none when only the SSID's default password is known).
    pub imei: Option<String>,
    pub source: Source,
}

impl Match {
    /// A fingerprint of these credentials for hotspot `bssid` (SHA-256 of the BSSID and the
    /// password, hex): the store keeps it beside a suspicious mark, so that other
    /// credentials clear the mark. Never shown; it is as private as the state directory,
    /// which holds the learned passwords themselves.
    pub fn fingerprint(&self, bssid: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"qucam-offload hotspot credentials\0");
        h.update(bssid.as_bytes());
        h.update(b"\0");
        h.update(self.password.expose().as_bytes());
        hex::encode(h.finalize())
    }
}

/// One known camera hotspot.
#[derive(Debug, Clone)]
struct Entry {
    ssid: Option<String>,
    bssid: Option<String>,
    password: Option<Secret>,
    imei: Option<String>,
    source: Source,
}

/// Every known camera hotspot and default password. `Debug` shows no password.
#[derive(Debug, Default)]
pub struct Credentials {
    /// `[[camera]]` then the fleet file, in that order.
    configured: Vec<Entry>,
    learned: Vec<Entry>,
    defaults: BTreeMap<String, Secret>,
    join_unknown: bool,
    /// The learned store, when `learn = true`.
    learned_path: Option<PathBuf>,
    /// The learn errors already reported (a camera met at every pass says the same).
    warned: std::collections::HashSet<String>,
    /// What was skipped while loading, in words (never a password).
    problems: Vec<String>,
}

/// The learned store as written (the only place a password is plain text). Each camera is
/// kept as read: an entry this build cannot use is skipped, and written back as it was.
#[derive(Serialize, Deserialize, Default)]
struct LearnedFile {
    cameras: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct LearnedCamera {
    imei: String,
    ssid: String,
    #[serde(default)]
    bssid: Option<String>,
    password: String,
}

impl Credentials {
    /// `[[camera]]` > cameras_file > learned (state_dir/wifi-credentials.json, with
    /// `learn`) > `[wifi.passwords]` (for unknown hotspots only if `join_unknown`).
    pub fn load(cfg: &Config) -> Result<Credentials> {
        let Some(w) = &cfg.wifi else {
            return Ok(Credentials::default());
        };
        let mut configured: Vec<Entry> = cfg
            .cameras
            .iter()
            .filter(|c| c.ssid.is_some() || c.bssid.is_some() || c.imei.is_some())
            .map(|c| Entry {
                ssid: c.ssid.clone(),
                bssid: c.bssid.clone(),
                password: c.password.clone(),
                imei: c.imei.clone(),
                source: Source::Camera(c.name.clone()),
            })
            .collect();
        let mut problems = Vec::new();
        if let Some(file) = &w.cameras_file {
            match std::fs::read_to_string(file) {
                Ok(text) => configured.extend(parse_fleet(&text, file, &mut problems)),
                Err(e) => problems.push(format!(
                    "cannot read the fleet file {}: {e}; its cameras are not known",
                    file.display()
                )),
            }
        }
        let learned_path = w.learn.then(|| cfg.state_dir().join(LEARNED_FILE));
        let learned = match &learned_path {
            Some(p) => match read_learned(p) {
                Ok(f) => learned_entries(&f, p, &mut problems),
                Err(e) => {
                    problems.push(format!("{e:#}; no learned password is used"));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        Ok(Credentials {
            configured,
            learned,
            defaults: w.passwords.clone(),
            join_unknown: w.join_unknown,
            learned_path,
            warned: Default::default(),
            problems,
        })
    }

    /// What was skipped while loading (bad fleet-file lines, a learned file not read, bad
    /// learned entries), in words, never a password: each a warning.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// BSSID match first, then SSID match (bytes compared with the configured UTF-8 SSID)
    /// among entries without a BSSID, then (with `join_unknown`) the SSID's default
    /// password.
    pub fn for_ap(&self, ssid: &[u8], bssid: &str) -> Option<Match> {
        let bssid = bssid.to_ascii_uppercase();
        let same_ssid = |e: &&Entry| e.ssid.as_deref().map(str::as_bytes) == Some(ssid);
        let all = || self.configured.iter().chain(&self.learned);
        let by_bssid = all().filter(|e| e.bssid.as_deref() == Some(bssid.as_str()));
        let by_ssid = all().filter(|e| e.bssid.is_none()).filter(same_ssid);
        if let Some(m) = by_bssid
            .chain(by_ssid)
            .find_map(|e| self.complete(e, ssid, &bssid))
        {
            return Some(m);
        }
        // A camera pinned to another BSSID is not this one: its password is never offered
        // to a stranger with the same name. The SSID's default password, if any, is.
        if !self.join_unknown {
            return None;
        }
        self.default_for(ssid).map(|password| Match {
            password,
            imei: None,
            source: Source::Default,
        })
    }

    /// The match for `e` at access point `ap_bssid` (upper case): the first password and
    /// the first IMEI, in the order of the sources, among `e` and the entries with its
    /// BSSID or IMEI (a learned one pinned to another BSSID gives no password); else the
    /// SSID's default password.
    fn complete(&self, e: &Entry, ap_ssid: &[u8], ap_bssid: &str) -> Option<Match> {
        let related = |o: &&Entry| {
            std::ptr::eq(*o, e)
                || (e.imei.is_some() && o.imei == e.imei)
                || (e.bssid.is_some() && o.bssid == e.bssid)
        };
        // A password pinned to another BSSID (learned, in the fleet file or a
        // `[[camera]]`) is never offered here, whichever entry led to it.
        let offered_here = |o: &&&Entry| o.bssid.as_deref().is_none_or(|b| b == ap_bssid);
        let related: Vec<&Entry> = self
            .configured
            .iter()
            .chain(&self.learned)
            .filter(related)
            .collect();
        let imei = related.iter().find_map(|o| o.imei.clone());
        let found = related
            .iter()
            .filter(offered_here)
            .find_map(|o| Some((o.password.clone()?, o.source.clone())));
        let (password, source) = match found {
            Some(f) => f,
            None => (self.default_for(ap_ssid)?, Source::Default),
        };
        Some(Match {
            password,
            imei,
            source,
        })
    }

    fn default_for(&self, ssid: &[u8]) -> Option<Secret> {
        self.defaults
            .iter()
            .find(|(k, _)| k.as_bytes() == ssid)
            .map(|(_, p)| p.clone())
    }

    /// `learn = true`: remembers imei/ssid/password(/bssid) from `get_device_info` in the
    /// learned store (0600, tmp + fsync + rename). Returns whether anything changed.
    pub fn learn(
        &mut self,
        imei: &str,
        ssid: &str,
        password: &Secret,
        bssid: Option<&str>,
    ) -> Result<bool> {
        let Some(path) = self.learned_path.clone() else {
            return Ok(false);
        };
        qucam::check_imei(imei).map_err(|e| anyhow!("cannot learn Wi-Fi credentials: {}", e.0))?;
        check_ssid(ssid).map_err(|m| anyhow!("cannot learn Wi-Fi credentials of {imei}: {m}"))?;
        check_psk(password)
            .map_err(|m| anyhow!("cannot learn Wi-Fi credentials of {imei}: {m}"))?;
        let bssid = bssid
            .map(normalize_bssid)
            .transpose()
            .map_err(|m| anyhow!("cannot learn Wi-Fi credentials of {imei}: {m}"))?;
        if self.knows(imei, ssid, password, bssid.as_deref()) {
            // Met at every pass: the file is neither read nor written.
            return Ok(false);
        }
        let mut file = read_learned(&path)?;
        let old = file
            .cameras
            .iter()
            .position(|c| c.get("imei").and_then(|i| i.as_str()) == Some(imei));
        let old_bssid = old
            .and_then(|i| serde_json::from_value::<LearnedCamera>(file.cameras[i].clone()).ok())
            .and_then(|c| c.bssid);
        if let (Some(pinned), Some(here)) = (&old_bssid, &bssid)
            && pinned != here
        {
            // What answers behind another access point never rewrites a pinned entry (an
            // access point can claim any IMEI).
            return Err(anyhow!(
                "not learning Wi-Fi credentials of {imei} reported behind {here}: its learned password is pinned to {pinned}"
            ));
        }
        let new = LearnedCamera {
            imei: imei.to_string(),
            ssid: ssid.to_string(),
            // The first BSSID it was joined at stays: a later one does not move the pin.
            bssid: old_bssid.or(bssid),
            password: password.expose().to_string(),
        };
        let new = serde_json::to_value(new).context("cannot encode learned Wi-Fi credentials")?;
        match old {
            Some(i) if file.cameras[i] == new => return Ok(false),
            Some(i) => file.cameras[i] = new,
            None => file.cameras.push(new),
        }
        write_learned(&path, &file)?;
        self.learned = learned_entries(&file, &path, &mut Vec::new());
        Ok(true)
    }
}

impl Credentials {
    /// The camera `imei` answered behind access point `bssid` after a join: its learned
    /// password, if it has none yet, is pinned to `bssid` (written as [`Credentials::learn`]
    /// writes). Returns whether anything changed.
    pub fn pin(&mut self, imei: &str, bssid: &str) -> Result<bool> {
        let Some(path) = self.learned_path.clone() else {
            return Ok(false);
        };
        let bssid = normalize_bssid(bssid)
            .map_err(|m| anyhow!("cannot pin the learned password of {imei}: {m}"))?;
        let unpinned = |e: &Entry| e.imei.as_deref() == Some(imei) && e.bssid.is_none();
        if !self.learned.iter().any(unpinned) {
            // Met at every visit: the file is neither read nor written.
            return Ok(false);
        }
        let mut file = read_learned(&path)?;
        let mut changed = false;
        for v in &mut file.cameras {
            let Ok(mut c) = serde_json::from_value::<LearnedCamera>(v.clone()) else {
                continue;
            };
            if c.imei == imei && c.bssid.is_none() {
                c.bssid = Some(bssid.clone());
                *v = serde_json::to_value(c).context("cannot encode learned Wi-Fi credentials")?;
                changed = true;
            }
        }
        if changed {
            write_learned(&path, &file)?;
        }
        self.learned = learned_entries(&file, &path, &mut Vec::new());
        Ok(changed)
    }

    /// Whether this is already learned, as it is.
    fn knows(&self, imei: &str, ssid: &str, password: &Secret, bssid: Option<&str>) -> bool {
        self.learned.iter().any(|e| {
            e.imei.as_deref() == Some(imei)
                && e.ssid.as_deref() == Some(ssid)
                && e.password
                    .as_ref()
                    .is_some_and(|p| p.expose() == password.expose())
                && bssid.is_none_or(|b| e.bssid.as_deref() == Some(b))
        })
    }

    /// Whether the learn error `what` is reported now: the first time it happens.
    pub fn first_warning(&mut self, what: &str) -> bool {
        self.warned.insert(what.to_string())
    }
}

/// The usable entries of the learned store at `path`; each one skipped is a problem (its
/// position and IMEI, never its password).
fn learned_entries(file: &LearnedFile, path: &Path, problems: &mut Vec<String>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, v) in file.cameras.iter().enumerate() {
        match learned_entry(v) {
            Ok(e) => out.push(e),
            Err(m) => problems.push(format!(
                "learned Wi-Fi credentials {}, camera {}: {m}; skipped",
                path.display(),
                i + 1
            )),
        }
    }
    out
}

/// One learned camera, checked as a configured one would be. The message never quotes a
/// value (serde's may: it is not used).
fn learned_entry(v: &serde_json::Value) -> Result<Entry, String> {
    let c: LearnedCamera = serde_json::from_value(v.clone())
        .map_err(|_| "expected the strings imei, ssid, password (and bssid)".to_string())?;
    qucam::check_imei(&c.imei).map_err(|_| "imei: expected 1-32 letters or digits".to_string())?;
    check_ssid(&c.ssid).map_err(|m| format!("imei {}: ssid: {m}", c.imei))?;
    let bssid = c
        .bssid
        .as_deref()
        .map(normalize_bssid)
        .transpose()
        .map_err(|_| format!("imei {}: {NOT_A_BSSID}", c.imei))?;
    let password = Secret::new(c.password);
    check_psk(&password).map_err(|m| format!("imei {}: password: {m}", c.imei))?;
    Ok(Entry {
        ssid: Some(c.ssid),
        bssid,
        password: Some(password),
        imei: Some(c.imei),
        source: Source::Learned,
    })
}

/// The fleet file: a header `imei,ssid,bssid,password`, then one camera a line (`bssid`
/// may be empty; fields may be double-quoted, `""` inside for a quote; blank lines and
/// lines starting with `#` are skipped). A bad line is skipped, a file without the header
/// gives nothing: each a problem naming the file and line, never a password.
fn parse_fleet(text: &str, file: &Path, problems: &mut Vec<String>) -> Vec<Entry> {
    let at = |n: usize| format!("fleet file {}, line {n}", file.display());
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((n, header)) = lines.next() else {
        problems.push(format!(
            "fleet file {} is empty: expected the header imei,ssid,bssid,password",
            file.display()
        ));
        return Vec::new();
    };
    let names: Vec<String> = header
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if names != ["imei", "ssid", "bssid", "password"] {
        problems.push(format!(
            "{}: the header must be imei,ssid,bssid,password; no camera of the file is known",
            at(n)
        ));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        match fleet_line(line) {
            Ok(e) => out.push(e),
            Err(m) => problems.push(format!("{}: {m}; the line is skipped", at(n))),
        }
    }
    out
}

/// One line of the fleet file after the header. The message never quotes the line.
fn fleet_line(line: &str) -> Result<Entry, String> {
    let f = split_csv(line)?;
    let [imei, ssid, bssid, password] = <[String; 4]>::try_from(f).map_err(|f| {
        format!(
            "expected 4 fields (imei,ssid,bssid,password), got {}",
            f.len()
        )
    })?;
    let imei = imei.trim().to_string();
    // The IMEI is never quoted either (the columns may be swapped).
    qucam::check_imei(&imei).map_err(|_| "imei: expected 1-32 letters or digits".to_string())?;
    check_ssid(&ssid).map_err(|m| format!("ssid: {m}"))?;
    let bssid = match bssid.trim() {
        "" => None,
        // Never quoted: a line whose columns are swapped would show its password.
        b => Some(normalize_bssid(b).map_err(|_| NOT_A_BSSID.to_string())?),
    };
    let password = Secret::new(password);
    check_psk(&password).map_err(|m| format!("password: {m}"))?;
    Ok(Entry {
        ssid: Some(ssid),
        bssid,
        password: Some(password),
        imei: Some(imei),
        source: Source::FleetFile,
    })
}

/// One CSV line's fields. The message never quotes the line (it holds a password).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (false, c) if was_quoted && !c.is_whitespace() => {
                return Err(format!(
                    "field {}: text after a closing quote",
                    fields.len() + 1
                ));
            }
            (false, _) if was_quoted => {}
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("field {}: unterminated quote", fields.len() + 1));
    }
    fields.push(cur);
    Ok(fields)
}

/// The learned store at `path` (empty when absent); refused when group or others may read
/// it.
fn read_learned(path: &Path) -> Result<LearnedFile> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LearnedFile::default()),
        Err(e) => {
            return Err(anyhow!(
                "cannot read learned Wi-Fi credentials {shown}: {e}"
            ));
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "learned Wi-Fi credentials {shown} may be read by group or others (mode {mode:o}): refusing to read it; run chmod 600 {shown} (and change the cameras' passwords if others did read it)"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read learned Wi-Fi credentials {shown}"))?;
    // serde_json's message may quote a value (a password): only where it is.
    serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "learned Wi-Fi credentials {shown} are not valid (line {}, column {}): move the file aside and the agent learns them again",
            e.line(),
            e.column()
        )
    })
}

/// Writes the learned store: a `0600` temporary file, fsynced, renamed over `path`.
fn write_learned(path: &Path, file: &LearnedFile) -> Result<()> {
    let shown = path.display();
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    // A leftover keeps its mode through `open`: start from none.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(anyhow!("cannot remove {}: {e}", tmp.display()));
        }
        _ => {}
    }
    let body =
        serde_json::to_vec_pretty(file).context("cannot encode learned Wi-Fi credentials")?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(&body)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {shown}"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const PW: &str = "s3cret-fleet-pw";
    const FACTORY: &str = "12345678";
    const A: &str = "AA:BB:CC:00:00:01";
    const B: &str = "AA:BB:CC:00:00:02";
    const C: &str = "AA:BB:CC:00:00:03";

    /// A config with state in `dir`, `wifi` lines added to `[wifi]`, and `cameras` as
    /// `[[camera]]` lines (each camera's lines, separated by `---`).
    fn config(dir: &Path, cameras: &str, wifi: &str) -> Config {
        let mut text = format!("state_dir = {:?}\n", dir.join("state"));
        for (i, c) in cameras.split("---").enumerate() {
            text.push_str(&format!("[[camera]]\nname = \"cam{i}\"\n{c}\n"));
        }
        text.push_str(&format!(
            "[s3]\nbucket = \"b\"\n[wifi]\ninterface = \"wlan0\"\n{wifi}\n[wifi.passwords]\nqueclinkgh = \"{FACTORY}\"\n"
        ));
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    fn fleet(dir: &Path, body: &str) -> String {
        let p = dir.join("fleet.csv");
        std::fs::write(&p, body).unwrap();
        format!("cameras_file = {p:?}")
    }

    #[test]
    fn bssid_first_then_ssid_then_the_default() {
        let d = tempfile::tempdir().unwrap();
        let file = fleet(
            d.path(),
            &format!("imei,ssid,bssid,password\n222,queclinkgh,{B},{PW}\n333,truck-3,,\"{PW}3\"\n"),
        );
        let cfg = config(
            d.path(),
            &format!(
                "ssid = \"queclinkgh\"\nbssid = \"{}\"\nimei = \"111\"",
                A.to_lowercase()
            ),
            &file,
        );
        let c = Credentials::load(&cfg).unwrap();
        // [[camera]] by BSSID, with no password of its own: the SSID's default.
        let m = c.for_ap(b"queclinkgh", A).unwrap();
        assert_eq!(
            (m.imei.as_deref(), m.password.expose()),
            (Some("111"), FACTORY)
        );
        assert_eq!(m.source, Source::Default);
        // The fleet file by BSSID (lower case from NM is fine).
        let m = c.for_ap(b"queclinkgh", &B.to_lowercase()).unwrap();
        assert_eq!((m.imei.as_deref(), m.password.expose()), (Some("222"), PW));
        assert_eq!(m.source, Source::FleetFile);
        // By SSID (no BSSID in the file).
        let m = c.for_ap(b"truck-3", C).unwrap();
        assert_eq!(
            (m.imei.as_deref(), m.password.expose()),
            (Some("333"), "s3cret-fleet-pw3")
        );
        // Same factory SSID, unknown BSSID: the default password, no IMEI to expect.
        let m = c.for_ap(b"queclinkgh", C).unwrap();
        assert_eq!((m.imei, m.password.expose()), (None, FACTORY));
        // A camera pinned to a BSSID: its password is not offered to another with its SSID.
        let m = c.for_ap(b"queclinkgh", B).unwrap();
        assert_eq!(m.password.expose(), PW);
        let file = fleet(
            d.path(),
            &format!("imei,ssid,bssid,password\n222,truck-2,{B},{PW}\n"),
        );
        let c = Credentials::load(&config(d.path(), "ssid = \"x\"", &file)).unwrap();
        assert!(c.for_ap(b"truck-2", C).is_none());
        assert!(c.for_ap(b"someone-else", C).is_none());
    }

    #[test]
    fn the_camera_wins_and_join_unknown_false_keeps_to_known_cameras() {
        let d = tempfile::tempdir().unwrap();
        let file = fleet(
            d.path(),
            &format!("imei,ssid,bssid,password\n111,t1,{A},{PW}\n"),
        );
        let cameras = format!("bssid = \"{A}\"\npassword = \"camera-pw-1\"\nimei = \"111\"");
        let cfg = config(d.path(), &cameras, &format!("{file}\njoin_unknown = false"));
        let c = Credentials::load(&cfg).unwrap();
        let m = c.for_ap(b"t1", A).unwrap();
        assert_eq!(m.password.expose(), "camera-pw-1");
        assert_eq!(m.source, Source::Camera("cam0".into()));
        assert!(
            c.for_ap(b"queclinkgh", B).is_none(),
            "default password, unknown camera"
        );
        // The camera's password wins over the fleet file's for the same camera, and the
        // fleet file's IMEI fills in the camera's.
        let cfg = config(
            d.path(),
            &format!("bssid = \"{A}\"\npassword = \"camera-pw-1\""),
            &file,
        );
        let m = Credentials::load(&cfg).unwrap().for_ap(b"t1", A).unwrap();
        assert_eq!(
            (m.password.expose(), m.imei.as_deref()),
            ("camera-pw-1", Some("111"))
        );
        let cfg = config(
            d.path(),
            "imei = \"111\"\npassword = \"camera-pw-1\"",
            &file,
        );
        let m = Credentials::load(&cfg).unwrap().for_ap(b"t1", A).unwrap();
        assert_eq!(m.password.expose(), "camera-pw-1");
        assert_eq!(m.source, Source::Camera("cam0".into()));
        // A camera known by IMEI only takes its password from the fleet file's row.
        let cfg = config(d.path(), "imei = \"111\"", &file);
        let m = Credentials::load(&cfg).unwrap().for_ap(b"t1", A).unwrap();
        assert_eq!((m.password.expose(), m.source), (PW, Source::FleetFile));
    }

    #[test]
    fn a_fleet_line_with_swapped_columns_never_shows_its_password() {
        for line in [
            "111111111111111,truck-1,s3cretpw1,AA:BB:CC:DD:EE:FF",
            "111111111111111,truck-1,AA:BB:CC:DD:EE:FF,s3cretpw1,more",
        ] {
            let e = fleet_line(line).expect_err("a bad line");
            assert!(!e.contains("s3cretpw1"), "{e}");
        }
    }

    #[test]
    fn a_bad_fleet_line_is_skipped_with_its_line_named_and_never_the_password() {
        let d = tempfile::tempdir().unwrap();
        for (body, says) in [
            ("imei,ssid,password\n", "line 1: the header"),
            (
                &format!("imei,ssid,bssid,password\n\n111,t,{A},{PW},x\n") as &str,
                "line 3: expected 4 fields",
            ),
            (
                &format!("imei,ssid,bssid,password\n../1,t,,{PW}\n"),
                "line 2: imei",
            ),
            (
                &format!("imei,ssid,bssid,password\n1,t,zz,{PW}\n"),
                "line 2: bssid",
            ),
            (
                &format!("imei,ssid,bssid,password\n1,,,{PW}\n"),
                "line 2: ssid",
            ),
            (
                "imei,ssid,bssid,password\n1,t,,s3cret\n",
                "line 2: password",
            ),
            (
                &format!("imei,ssid,bssid,password\n1,t,,\"{PW}\n"),
                "line 2: field 4: unterminated",
            ),
            (
                &format!("imei,ssid,bssid,password\n1,t,,\"{PW}\"x\n"),
                "line 2: field 4: text after",
            ),
            ("", "empty"),
        ] {
            // The bad line (or file) is skipped; a good line after it is kept.
            let body = match body {
                "" => String::new(),
                b => format!("{b}222,t2,{B},{PW}2\n"),
            };
            let file = fleet(d.path(), &body);
            let c = Credentials::load(&config(d.path(), "ssid = \"x\"", &file))
                .expect("a bad line does not stop the agent");
            let [m] = c.problems() else {
                panic!("{body:?}: one problem: {:?}", c.problems())
            };
            assert!(m.contains(says) && m.contains("fleet.csv"), "{body:?}: {m}");
            assert!(!m.contains(PW) && !m.contains("s3cret"), "{m}");
            let headed = body.starts_with("imei,ssid,bssid,password");
            assert_eq!(c.for_ap(b"t2", B).is_some(), headed, "{body:?}");
            assert!(c.for_ap(b"t", A).is_none(), "{body:?}");
        }
        let c = Credentials::load(&config(
            d.path(),
            "ssid = \"x\"",
            "cameras_file = \"/nonexistent.csv\"",
        ))
        .expect("a missing fleet file does not stop the agent");
        let [m] = c.problems() else {
            panic!("{:?}", c.problems())
        };
        assert!(m.contains("/nonexistent.csv"), "{m}");
    }

    #[test]
    fn quoted_fields_keep_commas_and_quotes() {
        assert_eq!(
            split_csv(r#"1, "a,b" ,,"x""y""#).unwrap(),
            ["1", "a,b", "", "x\"y"]
        );
    }

    #[test]
    fn learning_writes_a_private_file_and_is_used_next_time() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "ssid = \"x\"", "learn = true");
        let mut c = Credentials::load(&cfg).unwrap();
        assert!(
            c.learn("444", "truck-4", &Secret::new(PW), Some(&C.to_lowercase()))
                .unwrap()
        );
        assert!(
            !c.learn("444", "truck-4", &Secret::new(PW), None).unwrap(),
            "nothing new"
        );
        // Nothing new is not even read: a camera is met at every pass.
        let path = d.path().join("state").join(LEARNED_FILE);
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            !c.learn("444", "truck-4", &Secret::new(PW), Some(C))
                .unwrap()
        );
        assert!(!path.exists(), "not read, not written");
        std::fs::write(&path, kept).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let m = c.for_ap(b"other-name", C).unwrap();
        assert_eq!(
            (m.imei.as_deref(), m.password.expose(), m.source),
            (Some("444"), PW, Source::Learned)
        );
        let path = d.path().join("state").join(LEARNED_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            !d.path()
                .join("state")
                .join("wifi-credentials.json.tmp")
                .exists()
        );
        // A new password replaces the old one, the BSSID is kept; a reload sees it.
        assert!(
            c.learn("444", "truck-4", &Secret::new("new-password"), None)
                .unwrap()
        );
        let m = Credentials::load(&cfg)
            .unwrap()
            .for_ap(b"truck-4", C)
            .unwrap();
        assert_eq!(m.password.expose(), "new-password");
        // learn = false: nothing is learned (nor read).
        let off = config(d.path(), "ssid = \"x\"", "");
        let mut c = Credentials::load(&off).unwrap();
        assert!(!c.learn("555", "t5", &Secret::new(PW), None).unwrap());
        assert!(c.for_ap(b"truck-4", C).is_none());
    }

    #[test]
    fn a_learned_file_others_may_read_is_ignored_and_never_written_over() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "ssid = \"x\"", "learn = true");
        let mut c = Credentials::load(&cfg).unwrap();
        c.learn("444", "truck-4", &Secret::new(PW), Some(C))
            .unwrap();
        let path = d.path().join("state").join(LEARNED_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let kept = std::fs::read(&path).unwrap();
        let mut c = Credentials::load(&cfg).expect("the agent goes on");
        let [m] = c.problems() else {
            panic!("{:?}", c.problems())
        };
        assert!(
            m.contains("group or others") && m.contains("refusing") && m.contains("640"),
            "{m}"
        );
        assert!(m.contains("no learned password is used"), "{m}");
        assert!(!m.contains(PW), "{m}");
        assert!(c.for_ap(b"truck-4", C).is_none(), "not read");
        let e = c
            .learn("555", "truck-5", &Secret::new("another-pw"), None)
            .unwrap_err();
        assert!(format!("{e:#}").contains("refusing"), "{e:#}");
        assert_eq!(std::fs::read(&path).unwrap(), kept, "never written over");
        // Not valid JSON: where, never what; ignored, and not written over either.
        let bad = format!("{{\"cameras\":[{{\"imei\":\"1\",\"password\":{PW}");
        std::fs::write(&path, &bad).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = Credentials::load(&cfg).expect("the agent goes on");
        let [m] = c.problems() else {
            panic!("{:?}", c.problems())
        };
        assert!(m.contains("not valid") && !m.contains(PW), "{m}");
        assert!(c.learn("555", "truck-5", &Secret::new(PW), None).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), bad);
    }

    #[test]
    fn a_learned_password_is_pinned_to_its_first_join_and_offered_nowhere_else() {
        let d = tempfile::tempdir().unwrap();
        // A camera known by its IMEI and SSID only, with no password of its own.
        let cfg = config(
            d.path(),
            "ssid = \"truck-4\"\nimei = \"444\"",
            "learn = true\njoin_unknown = false",
        );
        let mut c = Credentials::load(&cfg).unwrap();
        // Learned from the camera met by URL: no BSSID yet, offered by SSID.
        c.learn("444", "truck-4", &Secret::new(PW), None).unwrap();
        assert!(c.for_ap(b"truck-4", A).is_some() && c.for_ap(b"truck-4", B).is_some());
        // Its first join, at A (lower case from NetworkManager is fine).
        assert!(c.pin("444", &A.to_lowercase()).unwrap());
        assert!(!c.pin("444", B).unwrap(), "the first join's BSSID stays");
        assert_eq!(c.for_ap(b"truck-4", A).unwrap().password.expose(), PW);
        assert!(
            c.for_ap(b"truck-4", B).is_none(),
            "not offered to another access point, not even through the camera's IMEI"
        );
        // Reported again behind another BSSID (anything can claim the IMEI there): the
        // pinned entry is neither moved nor rewritten.
        let other = c.learn("444", "truck-4", &Secret::new("n0t-the-real-one"), Some(B));
        assert!(other.is_err(), "{other:?}");
        assert!(c.for_ap(b"truck-4", B).is_none());
        assert_eq!(c.for_ap(b"truck-4", A).unwrap().password.expose(), PW);
        // Kept across a restart.
        let c = Credentials::load(&cfg).unwrap();
        assert_eq!(c.for_ap(b"truck-4", A).unwrap().source, Source::Learned);
        assert!(c.for_ap(b"truck-4", B).is_none());
        // Nothing to pin without learn, or for an IMEI never learned.
        let mut c = Credentials::load(&cfg).unwrap();
        assert!(!c.pin("555", A).unwrap());
        let mut off = Credentials::load(&config(d.path(), "ssid = \"x\"", "")).unwrap();
        assert!(!off.pin("444", C).unwrap());
    }

    #[test]
    fn a_bad_learned_entry_is_skipped_and_kept_in_the_file() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), "ssid = \"x\"", "learn = true");
        let path = d.path().join("state").join(LEARNED_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let body = format!(
            r#"{{"cameras":[
                {{"imei":"111","ssid":"t1","password":"short"}},
                {{"imei":"222","ssid":"t2","password":12345678}},
                {{"imei":"333","ssid":"t3","bssid":"{A}","password":"{PW}"}}
            ]}}"#
        );
        std::fs::write(&path, &body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = Credentials::load(&cfg).unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("camera 1") && p[0].contains("imei 111: password"),
            "{p:?}"
        );
        assert!(
            p[1].contains("camera 2") && !p[1].contains("12345678"),
            "{p:?}"
        );
        assert!(c.for_ap(b"t1", B).is_none());
        let m = c.for_ap(b"t3", A).unwrap();
        assert_eq!((m.password.expose(), m.source), (PW, Source::Learned));
        // Learning another camera keeps the entries skipped, as they were.
        assert!(c.learn("444", "t4", &Secret::new(PW), None).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("short") && text.contains("12345678"),
            "{text}"
        );
        assert!(c.for_ap(b"t4", C).is_some() && c.for_ap(b"t3", A).is_some());
    }

    #[test]
    fn debug_and_learn_errors_show_no_password() {
        let d = tempfile::tempdir().unwrap();
        let file = fleet(
            d.path(),
            &format!("imei,ssid,bssid,password\n222,t2,{B},{PW}\n"),
        );
        let cfg = config(
            d.path(),
            &format!("ssid = \"t\"\npassword = \"{PW}1\""),
            &format!("{file}\nlearn = true"),
        );
        let mut c = Credentials::load(&cfg).unwrap();
        c.learn("444", "truck-4", &Secret::new(format!("{PW}4")), None)
            .unwrap();
        let shown = format!("{c:?} {:?}", c.for_ap(b"t2", B));
        assert!(!shown.contains(PW) && !shown.contains(FACTORY), "{shown}");
        let e = c
            .learn("444", "truck-4", &Secret::new("short"), None)
            .unwrap_err();
        assert!(!format!("{e:#}").contains("short"), "{e:#}");
        let m = format!("{e:#}");
        assert!(c.first_warning(&m) && !c.first_warning(&m), "reported once");
        let e = c
            .learn("444", "truck-4", &Secret::new(PW), Some("nope"))
            .unwrap_err();
        assert!(!format!("{e:#}").contains(PW), "{e:#}");
    }
}
