//! Outages: which failures are the destination's rather than the clip's
//! ([`UploadError::is_destination_wide`]), and [`Destination::probe`], the cheap request
//! that tells when a paused destination is back.
//!
//! A destination-wide failure says nothing about the clip being uploaded: the agent pauses
//! uploads to that destination instead of charging the clip an attempt.

use std::time::Duration;

use super::{Destination, UploadError};

/// Store error codes that refuse the agent as a whole (credentials, clock, bucket), not the
/// object: every other clip would get the same answer.
const DESTINATION_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "TokenRefreshRequired",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "RequestTimeTooSkewed",
];

/// Store error codes that mean the store is overloaded or unwell (after the per-request
/// retries), whatever the object.
pub(super) const UNWELL_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "BandwidthLimitExceeded",
];

/// How long one probe may take.
const PROBE_LIMIT: Duration = Duration::from_secs(20);

/// See [`UploadError::is_destination_wide`]: true when the failure is about the destination, not the clip: no usable answer
/// (connection refused, DNS failure, timeouts, a garbled reply), the store unwell
/// (5xx, 503 storms, throttling, once the per-request retries are spent), or a refusal
/// of the agent as a whole (access denied, expired or invalid credentials, a bad
/// signature, no such bucket, a skewed clock). Conflicts, checksum mismatches, bad keys,
/// local I/O and other per-object answers are the clip's.
pub(super) fn is_destination_wide(e: &UploadError) -> bool {
    match e {
        UploadError::Network { .. } | UploadError::TimedOut { .. } => true,
        UploadError::Service { status, code, .. } => {
            let code = code.as_str();
            DESTINATION_CODES.contains(&code)
                || UNWELL_CODES.contains(&code)
                || (*status >= 500 && code != "NotImplemented")
                || *status == 429
                || (*status == 403 && code.is_empty())
        }
        UploadError::Conflict { .. }
        | UploadError::ChecksumMismatch(_)
        | UploadError::InvalidKey(_)
        | UploadError::Io { .. }
        | UploadError::Journal(_)
        | UploadError::Other(_) => false,
    }
}

/// See [`Destination::probe`]: a cheap request that succeeds only when the destination takes uploads: HeadBucket
/// for S3, the directory being there for a local destination.
pub(super) async fn probe(dest: &Destination) -> Result<(), UploadError> {
    match dest {
        Destination::S3(d) => match tokio::time::timeout(PROBE_LIMIT, d.probe()).await {
            Ok(r) => r,
            Err(_) => Err(UploadError::TimedOut {
                op: "HeadBucket",
                message: format!("no answer in {}s", PROBE_LIMIT.as_secs()),
            }),
        },
        Destination::Local(d) => match tokio::fs::metadata(d.root()).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(UploadError::Other(format!(
                "{} is not a directory",
                d.root().display()
            ))),
            Err(e) => Err(UploadError::io(
                format!("reading {}", d.root().display()),
                e,
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> UploadError {
        UploadError::Service {
            op: "PutObject",
            status,
            code: code.into(),
            message: String::new(),
            transient: false,
        }
    }

    #[test]
    fn the_destination_being_unreachable_or_unwell_is_destination_wide() {
        let refused = UploadError::Network {
            op: "PutObject",
            message: "dispatch failure: io error: Connection refused (os error 111)".into(),
        };
        assert!(refused.is_destination_wide());
        assert!(service(503, "SlowDown").is_destination_wide());
        assert!(service(503, "").is_destination_wide());
        assert!(service(500, "InternalError").is_destination_wide());
        assert!(service(502, "").is_destination_wide());
        assert!(service(429, "").is_destination_wide());
        assert!(service(400, "RequestTimeout").is_destination_wide());
    }

    #[test]
    fn refusals_of_the_agent_are_destination_wide() {
        for (status, code) in [
            (403, "AccessDenied"),
            (400, "ExpiredToken"),
            (403, "InvalidAccessKeyId"),
            (403, "SignatureDoesNotMatch"),
            (404, "NoSuchBucket"),
            (403, "RequestTimeTooSkewed"),
        ] {
            assert!(service(status, code).is_destination_wide(), "{code}");
        }
    }

    #[test]
    fn failures_about_the_clip_are_not() {
        assert!(!service(400, "BadDigest").is_destination_wide());
        assert!(!service(400, "InvalidArgument").is_destination_wide());
        assert!(!service(400, "EntityTooLarge").is_destination_wide());
        assert!(!service(404, "NoSuchUpload").is_destination_wide());
        assert!(!service(412, "PreconditionFailed").is_destination_wide());
        assert!(!service(501, "NotImplemented").is_destination_wide());
        assert!(!UploadError::ChecksumMismatch("x".into()).is_destination_wide());
        assert!(
            !UploadError::Conflict {
                key: "k".into(),
                detail: "d".into()
            }
            .is_destination_wide()
        );
        assert!(!UploadError::InvalidKey("/x".into()).is_destination_wide());
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert!(!UploadError::io("reading clip", io).is_destination_wide());
        assert!(!UploadError::Other("impossible reply".into()).is_destination_wide());
    }

    #[tokio::test]
    async fn a_local_destination_is_up_while_its_directory_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("clips");
        let dest = Destination::Local(super::super::LocalDestination::new(&root));
        assert!(dest.probe().await.is_err());
        std::fs::create_dir(&root).unwrap();
        assert!(dest.probe().await.is_ok());
    }
}
