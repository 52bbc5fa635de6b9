//! Polling (`--poll`, and with `--on-change`): each group is refreshed when its max age runs out,
//! whether or not anything reads it, so that programs that watch the mount (inotify,
//! `--on-change`) hear of a change within a max age. Without it a mount makes no call while
//! nothing reads it.
//!
//! The groups polled are the mount's root and each `--max-age-for` subtree, each at its own max
//! age. Promises:
//! - a group is swept once per max age at most: a sweep that readers caused (or `.refresh`)
//!   counts, and the next poll is a max age after it;
//! - the moment is spread uniformly over the last fifth of the max age, so that hosts started
//!   together do not poll together;
//! - no call is tried while AWS is being left alone after a failure; a failed sweep is tried
//!   again at the next turn, and the held values stay.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::refresher::Fetch;
use super::tree::in_subtree;
use super::Fs;
use crate::backend::Backend;

/// The shortest pause between two polls of a group, whatever its max age.
const MIN_PAUSE: Duration = Duration::from_secs(1);

impl<B: Backend> Fs<B> {
    /// Polls every group until the filesystem is dropped (runs as a task of its own).
    pub async fn poll(self: Arc<Self>) {
        let mut groups = vec![(String::new(), self.config.max_age)];
        if self.config.recursive {
            groups.extend(self.config.max_age_for.iter().cloned());
        }
        let polls: Vec<_> = groups
            .into_iter()
            .map(|(dir, max_age)| tokio::spawn(self.clone().poll_group(dir, max_age)))
            .collect();
        for poll in polls {
            let _ = poll.await;
        }
    }

    async fn poll_group(self: Arc<Self>, dir: String, max_age: Duration) {
        // The last sweep this poll tried: a failed one waits a max age too.
        let mut tried = Instant::now();
        loop {
            let last = self.last_refreshed(&dir).map_or(tried, |at| at.max(tried));
            // Uniformly in the last fifth of the max age.
            let due = last + (max_age.mul_f64(0.8 + 0.2 * fastrand::f64())).max(MIN_PAUSE);
            tokio::time::sleep_until(due).await;
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
            if let Err(err) = self.fetch(fetch, Some(tried), None).await {
                debug!(dir, error = %err, "poll failed; the held values stay");
            }
        }
    }

    /// When the whole listing of `dir` was last fetched: its own, or that of a group above it.
    fn last_refreshed(&self, dir: &str) -> Option<Instant> {
        let core = self.core.lock().unwrap();
        let recursive = self.config.recursive;
        core.tree
            .groups()
            .filter(|(group, _, _)| *group == dir || (recursive && in_subtree(group, dir)))
            .map(|(_, at, _)| at)
            .max()
    }
}
