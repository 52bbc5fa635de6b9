//! The planner: pure functions over what is known that answer a lookup or a listing, or name
//! the one fetch that would let them answer.
//!
//! Nothing here changes anything. A request runs its plan under the core's lock; when the plan
//! is an answer, the caller hands it to the kernel in the same critical section; when it is a
//! fetch, the caller fetches (outside the lock), applies the result and plans again.

use std::ffi::OsStr;
use std::sync::Arc;

use tokio::time::Instant;

use super::inodes::{Ino, Inodes, Node};
use super::refresher::Fetch;
use super::tree::{join, Cached, Fresh, Tree};
use super::Config;
use crate::backend::BackendError;
use crate::error::Error;
use crate::names::{Name, Selector, REFRESH, STATS, TEMPLATES};

/// Once this many API calls have gone to single names in one directory since it was last listed,
/// the next name missing there lists the directory instead: asking name by name is cheapest for
/// a few names in a large tree, listing is cheapest for many names in one directory, and this
/// bounds the cost of guessing wrong (the rule of renting skis until their price is spent).
const LIST_AFTER: u32 = 20;
/// A directory listed before whose known subtree fits in this many parameters (ten pages) is
/// swept whole when any name in it needs refreshing: every name in it is then fresh at once, so
/// a crowd of readers of an expired directory costs one refresh of it, not a call per name.
const SMALL_SUBTREE: usize = 100;

pub enum Plan<T> {
    Done(Result<T, Error>),
    Need(Fetch),
}

/// What a name resolves to.
pub enum Target {
    Dir(String),
    File {
        dir: String,
        name: String,
        cached: Arc<Cached>,
        /// When the label that named this version was resolved (`name:label`).
        resolved_at: Option<Instant>,
    },
    Refresh(String),
    Stats,
    /// `.templates`.
    Templates,
}

pub struct Planner<'a> {
    pub config: &'a Config,
    /// Whether `GetParameter` answers for every name a listing shows (see the backend).
    pub gets_every_name: bool,
    /// The most a page of a listing holds (see the backend).
    pub page: usize,
}

impl Planner<'_> {
    /// The directory path an inode stands for, if it is a directory the tree knows.
    fn dir_path<'t>(tree: &Tree, inodes: &'t Inodes, ino: Ino) -> Result<&'t str, Error> {
        match inodes.node(ino) {
            Some(Node::Dir { path }) if tree.dir(path).is_some() => Ok(path),
            _ => Err(Error::NotFound),
        }
    }

    pub fn lookup(
        &self,
        tree: &Tree,
        inodes: &Inodes,
        parent: Ino,
        name: &OsStr,
        may_page: bool,
        fresh: impl Fn(&str) -> Fresh,
    ) -> Plan<Target> {
        match Self::dir_path(tree, inodes, parent) {
            Ok(path) => self.lookup_in(tree, path.to_string(), name, may_page, fresh),
            Err(err) => Plan::Done(Err(err)),
        }
    }

    /// A lookup of `name` in the directory at `path`, which the tree knows.
    pub fn lookup_in(
        &self,
        tree: &Tree,
        path: String,
        name: &OsStr,
        may_page: bool,
        fresh: impl Fn(&str) -> Fresh,
    ) -> Plan<Target> {
        let source = &self.config.source;
        let (name, selector) = match Name::parse(name, path.is_empty(), source) {
            Name::Invalid => return Plan::Done(Err(Error::NotFound)),
            Name::Control(STATS) => return Plan::Done(Ok(Target::Stats)),
            Name::Control(REFRESH) => return Plan::Done(Ok(Target::Refresh(path))),
            Name::Control(TEMPLATES) => return Plan::Done(Ok(Target::Templates)),
            // Rendered files are answered before planning (see `super::rendered`); through a
            // path, they are not directories.
            Name::Control(_) => return Plan::Done(Err(Error::NotFound)),
            Name::Param(n) => (n, None),
            Name::Pinned(n, sel) => (n, Some(sel)),
            Name::Entry(n) => {
                let child = join(&path, n);
                if !source.fits(&child) {
                    return Plan::Done(Err(Error::NotFound));
                }
                // That a directory exists is judged by its own max age, so that a long-lived
                // subtree is not refetched because its parent's knowledge is short-lived.
                let is_dir = if self.config.recursive {
                    tree.is_dir(&path, n, fresh(&child))
                } else {
                    Some(false)
                };
                // A name known as a parameter, with nothing known below it, is a file: asking
                // whether it is a directory too would cost a call per file. (A parameter that is
                // also a path prefix shows as a directory once something below it is seen.)
                let file = tree.file(&path, n, fresh(&path));
                let below = tree.dir(&path).is_some_and(|d| d.subdirs.contains(n));
                let is_dir =
                    is_dir.or_else(|| (!below && matches!(file, Some(Some(_)))).then_some(false));
                match is_dir {
                    // A known directory, listed before and small: its own sweep says whether it
                    // still exists and refreshes everything in it.
                    None if tree.dir(&child).is_some() && tree.is_small(&child, SMALL_SUBTREE) => {
                        return Plan::Need(Fetch::Sweep(child))
                    }
                    None if may_page && self.renews(tree, &child) => {
                        return Plan::Need(Fetch::Renew(child))
                    }
                    None if self.sweep_instead(tree, &path) => {
                        return Plan::Need(Fetch::Sweep(path))
                    }
                    // Where files are what has been seen, an unknown name is most likely one
                    // more: the next page of a sweep in progress, or the name itself (and if
                    // that is absent, whether it is a directory).
                    None if file.is_none() && Self::holds_files(tree, &path) => {
                        return Plan::Need(self.file_plan(tree, &path, n, may_page, &fresh))
                    }
                    None => return Plan::Need(Fetch::Probe(child)),
                    Some(true) => return Plan::Done(Ok(Target::Dir(child))),
                    Some(false) => (n, None),
                }
            }
        };
        let fresh_dir = fresh(&path);
        // The parameter's current version; a selector is answered only for a parameter the
        // mount shows (it passes the filters and exists).
        let current = match tree.file(&path, name, fresh_dir) {
            // Listed, but refused: an empty file would read as empty (the kernel does not ask
            // for the content of a zero-length file), so the lookup itself fails.
            Some(Some(cached)) if selector.is_none() && cached.param.unreadable.is_some() => {
                let code = cached.param.unreadable.clone().unwrap_or_default();
                return Plan::Done(Err(Error::Backend(BackendError::AccessDenied(code))));
            }
            Some(Some(cached)) => cached,
            Some(None) => return Plan::Done(Err(Error::NotFound)),
            None => return Plan::Need(self.file_plan(tree, &path, name, may_page, &fresh)),
        };
        let mut resolved_at = None;
        let cached = match selector {
            None => current,
            Some(sel) => {
                let pinned = Fetch::Pinned(join(&path, name), sel.to_string());
                let key = sel.to_string();
                let version = match sel {
                    Selector::Version(v) if tree.find_version(&path, name, v).is_some() => {
                        Some(v.to_string())
                    }
                    _ => match tree.selector(&path, name, &key) {
                        // A version never changes; a label follows the max age, and so does
                        // a version that does not exist (yet).
                        Some((Some(v), at)) if sel.is_version() || fresh_dir.ok(at) => {
                            resolved_at = (!sel.is_version()).then_some(at);
                            Some(v)
                        }
                        Some((None, at)) if fresh_dir.ok(at) => {
                            return Plan::Done(Err(Error::NotFound))
                        }
                        _ => None,
                    },
                };
                match version.and_then(|v| tree.find_version(&path, name, &v)) {
                    Some(cached) => cached,
                    None => return Plan::Need(pinned),
                }
            }
        };
        Plan::Done(Ok(Target::File {
            dir: path,
            name: name.to_string(),
            cached,
            resolved_at,
        }))
    }

    /// A listing of the directory `ino`: its path once the tree knows its contents fresh enough.
    pub fn listing(
        &self,
        tree: &Tree,
        inodes: &Inodes,
        ino: Ino,
        fresh: impl Fn(&str) -> Fresh,
    ) -> Plan<String> {
        let path = match Self::dir_path(tree, inodes, ino) {
            Ok(path) => path.to_string(),
            Err(err) => return Plan::Done(Err(err)),
        };
        let dir = tree.dir(&path).expect("dir_path checked it");
        if dir.listed_at.is_some_and(|t| fresh(&path).ok(t)) {
            Plan::Done(Ok(path))
        } else {
            Plan::Need(Fetch::Sweep(path))
        }
    }

    /// Whether sweeping `dir` is cheaper than asking about one name in it: its known subtree is
    /// small, or enough has been spent on single names in it already.
    fn sweep_instead(&self, tree: &Tree, dir: &str) -> bool {
        let spent =
            self.config.recursive && tree.dir(dir).is_some_and(|d| d.single_calls >= LIST_AFTER);
        spent || tree.is_small(dir, SMALL_SUBTREE)
    }

    /// Whether `dir`, known from pages of a listing above it but never listed itself, is best
    /// refreshed by listing it again as far as it was known: it holds more than a page, so its
    /// readers cost fewer calls that way than a call per name, and not more than a small
    /// subtree, so the pages are few.
    fn renews(&self, tree: &Tree, dir: &str) -> bool {
        tree.dir(dir).is_some_and(|d| d.listed_at.is_none())
            && (self.page + 1..=SMALL_SUBTREE).contains(&tree.known_files(dir, SMALL_SUBTREE + 1))
    }

    /// Whether what is known directly in `dir` is mostly files.
    fn holds_files(tree: &Tree, dir: &str) -> bool {
        tree.dir(dir)
            .is_some_and(|d| !d.files.is_empty() && d.files.len() >= d.subdirs.len())
    }

    /// The cheapest fetch that brings the parameter `name` in `dir`. A request that has not
    /// paged yet goes on with a sweep in progress over `dir`: a reader going through the
    /// directory in listing order then costs the listing's pages alone.
    fn file_plan(
        &self,
        tree: &Tree,
        dir: &str,
        name: &str,
        may_page: bool,
        fresh: &impl Fn(&str) -> Fresh,
    ) -> Fetch {
        if self.sweep_instead(tree, dir) {
            return Fetch::Sweep(dir.to_string());
        }
        if self.config.recursive {
            if may_page {
                if let Some(top) = tree.partial_over(dir, fresh) {
                    return Fetch::Page(top.to_string());
                }
            }
            let stale = tree.dir(dir).is_some_and(|d| d.files.contains_key(name));
            if may_page && stale && self.renews(tree, dir) {
                return Fetch::Renew(dir.to_string());
            }
        }
        // GetParameter cannot apply filters, so a filtered mount lists instead.
        let lists_files = tree.dir(dir).is_some_and(|d| d.files_at.is_some());
        if lists_files || !self.gets_every_name {
            Fetch::Files(dir.to_string())
        } else {
            Fetch::Get(join(dir, name))
        }
    }
}
