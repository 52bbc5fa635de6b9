//! Rendered files in the core: `.env` and `.json` in every directory and `.templates/NAME` at
//! the root, made by [`crate::render`] from what the tree holds.
//!
//! They are looked up, never listed. A lookup resolves what the file reads (each input as a
//! lookup of it would: fresh knowledge costs nothing, and what is not fresh is fetched with
//! the smallest call, misses of one render fetched together), renders, and hands the kernel the
//! result as one version of the file: a new inode when the content changed, the same one when
//! it did not.
//!
//! Promises:
//! - a rendered file is rendered again only when something it read has another version, and
//!   costs no API call of its own beyond the fetches of what it reads;
//! - a rendered file that was looked up is followed: when a fetch changes what it read, the
//!   kernel is told and programs watching hear of it as of any changed file (see
//!   [`super::tree::news`]);
//! - a render that fails (a missing parameter, an error in a template) makes that one file
//!   fail with `EIO` (`EACCES` when a value was refused), logs the template, line and path once
//!   per cause, never a value, and leaves every other file alone;
//! - the file mode is the secret one when anything it read is a SecureString or a secret.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::inodes::{Ino, Key, Node};
use super::inputs::{stamp_in, Resolution, ABSENT};
use super::tree::{in_subtree, join, split, Cached};
use super::{Core, Entry, Fs, Inval, News, Outcome, What};
use crate::backend::{Backend, Param};
use crate::capped::Capped;
use crate::content::Content;
use crate::error::Error;
use crate::names::{ENV, JSON, TEMPLATES};
use crate::render::template::{
    unusable_error, Failed, Input, Known, Rendering, Resolved, Templates,
};
use crate::render::{env, tree_value, Leaf};

/// Rendered files followed, at most (the least recently rendered is forgotten first).
const MAX_RENDERS: usize = 4_096;
/// Rounds of resolving what a template asked for: a template whose reads depend on values
/// read before (`param(param("x"))`) needs one round per level.
const MAX_ROUNDS: usize = 8;

/// A rendered file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Rendered {
    Env(String),
    Json(String),
    Template(String),
}

impl Rendered {
    /// Its path on the mount.
    pub fn shown(&self) -> String {
        match self {
            Rendered::Env(dir) => join(dir, ENV),
            Rendered::Json(dir) => join(dir, JSON),
            Rendered::Template(name) => join(TEMPLATES, name),
        }
    }

    /// The key of the directory inode it is in.
    fn dir_key(&self) -> Key {
        match self {
            Rendered::Env(dir) | Rendered::Json(dir) => Key::Dir(dir.clone()),
            Rendered::Template(_) => Key::Templates,
        }
    }
}

/// Renders begun again because a fetch landed while they read, at most, before one settles
/// anyway.
const MAX_ATTEMPTS: usize = 3;

/// What one attempt at a render came to.
enum Made {
    /// Nothing it read changed: the current version stands.
    Same(Arc<Cached>),
    Rendering(Rendering),
}

/// A rendered file followed since it was first looked up.
struct Render {
    what: Rendered,
    /// Its last version. After a failed render, an empty stand-in (`failed`): lookups fail,
    /// but the announcer has a file to act on when a change makes it render again.
    current: Option<Arc<Cached>>,
    failed: bool,
    /// What the last render read, with the stamp of each (`ABSENT` for what did not exist).
    inputs: Vec<(Input, u64)>,
}

/// The rendered files followed, and what has been logged about them.
pub struct Renders {
    by_path: Capped<String, Render>,
    /// Versions of rendered files are numbered across all of them, so that a number is never
    /// used twice, even by a file forgotten and rendered anew.
    next_version: u64,
    /// Moves on with every fetch that changed something: a render that read before it moved
    /// may have read what the fetch replaced, and is done again.
    epoch: u64,
    warned: Capped<String, ()>,
}

impl Default for Renders {
    fn default() -> Self {
        Renders {
            by_path: Capped::new(MAX_RENDERS),
            next_version: 1,
            epoch: 0,
            warned: Capped::new(MAX_RENDERS),
        }
    }
}

impl Renders {
    /// The rendered files whose inputs the news touches: each is news itself, and the kernel's
    /// entries for it are stale.
    pub(super) fn follow(&mut self, news: &[News]) -> Vec<(Rendered, Option<Arc<Cached>>)> {
        if news.is_empty() {
            return Vec::new();
        }
        self.epoch += 1;
        let mut touched = Vec::new();
        for (_, render) in self.by_path.iter_mut() {
            let hit = render.inputs.iter().any(|(input, _)| {
                news.iter().any(|n| match input {
                    Input::Param { path, .. } => n.path == *path,
                    Input::Dir(dir) => !n.is_dir() && in_subtree(dir, &n.path),
                })
            });
            if hit {
                touched.push((render.what.clone(), render.current.clone()));
            }
        }
        touched
    }

    /// The followed file `what` (followed from now on, if it was not), and a version name
    /// for it should it need a new one (never used twice).
    fn entry(&mut self, what: &Rendered) -> (String, &mut Render) {
        let version = format!("rendered-{}", self.next_version);
        self.next_version += 1;
        let render = self.by_path.get_or_insert_mut(what.shown(), || Render {
            what: what.clone(),
            current: None,
            failed: false,
            inputs: Vec::new(),
        });
        (version, render)
    }

    /// Logs `message` unless it was logged already.
    fn warn_once(&mut self, message: &str) {
        if self.warned.get(message).is_none() {
            warn!("{message}");
            self.warned.put(message.to_string(), ());
        }
    }
}

impl<B: Backend> Fs<B> {
    /// Sets the templates shown under `.templates`.
    pub fn set_templates(&self, templates: Templates) {
        *self.templates.lock().unwrap() = Arc::new(templates);
    }

    /// Reads the template files again (SIGHUP). A template that fails to load keeps the old
    /// set; templates followed whose output changed are news.
    pub async fn reload_templates(&self) -> Result<(), String> {
        // The files are read without the lock: lookups of `.templates` take it.
        let loaded = self.templates.lock().unwrap().clone();
        let fresh = loaded.reload()?;
        self.set_templates(fresh);
        let followed: Vec<Rendered> = {
            let core = self.core.lock().unwrap();
            core.renders
                .by_path
                .iter()
                .map(|(_, r)| r.what.clone())
                .filter(|w| matches!(w, Rendered::Template(_)))
                .collect()
        };
        let mut outcome = Outcome::default();
        for what in followed {
            let before = self
                .core
                .lock()
                .unwrap()
                .renders
                .by_path
                .peek(&what.shown())
                .and_then(|r| r.current.clone());
            let _ = self.render(&what, true, false).await;
            let mut core = self.core.lock().unwrap();
            let after = core
                .renders
                .by_path
                .peek(&what.shown())
                .and_then(|r| r.current.clone());
            let same = match (&before, &after) {
                (Some(b), Some(a)) => Arc::ptr_eq(b, a) || b.param.version == a.param.version,
                (None, None) => true,
                _ => false,
            };
            if !same {
                Self::rendered_outcome(&mut core, vec![(what, before)], &mut outcome);
            }
        }
        if let Some(inv) = self.invalidator.get() {
            if !outcome.is_empty() {
                inv.invalidate(outcome);
            }
        }
        Ok(())
    }

    /// The rendered file `name` in directory inode `parent` names, if it names one.
    pub(super) fn rendered_name(
        &self,
        parent: Ino,
        name: &OsStr,
    ) -> Option<Result<Rendered, Error>> {
        self.rendered_in(&self.core.lock().unwrap(), parent, name)
    }

    /// [`Fs::rendered_name`], under a lock the caller holds.
    pub(super) fn rendered_in(
        &self,
        core: &Core,
        parent: Ino,
        name: &OsStr,
    ) -> Option<Result<Rendered, Error>> {
        match core.inodes.node(parent)? {
            Node::Templates => {
                let name = name.to_str().unwrap_or("");
                let templates = self.templates.lock().unwrap();
                Some(if templates.has(name) {
                    Ok(Rendered::Template(name.to_string()))
                } else {
                    Err(Error::NotFound)
                })
            }
            Node::Dir { path } if core.tree.dir(path).is_some() => match name.to_str()? {
                ENV => Some(Ok(Rendered::Env(path.clone()))),
                JSON => Some(Ok(Rendered::Json(path.clone()))),
                _ => None,
            },
            _ => None,
        }
    }

    /// A lookup of a rendered file: rendered from fresh knowledge, then handed to the kernel.
    pub(super) async fn lookup_rendered(&self, what: Rendered) -> Result<Entry, Error> {
        let (_, entry) = self.render(&what, false, true).await?;
        entry.ok_or(Error::NotFound)
    }

    /// The announcer's lookup of a rendered file: its last version, never kept by the kernel.
    pub(super) fn lookup_rendered_held(&self, what: &Rendered) -> Result<Entry, Error> {
        let mut core = self.core.lock().unwrap();
        let cached = core
            .renders
            .by_path
            .peek(&what.shown())
            .and_then(|r| r.current.clone())
            .ok_or(Error::NotFound)?;
        let ino = core.inodes.remember(Node::File {
            path: what.shown().into(),
            cached,
        });
        let mut entry = self.attr_of(&core, ino)?;
        entry.ttl = Duration::ZERO;
        Ok(entry)
    }

    /// Renders a file from fresh knowledge (`again`: even if nothing it read changed) and
    /// records the result as its current version; `hand_out`: and hands it to the kernel under
    /// the same lock, so that no fetch comes between.
    async fn render(
        &self,
        what: &Rendered,
        again: bool,
        hand_out: bool,
    ) -> Result<(Arc<Cached>, Option<Entry>), Error> {
        let shown = what.shown();
        let templates = self.templates.lock().unwrap().clone();
        for attempt in 1..=MAX_ATTEMPTS {
            let mut known = Known::new();
            let mut found: HashMap<Input, Resolution> = HashMap::new();
            // What the last render read is most likely read again: it is resolved all at once.
            let (epoch, last) = {
                let mut core = self.core.lock().unwrap();
                let last = core.renders.by_path.get(&shown).map(|r| {
                    let current = r.current.clone().filter(|_| !r.failed);
                    (r.inputs.clone(), current)
                });
                (core.renders.epoch, last)
            };
            let mut want: Vec<Input> = match (&last, what) {
                (Some((inputs, _)), _) if !inputs.is_empty() => {
                    inputs.iter().map(|(i, _)| i.clone()).collect()
                }
                (_, Rendered::Env(dir) | Rendered::Json(dir)) => vec![Input::Dir(dir.clone())],
                _ => Vec::new(),
            };
            let mut made = None;
            for round in 0..=MAX_ROUNDS {
                self.resolve_all(&want, &mut known, &mut found).await;
                if let (0, false, Some((inputs, Some(current)))) = (round, again, &last) {
                    let same = !inputs.is_empty()
                        && inputs
                            .iter()
                            .all(|(input, stamp)| stamp_in(input, &known, &found) == Some(*stamp));
                    if same {
                        made = Some(Made::Same(current.clone()));
                        break;
                    }
                }
                match self.make(what, &templates, &known) {
                    Rendering::Missing(inputs) => want = inputs,
                    done => {
                        made = Some(Made::Rendering(done));
                        break;
                    }
                }
            }
            let mut core = self.core.lock().unwrap();
            if core.renders.epoch != epoch && attempt < MAX_ATTEMPTS {
                // A fetch changed something while this render read: it may have read what the
                // fetch replaced (and the fetch's news went out before this render's result).
                continue;
            }
            let made = made.unwrap_or_else(|| {
                Made::Rendering(Rendering::Failed(Failed {
                    message: format!(
                        "template {shown}: reads depend on reads more than {MAX_ROUNDS} levels deep"
                    ),
                    error: Error::Render,
                }))
            });
            let cached = match made {
                Made::Same(current) => {
                    let content = current.param.content.clone();
                    let secret = current.param.secret;
                    self.settle(&mut core, what, content, secret, &[], &known, &found)
                }
                Made::Rendering(Rendering::Done { text, used, secret }) => {
                    let content = Content::from(text.into_bytes());
                    self.settle(&mut core, what, content, secret, &used, &known, &found)
                }
                Made::Rendering(Rendering::Failed(failed)) => {
                    core.renders.warn_once(&failed.message);
                    self.settle_failed(&mut core, what, &known, &found);
                    return Err(failed.error);
                }
                Made::Rendering(Rendering::Missing(_)) => {
                    unreachable!("missing inputs are resolved above")
                }
            };
            let entry = if hand_out {
                let ino = core.inodes.remember(Node::File {
                    path: shown.as_str().into(),
                    cached: cached.clone(),
                });
                Some(self.attr_of(&core, ino)?)
            } else {
                None
            };
            return Ok((cached, entry));
        }
        unreachable!("the last attempt always settles")
    }

    /// One render from what is known: the file, or what it still lacks, or why it failed.
    fn make(&self, what: &Rendered, templates: &Templates, known: &Known) -> Rendering {
        match what {
            Rendered::Env(dir) | Rendered::Json(dir) => {
                let input = Input::Dir(dir.clone());
                match known.get(&input) {
                    None => Rendering::Missing(vec![input]),
                    Some(Err(e)) => Rendering::Failed(Failed {
                        message: format!("{}: {e}", what.shown()),
                        error: e.clone(),
                    }),
                    Some(Ok(Resolved::Dir(leaves))) => self.tree_file(what, leaves),
                    Some(Ok(Resolved::Param(_))) => unreachable!("a directory input"),
                }
            }
            Rendered::Template(name) => {
                templates.render(name, &self.config.source, Arc::new(known.clone()))
            }
        }
    }

    /// `.env` or `.json` from a subtree's files.
    fn tree_file(&self, what: &Rendered, leaves: &[Leaf]) -> Rendering {
        let secret = leaves.iter().any(|l| l.secret);
        let used = match what {
            Rendered::Env(dir) | Rendered::Json(dir) => vec![Input::Dir(dir.clone())],
            Rendered::Template(_) => Vec::new(),
        };
        let text = match what {
            Rendered::Env(_) => {
                let env = env::render(leaves);
                if !env.left_out.is_empty() {
                    let mut core = self.core.lock().unwrap();
                    for why in &env.left_out {
                        core.renders
                            .warn_once(&format!("{}: left out {why}", what.shown()));
                    }
                }
                String::from_utf8(env.text).unwrap_or_default()
            }
            _ => match tree_value(leaves) {
                Ok(value) => {
                    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
                    text.push('\n');
                    text
                }
                Err(why) => {
                    let error = leaves
                        .iter()
                        .find(|l| !l.derived && l.unusable().is_some())
                        .map_or(Error::Render, unusable_error);
                    return Rendering::Failed(Failed {
                        message: format!("{}: {why}", what.shown()),
                        error,
                    });
                }
            },
        };
        Rendering::Done { text, used, secret }
    }

    /// Records a render as the file's current version: the same version as before if the
    /// content is the same, else a new one. `used` empty: nothing read changed.
    #[allow(clippy::too_many_arguments)]
    fn settle(
        &self,
        core: &mut Core,
        what: &Rendered,
        content: Content,
        secret: bool,
        used: &[Input],
        known: &Known,
        found: &HashMap<Input, Resolution>,
    ) -> Arc<Cached> {
        let shown = what.shown();
        let (version, render) = core.renders.entry(what);
        if !used.is_empty() {
            render.inputs = used
                .iter()
                .filter_map(|i| stamp_in(i, known, found).map(|s| (i.clone(), s)))
                .collect();
        }
        // The file is fresh as long as everything it read: stamped so that the max age of its
        // own directory runs out then.
        let until = render
            .inputs
            .iter()
            .filter_map(|(i, _)| found.get(i))
            .map(|r| r.until)
            .min();
        let now = Instant::now();
        let fetched_at = until
            .and_then(|u| u.checked_sub(self.config.max_age_of(split(&shown).0)))
            .map_or(now, |f| f.min(now));
        let param = match &render.current {
            Some(c) if !render.failed && c.param.content == content && c.param.secret == secret => {
                c.param.clone()
            }
            _ => {
                let modified = render
                    .inputs
                    .iter()
                    .filter_map(|(i, _)| found.get(i))
                    .map(|r| r.modified)
                    .max()
                    .unwrap_or(self.mounted_at);
                Param {
                    name: shown.clone(),
                    content,
                    version,
                    secret,
                    modified,
                    xattrs: Vec::new(),
                    unreadable: None,
                    derived: true,
                }
            }
        };
        let cached = Arc::new(Cached { param, fetched_at });
        render.current = Some(cached.clone());
        render.failed = false;
        cached
    }

    /// Records a failed render: what it read stays followed, and an empty stand-in is its
    /// current version, so that the change that mends it is news of a changed file.
    fn settle_failed(
        &self,
        core: &mut Core,
        what: &Rendered,
        known: &Known,
        found: &HashMap<Input, Resolution>,
    ) {
        let shown = what.shown();
        let (version, render) = core.renders.entry(what);
        render.inputs = match what {
            Rendered::Env(dir) | Rendered::Json(dir) => vec![(Input::Dir(dir.clone()), ABSENT)],
            Rendered::Template(_) => known
                .keys()
                .map(|i| (i.clone(), stamp_in(i, known, found).unwrap_or(ABSENT)))
                .collect(),
        };
        if !render.failed {
            render.failed = true;
            render.current = Some(Arc::new(Cached {
                param: Param {
                    name: shown,
                    content: Content::default(),
                    version,
                    secret: false,
                    modified: self.mounted_at,
                    xattrs: Vec::new(),
                    unreadable: None,
                    derived: true,
                },
                fetched_at: Instant::now(),
            }));
        }
    }

    /// Adds to an outcome the rendered files touched: news of a changed file and the kernel's
    /// entries to invalidate.
    pub(super) fn rendered_outcome(
        core: &mut Core,
        touched: Vec<(Rendered, Option<Arc<Cached>>)>,
        outcome: &mut Outcome,
    ) {
        for (what, old) in touched {
            let shown = what.shown();
            let name = split(&shown).1.to_string();
            // The inode of the last version is not reported replaced: the announcer truncates
            // that very inode (its lookups get the last version), so that a program watching
            // the file itself hears of the change too.
            if let Some(dir) = core.inodes.held(&what.dir_key()) {
                outcome.invals.push(Inval(dir, name));
            }
            if let Some(old) = old {
                outcome.news.push(News {
                    what: What::Changed(old),
                    path: shown.clone(),
                    shown,
                });
            }
        }
    }
}
