//! The Debian package: `scripts/package --dev` builds it from this build with cargo-deb, and it
//! must install the binary, the unit, the man page and the completions, and depend on fuse3.

use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_debian_package_installs_binary_unit_man_page_and_completions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run(Command::new(root.join("scripts/package")).arg("--dev"));
    let version = env!("CARGO_PKG_VERSION");
    let deb = std::fs::read_dir(root.join("target/debian"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("ssmfs_{version}")) && name.ends_with(".deb")
        })
        .expect("target/debian/ssmfs_VERSION_ARCH.deb");

    let info = run(Command::new("dpkg-deb").arg("--field").arg(&deb));
    assert!(info.contains("Package: ssmfs"), "{info}");
    let depends = info.lines().find(|l| l.starts_with("Depends:")).unwrap();
    assert!(depends.contains("fuse3"), "{depends}");
    assert!(depends.contains("ca-certificates"), "{depends}");

    let unpacked = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(unpacked.path()));
    let at = |p: &str| unpacked.path().join(p);
    for file in [
        "usr/bin/ssmfs",
        "lib/systemd/system/ssmfs@.service",
        "lib/systemd/system/ssmfs-docker.service",
        "usr/share/doc/ssmfs/examples/ssmfs.conf.example",
        "usr/share/bash-completion/completions/ssmfs",
        "usr/share/zsh/vendor-completions/_ssmfs",
        "usr/share/fish/vendor_completions.d/ssmfs.fish",
    ] {
        assert!(at(file).is_file(), "{file} is not in the package");
    }
    let version_line = run(Command::new(at("usr/bin/ssmfs")).arg("--version"));
    assert_eq!(version_line.trim(), format!("ssmfs {version}"));

    // The man page (compressed or not) renders, with the options of --help.
    let man_dir = at("usr/share/man/man8");
    let page = std::fs::read_dir(&man_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ssmfs.8")
        })
        .expect("ssmfs.8 in usr/share/man/man8");
    let text = run(Command::new("man")
        .arg("-l")
        .arg("-P")
        .arg("cat")
        .arg(&page)
        .env("MANWIDTH", "100"));
    for option in ["--max-age", "--metrics-addr", "-o", "SOURCE", "MOUNTPOINT"] {
        assert!(text.contains(option), "the man page lacks {option}");
    }

    // bash loads the completion and completes an option.
    let completed = run(Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(ssmfs --metrics); COMP_CWORD=1; _ssmfs ssmfs --metrics ssmfs; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        at("usr/share/bash-completion/completions/ssmfs").display()
    )));
    assert!(completed.contains("--metrics-addr"), "{completed}");
}
