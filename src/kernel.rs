//! Kernel notifications: the invalidations and inode deletions a fetch's outcome asks for, sent
//! through fuser's notifier in order on one thread of their own, never on a request's path;
//! then the fetch's news, handed to the listeners (the announcer, `--on-change`) once the
//! kernel's caches show it.

use std::ffi::OsStr;
use std::sync::mpsc;
use std::sync::Arc;

use fuser::{INodeNo, Notifier};
use tracing::debug;

use crate::fs::{Inval, Invalidator, News, Outcome, Replaced};

enum Msg {
    Outcome(Outcome),
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Told of each fetch's news once the kernel's caches show it.
pub type Listener = Box<dyn Fn(&Arc<[News]>) + Send>;

/// Carries out invalidations through the kernel's notify interface, in order, on one thread,
/// then tells the listeners of the news.
pub struct KernelInvalidator {
    tx: mpsc::Sender<Msg>,
}

impl KernelInvalidator {
    pub fn spawn(notifier: Notifier, listeners: Vec<Listener>) -> Self {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("ssmfs-inval".to_string())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Outcome(outcome) => {
                            apply(&notifier, &outcome);
                            if !outcome.news.is_empty() {
                                let news: Arc<[News]> = outcome.news.into();
                                for listener in &listeners {
                                    listener(&news);
                                }
                            }
                        }
                        Msg::Barrier(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .expect("spawn invalidation thread");
        KernelInvalidator { tx }
    }
}

/// Tells the kernel of an outcome: replaced inodes first (a watch on such a file hears
/// `IN_DELETE_SELF`; this also drops the name), then the names to look up again.
fn apply(notifier: &Notifier, outcome: &Outcome) {
    // ENOENT only says the kernel held nothing for it (or held another inode there).
    let report = |what: &dyn std::fmt::Debug, result: std::io::Result<()>| {
        if let Err(err) = result {
            if err.raw_os_error() != Some(libc::ENOENT) {
                debug!(?what, error = %err, "invalidation failed");
            }
        }
    };
    for replaced in &outcome.replaced {
        let Replaced(dir, ino, name) = replaced;
        let result = notifier.delete(INodeNo(*dir), INodeNo(*ino), OsStr::new(name));
        report(replaced, result);
    }
    for inval in &outcome.invals {
        let Inval(parent, name) = inval;
        report(
            inval,
            notifier.inval_entry(INodeNo(*parent), OsStr::new(name)),
        );
    }
}

impl Invalidator for KernelInvalidator {
    fn invalidate(&self, outcome: Outcome) {
        let _ = self.tx.send(Msg::Outcome(outcome));
    }

    fn barrier(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Msg::Barrier(tx));
        rx
    }
}
