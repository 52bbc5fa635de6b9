//! Polling (`--poll`, and with `--on-change`): each group is refreshed when its max age runs out,
//! whether or not anything reads it, so that programs that watch the mount (inotify,
//! `--on-change`) hear of a change within a max age. Without it a mount makes no call while
//! nothing reads it.
//!
//! The groups polled are the mount's root and each `--max-age-for` subtree, each at its own max
//! age (a sweep of the root lists the subtrees below it too, whatever their max age). Promises:
//! - a group is swept between 0.8 and 1 max age after its last whole listing, spread uniformly
//!   so that hosts started together do not poll together; a listing that readers caused (or
//!   `.refresh`) counts, and a sweep already under way is joined, not repeated;
//! - no call is tried while AWS is being left alone after a failure; a failed sweep is tried
//!   again at the next turn, and the held values stay;
//! - while change events flow, the max age is the events' (the safety sweep), and the first
//!   sweep after they start is spread uniformly over the whole of it, so that a fleet started
//!   together does not sweep together; when they stop, the mount's max ages apply at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::refresher::Fetch;
use super::Fs;
use crate::backend::Backend;

/// The shortest pause between two polls of a group, whatever its max age.
const MIN_PAUSE: Duration = Duration::from_secs(1);

impl<B: Backend> Fs<B> {
    /// Polls every group for as long as the runtime runs (a task of its own).
    pub async fn poll(self: Arc<Self>) {
        let mut groups = BTreeSet::from([String::new()]);
        if self.config.recursive {
            groups.extend(self.config.max_age_for.iter().map(|(dir, _)| dir.clone()));
        }
        let polls: Vec<_> = groups
            .into_iter()
            .map(|dir| tokio::spawn(self.clone().poll_group(dir)))
            .collect();
        for poll in polls {
            let _ = poll.await;
        }
    }

    async fn poll_group(self: Arc<Self>, dir: String) {
        // The last sweep this poll tried: a failed one waits a max age too.
        let mut tried = Instant::now();
        let mut events = self.config.events.watch();
        let mut flowing = false;
        loop {
            let last = self.last_refreshed(&dir).map_or(tried, |at| at.max(tried));
            let max_age = self.config.poll_age(&dir);
            // Uniformly in the last fifth of the max age; over all of it for the first safety
            // sweep once events flow.
            let started = self.config.events.flowing() && !flowing;
            flowing = self.config.events.flowing();
            let spread = if started {
                fastrand::f64()
            } else {
                0.8 + 0.2 * fastrand::f64()
            };
            let due = last + max_age.mul_f64(spread).max(MIN_PAUSE);
            tokio::select! {
                _ = tokio::time::sleep_until(due) => {}
                // Events started or stopped: the max age changed.
                Ok(()) = events.changed() => continue,
            }
            if self.last_refreshed(&dir).is_some_and(|at| at > last) {
                // Swept meanwhile (a reader, `.refresh`): the next poll is due after that.
                continue;
            }
            if self.backing_off().is_some() {
                tokio::time::sleep(MIN_PAUSE).await;
                continue;
            }
            let fetch = if self.config.recursive {
                Fetch::Sweep(dir.clone())
            } else {
                Fetch::Files(dir.clone())
            };
            tried = Instant::now();
            // A sweep that started after the last listing brings what this one would.
            if let Err(err) = self.fetch(fetch, Some(last), None).await {
                debug!(dir, error = %err, "poll failed; the held values stay");
            }
        }
    }

    /// When the whole listing of `dir` (its subtree; without subdirectories, its files) was
    /// last fetched, by any fetch: its own sweep or one of a directory above it.
    fn last_refreshed(&self, dir: &str) -> Option<Instant> {
        let core = self.core.lock().unwrap();
        let d = core.tree.dir(dir)?;
        if self.config.recursive {
            d.listed_at
        } else {
            d.files_at
        }
    }
}
