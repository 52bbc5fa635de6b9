//! The secret values the Secrets Manager backend holds between listings, so that a refresh in
//! which nothing changed costs the `ListSecrets` pages alone. Pure bookkeeping, no SDK: the
//! backend asks which listed secrets it must fetch, hands over what it fetched, and reports each
//! page it listed.
//!
//! Promises:
//! - A secret is reused only at the version the listing names as current; any other version is
//!   fetched again.
//! - A complete listing of a prefix (every page, from the first to the one without a token) drops
//!   the held values of the secrets below that prefix it did not show: deleted secrets do not
//!   linger. A listing abandoned part-way drops nothing, since it did not see everything.
//! - At most `cap` secrets are held; past that, the least recently used are dropped. Dropping
//!   zeroes a value once no one else holds it (see [`crate::content::Content`]).
//! - The listings in progress that are remembered are bounded too: an abandoned one is forgotten.

use std::collections::{HashMap, HashSet};

use super::Param;

/// Listings in progress remembered at once; an older one is forgotten (and so never prunes).
const MAX_SWEEPS: usize = 64;

pub(super) struct Held {
    values: HashMap<String, Slot>,
    /// Listings in progress, by (prefix, the token that continues them).
    sweeps: HashMap<(String, String), Sweep>,
    /// A counter that orders uses (of values) and starts (of listings).
    clock: u64,
    cap: usize,
}

struct Slot {
    used: u64,
    /// The entries the secret's current version makes; the first is the secret itself.
    entries: Vec<Param>,
}

struct Sweep {
    started: u64,
    /// Every name below the prefix that the listing's pages have shown so far.
    seen: HashSet<String>,
}

impl Held {
    pub(super) fn new(cap: usize) -> Self {
        Held {
            values: HashMap::new(),
            sweeps: HashMap::new(),
            clock: 0,
            cap: cap.max(1),
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Splits listed `(name, current version)` pairs into the entries held at that version and
    /// the names whose value must be fetched.
    pub(super) fn reuse<'a>(
        &mut self,
        listed: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (Vec<Param>, Vec<String>) {
        let mut params = Vec::new();
        let mut fetch = Vec::new();
        for (name, version) in listed {
            let now = self.tick();
            match self.values.get_mut(name) {
                Some(slot) if slot.entries[0].version == version => {
                    slot.used = now;
                    params.extend(slot.entries.iter().cloned());
                }
                _ => fetch.push(name.to_string()),
            }
        }
        (params, fetch)
    }

    /// Holds the entries fetched for a secret (at least one: the secret itself).
    pub(super) fn insert(&mut self, name: String, entries: Vec<Param>) {
        if entries.is_empty() {
            return;
        }
        let used = self.tick();
        self.values.insert(name, Slot { used, entries });
        while self.values.len() > self.cap {
            // Over the cap only when more secrets are listed than it allows: rare enough that a
            // scan for the least recently used one costs less than keeping an order.
            let oldest = self
                .values
                .iter()
                .min_by_key(|(_, slot)| slot.used)
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => self.values.remove(&name),
                None => break,
            };
        }
    }

    /// Records one listed page of `prefix`: `token` is the one it was asked with (`None`: the
    /// first page), `names` every secret below `prefix` it showed, `next` the token it returned.
    /// On the last page of a listing whose every page was recorded, the values of the secrets
    /// below `prefix` that it did not show are dropped.
    pub(super) fn listed<'a>(
        &mut self,
        prefix: &str,
        token: Option<&str>,
        names: impl IntoIterator<Item = &'a str>,
        next: Option<&str>,
        below: impl Fn(&str) -> bool,
    ) {
        let sweep = match token {
            None => Some(Sweep {
                started: self.tick(),
                seen: HashSet::new(),
            }),
            Some(token) => self.sweeps.remove(&(prefix.to_string(), token.to_string())),
        };
        // A page continuing a listing not remembered (forgotten, or started before a restart)
        // cannot prove anything gone.
        let Some(mut sweep) = sweep else {
            return;
        };
        sweep.seen.extend(names.into_iter().map(str::to_string));
        match next {
            Some(next) => {
                if self.sweeps.len() >= MAX_SWEEPS {
                    let oldest = self
                        .sweeps
                        .iter()
                        .min_by_key(|(_, s)| s.started)
                        .map(|(key, _)| key.clone());
                    if let Some(key) = oldest {
                        self.sweeps.remove(&key);
                    }
                }
                self.sweeps
                    .insert((prefix.to_string(), next.to_string()), sweep);
            }
            None => self
                .values
                .retain(|name, _| !below(name) || sweep.seen.contains(name)),
        }
    }

    /// Secrets whose values are held.
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Content;

    fn entry(name: &str, version: &str) -> Vec<Param> {
        vec![Param {
            name: name.to_string(),
            content: Content::from(format!("value of {name}").into_bytes()),
            version: version.to_string(),
            secret: true,
            modified: std::time::SystemTime::UNIX_EPOCH,
            xattrs: Vec::new(),
            unreadable: None,
            derived: false,
        }]
    }

    fn below_app(name: &str) -> bool {
        name.starts_with("app/")
    }

    /// Lists `names` (all at version "v1") in pages of 100 the way the backend does, fetching
    /// what is not held; returns how many values were fetched.
    fn list(held: &mut Held, names: &[String]) -> usize {
        let mut fetched = 0;
        let pages: Vec<&[String]> = names.chunks(100).collect();
        for (i, page) in pages.iter().enumerate() {
            let (_, fetch) = held.reuse(page.iter().map(|n| (n.as_str(), "v1")));
            fetched += fetch.len();
            for name in fetch {
                let entries = entry(&name, "v1");
                held.insert(name, entries);
            }
            let token = (i > 0).then(|| format!("t{i}"));
            let next = (i + 1 < pages.len()).then(|| format!("t{}", i + 1));
            held.listed(
                "app",
                token.as_deref(),
                page.iter().map(String::as_str),
                next.as_deref(),
                below_app,
            );
        }
        fetched
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("app/s{i:03}")).collect()
    }

    #[test]
    fn a_listing_of_several_pages_is_reused_whole() {
        let mut held = Held::new(10_000);
        let all = names(250);
        assert_eq!(list(&mut held, &all), 250, "cold");
        assert_eq!(list(&mut held, &all), 0, "nothing changed: nothing fetched");
        assert_eq!(held.len(), 250);
    }

    #[test]
    fn a_changed_version_is_fetched_again() {
        let mut held = Held::new(10);
        held.insert("app/a".into(), entry("app/a", "v1"));
        let (_, fetch) = held.reuse([("app/a", "v2")]);
        assert_eq!(fetch, ["app/a"]);
        let (reused, fetch) = held.reuse([("app/a", "v1")]);
        assert!(fetch.is_empty());
        assert_eq!(reused.len(), 1);
    }

    #[test]
    fn a_complete_listing_drops_what_it_did_not_show_and_nothing_else() {
        let mut held = Held::new(10_000);
        let mut all = names(150);
        list(&mut held, &all);
        held.insert("other/x".into(), entry("other/x", "v1"));
        all.remove(7);
        all.remove(120);
        assert_eq!(list(&mut held, &all), 0);
        assert_eq!(held.len(), 148 + 1, "two gone; other/x is not below app/");
        let (_, fetch) = held.reuse([("app/s007", "v1")]);
        assert_eq!(fetch, ["app/s007"], "its value was dropped");
    }

    #[test]
    fn an_abandoned_listing_drops_nothing() {
        let mut held = Held::new(10_000);
        list(&mut held, &names(150));
        // The first page only, then a page continuing a listing nobody started.
        held.listed("app", None, ["app/s000"], Some("t1"), below_app);
        held.listed("app", Some("unknown"), ["app/s001"], None, below_app);
        assert_eq!(held.len(), 150);
    }

    #[test]
    fn the_least_recently_used_go_past_the_cap() {
        let mut held = Held::new(3);
        for name in ["app/a", "app/b", "app/c"] {
            held.insert(name.into(), entry(name, "v1"));
        }
        held.reuse([("app/a", "v1")]);
        held.insert("app/d".into(), entry("app/d", "v1"));
        assert_eq!(held.len(), 3);
        let (_, fetch) = held.reuse([("app/a", "v1"), ("app/b", "v1"), ("app/d", "v1")]);
        assert_eq!(fetch, ["app/b"], "b was the least recently used");
    }

    #[test]
    fn remembered_listings_are_bounded() {
        let mut held = Held::new(10);
        for i in 0..(MAX_SWEEPS * 2) {
            held.listed("app", None, [], Some(&format!("t{i}")), below_app);
        }
        assert_eq!(held.sweeps.len(), MAX_SWEEPS);
    }
}
