//! qucam-offload: gets dashcam video off Queclink "Qucam" cameras (CV100/CV200) and into S3.
//!
//! The workspace has three crates:
//! - [`qucam`] (`crates/qucam`): the typed HTTP client for the camera's web API (every quirk
//!   is absorbed there), clip names and the event-code table. It knows nothing of SQLite,
//!   S3 or this agent.
//! - [`qucam_sim`] (`crates/qucam-sim`): `qucam-sim`, a camera simulator for tests, demos and
//!   trying a setup without a vehicle; it uses `qucam`'s types.
//! - this package, `qucam-offload`: the agent, which uses both.
//!
//! Module map (each module's own doc comment says what it owns):
//! - [`config`]: the TOML configuration file, loaded and validated.
//! - [`key`]: object keys (where a clip goes in the bucket) and the key prefix check.
//! - [`store`]: the SQLite state database and the clip state machine.
//! - [`download`]: resumable, hashed, fsynced downloads into the spool; [`blocks`]: the
//!   per-block digests the delete challenge compares with the camera's bytes.
//! - [`upload`]: destinations (S3 with resumable multipart, or a local directory) and verification.
//! - [`agent`]: the loops that tie detection, listing, download, upload and retention together.
//! - [`wifi`]: depot Wi-Fi: join each camera's hotspot through NetworkManager, offload, leave.
//! - [`cli`]: the `qucam-offload` command line (clap types); [`commands`]: one file per
//!   command (`run`, `status`, `demo`, `doctor`, `camera`); [`exit`]: exit codes.
//! - [`service`]: the systemd notify protocol (readiness, status, watchdog, stopping).
//! - [`metrics`]: Prometheus `/metrics` and `/healthz`; [`notify`]: webhook and desktop
//!   notifications; [`progress`]: progress bars for `run --once` and `demo`.

pub mod agent;
pub mod blocks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod download;
pub mod exit;
pub mod key;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod service;
pub mod store;
pub mod upload;
pub mod wifi;
