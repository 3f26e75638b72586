fn main() -> std::process::ExitCode {
    qucam_offload::sim::cli::main()
}
