//! `qucam-sim`, the camera simulator (crates/qucam-sim), installed with the agent by
//! `cargo install --path .`.

fn main() -> std::process::ExitCode {
    qucam_sim::cli::main()
}
