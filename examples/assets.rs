//! Writes what the Debian package installs beside the binary, generated from the command line's
//! definition so that it never disagrees with `ssmfs --help`: the man page ssmfs.8 and shell
//! completions for bash, zsh and fish.
//!
//! `cargo run --example assets -- DIR` (scripts/package runs it).

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args_os()
            .nth(1)
            .expect("usage: assets OUTPUT_DIR"),
    );
    std::fs::create_dir_all(&dir)?;
    let cmd = ssmfs::mount::cli::Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut page)?;
    std::fs::write(dir.join("ssmfs.8"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), "ssmfs", &dir)?;
        println!("{}", path.display());
    }
    println!("{}", dir.join("ssmfs.8").display());
    Ok(())
}
