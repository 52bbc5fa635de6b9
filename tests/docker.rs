//! Containers under the real Docker daemon: a directory of the mount bound into a container
//! that reads as another user, ssmfs itself in a container mounting for the host, and the
//! volume driver's whole cycle. Images are built once per run from local files
//! (tests/common/docker.rs).

mod common;

use std::io::BufReader;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::docker::{docker, docker_ok, image, unique, Container};
use common::{is_mounted, notify_socket_at, ssmfs, wait_for, Moto, Mount};

#[test]
fn a_container_reads_a_bound_directory_as_another_user_and_sees_refreshes() {
    let moto = Moto::start();
    moto.put("/app/db/password", "SecureString", "first-secret");
    moto.put("/app/db/host", "String", "db.internal");
    // Owned by uid 1000, so that SecureString files (0400) are that user's to read.
    let mount = Mount::start(&moto, "/app", &["--allow-other", "--uid", "1000"]);
    let bind = format!("{}:/config:ro", mount.path("db").display());
    let c = Container::run(
        "reader",
        &[
            "--user",
            "1000",
            "--network",
            "none",
            "-v",
            &bind,
            image(),
            "sleep",
            "600",
        ],
    );
    assert_eq!(c.exec_ok(&["id", "-u"]), "1000");
    assert_eq!(c.exec_ok(&["cat", "/config/password"]), "first-secret");
    assert_eq!(c.exec_ok(&["cat", "/config/host"]), "db.internal");

    moto.put("/app/db/password", "SecureString", "second-secret");
    mount.refresh("db").unwrap();
    assert_eq!(c.exec_ok(&["cat", "/config/password"]), "second-secret");

    // The bind is read-only: the container cannot force refreshes.
    let write = c.exec(&["sh", "-c", "echo 1 > /config/.refresh"]);
    assert!(!write.status.success());
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "{write:?}"
    );
}

/// A directory bound onto itself and made shared, as the mountpoint's parent must be for a
/// mount made in a container to reach the host (`-v DIR:DIR:rshared`); unmounted on drop.
struct SharedDir {
    dir: tempfile::TempDir,
}

impl SharedDir {
    fn new() -> SharedDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        for args in [["--bind", path, path], ["--make-shared", path, ""]] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            let out = Command::new("mount").args(&args).output().unwrap();
            common::succeeded(&out);
        }
        SharedDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn ssmfs_in_a_container_mounts_for_the_host_and_for_other_containers() {
    let moto = Moto::start();
    moto.put("/app/db/host", "String", "db.internal");
    let shared = SharedDir::new();
    let mnt = shared.path().join("app");
    std::fs::create_dir(&mnt).unwrap();
    let volume = format!("{0}:{0}:rshared", shared.path().display());
    let endpoint = moto.url();
    let mnt_arg = mnt.to_str().unwrap();
    // As deploy/container/Dockerfile runs it.
    let daemon = Container::run(
        "daemon",
        &[
            "--network",
            "host",
            "--device",
            "/dev/fuse",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "apparmor:unconfined",
            "-e",
            "AWS_ACCESS_KEY_ID=test",
            "-e",
            "AWS_SECRET_ACCESS_KEY=test",
            "-e",
            "AWS_REGION=us-east-1",
            "-v",
            &volume,
            image(),
            "/usr/bin/ssmfs",
            "--foreground",
            "ssm:/app",
            mnt_arg,
            "-o",
            "allow_other",
            "--endpoint-url",
            &endpoint,
        ],
    );
    assert!(
        wait_for(Duration::from_secs(60), || is_mounted(&mnt)),
        "the mount never reached the host: {}",
        daemon.logs()
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("db/host")).unwrap(),
        "db.internal"
    );
    let bind = format!("{}:/config:ro", mnt.display());
    let out = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "65534",
        "-v",
        &bind,
        image(),
        "cat",
        "/config/db/host",
    ]);
    assert_eq!(out, "db.internal");

    // `docker stop` sends SIGTERM: ssmfs unmounts and exits 0.
    docker_ok(&["stop", &daemon.name]);
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &daemon.name]);
    assert_eq!(code, "0", "{}", daemon.logs());
    assert!(
        !is_mounted(&mnt),
        "still mounted on the host after docker stop"
    );
}

/// `ssmfs docker-plugin` on a socket of its own, so that its driver name is this test's; stopped
/// with SIGTERM on drop.
struct Plugin {
    child: Child,
    driver: String,
    state: PathBuf,
    socket: PathBuf,
    _notify: UnixDatagram,
    log: PathBuf,
}

impl Plugin {
    fn start(state: &Path, driver: &str) -> Plugin {
        let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
        let (notify_path, notify) =
            notify_socket_at(&state.parent().unwrap().join(unique("notify")));
        let log = state.with_extension(format!("log-{}", unique("plugin")));
        let mut child = ssmfs()
            .arg("docker-plugin")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(state)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("SSMFS_RUNTIME_DIR", state.with_extension("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut log_file = std::fs::File::create(&log).unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut BufReader::new(stderr), &mut log_file);
        });
        let mut buf = [0u8; 256];
        let n = notify
            .recv(&mut buf)
            .expect("the plugin never said READY=1");
        assert!(buf[..n].starts_with(b"READY=1"));
        Plugin {
            child,
            state: state.to_path_buf(),
            driver: driver.to_string(),
            socket,
            _notify: notify,
            log,
        }
    }

    fn stop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "plugin exited with {status}: {}",
            self.log()
        );
        assert!(!self.socket.exists(), "the socket is left behind");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            // A test that failed half way leaves volumes that only this driver can remove.
            let filter = format!("driver={}", self.driver);
            let listed = docker(&["volume", "ls", "-q", "--filter", &filter]);
            for volume in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                let _ = docker(&["volume", "rm", "-f", volume]);
            }
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The stderr of a docker command that must have failed.
fn failed(args: &[&str]) -> String {
    let out = docker(args);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `docker volume create -d DRIVER -o OPT… NAME`.
fn volume_create<'a>(driver: &'a str, opts: &[&'a str], name: &'a str) -> Vec<&'a str> {
    let mut args = vec!["volume", "create", "-d", driver];
    for opt in opts {
        args.extend(["-o", opt]);
    }
    args.push(name);
    args
}

/// The mount ID of what is mounted at `path` (from mountinfo), if anything.
fn mount_id(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines()
        .find(|line| line.split(' ').nth(4) == Some(path))
        .map(|line| line.split(' ').next().unwrap().to_string())
}

#[test]
fn the_volume_driver_cycle_create_share_restart_release_remove() {
    let moto = Moto::start();
    moto.put("/app/db/host", "String", "db.internal");
    moto.put("/app/db/password", "SecureString", "first-secret");
    let dir = tempfile::tempdir().unwrap();
    let driver = unique("driver");
    let mut plugin = Plugin::start(&dir.path().join("state"), &driver);
    let d = driver.as_str();
    let endpoint = format!("endpoint_url={}", moto.url());

    // Bad options fail the create, with ssmfs's own words.
    for (opts, says) in [
        (
            &["source=/app", "max_agee=5"][..],
            "unknown mount option 'max_agee=5'",
        ),
        (&["max_age=5"], "no source: give -o source=ssm:/PATH"),
        (
            &["Source=ssm:/app"],
            "unknown mount option 'Source=ssm:/app'",
        ),
        (&["source=/app", "uid=abc"], "for '-o uid=<UID>'"),
        (&["source=app"], "must start with '/'"),
        (
            &["source=/app", "max_age=soon"],
            "'soon' is not a whole number of seconds",
        ),
        (
            &["source=/app", "on_change=touch /x"],
            "--allow-option on_change",
        ),
    ] {
        let err = failed(&volume_create(d, opts, "bad"));
        assert!(err.contains(says), "{opts:?}: {err}");
    }
    assert!(!docker_ok(&["volume", "ls", "-q"])
        .lines()
        .any(|v| v == "bad"));

    let vol = unique("vol");
    let opts = ["source=ssm:/app", "max_age=60", &endpoint];
    docker_ok(&volume_create(d, &opts, &vol));
    let at = plugin.state.join("mounts").join(&vol);
    assert!(!is_mounted(&at), "created is not mounted");

    // Two containers share one mount.
    let bind = format!("{vol}:/config:ro");
    let run = |what| {
        Container::run(
            what,
            &["--network", "none", "-v", &bind, image(), "sleep", "600"],
        )
    };
    let first = run("first");
    let second = run("second");
    assert_eq!(
        first.exec_ok(&["cat", "/config/db/password"]),
        "first-secret"
    );
    assert_eq!(second.exec_ok(&["cat", "/config/db/host"]), "db.internal");
    let mounted = mount_id(&at).expect("mounted while containers run");
    let inspect = docker_ok(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}} {{.Status.containers}}",
        &vol,
    ]);
    assert_eq!(inspect, format!("{} 2", at.display()));

    // The first leaves: the second still reads.
    drop(first);
    assert_eq!(second.exec_ok(&["cat", "/config/db/host"]), "db.internal");
    assert_eq!(mount_id(&at), Some(mounted.clone()));
    // `docker cp` mounts the running container's volume again under its ID, then releases it.
    let copied = dir.path().join("copied");
    docker_ok(&[
        "cp",
        &format!("{}:/config/db/host", second.name),
        copied.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&copied).unwrap(), "db.internal");
    assert_eq!(
        mount_id(&at),
        Some(mounted.clone()),
        "docker cp unmounted it"
    );

    // The plugin restarts while the second runs: the mount is the same one, still serving.
    plugin.stop();
    assert_eq!(second.exec_ok(&["cat", "/config/db/host"]), "db.internal");
    let mut plugin = Plugin::start(&plugin.state.clone(), &driver);
    assert_eq!(mount_id(&at), Some(mounted.clone()), "{}", plugin.log());

    // A refreshed value reaches the running container.
    moto.put("/app/db/password", "SecureString", "second-secret");
    std::fs::write(at.join("db/.refresh"), "1").unwrap();
    assert_eq!(
        second.exec_ok(&["cat", "/config/db/password"]),
        "second-secret"
    );

    // A container started now shares the mount too; when the last one leaves, it is unmounted.
    let third = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &bind,
        image(),
        "cat",
        "/config/db/host",
    ]);
    assert_eq!(third, "db.internal");
    assert_eq!(mount_id(&at), Some(mounted));
    drop(second);
    assert!(
        wait_for(Duration::from_secs(30), || !is_mounted(&at)),
        "still mounted after its last container left: {}",
        plugin.log()
    );

    docker_ok(&["volume", "rm", &vol]);
    assert!(!docker_ok(&["volume", "ls", "-q"]).lines().any(|v| v == vol));
    let state = std::fs::read_to_string(plugin.state.join("volumes.json")).unwrap();
    assert!(!state.contains(&vol), "{state}");

    // A volume that cannot mount fails the container's start with ssmfs's reason.
    let broken = unique("broken");
    let opts = ["source=/app", "endpoint_url=http://127.0.0.1:9"];
    docker_ok(&volume_create(d, &opts, &broken));
    let err = failed(&[
        "run",
        "--rm",
        "-v",
        &format!("{broken}:/config"),
        image(),
        "true",
    ]);
    assert!(
        err.contains("cannot reach") && err.contains("check -o endpoint_url"),
        "{err}"
    );
    docker_ok(&["volume", "rm", &broken]);
    plugin.stop();
    let log = plugin.log();
    // The mounts' own lines name their volume.
    let named = format!("[{broken}] ");
    assert!(
        log.lines()
            .any(|l| l.starts_with(&named) && l.contains("ERROR cannot reach")),
        "{log}"
    );
    for secret in ["first-secret", "second-secret"] {
        assert!(!log.contains(secret), "a value in the log: {log}");
    }
}

/// One call of the plugin API over its Unix socket; the answer's JSON.
fn plugin_call(socket: &Path, path: &str, body: serde_json::Value) -> serde_json::Value {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, json) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_units_under_a_real_systemd_in_a_minimal_debian() {
    let moto = Moto::start();
    moto.put("/app/db/host", "String", "one");
    moto.put("/app/db/password", "SecureString", "pw");
    // The container's /run/docker/plugins, where this test reaches the plugin's socket.
    let plugins = tempfile::tempdir().unwrap();
    let plugins_bind = format!("{}:/run/docker/plugins", plugins.path().display());
    let c = Container::run(
        "systemd",
        &[
            "--network",
            "host",
            "--cap-add",
            "SYS_ADMIN",
            "--device",
            "/dev/fuse",
            "--security-opt",
            "seccomp=unconfined",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "-v",
            &plugins_bind,
            common::docker::debian(),
            "/lib/systemd/systemd",
        ],
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = |from: &Path, to: &str| {
        docker_ok(&["cp", from.to_str().unwrap(), &format!("{}:{to}", c.name)])
    };
    copy(Path::new(env!("CARGO_BIN_EXE_ssmfs")), "/usr/bin/ssmfs");
    for unit in ["ssmfs@.service", "ssmfs-docker.service"] {
        copy(&manifest.join("systemd").join(unit), "/lib/systemd/system/");
    }
    let aws = format!(
        "AWS_REGION=us-east-1\nAWS_ACCESS_KEY_ID=test\nAWS_SECRET_ACCESS_KEY=test\n\
         AWS_ENDPOINT_URL={}\n",
        moto.url()
    );
    let conf =
        format!("SOURCE=ssm:/app\nMOUNTPOINT=/mnt/ssm/app\nOPTIONS=allow_other,max_age=300\n{aws}");
    c.exec_ok(&[
        "sh", "-c", r#"mkdir -p /etc/ssmfs /mnt/ssm/app && printf %s "$1" > /etc/ssmfs/app.conf && printf %s "$2" > /etc/ssmfs/docker.conf"#,
        "sh", &conf, &aws,
    ]);
    let booted = c.exec(&["systemctl", "is-system-running", "--wait"]);
    let booted = String::from_utf8_lossy(&booted.stdout).trim().to_string();
    assert!(booted == "running" || booted == "degraded", "{booted}");
    c.exec_ok(&["systemctl", "daemon-reload"]);
    let show = |property: &str, unit: &str| {
        c.exec_ok(&["systemctl", "show", "-p", property, "--value", unit])
    };

    // start: READY once the files are there, with the unit's hardening in force.
    let started = c.exec(&["systemctl", "start", "ssmfs@app"]);
    assert!(
        started.status.success(),
        "{}",
        c.exec_ok(&["journalctl", "-u", "ssmfs@app", "--no-pager"])
    );
    assert_eq!(show("ActiveState", "ssmfs@app"), "active");
    assert_eq!(c.exec_ok(&["cat", "/mnt/ssm/app/db/host"]), "one");
    let status = c.exec_until(
        &[
            "systemctl",
            "show",
            "-p",
            "StatusText",
            "--value",
            "ssmfs@app",
        ],
        "refreshed /app: 2 parameters",
        Duration::from_secs(10),
    );
    assert_eq!(status, "refreshed /app: 2 parameters");
    let pid = show("MainPID", "ssmfs@app");
    let proc_status = c.exec_ok(&["cat", &format!("/proc/{pid}/status")]);
    for hardened in ["NoNewPrivs:\t1", "Seccomp:\t2"] {
        assert!(
            proc_status.contains(hardened),
            "{hardened} missing: {proc_status}"
        );
    }

    // reload: every group is refreshed (no /bin/kill on this system).
    assert!(c.exec(&["test", "-e", "/bin/kill"]).status.code() == Some(1));
    moto.put("/app/db/host", "String", "two");
    c.exec_ok(&["systemctl", "reload", "ssmfs@app"]);
    let host = c.exec_until(
        &["cat", "/mnt/ssm/app/db/host"],
        "two",
        Duration::from_secs(20),
    );
    assert_eq!(host, "two");

    // stop: unmounted.
    c.exec_ok(&["systemctl", "stop", "ssmfs@app"]);
    assert_eq!(show("ActiveState", "ssmfs@app"), "inactive");
    assert!(!c.exec_ok(&["cat", "/proc/mounts"]).contains("fuse.ssmfs"));

    // The plugin's unit: a restart leaves a volume's mount serving.
    c.exec_ok(&["systemctl", "start", "ssmfs-docker"]);
    let socket = plugins.path().join("ssmfs.sock");
    let call = |path: &str, body: serde_json::Value| plugin_call(&socket, path, body);
    let created = call(
        "/VolumeDriver.Create",
        serde_json::json!({"Name": "appcfg", "Opts": {"source": "ssm:/app"}}),
    );
    assert_eq!(created, serde_json::json!({"Err": ""}));
    let mounted = call(
        "/VolumeDriver.Mount",
        serde_json::json!({"Name": "appcfg", "ID": "c1"}),
    );
    let at = mounted["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(at, "/var/lib/ssmfs/docker/mounts/appcfg", "{mounted}");
    let file = format!("{at}/db/host");
    assert_eq!(c.exec_ok(&["cat", &file]), "two");
    let mount_line =
        |c: &Container| c.exec_ok(&["grep", &format!(" {at} "), "/proc/self/mountinfo"]);
    let before = mount_line(&c);
    c.exec_ok(&["systemctl", "restart", "ssmfs-docker"]);
    assert_eq!(mount_line(&c), before, "the restart changed the mount");
    assert_eq!(c.exec_ok(&["cat", &file]), "two");
    let unmounted = call(
        "/VolumeDriver.Unmount",
        serde_json::json!({"Name": "appcfg", "ID": "c1"}),
    );
    assert_eq!(unmounted, serde_json::json!({"Err": ""}));
    assert!(!c.exec_ok(&["cat", "/proc/mounts"]).contains("fuse.ssmfs"));
    c.exec_ok(&["systemctl", "stop", "ssmfs-docker"]);
    assert!(!socket.exists());
}
