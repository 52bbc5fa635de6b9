//! Directory listings: what `readdir` shows of a directory, built once per change of the
//! directory and shared by every page the kernel asks for.
//!
//! `opendir` answers `ENOSYS` (so hot reads never reach the daemon), so there are no directory
//! handles to hold a snapshot: the kernel's offset is all a page request carries. Each entry's
//! offset is therefore its own, kept by its directory (numbered in order of first appearance,
//! kept a while after removal), and a listing is sorted by them. Promises:
//! - each name appears at most once per listing, and every name present from the first page to
//!   the last appears exactly once, whatever refreshes change meanwhile; a name added meanwhile
//!   appears after the names that were there;
//! - a page costs a binary search and the entries it returns, without the tree lock: listing N
//!   entries costs O(N log N) once per change of the directory and O(N) in pages;
//! - `.` and `..` come first, then `.stats` at the root, at fixed offsets 1 to 3.

use std::sync::Arc;

use super::inodes::{file_key, Inodes, Key, ROOT};
use super::tree::{join, split, Tree};
use crate::names::{REFRESH, STATS};

/// `.refresh`'s offset, just after the fixed entries; named entries follow (see the tree).
const REFRESH_COOKIE: u64 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// Position after this entry: the offset the kernel sends to continue after it.
    pub offset: u64,
    pub kind: Kind,
    pub name: String,
}

/// A directory's entries, sorted by offset.
#[derive(Debug)]
pub struct Listing {
    entries: Vec<DirEntry>,
}

/// The entries of a listing after an offset: what one `readdir` page may return.
#[derive(Clone, Debug)]
pub struct Entries {
    listing: Arc<Listing>,
    start: usize,
}

impl Entries {
    pub fn new(listing: Arc<Listing>, offset: u64) -> Entries {
        let start = listing.entries.partition_point(|e| e.offset <= offset);
        Entries { listing, start }
    }
}

impl std::ops::Deref for Entries {
    type Target = [DirEntry];

    fn deref(&self) -> &[DirEntry] {
        &self.listing.entries[self.start..]
    }
}

impl IntoIterator for Entries {
    type Item = DirEntry;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self)
    }
}

/// The entries of a page, by value.
pub struct IntoIter(Entries);

impl Iterator for IntoIter {
    type Item = DirEntry;

    fn next(&mut self) -> Option<DirEntry> {
        let entry = self.0.listing.entries.get(self.0.start)?.clone();
        self.0.start += 1;
        Some(entry)
    }
}

/// Builds the listing of `path` (which must be in the tree) from what the tree knows now.
/// `stats_ino`: the inode `.stats` shows at the root.
pub fn build(tree: &Tree, inodes: &Inodes, path: &str, stats_ino: u64) -> Listing {
    let dir = tree.dir(path).expect("the caller checked the directory");
    let own = inodes.ino_of(&Key::Dir(path.to_string()));
    let parent = if path.is_empty() {
        ROOT
    } else {
        inodes.ino_of(&Key::Dir(split(path).0.to_string()))
    };
    let mut entries = vec![
        DirEntry {
            ino: own,
            offset: 1,
            kind: Kind::Dir,
            name: ".".to_string(),
        },
        DirEntry {
            ino: parent,
            offset: 2,
            kind: Kind::Dir,
            name: "..".to_string(),
        },
    ];
    if path.is_empty() {
        entries.push(DirEntry {
            ino: stats_ino,
            offset: 3,
            kind: Kind::File,
            name: STATS.to_string(),
        });
    }
    let fixed = entries.len();
    entries.push(DirEntry {
        ino: inodes.ino_of(&Key::Refresh(path.to_string())),
        offset: REFRESH_COOKIE,
        kind: Kind::File,
        name: REFRESH.to_string(),
    });
    // A directory named like a control file cannot be reached: the control file answers.
    let reachable = dir
        .subdirs
        .iter()
        .filter(|name| !crate::names::is_control(name, path.is_empty()));
    for name in reachable {
        entries.push(DirEntry {
            ino: inodes.ino_of(&Key::Dir(join(path, name))),
            offset: dir.cookie(name, true).expect("every entry is numbered"),
            kind: Kind::Dir,
            name: name.clone(),
        });
    }
    for (name, cached) in &dir.files {
        entries.push(DirEntry {
            ino: inodes.ino_of(&file_key(join(path, name), cached)),
            offset: dir.cookie(name, false).expect("every entry is numbered"),
            kind: Kind::File,
            name: tree.shown_name(path, name),
        });
    }
    let named = &mut entries[fixed..];
    named.sort_by(|a, b| (a.offset, &a.name).cmp(&(b.offset, &b.name)));
    // Two names whose hashes met share a number: the later takes the next, so offsets stay
    // distinct (and stable while neither changes).
    for i in 1..named.len() {
        if named[i].offset <= named[i - 1].offset {
            named[i].offset = named[i - 1].offset + 1;
        }
    }
    Listing { entries }
}

/// The listing of `.templates`: the templates, by name, at offsets in name order (the set
/// changes only with the mount's options).
pub fn templates(inodes: &Inodes, mut names: Vec<String>) -> Listing {
    names.sort();
    let mut entries = vec![
        DirEntry {
            ino: inodes.ino_of(&Key::Templates),
            offset: 1,
            kind: Kind::Dir,
            name: ".".to_string(),
        },
        DirEntry {
            ino: ROOT,
            offset: 2,
            kind: Kind::Dir,
            name: "..".to_string(),
        },
    ];
    for (i, name) in names.into_iter().enumerate() {
        entries.push(DirEntry {
            // Each version of a rendered file is an inode of its own: this number stands for
            // the name.
            ino: inodes.ino_of(&Key::File(
                join(crate::names::TEMPLATES, &name),
                String::new(),
                std::time::SystemTime::UNIX_EPOCH,
            )),
            offset: i as u64 + 3,
            kind: Kind::File,
            name,
        });
    }
    Listing { entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_starts_after_the_offset() {
        let listing = Arc::new(Listing {
            entries: (1..=5)
                .map(|i| DirEntry {
                    ino: i,
                    offset: i * 10,
                    kind: Kind::File,
                    name: i.to_string(),
                })
                .collect(),
        });
        let names = |offset| {
            Entries::new(listing.clone(), offset)
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0).len(), 5);
        assert_eq!(names(20), ["3", "4", "5"]);
        assert_eq!(
            names(25),
            ["3", "4", "5"],
            "a vanished entry's offset still places"
        );
        assert!(names(50).is_empty());
    }
}
