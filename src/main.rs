use std::process::ExitCode;

fn main() -> ExitCode {
    match ssmfs::mount::cli::Cli::parse_args(std::env::args_os()) {
        Ok(cli) => ssmfs::mount::main(cli),
        Err(e) => e.exit(),
    }
}
