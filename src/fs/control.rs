//! The control files: `.refresh` in every directory (a write refreshes that directory's subtree
//! and returns once the kernel's caches show the result) and `.stats` at the root (a JSON
//! snapshot of the mount's figures, a new inode for each snapshot so that no cached page goes
//! stale; a snapshot not yet read is handed out again for up to a second, so that `stat` then
//! `open`, as `cp` does, finds one inode).
//!
//! Promises: nothing else on the mount can be written; a failed refresh is `EIO` and keeps the
//! held values; a forced refresh never joins a fetch that started before it was asked for.

use tokio::time::Instant;

use super::inodes::{Ino, Node};
use super::refresher::Fetch;
use super::{Entry, Fs, Outcome};
use crate::backend::Backend;
use crate::error::Error;

impl<B: Backend> Fs<B> {
    /// A write: to a `.refresh` file it refreshes that directory's subtree and returns once the
    /// kernel's caches show the result; anything else is read-only.
    pub async fn write(&self, ino: Ino, len: usize) -> Result<usize, Error> {
        let dir = match self.core.lock().unwrap().inodes.node(ino) {
            Some(Node::Refresh { dir }) => dir.clone(),
            Some(_) => return Err(Error::ReadOnly),
            None => return Err(Error::NotFound),
        };
        self.refresh(&dir).await?;
        Ok(len)
    }

    /// Refreshes the subtree at `dir` (`""`: the whole mount, as SIGHUP does) and returns once
    /// the kernel's caches show the result. On failure the held values stay.
    pub async fn refresh(&self, dir: &str) -> Result<(), Error> {
        let asked = Instant::now();
        // A sweep in progress is older than the refresh: it is begun anew, not gone on with.
        self.core.lock().unwrap().tree.forget_partials(dir, asked);
        self.fetch(Fetch::Sweep(dir.to_string()), Some(asked), None)
            .await?;
        // Labels under the directory are asked again at their next lookup; what a label fetch
        // that started before this refresh found is not kept.
        let invals = {
            let mut core = self.core.lock().unwrap();
            let changes = core.tree.forget_selectors(dir, asked);
            Self::invals(&core, changes)
        };
        if let Some(inv) = self.invalidator.get() {
            inv.invalidate(Outcome {
                invals,
                ..Default::default()
            });
            let _ = inv.barrier().await;
        }
        Ok(())
    }

    /// Attribute changes: only the truncation that `>` does to a `.refresh` file is accepted.
    pub fn setattr(
        &self,
        ino: Ino,
        size: Option<u64>,
        other_changes: bool,
    ) -> Result<Entry, Error> {
        let is_refresh = matches!(
            self.core.lock().unwrap().inodes.node(ino),
            Some(Node::Refresh { .. })
        );
        if is_refresh && !other_changes && size.is_none_or(|s| s == 0) {
            return self.getattr(ino);
        }
        Err(Error::ReadOnly)
    }
}
