fn main() -> std::process::ExitCode {
    qucam_offload::commands::main()
}
