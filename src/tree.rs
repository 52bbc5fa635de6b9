//! The tree: what ssmfs knows of the parameter hierarchy, how old each piece of knowledge is, and
//! the inode numbers handed to the kernel.
//!
//! Knowledge is kept per directory (keyed by its path relative to the mount root, "" for the root):
//! - `files`: parameters directly in the directory, each with the instant it was fetched;
//! - `subdirs`: directories directly below it, each with the instant it was last seen to exist;
//! - `files_at` / `listed_at`: the instant at which the set of files / of files and subdirectories
//!   was last known complete (a one-level fetch gives the first, a recursive sweep both);
//! - `not_file` / `not_dir`: names confirmed absent, so repeated misses cost no call.
//!
//! Invariants:
//! - every individual fact is at least as new as the listing times of its directory (applying a
//!   listing rewrites the facts below it), so a fresh listing answers for every name;
//! - a directory is in `dirs` only while it is known to exist (the root always is);
//! - an inode number names one (kind, path, version) and is never reused, so the kernel never sees
//!   an inode change type or content: a file's inode is one version of a parameter, and a new
//!   version is a new inode. A reader that holds the old one keeps reading the old value whole,
//!   as with a file replaced by rename; nothing the kernel caches for an inode ever goes stale;
//! - a version the kernel still holds (looked up and not yet forgotten) stays readable after it
//!   is replaced or deleted, and is dropped when the kernel forgets it;
//! - every change to what a name shows is reported as an [`Inval`] for the kernel's caches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Param;

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// Names confirmed absent are remembered per directory up to this many, then forgotten at once:
/// a bound on memory against a client probing endless random names.
const MAX_NEGATIVE: usize = 4096;

/// A fetched parameter and when it was fetched. Shared so that reads need not copy values.
#[derive(Debug)]
pub struct Cached {
    pub param: Param,
    pub fetched_at: Instant,
}

#[derive(Debug, Default)]
pub struct Dir {
    pub files: BTreeMap<String, Arc<Cached>>,
    pub subdirs: BTreeMap<String, Instant>,
    pub files_at: Option<Instant>,
    pub listed_at: Option<Instant>,
    not_file: HashMap<String, Instant>,
    not_dir: HashMap<String, Instant>,
    /// API calls spent on single names in this directory since it was last listed.
    pub single_calls: u32,
}

/// What an inode is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    Dir {
        path: String,
    },
    /// One version of a parameter.
    File {
        dir: String,
        name: String,
        version: String,
    },
    Refresh {
        dir: String,
    },
    /// One snapshot of the `.stats` document: each lookup makes a new one, so that what the
    /// kernel caches for an inode never changes.
    Stats {
        generation: u64,
    },
}

/// A rendered `.stats` document and when it was rendered.
pub struct Snapshot {
    pub content: Vec<u8>,
    pub at: std::time::SystemTime,
}

/// A kernel cache entry that no longer shows the truth: this name in this directory inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inval(pub Ino, pub String);

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

/// A directory's contents as a listing shows them: its files and its subdirectories.
type Listing = (BTreeMap<String, Param>, BTreeMap<String, Instant>);

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

#[derive(Default)]
pub struct Tree {
    pub dirs: HashMap<String, Dir>,
    /// Indexed by inode number - 1; `None` once a retired version is forgotten.
    nodes: Vec<Option<Node>>,
    inos: HashMap<Node, Ino>,
    /// How many lookups of each inode the kernel has not yet forgotten.
    lookups: HashMap<Ino, u64>,
    /// Versions no longer current that the kernel still holds.
    retired: HashMap<Ino, Arc<Cached>>,
    /// Versions fetched through a selector (`name:3`, `name:label`), by (dir, name, version).
    /// A version never changes, so these never expire.
    pinned: HashMap<(String, String, String), Arc<Cached>>,
    /// What each selector resolved to, by (dir, name, selector), and when: a version, or
    /// `None` for a version or label that does not exist.
    selectors: HashMap<(String, String, String), (Option<String>, Instant)>,
    /// `.stats` snapshots the kernel may hold; the newest is also the one listings show.
    snapshots: HashMap<Ino, Arc<Snapshot>>,
    newest_snapshot: Option<Ino>,
    generations: u64,
    /// Directories whose whole listing was fetched, by path: when last, and how many
    /// parameters it held. A group's refresh covers the groups below it, which are dropped.
    groups: BTreeMap<String, (Instant, usize)>,
}

impl Tree {
    pub fn new() -> Tree {
        let mut tree = Tree::default();
        tree.dirs.insert(String::new(), Dir::default());
        let root = tree.ino(Node::Dir {
            path: String::new(),
        });
        debug_assert_eq!(root, ROOT);
        tree
    }

    /// The inode of a node, assigned on first use.
    pub fn ino(&mut self, node: Node) -> Ino {
        if let Some(ino) = self.inos.get(&node) {
            return *ino;
        }
        self.nodes.push(Some(node.clone()));
        let ino = self.nodes.len() as Ino;
        self.inos.insert(node, ino);
        ino
    }

    pub fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(ino.checked_sub(1)? as usize)?.as_ref()
    }

    /// The inode of the current version of a parameter.
    pub fn file_node(&mut self, dir: &str, name: &str, version: &str) -> Ino {
        self.ino(Node::File {
            dir: dir.to_string(),
            name: name.to_string(),
            version: version.to_string(),
        })
    }

    /// Counts a lookup the kernel was answered with.
    pub fn looked_up(&mut self, ino: Ino) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    /// The kernel forgot `n` lookups of `ino`: a retired version it no longer holds is dropped.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        let Some(count) = self.lookups.get_mut(&ino) else {
            return;
        };
        *count = count.saturating_sub(n);
        if *count > 0 {
            return;
        }
        self.lookups.remove(&ino);
        let done_with = self.retired.remove(&ino).is_some()
            || (self.newest_snapshot != Some(ino) && self.snapshots.remove(&ino).is_some());
        if done_with {
            self.drop_node(ino);
        }
    }

    fn drop_node(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(ino as usize - 1).and_then(Option::take) {
            self.inos.remove(&node);
        }
    }

    /// A new `.stats` snapshot with its own inode. The previous newest one is dropped unless
    /// the kernel holds it.
    pub fn new_snapshot(&mut self, content: Vec<u8>) -> Ino {
        self.generations += 1;
        let ino = self.ino(Node::Stats {
            generation: self.generations,
        });
        let at = std::time::SystemTime::now();
        self.snapshots
            .insert(ino, Arc::new(Snapshot { content, at }));
        if let Some(old) = self.newest_snapshot.replace(ino) {
            if !self.lookups.contains_key(&old) {
                self.snapshots.remove(&old);
                self.drop_node(old);
            }
        }
        ino
    }

    /// The newest `.stats` snapshot's inode, if any was made.
    pub fn newest_snapshot(&self) -> Option<Ino> {
        self.newest_snapshot
    }

    pub fn snapshot(&self, ino: Ino) -> Option<Arc<Snapshot>> {
        self.snapshots.get(&ino).cloned()
    }

    /// The version of a parameter an inode stands for, current or retired.
    pub fn version(&self, ino: Ino) -> Option<Arc<Cached>> {
        if let Some(c) = self.retired.get(&ino) {
            return Some(c.clone());
        }
        match self.node(ino)? {
            Node::File { dir, name, version } => self.find_version(dir, name, version),
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
            .get(&(dir.to_string(), name.to_string(), version.to_string()))
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
            .get(&(dir.to_string(), name.to_string(), selector.to_string()))
            .cloned()
    }

    /// Records the answer of a `GetParameter(name:selector)`.
    pub fn apply_pinned(
        &mut self,
        dir: &str,
        name: &str,
        selector: &str,
        found: Option<Param>,
        at: Instant,
    ) -> Vec<Inval> {
        let mut invals = Vec::new();
        let key = (dir.to_string(), name.to_string(), selector.to_string());
        let version = found.as_ref().map(|p| p.version.clone());
        if self.selectors.len() >= MAX_NEGATIVE * 4 {
            // Bound memory against endless distinct selectors: forget what can be asked again.
            self.selectors.retain(|_, (v, _)| v.is_some());
        }
        if let Some((old, _)) = self.selectors.insert(key, (version.clone(), at)) {
            if old != version {
                // A label moved: its name now shows another version.
                if let Some(p) = self.dir_ino(dir) {
                    invals.push(Inval(
                        p,
                        format!("{name}{}{selector}", crate::names::SELECTOR),
                    ));
                }
            }
        }
        if let Some(p) = found {
            let key = (dir.to_string(), name.to_string(), p.version.clone());
            self.pinned.insert(
                key,
                Arc::new(Cached {
                    param: p,
                    fetched_at: at,
                }),
            );
        }
        invals
    }

    /// Forgets what labels and missing selectors at or below `top` resolved to, so that they are
    /// asked again (a forced refresh); pinned versions stay, as they cannot change.
    pub fn forget_selectors(&mut self, top: &str) -> Vec<Inval> {
        let mut invals = Vec::new();
        let forgotten: Vec<(String, String, String)> = self
            .selectors
            .iter()
            .filter(|((dir, _, sel), (v, _))| {
                in_subtree(top, dir)
                    && (v.is_none() || !sel.starts_with(|c: char| c.is_ascii_digit()))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for (dir, name, sel) in forgotten {
            self.selectors
                .remove(&(dir.clone(), name.clone(), sel.clone()));
            if let Some(p) = self.dir_ino(&dir) {
                invals.push(Inval(p, format!("{name}{}{sel}", crate::names::SELECTOR)));
            }
        }
        invals
    }

    /// Moves a version that stops being current out of the way: kept while the kernel holds
    /// it, forgotten at once otherwise.
    fn retire(&mut self, dir: &str, name: &str, old: Arc<Cached>) {
        let node = Node::File {
            dir: dir.to_string(),
            name: name.to_string(),
            version: old.param.version.clone(),
        };
        let Some(ino) = self.known_ino(&node) else {
            return;
        };
        if self.lookups.get(&ino).is_some_and(|n| *n > 0) {
            self.retired.insert(ino, old);
        } else {
            self.inos.remove(&node);
            self.nodes[ino as usize - 1] = None;
        }
    }

    /// The inode of a node if the kernel may know it.
    fn known_ino(&self, node: &Node) -> Option<Ino> {
        self.inos.get(node).copied()
    }

    fn dir_ino(&self, path: &str) -> Option<Ino> {
        self.known_ino(&Node::Dir {
            path: path.to_string(),
        })
    }

    /// Whether `name` in `dir` is a directory, if known fresh enough.
    pub fn is_dir(&self, dir: &str, name: &str, fresh: Fresh) -> Option<bool> {
        let d = self.dirs.get(dir)?;
        if let Some(seen) = d.subdirs.get(name) {
            if fresh.ok(*seen) || fresh.ok_opt(d.listed_at) {
                return Some(true);
            }
        } else if fresh.ok_opt(d.listed_at) {
            return Some(false);
        }
        match d.not_dir.get(name) {
            Some(at) if fresh.ok(*at) => Some(false),
            _ => None,
        }
    }

    /// The parameter `name` in `dir`: `Some(Some(_))` present, `Some(None)` absent, `None` when not
    /// known fresh enough.
    pub fn file(&self, dir: &str, name: &str, fresh: Fresh) -> Option<Option<Arc<Cached>>> {
        let d = self.dirs.get(dir)?;
        if let Some(f) = d.files.get(name) {
            if fresh.ok(f.fetched_at) {
                return Some(Some(f.clone()));
            }
            return None;
        }
        if fresh.ok_opt(d.files_at) {
            return Some(None);
        }
        match d.not_file.get(name) {
            Some(at) if fresh.ok(*at) => Some(None),
            _ => None,
        }
    }

    /// The instant from which `name` in `dir` is known to be a directory.
    pub fn dir_seen(&self, dir: &str, name: &str) -> Option<Instant> {
        let d = self.dirs.get(dir)?;
        let seen = *d.subdirs.get(name)?;
        Some(d.listed_at.map_or(seen, |l| l.max(seen)))
    }

    /// Counts API calls spent on a single name in `dir`.
    pub fn spent_on_single(&mut self, dir: &str, calls: u32) {
        if let Some(d) = self.dirs.get_mut(dir) {
            d.single_calls = d.single_calls.saturating_add(calls);
        }
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
            || self
                .dirs
                .get(dir)
                .is_some_and(|d| d.subdirs.contains_key(name));
        if shadowed {
            format!("{name}{}", crate::names::PARAM_SUFFIX)
        } else {
            name.to_string()
        }
    }

    /// Records that the listing of `dir` was fetched whole at `at`, with `parameters` in it;
    /// `subtree`: the listing was recursive, so it refreshed the groups below `dir` too.
    pub fn group_refreshed(&mut self, dir: &str, subtree: bool, parameters: usize, at: Instant) {
        if subtree {
            let below = format!("{dir}/");
            self.groups
                .retain(|g, _| !(dir.is_empty() || g.starts_with(&below)));
        }
        let entry = self
            .groups
            .entry(dir.to_string())
            .or_insert((at, parameters));
        if entry.0 <= at {
            *entry = (at, parameters);
        }
    }

    /// The groups, by path, with when each was last refreshed and its parameter count.
    pub fn groups(&self) -> impl Iterator<Item = (&str, Instant, usize)> {
        self.groups.iter().map(|(g, (at, n))| (g.as_str(), *at, *n))
    }

    /// Records the result of a complete recursive listing of `top`: every directory and file at
    /// or below `top` is replaced by what the listing shows.
    pub fn apply_sweep(
        &mut self,
        top: &str,
        params: Vec<Param>,
        prefix: &crate::names::Source,
        at: Instant,
    ) -> Vec<Inval> {
        let mut invals = Vec::new();
        // Build the new contents of every directory in the subtree.
        let mut fresh_dirs: BTreeMap<String, Listing> = BTreeMap::new();
        fresh_dirs.entry(top.to_string()).or_default();
        for p in params {
            let Some(rel) = prefix.relative(&p.name).map(str::to_string) else {
                continue;
            };
            if !in_subtree(top, &rel) || rel == top {
                continue;
            }
            let (dir, name) = split(&rel);
            let mut child = dir.to_string();
            while child != top {
                let (parent, child_name) = split(&child);
                fresh_dirs
                    .entry(parent.to_string())
                    .or_default()
                    .1
                    .insert(child_name.to_string(), at);
                fresh_dirs.entry(child.clone()).or_default();
                child = parent.to_string();
            }
            let files = &mut fresh_dirs.entry(dir.to_string()).or_default().0;
            if !(p.derived && files.get(name).is_some_and(|f| !f.derived)) {
                files.insert(name.to_string(), p);
            }
        }
        let empty = fresh_dirs
            .get(top)
            .is_some_and(|(f, s)| f.is_empty() && s.is_empty());

        // Directories that are gone.
        let gone: Vec<String> = self
            .dirs
            .keys()
            .filter(|d| in_subtree(top, d) && !fresh_dirs.contains_key(*d))
            .cloned()
            .collect();
        for d in gone {
            self.forget_dir(&d, &mut invals);
        }

        for (path, (files, subdirs)) in fresh_dirs {
            if path != top || !empty || top.is_empty() {
                self.replace_dir(&path, files, subdirs, at, &mut invals);
            }
        }

        if !top.is_empty() {
            let (parent, name) = split(top);
            if empty {
                self.forget_dir(top, &mut invals);
                self.note_not_dir(parent, name, at, &mut invals);
            } else {
                self.note_dir(parent, name, at, &mut invals);
            }
        }
        invals
    }

    /// Records the result of a complete one-level listing of `dir`: its files are replaced.
    pub fn apply_files(
        &mut self,
        dir: &str,
        params: Vec<Param>,
        prefix: &crate::names::Source,
        at: Instant,
    ) -> Vec<Inval> {
        let mut invals = Vec::new();
        if !self.dirs.contains_key(dir) {
            return invals;
        }
        let mut files = BTreeMap::new();
        for p in params {
            if let Some(rel) = prefix.relative(&p.name) {
                let (d, name) = split(rel);
                if d == dir {
                    files.insert(name.to_string(), p);
                }
            }
        }
        let d = self.dirs.get_mut(dir).expect("checked above");
        if d.files_at.is_some_and(|t| t > at) {
            return invals;
        }
        let old: Vec<String> = d
            .files
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        d.files_at = Some(at);
        d.not_file.clear();
        for name in old {
            self.remove_file(dir, &name, &mut invals);
        }
        for (name, p) in files {
            self.put_file(dir, &name, p, at, &mut invals);
        }
        invals
    }

    /// Records parameters seen in a partial listing (the first page of a probe): they and the
    /// directories holding them exist; nothing is learned of what was not returned.
    pub fn apply_seen(
        &mut self,
        params: Vec<Param>,
        prefix: &crate::names::Source,
        at: Instant,
    ) -> Vec<Inval> {
        let mut invals = Vec::new();
        for p in params {
            let Some(rel) = prefix.relative(&p.name).map(str::to_string) else {
                continue;
            };
            let (dir, name) = split(&rel);
            self.ensure_dir(dir, at, &mut invals);
            self.put_file(dir, name, p, at, &mut invals);
        }
        invals
    }

    /// Records the answer of a `GetParameter` for `name` in `dir`.
    pub fn apply_get(
        &mut self,
        dir: &str,
        name: &str,
        found: Option<Param>,
        at: Instant,
    ) -> Vec<Inval> {
        let mut invals = Vec::new();
        match found {
            Some(p) => {
                self.ensure_dir(dir, at, &mut invals);
                self.put_file(dir, name, p, at, &mut invals);
            }
            None => {
                if self.dirs.contains_key(dir) {
                    self.remove_file(dir, name, &mut invals);
                    let d = self.dirs.get_mut(dir).expect("checked above");
                    bounded_insert(&mut d.not_file, name, at);
                }
            }
        }
        invals
    }

    /// Records that `path` is not a directory (a probe found nothing below it).
    pub fn apply_not_dir(&mut self, path: &str, at: Instant) -> Vec<Inval> {
        let mut invals = Vec::new();
        let (parent, name) = split(path);
        if self.dirs.contains_key(path) {
            self.forget_dir(path, &mut invals);
        }
        self.note_not_dir(parent, name, at, &mut invals);
        invals
    }

    fn ensure_dir(&mut self, path: &str, at: Instant, invals: &mut Vec<Inval>) {
        if path.is_empty() {
            return;
        }
        let (parent, name) = split(path);
        self.ensure_dir(parent, at, invals);
        self.note_dir(parent, name, at, invals);
    }

    fn note_dir(&mut self, parent: &str, name: &str, at: Instant, invals: &mut Vec<Inval>) {
        let path = join(parent, name);
        self.dirs.entry(path).or_default();
        let Some(d) = self.dirs.get_mut(parent) else {
            return;
        };
        d.not_dir.remove(name);
        let new = d.subdirs.insert(name.to_string(), at).is_none();
        if new && d.files.contains_key(name) {
            // The name that showed the file now shows the directory.
            if let Some(p) = self.dir_ino(parent) {
                invals.push(Inval(p, name.to_string()));
            }
        }
    }

    fn note_not_dir(&mut self, parent: &str, name: &str, at: Instant, invals: &mut Vec<Inval>) {
        let Some(d) = self.dirs.get_mut(parent) else {
            return;
        };
        if d.subdirs.remove(name).is_some() {
            if let Some(p) = self.dir_ino(parent) {
                invals.push(Inval(p, name.to_string()));
            }
        }
        let d = self.dirs.get_mut(parent).expect("checked above");
        bounded_insert(&mut d.not_dir, name, at);
    }

    /// Drops a directory and everything below it.
    fn forget_dir(&mut self, path: &str, invals: &mut Vec<Inval>) {
        let below: Vec<String> = self
            .dirs
            .keys()
            .filter(|d| in_subtree(path, d))
            .cloned()
            .collect();
        for d in below {
            if let Some(dir) = self.dirs.remove(&d) {
                for (name, old) in dir.files {
                    self.retire(&d, &name, old);
                }
            }
        }
        if !path.is_empty() {
            let (parent, name) = split(path);
            if let Some(p) = self.dirs.get_mut(parent) {
                p.subdirs.remove(name);
            }
            if let Some(p) = self.dir_ino(parent) {
                invals.push(Inval(p, name.to_string()));
            }
        }
    }

    fn replace_dir(
        &mut self,
        path: &str,
        files: BTreeMap<String, Param>,
        subdirs: BTreeMap<String, Instant>,
        at: Instant,
        invals: &mut Vec<Inval>,
    ) {
        let d = self.dirs.entry(path.to_string()).or_default();
        if d.listed_at.is_some_and(|t| t > at) {
            return;
        }
        let gone_files: Vec<String> = d
            .files
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        let new_dirs: Vec<String> = subdirs
            .keys()
            .filter(|n| !d.subdirs.contains_key(*n))
            .cloned()
            .collect();
        let gone_dirs: Vec<String> = d
            .subdirs
            .keys()
            .filter(|n| !subdirs.contains_key(*n))
            .cloned()
            .collect();
        d.subdirs = subdirs;
        d.listed_at = Some(at);
        d.files_at = Some(at);
        d.single_calls = 0;
        d.not_file.clear();
        d.not_dir.clear();
        if let Some(p) = self.dir_ino(path) {
            // A name that changes between file and directory must be looked up again.
            for name in new_dirs.iter().chain(gone_dirs.iter()) {
                invals.push(Inval(p, name.clone()));
            }
        }
        for name in gone_files {
            self.remove_file(path, &name, invals);
        }
        for (name, p) in files {
            self.put_file(path, &name, p, at, invals);
        }
    }

    fn put_file(&mut self, dir: &str, name: &str, p: Param, at: Instant, invals: &mut Vec<Inval>) {
        let Some(d) = self.dirs.get_mut(dir) else {
            return;
        };
        d.not_file.remove(name);
        let new = Arc::new(Cached {
            param: p,
            fetched_at: at,
        });
        let replaced = match d.files.get(name) {
            Some(old) if old.fetched_at > at => return,
            // A key of a JSON secret never hides a real secret of the same name.
            Some(old) if new.param.derived && !old.param.derived => return,
            // The same version: only the fetch time moves on.
            Some(old) if old.param.version == new.param.version => None,
            Some(old) => Some(old.clone()),
            None => None,
        };
        d.files.insert(name.to_string(), new);
        if let Some(old) = replaced {
            self.retire(dir, name, old);
            self.inval_names(dir, name, invals);
        }
    }

    fn remove_file(&mut self, dir: &str, name: &str, invals: &mut Vec<Inval>) {
        let Some(old) = self.dirs.get_mut(dir).and_then(|d| d.files.remove(name)) else {
            return;
        };
        self.retire(dir, name, old);
        self.inval_names(dir, name, invals);
    }

    /// Both names a parameter can be reached by, `name` and `name%`.
    fn inval_names(&self, dir: &str, name: &str, invals: &mut Vec<Inval>) {
        if let Some(p) = self.dir_ino(dir) {
            invals.push(Inval(p, name.to_string()));
            invals.push(Inval(p, format!("{name}{}", crate::names::PARAM_SUFFIX)));
        }
    }
}

/// Whether `path` is `top` or below it.
fn in_subtree(top: &str, path: &str) -> bool {
    top.is_empty() || path == top || path.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

fn bounded_insert(map: &mut HashMap<String, Instant>, name: &str, at: Instant) {
    if map.len() >= MAX_NEGATIVE {
        map.clear();
    }
    map.insert(name.to_string(), at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;

    fn param(name: &str, value: &str, derived: bool) -> Param {
        Param {
            name: name.to_string(),
            content: Content::from(value.as_bytes().to_vec()),
            version: "1".to_string(),
            secret: true,
            modified: std::time::SystemTime::UNIX_EPOCH,
            xattrs: Vec::new(),
            unreadable: None,
            derived,
        }
    }

    #[test]
    fn a_recursive_refresh_covers_the_groups_below_and_a_one_level_one_does_not() {
        let mut tree = Tree::new();
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(1);
        tree.group_refreshed("a/b", true, 2, t0);
        tree.group_refreshed("ab", true, 1, t0);
        tree.group_refreshed("a", false, 3, t1);
        let groups: Vec<_> = tree.groups().map(|(g, _, _)| g.to_string()).collect();
        assert_eq!(groups, ["a", "a/b", "ab"]);
        tree.group_refreshed("a", true, 5, t1);
        let groups: Vec<_> = tree.groups().collect();
        assert_eq!(groups, [("a", t1, 5), ("ab", t0, 1)]);
        // A listing that started earlier does not overwrite a later one.
        tree.group_refreshed("a", true, 4, t0);
        assert_eq!(tree.groups().next(), Some(("a", t1, 5)));
        tree.group_refreshed("", true, 9, t1);
        assert_eq!(tree.groups().collect::<Vec<_>>(), [("", t1, 9)]);
    }

    #[test]
    fn a_real_secret_wins_over_a_json_key_of_the_same_name() {
        let source: crate::names::Source = "sm:prod".parse().unwrap();
        let fresh = Fresh {
            after: None,
            since: Instant::now(),
        };
        for order in [[true, false], [false, true]] {
            let mut tree = Tree::new();
            let params = order
                .iter()
                .map(|derived| {
                    let value = if *derived { "from json" } else { "real" };
                    param("prod/db/password", value, *derived)
                })
                .collect();
            tree.apply_sweep("", params, &source, Instant::now());
            let file = tree.file("db", "password", fresh).unwrap().unwrap();
            assert_eq!(file.param.content.as_bytes(), b"real");
            tree.apply_seen(
                vec![param("prod/db/password", "json again", true)],
                &source,
                Instant::now(),
            );
            let file = tree.file("db", "password", fresh).unwrap().unwrap();
            assert_eq!(file.param.content.as_bytes(), b"real");
        }
    }
}
