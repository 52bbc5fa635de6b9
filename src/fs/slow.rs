//! Whether AWS is slow right now, as the requests that wait for refreshes have seen it.
//!
//! A request that holds a value waits for its refresh at most [`REFRESH_WAIT`]. When that wait
//! runs out, the refresh goes on in the background, *given up on*. Until it ends, and for
//! [`SLOW_WINDOW`] at most since the last wait ran out, AWS counts as slow, and requests that hold
//! a value answer at once. So the requests of one `open` (a lookup per path level, then the
//! read) wait once in all. A refresh that takes long (a long sweep, a stuck call) stops the
//! waits for one window at most: the next request then waits again, and may open a new window.
//!
//! Promises: only a full wait that ran out opens a window; each given-up refresh is counted
//! until it ends, however it ends (also if its task never runs), and never counted twice.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::REFRESH_WAIT;

/// How long a wait that ran out keeps later requests from waiting, at most.
pub const SLOW_WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Slow {
    /// Refreshes given up on that have not ended.
    out: Arc<AtomicUsize>,
    /// When a wait last ran out.
    since: Mutex<Option<Instant>>,
}

impl Slow {
    /// How long a request that holds a value waits for its refresh now.
    pub fn wait(&self) -> Duration {
        let slow = self.out.load(Ordering::Acquire) > 0
            && self
                .since
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() < SLOW_WINDOW);
        if slow {
            Duration::ZERO
        } else {
            REFRESH_WAIT
        }
    }

    /// A refresh about to start in the background: move the guard into its task, and keep the
    /// flag to give up on it with.
    pub fn refresh(&self) -> (Refresh, Arc<AtomicBool>) {
        let ended = Arc::new(AtomicBool::new(false));
        let guard = Refresh {
            out: self.out.clone(),
            ended: ended.clone(),
        };
        (guard, ended)
    }

    /// A wait of `waited` for the refresh of `ended` ran out.
    pub fn gave_up(&self, ended: &AtomicBool, waited: Duration) {
        if waited.is_zero() {
            return;
        }
        *self.since.lock().unwrap() = Some(Instant::now());
        self.out.fetch_add(1, Ordering::AcqRel);
        // Whichever side swaps second undoes the count: the refresh, when it ends, or this,
        // if it ended meanwhile.
        if ended.swap(true, Ordering::AcqRel) {
            self.out.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Refreshes given up on that have not ended.
    #[cfg(test)]
    pub fn out(&self) -> usize {
        self.out.load(Ordering::Acquire)
    }
}

/// Held by a background refresh until it ends.
pub struct Refresh {
    out: Arc<AtomicUsize>,
    ended: Arc<AtomicBool>,
}

impl Drop for Refresh {
    fn drop(&mut self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            self.out.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
