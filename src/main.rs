use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<_> = std::env::args_os().collect();
    // No SOURCE is named "help" (an SSM path starts with '/'): `ssmfs help` asks for the help.
    if args.get(1).is_some_and(|a| a == "help") && args.len() == 2 {
        args[1] = "--help".into();
    }
    if args.get(1).is_some_and(|a| a == "docker-plugin") {
        return ssmfs::docker::main(args[1..].to_vec());
    }
    match ssmfs::mount::cli::Cli::parse_args(args) {
        Ok(cli) => ssmfs::mount::main(cli),
        Err(e) => {
            if e.use_stderr() {
                // For whoever started ssmfs through NOTIFY_SOCKET (systemd, the Docker plugin).
                ssmfs::mount::daemon::notify_failed(&ssmfs::mount::cli::one_line(&e));
            }
            e.exit()
        }
    }
}
