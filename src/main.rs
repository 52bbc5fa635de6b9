use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ssmfs::mount::main(ssmfs::cli::Cli::parse())
}
