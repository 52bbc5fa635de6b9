//! Changes told by events (`--events-queue`): the core's side. Each changed name is fetched
//! anew, all of one batch together, so that concurrent names go to AWS in calls of ten
//! (`GetParameters`); labels of the names are asked again at their next lookup. What a fetch
//! changes reaches the kernel, inotify watchers and `--on-change` as any refresh's changes do.
//!
//! Promises: a name outside the source, or of the other service, costs nothing; a fetch never
//! joins one that started before the events were applied; on failure nothing is lost: the
//! caller keeps the events and applies them again.

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
    /// moved), all at once, and returns once what they brought is applied.
    pub async fn apply_changes(&self, paths: &[(String, bool)]) -> Result<(), BackendError> {
        let asked = Instant::now();
        let mut fetches: Vec<Fetch> = Vec::new();
        for (path, _) in paths {
            let fetch = self.change_fetch(path);
            if !fetches.contains(&fetch) {
                fetches.push(fetch);
            }
        }
        let results = join_all(
            fetches
                .into_iter()
                .map(|fetch| self.fetch(fetch, Some(asked), None)),
        )
        .await;
        if let Some(Err(err)) = results.into_iter().find(Result::is_err) {
            return Err(err);
        }
        let labelled: Vec<&String> = paths.iter().filter(|(_, l)| *l).map(|(p, _)| p).collect();
        if labelled.is_empty() {
            return Ok(());
        }
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
        Ok(())
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
