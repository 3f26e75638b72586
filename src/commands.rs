//! The agent-facing commands: `run`, `status` and `demo`.
use std::path::Path;

use anyhow::Result;

use crate::cli::Command;

pub async fn dispatch(_config: Option<&Path>, _cmd: Command) -> Result<u8> {
    Err(crate::cli::usage("not built yet"))
}
