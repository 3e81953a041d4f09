//! `diffy`: see `diffy --help`, and the `diffy-cli` library for the code.

fn main() -> std::process::ExitCode {
    diffy_cli::main()
}
