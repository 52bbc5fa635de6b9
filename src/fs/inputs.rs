//! What a rendered file reads, resolved by path: a parameter (or one version of it), or the
//! whole subtree of a directory. Each input is answered as a lookup of it would be, through the
//! planner: fresh knowledge costs nothing, and what is not fresh is fetched with the smallest
//! call. A render's missing inputs are resolved together, so that names asked for at once go
//! to AWS together.
//!
//! Promises: a subtree is answered only when every directory in it is fresh, and what is stale
//! is swept from the deepest directory above all of it; each input carries until when it stays
//! fresh, and a stamp of the versions it holds (never of values), by which a render tells
//! whether anything it read changed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::SystemTime;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::plan::{Plan, Target};
use super::tree::{in_subtree, join, split};
use super::{Clock, Core, Fs};
use crate::backend::{Backend, Param};
use crate::error::Error;
use crate::render::template::{Input, Known, Resolved};
use crate::render::Leaf;

/// One input as resolved: its value, until when the knowledge it came from is fresh, when it
/// was last modified, and a digest of the versions it holds (never of values).
pub(super) struct Resolution {
    pub value: Resolved,
    pub until: Instant,
    pub modified: SystemTime,
    pub stamp: u64,
}

/// The stamp recorded for an input that does not exist.
pub(super) const ABSENT: u64 = 0;
/// A digest of versions: which versions of which paths a resolution holds.
fn stamp_of<'a>(params: impl Iterator<Item = &'a Param>) -> u64 {
    let mut h = DefaultHasher::new();
    for p in params {
        (&p.name, &p.version, p.modified).hash(&mut h);
    }
    h.finish()
}

impl<B: Backend> Fs<B> {
    /// Resolves inputs not yet known, all at once.
    pub(super) async fn resolve_all(
        &self,
        want: &[Input],
        known: &mut Known,
        found: &mut HashMap<Input, Resolution>,
    ) {
        let todo: Vec<&Input> = want.iter().filter(|i| !known.contains_key(*i)).collect();
        let results = join_all(todo.iter().map(|input| self.resolve(input))).await;
        for (input, result) in todo.into_iter().zip(results) {
            match result {
                Ok(r) => {
                    known.insert(input.clone(), Ok(r.value.clone()));
                    found.insert(input.clone(), r);
                }
                Err(e) => {
                    known.insert(input.clone(), Err(e));
                }
            }
        }
    }

    /// Resolves one input from fresh knowledge, fetching what is not.
    async fn resolve(&self, input: &Input) -> Result<Resolution, Error> {
        self.answer(
            |fs, core, clock| fs.plan_input(core, input, clock),
            |_, _, r| Ok(r),
        )
        .await
    }

    fn plan_input(&self, core: &Core, input: &Input, clock: Clock) -> Plan<Resolution> {
        let fresh = |dir: &str| clock.fresh(self.config.max_age_of(dir));
        let dialect = self.config.source.dialect;
        match input {
            Input::Param { path, selector } => {
                let (dir, name) = split(path);
                if let Some(plan) = self.plan_walk(core, dir, clock) {
                    return plan;
                }
                let leaf_name = match selector {
                    Some(s) => format!("{name}:{s}"),
                    None => format!("{name}%"),
                };
                let plan = self.planner().lookup_in(
                    &core.tree,
                    dir.to_string(),
                    OsStr::new(&leaf_name),
                    !clock.paged,
                    fresh,
                );
                match plan {
                    Plan::Done(Ok(Target::File {
                        cached,
                        resolved_at,
                        ..
                    })) => Plan::Done(Ok(Resolution {
                        value: Resolved::Param(Leaf::new(path.clone(), &cached.param, dialect)),
                        // A label is good as long as what it resolved to; a version forever.
                        until: match (selector, resolved_at) {
                            (_, Some(at)) => self.until(dir, at),
                            (Some(_), None) => Instant::now() + super::STATIC_TTL,
                            (None, None) => self.until(dir, cached.fetched_at),
                        },
                        modified: cached.param.modified,
                        stamp: stamp_of(std::iter::once(&cached.param)),
                    })),
                    Plan::Done(Ok(_)) => Plan::Done(Err(Error::NotFound)),
                    Plan::Done(Err(e)) => Plan::Done(Err(e)),
                    Plan::Need(f) => Plan::Need(f),
                }
            }
            Input::Dir(path) => {
                if let Some(plan) = self.plan_walk(core, path, clock) {
                    return plan;
                }
                let tree = &core.tree;
                let recursive = self.config.recursive;
                let below = |p: &str| {
                    if recursive {
                        in_subtree(path, p)
                    } else {
                        p == path
                    }
                };
                let mut until: Option<Instant> = None;
                // What is stale is swept from the deepest directory above all of it, so that
                // one stale subdirectory costs its own sweep, not the whole subtree's.
                let mut stale: Option<String> = None;
                for (p, d) in tree.dirs().filter(|(p, _)| below(p)) {
                    let listed = if recursive {
                        d.listed_at
                    } else {
                        d.files_at.max(d.listed_at)
                    };
                    match listed {
                        Some(t) if fresh(p).ok(t) => {
                            let u = self.until(p, t);
                            until = Some(until.map_or(u, |a| a.min(u)));
                        }
                        _ => stale = Some(stale.map_or(p.clone(), |s| common_ancestor(&s, p))),
                    }
                }
                if let Some(dir) = stale {
                    return Plan::Need(super::refresher::Fetch::Sweep(dir));
                }
                let mut leaves = Vec::new();
                let mut params = Vec::new();
                for (p, d) in tree.dirs().filter(|(p, _)| below(p)) {
                    for (name, cached) in &d.files {
                        let full = join(p, name);
                        let rel = if path.is_empty() {
                            full
                        } else {
                            full[path.len() + 1..].to_string()
                        };
                        leaves.push(Leaf::new(rel, &cached.param, dialect));
                        params.push(&cached.param);
                    }
                }
                leaves.sort_by(|a, b| a.path.cmp(&b.path));
                params.sort_by(|a, b| a.name.cmp(&b.name));
                let modified = params
                    .iter()
                    .map(|p| p.modified)
                    .max()
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                Plan::Done(Ok(Resolution {
                    value: Resolved::Dir(leaves),
                    until: until.unwrap_or_else(|| self.until(path, clock.start)),
                    modified,
                    stamp: stamp_of(params.into_iter()),
                }))
            }
        }
    }

    /// Until when knowledge of directory `dir` fetched at `at` is fresh.
    fn until(&self, dir: &str, at: Instant) -> Instant {
        at.checked_add(self.config.max_age_of(dir))
            .unwrap_or_else(|| at + super::STATIC_TTL)
    }

    /// Walks from the root to directory `path`: `None` once it is there (known to the tree),
    /// else the plan that answers (not found) or fetches.
    fn plan_walk<T>(&self, core: &Core, path: &str, clock: Clock) -> Option<Plan<T>> {
        if core.tree.dir(path).is_some() {
            return None;
        }
        let fresh = |dir: &str| clock.fresh(self.config.max_age_of(dir));
        let mut at = String::new();
        for part in path.split('/') {
            match self.planner().lookup_in(
                &core.tree,
                at.clone(),
                OsStr::new(part),
                !clock.paged,
                fresh,
            ) {
                Plan::Done(Ok(Target::Dir(p))) => at = p,
                Plan::Done(Ok(_)) => return Some(Plan::Done(Err(Error::NotFound))),
                Plan::Done(Err(e)) => return Some(Plan::Done(Err(e))),
                Plan::Need(f) => return Some(Plan::Need(f)),
            }
        }
        None
    }
}

/// The deepest directory at or above both paths.
fn common_ancestor(a: &str, b: &str) -> String {
    let mut out = String::new();
    for (x, y) in a.split('/').zip(b.split('/')) {
        if x != y {
            break;
        }
        out = join(&out, x);
    }
    out
}

/// The stamp of an input as resolved: its versions' digest, or `ABSENT`; `None` if it failed
/// otherwise.
pub(super) fn stamp_in(
    input: &Input,
    known: &Known,
    found: &HashMap<Input, Resolution>,
) -> Option<u64> {
    match (found.get(input), known.get(input)) {
        (Some(r), _) => Some(r.stamp),
        (None, Some(Err(Error::NotFound))) => Some(ABSENT),
        _ => None,
    }
}
