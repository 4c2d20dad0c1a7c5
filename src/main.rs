//! The `volmig` binary: everything is in `volmig::cli`.

fn main() -> std::process::ExitCode {
    volmig::cli::main()
}
