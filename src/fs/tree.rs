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
//!   dropped from memory is zeroized by its `Content`;
//! - every change to what a name shows is reported as a [`Change`] for the kernel's caches.
//!
//! Nothing here knows inodes or the kernel: the planner reads the tree, and applying a fetch's
//! result is the only thing that changes it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use lru::LruCache;

use crate::backend::Param;
use crate::names::{Source, PARAM_SUFFIX, SELECTOR};

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
    /// Where each entry stands in listings, by (name, is a directory): numbered in order of
    /// first appearance, so a listing in progress shows new names after the old ones. A removed
    /// name keeps its number for a while, so that if it comes back during a listing it is not
    /// shown twice.
    cookies: HashMap<(String, bool), u64>,
    next_cookie: u64,
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
            next_cookie: FIRST_COOKIE,
        }
    }

    /// The listing offset of an entry (see `cookies`).
    pub fn cookie(&self, name: &str, is_dir: bool) -> Option<u64> {
        self.cookies.get(&(name.to_string(), is_dir)).copied()
    }

    fn number(&mut self, name: &str, is_dir: bool) {
        let key = (name.to_string(), is_dir);
        if !self.cookies.contains_key(&key) {
            self.cookies.insert(key, self.next_cookie);
            self.next_cookie += 1;
        }
        let live = self.files.len() + self.subdirs.len();
        if self.cookies.len() > 2 * live + MAX_REMOVED_COOKIES {
            let (files, subdirs) = (&self.files, &self.subdirs);
            self.cookies.retain(|(name, is_dir), _| {
                if *is_dir {
                    subdirs.contains(name)
                } else {
                    files.contains_key(name)
                }
            });
        }
    }
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
    absent: LruCache<(String, String), Absent>,
    /// Versions fetched through a selector, by (path, version). A version never changes.
    pinned: LruCache<(String, String), Arc<Cached>>,
    /// What each selector resolved to, by (path, selector), and when: a version, or `None` for
    /// a version or label that does not exist.
    selectors: LruCache<(String, String), (Option<String>, Instant)>,
    /// Directories whose whole listing was fetched, by path: when last, and how many
    /// parameters it held. A group's refresh covers the groups below it, which are dropped.
    groups: BTreeMap<String, (Instant, usize)>,
    generations: u64,
    /// Paths of parameters removed by the apply in progress: their pinned versions go too.
    removed: HashSet<String>,
}

impl Tree {
    pub fn new(now: Instant) -> Tree {
        let cap = |n| NonZeroUsize::new(n).expect("caps are positive");
        let mut dirs = HashMap::new();
        dirs.insert(String::new(), Dir::new(now));
        Tree {
            dirs,
            absent: LruCache::new(cap(MAX_NEGATIVE)),
            pinned: LruCache::new(cap(MAX_PINNED)),
            selectors: LruCache::new(cap(MAX_SELECTORS)),
            groups: BTreeMap::new(),
            generations: 0,
            removed: HashSet::new(),
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
        if self.dirs.get(dir).is_none_or(|d| d.listed_at.is_none()) {
            return false;
        }
        let mut total = 0;
        for (path, d) in &self.dirs {
            if in_subtree(dir, path) {
                total += d.files.len();
                if total > limit {
                    return false;
                }
            }
        }
        true
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

    /// Records the result of a complete recursive listing of `top` that started at `at`: every
    /// fact at or below `top` older than `at` is replaced by what the listing shows.
    pub fn apply_sweep(
        &mut self,
        top: &str,
        params: Vec<Param>,
        source: &Source,
        at: Instant,
    ) -> Vec<Change> {
        let mut fresh: BTreeMap<String, Listed> = BTreeMap::new();
        fresh.entry(top.to_string()).or_default();
        for p in params {
            let Some(rel) = source.relative(&p.name).map(str::to_string) else {
                continue;
            };
            if rel == top || !in_subtree(top, &rel) {
                continue;
            }
            let (dir, name) = split(&rel);
            let mut child = dir.to_string();
            while child != top {
                let (parent, child_name) = split(&child);
                let parent = parent.to_string();
                fresh
                    .entry(parent.clone())
                    .or_default()
                    .subdirs
                    .insert(child_name.to_string());
                fresh.entry(child.clone()).or_default();
                child = parent;
            }
            let files = &mut fresh.entry(dir.to_string()).or_default().files;
            if !(p.derived && files.get(name).is_some_and(|f| !f.derived)) {
                files.insert(name.to_string(), p);
            }
        }
        let mut changes = Vec::new();
        self.sweep(top, fresh, at, &mut changes);
        self.finish_apply();
        changes
    }

    /// Records that `path` is not a directory (a probe found nothing below it): a sweep of it
    /// that found nothing.
    pub fn apply_not_dir(&mut self, path: &str, at: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let fresh = BTreeMap::from([(path.to_string(), Listed::default())]);
        self.sweep(path, fresh, at, &mut changes);
        self.finish_apply();
        changes
    }

    /// Replaces what is known at or below `top` and older than `at` with `fresh`, the contents
    /// of every directory there as of `at` (`top` itself included, empty if it is no directory).
    fn sweep(
        &mut self,
        top: &str,
        mut fresh: BTreeMap<String, Listed>,
        at: Instant,
        changes: &mut Vec<Change>,
    ) {
        let empty = fresh
            .get(top)
            .is_none_or(|l| l.files.is_empty() && l.subdirs.is_empty());
        if empty && !top.is_empty() {
            // Nothing below `top`: it is not a directory (as of `at`).
            fresh.remove(top);
            let (parent, name) = split(top);
            self.note_absent(parent, name, at, |a| &mut a.dir);
        } else if !self.ensure_dir(top, at, changes) {
            // Something newer found `top` absent.
            return;
        }

        // Directories the listing did not show and nothing newer has seen are gone. `seen_at`
        // grows towards the root, so the set is closed downwards.
        let gone: Vec<String> = self
            .dirs
            .iter()
            .filter(|(path, d)| {
                in_subtree(top, path)
                    && !path.is_empty()
                    && !fresh.contains_key(*path)
                    && d.seen_at <= at
            })
            .map(|(path, _)| path.clone())
            .collect();
        for path in gone {
            self.remove_dir(&path, changes);
        }
        // Directories with newer evidence of existence keep it and what is newer below them,
        // and lose what is older.
        let kept: Vec<String> = self
            .dirs
            .keys()
            .filter(|path| in_subtree(top, path) && !fresh.contains_key(*path))
            .cloned()
            .collect();
        for path in kept {
            self.replace_contents(&path, Listed::default(), at, changes);
        }
        // Parents sort before their children, so a directory skipped here (something newer
        // knows it absent) takes its subtree with it.
        for (path, listed) in fresh {
            if path != top && !self.ensure_dir(&path, at, changes) {
                continue;
            }
            self.replace_contents(&path, listed, at, changes);
        }
    }

    /// Records the result of a complete one-level listing of `dir`: its files are replaced.
    pub fn apply_files(
        &mut self,
        dir: &str,
        params: Vec<Param>,
        source: &Source,
        at: Instant,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if !self.dirs.contains_key(dir) {
            return changes;
        }
        let mut files = BTreeMap::new();
        for p in params {
            if let Some(rel) = source.relative(&p.name) {
                let (d, name) = split(rel);
                if d == dir {
                    files.insert(name.to_string(), p);
                }
            }
        }
        let d = self.dirs.get_mut(dir).expect("checked above");
        let gone: Vec<String> = d
            .files
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove_file(dir, &name, at, &mut changes);
        }
        for (name, p) in files {
            self.put_file(dir, &name, p, at, &mut changes);
        }
        let d = self.dirs.get_mut(dir).expect("checked above");
        if d.files_at.is_none_or(|t| t <= at) {
            d.files_at = Some(at);
        }
        self.bump(dir);
        self.finish_apply();
        changes
    }

    /// Records parameters seen in a partial listing (the first page of a probe): they and the
    /// directories holding them exist; nothing is learned of what was not returned.
    pub fn apply_seen(&mut self, params: Vec<Param>, source: &Source, at: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for p in params {
            let Some(rel) = source.relative(&p.name).map(str::to_string) else {
                continue;
            };
            let (dir, name) = split(&rel);
            if self.ensure_dir(dir, at, &mut changes) {
                self.put_file(dir, name, p, at, &mut changes);
            }
        }
        self.finish_apply();
        changes
    }

    /// Records the answer of a `GetParameter` for `name` in `dir`.
    pub fn apply_get(
        &mut self,
        dir: &str,
        name: &str,
        found: Option<Param>,
        at: Instant,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        match found {
            Some(p) => {
                if self.ensure_dir(dir, at, &mut changes) {
                    self.put_file(dir, name, p, at, &mut changes);
                }
            }
            None => {
                self.remove_file(dir, name, at, &mut changes);
                self.note_absent(dir, name, at, |a| &mut a.file);
            }
        }
        self.finish_apply();
        changes
    }

    /// Records the answer of a `GetParameter(name:selector)`.
    pub fn apply_pinned(
        &mut self,
        dir: &str,
        name: &str,
        selector: &str,
        found: Option<Param>,
        at: Instant,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let path = join(dir, name);
        let key = (path.clone(), selector.to_string());
        let version = found.as_ref().map(|p| p.version.clone());
        match self.selectors.peek(&key) {
            Some((_, t)) if *t > at => return changes,
            Some((old, _)) if *old != version => {
                // A label moved: its name now shows another version.
                changes.push(Change {
                    dir: dir.to_string(),
                    name: format!("{name}{SELECTOR}{selector}"),
                });
            }
            _ => {}
        }
        self.selectors.put(key, (version, at));
        if let Some(p) = found {
            let cached = Arc::new(Cached {
                param: p,
                fetched_at: at,
            });
            self.pinned
                .put((path, cached.param.version.clone()), cached);
        }
        changes
    }

    /// Forgets what labels and missing selectors at or below `top` resolved to, so that they are
    /// asked again (a forced refresh); pinned versions stay, as they cannot change.
    pub fn forget_selectors(&mut self, top: &str) -> Vec<Change> {
        let forgotten: Vec<(String, String)> = self
            .selectors
            .iter()
            .filter(|((path, sel), (v, _))| {
                in_subtree(top, split(path).0)
                    && (v.is_none() || !sel.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut changes = Vec::new();
        for key in forgotten {
            self.selectors.pop(&key);
            let (dir, name) = split(&key.0);
            changes.push(Change {
                dir: dir.to_string(),
                name: format!("{name}{SELECTOR}{}", key.1),
            });
        }
        changes
    }

    fn note_absent(
        &mut self,
        dir: &str,
        name: &str,
        at: Instant,
        field: impl Fn(&mut Absent) -> &mut Option<Instant>,
    ) {
        let key = (dir.to_string(), name.to_string());
        let entry = self.absent.get_or_insert_mut(key, Absent::default);
        let slot = field(entry);
        if slot.is_none_or(|t| t <= at) {
            *slot = Some(at);
        }
    }

    /// Forgets one kind of absence of a name (it was found to exist, as of something newer).
    fn clear_absent(
        &mut self,
        dir: &str,
        name: &str,
        field: impl Fn(&mut Absent) -> &mut Option<Instant>,
    ) {
        let key = (dir.to_string(), name.to_string());
        if let Some(a) = self.absent.peek_mut(&key) {
            *field(a) = None;
            if a.file.is_none() && a.dir.is_none() {
                self.absent.pop(&key);
            }
        }
    }

    /// When `name` in `dir` was last confirmed absent, as a file or as a directory.
    fn absent_since(&self, dir: &str, name: &str, file: bool) -> Option<Instant> {
        let a = self.absent.peek(&(dir.to_string(), name.to_string()))?;
        if file {
            a.file
        } else {
            a.dir
        }
    }

    /// Makes sure `path` and the directories above it exist, seen at `at` or later. Fails when
    /// something newer than `at` knows one of them absent.
    fn ensure_dir(&mut self, path: &str, at: Instant, changes: &mut Vec<Change>) -> bool {
        if !path.is_empty() {
            let (parent, name) = split(path);
            if !self.ensure_dir(parent, at, changes) {
                return false;
            }
            if !self.dirs.contains_key(path) && !self.add_dir(parent, name, at, changes) {
                return false;
            }
        }
        let d = self.dirs.get_mut(path).expect("made above");
        if d.seen_at < at {
            d.seen_at = at;
        }
        true
    }

    /// Adds the directory `name` to `parent` unless something newer knows it absent: a
    /// complete listing of `parent`, or a probe.
    fn add_dir(
        &mut self,
        parent: &str,
        name: &str,
        at: Instant,
        changes: &mut Vec<Change>,
    ) -> bool {
        let absent = self.absent_since(parent, name, false);
        let p = self.dirs.get(parent).expect("parents are made first");
        // When the parent was listed whole, was empty, or the name was probed, the directory
        // did not exist.
        let empty_at = [p.listed_at, p.empty_at, absent]
            .into_iter()
            .flatten()
            .max();
        if empty_at.is_some_and(|t| t > at) {
            return false;
        }
        let mut dir = Dir::new(at);
        dir.empty_at = empty_at;
        self.dirs.insert(join(parent, name), dir);
        self.clear_absent(parent, name, |a| &mut a.dir);
        let p = self.dirs.get_mut(parent).expect("checked above");
        p.subdirs.insert(name.to_string());
        p.number(name, true);
        if p.seen_at < at {
            p.seen_at = at;
        }
        changes.push(Change {
            dir: parent.to_string(),
            name: name.to_string(),
        });
        self.bump(parent);
        true
    }

    /// Drops a directory and everything below it (all of it is older than `at`).
    fn remove_dir(&mut self, path: &str, changes: &mut Vec<Change>) {
        if path.is_empty() {
            return;
        }
        let below: Vec<String> = self
            .dirs
            .keys()
            .filter(|d| in_subtree(path, d))
            .cloned()
            .collect();
        for d in below {
            if let Some(dir) = self.dirs.remove(&d) {
                for name in dir.files.keys() {
                    self.removed.insert(join(&d, name));
                }
            }
            self.groups.remove(&d);
        }
        let (parent, name) = split(path);
        if let Some(p) = self.dirs.get_mut(parent) {
            p.subdirs.remove(name);
        }
        self.bump(parent);
        changes.push(Change {
            dir: parent.to_string(),
            name: name.to_string(),
        });
        // The name may have shown the parameter as `name%`; now it is `name` again.
        changes.push(Change {
            dir: parent.to_string(),
            name: format!("{name}{PARAM_SUFFIX}"),
        });
    }

    /// Replaces a directory's files with a listing from `at`, keeping whatever is newer than
    /// `at`, and marks its contents complete as of `at`. (Its subdirectories were settled by
    /// the caller.)
    fn replace_contents(
        &mut self,
        path: &str,
        listed: Listed,
        at: Instant,
        changes: &mut Vec<Change>,
    ) {
        let Some(d) = self.dirs.get(path) else {
            return;
        };
        let gone: Vec<String> = d
            .files
            .keys()
            .filter(|n| !listed.files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove_file(path, &name, at, changes);
        }
        for (name, p) in listed.files {
            self.put_file(path, &name, p, at, changes);
        }
        let d = self.dirs.get_mut(path).expect("checked above");
        if d.listed_at.is_none_or(|t| t <= at) {
            d.listed_at = Some(at);
            d.single_calls = 0;
        }
        if d.files_at.is_none_or(|t| t <= at) {
            d.files_at = Some(at);
        }
        self.bump(path);
    }

    /// Puts a parameter fetched at `at` in `dir`, unless something newer knows better: a newer
    /// fetch of it, a newer answer that it is absent, or a newer complete listing without it.
    fn put_file(
        &mut self,
        dir: &str,
        name: &str,
        p: Param,
        at: Instant,
        changes: &mut Vec<Change>,
    ) {
        let absent = self.absent_since(dir, name, true);
        if absent.is_some_and(|t| t > at) {
            return;
        }
        let Some(d) = self.dirs.get_mut(dir) else {
            return;
        };
        let changed = match d.files.get(name) {
            Some(old) if old.fetched_at > at => return,
            // A key of a JSON secret never hides a real secret of the same name.
            Some(old) if p.derived && !old.param.derived => return,
            Some(old) => old.param.version != p.version,
            None if d.files_at.max(d.empty_at).is_some_and(|t| t > at) => return,
            None => true,
        };
        d.files.insert(
            name.to_string(),
            Arc::new(Cached {
                param: p,
                fetched_at: at,
            }),
        );
        d.number(name, false);
        self.clear_absent(dir, name, |a| &mut a.file);
        self.seen(dir, at);
        if changed {
            self.bump(dir);
            Self::file_changed(dir, name, changes);
        }
    }

    /// A file in `dir` at `at` proves that `dir` and every directory above it existed then.
    fn seen(&mut self, dir: &str, at: Instant) {
        let mut path = dir;
        loop {
            match self.dirs.get_mut(path) {
                Some(d) if d.seen_at < at => d.seen_at = at,
                _ => return,
            }
            if path.is_empty() {
                return;
            }
            path = split(path).0;
        }
    }

    fn remove_file(&mut self, dir: &str, name: &str, at: Instant, changes: &mut Vec<Change>) {
        let Some(d) = self.dirs.get_mut(dir) else {
            return;
        };
        if d.files.get(name).is_none_or(|f| f.fetched_at > at) {
            return;
        }
        d.files.remove(name);
        self.removed.insert(join(dir, name));
        self.bump(dir);
        Self::file_changed(dir, name, changes);
    }

    /// Both names a parameter can be reached by, `name` and `name%`.
    fn file_changed(dir: &str, name: &str, changes: &mut Vec<Change>) {
        for shown in [name.to_string(), format!("{name}{PARAM_SUFFIX}")] {
            changes.push(Change {
                dir: dir.to_string(),
                name: shown,
            });
        }
    }

    fn bump(&mut self, dir: &str) {
        self.generations += 1;
        if let Some(d) = self.dirs.get_mut(dir) {
            d.generation = self.generations;
        }
    }

    /// Drops the pinned versions and selectors of parameters this apply removed: a deleted
    /// parameter keeps nothing in memory.
    fn finish_apply(&mut self) {
        if self.removed.is_empty() {
            return;
        }
        let removed = std::mem::take(&mut self.removed);
        let still_there = |path: &String| {
            let (dir, name) = split(path);
            self.dirs
                .get(dir)
                .is_some_and(|d| d.files.contains_key(name))
        };
        let removed: HashSet<String> = removed.into_iter().filter(|p| !still_there(p)).collect();
        if removed.is_empty() {
            return;
        }
        let pinned: Vec<_> = self
            .pinned
            .iter()
            .filter(|((path, _), _)| removed.contains(path))
            .map(|(k, _)| k.clone())
            .collect();
        for key in pinned {
            self.pinned.pop(&key);
        }
        let selectors: Vec<_> = self
            .selectors
            .iter()
            .filter(|((path, _), _)| removed.contains(path))
            .map(|(k, _)| k.clone())
            .collect();
        for key in selectors {
            self.selectors.pop(&key);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model;
