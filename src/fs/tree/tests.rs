//! Unit tests of the tree: stamps decide, whatever order results land in.

use super::*;
use crate::names::Source;
use std::time::Duration;

fn param(name: &str, value: &str, derived: bool) -> Param {
    Param {
        derived,
        ..Param::test(name, value, 1)
    }
}

fn any_age() -> Fresh {
    Fresh {
        after: None,
        since: Instant::now(),
    }
}

#[test]
fn a_recursive_refresh_covers_the_groups_below_and_a_one_level_one_does_not() {
    let t0 = Instant::now();
    let mut tree = Tree::new(t0);
    let t1 = t0 + Duration::from_secs(1);
    tree.group_refreshed("a/b", true, 2, t0);
    tree.group_refreshed("ab", true, 1, t0);
    tree.group_refreshed("a", false, 3, t1);
    let groups: Vec<_> = tree.groups().map(|(g, _, _)| g.to_string()).collect();
    assert_eq!(groups, ["a", "a/b", "ab"]);
    tree.group_refreshed("a", true, 5, t1);
    let groups: Vec<_> = tree.groups().collect();
    assert_eq!(groups, [("a", t1, 5), ("ab", t0, 1)]);
    // A listing that started earlier does not overwrite a later one.
    tree.group_refreshed("a", true, 4, t0);
    assert_eq!(tree.groups().next(), Some(("a", t1, 5)));
    tree.group_refreshed("", true, 9, t1);
    assert_eq!(tree.groups().collect::<Vec<_>>(), [("", t1, 9)]);
}

#[test]
fn a_real_secret_wins_over_a_json_key_of_the_same_name() {
    let source: Source = "sm:prod".parse().unwrap();
    for order in [[true, false], [false, true]] {
        let mut tree = Tree::new(Instant::now());
        let params = order
            .iter()
            .map(|derived| {
                let value = if *derived { "from json" } else { "real" };
                param("prod/db/password", value, *derived)
            })
            .collect();
        tree.apply_sweep("", params, &source, Instant::now());
        let file = tree.file("db", "password", any_age()).unwrap().unwrap();
        assert_eq!(file.param.content.as_bytes(), b"real");
        tree.apply_seen(
            vec![param("prod/db/password", "json again", true)],
            &source,
            Instant::now(),
        );
        let file = tree.file("db", "password", any_age()).unwrap().unwrap();
        assert_eq!(file.param.content.as_bytes(), b"real");
    }
}

/// Defect: a sweep of a parent that started before, and landed after, a newer sweep of a child
/// removed the directory the newer sweep saw.
#[test]
fn an_older_sweep_of_a_parent_never_removes_what_a_newer_sweep_saw() {
    let source: Source = "/app".parse().unwrap();
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut tree = Tree::new(t0);
    // The child's sweep started later (t1) and saw /app/new/x; it lands first.
    tree.apply_sweep("new", vec![param("/app/new/x", "v", false)], &source, t1);
    // The parent's sweep started earlier (t0), before /app/new existed, and lands now.
    tree.apply_sweep("", vec![param("/app/old", "v", false)], &source, t0);
    assert_eq!(tree.is_dir("", "new", any_age()), Some(true));
    assert!(tree.file("new", "x", any_age()).unwrap().is_some());
    assert!(tree.file("", "old", any_age()).unwrap().is_some());
}

#[test]
fn an_older_answer_never_replaces_a_newer_one() {
    let source: Source = "/app".parse().unwrap();
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut tree = Tree::new(t0);
    // A newer get found the parameter gone; an older sweep that still saw it lands after.
    tree.apply_sweep("", vec![param("/app/a", "v", false)], &source, t0);
    tree.apply_get("", "a", None, t1);
    tree.apply_sweep("", vec![param("/app/a", "v", false)], &source, t0);
    assert!(tree.file("", "a", any_age()).unwrap().is_none());
    // A newer get found a parameter that an older listing did not show.
    let t2 = t1 + Duration::from_secs(1);
    let t3 = t2 + Duration::from_secs(1);
    let mut b = param("/app/b", "v", false);
    b.version = "2".into();
    tree.apply_get("", "b", Some(b), t3);
    tree.apply_files("", Vec::new(), &source, t2);
    let b = tree.file("", "b", any_age()).unwrap().unwrap();
    assert_eq!(b.param.version, "2");
    // A probe that found a directory absent, older than a sweep that saw it, changes nothing.
    tree.apply_sweep("d", vec![param("/app/d/x", "v", false)], &source, t3);
    tree.apply_not_dir("d", t2);
    assert_eq!(tree.is_dir("", "d", any_age()), Some(true));
}

#[test]
fn deleted_parameters_take_their_pinned_versions_with_them() {
    let source: Source = "/app".parse().unwrap();
    let t0 = Instant::now();
    let mut tree = Tree::new(t0);
    tree.apply_sweep("", vec![param("/app/a", "v", false)], &source, t0);
    let mut old = param("/app/a", "old", false);
    old.version = "0".into();
    tree.apply_pinned("", "a", "0", Some(old), t0);
    assert_eq!(tree.cache_sizes().1, 1);
    tree.apply_sweep("", Vec::new(), &source, t0 + Duration::from_secs(1));
    assert_eq!(tree.cache_sizes(), (0, 0, 0), "nothing of /app/a is left");
}

#[test]
fn names_found_absent_are_capped() {
    let mut tree = Tree::new(Instant::now());
    for i in 0..(MAX_NEGATIVE + 100) {
        tree.apply_get("", &format!("n{i}"), None, Instant::now());
    }
    assert_eq!(tree.cache_sizes().0, MAX_NEGATIVE);
}

/// Review finding: a directory kept because something newer saw it took the older sweep's
/// listing stamp, so names created meanwhile read as absent.
#[test]
fn a_directory_kept_from_an_older_sweep_is_not_marked_listed() {
    let source: Source = "/app".parse().unwrap();
    let t1 = Instant::now();
    let t2 = t1 + Duration::from_secs(1);
    let mut tree = Tree::new(t1);
    tree.apply_get("a", "x", Some(param("/app/a/x", "v", false)), t2);
    tree.apply_sweep("", vec![param("/app/r", "v", false)], &source, t1);
    let a = tree.dir("a").expect("kept: seen at t2");
    assert_eq!((a.listed_at, a.files_at), (None, None));
    assert!(
        tree.file("a", "y", any_age()).is_none(),
        "a/y is unknown, not absent"
    );
    assert!(tree.file("a", "x", any_age()).unwrap().is_some());
}

/// Review finding: a parameter deleted and made anew restarts at version 1; it is a change.
#[test]
fn a_parameter_made_anew_at_the_same_version_is_a_change() {
    let source: Source = "/app".parse().unwrap();
    let t0 = Instant::now();
    let mut tree = Tree::new(t0);
    tree.apply_sweep("", vec![param("/app/a", "old", false)], &source, t0);
    let mut anew = param("/app/a", "new", false);
    anew.modified += Duration::from_secs(60);
    let changes = tree.apply_sweep("", vec![anew], &source, t0 + Duration::from_secs(1));
    assert!(changes.iter().any(|c| c.dir.is_empty() && c.name == "a"));
    let a = tree.file("", "a", any_age()).unwrap().unwrap();
    assert_eq!(a.param.content.as_bytes(), b"new");
}

#[test]
fn a_deleted_parameter_invalidates_its_selector_names() {
    let source: Source = "/app".parse().unwrap();
    let t0 = Instant::now();
    let mut tree = Tree::new(t0);
    tree.apply_sweep("", vec![param("/app/a", "v", false)], &source, t0);
    tree.apply_pinned("", "a", "prod", Some(param("/app/a", "v", false)), t0);
    let changes = tree.apply_sweep("", Vec::new(), &source, t0 + Duration::from_secs(1));
    assert!(changes.iter().any(|c| c.name == "a:prod"), "{changes:?}");
}

#[test]
fn a_label_fetch_older_than_a_forced_refresh_is_not_kept() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut tree = Tree::new(t0);
    tree.forget_selectors("", t1);
    tree.apply_pinned("", "a", "prod", Some(param("/app/a", "v", false)), t0);
    assert!(tree.selector("", "a", "prod").is_none());
    tree.apply_pinned("", "a", "prod", Some(param("/app/a", "v", false)), t1);
    assert!(tree.selector("", "a", "prod").is_some());
}

#[test]
fn a_directory_made_anew_numbers_its_entries_after_everything_before() {
    let source: Source = "/app".parse().unwrap();
    let t0 = Instant::now();
    let mut tree = Tree::new(t0);
    tree.apply_sweep("a", vec![param("/app/a/x", "v", false)], &source, t0);
    let before = tree.dir("a").unwrap().cookie("x", false).unwrap();
    tree.apply_sweep("a", Vec::new(), &source, t0 + Duration::from_secs(1));
    tree.apply_sweep(
        "a",
        vec![param("/app/a/y", "v", false)],
        &source,
        t0 + Duration::from_secs(2),
    );
    let after = tree.dir("a").unwrap().cookie("y", false).unwrap();
    assert!(after > before, "a listing in progress never goes back");
}
