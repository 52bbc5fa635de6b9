//! News: what AWS changed, as a program reading the mount sees it. The primitives of
//! [`super::facts`] record how each path they touch looked *before* the apply in progress; when
//! the news is taken (once per fetch) each path is judged against the tree as it is then.
//!
//! Promises:
//! - only changes in AWS are news: what the mount learns for the first time (at start-up, in a
//!   directory never listed before) is not, because nothing was known of it before;
//! - a path that changed and changed back within one fetch is no news;
//! - a new directory's parameters are news with it (they appeared too);
//! - a label that moved is news, also when a forced refresh had made the mount forget it;
//! - news names paths and versions, never values.

use std::collections::HashMap;
use std::sync::Arc;

use super::{join, split, Cached, Tree};

/// What happened to one path.
#[derive(Clone, Debug)]
pub enum What {
    /// A parameter appeared where it was known to be absent.
    Added,
    /// A parameter has a new version; the old one is given.
    Changed(Arc<Cached>),
    /// A parameter went away; its last version is given.
    Removed(Arc<Cached>),
    /// A directory appeared where it was known to be absent.
    DirAdded,
    /// A directory went away (its parameters are news of their own).
    DirRemoved,
    /// A label (`name:label`) now names another version, or none.
    Label,
}

/// One change in AWS as the mount shows it.
#[derive(Clone, Debug)]
pub struct News {
    pub what: What,
    /// The tree path (`db/password`; for a label, the parameter's path).
    pub path: String,
    /// The mount-relative path a program sees: `db%` for a parameter shadowed by a directory,
    /// `db/password:live` for a label.
    pub shown: String,
}

impl News {
    /// Whether this is news of a directory (not of a parameter or a label).
    pub fn is_dir(&self) -> bool {
        matches!(self.what, What::DirAdded | What::DirRemoved)
    }
}

/// How the paths touched by the apply in progress looked before it.
#[derive(Default)]
pub(super) struct Before {
    /// A parameter's version before (`None`: known absent).
    files: HashMap<String, Option<Arc<Cached>>>,
    /// Whether a directory existed before.
    dirs: HashMap<String, bool>,
    /// Labels that moved, as (path, selector).
    labels: Vec<(String, String)>,
}

impl Tree {
    /// Records how the parameter at `path` looked before, unless already recorded this fetch.
    pub(super) fn before_file(&mut self, path: String, old: Option<Arc<Cached>>) {
        self.before.files.entry(path).or_insert(old);
    }

    pub(super) fn before_dir(&mut self, path: String, existed: bool) {
        self.before.dirs.entry(path).or_insert(existed);
    }

    pub(super) fn label_moved(&mut self, path: String, selector: String) {
        self.before.labels.push((path, selector));
    }

    /// Whether a new parameter in `dir` is news: its absence was known (the directory's files
    /// were listed, or the name was asked for and absent), or the directory itself is new.
    pub(super) fn new_file_is_news(&self, dir: &str, name: &str) -> bool {
        self.dirs.get(dir).is_some_and(|d| d.files_at.is_some())
            || self.absent_since(dir, name, true).is_some()
            || self.before.dirs.get(dir) == Some(&false)
    }

    /// Whether a new directory `name` in `parent` is news: the parent was listed whole before,
    /// or the name was known absent.
    pub(super) fn new_dir_is_news(&self, parent: &str, name: &str) -> bool {
        self.dirs.get(parent).is_some_and(|d| d.listed_at.is_some())
            || self.absent_since(parent, name, false).is_some()
            || self.before.dirs.get(parent) == Some(&false)
    }

    /// The news of the fetch just applied, in path order (a directory before what is in it),
    /// judged against the tree as it is now. Clears the record.
    pub fn take_news(&mut self) -> Vec<News> {
        let before = std::mem::take(&mut self.before);
        let mut news = Vec::new();
        for (path, old) in before.files {
            let (dir, name) = split(&path);
            let now = self.dirs.get(dir).and_then(|d| d.files.get(name));
            let what = match (old, now) {
                // A key of a JSON secret takes its secret's version: it changed only if its
                // value did.
                (Some(old), Some(now))
                    if now.param.derived && now.param.content == old.param.content =>
                {
                    continue
                }
                (Some(old), Some(now)) if !now.same_version(&old.param) => What::Changed(old),
                (None, Some(_)) => What::Added,
                (Some(old), None) => What::Removed(old),
                _ => continue,
            };
            let shown = join(dir, &self.shown_name(dir, name));
            news.push(News { what, path, shown });
        }
        for (path, existed) in before.dirs {
            let what = match (existed, self.dirs.contains_key(&path)) {
                (false, true) => What::DirAdded,
                (true, false) => What::DirRemoved,
                _ => continue,
            };
            news.push(News {
                what,
                shown: path.clone(),
                path,
            });
        }
        for (path, selector) in before.labels {
            let shown = format!("{path}{}{selector}", crate::names::SELECTOR);
            news.push(News {
                what: What::Label,
                path,
                shown,
            });
        }
        news.sort_by(|a, b| a.shown.cmp(&b.shown));
        news
    }
}
