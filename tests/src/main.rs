//! The `diffy` command, built here for the end-to-end tests.

fn main() -> std::process::ExitCode {
    diffy_cli::main()
}
