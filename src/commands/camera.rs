//! `qucam-offload camera …`: the camera's whole API by hand (device info, listing,
//! download with resume, delete, thumbnail, SD format, RTMP, calibration), against a
//! configured camera or any `--url`. The hotspot password is shown only on request.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::{
    CalibrateKind, CameraAction, CameraArgs, CameraSel, ParamsArg, RtmpAction, RtmpCamera,
};
use crate::config::Config;
use crate::exit::usage;
use qucam::{
    AdasExtrinsics, CalibrationKind, CameraClient, CameraId, ClientOptions, FormatOutcome,
    ListQuery, ParamStyle,
};

/// Runs one `camera` action; returns the exit code.
pub async fn camera(config: Option<&Path>, args: CameraArgs) -> Result<u8> {
    let client = client_for(config, &args)?;
    let json = args.json;
    match args.action {
        CameraAction::Info { show_password } => info(&client, show_password, json).await?,
        CameraAction::Files {
            from,
            to,
            events,
            camera,
            count,
            offset,
            all,
        } => {
            let q = ListQuery {
                time_window: time_window(from, to)?,
                event_types: events
                    .iter()
                    .map(|e| normalize_event(e))
                    .collect::<Result<_>>()?,
                camera_type: match camera {
                    CameraSel::Front => "_1.".into(),
                    CameraSel::Interior => "_2.".into(),
                    CameraSel::Both => String::new(),
                },
                count,
                offset,
                // Firmware before V2.1 ignores `count` and sends the whole listing.
                max_entries: Some(crate::agent::MAX_LISTING),
            };
            files(&client, q, all, json).await?
        }
        CameraAction::Download { path, output } => download(&client, &path, output, json).await?,
        CameraAction::Delete { paths } => {
            client.delete_files(&paths).await?;
            if json {
                print_json(&serde_json::json!({ "deleted": paths }))?;
            } else {
                println!("deleted {} clip(s)", paths.len());
            }
        }
        CameraAction::Thumbnail { path, output } => {
            let img = client.thumbnail(&path).await?;
            std::fs::write(&output, &img)
                .with_context(|| format!("cannot write {}", output.display()))?;
            if json {
                print_json(&serde_json::json!({ "file": output, "bytes": img.len() }))?;
            } else {
                println!("{}: {} bytes", output.display(), img.len());
            }
        }
        CameraAction::FormatSd { yes } => return format_sd(&client, yes, json).await,
        CameraAction::Rtmp { action } => rtmp(&client, action, json).await?,
        CameraAction::Calibrate { kind } => calibrate(&client, kind, json).await?,
        CameraAction::CalibrationParams => calibration_params(&client, json).await?,
    }
    Ok(0)
}

/// The client for `--url`, or for the configured camera `--name` (default: the only one).
fn client_for(config: Option<&Path>, args: &CameraArgs) -> Result<CameraClient> {
    let (url, mut opts) = match &args.url {
        Some(url) => {
            let state = directories::ProjectDirs::from("", "", "qucam-offload")
                .map(|d| d.data_dir().to_path_buf())
                .unwrap_or_else(std::env::temp_dir);
            let id = match &args.client_id {
                Some(id) => id.clone(),
                None => qucam::client_id(&state, None)
                    .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string()),
            };
            (url.clone(), ClientOptions::new(id))
        }
        None => {
            let cfg = Config::find_and_load(config)?;
            let cam = cfg.camera(args.name.as_deref()).map_err(usage)?;
            let id = match &args.client_id {
                Some(id) => id.clone(),
                None => qucam::client_id(&cfg.state_dir(), cam.client_id.as_deref()).with_context(
                    || format!("cannot keep the client id in {}", cfg.state_dir().display()),
                )?,
            };
            let mut o = ClientOptions::new(id);
            o.params = cam.params;
            o.connect_timeout = cam.connect_timeout;
            o.idle_timeout = cam.idle_timeout;
            (cam.url.clone(), o)
        }
    };
    if let Some(p) = args.params {
        opts.params = match p {
            ParamsArg::Form => ParamStyle::Form,
            ParamsArg::Query => ParamStyle::Query,
            ParamsArg::Json => ParamStyle::Json,
        };
    }
    CameraClient::new(&url, opts).map_err(|e| usage(e.to_string()))
}

/// A camera's string as the CLI prints it: cut, control characters replaced.
fn shown(s: &str) -> String {
    qucam::text::clean(s, qucam::text::MESSAGE_CHARS)
}

/// JSON output: `serde_json` escapes only U+0000 to U+001F; every other character a
/// terminal acts on (DEL, C1 controls, bidi overrides) is escaped here too (it can only be
/// inside a string, where `\uXXXX` means the same).
fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", escape_unsafe(&serde_json::to_string_pretty(v)?));
    Ok(())
}

/// `json` with every [`qucam::text::is_unsafe`] character written `\uXXXX`.
fn escape_unsafe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if qucam::text::is_unsafe(c) && !matches!(c, '\n' | ' ') {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn normalize_event(e: &str) -> Result<String> {
    let code = e.trim().trim_matches('_').to_ascii_uppercase();
    if !qucam::EVENT_CODES.contains(&code.as_str()) && code != "00" {
        return Err(usage(format!("unknown event code {e:?}")));
    }
    Ok(format!("_{code}_"))
}

/// `--from`/`--to` as the listing's `timeWindow` (empty: no window).
fn time_window(from: Option<String>, to: Option<String>) -> Result<String> {
    if from.is_none() && to.is_none() {
        return Ok(String::new());
    }
    let f = from.unwrap_or_else(|| "19700101000000".into());
    let t = to.unwrap_or_else(|| "20991231235959".into());
    check_stamp(&f)?;
    check_stamp(&t)?;
    Ok(format!("{f}:{t}"))
}

fn check_stamp(s: &str) -> Result<()> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
        .map(|_| ())
        .map_err(|_| usage(format!("{s:?} is not a time yyyyMMddHHmmss")))
}

async fn info(client: &CameraClient, show_password: bool, json: bool) -> Result<()> {
    let info = client.device_info().await?;
    if json {
        let mut v = serde_json::to_value(&info)?;
        if show_password {
            v["password"] = info.password.expose().into();
        }
        return print_json(&v);
    }
    // Camera text, shown only cut and with control characters replaced (no terminal
    // escape from a camera reaches the screen).
    let opt = |o: &Option<String>| o.as_deref().map_or_else(|| "-".into(), shown);
    println!("imei          {}", shown(&info.imei));
    println!("device        {}", opt(&info.device_name));
    println!("firmware      {}", opt(&info.application_version));
    println!("storage       {}", opt(&info.local_storage));
    println!(
        "sd card       {} {} {} (used {})",
        opt(&info.sd_card_type),
        opt(&info.sd_card_size),
        opt(&info.sd_card_format),
        opt(&info.sd_card_used_space)
    );
    println!("signal        {}", opt(&info.signal));
    println!("ssid          {}", opt(&info.ssid));
    if show_password {
        println!("password      {}", shown(info.password.expose()));
    } else {
        println!("password      ******** (--show-password to see it)");
    }
    Ok(())
}

async fn files(client: &CameraClient, mut q: ListQuery, all: bool, json: bool) -> Result<()> {
    let files = if all {
        let page = q.count.unwrap_or(50).max(1);
        q.count = Some(page);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut off = q.offset.unwrap_or(0);
        loop {
            q.offset = Some(off);
            let got = client.list_files(&q).await?;
            let n = got.len() as u32;
            for f in got {
                if seen.insert(f.path.clone()) {
                    out.push(f);
                }
            }
            if n < page || out.len() > 1_000_000 {
                break;
            }
            off += n;
        }
        out
    } else {
        client.list_files(&q).await?
    };
    if json {
        return print_json(&files);
    }
    println!("{:<28} {:>12}  path", "name", "size");
    for f in &files {
        let size = f.size.map_or("?".to_string(), |s| s.to_string());
        println!("{:<28} {:>12}  {}", shown(&f.name), size, shown(&f.path));
    }
    println!("{} clip(s)", files.len());
    Ok(())
}

async fn download(
    client: &CameraClient,
    path: &str,
    output: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let out = match output {
        Some(o) => o,
        None => {
            let name = path.rsplit('/').next().unwrap_or_default();
            let clip =
                qucam::ClipName::parse(name).map_err(|e| usage(format!("{e}; give -o FILE")))?;
            PathBuf::from(clip.as_str())
        }
    };
    // A refused path fails before anything is created; a failed first attempt
    // leaves no empty file behind (a partial one stays, to be resumed).
    client.file_url(path)?;
    let existed = out.exists();
    let bar = progress_bar();
    let bar2 = bar.clone();
    let done = crate::download::fetch(client, path, &out, None, &move |d, t| {
        if let Some(t) = t {
            bar2.set_length(t);
        }
        bar2.set_position(d);
    })
    .await;
    bar.finish_and_clear();
    if done.is_err() && !existed && std::fs::metadata(&out).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&out);
    }
    let done = done?;
    if json {
        return print_json(&serde_json::json!({
            "file": out, "size": done.size, "sha256": done.sha256_hex,
            "received": done.received, "resumed_from": done.resumed_from,
            "restarted": done.restarted,
        }));
    }
    let resumed = if done.resumed_from > 0 {
        format!(" (resumed from byte {})", done.resumed_from)
    } else {
        String::new()
    };
    println!(
        "{}: {} bytes, sha256 {}{resumed}",
        out.display(),
        done.size,
        done.sha256_hex
    );
    Ok(())
}

async fn format_sd(client: &CameraClient, yes: bool, json: bool) -> Result<u8> {
    if !yes {
        return Err(usage(
            "format-sd erases every recording on the camera; add --yes to do it",
        ));
    }
    let r = client.format_sd().await?;
    if json {
        print_json(&r)?;
    } else {
        println!("{r:?}");
    }
    Ok(if r == FormatOutcome::Formatted { 0 } else { 1 })
}

async fn rtmp(client: &CameraClient, action: RtmpAction, json: bool) -> Result<()> {
    match action {
        RtmpAction::Start { url, camera } => {
            let cam = match camera {
                RtmpCamera::Front => CameraId::Front,
                RtmpCamera::Interior => CameraId::Interior,
            };
            client.rtmp_start(&url, cam).await?;
        }
        RtmpAction::Stop => client.rtmp_stop().await?,
    }
    if json {
        print_json(&serde_json::json!({ "ok": true }))
    } else {
        println!("ok");
        Ok(())
    }
}

async fn calibrate(client: &CameraClient, kind: CalibrateKind, json: bool) -> Result<()> {
    let (k, failed, values) = match kind {
        CalibrateKind::Dms { failed } => (CalibrationKind::Dms, failed, None),
        CalibrateKind::Adas { values, failed } => {
            let x =
                AdasExtrinsics::from_wire(&values).map_err(|e| usage(format!("--values: {e}")))?;
            (CalibrationKind::Adas, failed, Some(x))
        }
    };
    let state = client.calibrate(k, !failed, values.as_ref()).await?;
    if json {
        print_json(&state)
    } else {
        println!("{state:?}");
        Ok(())
    }
}

async fn calibration_params(client: &CameraClient, json: bool) -> Result<()> {
    let x = client.calibration_params().await?;
    if json {
        return print_json(&x);
    }
    println!("horizon               {}", x.horizon);
    println!("car middle            {}", x.car_middle);
    println!("car width (cm)        {}", x.car_width);
    println!("camera height (cm)    {}", x.camera_height);
    println!("camera to axle (cm)   {}", x.camera_to_axle);
    println!("camera to bumper (cm) {}", x.camera_to_bumper);
    println!("camera to left wheel  {}", x.camera_to_left_wheel);
    Ok(())
}

/// A byte progress bar on a terminal, hidden otherwise.
fn progress_bar() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_escapes_what_a_terminal_acts_on() {
        let v = serde_json::json!({"name": "a\u{7f}b\u{9b}c\u{202e}d"});
        let shown = escape_unsafe(&serde_json::to_string_pretty(&v).unwrap());
        assert!(
            !shown.contains(['\u{7f}', '\u{9b}', '\u{202e}']),
            "{shown:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, v, "the same JSON");
    }
}
