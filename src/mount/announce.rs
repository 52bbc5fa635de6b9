//! The announcer: raises inotify events for changes from AWS by making each change on the mount
//! itself, through the VFS, so that the kernel reports it as it would for any filesystem. (A
//! FUSE daemon has no way to raise inotify events, and the kernel's invalidations raise none.)
//!
//! Each fetch's news is one batch, carried out through the mount's root, opened for the batch
//! and checked to be this very mount (a FUSE superblock, inode 1, the device seen at mount
//! time): a mountpoint detached or mounted over is never touched. In a batch:
//! - parameters, then directories, that went away are removed, deepest first (`unlink`,
//!   `rmdir`): watchers get `IN_DELETE` (a watched file `IN_DELETE_SELF`);
//! - directories, then parameters, that appeared are made (`mkdir`, `mknod`): `IN_CREATE`;
//! - a changed parameter is opened for writing and truncated to its own size: `IN_OPEN`,
//!   `IN_MODIFY`, `IN_CLOSE_WRITE` (a watch on the old version's inode was sent
//!   `IN_DELETE_SELF` by the kernel thread already).
//!
//! Promises: nothing anyone reads changes (see [`crate::fs::announce`]); no step acts on a path
//! with a `.` or `..` level; a step that fails is skipped (its name was made or removed
//! meanwhile); where the kernel refuses the steps (a daemon without `CAP_DAC_OVERRIDE`) the log
//! says so once; the kernel thread never waits for the announcer: batches queue to it. (On a
//! mount made `ro` the announcer is not started.)

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::{fstat, mkdirat, mknodat, Mode, SFlag};
use nix::sys::statfs::{fstatfs, FUSE_SUPER_MAGIC};
use nix::unistd::{ftruncate, unlinkat, UnlinkatFlags};
use tracing::{debug, warn};

use crate::backend::Backend;
use crate::fs::announce::{Stage, Staged};
use crate::fs::{Fs, News, What, ROOT};
use crate::kernel::Listener;

/// Starts the announcer thread for the mount at `mountpoint`, whose root has device `dev`.
pub fn spawn<B: Backend>(fs: Arc<Fs<B>>, mountpoint: PathBuf, dev: u64) -> Listener {
    let (tx, rx) = mpsc::channel::<Arc<[News]>>();
    std::thread::Builder::new()
        .name("ssmfs-announce".to_string())
        .spawn(move || {
            fs.set_announcer(nix::unistd::gettid().as_raw() as u32);
            let mut warned = false;
            for news in rx {
                announce(&fs, &mountpoint, dev, &news, &mut warned);
            }
        })
        .expect("spawn the announcer thread");
    Box::new(move |news| {
        let _ = tx.send(news.clone());
    })
}

/// Raises the events of one batch. The first step refused for want of rights is a warning
/// (once); any other failure is a debug line.
fn announce<B: Backend>(fs: &Fs<B>, mountpoint: &Path, dev: u64, news: &[News], warned: &mut bool) {
    let root = match open_root(mountpoint, dev) {
        Ok(root) => root,
        Err(why) => {
            debug!(why, "changes not announced");
            return;
        }
    };
    let removals = news
        .iter()
        .rev()
        .filter(|n| matches!(n.what, What::Removed(_) | What::DirRemoved));
    let arrivals = news
        .iter()
        .filter(|n| matches!(n.what, What::DirAdded | What::Added | What::Changed(_)));
    for n in removals.chain(arrivals) {
        let result = step(fs, &root, n);
        fs.stage(None);
        match result {
            Ok(()) => crate::stats::Stats::bump(&fs.stats().announced),
            Err(err @ (Errno::EACCES | Errno::EPERM)) if !*warned => {
                *warned = true;
                warn!(
                    error = %err,
                    "programs watching the mount with inotify may not hear of changes: the \
                     kernel refuses ssmfs's own steps on the mount (run ssmfs as root with \
                     CAP_DAC_OVERRIDE)"
                );
            }
            Err(err) => debug!(path = n.shown, error = %err, "change not announced"),
        }
    }
}

/// The mount's root, if `mountpoint` still shows this mount.
fn open_root(mountpoint: &Path, dev: u64) -> Result<OwnedFd, &'static str> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let root = open(mountpoint, flags, Mode::empty()).map_err(|_| "the mountpoint is gone")?;
    let fs = fstatfs(root.as_fd()).map_err(|_| "the mountpoint cannot be examined")?;
    let st = fstat(root.as_fd()).map_err(|_| "the mountpoint cannot be examined")?;
    if fs.filesystem_type() != FUSE_SUPER_MAGIC || st.st_ino != ROOT || st.st_dev != dev {
        return Err("the mountpoint shows another filesystem");
    }
    Ok(root)
}

/// One change made on the mount, its path staged for the announcer's requests.
fn step<B: Backend>(fs: &Fs<B>, root: &OwnedFd, n: &News) -> nix::Result<()> {
    // Names never have such levels (see `Source::is_component`); a path with one would leave
    // the mount.
    if n.shown.split('/').any(|c| matches!(c, "" | "." | "..")) {
        return Err(Errno::EINVAL);
    }
    let stage = |staged| {
        fs.stage(Some(Stage {
            shown: n.shown.clone(),
            path: n.path.clone(),
            staged,
        }))
    };
    let path = n.shown.as_str();
    match &n.what {
        What::Removed(old) => {
            stage(Staged::File(old.clone()));
            unlinkat(root, path, UnlinkatFlags::NoRemoveDir)
        }
        What::DirRemoved => {
            stage(Staged::Dir);
            unlinkat(root, path, UnlinkatFlags::RemoveDir)
        }
        What::DirAdded => {
            stage(Staged::Absent);
            mkdirat(root, path, Mode::from_bits_truncate(0o555))
        }
        What::Added => {
            stage(Staged::Absent);
            match mknodat(
                root,
                path,
                SFlag::S_IFREG,
                Mode::from_bits_truncate(0o444),
                0,
            ) {
                // A reader looked the name up first: it can only be told of as a change.
                Err(Errno::EEXIST) => {
                    stage(Staged::Written);
                    rewrite(root, path)
                }
                other => other,
            }
        }
        What::Changed(_) => {
            stage(Staged::Written);
            rewrite(root, path)
        }
        // Labels are never listed: nothing watches them.
        What::Label => Ok(()),
    }
}

/// Opens a file for writing and truncates it to the size it has: the events of a file written
/// in place, with nothing changed.
fn rewrite(root: &OwnedFd, path: &str) -> nix::Result<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
    let file = openat(root, path, flags, Mode::empty())?;
    let size = fstat(file.as_fd())?.st_size;
    ftruncate(&file, size)
}
