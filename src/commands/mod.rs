//! The commands of `qucam-offload`, one file each (the way rustic lays them out):
//! [`run`] (the agent: a daemon, or `--once`), [`status`], [`demo`], [`doctor`] and
//! [`camera`] (the camera's API by hand). [`main`] parses the command line
//! ([`crate::cli`]), starts the runtime and maps errors to exit codes ([`crate::exit`]).
//!
//! Import direction: `main.rs → commands → {cli, config, agent, upload, …}`; no module
//! below imports `commands`.

pub mod camera;
mod daemon;
pub mod demo;
pub mod doctor;
mod lifecycle;
mod logging;
pub mod run;
pub mod status;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::ConfigError;
use crate::exit::{EXIT_USAGE, Exit};

pub use logging::init_logging;
pub use status::{collect_status, format_status, print_status};

/// The whole program: parse, run the command, exit with its code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Some(c) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: {c}");
                return ExitCode::from(EXIT_USAGE);
            }
            if let Some(x) = e.downcast_ref::<Exit>() {
                eprintln!("error: {}", x.message);
                return ExitCode::from(x.code);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs one parsed command; returns its exit code.
pub async fn dispatch(cli: Cli) -> Result<u8> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Run { once } => run::run(config, once).await,
        Command::Status { json } => status::status(config, json).await,
        Command::Demo(args) => demo::demo(args).await,
        Command::Doctor { write_test } => doctor::run(config, write_test).await,
        Command::Camera(args) => camera::camera(config, args).await,
    }
}
