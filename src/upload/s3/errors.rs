//! SDK errors mapped to [`UploadError`]: the code tables that say whether retrying can help,
//! and [`error_chain`], an error and its causes as one readable line.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::super::UploadError;
use super::super::outage::UNWELL_CODES;
use super::stall::Stalled;

/// Whether a conditional write lost (412 `PreconditionFailed`).
pub(super) fn is_precondition_failed(err: &UploadError) -> bool {
    matches!(err, UploadError::Service { status: 412, .. })
        || err.code() == Some("PreconditionFailed")
}

/// Maps an SDK error to [`UploadError`]: no usable answer (dispatch failure, timeout,
/// unparseable response) is transient; a service error is classified by code and status.
pub(crate) fn map_sdk_err<E>(op: &'static str, err: SdkError<E>) -> UploadError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or_default().to_owned();
            let message = se.err().message().unwrap_or_default().to_owned();
            service_error(op, status, code, message)
        }
        SdkError::ConstructionFailure(_) => UploadError::Other(format!(
            "{op}: could not build the request: {}",
            error_chain(&err)
        )),
        other if timed_out(&other) => UploadError::TimedOut {
            op,
            message: error_chain(&other),
        },
        other => UploadError::Network {
            op,
            message: error_chain(&other),
        },
    }
}

/// Whether the request waited out a timeout: the SDK's own (connect, operation) or the
/// stall guard's [`Stalled`] anywhere in the error's causes.
fn timed_out<E, R>(err: &SdkError<E, R>) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) if d.is_timeout() => true,
        _ => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
            while let Some(e) = cause {
                if e.is::<Stalled>() {
                    return true;
                }
                cause = e.source();
            }
            false
        }
    }
}

/// An error and its causes as one readable line, `outer: cause: root cause`, for people
/// (status, doctor, logs). The SDK's own `DisplayErrorContext` appends a `Debug` dump of
/// its error structs (`DispatchFailure(DispatchFailure { source: ConnectorError { … `),
/// which says nothing more to a reader. A cause whose text the line already holds is skipped.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    // One line: a multi-line cause (the credential chain lists each provider) is joined.
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

const CHECKSUM_CODES: &[&str] = &[
    "BadDigest",
    "InvalidDigest",
    "XAmzContentSHA256Mismatch",
    "XAmzContentChecksumMismatch",
];

const PERMANENT_CODES: &[&str] = &[
    "NoSuchBucket",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidBucketName",
    "NotImplemented",
];

/// Worth retrying: the codes of an unwell store ([`UNWELL_CODES`]), and these.
const TRANSIENT_CODES: &[&str] = &[
    "OperationAborted",
    "ConditionalRequestConflict",
    "RequestTimeTooSkewed",
];

fn service_error(op: &'static str, status: u16, code: String, message: String) -> UploadError {
    if CHECKSUM_CODES.contains(&code.as_str()) {
        return UploadError::ChecksumMismatch(format!("{op}: {code}: {message}"));
    }
    let transient = if PERMANENT_CODES.contains(&code.as_str()) {
        false
    } else {
        UNWELL_CODES.contains(&code.as_str())
            || TRANSIENT_CODES.contains(&code.as_str())
            || status >= 500
            || status == 429
            || status == 408
    };
    UploadError::Service {
        op,
        status,
        code,
        message,
        transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_service_errors() {
        let e = |status, code: &str| service_error("Op", status, code.into(), String::new());
        assert!(e(503, "SlowDown").is_transient());
        assert!(e(503, "").is_transient());
        assert!(e(500, "InternalError").is_transient());
        assert!(e(400, "RequestTimeout").is_transient());
        assert!(e(429, "").is_transient());
        assert!(!e(403, "AccessDenied").is_transient());
        assert!(!e(404, "NoSuchBucket").is_transient());
        assert!(!e(403, "InvalidAccessKeyId").is_transient());
        assert!(!e(501, "NotImplemented").is_transient());
        assert!(matches!(
            e(400, "BadDigest"),
            UploadError::ChecksumMismatch(_)
        ));
    }

    #[test]
    fn error_chain_is_one_line_without_debug_dumps() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused\n  (twice)",
        ));
        assert_eq!(
            error_chain(&e),
            "dispatch failure: connection refused (twice)"
        );
    }
}
