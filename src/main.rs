fn main() -> std::process::ExitCode {
    ralph_supervise::main()
}
