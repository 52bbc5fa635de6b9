//! Mounts as processes of their own: each volume's mount is an `ssmfs --foreground` child in its
//! own process group, so that it outlives a restart of the plugin (the systemd unit stops the
//! plugin alone) and running containers keep reading. The child says it is live the way it
//! tells systemd, by `READY=1` on a notify socket the plugin listens on for that start; a child
//! that fails says why in `STATUS=` and exits, and that line is the error Docker shows. Its log
//! goes where the plugin's goes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::statfs::FUSE_SUPER_MAGIC;
use tokio::net::UnixDatagram;
use tracing::{info, warn};

use super::volumes::{Found, Mounter};

/// How long a mount may take to go live. ssmfs's own start-up checks are bounded well below
/// this, and Docker waits two minutes for a volume driver's `Mount`.
const START_LIMIT: Duration = Duration::from_secs(100);

pub struct Processes {
    /// The ssmfs binary.
    exe: PathBuf,
    /// Where the notify sockets of starts in progress are made.
    dir: PathBuf,
    starts: AtomicU64,
}

impl Processes {
    pub fn new(exe: PathBuf, dir: PathBuf) -> Self {
        Processes {
            exe,
            dir,
            starts: AtomicU64::new(0),
        }
    }
}

impl Mounter for Processes {
    async fn mount(
        &self,
        name: &str,
        source: &str,
        args: &[String],
        at: &Path,
    ) -> Result<(), String> {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let socket = self.dir.join(format!(".ready-{}-{n}", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let ready = UnixDatagram::bind(&socket)
            .map_err(|e| format!("cannot make {}: {e}", socket.display()))?;
        let started = tokio::process::Command::new(&self.exe)
            .arg("--foreground")
            // Containers read as any user; the directory above the mountpoints is root's alone,
            // so the host's other users still cannot reach the mount.
            .arg("--allow-other")
            .args(args)
            .arg("--")
            .arg(source)
            .arg(at)
            .env("NOTIFY_SOCKET", &socket)
            // A volume's commands are its own on_change options, not the plugin's.
            .env_remove(crate::mount::cli::ON_CHANGE_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .kill_on_drop(false)
            .spawn();
        let outcome = match started {
            Ok(child) => wait_ready(name, child, &ready).await,
            Err(e) => Err(format!("cannot run {}: {e}", self.exe.display())),
        };
        let _ = std::fs::remove_file(&socket);
        outcome
    }

    fn found(&self, at: &Path) -> Found {
        match nix::sys::statfs::statfs(at) {
            Err(Errno::ENOTCONN) => Found::Dead,
            Err(_) => Found::Nothing,
            Ok(fs) if fs.filesystem_type() != FUSE_SUPER_MAGIC => Found::Nothing,
            // The parent, on another filesystem, is never FUSE: this is the mount itself.
            Ok(_) => Found::Live,
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
) -> Result<(), String> {
    let mut status = None;
    let mut buf = vec![0u8; 4096];
    let limit = tokio::time::sleep(START_LIMIT);
    tokio::pin!(limit);
    let outcome = loop {
        tokio::select! {
            received = ready.recv(&mut buf) => {
                let Ok(len) = received else { continue };
                let text = String::from_utf8_lossy(&buf[..len]);
                for line in text.lines() {
                    if let Some(said) = line.strip_prefix("STATUS=") {
                        status = Some(said.to_string());
                    }
                }
                if text.lines().any(|line| line == "READY=1") {
                    break Ok(());
                }
            }
            exited = child.wait() => {
                let why = status.take().unwrap_or_else(|| match exited {
                    Ok(code) => format!("the mount process ended ({code}); see the plugin's log"),
                    Err(e) => format!("the mount process was lost: {e}"),
                });
                return Err(why.strip_prefix("failed: ").unwrap_or(&why).to_string());
            }
            () = &mut limit => {
                let _ = child.start_kill();
                break Err(format!(
                    "the mount was not live after {} s; see the plugin's log",
                    START_LIMIT.as_secs()
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
