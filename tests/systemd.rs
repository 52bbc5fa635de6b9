//! Running under systemd: the notify protocol as systemd sees it (READY=1 once the mount is
//! live, STATUS= after refreshes, STOPPING=1 at SIGTERM), SIGHUP as `systemctl reload`, the
//! unit file as `systemd-analyze verify` reads it, and the metrics endpoint.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Child;

use common::{free_port, is_mounted, notify_socket, spawn_foreground, Moto};

/// Plays systemd: a notify socket, and `ssmfs --foreground` started with NOTIFY_SOCKET set.
struct Systemd {
    _dir: tempfile::TempDir,
    mnt: std::path::PathBuf,
    sock: UnixDatagram,
    child: Child,
}

impl Systemd {
    fn start(url: &str, args: &[&str]) -> Systemd {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let (sock_path, sock) = notify_socket(dir.path());
        let child = spawn_foreground(url, "ssm:/app", &mnt, args, &sock_path);
        Systemd {
            _dir: dir,
            mnt,
            sock,
            child,
        }
    }

    /// The next datagram.
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("a notification from ssmfs within the limit");
        String::from_utf8(buf[..n].to_vec())
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// Datagrams until one that starts with `prefix`, which is returned.
    fn until(&self, prefix: &str) -> String {
        loop {
            let msg = self.next();
            if msg.starts_with(prefix) {
                return msg;
            }
        }
    }

    /// Waits for a failed start; its standard error.
    fn failed(mut self) -> String {
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "{status}: {err}");
        assert!(!is_mounted(&self.mnt), "a failed start left a mount: {err}");
        err
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if is_mounted(&self.mnt) {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn ready_after_the_mount_is_live_status_after_refreshes_stopping_at_sigterm() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "1");
    let mut sd = Systemd::start(&moto.url(), &[]);

    sd.until("READY=1");
    assert!(is_mounted(&sd.mnt), "READY=1 before the mount was live");
    assert_eq!(std::fs::read(sd.mnt.join("a")).unwrap(), b"1");
    // The start-up check listed the whole source: its status says so.
    assert_eq!(sd.until("STATUS="), "STATUS=refreshed /app: 1 parameter");

    // systemctl reload: a parameter created since is there after the refresh it causes.
    moto.put("/app/b", "String", "2");
    sd.signal(libc::SIGHUP);
    assert_eq!(sd.until("STATUS="), "STATUS=refreshed /app: 2 parameters");
    assert_eq!(std::fs::read(sd.mnt.join("b")).unwrap(), b"2");
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sd.mnt.join(".stats")).unwrap()).unwrap();
    assert_eq!(stats["groups"]["/app"]["parameters"], 2, "{stats}");

    sd.signal(libc::SIGTERM);
    assert_eq!(sd.until("STOPPING=1"), "STOPPING=1");
    let status = sd.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&sd.mnt), "still mounted after SIGTERM");
}

#[test]
fn a_failed_start_never_says_ready() {
    let url = Moto::start().url(); // and stopped: nothing answers there
    let sd = Systemd::start(&url, &[]);
    let sock = sd.sock.try_clone().unwrap();
    let mnt = sd.mnt.clone();
    let err = sd.failed();
    assert!(err.contains("cannot reach"), "{err}");
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    while let Ok(n) = sock.recv(&mut buf) {
        assert!(
            !buf[..n].starts_with(b"READY=1"),
            "READY=1 from a failed start"
        );
    }
    assert!(!is_mounted(&mnt));
}

/// GET `path` over plain HTTP/1.0; the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn metrics_show_the_figures_of_stats_in_prometheus_format() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "secret-looking-value");
    let port = free_port();
    let sd = Systemd::start(&moto.url(), &["-o", &format!("metrics_addr={port}")]);
    sd.until("READY=1");
    assert_eq!(
        std::fs::read(sd.mnt.join("a")).unwrap(),
        b"secret-looking-value"
    );

    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    assert!(
        body.contains("ssmfs_api_calls_total{operation=\"GetParametersByPath\"} "),
        "{body}"
    );
    assert!(body.contains("ssmfs_cache_hits_total "), "{body}");
    assert!(
        body.contains("ssmfs_group_parameters{group=\"/app\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("ssmfs_group_seconds_since_refresh{group=\"/app\"} "));
    assert!(!body.contains("secret-looking-value"));
    assert!(body.ends_with("# EOF\n"));
    assert_eq!(http_get(port, "/other").0, "HTTP/1.0 404 Not Found");

    // A port that is taken is a start-up error that names the option (and, as every failed
    // start, leaves nothing mounted).
    let out = Systemd::start(&moto.url(), &["--metrics-addr", &port.to_string()]).failed();
    assert!(out.contains("--metrics-addr 127.0.0.1:"), "{out}");
    assert!(out.contains("choose a free port"), "{out}");
}

/// The units as shipped, with ExecStart pointing at this build; any warning fails.
#[test]
fn the_units_pass_systemd_analyze_verify() {
    for (file, instance) in [
        ("ssmfs@.service", "ssmfs@test.service"),
        ("ssmfs-docker.service", "ssmfs-docker.service"),
    ] {
        let unit = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(file),
        )
        .unwrap();
        assert!(unit.contains("Type=notify"), "{file}");
        if file == "ssmfs@.service" {
            assert!(unit.contains("ExecStart=/usr/bin/ssmfs --foreground"));
            assert!(unit.contains(r#"ExecReload=/bin/sh -c 'kill -HUP "$$MAINPID"'"#));
        } else {
            assert!(unit.contains("ExecStart=/usr/bin/ssmfs docker-plugin"));
            // Restarting the plugin must leave the volumes' mount processes serving.
            assert!(unit.contains("KillMode=process"));
        }
        // Each of these gives the service its own mount namespace, where the mount would be
        // hidden.
        for option in [
            "ProtectSystem=",
            "ProtectHome=",
            "PrivateTmp=",
            "PrivateDevices=",
            "PrivateUsers=",
            "ProtectKernelTunables=",
            "ProtectKernelModules=",
            "ProtectKernelLogs=",
            "ProtectControlGroups=",
            "ProtectProc=",
            "ReadOnlyPaths=",
        ] {
            assert!(
                !unit.lines().any(|l| l.starts_with(option)),
                "{file}: {option} would hide the mount from the host"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let instance = dir.path().join(instance);
        std::fs::write(
            &instance,
            unit.replace("/usr/bin/ssmfs", env!("CARGO_BIN_EXE_ssmfs")),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&instance)
            .output()
            .expect("systemd-analyze (Debian package systemd; scripts/setup installs it)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{file}: {}: {stderr}",
            out.status
        );
    }
}
