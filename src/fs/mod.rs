//! The filesystem core: answers lookups, attributes, reads, listings and `.refresh` writes from
//! what is known, and fetches from AWS when that is not enough.
//!
//! It knows paths, inodes and the cache, not fuser's request types: the FUSE adapter turns its
//! plain results into replies, and unit tests call it directly over the in-memory backend.
//!
//! The parts, each in its own file:
//! - [`tree`]: what is known of the hierarchy, with the instant each fact's fetch started;
//! - [`inodes`]: the inode numbers the kernel holds and what each stands for;
//! - [`plan`]: pure functions that answer a request from the tree, or name the fetch it needs;
//! - [`refresher`]: runs fetches (single-flight, bounded waits, back-off through outages) and
//!   applies their results, the only thing that changes the tree;
//! - [`listing`]: directory listings with stable offsets;
//! - [`control`]: the control files `.refresh` and `.stats`;
//! - [`rendered`]: `.env`, `.json` and `.templates/NAME`, rendered from what the tree holds;
//! - `inputs`: what a rendered file reads, resolved by path;
//! - `poll`: refreshes each group at its max age, read or not (`--poll`);
//! - [`events`]: applies changes told by events (`--events-queue`);
//! - [`announce`]: how the requests of the thread that raises inotify events are answered.
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
//! - an inode handed to the kernel answers getattr and read until the kernel forgets it;
//! - every change a fetch makes to what a path shows is sent to the kernel as an invalidation.

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};

use crate::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::backend::{Backend, BackendError};
use crate::capped::Capped;
use crate::error::Error;
use crate::flight::Flights;
use crate::names::Source;
use crate::stats::{Figures, Group, Stats};

pub mod announce;
pub mod control;
pub mod events;
pub mod inodes;
mod inputs;
pub mod listing;
pub mod plan;
mod poll;
pub mod refresher;
pub mod rendered;
mod slow;
pub mod tree;

pub use events::EventsAge;
pub use inodes::{Ino, ROOT};
pub use listing::{DirEntry, Entries, Kind};
pub use refresher::REFRESH_WAIT;
pub use tree::news::{News, What};

use inodes::{Inodes, Key, Node};
use listing::Listing;
use plan::{Plan, Planner, Target};
use refresher::{Fetch, Health};
use tree::{Cached, Fresh, Tree};

/// How long entries that never change (the root, control files) stay in the kernel's cache.
/// They cannot go stale, so the TTL only bounds how long the kernel holds memory for them.
const STATIC_TTL: Duration = Duration::from_secs(24 * 3600);
/// Listings kept built, at most: those of the directories being listed now.
const MAX_LISTINGS: usize = 64;

/// How long a `.stats` snapshot that no one has read may be handed out again.
const STATS_REUSE: Duration = Duration::from_secs(1);

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
    /// Change events (`--events-queue`): while they flow, what is held stays fresh longer.
    pub events: EventsAge,
}

/// The longest window before expiry in which names are refreshed ahead: long enough for a
/// refresh to land, short enough that the kernel keeps names for nearly their max age.
const MAX_AHEAD: Duration = Duration::from_secs(30);

impl Config {
    /// The window before expiry in which a name asked about is refreshed ahead: the last fifth
    /// of the max age in `dir`, at most 30 s.
    pub fn ahead_window(&self, dir: &str) -> Duration {
        (self.max_age_of(dir) / 5).min(MAX_AHEAD)
    }

    /// The max age that applies in a directory: that of the deepest override containing it,
    /// or, while events flow, the events' for what was fetched since they began (see
    /// [`EventsAge`]).
    pub fn max_age_of(&self, dir: &str) -> Duration {
        let age = self.own_max_age(dir);
        match self.events.max_age {
            Some(events) if self.events.flowing() => age.max(self.events.age(events)),
            _ => age,
        }
    }

    /// How often a group is swept while nothing reads it (`--poll`): its max age, or while
    /// events flow, the safety sweep's.
    pub fn poll_age(&self, dir: &str) -> Duration {
        let age = self.own_max_age(dir);
        match self.events.max_age {
            Some(events) if self.events.flowing() => age.max(events),
            _ => age,
        }
    }

    /// `--max-age`, or that of the deepest `--max-age-for` containing `dir`.
    fn own_max_age(&self, dir: &str) -> Duration {
        self.max_age_for
            .iter()
            .filter(|(path, _)| tree::in_subtree(path, dir))
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
    /// The request has fetched a page of a sweep in progress or renewed a directory, or must
    /// not (refresh ahead): what it still lacks is asked for by name.
    paged: bool,
}

impl Clock {
    fn now(max_stale: Option<Duration>) -> Clock {
        let now = Instant::now();
        Clock {
            start: now,
            since: now,
            stale_ok: false,
            max_stale,
            paged: false,
        }
    }

    fn fresh(&self, max_age: Duration) -> Fresh {
        let bound = if self.stale_ok {
            self.max_stale
        } else {
            Some(max_age)
        };
        Fresh {
            // An age reaching back before the clock's origin admits all there is.
            after: bound.and_then(|age| self.start.checked_sub(age)),
            since: self.since,
        }
    }
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
    /// Tells the kernel a new inode from an old one of the same number (see
    /// [`inodes::Inodes::retire`]).
    pub generation: u64,
}

/// A kernel cache entry that no longer shows the truth: this name in this directory inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inval(pub Ino, pub String);

/// A file inode the kernel may hold whose name now shows another version: (its directory's
/// inode, its inode, its name). The kernel is told the inode is gone from that name, so that
/// programs watching the file itself hear of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced(pub Ino, pub Ino, pub String);

/// What one fetch (or forced refresh) changed: the kernel's entries to invalidate, the inodes
/// replaced, and the news for programs that watch the mount (see [`tree::news`]).
#[derive(Debug, Default)]
pub struct Outcome {
    pub invals: Vec<Inval>,
    pub replaced: Vec<Replaced>,
    pub news: Vec<News>,
}

impl Outcome {
    pub fn is_empty(&self) -> bool {
        self.invals.is_empty() && self.replaced.is_empty() && self.news.is_empty()
    }
}

/// Sends invalidations to the kernel. Implemented by the FUSE adapter; absent in unit tests.
pub trait Invalidator: Send + Sync {
    /// Queues an outcome: its inodes replaced, then its invalidations, are carried out in order,
    /// off the request path; then its news is passed on to whoever listens.
    fn invalidate(&self, outcome: Outcome);
    /// Completes once everything queued before it has been carried out.
    fn barrier(&self) -> tokio::sync::oneshot::Receiver<()>;
}

/// Everything behind the one lock: the tree, the inodes the kernel holds, and listings built.
struct Core {
    tree: Tree,
    inodes: Inodes,
    /// Listings by directory path, with the directory generation each was built from.
    listings: Capped<String, (u64, Arc<Listing>)>,
    /// The newest `.stats` snapshot, with its generation (the number of snapshots made).
    last_snapshot: Option<(u64, Arc<inodes::Snapshot>)>,
    /// The rendered files followed.
    renders: rendered::Renders,
}

pub struct Fs<B> {
    /// This filesystem, for refreshes that must outlive the request that started them.
    me: Weak<Fs<B>>,
    backend: B,
    config: Config,
    core: Mutex<Core>,
    flights: Flights<Fetch, BackendError>,
    /// Names asked for at the same time go to AWS together.
    batcher: crate::batch::Batcher,
    health: Mutex<Health>,
    /// Whether AWS is slow now: requests that hold a value then answer at once.
    slow: slow::Slow,
    invalidator: OnceLock<Box<dyn Invalidator>>,
    stats: Arc<Stats>,
    /// One line on what the mount last did (a group refreshed, an outage), for systemd's STATUS=.
    status: tokio::sync::watch::Sender<String>,
    mounted_at: SystemTime,
    /// Where background refreshes run (refresh ahead, from the FUSE threads).
    runtime: OnceLock<tokio::runtime::Handle>,
    /// The thread that raises inotify events on the mount, and the change it is raising now.
    announcer: announce::Announcer,
    /// The templates shown under `.templates`.
    templates: Mutex<Arc<crate::render::template::Templates>>,
}

impl<B: Backend> Fs<B> {
    pub fn new(backend: B, config: Config) -> Arc<Self> {
        let stats = Arc::new(Stats::new(backend.api_calls()));
        Arc::new_cyclic(|me| Fs {
            me: me.clone(),
            backend,
            config,
            core: Mutex::new(Core {
                tree: Tree::new(Instant::now()),
                inodes: Inodes::new(),
                listings: Capped::new(MAX_LISTINGS),
                last_snapshot: None,
                renders: Default::default(),
            }),
            flights: Flights::default(),
            batcher: Default::default(),
            health: Mutex::new(Health::default()),
            slow: Default::default(),
            invalidator: OnceLock::new(),
            stats,
            status: tokio::sync::watch::Sender::new(String::new()),
            mounted_at: SystemTime::now(),
            runtime: tokio::runtime::Handle::try_current()
                .map(OnceLock::from)
                .unwrap_or_default(),
            announcer: Default::default(),
            templates: Default::default(),
        })
    }

    /// The runtime background refreshes run on, for a filesystem made outside of it.
    pub fn set_runtime(&self, rt: tokio::runtime::Handle) {
        let _ = self.runtime.set(rt);
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The status line, which changes after each group refresh and at the start and end of an
    /// outage. Never holds a value.
    pub fn status(&self) -> tokio::sync::watch::Receiver<String> {
        self.status.subscribe()
    }

    /// The figures of `.stats` in the OpenMetrics text format.
    pub fn metrics(&self) -> String {
        // Rendered after the lock is released: lookups wait on it.
        let figures = self.figures(&self.core.lock().unwrap().tree);
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
        let events = self
            .config
            .events
            .max_age
            .map(|_| self.config.events.flowing());
        self.stats.figures(last_good, &groups, events)
    }

    pub fn set_invalidator(&self, inv: Box<dyn Invalidator>) {
        let _ = self.invalidator.set(inv);
    }

    fn planner(&self) -> Planner<'_> {
        Planner {
            config: &self.config,
            gets_every_name: self.backend.gets_every_name(),
            page: self.backend.page_size(),
        }
    }

    /// A lookup answered from memory, or `None` when it needs a fetch (then call `lookup`).
    pub fn lookup_now(&self, parent: Ino, name: &OsStr) -> Option<Result<Entry, Error>> {
        let clock = Clock::now(self.config.max_stale);
        let mut core = self.core.lock().unwrap();
        // A rendered file is rendered by `lookup`, which may fetch.
        match self.rendered_in(&core, parent, name) {
            Some(Err(e)) => return Some(Err(e)),
            Some(Ok(_)) => return None,
            None => {}
        }
        let plan = self.plan_lookup(&core, parent, name, clock);
        match plan {
            Plan::Done(result) => {
                Stats::bump(&self.stats.hits);
                let entry = result.and_then(|target| self.hand_out(&mut core, target));
                self.ahead_if_due(&core, parent, name, &entry);
                Some(entry)
            }
            Plan::Need(_) => None,
        }
    }

    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Entry, Error> {
        if let Some(what) = self.rendered_name(parent, name) {
            return self.lookup_rendered(what?).await;
        }
        self.answer(
            |fs, core, clock| fs.plan_lookup(core, parent, name, clock),
            |fs, core, target| {
                let entry = fs.hand_out(core, target);
                fs.ahead_if_due(core, parent, name, &entry);
                entry
            },
        )
        .await
    }

    /// Starts refreshing ahead (see the refresher) when the kernel's copy of an answer lasts
    /// no longer than the last fifth of its max age.
    fn ahead_if_due(&self, core: &Core, parent: Ino, name: &OsStr, entry: &Result<Entry, Error>) {
        // Control files never expire, and `.stats` is never kept.
        let Ok(entry) = entry else { return };
        if entry.ttl.is_zero() || entry.ttl >= STATIC_TTL {
            return;
        }
        let window = match core.inodes.node(parent) {
            Some(Node::Dir { path }) => self.config.ahead_window(path),
            _ => return,
        };
        if entry.ttl <= window {
            self.refresh_ahead(core, parent, name, window);
        }
    }

    fn plan_lookup(&self, core: &Core, parent: Ino, name: &OsStr, clock: Clock) -> Plan<Target> {
        self.planner().lookup(
            &core.tree,
            &core.inodes,
            parent,
            name,
            !clock.paged,
            |dir| clock.fresh(self.config.max_age_of(dir)),
        )
    }

    /// Hands the answer of a lookup to the kernel: the node is remembered and its reference
    /// counted under the same lock the plan was made under.
    fn hand_out(&self, core: &mut Core, target: Target) -> Result<Entry, Error> {
        // A name through a label is good only as long as what the label resolved to.
        let mut resolved = None;
        let node = match target {
            Target::Dir(path) => Node::Dir { path },
            Target::File {
                dir,
                name,
                cached,
                resolved_at,
            } => {
                resolved = resolved_at.map(|at| (dir.clone(), at));
                Node::File {
                    path: tree::join(&dir, &name).into(),
                    cached,
                }
            }
            Target::Refresh(dir) => Node::Refresh { dir },
            Target::Templates => Node::Templates,
            Target::Stats => {
                // `stat` then `open` (cp) is two lookups: the second must find the inode the
                // first did. So a snapshot no one has read yet, still held and under a second
                // old, is handed out again; any other lookup renders a new one.
                let unread = core.last_snapshot.clone().filter(|(generation, snapshot)| {
                    !snapshot.read.load(Ordering::Relaxed)
                        && snapshot.made.elapsed() < STATS_REUSE
                        && core.inodes.held(&Key::Stats(*generation)).is_some()
                });
                let (generation, snapshot) = unread.unwrap_or_else(|| {
                    let generation = core.last_snapshot.as_ref().map_or(0, |(g, _)| *g) + 1;
                    let snapshot = Arc::new(inodes::Snapshot {
                        content: self.figures(&core.tree).to_json(),
                        at: SystemTime::now(),
                        made: Instant::now(),
                        read: Default::default(),
                    });
                    core.last_snapshot = Some((generation, snapshot.clone()));
                    (generation, snapshot)
                });
                Node::Stats {
                    generation,
                    snapshot,
                }
            }
        };
        let ino = core.inodes.remember(node);
        let mut entry = self.attr_of(core, ino)?;
        if let Some((dir, at)) = resolved {
            entry.ttl = entry.ttl.min(self.remaining(&dir, at, Instant::now()));
        }
        Ok(entry)
    }

    /// Attributes of an inode the kernel holds, from memory: an inode is one version of a
    /// parameter, so its attributes never change; freshness is enforced when names are looked
    /// up.
    pub fn getattr(&self, ino: Ino) -> Result<Entry, Error> {
        self.attr_of(&self.core.lock().unwrap(), ino)
    }

    fn attr_of(&self, core: &Core, ino: Ino) -> Result<Entry, Error> {
        let now = Instant::now();
        let entry = match core.inodes.node(ino).ok_or(Error::NotFound)? {
            Node::Dir { path } => {
                // A directory removed meanwhile keeps its attributes for whoever holds it; the
                // kernel was told its name is gone.
                let ttl = match core.tree.dir(path) {
                    Some(_) if path.is_empty() => STATIC_TTL,
                    Some(d) => self.kernel_ttl(path, d.seen_at, now),
                    None => Duration::ZERO,
                };
                Entry {
                    attr: self.attr(ino, Kind::Dir, 0, 0o555, self.mounted_at),
                    ttl,
                    generation: 0,
                }
            }
            Node::File { path, cached } => {
                let (dir, name) = tree::split(path);
                // The newest fetch of this same version says how long it stays valid.
                let fetched_at = core
                    .tree
                    .dir(dir)
                    .and_then(|d| d.files.get(name))
                    .filter(|c| c.same_version(&cached.param))
                    .map_or(cached.fetched_at, |c| c.fetched_at.max(cached.fetched_at));
                Entry {
                    attr: self.file_attr(ino, cached),
                    ttl: self.kernel_ttl(dir, fetched_at, now),
                    generation: 0,
                }
            }
            Node::Templates => Entry {
                attr: self.attr(ino, Kind::Dir, 0, 0o555, self.mounted_at),
                ttl: STATIC_TTL,
                generation: 0,
            },
            Node::Refresh { .. } => Entry {
                attr: self.attr(ino, Kind::File, 0, 0o200, self.mounted_at),
                ttl: STATIC_TTL,
                generation: 0,
            },
            // A zero TTL makes every open look `.stats` up again, which renders a new snapshot
            // (or hands out one no one has read yet: see `hand_out`).
            Node::Stats { snapshot, .. } => Entry {
                attr: self.attr(
                    ino,
                    Kind::File,
                    snapshot.content.len() as u64,
                    0o444,
                    snapshot.at,
                ),
                ttl: Duration::ZERO,
                generation: 0,
            },
        };
        Ok(Entry {
            generation: core.inodes.generation(ino),
            ..entry
        })
    }

    /// Content of a file from memory. Never fetches: the kernel asks for attributes first when
    /// they have expired, and that is where freshness is enforced.
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>, Error> {
        let slice = |bytes: &[u8]| {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(size as usize).min(bytes.len());
            bytes[start..end].to_vec()
        };
        let core = self.core.lock().unwrap();
        match core.inodes.node(ino) {
            Some(Node::File { cached, .. }) => match &cached.param.unreadable {
                None => Ok(slice(cached.param.content.as_bytes())),
                Some(code) => Err(Error::Backend(BackendError::AccessDenied(code.clone()))),
            },
            Some(Node::Stats { snapshot, .. }) => {
                snapshot.read.store(true, Ordering::Relaxed);
                Ok(slice(&snapshot.content))
            }
            Some(Node::Refresh { .. }) => Ok(Vec::new()),
            Some(Node::Dir { .. } | Node::Templates) => Err(Error::IsDir),
            None => Err(Error::NotFound),
        }
    }

    /// A listing answered from memory, or `None` when it needs a fetch (then call `readdir`).
    pub fn readdir_now(&self, ino: Ino, offset: u64) -> Option<Result<Entries, Error>> {
        let clock = Clock::now(self.config.max_stale);
        if let Some(listing) = self.templates_listing(ino, offset) {
            return Some(Ok(listing));
        }
        let mut core = self.core.lock().unwrap();
        match self.plan_listing(&core, ino, clock) {
            Plan::Done(result) => {
                Stats::bump(&self.stats.hits);
                let listing = result.map(|path| self.listing(&mut core, &path));
                Some(listing.map(|l| Entries::new(l, offset)))
            }
            Plan::Need(_) => None,
        }
    }

    /// The entries of a directory after `offset`, in a stable order (see [`listing`]).
    pub async fn readdir(&self, ino: Ino, offset: u64) -> Result<Entries, Error> {
        if let Some(listing) = self.templates_listing(ino, offset) {
            return Ok(listing);
        }
        let listing = self
            .answer(
                |fs, core, clock| fs.plan_listing(core, ino, clock),
                |fs, core, path| Ok(fs.listing(core, &path)),
            )
            .await?;
        Ok(Entries::new(listing, offset))
    }

    /// The listing of `.templates`, if `ino` is that directory.
    fn templates_listing(&self, ino: Ino, offset: u64) -> Option<Entries> {
        let core = self.core.lock().unwrap();
        if !matches!(core.inodes.node(ino), Some(Node::Templates)) {
            return None;
        }
        let names = self
            .templates
            .lock()
            .unwrap()
            .names()
            .map(str::to_string)
            .collect();
        let listing = listing::templates(&core.inodes, names);
        Some(Entries::new(Arc::new(listing), offset))
    }

    fn plan_listing(&self, core: &Core, ino: Ino, clock: Clock) -> Plan<String> {
        self.planner()
            .listing(&core.tree, &core.inodes, ino, |dir| {
                clock.fresh(self.config.max_age_of(dir))
            })
    }

    /// The listing of a directory the tree holds, built anew only when it changed.
    fn listing(&self, core: &mut Core, path: &str) -> Arc<Listing> {
        let generation = core.tree.dir(path).map_or(0, |d| d.generation);
        if let Some((built, listing)) = core.listings.get(path) {
            if *built == generation {
                return listing.clone();
            }
        }
        let stats_ino = core.inodes.ino_of(&Key::Stats(0));
        let listing = Arc::new(listing::build(&core.tree, &core.inodes, path, stats_ino));
        core.listings
            .put(path.to_string(), (generation, listing.clone()));
        listing
    }

    /// Extended attributes of an inode: for a parameter's file, the metadata of its version as
    /// the fetch that brought it returned it, so reading them never costs a call.
    pub fn xattrs(&self, ino: Ino) -> Result<Vec<(&'static str, Vec<u8>)>, Error> {
        let core = self.core.lock().unwrap();
        match core.inodes.node(ino) {
            Some(Node::File { cached, .. }) => Ok(cached
                .param
                .xattrs
                .iter()
                .map(|(name, value)| (*name, value.as_bytes().to_vec()))
                .collect()),
            Some(_) => Ok(Vec::new()),
            None => Err(Error::NotFound),
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.core.lock().unwrap().inodes.forget(ino, n);
    }

    /// How many inodes the kernel holds, the root included (for tests and `.stats`).
    pub fn held_inodes(&self) -> usize {
        self.core.lock().unwrap().inodes.len()
    }

    /// How long the kernel may keep knowledge from `at` about directory `dir`: until the last
    /// fifth of its validity, when the kernel asks again and the name is refreshed ahead (then
    /// for the rest of it).
    fn kernel_ttl(&self, dir: &str, at: Instant, now: Instant) -> Duration {
        let remaining = self.remaining(dir, at, now);
        let window = self.config.ahead_window(dir);
        if remaining > window {
            remaining - window
        } else {
            remaining
        }
    }

    /// How long knowledge from `at` about directory `dir` stays valid after `now`.
    fn remaining(&self, dir: &str, at: Instant, now: Instant) -> Duration {
        match at.checked_add(self.config.max_age_of(dir)) {
            Some(until) => until.saturating_duration_since(now),
            None => STATIC_TTL,
        }
    }

    fn attr(&self, ino: Ino, kind: Kind, size: u64, perm: u16, mtime: SystemTime) -> Attr {
        Attr {
            ino,
            kind,
            size,
            mtime,
            perm,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    fn file_attr(&self, ino: Ino, cached: &Cached) -> Attr {
        let p = &cached.param;
        let perm = if p.secret {
            self.config.secret_mode
        } else {
            0o444
        };
        self.attr(ino, Kind::File, p.content.len() as u64, perm, p.modified)
    }
}

#[cfg(test)]
mod tests;
