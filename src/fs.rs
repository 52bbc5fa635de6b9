//! The filesystem core: answers lookups, attributes, reads, listings and `.refresh` writes from
//! the [`Tree`], and decides which API call to make when the tree does not know enough.
//!
//! It knows paths, inodes and the cache, not fuser's request types: the FUSE adapter turns its
//! plain results into replies, and unit tests call it directly over the in-memory backend.
//!
//! Promises:
//! - an answer from knowledge younger than `max_age` costs no API call, for names that exist and
//!   for names that do not;
//! - what needs fetching is fetched with the smallest call that answers it: a lookup in a
//!   directory not yet listed probes that one name, a listing sweeps that directory's subtree,
//!   an expired file refreshes its directory's files (or itself, if they were never listed);
//! - concurrent requests needing the same fetch share one (see [`crate::flight`]);
//! - when AWS fails transiently, the last good knowledge answers, whatever its age, and no call
//!   is tried for a back-off period, so an outage costs neither errors nor waiting for data held;
//! - every change a fetch makes to what a path shows is sent to the kernel as an invalidation.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use crate::backend::{Backend, BackendError, Page, Param};
use crate::error::Error;
use crate::flight::Flights;
use crate::names::{Name, Selector, Source, REFRESH, STATS};
use crate::stats::{Figures, Group, Stats};
use crate::tree::{join, split, Cached, Fresh, Ino, Inval, Node, Tree, ROOT};

/// How long entries that never change (the root, control files) stay in the kernel's cache.
/// They cannot go stale, so the TTL only bounds how long the kernel holds memory for them.
const STATIC_TTL: Duration = Duration::from_secs(24 * 3600);
/// First pause after a transient failure before AWS is tried again; it doubles up to
/// `MAX_BACKOFF`. Short, because a value must not stay stale long once AWS answers again.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bound on fetch-and-retry rounds for one request (each round fetches something new).
const MAX_ROUNDS: usize = 8;
/// How long a request waits for a refresh when a value of any age is held: AWS answers well
/// within it, so values stay within max-age; a slow AWS costs readers this much at most, and
/// the refresh goes on in the background and is applied when it lands.
pub const REFRESH_WAIT: Duration = Duration::from_millis(250);
/// Once this many API calls have gone to single names in one directory since it was last listed,
/// the next name missing there lists the directory instead: asking name by name is cheapest for
/// a few names in a large tree, listing is cheapest for many names in one directory, and this
/// bounds the cost of guessing wrong (the rule of renting skis until their price is spent).
const LIST_AFTER: u32 = 20;
/// A directory whose known subtree fits in this many parameters (two pages) is swept whole when
/// any name in it needs refreshing: that costs no more calls than a probe and a one-level
/// listing, and refreshes every name in it at once.
const SMALL_SUBTREE: usize = 20;

pub struct Config {
    pub source: Source,
    /// How old knowledge may be when answering, unless a subtree overrides it.
    pub max_age: Duration,
    /// Overrides for subtrees: (mount-relative directory path, max age).
    pub max_age_for: Vec<(String, Duration)>,
    /// Whether subdirectories are shown (`--no-recursive` turns them off).
    pub recursive: bool,
    /// How old a held value may be when AWS cannot be reached (`None`: any age).
    pub max_stale: Option<Duration>,
    /// The mode of SecureString and secret files.
    pub secret_mode: u16,
    pub uid: u32,
    pub gid: u32,
}

impl Config {
    /// The max age that applies in a directory: that of the deepest override containing it.
    pub fn max_age_of(&self, dir: &str) -> Duration {
        self.max_age_for
            .iter()
            .filter(|(path, _)| {
                path.is_empty()
                    || dir == path
                    || dir
                        .strip_prefix(path.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            })
            .max_by_key(|(path, _)| path.len())
            .map_or(self.max_age, |(_, age)| *age)
    }
}

/// The time frame of one request: knowledge is fresh if it is younger than the max age at the
/// request's start, or was fetched for this request; once AWS has failed, any age will do.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    since: Instant,
    stale_ok: bool,
    max_stale: Option<Duration>,
}

impl Clock {
    fn fresh(&self, max_age: Duration) -> Fresh {
        let bound = if self.stale_ok {
            self.max_stale
        } else {
            Some(max_age)
        };
        Fresh {
            after: bound.map(|age| self.start.checked_sub(age).unwrap_or(self.start)),
            since: self.since,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// An answer about an inode and how long the kernel may keep it: the remaining validity of the
/// knowledge it came from.
#[derive(Clone, Debug)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: Ino,
    /// Position after this entry; stable across refreshes (see [`Fs::readdir`]).
    pub offset: u64,
    pub kind: Kind,
    pub name: String,
}

/// Sends invalidations to the kernel. Implemented by the FUSE adapter; absent in unit tests.
pub trait Invalidator: Send + Sync {
    /// Queues invalidations; they are carried out in order, off the request path.
    fn invalidate(&self, invals: Vec<Inval>);
    /// Completes once everything queued before it has been carried out.
    fn barrier(&self) -> tokio::sync::oneshot::Receiver<()>;
}

/// The fetches the core makes, each keyed for single-flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Fetch {
    /// Every parameter below a directory (recursive listing): its whole subtree.
    Sweep(String),
    /// The parameters directly in a directory (one-level listing).
    Files(String),
    /// Whether a path is a directory: a recursive listing of it, stopped at the first page
    /// that holds anything.
    Probe(String),
    /// One parameter.
    Get(String),
    /// One version of a parameter, by its path and a selector (a version or a label).
    Pinned(String, String),
}

enum Step<T> {
    Done(Result<T, Error>),
    Need(Fetch),
}

#[derive(Default)]
struct Health {
    /// No call is tried before this instant (set after a transient failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    last_good: Option<Instant>,
    /// Whether this outage has been reported as past --max-stale.
    warned_stale: bool,
}

pub struct Fs<B> {
    /// This filesystem, for refreshes that must outlive the request that started them.
    me: Weak<Fs<B>>,
    backend: B,
    config: Config,
    tree: Mutex<Tree>,
    flights: Flights<Fetch, BackendError>,
    health: Mutex<Health>,
    invalidator: OnceLock<Box<dyn Invalidator>>,
    stats: Stats,
    /// One line on what the mount last did (a group refreshed, an outage), for systemd's STATUS=.
    status: tokio::sync::watch::Sender<String>,
    mounted_at: SystemTime,
}

impl<B: Backend> Fs<B> {
    pub fn new(backend: B, config: Config) -> Arc<Self> {
        let stats = Stats::new(backend.api_calls());
        Arc::new_cyclic(|me| Fs {
            me: me.clone(),
            backend,
            config,
            tree: Mutex::new(Tree::new()),
            flights: Flights::default(),
            health: Mutex::new(Health::default()),
            invalidator: OnceLock::new(),
            stats,
            status: tokio::sync::watch::Sender::new(String::new()),
            mounted_at: SystemTime::now(),
        })
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The status line, which changes after each group refresh and at the start and end of an
    /// outage. Never holds a value.
    pub fn status(&self) -> tokio::sync::watch::Receiver<String> {
        self.status.subscribe()
    }

    /// The figures of `.stats` in the OpenMetrics text format.
    pub fn metrics(&self) -> String {
        // Rendered after the tree lock is released: lookups wait on that lock.
        let figures = self.figures(&self.tree.lock().unwrap());
        figures.to_openmetrics()
    }

    fn figures(&self, tree: &Tree) -> Figures {
        let last_good = self.health.lock().unwrap().last_good;
        let groups: Vec<Group> = tree
            .groups()
            .map(|(dir, refreshed_at, parameters)| Group {
                name: self.config.source.full_name(dir),
                refreshed_at,
                parameters,
            })
            .collect();
        self.stats.figures(last_good, &groups)
    }

    /// Records a group's good refresh and says so on the status line.
    fn group_refreshed(
        &self,
        tree: &mut Tree,
        dir: &str,
        subtree: bool,
        parameters: usize,
        at: Instant,
    ) {
        tree.group_refreshed(dir, subtree, parameters, at);
        let name = self.config.source.full_name(dir);
        let plural = if parameters == 1 { "" } else { "s" };
        self.status
            .send_replace(format!("refreshed {name}: {parameters} parameter{plural}"));
    }

    pub fn set_invalidator(&self, inv: Box<dyn Invalidator>) {
        let _ = self.invalidator.set(inv);
    }

    /// The start-up check: one page of the source's listing. It proves the source is readable,
    /// and when the whole tree fits in that page the tree is then fully known.
    pub async fn check_source(&self) -> Result<(), BackendError> {
        let at = Instant::now();
        let path = self.config.source.full_name("");
        let page = self.call_list(&path, self.config.recursive, None).await?;
        self.record_health(&Ok::<(), BackendError>(()));
        let mut tree = self.tree.lock().unwrap();
        if page.next_token.is_none() {
            let subtree = self.config.recursive;
            self.group_refreshed(&mut tree, "", subtree, page.params.len(), at);
            tree.apply_sweep("", page.params, &self.config.source, at);
        } else {
            tree.apply_seen(page.params, &self.config.source, at);
        }
        Ok(())
    }

    /// A lookup answered from memory, or `None` when it needs a fetch (then call `lookup`).
    pub fn lookup_now(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Error>> {
        let result =
            self.answer_now(|fs, tree, clock| fs.resolve_step(tree, parent, name, clock))?;
        Some(result.map(|entry| self.handed_out(entry)))
    }

    /// A listing answered from memory, or `None` when it needs a fetch (then call `readdir`).
    pub fn readdir_now(&self, ino: Ino, offset: u64) -> Option<Result<Vec<DirEntry>, Error>> {
        let result = self.answer_now(|fs, tree, clock| fs.readdir_step(tree, ino, clock))?;
        Some(result.map(|entries| after(entries, offset)))
    }

    /// An entry the kernel was answered with: it holds a reference to the inode until it
    /// forgets it.
    fn handed_out(&self, entry: Entry) -> Entry {
        self.tree.lock().unwrap().looked_up(entry.attr.ino);
        entry
    }

    /// One step against memory with the request's own clock: the answer, if no fetch is needed.
    fn answer_now<T>(
        &self,
        step: impl Fn(&Self, &mut Tree, Clock) -> Step<T>,
    ) -> Option<Result<T, Error>> {
        let now = Instant::now();
        let clock = Clock {
            start: now,
            since: now,
            stale_ok: false,
            max_stale: self.config.max_stale,
        };
        match step(self, &mut self.tree.lock().unwrap(), clock) {
            Step::Done(result) => {
                Stats::bump(&self.stats.hits);
                Some(result)
            }
            Step::Need(_) => None,
        }
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Error> {
        let entry = self
            .answer(|fs, tree, clock| fs.resolve_step(tree, parent, name, clock))
            .await?;
        Ok(self.handed_out(entry))
    }

    /// Attributes of an inode, from memory: an inode is one version of a parameter, so its
    /// attributes never change; freshness is enforced when names are looked up.
    pub fn getattr(&self, ino: Ino) -> Result<Entry, Error> {
        self.attr_of(&mut self.tree.lock().unwrap(), ino)
    }

    /// Content of a file from memory. Never fetches: the kernel asks for attributes first when
    /// they have expired, and that is where freshness is enforced.
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        let tree = self.tree.lock().unwrap();
        let slice = |bytes: &[u8]| {
            let start = (offset as usize).min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            bytes[start..end].to_vec()
        };
        match tree.node(ino) {
            Some(Node::File { .. }) => match tree.version(ino) {
                Some(c) => match &c.param.unreadable {
                    None => Ok(slice(c.param.content.as_bytes())),
                    Some(code) => Err(Error::Backend(BackendError::AccessDenied(code.clone()))),
                },
                None => Err(Error::NotFound),
            },
            Some(Node::Stats { .. }) => match tree.snapshot(ino) {
                Some(snap) => Ok(slice(&snap.content)),
                None => Err(Error::NotFound),
            },
            Some(Node::Refresh { .. }) => Ok(Vec::new()),
            Some(Node::Dir { .. }) => Err(Error::IsDir),
            None => Err(Error::NotFound),
        }
    }

    /// The entries of a directory after `offset`, in a stable order: `.`, `..`, then by inode
    /// number. Inode numbers are never reused and new names get higher ones, so an offset stays
    /// valid across a refresh: a listing that spans one shows every surviving entry exactly once.
    pub async fn readdir(&self, ino: Ino, offset: u64) -> Result<Vec<DirEntry>, Error> {
        let entries = self
            .answer(|fs, tree, clock| fs.readdir_step(tree, ino, clock))
            .await?;
        Ok(after(entries, offset))
    }

    /// A write: to a `.refresh` file it refreshes that directory's subtree and returns once the
    /// kernel's caches show the result; anything else is read-only.
    pub async fn write(&self, ino: Ino, len: usize) -> Result<usize, Error> {
        let dir = match self.tree.lock().unwrap().node(ino) {
            Some(Node::Refresh { dir }) => dir.clone(),
            Some(_) => return Err(Error::ReadOnly),
            None => return Err(Error::NotFound),
        };
        self.refresh(&dir).await?;
        Ok(len)
    }

    /// Refreshes the subtree at `dir` (`""`: the whole mount, as SIGHUP does) and returns once
    /// the kernel's caches show the result. On failure the held values stay.
    pub async fn refresh(&self, dir: &str) -> Result<(), Error> {
        self.fetch(Fetch::Sweep(dir.to_string()), Some(Instant::now()))
            .await?;
        // Labels under the directory are asked again at their next lookup.
        let invals = self.tree.lock().unwrap().forget_selectors(dir);
        if let Some(inv) = self.invalidator.get() {
            inv.invalidate(invals);
            let _ = inv.barrier().await;
        }
        Ok(())
    }

    /// Attribute changes: only the truncation that `>` does to a `.refresh` file is accepted.
    pub fn setattr(
        &self,
        ino: Ino,
        size: Option<u64>,
        other_changes: bool,
    ) -> Result<Entry, Error> {
        let is_refresh = matches!(
            self.tree.lock().unwrap().node(ino),
            Some(Node::Refresh { .. })
        );
        if is_refresh && !other_changes && size.is_none_or(|s| s == 0) {
            return self.getattr(ino);
        }
        Err(Error::ReadOnly)
    }

    /// Runs a step until it is answered, fetching what it needs. When AWS fails transiently,
    /// or is being left alone after a failure, the step is answered from knowledge of any age.
    async fn answer<T>(
        &self,
        step: impl Fn(&Self, &mut Tree, Clock) -> Step<T>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let mut since = start;
        let mut stale_ok = false;
        let mut fetched = false;
        let mut failed = false;
        let mut last_err = None;
        for _ in 0..MAX_ROUNDS {
            let clock = Clock {
                start,
                since,
                stale_ok,
                max_stale: self.config.max_stale,
            };
            let need = match step(self, &mut self.tree.lock().unwrap(), clock) {
                Step::Done(result) => {
                    let counter = if stale_ok {
                        &self.stats.stale_served
                    } else if fetched {
                        &self.stats.misses
                    } else {
                        &self.stats.hits
                    };
                    Stats::bump(counter);
                    return result;
                }
                Step::Need(fetch) => fetch,
            };
            if !stale_ok {
                if let Some(err) = self.backing_off() {
                    stale_ok = true;
                    last_err = Some(err);
                    continue;
                }
            }
            if failed {
                // Nothing usable is held and AWS failed: this cannot be answered.
                if self.config.max_stale.is_some() {
                    self.warn_too_stale();
                }
                return Err(Error::Backend(last_err.expect("set on failure")));
            }
            let held = !stale_ok
                && matches!(
                    step(
                        self,
                        &mut self.tree.lock().unwrap(),
                        Clock {
                            stale_ok: true,
                            ..clock
                        }
                    ),
                    Step::Done(Ok(_))
                );
            let fetched_now = if held {
                // Something is held: wait for the refresh only briefly, in a task of its own so
                // that it goes on if the wait ends first.
                let me = self
                    .me
                    .upgrade()
                    .expect("the filesystem outlives its requests");
                let refresh = tokio::spawn(async move { me.fetch(need, None).await });
                match tokio::time::timeout(REFRESH_WAIT, refresh).await {
                    Ok(joined) => joined.unwrap_or_else(|e| {
                        Err(BackendError::Other(format!("refresh task failed: {e}")))
                    }),
                    Err(_) => {
                        stale_ok = true;
                        continue;
                    }
                }
            } else {
                self.fetch(need, None).await
            };
            match fetched_now {
                Ok(started) => {
                    // A shared fetch may have started before this request: its result still
                    // answers it.
                    since = since.min(started);
                    fetched = true;
                }
                Err(err) if err.is_transient() => {
                    stale_ok = true;
                    failed = true;
                    last_err = Some(err);
                }
                Err(err) => return Err(Error::Backend(err)),
            }
        }
        Err(Error::Backend(last_err.unwrap_or_else(|| {
            BackendError::Other("the tree did not settle".to_string())
        })))
    }

    /// Says once per outage that held values are too old to serve.
    fn warn_too_stale(&self) {
        let mut health = self.health.lock().unwrap();
        if !health.warned_stale {
            health.warned_stale = true;
            warn!(
                max_stale = ?self.config.max_stale,
                "AWS cannot be reached and the held values are older than --max-stale; reads fail with EIO"
            );
        }
    }

    /// `Some(error)` while calls are held back after a transient failure.
    fn backing_off(&self) -> Option<BackendError> {
        let health = self.health.lock().unwrap();
        match health.retry_at {
            Some(t) if Instant::now() < t => Some(BackendError::Unavailable(
                "AWS failed recently; serving cached values".to_string(),
            )),
            _ => None,
        }
    }

    /// Extended attributes of an inode: for a parameter's file, the metadata of its version as
    /// the fetch that brought it returned it, so reading them never costs a call.
    pub fn xattrs(&self, ino: Ino) -> Result<Vec<(&'static str, Vec<u8>)>, Error> {
        let tree = self.tree.lock().unwrap();
        match tree.node(ino) {
            Some(Node::File { .. }) => {
                let cached = tree.version(ino).ok_or(Error::NotFound)?;
                Ok(cached
                    .param
                    .xattrs
                    .iter()
                    .map(|(name, value)| (*name, value.as_bytes().to_vec()))
                    .collect())
            }
            Some(_) => Ok(Vec::new()),
            None => Err(Error::NotFound),
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.tree.lock().unwrap().forget(ino, n);
    }

    fn resolve_step(
        &self,
        tree: &mut Tree,
        parent: Ino,
        name: &OsStr,
        clock: Clock,
    ) -> Step<Entry> {
        let Some(Node::Dir { path }) = tree.node(parent).cloned() else {
            return Step::Done(Err(Error::NotFound));
        };
        if !tree.dirs.contains_key(&path) {
            return Step::Done(Err(Error::NotFound));
        }
        let fresh = clock.fresh(self.config.max_age_of(&path));
        let is_root = path.is_empty();
        let (name, selector) = match Name::parse(name, is_root, &self.config.source) {
            Name::Invalid => return Step::Done(Err(Error::NotFound)),
            Name::Control(c) => {
                let ino = if c == STATS {
                    let json = self.figures(tree).to_json();
                    tree.new_snapshot(json)
                } else {
                    tree.ino(Node::Refresh { dir: path })
                };
                return Step::Done(self.attr_of(tree, ino));
            }
            Name::Param(n) => (n, None),
            Name::Pinned(n, sel) => (n, Some(sel)),
            Name::Entry(n) => {
                if !self.config.source.fits(&join(&path, n)) {
                    return Step::Done(Err(Error::NotFound));
                }
                // That a directory exists is judged by its own max age, so that a long-lived
                // subtree is not refetched because its parent's knowledge is short-lived.
                let child = join(&path, n);
                let is_dir = if self.config.recursive {
                    tree.is_dir(&path, n, clock.fresh(self.config.max_age_of(&child)))
                } else {
                    Some(false)
                };
                match is_dir {
                    None if self.sweep_instead(tree, &path) => {
                        return Step::Need(Fetch::Sweep(path))
                    }
                    None => return Step::Need(Fetch::Probe(join(&path, n))),
                    Some(true) => {
                        let ino = tree.ino(Node::Dir {
                            path: join(&path, n),
                        });
                        return Step::Done(self.attr_of(tree, ino));
                    }
                    Some(false) => (n, None),
                }
            }
        };
        // The parameter's current version; a selector is answered only for a parameter the
        // mount shows (it passes the filters and exists).
        let current = match tree.file(&path, name, fresh) {
            // Listed, but refused: an empty file would read as empty (the kernel does not ask
            // for the content of a zero-length file), so the lookup itself fails.
            Some(Some(cached)) if selector.is_none() && cached.param.unreadable.is_some() => {
                let code = cached.param.unreadable.clone().unwrap_or_default();
                return Step::Done(Err(Error::Backend(BackendError::AccessDenied(code))));
            }
            Some(Some(cached)) => cached,
            Some(None) => return Step::Done(Err(Error::NotFound)),
            None => return Step::Need(self.refresh_plan(tree, &path, name)),
        };
        let version = match selector {
            None => current.param.version.clone(),
            Some(Selector::Version(v)) if tree.find_version(&path, name, v).is_some() => {
                v.to_string()
            }
            Some(sel) => match tree.selector(&path, name, &sel.to_string()) {
                // A version never changes; a label follows the max age.
                Some((Some(v), at)) if sel.is_version() || fresh.ok(at) => v,
                Some((None, at)) if fresh.ok(at) => return Step::Done(Err(Error::NotFound)),
                _ => {
                    return Step::Need(Fetch::Pinned(join(&path, name), sel.to_string()));
                }
            },
        };
        let ino = tree.file_node(&path, name, &version);
        Step::Done(self.attr_of(tree, ino))
    }

    /// Whether sweeping `dir` is cheaper than asking about one name in it: its known subtree is
    /// small, or enough has been spent on single names in it already.
    fn sweep_instead(&self, tree: &Tree, dir: &str) -> bool {
        let spent = self.config.recursive
            && tree
                .dirs
                .get(dir)
                .is_some_and(|d| d.single_calls >= LIST_AFTER);
        spent || tree.is_small(dir, SMALL_SUBTREE)
    }

    /// The cheapest fetch that refreshes the parameter `name` in `dir`.
    fn refresh_plan(&self, tree: &Tree, dir: &str, name: &str) -> Fetch {
        if self.sweep_instead(tree, dir) {
            return Fetch::Sweep(dir.to_string());
        }
        // GetParameter cannot apply filters, so a filtered mount lists instead.
        let lists_files = tree.dirs.get(dir).is_some_and(|d| d.files_at.is_some());
        if lists_files || !self.backend.gets_every_name() {
            Fetch::Files(dir.to_string())
        } else {
            Fetch::Get(join(dir, name))
        }
    }

    fn attr_of(&self, tree: &mut Tree, ino: Ino) -> Result<Entry, Error> {
        let node = match tree.node(ino) {
            Some(node) => node.clone(),
            None => return Err(Error::NotFound),
        };
        let now = Instant::now();
        let entry = match node {
            Node::Dir { path } => {
                if !tree.dirs.contains_key(&path) {
                    return Err(Error::NotFound);
                }
                let ttl = if path.is_empty() {
                    STATIC_TTL
                } else {
                    let (parent, name) = split(&path);
                    tree.dir_seen(parent, name)
                        .map_or(Duration::ZERO, |seen| self.remaining(&path, seen, now))
                };
                Entry {
                    attr: self.dir_attr(ino),
                    ttl,
                }
            }
            // An inode is one version: its attributes never change. Freshness is enforced when
            // a name is looked up, which is where a newer version gets its new inode.
            Node::File { dir, .. } => match tree.version(ino) {
                Some(cached) => Entry {
                    attr: self.file_attr(ino, &cached),
                    ttl: self.remaining(&dir, cached.fetched_at, now),
                },
                None => return Err(Error::NotFound),
            },
            Node::Refresh { .. } => Entry {
                attr: self.control_attr(ino, 0, 0o200, self.mounted_at),
                ttl: STATIC_TTL,
            },
            // A zero TTL makes every open look `.stats` up again, which renders a new snapshot.
            Node::Stats { .. } => match tree.snapshot(ino) {
                Some(snap) => Entry {
                    attr: self.control_attr(ino, snap.content.len() as u64, 0o444, snap.at),
                    ttl: Duration::ZERO,
                },
                None => return Err(Error::NotFound),
            },
        };
        Ok(entry)
    }

    fn readdir_step(&self, tree: &mut Tree, ino: Ino, clock: Clock) -> Step<Vec<DirEntry>> {
        let path = match tree.node(ino) {
            Some(Node::Dir { path }) => path.clone(),
            Some(_) => return Step::Done(Err(Error::NotFound)),
            None => return Step::Done(Err(Error::NotFound)),
        };
        let Some(dir) = tree.dirs.get(&path) else {
            return Step::Done(Err(Error::NotFound));
        };
        let fresh = clock.fresh(self.config.max_age_of(&path));
        if !dir.listed_at.is_some_and(|t| fresh.ok(t)) {
            return Step::Need(Fetch::Sweep(path));
        }
        let subdirs: Vec<String> = dir.subdirs.keys().cloned().collect();
        let files: Vec<(String, String)> = dir
            .files
            .iter()
            .map(|(name, c)| (name.clone(), c.param.version.clone()))
            .collect();
        let parent_ino = if path.is_empty() {
            ROOT
        } else {
            tree.ino(Node::Dir {
                path: split(&path).0.to_string(),
            })
        };
        // `.`, `..` and `.stats` have fixed places: `.stats` gets a new inode at every lookup, so
        // its inode cannot say where it stands in a listing.
        let mut entries = vec![
            (ino, Kind::Dir, ".".to_string()),
            (parent_ino, Kind::Dir, "..".to_string()),
        ];
        if path.is_empty() {
            let ino = match tree.newest_snapshot() {
                Some(ino) => ino,
                None => {
                    let json = self.figures(tree).to_json();
                    tree.new_snapshot(json)
                }
            };
            entries.push((ino, Kind::File, STATS.to_string()));
        }
        let fixed = entries.len();
        let mut children = Vec::with_capacity(subdirs.len() + files.len() + 1);
        children.push((
            tree.ino(Node::Refresh { dir: path.clone() }),
            Kind::File,
            REFRESH.to_string(),
        ));
        for name in subdirs {
            children.push((
                tree.ino(Node::Dir {
                    path: join(&path, &name),
                }),
                Kind::Dir,
                name,
            ));
        }
        for (name, version) in files {
            let shown = tree.shown_name(&path, &name);
            let ino = tree.file_node(&path, &name, &version);
            children.push((ino, Kind::File, shown));
        }
        children.sort_by_key(|c| c.0);
        entries.extend(children);
        let listed = entries
            .into_iter()
            .enumerate()
            .map(|(i, (ino, kind, name))| DirEntry {
                ino,
                // The fixed entries take offsets 1 to 3; every other entry its inode number + 3.
                offset: if i < fixed { i as u64 + 1 } else { ino + 3 },
                kind,
                name,
            })
            .collect();
        Step::Done(Ok(listed))
    }

    /// How long knowledge from `at` stays valid after `now`.
    /// How long knowledge from `at` about directory `dir` stays valid after `now`.
    fn remaining(&self, dir: &str, at: Instant, now: Instant) -> Duration {
        (at + self.config.max_age_of(dir)).saturating_duration_since(now)
    }

    fn dir_attr(&self, ino: Ino) -> Attr {
        Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            mtime: self.mounted_at,
            perm: 0o555,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    fn file_attr(&self, ino: Ino, cached: &Cached) -> Attr {
        let p = &cached.param;
        Attr {
            ino,
            kind: Kind::File,
            size: p.content.len() as u64,
            mtime: p.modified,
            perm: if p.secret {
                self.config.secret_mode
            } else {
                0o444
            },
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    fn control_attr(&self, ino: Ino, size: u64, perm: u16, mtime: SystemTime) -> Attr {
        Attr {
            ino,
            kind: Kind::File,
            size,
            mtime,
            perm,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    /// Runs a fetch through single-flight, applies its result to the tree and queues the
    /// invalidations it causes, before any waiter is released.
    /// Returns when the fetch that was used started: what it learned is at least that new.
    async fn fetch(
        &self,
        fetch: Fetch,
        not_before: Option<Instant>,
    ) -> Result<Instant, BackendError> {
        self.flights
            .run(fetch.clone(), not_before, async {
                Stats::bump(&self.stats.refreshes);
                debug!(?fetch, "fetching");
                let at = Instant::now();
                let result = self.execute(&fetch, at).await;
                self.record_health(&result);
                let invals = result?;
                if !invals.is_empty() {
                    if let Some(inv) = self.invalidator.get() {
                        inv.invalidate(invals);
                    }
                }
                Ok(())
            })
            .await
    }

    async fn execute(&self, fetch: &Fetch, at: Instant) -> Result<Vec<Inval>, BackendError> {
        let source = &self.config.source;
        match fetch {
            Fetch::Sweep(dir) => {
                let params = self
                    .list_all(&source.full_name(dir), self.config.recursive)
                    .await?;
                let mut tree = self.tree.lock().unwrap();
                let subtree = self.config.recursive;
                self.group_refreshed(&mut tree, dir, subtree, params.len(), at);
                Ok(tree.apply_sweep(dir, params, source, at))
            }
            Fetch::Files(dir) => {
                let params = self.list_all(&source.full_name(dir), false).await?;
                let mut tree = self.tree.lock().unwrap();
                self.group_refreshed(&mut tree, dir, false, params.len(), at);
                Ok(tree.apply_files(dir, params, source, at))
            }
            Fetch::Probe(path) => {
                let full = source.full_name(path);
                let mut token = None;
                loop {
                    let page = self.call_list(&full, true, token).await?;
                    let mut tree = self.tree.lock().unwrap();
                    tree.spent_on_single(split(path).0, 1);
                    match (page.params.is_empty(), page.next_token) {
                        // The whole subtree came in this page: it is a sweep.
                        (_, None) => return Ok(tree.apply_sweep(path, page.params, source, at)),
                        (false, Some(_)) => return Ok(tree.apply_seen(page.params, source, at)),
                        (true, Some(next)) => token = Some(next),
                    }
                }
            }
            Fetch::Get(path) => {
                let found = self.call_get(&source.full_name(path)).await?;
                let (dir, name) = split(path);
                let mut tree = self.tree.lock().unwrap();
                tree.spent_on_single(dir, 1);
                Ok(tree.apply_get(dir, name, found, at))
            }
            Fetch::Pinned(path, selector) => {
                let full = format!(
                    "{}{}{selector}",
                    source.full_name(path),
                    crate::names::SELECTOR
                );
                let found = self.call_get(&full).await?;
                let (dir, name) = split(path);
                Ok(self
                    .tree
                    .lock()
                    .unwrap()
                    .apply_pinned(dir, name, selector, found, at))
            }
        }
    }

    async fn list_all(&self, path: &str, recursive: bool) -> Result<Vec<Param>, BackendError> {
        let mut params = Vec::new();
        let mut token = None;
        loop {
            let page = self.call_list(path, recursive, token).await?;
            params.extend(page.params);
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(params),
            }
        }
    }

    async fn call_list(
        &self,
        path: &str,
        recursive: bool,
        token: Option<String>,
    ) -> Result<Page, BackendError> {
        let result = self
            .backend
            .get_parameters_by_path(path, recursive, token)
            .await;
        self.count_error(&result);
        result
    }

    async fn call_get(&self, name: &str) -> Result<Option<Param>, BackendError> {
        let result = self.backend.get_parameter(name).await;
        self.count_error(&result);
        result
    }

    fn count_error<T>(&self, result: &Result<T, BackendError>) {
        if result.is_err() {
            Stats::bump(&self.stats.errors);
        }
    }

    /// Tracks outages: warns once when AWS starts failing, says when it answers again, and
    /// sets the back-off during which cached values are served without trying.
    fn record_health<T>(&self, result: &Result<T, BackendError>) {
        let mut health = self.health.lock().unwrap();
        match result {
            Ok(_) => {
                if health.retry_at.take().is_some() {
                    info!("AWS answers again; cached values are being refreshed");
                    self.status
                        .send_replace("AWS answers again; refreshing held values".to_string());
                }
                health.backoff = Duration::ZERO;
                health.last_good = Some(Instant::now());
                health.warned_stale = false;
            }
            Err(err) if err.is_transient() => {
                if health.retry_at.is_none() {
                    warn!(error = %err, "AWS is failing; serving the last good values until it answers");
                    self.status.send_replace(format!(
                        "AWS is failing ({}); serving the last good values",
                        err.kind()
                    ));
                }
                health.backoff = (health.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                health.retry_at = Some(Instant::now() + health.backoff);
            }
            Err(err) => warn!(error = %err, "fetch failed"),
        }
    }
}

/// The entries of a listing after `offset`.
fn after(mut entries: Vec<DirEntry>, offset: u64) -> Vec<DirEntry> {
    entries.retain(|e| e.offset > offset);
    entries
}

#[cfg(test)]
mod tests;
