//! The primitive changes of the tree and the stamp rules they keep: a fact is replaced only by
//! a newer one; a directory's `seen_at` grows towards the root; a directory or file newer
//! knowledge says was absent is not added; every change to what a name shows is reported.

use std::collections::HashSet;
use std::sync::Arc;
use tokio::time::Instant;

use super::{join, split, Absent, Cached, Change, Dir, Listed, Tree};
use crate::backend::Param;
use crate::names::{PARAM_SUFFIX, SELECTOR};

impl Tree {
    pub(super) fn note_absent(
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
    pub(super) fn clear_absent(
        &mut self,
        dir: &str,
        name: &str,
        field: impl Fn(&mut Absent) -> &mut Option<Instant>,
    ) {
        let key = (dir.to_string(), name.to_string());
        if let Some(a) = self.absent.peek_mut(&key) {
            *field(a) = None;
            if a.file.is_none() && a.dir.is_none() && a.contents.is_none() {
                self.absent.pop(&key);
            }
        }
    }

    /// When `name` in `dir` was last confirmed absent, as a file or as a directory.
    pub(super) fn absent_since(&self, dir: &str, name: &str, file: bool) -> Option<Instant> {
        let a = self.absent.peek(&(dir.to_string(), name.to_string()))?;
        if file {
            a.file
        } else {
            a.dir
        }
    }

    /// Makes sure `path` and the directories above it exist, seen at `at` or later. Fails when
    /// something newer than `at` knows one of them absent.
    pub(super) fn ensure_dir(
        &mut self,
        path: &str,
        at: Instant,
        changes: &mut Vec<Change>,
    ) -> bool {
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
    pub(super) fn add_dir(
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
        if self.new_dir_is_news(parent, name) {
            self.before_dir(join(parent, name), false);
        }
        let mut dir = Dir::new(at);
        dir.empty_at = empty_at;
        let key = (parent.to_string(), name.to_string());
        if let Some((files_at, listed_at)) =
            self.absent.peek_mut(&key).and_then(|a| a.contents.take())
        {
            // What was known of its contents when an older listing removed it still holds.
            dir.files_at = files_at;
            dir.listed_at = listed_at;
        }
        self.dirs.insert(join(parent, name), dir);
        self.clear_absent(parent, name, |a| &mut a.dir);
        let p = self.dirs.get_mut(parent).expect("checked above");
        p.subdirs.insert(name.to_string());
        p.number(name, true, &mut self.next_cookie);
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

    /// Drops directories and everything below them. `gone` is closed downwards (a directory's
    /// subdirectories are in it too), so each is visited once.
    /// What was known of their contents after `at` (a one-level listing newer than the listing
    /// that removes them) is kept aside for a directory made anew.
    pub(super) fn remove_dirs(&mut self, gone: &[String], at: Instant, changes: &mut Vec<Change>) {
        let set: HashSet<&str> = gone.iter().map(String::as_str).collect();
        for path in gone {
            if path.is_empty() {
                continue;
            }
            if let Some(dir) = self.dirs.remove(path) {
                self.before_dir(path.clone(), true);
                for (name, cached) in &dir.files {
                    self.removed.insert(join(path, name));
                    self.before_file(join(path, name), Some(cached.clone()));
                }
                if dir.files_at.max(dir.listed_at).is_some_and(|t| t > at) {
                    let (parent, name) = split(path);
                    let key = (parent.to_string(), name.to_string());
                    let entry = self.absent.get_or_insert_mut(key, Absent::default);
                    entry.contents = Some((dir.files_at, dir.listed_at));
                }
            }
            self.groups.remove(path);
            let (parent, name) = split(path);
            if set.contains(parent) {
                continue;
            }
            if let Some(p) = self.dirs.get_mut(parent) {
                p.subdirs.remove(name);
            }
            self.bump(parent);
            // The name may have shown the parameter as `name%`; now it is `name` again.
            Self::file_changed(parent, name, changes);
        }
    }

    /// A directory that a listing from `at` did not show, but that something newer saw: it was
    /// empty at `at`, so what is older in it goes; its listing stamps stay its own.
    pub(super) fn empty_before(&mut self, path: &str, at: Instant, changes: &mut Vec<Change>) {
        let Some(d) = self.dirs.get_mut(path) else {
            return;
        };
        if d.empty_at.is_none_or(|t| t < at) {
            d.empty_at = Some(at);
        }
        let older: Vec<String> = d
            .files
            .iter()
            .filter(|(_, f)| f.fetched_at <= at)
            .map(|(n, _)| n.clone())
            .collect();
        for name in older {
            self.remove_file(path, &name, at, changes);
        }
    }

    /// Replaces a directory's files with a listing from `at`, keeping whatever is newer than
    /// `at`, and marks its contents complete as of `at`. (Its subdirectories were settled by
    /// the caller.)
    pub(super) fn replace_contents(
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
    pub(super) fn put_file(
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
        let Some(d) = self.dirs.get(dir) else {
            return;
        };
        // (new name, changed what a name shows): a name the kernel was told did not exist is
        // not in its cache (ENOENT leaves nothing valid there), so a new one needs no change.
        let (new, changed) = match d.files.get(name) {
            Some(old) if old.fetched_at > at => return,
            // A key of a JSON secret never hides a real secret of the same name.
            Some(old) if p.derived && !old.param.derived => return,
            Some(old) if !old.same_version(&p) => {
                let old = old.clone();
                self.before_file(join(dir, name), Some(old));
                (false, true)
            }
            Some(_) => (false, false),
            None if d.files_at.max(d.empty_at).is_some_and(|t| t > at) => return,
            None => {
                if self.new_file_is_news(dir, name) {
                    self.before_file(join(dir, name), None);
                }
                (true, false)
            }
        };
        let d = self.dirs.get_mut(dir).expect("checked above");
        d.files.insert(
            name.to_string(),
            Arc::new(Cached {
                param: p,
                fetched_at: at,
            }),
        );
        d.number(name, false, &mut self.next_cookie);
        self.clear_absent(dir, name, |a| &mut a.file);
        self.seen(dir, at);
        if new || changed {
            self.bump(dir);
        }
        if changed {
            Self::file_changed(dir, name, changes);
        }
    }

    /// A file in `dir` at `at` proves that `dir` and every directory above it existed then.
    pub(super) fn seen(&mut self, dir: &str, at: Instant) {
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

    pub(super) fn remove_file(
        &mut self,
        dir: &str,
        name: &str,
        at: Instant,
        changes: &mut Vec<Change>,
    ) {
        let Some(d) = self.dirs.get_mut(dir) else {
            return;
        };
        if d.files.get(name).is_none_or(|f| f.fetched_at > at) {
            return;
        }
        let old = d.files.remove(name);
        self.before_file(join(dir, name), old);
        self.removed.insert(join(dir, name));
        self.bump(dir);
        Self::file_changed(dir, name, changes);
    }

    /// Both names a parameter can be reached by, `name` and `name%` (also what a directory
    /// that shadowed it changes).
    pub(super) fn file_changed(dir: &str, name: &str, changes: &mut Vec<Change>) {
        for shown in [name.to_string(), format!("{name}{PARAM_SUFFIX}")] {
            changes.push(Change {
                dir: dir.to_string(),
                name: shown,
            });
        }
    }

    pub(super) fn bump(&mut self, dir: &str) {
        self.generations += 1;
        if let Some(d) = self.dirs.get_mut(dir) {
            d.generation = self.generations;
        }
    }

    /// Drops the pinned versions and selectors of parameters this apply removed: a deleted
    /// parameter keeps nothing in memory.
    pub(super) fn finish_apply(&mut self, changes: &mut Vec<Change>) {
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
        self.drop_selectors(|path, _, _| removed.contains(path), changes);
    }

    /// Forgets what the selectors that `which(path, selector, version)` picks resolved to; the
    /// kernel may hold their names (`name:label`), which are reported as changed.
    /// Returns what each resolved to.
    pub(super) fn drop_selectors(
        &mut self,
        which: impl Fn(&String, &str, &Option<String>) -> bool,
        changes: &mut Vec<Change>,
    ) -> Vec<((String, String), Option<String>)> {
        let dropped: Vec<(String, String)> = self
            .selectors
            .iter()
            .filter(|((path, sel), (version, _))| which(path, sel, version))
            .map(|(key, _)| key.clone())
            .collect();
        let mut resolved = Vec::with_capacity(dropped.len());
        for key in dropped {
            let (dir, name) = split(&key.0);
            changes.push(Change {
                dir: dir.to_string(),
                name: format!("{name}{SELECTOR}{}", key.1),
            });
            if let Some((version, _)) = self.selectors.pop(&key) {
                resolved.push((key, version));
            }
        }
        resolved
    }
}
