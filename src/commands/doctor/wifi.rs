//! `doctor`'s depot Wi-Fi checks (`[wifi]`): NetworkManager answers on the system bus, the
//! interface exists and is Wi-Fi, the service user may scan and join (polkit), the uplink
//! profile exists and autoconnects, the hotspot passwords load, and which known hotspots
//! are in range (SSID, BSSID, signal; never a password).

use std::time::Duration;

use super::{Report, Status};
use crate::config::Config;
use crate::wifi::credentials::Credentials;
use crate::wifi::nm::{Nm, NmError};

/// The polkit actions the agent needs from NetworkManager.
const ACTIONS: [&str; 3] = [
    "org.freedesktop.NetworkManager.network-control",
    "org.freedesktop.NetworkManager.wifi.scan",
    "org.freedesktop.NetworkManager.settings.modify.system",
];

/// How to enable the polkit rule the package ships (not enabled without `[wifi]`).
const POLKIT_HINT: &str = "enable the polkit rule: sudo ln -s /usr/share/qucam-offload/50-qucam-offload.rules /etc/polkit-1/rules.d/ (docs/depot-wifi.md, systemd and polkit), then run doctor as the service user";

pub(super) async fn check_wifi(cfg: &Config, r: &mut Report) {
    let Some(w) = &cfg.wifi else {
        return;
    };
    let nm = match Nm::connect(&w.interface).await {
        Ok(nm) => nm,
        Err(e) => {
            let hint = match e {
                NmError::NoDevice(_) | NmError::NotWifi(_) => {
                    "set [wifi] interface to the Wi-Fi device (`nmcli device` lists them)"
                }
                _ => "start NetworkManager (systemctl enable --now NetworkManager)",
            };
            r.fail("wifi: NetworkManager", e.to_string(), hint);
            return;
        }
    };
    let version = nm.version().await.unwrap_or_else(|_| "?".into());
    r.add(
        Status::Pass,
        "wifi: NetworkManager",
        format!("version {version}, interface {} is Wi-Fi", w.interface),
    );
    check_permissions(&nm, r).await;
    if let Some(uplink) = &w.uplink {
        check_uplink(&nm, uplink, r).await;
    }
    let creds = match Credentials::load(cfg) {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                "wifi: passwords",
                format!("{e:#}"),
                "fix the file named above",
            );
            return;
        }
    };
    for p in creds.problems() {
        r.push(
            Status::Warn,
            "wifi: passwords",
            p.clone(),
            Some("fix the file named (the agent runs without what it skipped)"),
        );
    }
    check_in_range(&nm, &creds, r).await;
    check_suspicious(cfg, r).await;
}

/// The hotspots whose network failed the check after a join, from the state database.
async fn check_suspicious(cfg: &Config, r: &mut Report) {
    let db = crate::agent::db_path(&cfg.state_dir());
    if !db.exists() {
        return;
    }
    let rows = match crate::store::Store::open(&db) {
        Ok(store) => crate::commands::status::suspicious_hotspots(&store).await,
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) if rows.is_empty() => r.add(
            Status::Pass,
            "wifi: suspicious hotspots",
            "none".to_string(),
        ),
        Ok(rows) => {
            for line in crate::commands::status::suspicious_lines(&rows) {
                r.push(
                    Status::Warn,
                    "wifi: suspicious hotspots",
                    line,
                    Some("a rogue access point with a camera's SSID and password, or a camera set up with a wide network: see docs/depot-wifi.md, the network check after a join"),
                );
            }
        }
        Err(e) => r.push(
            Status::Warn,
            "wifi: suspicious hotspots",
            format!("cannot read the state database: {e:#}"),
            None::<String>,
        ),
    }
}

async fn check_permissions(nm: &Nm, r: &mut Report) {
    match nm.permissions().await {
        Ok(p) => {
            let missing: Vec<&str> = ACTIONS
                .iter()
                .filter(|a| p.get(**a).map(String::as_str) != Some("yes"))
                .copied()
                .collect();
            if missing.is_empty() {
                r.add(
                    Status::Pass,
                    "wifi: permissions",
                    "may scan, join and leave",
                );
            } else {
                r.fail(
                    "wifi: permissions",
                    format!("not allowed: {}", missing.join(", ")),
                    POLKIT_HINT,
                );
            }
        }
        Err(e) => r.fail("wifi: permissions", e.to_string(), POLKIT_HINT),
    }
}

async fn check_uplink(nm: &Nm, uplink: &str, r: &mut Report) {
    match nm.uplink_profile(uplink).await {
        Ok(Some(true)) => r.add(Status::Pass, "wifi: uplink", format!("profile {uplink:?} (autoconnect)")),
        Ok(Some(false)) => r.push(
            Status::Warn,
            "wifi: uplink",
            format!("profile {uplink:?} does not autoconnect"),
            Some("nmcli connection modify <uplink> connection.autoconnect yes: NetworkManager then brings the uplink back by itself should the agent die on a camera's hotspot"),
        ),
        Ok(None) => r.fail(
            "wifi: uplink",
            format!("no NetworkManager profile {uplink:?}"),
            "set [wifi] uplink to a profile's name or UUID (`nmcli connection`), or remove it when Ethernet carries the uplink",
        ),
        Err(e) => r.fail("wifi: uplink", e.to_string(), POLKIT_HINT),
    }
}

async fn check_in_range(nm: &Nm, creds: &Credentials, r: &mut Report) {
    let aps = match nm.scan(Duration::from_secs(10)).await {
        Ok(aps) => aps,
        Err(e) => {
            r.fail("wifi: scan", e.to_string(), POLKIT_HINT);
            return;
        }
    };
    let known: Vec<String> = aps
        .iter()
        .filter(|a| creds.for_ap(&a.ssid, &a.bssid).is_some())
        .map(|a| format!("{} ({}, {}%)", a.ssid_lossy(), a.bssid, a.strength))
        .collect();
    if known.is_empty() {
        r.push(
            Status::Warn,
            "wifi: in range",
            format!("no known camera hotspot among {} access point(s)", aps.len()),
            Some("a truck in the yard? its SSID and password in [[camera]], [wifi.passwords] or the fleet file"),
        );
    } else {
        r.add(Status::Pass, "wifi: in range", known.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::POLKIT_HINT;

    #[test]
    fn the_polkit_hint_gives_the_step_the_docs_show() {
        let docs = include_str!("../../../docs/depot-wifi.md");
        let step =
            "sudo ln -s /usr/share/qucam-offload/50-qucam-offload.rules /etc/polkit-1/rules.d/";
        assert!(POLKIT_HINT.contains(step), "{POLKIT_HINT}");
        assert!(docs.contains(step));
    }
}
