//! The tree against a reference model (proptest): fetch results of a changing truth, applied
//! in random order, leave the tree as if each path had been decided by the newest fetch that
//! covered it. Checked after every step: never backwards, the directory structure is whole, and
//! each name appears once per listing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::fs::inodes::Inodes;
use crate::fs::listing;
use crate::names::Source;

/// Parameter paths under the source: a parameter may also be a directory (`a`, `a/b`).
const PATHS: [&str; 10] = [
    "r", "a", "a/x", "a/y", "a/b", "a/b/z", "a/b/w", "c/x", "c/d/e/f", "c/d/g",
];
/// Directories fetches are aimed at, one of which never exists.
const DIRS: [&str; 7] = ["", "a", "a/b", "c", "c/d", "c/d/e", "q"];
/// How many truths (states of AWS over time) a case has.
const TRUTHS: usize = 5;

#[derive(Clone, Debug)]
enum Op {
    Sweep(usize),
    Files(usize),
    Get(usize),
    Seen(Vec<usize>),
}

/// A fetch of truth `k`, which started at instant k.
#[derive(Clone, Debug)]
struct Fetch {
    op: Op,
    k: usize,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..DIRS.len()).prop_map(Op::Sweep),
        (0..DIRS.len()).prop_map(Op::Files),
        (0..PATHS.len()).prop_map(Op::Get),
        proptest::collection::vec(0..PATHS.len(), 1..4).prop_map(Op::Seen),
    ]
}

fn param(path: &str, k: usize) -> Param {
    Param::test(&format!("/app/{path}"), &format!("value {k}"), k as u64)
}

fn under(top: &str, path: &str) -> bool {
    top.is_empty() || path.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

/// The paths a fetch answers for, and the truth's parameters it returns.
fn answer(op: &Op, truth: &BTreeSet<&'static str>) -> (Vec<&'static str>, Vec<&'static str>) {
    let covered: Vec<&str> = match op {
        Op::Sweep(d) => PATHS
            .iter()
            .copied()
            .filter(|p| under(DIRS[*d], p))
            .collect(),
        Op::Files(d) => PATHS
            .iter()
            .copied()
            .filter(|p| split(p).0 == DIRS[*d])
            .collect(),
        Op::Get(i) => vec![PATHS[*i]],
        Op::Seen(is) => is
            .iter()
            .map(|i| PATHS[*i])
            .filter(|p| truth.contains(p))
            .collect(),
    };
    let returned = covered
        .iter()
        .copied()
        .filter(|p| truth.contains(p))
        .collect();
    (covered, returned)
}

fn check_structure(tree: &Tree) {
    for (path, d) in tree.dirs() {
        if !path.is_empty() {
            let (parent, name) = split(path);
            let p = tree.dir(parent).expect("a directory's parent exists");
            assert!(p.subdirs.contains(name), "{parent} lists {name}");
            assert!(p.seen_at >= d.seen_at, "seen_at grows towards the root");
        }
        for name in &d.subdirs {
            assert!(
                tree.dir(&join(path, name)).is_some(),
                "{path}/{name} exists"
            );
        }
        let listing = listing::build(tree, &Inodes::new(), path, 0);
        let entries = listing::Entries::new(Arc::new(listing), 0);
        let names: BTreeSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names.len(), entries.len(), "each name once in {path:?}");
        assert!(
            entries.windows(2).all(|w| w[0].offset < w[1].offset),
            "offsets grow in {path:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn results_in_any_order_end_as_in_start_order(
        truths in proptest::collection::vec(proptest::collection::vec(any::<bool>(), PATHS.len()), TRUTHS),
        fetches in proptest::collection::vec((op(), 0..TRUTHS), 1..20),
    ) {
        let source: Source = "/app".parse().unwrap();
        let truths: Vec<BTreeSet<&'static str>> = truths
            .iter()
            .map(|present| PATHS.iter().zip(present).filter(|(_, p)| **p).map(|(n, _)| *n).collect())
            .collect();
        let t0 = Instant::now();
        let at = |k: usize| t0 + Duration::from_secs(1 + k as u64);
        let mut tree = Tree::new(t0);
        // The newest fetch that answered for each path, by path.
        let mut decided: BTreeMap<&str, usize> = BTreeMap::new();
        for (op, k) in fetches {
            let fetch = Fetch { op, k };
            let truth = &truths[fetch.k];
            let (covered, returned) = answer(&fetch.op, truth);
            let params: Vec<Param> = returned.iter().map(|p| param(p, fetch.k)).collect();
            let applies = match &fetch.op {
                Op::Sweep(d) => {
                    tree.apply_sweep(DIRS[*d], params, &source, at(fetch.k));
                    true
                }
                Op::Files(d) => {
                    // A one-level listing of a directory the tree does not hold is dropped.
                    let known = tree.dir(DIRS[*d]).is_some();
                    tree.apply_files(DIRS[*d], params, &source, at(fetch.k));
                    known
                }
                Op::Get(i) => {
                    let (dir, name) = split(PATHS[*i]);
                    tree.apply_get(dir, name, params.into_iter().next(), at(fetch.k));
                    true
                }
                Op::Seen(_) => {
                    tree.apply_seen(params, &source, at(fetch.k));
                    true
                }
            };
            if applies {
                for p in covered {
                    let k = decided.entry(p).or_insert(fetch.k);
                    *k = (*k).max(fetch.k);
                }
            }
            check_structure(&tree);
            for path in PATHS {
                let (dir, name) = split(path);
                let held = tree.dir(dir).and_then(|d| d.files.get(name)).map(|c| c.param.version.clone());
                let expected = decided
                    .get(path)
                    .filter(|k| truths[**k].contains(path))
                    .map(|k| k.to_string());
                let any_age = Fresh { after: None, since: at(TRUTHS) };
                let known_absent = matches!(tree.file(dir, name, any_age), Some(None));
                prop_assert!(!(known_absent && expected.is_some()), "{} said absent after {:?}", path, fetch);
                prop_assert_eq!(held, expected, "{} after {:?}", path, fetch);
            }
        }
    }
}
