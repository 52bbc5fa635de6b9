//! The announcer's side of the core: how the requests of the thread that raises inotify events
//! (`crate::mount::announce`) are answered.
//!
//! The kernel raises inotify events only for what is done through the VFS, so ssmfs makes each
//! change from AWS on its own mount: it makes a new name (`mknod`, `mkdir`), removes a name that
//! went away (`unlink`, `rmdir`), and truncates a changed file to its own size. Those requests
//! come from one thread, known by its id, and each concerns one *staged* path.
//!
//! Promises:
//! - only the announcer's requests see a staged path differently: absent before its creation;
//!   present, with its last version and a zero TTL, before its removal (with the removed
//!   directories above it); every other request sees the tree, and a change asked for by
//!   anyone else (or by the announcer, of anything but its staged path) is refused as before;
//! - the announcer changes nothing in the tree and makes no API call: its lookups and creations
//!   are answered from what is held, a removal removes only the kernel's entry, a truncation
//!   must keep the size.

use std::ffi::OsStr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::inodes::{Ino, Key, Node};
use super::plan::{Plan, Target};
use super::tree::{self, Cached};
use super::{Clock, Entry, Fs, Kind};
use crate::backend::Backend;
use crate::error::Error;

/// How the announcer is to see its staged path.
#[derive(Clone, Debug)]
pub enum Staged {
    /// Not there yet: it is about to be made.
    Absent,
    /// The parameter's last version: it is about to be unlinked.
    File(Arc<Cached>),
    /// A directory that went away: it is about to be removed.
    Dir,
    /// A parameter with a new version: it is about to be truncated to its own size.
    Written,
}

/// The path the announcer is acting on.
#[derive(Clone, Debug)]
pub struct Stage {
    /// As the mount shows it (`db%` for a parameter shadowed by a directory).
    pub shown: String,
    /// As the tree knows it.
    pub path: String,
    pub staged: Staged,
}

#[derive(Default)]
pub struct Announcer {
    /// The announcer thread's id; 0 while there is none.
    tid: AtomicU32,
    stage: Mutex<Option<Stage>>,
}

impl<B: Backend> Fs<B> {
    /// Names the thread whose requests are the announcer's.
    pub fn set_announcer(&self, tid: u32) {
        self.announcer.tid.store(tid, Relaxed);
    }

    /// Whether a request from thread `pid` is the announcer's.
    pub fn is_announcer(&self, pid: u32) -> bool {
        pid != 0 && self.announcer.tid.load(Relaxed) == pid
    }

    /// Sets (or clears) the path the announcer acts on next.
    pub fn stage(&self, stage: Option<Stage>) {
        *self.announcer.stage.lock().unwrap() = stage;
    }

    /// The path `name` in directory inode `parent` shows, and the staged path, if any.
    fn shown_and_stage(&self, parent: Ino, name: &OsStr) -> Option<(String, Stage)> {
        let stage = self.announcer.stage.lock().unwrap().clone()?;
        let core = self.core.lock().unwrap();
        let Some(Node::Dir { path }) = core.inodes.node(parent) else {
            return None;
        };
        Some((tree::join(path, name.to_str()?), stage))
    }

    /// The announcer's lookup: `Some` for its staged path (or a removed directory above the
    /// path it removes), `None` to answer as for anyone.
    pub fn announced_lookup(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Error>> {
        let (shown, stage) = self.shown_and_stage(parent, name)?;
        let mut core = self.core.lock().unwrap();
        let target = match &stage.staged {
            Staged::Absent if shown == stage.shown => return Some(Err(Error::NotFound)),
            Staged::File(cached) if shown == stage.shown => {
                let (dir, name) = tree::split(&stage.path);
                Target::File {
                    dir: dir.to_string(),
                    name: name.to_string(),
                    cached: cached.clone(),
                    resolved_at: None,
                }
            }
            Staged::Dir if shown == stage.shown => Target::Dir(stage.path.clone()),
            Staged::File(_) | Staged::Dir
                if tree::in_subtree(&shown, &stage.shown) && core.tree.dir(&shown).is_none() =>
            {
                Target::Dir(shown)
            }
            _ => return None,
        };
        let entry = self.hand_out(&mut core, target).map(|mut e| {
            // Never kept: the next lookup by anyone asks again.
            e.ttl = Duration::ZERO;
            e
        });
        Some(entry)
    }

    /// A lookup answered from what is held, of any age, never by a fetch: the announcer acts
    /// on a fetch just applied, and a fetch of its own would cost calls (with a short max age,
    /// every one) and could be joined by readers.
    pub fn lookup_held(&self, parent: Ino, name: &OsStr) -> Result<Entry, Error> {
        if let Some(what) = self.rendered_name(parent, name) {
            return self.lookup_rendered_held(&what?);
        }
        let clock = Clock {
            stale_ok: true,
            paged: true,
            ..Clock::now(None)
        };
        let mut core = self.core.lock().unwrap();
        match self.plan_lookup(&core, parent, name, clock) {
            Plan::Done(result) => result.and_then(|target| self.hand_out(&mut core, target)),
            Plan::Need(_) => Err(Error::NotFound),
        }
    }

    /// Whether a `mknod` or `mkdir` by the announcer makes its staged path; it is then answered
    /// as a lookup of that name is.
    pub fn announced_create(&self, parent: Ino, name: &OsStr) -> bool {
        self.shown_and_stage(parent, name)
            .is_some_and(|(shown, s)| shown == s.shown && matches!(s.staged, Staged::Absent))
    }

    /// Whether an `unlink` (`dir`: `rmdir`) by the announcer removes its staged path. A
    /// directory so removed is retired: if it comes back, it is a new inode to the kernel.
    pub fn announced_remove(&self, parent: Ino, name: &OsStr, dir: bool) -> bool {
        let Some((shown, stage)) = self.shown_and_stage(parent, name) else {
            return false;
        };
        let staged = shown == stage.shown
            && match stage.staged {
                Staged::File(_) => !dir,
                Staged::Dir => dir,
                Staged::Absent | Staged::Written => false,
            };
        if staged && dir {
            let key = Key::Dir(stage.path);
            self.core.lock().unwrap().inodes.retire(&key);
        }
        staged
    }

    /// The announcer's truncation of its staged file to the size it has: accepted, and changes
    /// nothing.
    pub fn announced_truncate(&self, ino: Ino, size: u64) -> Result<Entry, Error> {
        let stage = self.announcer.stage.lock().unwrap().clone();
        let staged = stage.is_some_and(|s| {
            matches!(s.staged, Staged::Written)
                && matches!(
                    self.core.lock().unwrap().inodes.node(ino),
                    Some(Node::File { path, .. }) if **path == *s.path
                )
        });
        let entry = self.getattr(ino)?;
        if staged && entry.attr.kind == Kind::File && entry.attr.size == size {
            Ok(entry)
        } else {
            Err(Error::ReadOnly)
        }
    }
}
