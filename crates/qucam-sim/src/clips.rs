//! Clips on disk: the camera's directory layout, scanning and generation. Names are
//! [`qucam::ClipName`]s and event codes come from [`qucam::EVENT_CODES`], the same ones the
//! client checks against.

use std::fs;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use chrono::{Duration, Timelike, Utc};
use qucam::{ClipName, EVENT_CODES};

/// The camera directory that the simulator's `--dir` stands for.
pub const VIDEO_ROOT: &str = "/storage/sdcard1/queclink/video";

/// A clip found on disk.
#[derive(Debug, Clone)]
pub struct Clip {
    pub name: String,
    pub parsed: ClipName,
    /// Camera path, e.g. `/storage/sdcard1/queclink/video/20210427/11/<name>`.
    pub camera_path: String,
    pub file: PathBuf,
    pub size: u64,
}

/// The relative directory a clip lives in: `yyyyMMdd/HH`.
fn clip_subdir(name: &str) -> io::Result<String> {
    if ClipName::parse(name).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not a clip name: {name:?}"),
        ));
    }
    Ok(format!("{}/{}", &name[..8], &name[9..11]))
}

/// Maps a camera path under [`VIDEO_ROOT`] to a file under `dir`; `None` if the path is
/// outside the root or tries to escape it.
pub fn camera_to_disk(dir: &Path, camera_path: &str) -> Option<PathBuf> {
    let rel = camera_path.strip_prefix(VIDEO_ROOT)?.strip_prefix('/')?;
    let rel = Path::new(rel);
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(rel))
}

/// Lists every clip under `dir` (any depth up to 4), unsorted.
pub fn scan(dir: &Path) -> io::Result<Vec<Clip>> {
    let mut out = Vec::new();
    scan_into(dir, dir, 0, &mut out)?;
    Ok(out)
}

fn scan_into(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Clip>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            if depth < 4 {
                scan_into(root, &path, depth + 1, out)?;
            }
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(parsed) = ClipName::parse(&name) else {
            continue;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str() else { continue };
        out.push(Clip {
            camera_path: format!("{VIDEO_ROOT}/{}", rel.replace('\\', "/")),
            size: entry.metadata()?.len(),
            name,
            parsed,
            file: path,
        });
    }
    Ok(())
}

/// Writes `content` as clip `name` in the camera layout under `dir`; returns its camera path.
pub fn write_clip(dir: &Path, name: &str, content: &[u8]) -> io::Result<String> {
    let sub = clip_subdir(name)?;
    let folder = dir.join(&sub);
    fs::create_dir_all(&folder)?;
    fs::write(folder.join(name), content)?;
    Ok(format!("{VIDEO_ROOT}/{sub}/{name}"))
}

/// SplitMix64: small, fast, deterministic.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// Writes `size` deterministic pseudo-random bytes derived from `seed` to `path`, in chunks.
pub(crate) fn write_random_file(path: &Path, size: u64, seed: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; CHUNK.min(usize::try_from(size).unwrap_or(CHUNK))];
    let tmp = path.with_extension("part");
    let mut out = io::BufWriter::with_capacity(CHUNK, fs::File::create(&tmp)?);
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        rng.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.into_inner().map_err(io::IntoInnerError::into_error)?;
    fs::rename(tmp, path)
}

/// Writes `n` deterministic clips of `size` bytes under `dir` (camera layout) and returns
/// their file paths, newest first. Names are spread over the four days before the start of
/// the current hour; ~60% are `00` loop recordings, the rest carry event codes; both cameras.
/// Files that already exist with the right size are left alone.
pub fn generate_clips(dir: &Path, n: usize, size: u64, seed: u64) -> io::Result<Vec<PathBuf>> {
    let now = Utc::now().naive_utc();
    let anchor = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now)
        - Duration::minutes(7);
    let span_secs = 4 * 24 * 3600;
    let mut rng = Rng::new(seed);
    let mut names = std::collections::BTreeSet::new();
    let mut paths = Vec::with_capacity(n);
    for i in 0..n {
        let event = if rng.below(100) < 60 {
            "00"
        } else {
            EVENT_CODES[rng.below(EVENT_CODES.len() as u64) as usize]
        };
        let camera = 1 + rng.below(2);
        let mut time = anchor - Duration::seconds(rng.below(span_secs) as i64);
        let name = loop {
            let name = format!("{}_{event}_{camera}.mp4", time.format("%Y%m%d_%H%M%S"));
            if names.insert(name.clone()) {
                break name;
            }
            time -= Duration::minutes(1);
        };
        let folder = dir.join(clip_subdir(&name)?);
        let file = folder.join(&name);
        let done = fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() == size);
        if !done {
            fs::create_dir_all(&folder)?;
            let content_seed = seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
            write_random_file(&file, size, content_seed)?;
        }
        paths.push(file);
    }
    paths.sort_by(|a, b| b.file_name().cmp(&a.file_name()));
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_safely() {
        let d = Path::new("/x");
        assert_eq!(
            camera_to_disk(d, &format!("{VIDEO_ROOT}/20210427/11/a.mp4")),
            Some(PathBuf::from("/x/20210427/11/a.mp4"))
        );
        assert!(camera_to_disk(d, &format!("{VIDEO_ROOT}/../etc/passwd")).is_none());
        assert!(camera_to_disk(d, &format!("{VIDEO_ROOT}/")).is_none());
        assert!(camera_to_disk(d, "/etc/passwd").is_none());
        assert!(camera_to_disk(d, &format!("{VIDEO_ROOT}x/a.mp4")).is_none());
    }

    #[test]
    fn scan_serves_only_names_the_client_accepts() {
        let d = tempfile::tempdir().unwrap();
        let path = write_clip(d.path(), "20210427_115134_0A_2.mp4", b"x").unwrap();
        assert_eq!(
            path,
            format!("{VIDEO_ROOT}/20210427/11/20210427_115134_0A_2.mp4")
        );
        let sub = d.path().join("20210427/11");
        for junk in [
            "20210427_115134_00_3.mp4",
            "20210427_115134_0G_1.mp4",
            "20210427_115134_00_1.mov",
            "notes.txt",
        ] {
            fs::write(sub.join(junk), b"y").unwrap();
        }
        let found = scan(d.path()).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].parsed.event_code(), "0A");
        assert_eq!(found[0].camera_path, path);
        assert!(write_clip(d.path(), "x_3.mp4", b"z").is_err());
    }

    #[test]
    fn generated_names_use_the_event_table() {
        let d = tempfile::tempdir().unwrap();
        let files = generate_clips(d.path(), 40, 16, 3).unwrap();
        assert_eq!(files.len(), 40);
        let mut events = 0;
        for f in &files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap();
            let n = ClipName::parse(name).unwrap();
            if n.is_event() {
                events += 1;
                assert!(EVENT_CODES.contains(&n.event_code()), "{name}");
            }
        }
        assert!(events > 0, "no event clips among {files:?}");
    }
}
