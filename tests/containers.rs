//! Containers, the way the kernel sees them: a container is another mount namespace that gets a
//! bind mount of a directory of the mount (`docker run -v /mnt/ssm/app:/config:ro`, a
//! Kubernetes hostPath or subPath) and reads it as another uid. A value refreshed in AWS must
//! show through all of that without remounting anything.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use common::{Moto, Mount};

/// A "container": a shell in a new mount namespace with a read-only bind mount of one
/// directory of the mount at `$2`, reading as uid 65534 when told to.
struct Container {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const CONTAINER: &str = r#"
set -euo pipefail
mount --bind "$1" "$2"
mount -o remount,bind,ro "$2"
echo ready
# One command per line from the test: `read PATH` answers with the file's content as uid
# 65534, or with the error.
while read -r cmd path; do
    case "$cmd" in
    read) setpriv --reuid=65534 --regid=65534 --clear-groups cat "$path" 2>&1 || true; echo ;;
    write) (echo 1 > "$path") 2>&1 || true ;;
    esac
    echo "--"
done
"#;

impl Container {
    fn start(dir: &Path, at: &Path) -> Container {
        let mut child = std::process::Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "slave",
                "bash",
                "-c",
                CONTAINER,
                "c",
            ])
            .arg(dir)
            .arg(at)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n", "the container's bind mount failed");
        Container {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, cmd: &str, path: &Path) -> String {
        writeln!(self.stdin, "{cmd} {}", path.display()).unwrap();
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the container died"
            );
            if line == "--\n" {
                return answer.trim_end().to_string();
            }
            answer.push_str(&line);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_refreshed_value_shows_through_a_bind_mount_in_another_namespace() {
    let moto = Moto::start();
    moto.put("/app/config/db_host", "String", "db-1");
    moto.put("/app/config/password", "SecureString", "hunter2");
    let mount = Mount::start(&moto, "/app", &["--allow-other"]);
    std::fs::set_permissions(mount.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let at = tempfile::tempdir().unwrap();
    std::fs::set_permissions(at.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let mut container = Container::start(&mount.path("config"), at.path());

    let host = at.path().join("db_host");
    assert_eq!(container.ask("read", &host), "db-1");
    // The original mount, as the new namespace's copy of it shows it.
    assert_eq!(container.ask("read", &mount.path("config/db_host")), "db-1");
    let refused = container.ask("read", &at.path().join("password"));
    assert!(refused.contains("Permission denied"), "{refused}");
    let refused = container.ask("write", &at.path().join(".refresh"));
    assert!(refused.contains("Read-only file system"), "{refused}");

    moto.put("/app/config/db_host", "String", "db-2");
    mount.refresh("").unwrap();
    assert_eq!(
        container.ask("read", &host),
        "db-2",
        "the bind mount shows the refreshed value"
    );
    assert_eq!(container.ask("read", &mount.path("config/db_host")), "db-2");
    assert_eq!(mount.read_str("config/db_host"), "db-2");
}

#[test]
fn without_allow_other_a_container_uid_is_refused() {
    let moto = Moto::start();
    moto.put("/app/config/db_host", "String", "db-1");
    let mount = Mount::start(&moto, "/app", &[]);
    std::fs::set_permissions(mount.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let at = tempfile::tempdir().unwrap();
    std::fs::set_permissions(at.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let mut container = Container::start(&mount.path("config"), at.path());
    let refused = container.ask("read", &at.path().join("db_host"));
    assert!(refused.contains("Permission denied"), "{refused}");
}

/// The shipped container and DaemonSet examples give ssmfs a command line it accepts.
#[test]
fn the_shipped_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let dockerfile = std::fs::read_to_string(root.join("container/Dockerfile")).unwrap();
    let json_list = |prefix: &str| -> Vec<String> {
        let line = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the Dockerfile"));
        serde_json::from_str(line).unwrap()
    };
    let mut docker = json_list("ENTRYPOINT ");
    docker.extend(json_list("CMD "));
    let cli = ssmfs::mount::cli::Cli::parse_args(&docker).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cli.foreground,
        "a container's main process stays in the foreground"
    );

    let yaml = std::fs::read_to_string(root.join("kubernetes/daemonset.yaml")).unwrap();
    let mut args = vec!["ssmfs".to_string(), "--foreground".to_string()];
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "args:").skip(1);
    while let Some(item) = lines.next().and_then(|l| l.trim().strip_prefix("- ")) {
        args.push(serde_json::from_str(item).unwrap());
    }
    let cli = ssmfs::mount::cli::Cli::parse_args(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(cli.allow_other, "readers in other pods are other users");
    assert!(cli.metrics_addr.is_some());
    assert!(yaml.contains("mountPropagation: Bidirectional"));
    assert!(yaml.contains("mountPropagation: HostToContainer"));
}
