fn main() -> std::process::ExitCode {
    qucam_sim::cli::main()
}
