//! The tree: what ssmfs knows of the parameter hierarchy, and since when.
//!
//! Knowledge is kept per directory (keyed by its path relative to the mount root, "" for the
//! root): its files (each parameter's current version and the instant the fetch that brought it
//! started), its subdirectories, the instant it was last known to exist (`seen_at`) and the
//! instants its files (`files_at`) or its whole contents (`listed_at`) were last known complete.
//! Beside the directories: names confirmed absent, versions fetched through a selector and what
//! each selector resolved to, each in a cache with a size cap.
//!
//! Every fact is stamped with the instant its fetch *started*. Promises:
//! - **never backwards**: a fetch's result replaces only facts older than its stamp. Results
//!   may land in any order; the tree ends as if they had landed in the order they started;
//! - a directory's `seen_at` is at least that of anything below it, so a directory with newer
//!   evidence of existence than a listing that missed it is kept, with everything newer below;
//! - a directory is in `dirs` exactly while its parent lists it in `subdirs` (the root always is);
//! - memory is bounded by the parameters under the source plus the capped caches; a version
//!   dropped from memory is zeroized by its `Content`. The one trade-off: an absence evicted
//!   from its cache no longer blocks an older result that says otherwise, so a fetch slower
//!   than 16,384 newer misses can bring back a name for one max age;
//! - every change to what a name shows is reported as a [`Change`] for the kernel's caches, and
//!   every change in AWS as [`news::News`] for programs that watch the mount.
//!
//! Nothing here knows inodes or the kernel: the planner reads the tree, and applying a fetch's
//! result is the only thing that changes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use tokio::time::Instant;

use crate::backend::Param;
use crate::capped::Capped;
use crate::names::PARAM_SUFFIX;

/// Names confirmed absent, kept at most: a bound on memory against a client probing endless
/// random names. The oldest answer is forgotten first; forgetting costs one call if asked again.
const MAX_NEGATIVE: usize = 16_384;
/// Versions fetched through a selector (`name:3`), kept at most (up to 8 KB each for SSM).
const MAX_PINNED: usize = 1_024;
/// What selectors resolved to, kept at most.
const MAX_SELECTORS: usize = 4_096;
/// Listing offsets of removed names kept per directory, beyond twice its entries.
const MAX_REMOVED_COOKIES: usize = 1_024;
/// The first listing offset of a named entry: 1 to 3 are `.`, `..` and `.stats`, 4 `.refresh`.
pub const FIRST_COOKIE: u64 = 5;

/// A fetched parameter and when the fetch that brought it started. Shared so that reads and the
/// inodes the kernel holds need not copy values.
#[derive(Debug)]
pub struct Cached {
    pub param: Param,
    pub fetched_at: Instant,
}

impl Cached {
    /// Whether two fetches brought the same version: SSM numbers versions from 1 again when a
    /// parameter is deleted and made anew, so the modification time is part of its identity.
    pub fn same_version(&self, other: &Param) -> bool {
        self.param.version == other.version && self.param.modified == other.modified
    }
}

#[derive(Debug)]
pub struct Dir {
    pub files: BTreeMap<String, Arc<Cached>>,
    pub subdirs: BTreeSet<String>,
    /// The newest instant at which this directory was known to exist.
    pub seen_at: Instant,
    pub files_at: Option<Instant>,
    pub listed_at: Option<Instant>,
    /// The newest instant at which this directory was known not to exist (so to be empty):
    /// anything older found in it is out of date. Used for ordering, never to answer.
    empty_at: Option<Instant>,
    /// API calls spent on single names in this directory since it was last listed.
    pub single_calls: u32,
    /// Moves on whenever what a listing of this directory shows may have changed.
    pub generation: u64,
    /// Where each entry stands in listings, by a hash of (name, is a directory): numbered in
    /// order of first appearance, so a listing in progress shows new names after the old ones.
    /// A removed name keeps its number for a while, so that if it comes back during a listing
    /// it is not shown twice. (Keyed by hash to keep no second copy of every name.)
    cookies: HashMap<u64, u64>,
}

impl Dir {
    fn new(seen_at: Instant) -> Dir {
        Dir {
            files: BTreeMap::new(),
            subdirs: BTreeSet::new(),
            seen_at,
            files_at: None,
            listed_at: None,
            empty_at: None,
            single_calls: 0,
            generation: 0,
            cookies: HashMap::new(),
        }
    }

    /// The listing offset of an entry (see `cookies`).
    pub fn cookie(&self, name: &str, is_dir: bool) -> Option<u64> {
        self.cookies.get(&entry_hash(name, is_dir)).copied()
    }

    /// Numbers an entry from the tree's counter (`next`), which never goes back: a directory
    /// removed and made anew while the kernel lists it keeps numbering upwards.
    fn number(&mut self, name: &str, is_dir: bool, next: &mut u64) {
        if let std::collections::hash_map::Entry::Vacant(e) =
            self.cookies.entry(entry_hash(name, is_dir))
        {
            e.insert(*next);
            *next += 1;
        }
        let live = self.files.len() + self.subdirs.len();
        if self.cookies.len() > 2 * live + MAX_REMOVED_COOKIES {
            let live: HashSet<u64> = self
                .files
                .keys()
                .map(|n| entry_hash(n, false))
                .chain(self.subdirs.iter().map(|n| entry_hash(n, true)))
                .collect();
            self.cookies.retain(|h, _| live.contains(h));
        }
    }
}

fn entry_hash(name: &str, is_dir: bool) -> u64 {
    let mut h = DefaultHasher::new();
    (name, is_dir).hash(&mut h);
    h.finish()
}

/// A name whose meaning changed: in directory `dir`, `name` shows something else now.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Change {
    pub dir: String,
    pub name: String,
}

/// When a piece of knowledge is good enough to answer from.
#[derive(Clone, Copy, Debug)]
pub struct Fresh {
    /// Knowledge at or after this instant is fresh (`None`: any age will do).
    pub after: Option<Instant>,
    /// Knowledge fetched at or after this instant (the start of the request) is always fresh,
    /// whatever the max age, so a request is answered by the fetch it caused.
    pub since: Instant,
}

impl Fresh {
    pub fn ok(&self, at: Instant) -> bool {
        self.after.is_none_or(|after| at >= after) || at >= self.since
    }

    fn ok_opt(&self, at: Option<Instant>) -> bool {
        at.is_some_and(|at| self.ok(at))
    }
}

/// Absence of a name, by kind, and when it was confirmed.
#[derive(Clone, Copy, Debug, Default)]
struct Absent {
    file: Option<Instant>,
    dir: Option<Instant>,
    /// A directory removed by a listing older than what was known of its contents: its
    /// `files_at` and `listed_at`, for the directory if it is made anew.
    contents: Option<(Option<Instant>, Option<Instant>)>,
}

/// Joins a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Splits a path into its directory and last name.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Whether `path` is `top` or below it.
pub fn in_subtree(top: &str, path: &str) -> bool {
    top.is_empty() || path == top || path.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

/// The contents a listing showed for one directory.
#[derive(Default)]
struct Listed {
    files: BTreeMap<String, Param>,
    subdirs: BTreeSet<String>,
}

pub struct Tree {
    dirs: HashMap<String, Dir>,
    absent: Capped<(String, String), Absent>,
    /// Versions fetched through a selector, by (path, version). A version never changes.
    pinned: Capped<(String, String), Arc<Cached>>,
    /// What each selector resolved to, by (path, selector), and when: a version, or `None` for
    /// a version or label that does not exist.
    selectors: Capped<(String, String), (Option<String>, Instant)>,
    /// Directories whose whole listing was fetched, by path: when last, and how many
    /// parameters it held. A group's refresh covers the groups below it, which are dropped.
    groups: BTreeMap<String, (Instant, usize)>,
    generations: u64,
    /// The next listing offset to hand out, in any directory.
    next_cookie: u64,
    /// What selectors resolved to before this instant was forgotten by a forced refresh: an
    /// older resolution landing later is not recorded.
    selectors_floor: Option<Instant>,
    /// What the selectors a forced refresh forgot had resolved to, so that the next resolution
    /// can tell whether a label moved (see [`news`]).
    forgotten: Capped<(String, String), Option<String>>,
    /// Paths of parameters removed by the apply in progress: their pinned versions go too.
    removed: HashSet<String>,
    /// Recursive listings in progress, fetched a page at a time (see [`partial`]).
    partials: HashMap<String, partial::Partial>,
    /// Sweeps in progress that started before this instant are not kept: a forced refresh
    /// was asked for after they started.
    partials_floor: Option<Instant>,
    /// How the paths the apply in progress touched looked before it (see [`news`]).
    before: news::Before,
}

impl Tree {
    pub fn new(now: Instant) -> Tree {
        let mut dirs = HashMap::new();
        dirs.insert(String::new(), Dir::new(now));
        Tree {
            dirs,
            absent: Capped::new(MAX_NEGATIVE),
            pinned: Capped::new(MAX_PINNED),
            selectors: Capped::new(MAX_SELECTORS),
            groups: BTreeMap::new(),
            generations: 0,
            next_cookie: FIRST_COOKIE,
            selectors_floor: None,
            forgotten: Capped::new(MAX_SELECTORS),
            removed: HashSet::new(),
            partials: HashMap::new(),
            partials_floor: None,
            before: Default::default(),
        }
    }

    pub fn dir(&self, path: &str) -> Option<&Dir> {
        self.dirs.get(path)
    }

    /// Every directory, by path.
    pub fn dirs(&self) -> impl Iterator<Item = (&String, &Dir)> {
        self.dirs.iter()
    }

    /// Sizes of the capped caches, for tests and `.stats`: (absent names, pinned versions,
    /// selectors).
    pub fn cache_sizes(&self) -> (usize, usize, usize) {
        (self.absent.len(), self.pinned.len(), self.selectors.len())
    }

    /// Whether `name` in `dir` is a directory, if known fresh enough.
    pub fn is_dir(&self, dir: &str, name: &str, fresh: Fresh) -> Option<bool> {
        let d = self.dirs.get(dir)?;
        if d.subdirs.contains(name) {
            let child = self.dirs.get(&join(dir, name))?;
            if fresh.ok(child.seen_at) || fresh.ok_opt(d.listed_at) {
                return Some(true);
            }
        } else if fresh.ok_opt(d.listed_at) {
            return Some(false);
        }
        match self.absent.peek(&(dir.to_string(), name.to_string())) {
            Some(Absent { dir: Some(at), .. }) if fresh.ok(*at) => Some(false),
            _ => None,
        }
    }

    /// The parameter `name` in `dir`: `Some(Some(_))` present, `Some(None)` absent, `None` when not
    /// known fresh enough.
    pub fn file(&self, dir: &str, name: &str, fresh: Fresh) -> Option<Option<Arc<Cached>>> {
        let d = self.dirs.get(dir)?;
        if let Some(f) = d.files.get(name) {
            return fresh.ok(f.fetched_at).then(|| Some(f.clone()));
        }
        if fresh.ok_opt(d.files_at) {
            return Some(None);
        }
        match self.absent.peek(&(dir.to_string(), name.to_string())) {
            Some(Absent { file: Some(at), .. }) if fresh.ok(*at) => Some(None),
            _ => None,
        }
    }

    /// A version of a parameter, current or pinned.
    pub fn find_version(&self, dir: &str, name: &str, version: &str) -> Option<Arc<Cached>> {
        if let Some(c) = self.dirs.get(dir).and_then(|d| d.files.get(name)) {
            if c.param.version == version {
                return Some(c.clone());
            }
        }
        self.pinned
            .peek(&(join(dir, name), version.to_string()))
            .cloned()
    }

    /// What `name:selector` in `dir` resolved to, and when.
    pub fn selector(
        &self,
        dir: &str,
        name: &str,
        selector: &str,
    ) -> Option<(Option<String>, Instant)> {
        self.selectors
            .peek(&(join(dir, name), selector.to_string()))
            .cloned()
    }

    /// Whether `dir` was listed before and held at most `limit` parameters in its whole subtree:
    /// then sweeping it again costs no more calls than asking about one name in it.
    pub fn is_small(&self, dir: &str, limit: usize) -> bool {
        self.dirs.get(dir).is_some_and(|d| d.listed_at.is_some())
            && self.known_files(dir, limit + 1) <= limit
    }

    /// How many parameters are known at or below `dir`, of any age, counted up to `cap`.
    pub fn known_files(&self, dir: &str, cap: usize) -> usize {
        let mut total = 0;
        for (path, d) in &self.dirs {
            if in_subtree(dir, path) {
                total += d.files.len();
                if total >= cap {
                    return cap;
                }
            }
        }
        total
    }

    /// The name under which a parameter of `dir` is listed: `name%` when a directory or a
    /// control file has `name`.
    pub fn shown_name(&self, dir: &str, name: &str) -> String {
        let shadowed = crate::names::is_control(name, dir.is_empty())
            || self.dirs.get(dir).is_some_and(|d| d.subdirs.contains(name));
        if shadowed {
            format!("{name}{PARAM_SUFFIX}")
        } else {
            name.to_string()
        }
    }

    /// The groups, by path, with when each was last refreshed and its parameter count.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Instant, usize)> {
        self.groups.iter().map(|(g, (at, n))| (g.as_str(), *at, *n))
    }

    /// Records that the listing of `dir` was fetched whole at `at`, with `parameters` in it;
    /// `subtree`: the listing was recursive, so it refreshed the groups below `dir` too.
    pub fn group_refreshed(&mut self, dir: &str, subtree: bool, parameters: usize, at: Instant) {
        if subtree {
            let below = format!("{dir}/");
            self.groups
                .retain(|g, (t, _)| !((dir.is_empty() || g.starts_with(&below)) && *t <= at));
        }
        let entry = self
            .groups
            .entry(dir.to_string())
            .or_insert((at, parameters));
        if entry.0 <= at {
            *entry = (at, parameters);
        }
    }

    /// Counts an API call spent on a single name in `dir`.
    pub fn spent_on_single(&mut self, dir: &str, calls: u32) {
        if let Some(d) = self.dirs.get_mut(dir) {
            d.single_calls = d.single_calls.saturating_add(calls);
        }
    }
}

mod apply;
mod facts;
pub mod news;
pub mod partial;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model;
