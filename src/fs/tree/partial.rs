//! Sweeps in progress: a recursive listing of a directory fetched a page at a time, as readers
//! need more of it.
//!
//! The first page of a directory's listing often comes anyway (the start-up check of the root,
//! the probe that tells a name is a directory). Its continuation token is kept, and a reader who
//! misses a name there fetches the next page rather than asking for the name alone: a reader
//! going through the directory in listing order then costs exactly the listing's pages, the
//! floor, and one who reads at random at most a page and a name per miss. When the last page
//! lands, the pages together are a complete sweep, stamped with the instant the first page
//! started, and are applied as one.
//!
//! Promises: at most [`MAX_PARTIALS`] sweeps are kept (the oldest goes first), each holds only
//! what its pages returned, and a sweep is dropped once a complete listing of its directory or
//! above, as new as its start, lands.

use tokio::time::Instant;

use super::{in_subtree, Change, Fresh, Tree};
use crate::backend::Param;
use crate::names::Source;

/// Sweeps in progress kept at most: each is a directory readers are going through.
const MAX_PARTIALS: usize = 64;

/// A recursive listing of a directory that has been fetched up to `token`.
#[derive(Debug)]
pub struct Partial {
    /// Where the listing goes on.
    pub token: String,
    /// When its first page was asked for: the stamp of the complete sweep.
    pub started: Instant,
    /// What its pages returned so far.
    pub params: Vec<Param>,
}

impl Tree {
    /// The sweep in progress of `dir` itself.
    pub fn partial(&self, dir: &str) -> Option<&Partial> {
        self.partials.get(dir)
    }

    /// The nearest directory at or above `dir` with a sweep in progress that is fresh enough,
    /// whose next page may hold what `dir` lacks.
    pub fn partial_over(&self, dir: &str, fresh: impl Fn(&str) -> Fresh) -> Option<&str> {
        let mut at = dir;
        loop {
            if let Some((top, p)) = self.partials.get_key_value(at) {
                if fresh(top).ok(p.started) {
                    return Some(top);
                }
            }
            if at.is_empty() {
                return None;
            }
            at = at.rsplit_once('/').map_or("", |(parent, _)| parent);
        }
    }

    /// Keeps a sweep of `dir` in progress, in place of any older one; not one that started
    /// before a forced refresh was asked for.
    pub fn keep_partial(&mut self, dir: &str, partial: Partial) {
        let older = self
            .partials
            .get(dir)
            .is_some_and(|old| old.started > partial.started);
        if older || self.partials_floor.is_some_and(|f| partial.started < f) {
            return;
        }
        if self.partials.len() >= MAX_PARTIALS && !self.partials.contains_key(dir) {
            if let Some(oldest) = self
                .partials
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(d, _)| d.clone())
            {
                self.partials.remove(&oldest);
            }
        }
        self.partials.insert(dir.to_string(), partial);
    }

    /// Records the first pages of a recursive listing of `dir` that started at `at` and goes on
    /// at `token`: what they hold is seen, and the listing is kept as a sweep in progress.
    pub fn apply_partial(
        &mut self,
        dir: &str,
        params: Vec<Param>,
        token: String,
        source: &Source,
        at: Instant,
    ) -> Vec<Change> {
        let changes = self.apply_seen(params.clone(), source, at);
        let partial = Partial {
            token,
            started: at,
            params,
        };
        self.keep_partial(dir, partial);
        changes
    }

    /// Takes the sweep in progress of `dir` out, to go on with it.
    pub fn take_partial(&mut self, dir: &str) -> Option<Partial> {
        self.partials.remove(dir)
    }

    /// Drops the sweeps at or below `top` that a refresh asked for at `at` must not go on with,
    /// and refuses any that started before it and end later.
    pub fn forget_partials(&mut self, top: &str, at: Instant) {
        if self.partials_floor.is_none_or(|f| f < at) {
            self.partials_floor = Some(at);
        }
        self.drop_partials(top, at);
    }

    /// Drops the sweeps at or below `top` that a complete listing of `top` started at `at`
    /// makes pointless.
    pub(super) fn drop_partials(&mut self, top: &str, at: Instant) {
        if !self.partials.is_empty() {
            self.partials
                .retain(|dir, p| !(in_subtree(top, dir) && p.started <= at));
        }
    }

    /// How many sweeps are in progress (tests).
    #[cfg(test)]
    pub fn partials(&self) -> usize {
        self.partials.len()
    }
}
