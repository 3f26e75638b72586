//! A fleet in one process: N simulated cameras, each on its own port of 127.0.0.1, with its
//! own IMEI (derived from a base IMEI, Luhn-valid), its own clip directory (`DIR/camNNN`)
//! and its own faults (bandwidth and latency apply per camera). Tests start one with
//! [`start_fleet`]; `qucam-sim --cameras N` wraps it and prints one line per camera, and
//! writes `[[camera]]` entries for the agent's config with `--config-out`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::{SimHandle, SimOptions, start};

/// One camera of a fleet.
pub struct FleetCamera {
    /// `camNNN`, its index from 0 (also its directory under the fleet's `dir`).
    pub name: String,
    pub imei: String,
    /// The directory standing for its video root.
    pub dir: PathBuf,
    pub sim: SimHandle,
}

impl FleetCamera {
    /// `http://127.0.0.1:port`
    pub fn url(&self) -> String {
        self.sim.url()
    }
}

/// The name of camera `i` of a fleet, also its directory under the fleet's `dir`.
pub fn fleet_camera_name(i: usize) -> String {
    format!("cam{i:03}")
}

/// The IMEI of camera `i` of a fleet whose first camera has `base`: the first 14 digits of
/// `base` plus `i` (wrapping within 14 digits), and the Luhn check digit. Deterministic, so
/// scripts and tests can name a camera's IMEI before it starts.
pub fn fleet_imei(base: &str, i: usize) -> anyhow::Result<String> {
    let body = base
        .get(..14)
        .filter(|b| b.bytes().all(|c| c.is_ascii_digit()));
    let Some(body) = body else {
        bail!("the base IMEI {base:?} does not start with 14 digits");
    };
    let n: u64 = body.parse().context("base IMEI")?;
    let n = (n + i as u64) % 100_000_000_000_000;
    let body = format!("{n:014}");
    Ok(format!("{body}{}", luhn_digit(&body)))
}

/// The Luhn check digit of `digits` (ASCII digits).
fn luhn_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, c)| {
            let d = u32::from(c - b'0');
            if k % 2 == 0 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// Starts `n` cameras in the current tokio runtime. `opts` is the template: camera `i`
/// listens on `opts.listen`'s port plus `i` (every one on an ephemeral port when that port
/// is 0), reports [`fleet_imei`]`(opts.imei, i)`, serves `opts.dir/camNNN` and starts with
/// `opts.faults`. Its device name is `opts.device_name`.
pub async fn start_fleet(n: usize, opts: SimOptions) -> anyhow::Result<Vec<FleetCamera>> {
    let mut cameras = Vec::with_capacity(n);
    for i in 0..n {
        let name = fleet_camera_name(i);
        let imei = fleet_imei(&opts.imei, i)?;
        let dir = opts.dir.join(&name);
        let listen = match opts.listen.port() {
            0 => opts.listen,
            port => {
                let port = u16::try_from(usize::from(port) + i)
                    .ok()
                    .with_context(|| format!("camera {i}: port {port} + {i} is past 65535"))?;
                SocketAddr::new(opts.listen.ip(), port)
            }
        };
        let sim = start(SimOptions {
            listen,
            dir: dir.clone(),
            imei: imei.clone(),
            ..opts.clone()
        })
        .await
        .with_context(|| format!("starting camera {name}"))?;
        cameras.push(FleetCamera {
            name,
            imei,
            dir,
            sim,
        });
    }
    Ok(cameras)
}

/// `[[camera]]` entries for the agent's config, one per camera (name, url, imei).
pub fn camera_config(cameras: &[FleetCamera]) -> String {
    let mut out = String::new();
    for c in cameras {
        out.push_str(&format!(
            "[[camera]]\nname = \"{}\"\nurl = \"{}\"\n# imei = \"{}\"\n\n",
            c.name,
            c.url(),
            c.imei
        ));
    }
    out
}

/// Writes [`camera_config`] to `path`.
pub fn write_camera_config(cameras: &[FleetCamera], path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, camera_config(cameras))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_imeis_are_valid_distinct_and_deterministic() {
        let base = "867867432522518";
        assert_eq!(
            fleet_imei(base, 0).unwrap(),
            base,
            "camera 0 keeps a valid base"
        );
        let all: std::collections::HashSet<String> =
            (0..500).map(|i| fleet_imei(base, i).unwrap()).collect();
        assert_eq!(all.len(), 500);
        for imei in &all {
            assert_eq!(imei.len(), 15);
            assert_eq!(luhn_digit(&imei[..14]).to_string(), imei[14..], "{imei}");
        }
        assert!(fleet_imei("12ab", 1).is_err());
    }
}
