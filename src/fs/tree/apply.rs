//! How a fetch's result changes the tree: one entry point per kind of fetch, each applying what
//! it learned, stamped with the instant the fetch started, through the primitives of
//! [`super::facts`], which keep the stamp rules.

use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::time::Instant;

use super::{in_subtree, join, split, Cached, Change, Listed, Tree};
use crate::backend::Param;
use crate::names::{Source, SELECTOR};

impl Tree {
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
        self.drop_partials(top, at);
        self.finish_apply(&mut changes);
        changes
    }

    /// Records that `path` is not a directory (a probe found nothing below it): a sweep of it
    /// that found nothing.
    pub fn apply_not_dir(&mut self, path: &str, at: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        let fresh = BTreeMap::from([(path.to_string(), Listed::default())]);
        self.sweep(path, fresh, at, &mut changes);
        self.finish_apply(&mut changes);
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
        self.remove_dirs(&gone, at, changes);
        // Directories with newer evidence of existence keep it and what is newer below them,
        // and lose what is older.
        let kept: Vec<String> = self
            .dirs
            .keys()
            .filter(|path| in_subtree(top, path) && !fresh.contains_key(*path))
            .cloned()
            .collect();
        for path in kept {
            self.empty_before(&path, at, changes);
        }
        // Parents sort before their children, so a directory skipped here (something newer
        // knows it absent) takes its subtree with it. Every directory is settled before any
        // contents are replaced: a subdirectory is news only if its parent was listed *before*.
        let fresh: Vec<(String, Listed)> = fresh
            .into_iter()
            .filter(|(path, _)| path == top || self.ensure_dir(path, at, changes))
            .collect();
        for (path, listed) in fresh {
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
        self.finish_apply(&mut changes);
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
        self.finish_apply(&mut changes);
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
        self.finish_apply(&mut changes);
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
        let too_old = self.selectors_floor.is_some_and(|floor| at < floor);
        match self.selectors.peek(&key) {
            _ if too_old => {}
            Some((_, t)) if *t > at => return changes,
            Some((old, _)) if *old != version => {
                // A label moved: its name now shows another version.
                self.label_moved(path.clone(), selector.to_string());
                changes.push(Change {
                    dir: dir.to_string(),
                    name: format!("{name}{SELECTOR}{selector}"),
                });
            }
            Some(_) => {}
            // Forgotten by a forced refresh (which told the kernel already): news only.
            None => {
                if self.forgotten.pop(&key).is_some_and(|old| old != version) {
                    self.label_moved(path.clone(), selector.to_string());
                }
            }
        }
        if !too_old {
            self.selectors.put(key, (version, at));
        }
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
    pub fn forget_selectors(&mut self, top: &str, at: Instant) -> Vec<Change> {
        self.forget_selectors_where(at, |path| in_subtree(top, split(path).0))
    }

    /// Forgets what the labels of the parameter at `path` resolved to, as a forced refresh does
    /// for a subtree (an event said they moved).
    pub fn forget_labels_of(&mut self, path: &str, at: Instant) -> Vec<Change> {
        self.forget_selectors_where(at, |p| p == path)
    }

    fn forget_selectors_where(&mut self, at: Instant, of: impl Fn(&str) -> bool) -> Vec<Change> {
        if self.selectors_floor.is_none_or(|t| t < at) {
            self.selectors_floor = Some(at);
        }
        let which = |path: &String, sel: &str, version: &Option<String>| {
            of(path) && (version.is_none() || !sel.starts_with(|c: char| c.is_ascii_digit()))
        };
        let mut changes = Vec::new();
        for (key, version) in self.drop_selectors(which, &mut changes) {
            self.forgotten.put(key, version);
        }
        changes
    }
}
