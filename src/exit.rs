//! Exit codes, and the error that carries its own.
//!
//! 0 success; 1 work failed or remains; 2 usage or config error ([`EXIT_USAGE`]);
//! 3 no configured camera reachable (`run --once`).

/// Exit code for a usage or config error.
pub const EXIT_USAGE: u8 = 2;

/// An error carrying its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

/// A usage error (exit code 2) with `msg`.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    Exit {
        code: EXIT_USAGE,
        message: msg.into(),
    }
    .into()
}
