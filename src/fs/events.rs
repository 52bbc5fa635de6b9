//! Changes told by events (`--events-queue`): the core's side. Each changed name is fetched
//! anew, all of one batch together, so that concurrent names go to AWS in calls of ten
//! (`GetParameters`); labels of the names are asked again at their next lookup. What a fetch
//! changes reaches the kernel, inotify watchers and `--on-change` as any refresh's changes do.
//!
//! Promises: a name outside the source, or of the other service, costs nothing; a fetch never
//! joins one that started before the events were applied; each name's outcome is its own, so
//! that one name AWS refuses does not hold back the others; nothing is called while the mount
//! backs off after failures.

use futures_util::future::join_all;
use tokio::time::Instant;

use super::refresher::Fetch;
use super::tree::split;
use super::{Fs, Outcome};
use crate::backend::{Backend, BackendError};
use crate::names::Dialect;

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

    /// The change events' max age, and whether they flow (see [`super::EventsAge`]).
    pub fn events(&self) -> &super::EventsAge {
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
