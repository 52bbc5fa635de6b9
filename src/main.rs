use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "docker-plugin") {
        return ssmfs::docker::main(args[1..].to_vec());
    }
    match ssmfs::mount::cli::Cli::parse_args(args) {
        Ok(cli) => ssmfs::mount::main(cli),
        Err(e) => e.exit(),
    }
}
