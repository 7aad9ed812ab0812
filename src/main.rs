fn main() -> std::process::ExitCode {
    hayate_tracker::cli::main()
}
