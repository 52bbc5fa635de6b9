//! The pace shared by every ssmfs mount of a host that talks to one account and region:
//! `--max-tps` is a limit on the host's calls together, so that a host mounting ten trees
//! stays as good a citizen of the account's quota as a host mounting one.
//!
//! The schedule is one 8-byte number in a file under `/run/ssmfs` (`$SSMFS_RUNTIME_DIR`;
//! `$XDG_RUNTIME_DIR/ssmfs` for users other than root): the
//! instant, on the host's monotonic clock, that the schedule has reached. Each call takes the
//! file's lock, moves the schedule on by its own interval (`1 / --max-tps`) and waits for its
//! slot: the generic cell rate algorithm, with the same burst as a mount's own gate.
//!
//! Promises: a mount whose file cannot be opened paces alone (and says so once); the lock is
//! held for a read and a write, never across a wait, and never waited for: a lock held by a
//! stopped process makes a call pace alone rather than block the runtime.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Where the shared schedules are kept, unless `SSMFS_RUNTIME_DIR` says otherwise.
const RUNTIME_DIR: &str = "/run/ssmfs";

/// A schedule shared through a file.
#[derive(Debug)]
pub struct HostPace {
    /// Threads of this process take turns here; processes take the file's lock.
    file: Mutex<File>,
    interval: u64,
    burst: u64,
}

/// The file of the schedule for one account and region, as the mount reaches them
/// (`key`: the region, the endpoint, the profile).
pub fn path_for(key: &str) -> PathBuf {
    // Another user than root shares with their own mounts, in their runtime directory.
    let dir = std::env::var_os("SSMFS_RUNTIME_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let user =
                std::env::var_os("XDG_RUNTIME_DIR").filter(|_| !nix::unistd::geteuid().is_root());
            user.map(|d| PathBuf::from(d).join("ssmfs"))
        })
        .unwrap_or_else(|| PathBuf::from(RUNTIME_DIR));
    let digest = crate::digest::stable(key.as_bytes());
    dir.join(format!("pace-{digest:016x}"))
}

impl HostPace {
    /// Opens (or makes) the schedule at `path` for calls `interval` apart, `burst` ahead.
    pub fn open(path: &Path, interval: Duration, burst: Duration) -> std::io::Result<HostPace> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        Ok(HostPace {
            file: Mutex::new(file),
            interval: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            burst: u64::try_from(burst.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    /// Takes the next slot at `now` (nanoseconds on the monotonic clock); returns how long to
    /// wait for it.
    pub fn reserve(&self, now: u64) -> std::io::Result<Duration> {
        let file = self.file.lock().unwrap();
        let _lock = FileLock::take(&file)?;
        let mut buf = [0u8; 8];
        let stored = match file.read_at(&mut buf, 0)? {
            8 => u64::from_le_bytes(buf),
            _ => 0,
        };
        // The theoretical arrival time: an idle schedule starts from now, so it earns at most
        // `burst` of credit. A call may go once its slot is at most `burst` ahead of now.
        let tat = stored.max(now) + self.interval;
        file.write_at(&tat.to_le_bytes(), 0)?;
        Ok(Duration::from_nanos(
            tat.saturating_sub(now).saturating_sub(self.burst),
        ))
    }
}

/// The host's monotonic clock, in nanoseconds: the same for every process.
pub fn monotonic_now() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("the monotonic clock exists");
    (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64
}

/// An exclusive `flock` on a file, released on drop.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn take(file: &'a File) -> std::io::Result<FileLock<'a>> {
        // Held for microseconds by whoever has it: a few tries, then give up.
        for _ in 0..100 {
            // SAFETY: flock on a descriptor this struct borrows for as long as it is held.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock(file));
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err);
            }
            std::thread::yield_now();
        }
        Err(std::io::Error::from_raw_os_error(libc::EWOULDBLOCK))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `take`.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gates_on_one_file_share_one_schedule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pace");
        let ms = Duration::from_millis;
        let a = HostPace::open(&path, ms(100), ms(1000)).unwrap();
        let b = HostPace::open(&path, ms(100), ms(1000)).unwrap();
        let now = 10_000_000_000;
        // The burst: ten calls at once, between the two.
        for i in 0..10 {
            let gate = if i % 2 == 0 { &a } else { &b };
            assert_eq!(gate.reserve(now).unwrap(), Duration::ZERO, "call {i}");
        }
        // Then one every 100 ms, whichever gate asks.
        assert_eq!(b.reserve(now).unwrap(), ms(100));
        assert_eq!(a.reserve(now).unwrap(), ms(200));
        // An idle schedule earns its burst back, no more.
        let later = now + 60_000_000_000;
        for _ in 0..10 {
            assert_eq!(a.reserve(later).unwrap(), Duration::ZERO);
        }
        assert_eq!(b.reserve(later).unwrap(), ms(100));
        assert_ne!(path_for("us-east-1"), path_for("eu-west-1"));
        assert_eq!(path_for("us-east-1"), path_for("us-east-1"));
    }
}
