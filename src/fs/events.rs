//! Changes told by events (`--events-queue`): the core's side. Each changed name is fetched
//! anew, all of one batch together, so that concurrent names go to AWS in calls of ten
//! (`GetParameters`); labels of the names are asked again at their next lookup. What a fetch
//! changes reaches the kernel, inotify watchers and `--on-change` as any refresh's changes do.
//!
//! Also the max age events give what is held ([`EventsAge`]), which the core's
//! [`super::Config::max_age_of`] asks.
//!
//! Promises: a name outside the source, or of the other service, costs nothing; a fetch never
//! joins one that started before the events were applied; each name's outcome is its own, so
//! that one name AWS refuses does not hold back the others; nothing is called while the mount
//! backs off after failures.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::refresher::Fetch;
use super::tree::split;
use super::{Fs, Outcome};
use crate::backend::{Backend, BackendError};
use crate::names::Dialect;

/// The max age while change events flow: events tell of each change, so what is held stays
/// good until the next safety sweep (`--events-max-age`), whatever `--max-age` says. Only what
/// was fetched after events began to flow is so trusted: a change before then reached no
/// queue. When they stop flowing, the mount's own max ages apply again at once.
#[derive(Clone)]
pub struct EventsAge {
    /// `None`: this mount receives no events.
    pub max_age: Option<Duration>,
    flowing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Since when events tell of every change.
    since: Arc<std::sync::Mutex<Instant>>,
}

impl Default for EventsAge {
    fn default() -> Self {
        EventsAge {
            max_age: None,
            flowing: Arc::new(tokio::sync::watch::Sender::new(false)),
            since: Arc::new(std::sync::Mutex::new(Instant::now())),
        }
    }
}

impl EventsAge {
    pub fn new(max_age: Duration) -> EventsAge {
        EventsAge {
            max_age: Some(max_age),
            ..Default::default()
        }
    }

    /// Whether events flow now (receives succeed).
    pub fn flowing(&self) -> bool {
        self.max_age.is_some() && *self.flowing.borrow()
    }

    /// Says whether events flow; true when that changed. `since`: from when they tell of
    /// every change (for a queue just subscribed, once its policy has had time to apply).
    pub fn set_flowing(&self, yes: bool, since: Instant) -> bool {
        let changed = self
            .flowing
            .send_if_modified(|now| std::mem::replace(now, yes) != yes);
        if changed && yes {
            *self.since.lock().unwrap() = since;
        }
        changed
    }

    /// The max age for what events keep fresh: the events', but no more than the time since
    /// they began to flow (older knowledge was fetched before any event could tell of change).
    pub(super) fn age(&self, events: Duration) -> Duration {
        let since = *self.since.lock().unwrap();
        events.min(Instant::now().saturating_duration_since(since))
    }

    /// Wakes when events start or stop flowing.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.flowing.subscribe()
    }
}

impl<B: Backend> Fs<B> {
    /// The mount-relative path an event about `name` (a full name of `dialect`) concerns, if
    /// it concerns this mount.
    pub fn event_path(&self, dialect: Dialect, name: &str) -> Option<String> {
        let source = &self.config.source;
        (dialect == source.dialect)
            .then(|| source.relative(name))
            .flatten()
            .map(str::to_string)
    }

    /// The change events' max age, and whether they flow (see [`EventsAge`]).
    pub fn events(&self) -> &EventsAge {
        &self.config.events
    }

    /// Fetches anew the parameters at `paths` (mount-relative; `true`: its labels may have
    /// moved), all at once, and returns once what they brought is applied: one outcome per
    /// path, in order. While the mount backs off after failures, nothing is called and every
    /// path fails with the error that started the back-off.
    pub async fn apply_changes(&self, paths: &[(String, bool)]) -> Vec<Result<(), BackendError>> {
        if let Some(err) = self.backing_off() {
            return paths.iter().map(|_| Err(err.clone())).collect();
        }
        let asked = Instant::now();
        let mut fetches: Vec<Fetch> = Vec::new();
        let which: Vec<usize> = paths
            .iter()
            .map(|(path, _)| {
                let fetch = self.change_fetch(path);
                match fetches.iter().position(|f| *f == fetch) {
                    Some(i) => i,
                    None => {
                        fetches.push(fetch);
                        fetches.len() - 1
                    }
                }
            })
            .collect();
        let results = join_all(
            fetches
                .into_iter()
                .map(|fetch| self.fetch(fetch, Some(asked), None)),
        )
        .await;
        let outcomes: Vec<Result<(), BackendError>> = which
            .iter()
            .map(|&i| results[i].as_ref().map(|_| ()).map_err(Clone::clone))
            .collect();
        let labelled: Vec<&String> = paths
            .iter()
            .zip(&outcomes)
            .filter(|((_, labels), ok)| *labels && ok.is_ok())
            .map(|((p, _), _)| p)
            .collect();
        if !labelled.is_empty() {
            let invals = {
                let mut core = self.core.lock().unwrap();
                let mut changes = Vec::new();
                for path in labelled {
                    changes.extend(core.tree.forget_labels_of(path, asked));
                }
                Self::invals(&core, changes)
            };
            if let Some(inv) = self.invalidator.get() {
                if !invals.is_empty() {
                    inv.invalidate(Outcome {
                        invals,
                        ..Default::default()
                    });
                }
            }
        }
        outcomes
    }

    /// The smallest fetch that brings a changed parameter: the name itself where `GetParameter`
    /// answers for every name; else the listing that shows it (a filtered mount lists its
    /// directory; a Secrets Manager mount whose JSON secrets are directories sweeps the
    /// secret's directory, which brings its keys too).
    fn change_fetch(&self, path: &str) -> Fetch {
        let dir = split(path).0.to_string();
        if self.backend.gets_every_name() {
            Fetch::Get(path.to_string())
        } else if self.config.source.dialect == Dialect::SecretsManager {
            Fetch::Sweep(dir)
        } else {
            Fetch::Files(dir)
        }
    }
}
