//! The refresher: runs the fetches plans ask for and applies their results to the tree.
//!
//! A request runs as a loop: plan under the lock; if the plan needs a fetch, fetch (outside the
//! lock) and plan again. Around that loop, the state of AWS decides how long a request waits:
//! - **healthy**: a request with nothing usable held waits for its fetch; one that holds a value
//!   of any age waits at most [`REFRESH_WAIT`], then is answered with the held value while the
//!   fetch goes on in the background and is applied when it lands;
//! - **slow**: while a refresh that a request stopped waiting for is still out (for a second at
//!   most), requests that hold a value do not wait at all; so the requests of one `open` (a
//!   lookup per path level, then the read) wait [`REFRESH_WAIT`] once in all (see [`super::slow`]);
//! - **backing off** after a transient failure (outage, throttling): no call is tried until the
//!   back-off ends, and requests are answered from knowledge of any age (up to `--max-stale`);
//!   the back-off doubles from 1 s to 30 s while failures go on;
//! - a good answer ends the back-off, and says so once.
//!
//! Promises: concurrent requests needing the same fetch share one call sequence (see
//! [`crate::flight`]); a fetch's result is applied, and its invalidations queued, before any of
//! its waiters is released; every fetch is stamped with the instant it started.

use std::time::Duration;

use tokio::time::Instant;

use tracing::{debug, info, warn};

use super::inodes::{file_key, Key};
use super::plan::Plan;
use super::tree::partial::Partial;
use super::tree::{in_subtree, split, Change};
use super::{Clock, Core, Fs, Ino, Inval, Outcome, Replaced, What};
use crate::backend::{Backend, BackendError, Page, Param};
use crate::error::Error;
use crate::stats::Stats;
use std::ffi::OsStr;

/// First pause after a transient failure before AWS is tried again; it doubles up to
/// `MAX_BACKOFF`. Short, because a value must not stay stale long once AWS answers again.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bound on fetch-and-retry rounds for one request (each round fetches something new).
const MAX_ROUNDS: usize = 8;
/// How long a request waits for a refresh when a value of any age is held: AWS answers well
/// within it, so values stay within max-age; a slow AWS costs readers this much at most, and
/// the refresh goes on in the background and is applied when it lands.
pub const REFRESH_WAIT: Duration = Duration::from_millis(80);

/// The fetches the core makes, each keyed for single-flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fetch {
    /// Every parameter below a directory (recursive listing): its whole subtree.
    Sweep(String),
    /// The parameters directly in a directory (one-level listing).
    Files(String),
    /// Whether a path is a directory: a recursive listing of it, stopped at the first page
    /// that holds anything (and kept as a sweep in progress).
    Probe(String),
    /// The next page of the sweep in progress of a directory.
    Page(String),
    /// A directory's listing anew, up to about as many pages as what is known of it took; if
    /// it goes on further, what is left becomes a sweep in progress.
    Renew(String),
    /// One parameter.
    Get(String),
    /// One version of a parameter, by its path and a selector (a version or a label).
    Pinned(String, String),
}

/// The state of AWS as the mount has seen it.
#[derive(Default)]
pub struct Health {
    /// No call is tried before this instant (set after a transient failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    pub last_good: Option<Instant>,
    /// Whether this outage has been reported as past --max-stale.
    warned_stale: bool,
}

impl<B: Backend> Fs<B> {
    /// The start-up check: one page of the source's listing. It proves the source is readable,
    /// and when the whole tree fits in that page the tree is then fully known.
    pub async fn check_source(&self) -> Result<(), BackendError> {
        let at = Instant::now();
        let path = self.config.source.full_name("");
        let page = self.call_list(&path, self.config.recursive, None).await?;
        self.record_health(&Ok::<(), BackendError>(()));
        if page.params.is_empty() && page.next_token.is_none() {
            // A typo in SOURCE, or SOURCE a parameter's name rather than a path above it.
            let what = if self.config.recursive {
                "nothing is under the source"
            } else {
                "nothing is directly under the source (--no-recursive shows no subdirectories)"
            };
            warn!(
                source = %path,
                "{what}, or nothing passes the filters: the mount is empty until parameters are \
                 put there"
            );
        }
        let mut core = self.core.lock().unwrap();
        if page.next_token.is_none() {
            let subtree = self.config.recursive;
            self.group_refreshed(&mut core, "", subtree, page.params.len(), at);
            core.tree
                .apply_sweep("", page.params, &self.config.source, at);
        } else if let Some(token) = page.next_token.filter(|_| self.config.recursive) {
            core.tree
                .apply_partial("", page.params, token, &self.config.source, at);
        } else {
            core.tree.apply_seen(page.params, &self.config.source, at);
        }
        // What start-up learns is the mount's first knowledge, not news.
        core.tree.take_news();
        Ok(())
    }

    /// Runs a request until its plan is answered, fetching what it needs, and finishes the
    /// answer under the same lock as its plan. When AWS fails transiently, or is being left
    /// alone after a failure, the plan is answered from knowledge of any age.
    pub(super) async fn answer<T, R>(
        &self,
        plan: impl Fn(&Self, &Core, Clock) -> Plan<T>,
        finish: impl Fn(&Self, &mut Core, T) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let start = Instant::now();
        let mut clock = Clock {
            start,
            since: start,
            stale_ok: false,
            max_stale: self.config.max_stale,
            paged: false,
        };
        let mut fetched = false;
        let mut failed = false;
        let mut last_err = None;
        for _ in 0..MAX_ROUNDS {
            // Read before planning: a fetch that ends after this brings what the plan lacked.
            let seen = self.flights.endings();
            let need = {
                let mut core = self.core.lock().unwrap();
                match plan(self, &core, clock) {
                    Plan::Done(result) => {
                        let counter = if clock.stale_ok {
                            &self.stats.stale_served
                        } else if fetched {
                            &self.stats.misses
                        } else {
                            &self.stats.hits
                        };
                        Stats::bump(counter);
                        return result.and_then(|t| finish(self, &mut core, t));
                    }
                    Plan::Need(fetch) => fetch,
                }
            };
            if !clock.stale_ok {
                if let Some(err) = self.backing_off() {
                    clock.stale_ok = true;
                    last_err = Some(err);
                    continue;
                }
            }
            if failed || (clock.stale_ok && self.backing_off().is_some()) {
                // Nothing usable is held, and AWS failed or is being left alone after failing:
                // this cannot be answered now.
                if self.config.max_stale.is_some() {
                    self.warn_too_stale();
                }
                let err = last_err
                    .take()
                    .or_else(|| self.backing_off())
                    .unwrap_or_else(|| BackendError::Unavailable("AWS failed".to_string()));
                return Err(Error::Backend(err));
            }
            // A page or a renewal is tried once per request; what it did not bring is asked for
            // by name.
            let paging = matches!(need, Fetch::Page(_) | Fetch::Renew(_));
            let held = !clock.stale_ok && {
                let core = self.core.lock().unwrap();
                let any_age = Clock {
                    stale_ok: true,
                    ..clock
                };
                matches!(plan(self, &core, any_age), Plan::Done(Ok(_)))
            };
            let fetched_now = if held {
                // Something is held: wait for the refresh only briefly, in a task of its own so
                // that it goes on if the wait ends first; while AWS is slow, not at all.
                let me = self
                    .me
                    .upgrade()
                    .expect("the filesystem outlives its requests");
                let (guard, ended) = self.slow.refresh();
                let refresh = tokio::spawn(async move {
                    let _guard = guard;
                    me.fetch(need, None, Some(seen)).await
                });
                let wait = self.slow.wait();
                match tokio::time::timeout(wait, refresh).await {
                    Ok(joined) => joined.unwrap_or_else(|e| {
                        Err(BackendError::Other(format!("refresh task failed: {e}")))
                    }),
                    Err(_) => {
                        self.slow.gave_up(&ended, wait);
                        clock.stale_ok = true;
                        continue;
                    }
                }
            } else {
                self.fetch(need, None, Some(seen)).await
            };
            clock.paged |= paging;
            match fetched_now {
                Ok(started) => {
                    // A shared fetch may have started before this request: its result still
                    // answers it.
                    clock.since = clock.since.min(started);
                    fetched = true;
                }
                Err(err) if err.is_transient() => {
                    clock.stale_ok = true;
                    failed = true;
                    last_err = Some(err);
                }
                Err(err) => return Err(Error::Backend(err)),
            }
        }
        Err(Error::Backend(last_err.unwrap_or_else(|| {
            BackendError::Other("the tree did not settle".to_string())
        })))
    }

    /// Runs a fetch through single-flight, applies its result to the tree and queues the
    /// invalidations it causes, before any waiter is released.
    /// Returns when the fetch that was used started: what it learned is at least that new.
    pub(super) async fn fetch(
        &self,
        fetch: Fetch,
        not_before: Option<Instant>,
        seen: Option<u64>,
    ) -> Result<Instant, BackendError> {
        self.flights
            .run(fetch.clone(), not_before, seen, async {
                Stats::bump(&self.stats.refreshes);
                debug!(?fetch, "fetching");
                let at = Instant::now();
                let result = self.execute(&fetch, at).await;
                self.record_health(&result);
                let outcome = result?;
                if !outcome.is_empty() {
                    if let Some(inv) = self.invalidator.get() {
                        inv.invalidate(outcome);
                    }
                }
                Ok(())
            })
            .await
    }

    /// Refresh ahead: a name the kernel asks about in the last fifth of its max age is answered
    /// at once, and what would refresh it then is fetched now, in the background. A value in
    /// steady use is so refreshed before it expires, and its readers never wait.
    /// `window` is the refresh-ahead window of the directory `parent`.
    pub(super) fn refresh_ahead(&self, core: &Core, parent: Ino, name: &OsStr, window: Duration) {
        if window.is_zero() {
            return;
        }
        // Just past the window, so that what expires at its very end counts as expiring.
        let Some(later) = Instant::now().checked_add(window + Duration::from_millis(1)) else {
            return;
        };
        let seen = self.flights.endings();
        let clock = Clock {
            start: later,
            since: later,
            stale_ok: false,
            max_stale: self.config.max_stale,
            // A page would not refresh what is about to expire.
            paged: true,
        };
        let Plan::Need(fetch) = self.plan_lookup(core, parent, name, clock) else {
            return;
        };
        let (Some(rt), Some(me)) = (self.runtime.get(), self.me.upgrade()) else {
            return;
        };
        debug!(?fetch, "refreshing ahead");
        rt.spawn(async move {
            let _ = me.fetch(fetch, None, Some(seen)).await;
        });
    }

    /// The kernel's view of changes: a name in a directory the kernel holds.
    pub(super) fn invals(core: &Core, changes: Vec<Change>) -> Vec<Inval> {
        changes
            .into_iter()
            .filter_map(|c| {
                let dir = core.inodes.held(&super::inodes::Key::Dir(c.dir))?;
                Some(Inval(dir, c.name))
            })
            .collect()
    }

    /// What an apply changed, for the kernel and for programs watching: the names to
    /// invalidate, the held inodes of versions replaced, and the news.
    fn outcome(core: &mut Core, changes: Vec<Change>) -> Outcome {
        let news = core.tree.take_news();
        let replaced = news
            .iter()
            .filter_map(|n| {
                let What::Changed(old) = &n.what else {
                    return None;
                };
                let dir = core.inodes.held(&Key::Dir(split(&n.path).0.to_string()))?;
                let ino = core.inodes.held(&file_key(n.path.clone(), old))?;
                Some(Replaced(dir, ino, split(&n.shown).1.to_string()))
            })
            .collect();
        let touched = core.renders.follow(&news);
        let mut outcome = Outcome {
            invals: Self::invals(core, changes),
            replaced,
            news,
        };
        Self::rendered_outcome(core, touched, &mut outcome);
        outcome
    }

    /// Calls AWS for a fetch and applies what it returns, stamped `at`.
    async fn execute(&self, fetch: &Fetch, at: Instant) -> Result<Outcome, BackendError> {
        let source = &self.config.source;
        let recursive = self.config.recursive;
        let (mut core, changes) = match fetch {
            Fetch::Sweep(dir) => {
                // A sweep of it in progress, still young, is gone on with rather than begun anew.
                let partial = recursive.then(|| self.young_partial(dir, at)).flatten();
                let (at, params) = match partial {
                    Some(p) => {
                        let mut params = p.params;
                        params.extend(
                            self.list_from(&source.full_name(dir), true, Some(p.token))
                                .await?,
                        );
                        (p.started, params)
                    }
                    None => (at, self.list_all(&source.full_name(dir), recursive).await?),
                };
                let mut core = self.core.lock().unwrap();
                self.group_refreshed(&mut core, dir, recursive, params.len(), at);
                let changes = core.tree.apply_sweep(dir, params, source, at);
                (core, changes)
            }
            Fetch::Files(dir) => {
                let params = self.list_all(&source.full_name(dir), false).await?;
                let mut core = self.core.lock().unwrap();
                self.group_refreshed(&mut core, dir, false, params.len(), at);
                let changes = core.tree.apply_files(dir, params, source, at);
                (core, changes)
            }
            Fetch::Probe(path) => {
                let full = source.full_name(path);
                let mut token = None;
                let mut pages = Vec::new();
                loop {
                    let page = self.call_list(&full, true, token).await?;
                    // Only what is strictly below `path` tells that it is a directory (a
                    // listing may also return the parameter or secret named `path` itself).
                    let below = page.params.iter().any(|p| {
                        source
                            .relative(&p.name)
                            .is_some_and(|rel| rel != path && in_subtree(path, rel))
                    });
                    let mut core = self.core.lock().unwrap();
                    core.tree.spent_on_single(split(path).0, 1);
                    let changes = match (below, page.next_token) {
                        // The whole subtree came in this page: it is a sweep.
                        (_, None) => core.tree.apply_sweep(path, page.params, source, at),
                        (true, Some(next)) => {
                            pages.extend(page.params.iter().cloned());
                            let partial = Partial {
                                token: next,
                                started: at,
                                params: pages,
                            };
                            let changes = core.tree.apply_seen(page.params, source, at);
                            core.tree.keep_partial(path, partial);
                            changes
                        }
                        (false, Some(next)) => {
                            pages.extend(page.params);
                            token = Some(next);
                            continue;
                        }
                    };
                    break (core, changes);
                }
            }
            Fetch::Page(top) => {
                let token = {
                    let core = self.core.lock().unwrap();
                    match core.tree.partial(top) {
                        Some(p) => p.token.clone(),
                        // Finished or dropped meanwhile: the request plans again.
                        None => return Ok(Outcome::default()),
                    }
                };
                let page = match self
                    .call_list(&source.full_name(top), true, Some(token.clone()))
                    .await
                {
                    Ok(page) => page,
                    Err(err) if err.is_transient() => return Err(err),
                    // A token AWS no longer takes: the sweep is begun anew when one is needed.
                    Err(err) => {
                        debug!(error = %err, dir = top, "a sweep in progress could not go on");
                        let mut core = self.core.lock().unwrap();
                        if core.tree.partial(top).is_some_and(|p| p.token == token) {
                            core.tree.take_partial(top);
                        }
                        return Ok(Outcome::default());
                    }
                };
                let mut core = self.core.lock().unwrap();
                let mut changes = core.tree.apply_seen(page.params.clone(), source, at);
                match core.tree.take_partial(top) {
                    Some(mut p) if p.token == token => {
                        p.params.extend(page.params);
                        match page.next_token {
                            Some(next) => {
                                p.token = next;
                                core.tree.keep_partial(top, p);
                            }
                            None => {
                                self.group_refreshed(
                                    &mut core,
                                    top,
                                    true,
                                    p.params.len(),
                                    p.started,
                                );
                                changes.extend(
                                    core.tree.apply_sweep(top, p.params, source, p.started),
                                );
                            }
                        }
                    }
                    // Another fetch went on with it meanwhile: this page only adds what it saw.
                    Some(other) => core.tree.keep_partial(top, other),
                    None => {}
                }
                (core, changes)
            }
            Fetch::Renew(dir) => {
                let known = self.core.lock().unwrap().tree.known_files(dir, usize::MAX);
                let budget = known.div_ceil(self.backend.page_size()) + 1;
                let (params, token) = self
                    .list_pages(&source.full_name(dir), true, None, budget)
                    .await?;
                let mut core = self.core.lock().unwrap();
                let changes = match token {
                    None => {
                        self.group_refreshed(&mut core, dir, true, params.len(), at);
                        core.tree.apply_sweep(dir, params, source, at)
                    }
                    Some(token) => core.tree.apply_partial(dir, params, token, source, at),
                };
                (core, changes)
            }
            Fetch::Get(path) => {
                let found = self.call_get(&source.full_name(path)).await?;
                let (dir, name) = split(path);
                let mut core = self.core.lock().unwrap();
                core.tree.spent_on_single(dir, 1);
                let changes = core.tree.apply_get(dir, name, found, at);
                (core, changes)
            }
            Fetch::Pinned(path, selector) => {
                let full = format!(
                    "{}{}{selector}",
                    source.full_name(path),
                    crate::names::SELECTOR
                );
                let found = self.call_get(&full).await?;
                let (dir, name) = split(path);
                let mut core = self.core.lock().unwrap();
                let changes = core.tree.apply_pinned(dir, name, selector, found, at);
                (core, changes)
            }
        };
        Ok(Self::outcome(&mut core, changes))
    }

    /// Records a group's good refresh and says so on the status line.
    fn group_refreshed(
        &self,
        core: &mut Core,
        dir: &str,
        subtree: bool,
        parameters: usize,
        at: Instant,
    ) {
        core.tree.group_refreshed(dir, subtree, parameters, at);
        let name = self.config.source.full_name(dir);
        let plural = if parameters == 1 { "" } else { "s" };
        self.status
            .send_replace(format!("refreshed {name}: {parameters} parameter{plural}"));
    }

    /// The sweep in progress of `dir`, taken out to go on with, if it started within half of
    /// the directory's max age: the complete sweep is stamped with that start, and must come
    /// out fresh.
    fn young_partial(&self, dir: &str, now: Instant) -> Option<Partial> {
        let mut core = self.core.lock().unwrap();
        let started = core.tree.partial(dir)?.started;
        let young = now.saturating_duration_since(started) <= self.config.max_age_of(dir) / 2;
        young.then(|| core.tree.take_partial(dir)).flatten()
    }

    async fn list_all(&self, path: &str, recursive: bool) -> Result<Vec<Param>, BackendError> {
        self.list_from(path, recursive, None).await
    }

    /// The listing of `path` from `token` on, every page of it.
    async fn list_from(
        &self,
        path: &str,
        recursive: bool,
        token: Option<String>,
    ) -> Result<Vec<Param>, BackendError> {
        let (params, _) = self.list_pages(path, recursive, token, usize::MAX).await?;
        Ok(params)
    }

    /// At most `max_pages` pages of the listing of `path` from `token` on, and where it goes on
    /// if it does.
    async fn list_pages(
        &self,
        path: &str,
        recursive: bool,
        mut token: Option<String>,
        max_pages: usize,
    ) -> Result<(Vec<Param>, Option<String>), BackendError> {
        let mut params = Vec::new();
        for _ in 0..max_pages {
            let page = self.call_list(path, recursive, token).await?;
            params.extend(page.params);
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok((params, None)),
            }
        }
        Ok((params, token))
    }

    async fn call_list(
        &self,
        path: &str,
        recursive: bool,
        token: Option<String>,
    ) -> Result<Page, BackendError> {
        let result = self.backend.list(path, recursive, token).await;
        self.count_error(&result);
        result
    }

    async fn call_get(&self, name: &str) -> Result<Option<Param>, BackendError> {
        let result = self.batcher.get(&self.backend, name).await;
        self.count_error(&result);
        result
    }

    fn count_error<T>(&self, result: &Result<T, BackendError>) {
        if result.is_err() {
            Stats::bump(&self.stats.errors);
        }
    }

    /// Tracks outages: warns once when AWS starts failing, says when it answers again, and
    /// sets the back-off during which cached values are served without trying.
    fn record_health<T>(&self, result: &Result<T, BackendError>) {
        let mut health = self.health.lock().unwrap();
        match result {
            Ok(_) => {
                if health.retry_at.take().is_some() {
                    info!("AWS answers again; cached values are being refreshed");
                    self.status
                        .send_replace("AWS answers again; refreshing held values".to_string());
                }
                health.backoff = Duration::ZERO;
                health.last_good = Some(Instant::now());
                health.warned_stale = false;
            }
            Err(err) if err.is_transient() => {
                if health.retry_at.is_none() {
                    warn!(error = %err, "AWS is failing; serving the last good values until it answers");
                    self.status.send_replace(format!(
                        "AWS is failing ({}); serving the last good values",
                        err.kind()
                    ));
                }
                health.backoff = (health.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                let now = Instant::now();
                health.retry_at = Some(now.checked_add(health.backoff).unwrap_or(now));
            }
            Err(err) => warn!(error = %err, "fetch failed"),
        }
    }

    /// Says once per outage that held values are too old to serve.
    fn warn_too_stale(&self) {
        let mut health = self.health.lock().unwrap();
        if !health.warned_stale {
            health.warned_stale = true;
            warn!(
                max_stale = ?self.config.max_stale,
                "AWS cannot be reached and the held values are older than --max-stale; reads fail with EIO"
            );
        }
    }

    /// `Some(error)` while calls are held back after a transient failure.
    pub(super) fn backing_off(&self) -> Option<BackendError> {
        let health = self.health.lock().unwrap();
        match health.retry_at {
            Some(t) if Instant::now() < t => Some(BackendError::Unavailable(
                "AWS failed recently; serving cached values".to_string(),
            )),
            _ => None,
        }
    }
}
