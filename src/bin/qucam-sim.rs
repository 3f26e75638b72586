//! The `qucam-sim` binary: the camera simulator of crates/qucam-sim. It is built here, in the
//! root package, so that `cargo install --path .` installs it with the agent.

fn main() -> std::process::ExitCode {
    qucam_sim::cli::main()
}
