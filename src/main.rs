//! The `bigbrotr` binary: parses the command line and hands over to [`bigbrotr::cli`].

fn main() -> std::process::ExitCode {
    bigbrotr::cli::main()
}
