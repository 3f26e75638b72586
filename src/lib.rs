//! qucam-offload: gets dashcam video off Queclink "Qucam" cameras (CV100/CV200) and into S3.
//!
//! Module map (each module's own doc comment says what it owns):
//! - [`config`]: the TOML configuration file, loaded and validated.
//! - [`camera`]: the typed HTTP client for the camera's web API; every quirk is absorbed here.
//! - [`clip`]: clip file names (validation, event codes, camera) and object keys.
//! - [`store`]: the SQLite state database and the clip state machine.
//! - [`download`]: resumable, hashed, fsynced downloads into the spool.
//! - [`upload`]: destinations (S3 with resumable multipart, or a local directory) and verification.
//! - [`agent`]: the loops that tie detection, listing, download, upload and retention together.
//! - [`sim`]: `qucam-sim`, a camera simulator for tests, demos and trying a setup without a vehicle.
//! - [`cli`]: the `qucam-offload` command line (clap types); [`commands`]: one file per
//!   command (`run`, `status`, `demo`, `doctor`, `camera`); [`exit`]: exit codes.
//! - [`service`]: the systemd notify protocol (readiness, status, watchdog, stopping).
//! - [`metrics`]: Prometheus `/metrics` and `/healthz`; [`notify`]: webhook and desktop
//!   notifications; [`progress`]: progress bars for `run --once` and `demo`.

pub mod agent;
pub mod camera;
pub mod cli;
pub mod clip;
pub mod commands;
pub mod config;
pub mod download;
pub mod exit;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod service;
pub mod sim;
pub mod store;
pub mod upload;
