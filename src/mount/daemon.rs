//! Running in the background the way FUSE tools do: the parent process waits until the child has
//! mounted, then exits 0, or prints the child's error and exits 1. Also tells systemd, when it
//! is listening, that the mount is live and when it stops.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::unistd::{fork, pipe, setsid, ForkResult};

/// What begins the lines ssmfs writes to standard error outside its log: `[NAME] ` for a mount
/// with `--log-name`, as its log lines begin.
static LABEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the label of [`say`]'s lines; once, at start-up.
pub fn set_label(name: Option<&str>) {
    let _ = LABEL.set(name.map(|n| format!("[{n}] ")).unwrap_or_default());
}

/// Writes one line to standard error: `ssmfs: MESSAGE`, after the label.
pub fn say(message: &str) {
    let label = LABEL.get().map_or("", String::as_str);
    eprintln!("{label}ssmfs: {message}");
}

/// The channel through which the process reports the outcome of start-up.
pub struct Readiness {
    /// Write end of the pipe to the waiting parent; `None` in the foreground.
    pipe: Option<std::fs::File>,
}

impl Readiness {
    pub fn foreground() -> Self {
        Readiness { pipe: None }
    }

    /// Forks. Returns in the child; the parent waits for the child's report and exits.
    ///
    /// Must be called before any thread is started: only the calling thread survives a fork.
    pub fn daemonize() -> Result<Self, String> {
        let (read, write): (OwnedFd, OwnedFd) = pipe().map_err(|e| format!("pipe: {e}"))?;
        // SAFETY: no other thread exists yet (see above), so the child is in a consistent state.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Parent { .. } => {
                drop(write);
                let mut report = String::new();
                let _ = std::fs::File::from(read).read_to_string(&mut report);
                match report.strip_prefix("ok") {
                    Some(_) => std::process::exit(0),
                    None if report.is_empty() => {
                        say("the daemon exited during start-up (see its log)");
                        std::process::exit(1)
                    }
                    None => {
                        say(&report);
                        std::process::exit(1)
                    }
                }
            }
            ForkResult::Child => {
                drop(read);
                let _ = setsid();
                Ok(Readiness {
                    pipe: Some(std::fs::File::from(write)),
                })
            }
        }
    }

    /// Reports that the mount is live.
    pub fn ready(&mut self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(b"ok");
            detach_stdio();
        }
    }

    /// Reports a start-up failure: to systemd (or the Docker plugin), to the waiting parent, and
    /// in the foreground on standard error unless `print` is false (the log has it).
    pub fn failed(&mut self, message: &str, print: bool) {
        notify_failed(message);
        match self.pipe.take() {
            Some(mut pipe) => {
                let _ = pipe.write_all(message.as_bytes());
            }
            None if print => say(message),
            None => {}
        }
    }
}

/// Tells systemd what the mount last did (shown by `systemctl status`).
pub fn notify_status(line: &str) {
    if !line.is_empty() {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(line)]);
    }
}

/// Tells systemd, or whoever set NOTIFY_SOCKET (the Docker volume plugin), why start-up failed:
/// `systemctl status` shows it, and the plugin passes it on to `docker`.
pub fn notify_failed(message: &str) {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
        "failed: {message}"
    ))]);
}

pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Points standard input, output and error at /dev/null and leaves the working directory, so
/// that the daemon holds no terminal and no directory busy.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which this process owns.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let _ = std::env::set_current_dir("/");
}
