//! Docker for the container tests: the real daemon (started by scripts/setup), images built once
//! per run from local files (there is no registry), and containers removed on drop.
//!
//! - [`image`]: a static busybox with this build of ssmfs and the libraries it loads.
//! - [`debian`]: a minimal Debian 12 with systemd, from debootstrap, kept in `target/` so that
//!   later runs reuse it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::succeeded;

/// Runs `docker ARGS`.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker: run scripts/setup, which installs docker.io and starts dockerd")
}

/// Runs `docker ARGS`, which must succeed; returns its standard output, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    succeeded(&docker(args)).trim().to_string()
}

/// Panics unless a Docker daemon answers: the tests need it, and a silent skip would hide that.
fn check_daemon() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
        assert!(
            out.status.success(),
            "no Docker daemon: run scripts/setup (it starts dockerd): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A name no other run or test uses.
pub fn unique(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "ssmfs-test-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The image `ssmfs-test-busybox`: /bin/busybox with its applets, /usr/bin/ssmfs (this build)
/// with the libraries `ldd` names, and /mnt/ssm. Built once per run.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<&'static str> = OnceLock::new();
    IMAGE.get_or_init(|| {
        check_daemon();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        for sub in ["bin", "usr/bin", "mnt/ssm", "tmp", "etc"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static");
        for applet in ["sh", "cat", "ls", "sleep", "id", "echo", "grep", "test"] {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
        let ssmfs = Path::new(env!("CARGO_BIN_EXE_ssmfs"));
        std::fs::copy(ssmfs, dir.join("usr/bin/ssmfs")).unwrap();
        for lib in libraries(ssmfs) {
            let to = dir.join(lib.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&lib, &to).unwrap();
        }
        // ssmfs checks for CA certificates before it builds its HTTPS client.
        std::fs::create_dir_all(dir.join("etc/ssl/certs")).unwrap();
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            dir.join("etc/ssl/certs/ca-certificates.crt"),
        )
        .expect("ca-certificates");
        import(dir, "ssmfs-test-busybox");
        "ssmfs-test-busybox"
    })
}

/// The shared libraries `binary` loads, the dynamic loader among them.
fn libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// `tar -C DIR -c . | docker import - NAME`, removing the image NAME was before (a run's
/// images would otherwise pile up untagged).
fn import(dir: &Path, name: &str) {
    let script = r#"old=$(docker images -q "$2")
tar -C "$1" -c . | docker import - "$2" >/dev/null
if [ -n "$old" ] && [ "$old" != "$(docker images -q "$2")" ]; then docker rmi "$old" >/dev/null 2>&1 || true; fi"#;
    let out = Command::new("bash")
        .args(["-c", script, "import"])
        .arg(dir)
        .arg(name)
        .output()
        .unwrap();
    succeeded(&out);
}

/// Debian packages in the systemd image: systemd as PID 1, and what a host running ssmfs has.
const DEBIAN_PACKAGES: &str = "systemd,systemd-sysv,dbus,ca-certificates";

/// The image `ssmfs-test-debian`: a minimal Debian 12 (debootstrap's minbase) with systemd.
/// The rootfs is built once into `target/test-rootfs` (about 40 s) and reused by later runs.
pub fn debian() -> &'static str {
    static IMAGE: OnceLock<&'static str> = OnceLock::new();
    IMAGE.get_or_init(|| {
        check_daemon();
        let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-rootfs");
        let rootfs = cache.join(format!(
            "bookworm-{:x}",
            DEBIAN_PACKAGES
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31) ^ b as u32)
        ));
        let done = rootfs.with_extension("done");
        if !done.exists() {
            let _ = std::fs::remove_dir_all(&rootfs);
            std::fs::create_dir_all(&cache).unwrap();
            let out = Command::new("debootstrap")
                .args(["--variant=minbase", &format!("--include={DEBIAN_PACKAGES}")])
                .arg("bookworm")
                .arg(&rootfs)
                .arg("http://deb.debian.org/debian")
                .output()
                .expect("debootstrap: run scripts/setup");
            succeeded(&out);
            std::fs::write(&done, "").unwrap();
        }
        import(&rootfs, "ssmfs-test-debian");
        "ssmfs-test-debian"
    })
}

/// A container, removed (with its anonymous volumes) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name NAME ARGS`.
    pub fn run(what: &str, args: &[&str]) -> Container {
        let name = unique(what);
        let mut all = vec!["run", "-d", "--name", &name];
        all.extend_from_slice(args);
        docker_ok(&all);
        Container { name }
    }

    /// `docker exec NAME ARGS`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", &self.name];
        all.extend_from_slice(args);
        docker(&all)
    }

    /// `docker exec NAME ARGS`, which must succeed; its standard output, trimmed.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        succeeded(&self.exec(args)).trim().to_string()
    }

    /// Runs `args` in the container until its output is `want`, for at most `limit`: for
    /// changes that arrive asynchronously (a refresh after a signal). Returns the last output.
    pub fn exec_until(&self, args: &[&str], want: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let out = self.exec(args);
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if text == want || start.elapsed() > limit {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn logs(&self) -> String {
        let out = docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}
