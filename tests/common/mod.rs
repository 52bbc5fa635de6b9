//! Test harness: a real moto server on a free loopback port, seeded through the AWS SDK, and
//! real ssmfs mounts of it. Every wait here waits for an event (a line from moto, a datagram
//! from ssmfs, a process exit), never for time to pass.

#![allow(dead_code)]

pub mod docker;
pub mod proxy;
pub mod shapes;
pub mod watch;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_ssm::types::ParameterType;

/// How long start-up may take before a test gives up (a bound on a hang, not a synchronisation).
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return path.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    "moto_server".into()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    pub client: aws_sdk_ssm::Client,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Moto {
        Moto::start_with(port, &[])
    }

    pub fn start_with(port: u16, env: &[(&str, &str)]) -> Moto {
        let mut child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server not found: run scripts/setup, or set MOTO_SERVER");
        // Werkzeug prints this line once the socket is bound.
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Running on") => break,
                Some(Ok(_)) => continue,
                _ => panic!("moto_server exited before listening"),
            }
        }
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let client = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::Config::builder()
                .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
                .region(aws_sdk_ssm::config::Region::new("us-east-1"))
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                    "test", "test", None, None, "tests",
                ))
                .build(),
        );
        Moto {
            child,
            port,
            client,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn put(&self, name: &str, kind: &str, value: &str) {
        rt().block_on(
            self.client
                .put_parameter()
                .name(name)
                .value(value)
                .r#type(ParameterType::from(kind))
                .overwrite(true)
                .send(),
        )
        .unwrap_or_else(|e| panic!("put {name}: {e:?}"));
    }

    pub fn delete(&self, name: &str) {
        rt().block_on(self.client.delete_parameter().name(name).send())
            .unwrap_or_else(|e| panic!("delete {name}: {e:?}"));
    }

    /// LastModifiedDate of a parameter, as SSM reports it.
    pub fn last_modified(&self, name: &str) -> std::time::SystemTime {
        let out = rt()
            .block_on(self.client.get_parameter().name(name).send())
            .unwrap();
        let date = *out.parameter.unwrap().last_modified_date().unwrap();
        std::time::SystemTime::try_from(date).unwrap()
    }

    /// A Secrets Manager client of this server.
    pub fn secrets_client(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
                .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
                .endpoint_url(self.url())
                .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                    "test", "test", None, None, "tests",
                ))
                .build(),
        )
    }

    /// Stops the server (an outage).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn ssmfs() -> Command {
    ssmfs_at(Path::new(env!("CARGO_BIN_EXE_ssmfs")))
}

/// The ssmfs binary at `path`, with the environment every test gives it.
pub fn ssmfs_at(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("SSMFS_LOG")
        .env_remove("NOTIFY_SOCKET");
    cmd
}

/// Runs a bash script (`set -euo pipefail` first) in a new private mount namespace, with the
/// environment every test gives ssmfs; `$1`… are `args`.
pub fn in_namespace(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    ssmfs_at(Path::new("unshare"))
        .args(["--mount", "--propagation", "private", "bash", "-c"])
        .arg(format!("set -euo pipefail\n{script}"))
        .arg("script")
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("unshare (util-linux)")
}

/// The standard output of a command that must have succeeded (else a panic with its stderr).
pub fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A copy of this build in `dir` (which must be 0755), which user nobody can run wherever the
/// checkout lives.
pub fn binary_for_nobody(dir: &Path) -> PathBuf {
    let binary = dir.join("ssmfs");
    std::fs::copy(env!("CARGO_BIN_EXE_ssmfs"), &binary).unwrap();
    binary
}

/// A datagram socket in `dir` for NOTIFY_SOCKET, as systemd has one, with a bound on waits.
pub fn notify_socket(dir: &Path) -> (PathBuf, UnixDatagram) {
    notify_socket_at(&dir.join("notify.sock"))
}

/// A datagram socket at `path` for NOTIFY_SOCKET.
pub fn notify_socket_at(path: &Path) -> (PathBuf, UnixDatagram) {
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(STARTUP_LIMIT)).unwrap();
    (path.to_path_buf(), sock)
}

/// `ssmfs -f SOURCE MNT --endpoint-url URL ARGS` with NOTIFY_SOCKET set and standard error piped.
pub fn spawn_foreground(
    url: &str,
    source: &str,
    mnt: &Path,
    args: &[&str],
    notify: &Path,
) -> Child {
    ssmfs()
        .arg("-f")
        .arg(source)
        .arg(mnt)
        .args(["--endpoint-url", url])
        .args(args)
        .env("NOTIFY_SOCKET", notify)
        // Each mount paces alone: the --max-tps schedule a host's mounts share would make one
        // test's (or bench row's) calls wait on another's.
        .env("SSMFS_RUNTIME_DIR", mnt.with_extension("run"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A live ssmfs mount in the foreground, stopped with SIGTERM on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    pub fn start(moto: &Moto, source: &str, args: &[&str]) -> Mount {
        Mount::start_at(&moto.url(), source, args)
    }

    /// Mounts against an endpoint URL (moto, or a proxy in front of it).
    pub fn start_at(url: &str, source: &str, args: &[&str]) -> Mount {
        Mount::try_start(url, source, args).unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// Starts `ssmfs -f` and waits for its READY=1 datagram on NOTIFY_SOCKET.
    pub fn try_start(url: &str, source: &str, args: &[&str]) -> Result<Mount, String> {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let (sock_path, sock) = notify_socket(dir.path());
        let log = dir.path().join("ssmfs.log");
        let mut child = spawn_foreground(url, source, &mnt, args, &sock_path);
        // Copy the daemon's stderr to the log; its end means the daemon exited, which is
        // posted on the same socket so that a failed start is seen at once.
        let mut stderr = child.stderr.take().unwrap();
        let mut log_file = std::fs::File::create(&log).unwrap();
        let notify = sock_path.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut log_file);
            let _ = UnixDatagram::unbound().and_then(|s| s.send_to(b"EXITED", &notify));
        });
        let mut buf = [0u8; 256];
        let ready = loop {
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n].starts_with(b"READY=1") => break true,
                Ok(n) if buf[..n].starts_with(b"EXITED") => break false,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        if !ready {
            let _ = child.kill();
            let status = child.wait().unwrap();
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("ssmfs did not become ready ({status}): {stderr}"));
        }
        Ok(Mount {
            dir,
            child: Some(child),
            log,
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        let mnt = self.dir.path().join("mnt");
        if rel.is_empty() {
            mnt
        } else {
            mnt.join(rel)
        }
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn read_str(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap()
    }

    pub fn ls(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .unwrap_or_else(|e| panic!("ls {rel}: {e}"))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    pub fn refresh(&self, dir: &str) -> std::io::Result<()> {
        std::fs::write(self.path(dir).join(".refresh"), b"1\n")
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_slice(&self.read(".stats")).unwrap()
    }

    /// API calls so far, all operations.
    pub fn calls(&self) -> u64 {
        let s = self.stats();
        s["api_calls"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.path(""))
    }

    /// Sends a signal and waits for the daemon to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.take().unwrap().wait().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log once it holds `text`, or after 10 s (then the caller's check fails): what the
    /// daemon writes to standard error reaches the file through a thread, a moment later.
    pub fn log_with(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(text) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() {
            let status = self.stop_with(libc::SIGTERM);
            if !std::thread::panicking() {
                assert!(
                    status.success(),
                    "ssmfs exited with {status}: {}",
                    self.log()
                );
                assert!(!self.is_mounted(), "still mounted after SIGTERM");
            }
        }
        if is_mounted(&self.path("")) {
            let _ = nix_umount(&self.path(""));
        }
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let path = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(path))
}

fn nix_umount(path: &Path) -> std::io::Result<()> {
    let status = Command::new("umount").arg("-l").arg(path).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("umount failed"))
    }
}

/// Sends an unsigned IAM query-API request to moto (accepted while moto's
/// INITIAL_NO_AUTH_ACTION_COUNT lasts) and returns the response body.
pub fn moto_iam(port: u16, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The text of the first `<tag>` element in an XML document.
pub fn xml_field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {xml}"))
        + open.len();
    let end = xml[start..].find('<').unwrap() + start;
    xml[start..end].to_string()
}

impl Moto {
    pub fn label(&self, name: &str, version: i64, label: &str) {
        rt().block_on(
            self.client
                .label_parameter_version()
                .name(name)
                .parameter_version(version)
                .labels(label)
                .send(),
        )
        .unwrap_or_else(|e| panic!("label {name}: {e:?}"));
    }
}

/// An extended attribute of a file, or the errno.
pub fn xattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The extended attribute names of a file.
pub fn xattr_names(path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

/// Sets an extended attribute; returns the errno.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> i32 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// Puts String parameters into moto, 16 at a time.
pub fn seed(moto: &Moto, params: impl Iterator<Item = (String, String)>) {
    let params: Vec<_> = params.collect();
    rt().block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        for (name, value) in params {
            let client = moto.client.clone();
            let permit = sem.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                client
                    .put_parameter()
                    .name(&name)
                    .value(value)
                    .r#type(aws_sdk_ssm::types::ParameterType::String)
                    .overwrite(true)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("put {name}: {e:?}"));
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

/// Waits, at most `limit`, for `done`: a bound on a hang while another process works (Docker,
/// a daemon dying), not a synchronisation on time.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
