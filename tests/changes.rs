//! `--on-change` commands run by a real mount after changes from AWS.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{Moto, Mount};

/// How long a test waits for a run before it fails (a bound on a hang, not a wait).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A FIFO that commands write a line to when they run; the lines arrive on a channel.
struct Runs {
    path: PathBuf,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Runs {
    fn new() -> Runs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (tx, lines) = mpsc::channel();
        let fifo = path.clone();
        std::thread::spawn(move || loop {
            // Each writer opens, writes and closes: read until it closes, then open again.
            let Ok(file) = std::fs::File::open(&fifo) else {
                return;
            };
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Runs {
            path,
            lines,
            _dir: dir,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// The next line a run wrote.
    fn next(&self) -> String {
        self.lines
            .recv_timeout(RUN_LIMIT)
            .expect("the command did not run")
    }
}

fn seeded() -> Moto {
    let moto = Moto::start();
    moto.put("/app/db/password", "SecureString", "hunter2");
    moto.put("/app/db/user", "String", "app");
    moto.put("/app/name", "String", "demo");
    moto
}

#[test]
fn a_command_runs_once_per_refresh_with_the_paths_under_its_path() {
    let moto = seeded();
    let runs = Runs::new();
    let fifo = runs.path().display();
    let db = format!(
        r#"db=echo "db:$(echo $SSMFS_CHANGED):$SSMFS_SOURCE:$(basename $SSMFS_MOUNTPOINT)" > {fifo}"#
    );
    // The daemon's credentials (AWS_SECRET_ACCESS_KEY=test here) are not passed on.
    let all =
        format!(r#"echo "all:$(echo $SSMFS_CHANGED):${{AWS_SECRET_ACCESS_KEY-none}}" > {fifo}"#);
    let m = Mount::start(&moto, "/app", &["--on-change", &db, "--on-change", &all]);
    assert_eq!(m.read("db/password"), b"hunter2");

    moto.put("/app/db/password", "SecureString", "rotated");
    moto.put("/app/db/host", "String", "db.example");
    moto.put("/app/name", "String", "renamed");
    m.refresh("").unwrap();
    let mut lines = [runs.next(), runs.next()];
    lines.sort();
    assert_eq!(
        lines,
        [
            "all:db/host db/password name:none",
            "db:db/host db/password:ssm:/app:mnt"
        ],
        "one run per command, each with the paths under its PATH"
    );

    // A refresh that changes nothing runs nothing: the next line is the next change's.
    m.refresh("").unwrap();
    moto.put("/app/name", "String", "again");
    m.refresh("").unwrap();
    assert_eq!(runs.next(), "all:name:none");
    let stats = m.stats();
    assert_eq!(stats["on_change"]["runs"], 3);
    assert_eq!(stats["on_change"]["failures"], 0);
}

#[test]
fn a_failing_command_given_as_a_mount_option_is_counted_and_runs_again() {
    let moto = seeded();
    let runs = Runs::new();
    let option = format!(
        "on_change=echo $SSMFS_CHANGED > {}; echo broken >&2; exit 3",
        runs.path().display()
    );
    let m = Mount::start(&moto, "/app", &["-o", &option]);
    moto.put("/app/name", "String", "one");
    m.refresh("").unwrap();
    assert_eq!(runs.next(), "name");
    moto.put("/app/db/user", "String", "two");
    m.refresh("").unwrap();
    // Runs never overlap: the second started after the first had failed.
    assert_eq!(runs.next(), "db/user");
    let failures = m.stats()["on_change"]["failures"].as_u64().unwrap();
    assert!(
        failures >= 1,
        "the first run's failure is counted before the next run"
    );
    assert_eq!(m.read("name"), b"one", "a failure never touches the mount");
}

#[test]
fn with_a_command_the_mount_polls_and_runs_it_though_nothing_reads() {
    let moto = seeded();
    let runs = Runs::new();
    let command = format!(r#"echo "$SSMFS_CHANGED" > {}"#, runs.path().display());
    let m = Mount::start(&moto, "/app", &["--max-age", "1", "--on-change", &command]);
    moto.put("/app/name", "String", "changed while nobody reads");
    // No read, no .refresh: the poll finds the change within a max age.
    assert_eq!(runs.next(), "name");
    assert_eq!(m.read("name"), b"changed while nobody reads");
}

/// nginx, where Debian puts it (root's PATH has /usr/sbin; others may not).
fn nginx() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("nginx")
    }
}

/// An nginx master started with a config of its own, stopped on drop.
struct Nginx {
    conf: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `location /` from `include INCLUDE;`.
    fn start(include: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let d = dir.path().display();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon on; pid {d}/nginx.pid; error_log {d}/error.log; worker_processes 1;\n\
                 events {{}}\n\
                 http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d};\n\
                 fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
                 server {{ listen 127.0.0.1:{port}; location / {{ include {}; }} }} }}\n",
                include.display()
            ),
        )
        .unwrap();
        let out = std::process::Command::new(nginx())
            .args(["-e", &format!("{d}/error.log"), "-c"])
            .arg(&conf)
            .output()
            .expect("nginx not found: run scripts/setup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Nginx {
            conf,
            port,
            _dir: dir,
        }
    }

    /// The reload command, as an --on-change command gives it.
    fn reload(&self) -> String {
        format!("{} -c {} -s reload", nginx().display(), self.conf.display())
    }

    fn get(&self) -> String {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new(nginx())
            .args(["-c"])
            .arg(&self.conf)
            .args(["-s", "stop"])
            .output();
    }
}

#[test]
fn nginx_serves_a_new_value_reloaded_by_on_change_alone() {
    let moto = seeded();
    moto.put("/app/web/greeting", "String", r#"return 200 "hello one";"#);
    // The mount is made first, for nginx includes a file of it; the command is known before
    // nginx's config exists, so it reads the reload command from a file beside the mount.
    let runs = Runs::new();
    let reload_file = runs.path().with_file_name("reload");
    let command = format!(
        r#"web=sh "{}" && echo reloaded > {}"#,
        reload_file.display(),
        runs.path().display()
    );
    let m = Mount::start(&moto, "/app", &["--on-change", &command]);
    let nginx = Nginx::start(&m.path("web/greeting"));
    std::fs::write(&reload_file, nginx.reload()).unwrap();
    assert_eq!(nginx.get(), "hello one");

    moto.put("/app/web/greeting", "String", r#"return 200 "hello two";"#);
    m.refresh("").unwrap();
    assert_eq!(runs.next(), "reloaded");
    // nginx -s reload returns once the master has its signal; the new workers follow.
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    while nginx.get() != "hello two" {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx kept the old value"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
