//! The pancake binary: hearth's CLI around the pancake app.

fn main() -> std::process::ExitCode {
    hearth::cli::run(pancake::app())
}
