//! A typed client for the web API of Queclink "Qucam" dashcams (CV100/CV200).
//!
//! The camera serves an HTTP API on its Wi-Fi hotspot (vendor document sections
//! 3.1-3.10): list the recorded clips, download them (with `Range` resume), delete them,
//! read device information, format the SD card, fetch thumbnails, start and stop an RTMP
//! push, and calibrate driver assistance. [`CameraClient`] has one typed method per
//! endpoint. The camera's replies are irregular (`data` as an array, as a string holding
//! JSON or as a plain message; `errorCode` as a number or a string; "Camera Busy" under a
//! success code; device information as JSON inside a string inside JSON): [`reply`]
//! absorbs every such quirk, so callers only see typed values or a [`CameraError`].
//!
//! A camera's answers are treated as untrusted: every reply is size-capped by its endpoint
//! (listings 64 MiB, thumbnails 4 MiB, the rest 64 KiB) while it is read, camera text is
//! cut and cleaned before it is shown ([`text`]), every read has an idle timeout, and clip names and paths are validated ([`ClipName`],
//! [`check_camera_path`], [`check_imei`]) before anything is derived from them.
//!
//! Modules:
//! - [`client`]: [`CameraClient`], one method per endpoint.
//! - [`options`]: [`ClientOptions`], [`ParamStyle`], [`ListQuery`], [`CameraId`].
//! - [`download`]: [`Download`], a streamed, resumable clip download.
//! - [`listing`]: bounded decoding of a listing reply (no more entries than asked for).
//! - [`reply`]: decoding of the reply envelope and payloads ([`FileEntry`], [`DeviceInfo`], …).
//! - [`error`]: the error type, [`CameraError`].
//! - [`clip_name`]: [`ClipName`] and checks of camera-supplied strings.
//! - [`events`]: the event-code table (names, offload priority, severity).
//! - [`secret`]: [`Secret`], a value never shown in logs, and the masking of quoted replies.
//! - [`text`]: camera text made safe to show (cut, control characters replaced, markup escaped).
//! - [`client_id`](mod@client_id): a `clientId` kept across restarts.
//!
//! # Example
//!
//! List the newest clips on a camera and download the first one:
//!
//! ```no_run
//! use qucam::{CameraClient, ClientOptions, ClipName, ListQuery};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let camera = CameraClient::new("http://192.168.43.1:2345", ClientOptions::new("my-client"))?;
//! let info = camera.device_info().await?;
//! println!("{} (IMEI {})", info.device_name.unwrap_or_default(), info.imei);
//!
//! let page = camera
//!     .list_files(&ListQuery { count: Some(20), ..ListQuery::default() })
//!     .await?;
//! for entry in &page {
//!     // The listing is the camera's word: validate before using a name or a path.
//!     let name = ClipName::parse(&entry.name)?;
//!     qucam::check_camera_path(&entry.path, &name)?;
//!     println!("{name}: {} ({:?} bytes)", qucam::event_name(name.event_code()), entry.size);
//! }
//! if let Some(first) = page.first() {
//!     let mut download = camera.download(&first.path, 0).await?;
//!     let mut bytes = 0;
//!     while let Some(chunk) = download.chunk().await? {
//!         bytes += chunk.len();
//!     }
//!     println!("downloaded {bytes} bytes");
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod client;
pub mod client_id;
pub mod clip_name;
pub mod download;
pub mod error;
pub mod events;
pub mod listing;
pub mod options;
pub mod reply;
pub mod secret;
pub mod text;

pub use client::CameraClient;
pub use client_id::client_id;
pub use clip_name::{
    ClipName, NameError, check_camera_path, check_imei, excerpt, excerpt_long, message_excerpt,
};
pub use download::{Download, parse_content_range};
pub use error::CameraError;
pub use events::{EVENT_CODES, EVENTS, Event, event_name, event_priority, is_severe};
pub use options::{CameraId, ClientOptions, ListQuery, ParamStyle};
pub use reply::{
    AdasExtrinsics, CalibrationKind, CalibrationState, DeviceInfo, FileEntry, FormatOutcome,
    PreviewState,
};
pub use secret::Secret;
