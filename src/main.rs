fn main() -> std::process::ExitCode {
    qucam_offload::cli::main()
}
