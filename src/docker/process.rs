//! Mounts as processes of their own: each volume's mount is an `ssmfs --foreground` child in its
//! own process group, so that it outlives a restart of the plugin (the systemd unit stops the
//! plugin alone) and running containers keep reading. The child says it is live the way it
//! tells systemd, by `READY=1` on a notify socket the plugin listens on for that start; a child
//! that fails says why in `STATUS=` and exits, and that line is the error Docker shows. Its log
//! goes where the plugin's goes, each line begun with `[VOLUME]`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use tokio::net::UnixDatagram;
use tracing::{info, warn};

use super::volumes::{Found, Mounter};
use crate::mount::devfuse::ssmfs_mounted;

pub struct Processes {
    /// The ssmfs binary.
    exe: PathBuf,
    /// Where the notify sockets of starts in progress are made.
    dir: PathBuf,
}

/// How long a mount may take to answer `statfs` before it counts as live but busy.
const STATFS_LIMIT: Duration = Duration::from_secs(5);

/// The longest path a Unix socket can have (sun_path, less its NUL).
const SOCKET_PATH_MAX: usize = 107;

impl Processes {
    /// Mounts made by running `exe`, with the notify sockets of their starts in `dir`, where
    /// the sockets a stopped plugin left are removed.
    pub fn new(exe: PathBuf, dir: PathBuf) -> Result<Self, String> {
        let processes = Processes { exe, dir };
        let longest = processes.socket_path().as_os_str().len();
        if longest > SOCKET_PATH_MAX {
            return Err(format!(
                "{} is too long a path for the sockets made in it ({longest} bytes of at most \
                 {SOCKET_PATH_MAX}): choose a shorter --state-dir",
                processes.dir.display()
            ));
        }
        if let Ok(entries) = std::fs::read_dir(&processes.dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".ready-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(processes)
    }

    /// A name no other start uses, in this run or a later one: a mount's process goes on
    /// sending STATUS= to the socket of its start for as long as it lives.
    fn socket_path(&self) -> PathBuf {
        self.dir.join(format!(".ready-{:016x}", fastrand::u64(..)))
    }
}

/// Removes the notify socket when the start is over, or abandoned.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Mounter for Processes {
    async fn mount(
        &self,
        name: &str,
        source: &str,
        args: &[String],
        at: &Path,
        limit: Duration,
    ) -> Result<(), String> {
        let socket = SocketFile(self.socket_path());
        let ready = UnixDatagram::bind(&socket.0)
            .map_err(|e| format!("cannot make {}: {e}", socket.0.display()))?;
        let started = tokio::process::Command::new(&self.exe)
            .arg("--foreground")
            .args(args)
            // Its log lines name the volume; last, so that no -o log_name of the volume's own
            // can make them name another.
            .arg(format!("--log-name={name}"))
            .arg("--")
            .arg(source)
            .arg(at)
            .env("NOTIFY_SOCKET", &socket.0)
            // A volume's commands are its own on_change options, not the plugin's.
            .env_remove(crate::mount::cli::ON_CHANGE_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .kill_on_drop(false)
            .spawn();
        let outcome = match started {
            Ok(child) => wait_ready(name, child, &ready, limit).await,
            Err(e) => Err(format!("cannot run {}: {e}", self.exe.display())),
        };
        // A start given up after it mounted (killed at the limit) leaves a dead mount.
        if outcome.is_err() && self.mounted(at) {
            let _ = self.unmount(at);
        }
        outcome
    }

    fn mounted(&self, at: &Path) -> bool {
        ssmfs_mounted(at)
    }

    async fn found(&self, at: &Path) -> Found {
        if !self.mounted(at) {
            return Found::Nothing;
        }
        let path = at.to_path_buf();
        let asked = tokio::task::spawn_blocking(move || nix::sys::statfs::statfs(&path));
        match tokio::time::timeout(STATFS_LIMIT, asked).await {
            Ok(Ok(Err(Errno::ENOTCONN))) => Found::Dead,
            Ok(_) => Found::Live,
            Err(_) => {
                warn!(mountpoint = %at.display(), "the mount is slow to answer; taking it as live");
                Found::Live
            }
        }
    }

    fn unmount(&self, at: &Path) -> Result<(), String> {
        use nix::mount::{umount2, MntFlags};
        match umount2(at, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL) => Ok(()),
            Err(Errno::EBUSY) => umount2(at, MntFlags::MNT_DETACH)
                .map_err(|e| format!("cannot unmount {}: {e}", at.display())),
            Err(e) => Err(format!("cannot unmount {}: {e}", at.display())),
        }
    }
}

/// Waits for the child's `READY=1`, its exit, or the time limit; then leaves a task to reap it.
async fn wait_ready(
    name: &str,
    mut child: tokio::process::Child,
    ready: &UnixDatagram,
    limit: Duration,
) -> Result<(), String> {
    let mut status = None;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let outcome = loop {
        tokio::select! {
            // A child that fails sends STATUS= before it exits: read what it sent first.
            biased;
            received = ready.recv(&mut buf) => match received {
                Ok(len) if heard(&buf[..len], &mut status) => break Ok(()),
                Ok(_) => {}
                Err(e) => {
                    let _ = child.start_kill();
                    break Err(format!("cannot hear from the mount process: {e}"));
                }
            },
            exited = child.wait() => {
                while let Ok(len) = ready.try_recv(&mut buf) {
                    heard(&buf[..len], &mut status);
                }
                let why = status.take().unwrap_or_else(|| match exited {
                    Ok(code) => format!("the mount process ended ({code}); see the plugin's log"),
                    Err(e) => format!("the mount process was lost: {e}"),
                });
                return Err(why.strip_prefix("failed: ").unwrap_or(&why).to_string());
            }
            () = &mut deadline => {
                let _ = child.start_kill();
                break Err(format!(
                    "the mount was not live after {} s; see the plugin's log",
                    limit.as_secs()
                ));
            }
        }
    };
    let name = name.to_string();
    tokio::spawn(async move {
        match child.wait().await {
            Ok(code) if code.success() => info!(volume = %name, "mount process ended"),
            Ok(code) => warn!(volume = %name, "mount process ended: {code}"),
            Err(e) => warn!(volume = %name, "mount process lost: {e}"),
        }
    });
    outcome
}

/// Reads one notify datagram: keeps its STATUS= in `status`; true for READY=1.
fn heard(datagram: &[u8], status: &mut Option<String>) -> bool {
    let text = String::from_utf8_lossy(datagram);
    let mut ready = false;
    for line in text.lines() {
        if let Some(said) = line.strip_prefix("STATUS=") {
            *status = Some(said.to_string());
        }
        ready |= line == "READY=1";
    }
    ready
}
