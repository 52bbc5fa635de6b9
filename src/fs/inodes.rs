//! The inode table: the inode numbers handed to the kernel, what each stands for, and how many
//! references the kernel holds.
//!
//! Promises:
//! - an inode number names one node (a directory, one version of a parameter, a control file,
//!   one `.stats` snapshot) for as long as the kernel holds it, and a node has one number while
//!   it is held; a held file node carries its version's content, so what the kernel caches for
//!   an inode never changes and reads of a held inode never fail, whatever refreshes do;
//! - a node is remembered and its reference counted in one step, under the caller's lock, so no
//!   refresh can come between resolving a name and the kernel holding the answer;
//! - nodes are dropped when the kernel forgets them, whatever their kind (the root excepted):
//!   the table holds what the kernel holds, nothing more;
//! - a node not held by the kernel already has the number it will get when looked up (a hash of
//!   its identity), so listings and `stat` agree on inode numbers without remembering anything.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use super::tree::Cached;

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// Numbers handed out are in [FIRST, FIRST + SPAN): above the root, and small enough for any
/// program that keeps them in 64 bits.
const FIRST: u64 = 2;
const SPAN: u64 = 1 << 48;

/// A rendered `.stats` document and when it was rendered.
#[derive(Debug)]
pub struct Snapshot {
    pub content: Vec<u8>,
    pub at: SystemTime,
    pub made: tokio::time::Instant,
    /// Whether the kernel has read it: until then a lookup may hand it out again.
    pub read: std::sync::atomic::AtomicBool,
}

/// What an inode is. Its identity, for numbering, is its [`Key`].
#[derive(Clone, Debug)]
pub enum Node {
    Dir {
        path: String,
    },
    /// One version of a parameter at `path` (mount-relative), with its content.
    File {
        path: Box<str>,
        cached: Arc<Cached>,
    },
    Refresh {
        dir: String,
    },
    /// `.templates`, the directory of rendered templates.
    Templates,
    /// One snapshot of `.stats`: a lookup makes a new one unless the last is unread (see
    /// `Fs::hand_out`), so that what the kernel caches for an inode never changes.
    Stats {
        generation: u64,
        snapshot: Arc<Snapshot>,
    },
}

/// The identity of a node. A parameter version is its path, version and modification time (SSM
/// numbers versions from 1 again when a parameter is deleted and made anew).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Dir(String),
    File(String, String, SystemTime),
    Refresh(String),
    Templates,
    Stats(u64),
}

impl Node {
    pub fn key(&self) -> Key {
        match self {
            Node::Dir { path } => Key::Dir(path.clone()),
            Node::File { path, cached } => file_key(path.to_string(), cached),
            Node::Refresh { dir } => Key::Refresh(dir.clone()),
            Node::Templates => Key::Templates,
            Node::Stats { generation, .. } => Key::Stats(*generation),
        }
    }
}

/// The identity of the version `cached` of the parameter at `path`.
pub fn file_key(path: String, cached: &Cached) -> Key {
    Key::File(path, cached.param.version.clone(), cached.param.modified)
}

/// (The node's identity is kept once, as the key of `by_key`.)
struct Slot {
    node: Node,
    /// References the kernel holds (lookups not yet forgotten).
    lookups: u64,
    /// Moves on when the node is retired (see [`Inodes::retire`]).
    generation: u64,
}

pub struct Inodes {
    slots: HashMap<Ino, Slot>,
    by_key: HashMap<Key, Ino>,
}

impl Default for Inodes {
    fn default() -> Self {
        Self::new()
    }
}

impl Inodes {
    pub fn new() -> Inodes {
        let root = Node::Dir {
            path: String::new(),
        };
        let mut by_key = HashMap::new();
        by_key.insert(root.key(), ROOT);
        let mut slots = HashMap::new();
        slots.insert(
            ROOT,
            Slot {
                node: root,
                lookups: 1,
                generation: 0,
            },
        );
        Inodes { slots, by_key }
    }

    pub fn node(&self, ino: Ino) -> Option<&Node> {
        self.slots.get(&ino).map(|s| &s.node)
    }

    /// How many nodes the kernel holds (the root included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The number a node has, or will get when it is looked up.
    pub fn ino_of(&self, key: &Key) -> Ino {
        self.by_key.get(key).copied().unwrap_or_else(|| hashed(key))
    }

    /// The number of a node the kernel holds.
    pub fn held(&self, key: &Key) -> Option<Ino> {
        self.by_key.get(key).copied()
    }

    /// Hands `node` to the kernel: returns its number and counts one reference. A node already
    /// held keeps its number and takes the newer fetch (same version, same content).
    pub fn remember(&mut self, node: Node) -> Ino {
        let key = node.key();
        if let Some(ino) = self.by_key.get(&key) {
            let slot = self.slots.get_mut(ino).expect("by_key names slots");
            slot.lookups = slot.lookups.saturating_add(1);
            if *ino != ROOT {
                slot.node = node;
            }
            return *ino;
        }
        let mut ino = hashed(&key);
        while self.slots.contains_key(&ino) {
            // Two identities with one hash: the later one takes the next free number.
            ino = FIRST + (ino - FIRST + 1) % SPAN;
        }
        self.by_key.insert(key, ino);
        self.slots.insert(
            ino,
            Slot {
                node,
                lookups: 1,
                generation: 0,
            },
        );
        ino
    }

    /// The generation of a node the kernel holds (0 for any other).
    pub fn generation(&self, ino: Ino) -> u64 {
        self.slots.get(&ino).map_or(0, |s| s.generation)
    }

    /// A directory the kernel was told is removed (`rmdir`) marks its inode dead, and an
    /// inode of that number handed out again would be a dead directory to whoever looks the
    /// name up next. A new generation makes the kernel take it for another inode, while the
    /// old one keeps answering whoever still holds it.
    pub fn retire(&mut self, key: &Key) {
        if let Some(slot) = self.by_key.get(key).and_then(|ino| self.slots.get_mut(ino)) {
            slot.generation += 1;
        }
    }

    /// The kernel dropped `n` references to `ino`; at none, the node is dropped (for a file,
    /// with its version's content unless the tree still holds it).
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(slot) = self.slots.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups == 0 {
            let slot = self.slots.remove(&ino).expect("just seen");
            self.by_key.remove(&slot.node.key());
        }
    }
}

fn hashed(key: &Key) -> Ino {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    match key {
        Key::Dir(path) if path.is_empty() => ROOT,
        _ => FIRST + h.finish() % SPAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(path: &str) -> Node {
        Node::Dir {
            path: path.to_string(),
        }
    }

    #[test]
    fn a_node_is_dropped_when_the_kernel_forgets_it() {
        let mut inodes = Inodes::new();
        let a = inodes.remember(dir("a"));
        assert_eq!(inodes.remember(dir("a")), a, "one node, one number");
        assert_eq!(inodes.ino_of(&Key::Dir("a".into())), a);
        inodes.forget(a, 1);
        assert!(inodes.node(a).is_some(), "one reference left");
        inodes.forget(a, 1);
        assert!(inodes.node(a).is_none());
        assert_eq!(inodes.len(), 1, "only the root is left");
        assert_eq!(
            inodes.ino_of(&Key::Dir("a".into())),
            a,
            "a node gets the same number again"
        );
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut inodes = Inodes::new();
        inodes.forget(ROOT, 100);
        assert!(matches!(inodes.node(ROOT), Some(Node::Dir { path }) if path.is_empty()));
        assert_eq!(inodes.remember(dir("")), ROOT);
    }

    #[test]
    fn colliding_hashes_get_distinct_numbers() {
        let mut inodes = Inodes::new();
        let a = inodes.remember(dir("a"));
        // Plant another identity on a's number, as a hash collision would.
        let b_key = Key::Dir("b".into());
        inodes.slots.remove(&a);
        inodes.by_key.remove(&Key::Dir("a".into()));
        inodes.slots.insert(
            a,
            Slot {
                node: dir("b"),
                lookups: 1,
                generation: 0,
            },
        );
        inodes.by_key.insert(b_key, a);
        let again = inodes.remember(dir("a"));
        assert_ne!(again, a);
        assert!(matches!(inodes.node(again), Some(Node::Dir { path }) if path == "a"));
        assert!(matches!(inodes.node(a), Some(Node::Dir { path }) if path == "b"));
    }

    proptest::proptest! {
        /// Whatever the kernel remembers and forgets: an inode names one node while held, a
        /// held node keeps its number, and only held nodes (and the root) are kept.
        #[test]
        fn an_inode_never_names_two_nodes(
            ops in proptest::collection::vec((0usize..6, 0u64..3, proptest::bool::ANY), 1..200)
        ) {
            let dirs = ["a", "b", "a/b", "c", "d", "e"];
            let mut inodes = Inodes::new();
            let mut held: HashMap<&str, (Ino, u64)> = HashMap::new();
            for (i, n, remember) in ops {
                let path = dirs[i];
                if remember {
                    let ino = inodes.remember(dir(path));
                    let entry = held.entry(path).or_insert((ino, 0));
                    proptest::prop_assert_eq!(entry.0, ino, "a held node keeps its number");
                    entry.1 += 1;
                } else if let Some((ino, count)) = held.get(path).copied() {
                    inodes.forget(ino, n);
                    if count <= n {
                        held.remove(path);
                    } else {
                        held.insert(path, (ino, count - n));
                    }
                }
                proptest::prop_assert_eq!(inodes.len(), held.len() + 1);
                let mut numbers: Vec<Ino> = held.values().map(|(ino, _)| *ino).collect();
                numbers.sort();
                numbers.dedup();
                proptest::prop_assert_eq!(numbers.len(), held.len(), "one number, one node");
                for (path, (ino, _)) in &held {
                    let named = matches!(inodes.node(*ino), Some(Node::Dir { path: p }) if p == path);
                    proptest::prop_assert!(named, "{} names {}", ino, path);
                }
            }
        }
    }
}
