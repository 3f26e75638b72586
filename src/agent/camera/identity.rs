//! Which camera is answering. Every camera in a depot comes up at the same hotspot address,
//! so another vehicle may take the address in the middle of a pass: the IMEI is read again
//! before each listing and after each of its pages, right before every request for a
//! clip's bytes (each attempt and resume), after each download (before its bytes are kept)
//! and right before every delete request. A camera that is not the pass's own has nothing
//! reconciled, kept or deleted (a download it finished is discarded, no attempt counted)
//! and ends the pass; the schedule then starts a pass at once for whichever camera answers
//! ([`super::schedule::Schedule::again`]). Bytes are only ever attributed to the IMEI that
//! was confirmed before they were requested and after they arrived. Not caught: a swap
//! between a check and the connection of the request right after it.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use qucam::{CameraClient, CameraError};

use crate::download::DownloadError;

/// Why the camera at the address could not be confirmed as the pass's own.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Identity {
    /// Another camera answers at the address.
    #[error("another camera answers at the address now (IMEI {found}, not {expected})")]
    Swapped { expected: String, found: String },
    /// The camera's IMEI could not be read.
    #[error("cannot confirm which camera answers: {0}")]
    Unconfirmed(CameraError),
}

impl Identity {
    /// As the error of the check before a download request: another camera refuses the
    /// request ([`DownloadError::Refused`]); a camera that cannot be asked fails it as the
    /// camera error it is (retried, or the camera is gone).
    pub(crate) fn before_download(self) -> DownloadError {
        match self {
            Identity::Unconfirmed(e) => DownloadError::Camera(e),
            swapped => DownloadError::Refused(Box::new(swapped)),
        }
    }
}

/// Reads `get_device_info` from the camera answering on `client`, retrying a busy or
/// briefly unreachable camera a few times.
pub(crate) async fn device_info(client: &CameraClient) -> Result<qucam::DeviceInfo, CameraError> {
    (|| async { client.device_info().await })
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_times(3)
                .with_jitter(),
        )
        .when(|e: &CameraError| e.is_transient())
        .await
}

/// Reads the IMEI of the camera answering on `client` and compares it with `expected`.
pub(crate) async fn confirm_imei(client: &CameraClient, expected: &str) -> Result<(), Identity> {
    let info = device_info(client).await.map_err(Identity::Unconfirmed)?;
    if info.imei == expected {
        Ok(())
    } else {
        Err(Identity::Swapped {
            expected: expected.to_string(),
            found: info.imei,
        })
    }
}
