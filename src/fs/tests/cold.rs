//! Reading a tree cold, file by file, on several tree shapes and in several orders: the calls
//! it costs against the floor, the pages of one recursive sweep of the tree.

use super::*;

#[path = "../../../tests/common/shapes.rs"]
mod shapes;

use shapes::{names, SHAPES};

/// Reads every file of the shape once from a fresh mount, in listing order (the backend's,
/// sorted by name) or shuffled, and returns (calls, floor).
async fn read_all(shape: &str, shuffled: bool) -> (u64, u64) {
    let b = MemoryBackend::new();
    let mut paths = names(shape);
    for p in &paths {
        b.put(&format!("/t/{p}"), Str, "v");
    }
    let fs = started(&b, "/t", LONG).await;
    paths.sort();
    if shuffled {
        fastrand::seed(7);
        fastrand::shuffle(&mut paths);
    }
    for p in &paths {
        assert_eq!(cat(&fs, p).await.unwrap(), b"v", "{p}");
    }
    (b.total_calls(), paths.len().div_ceil(10) as u64)
}

/// Reads every shape whole, in listing order or shuffled, and checks the calls against
/// `tenths` tenths of the floor.
async fn every_shape_within(shuffled: bool, tenths: u64) {
    let order = if shuffled { "shuffled" } else { "in order" };
    for shape in SHAPES {
        let (calls, floor) = read_all(shape, shuffled).await;
        println!("{shape}, {order}: {calls} calls, floor {floor}");
        assert!(
            calls * 10 <= floor * tenths,
            "{shape}, {order}: {calls} calls against a floor of {floor}"
        );
    }
}

/// Read in listing order, a tree costs its sweep's pages: the misses go on with the sweeps in
/// progress, a page at a time. A directory whose first page a probe fetched goes on with its own
/// sweep, so small directories cost a little more than their share of the tree's pages, and a
/// name in a directory where only subdirectories have been seen yet is first probed as one.
#[tokio::test]
async fn a_tree_read_in_listing_order_costs_its_sweep() {
    every_shape_within(false, 15).await;
}

/// Read at random, each miss costs at most a page and the name itself, until the pages are
/// through: about twice the floor at worst.
#[tokio::test]
async fn a_tree_read_at_random_costs_at_most_about_twice_its_sweep() {
    every_shape_within(true, 22).await;
}

/// A forced refresh lists anew: it does not finish a sweep in progress that started before it.
#[tokio::test]
async fn a_forced_refresh_does_not_finish_an_older_sweep() {
    let b = MemoryBackend::new();
    for f in 0..100 {
        b.put(&format!("/t/f{f:03}"), Str, "v");
    }
    let fs = started(&b, "/t", LONG).await;
    for f in 0..50 {
        cat(&fs, &format!("f{f:03}")).await.unwrap();
    }
    assert_eq!(b.total_calls(), 5, "the first five pages");
    b.put("/t/f000", Str, "new");
    fs.refresh("").await.unwrap();
    assert_eq!(b.total_calls(), 5 + 10, "all ten pages, anew");
    assert_eq!(cat(&fs, "f000").await.unwrap(), b"new");
}

/// A stale name in a directory known from pages is renewed once per lookup: when the renewal
/// does not bring it (it was deleted), the name itself is asked, and the lookup settles.
#[tokio::test(start_paused = true)]
async fn a_renewal_is_tried_once_per_lookup() {
    let b = MemoryBackend::new();
    for f in 0..200 {
        b.put(&format!("/t/d/f{f:03}"), Str, "v");
    }
    let fs = started(&b, "/t", Duration::from_secs(60)).await;
    for f in 0..21 {
        cat(&fs, &format!("d/f{f:03}")).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    b.delete("/t/d/f005");
    let before = b.total_calls();
    assert_eq!(resolve(&fs, "d/f005").await.unwrap_err(), Error::NotFound);
    // Three pages were known: the lookup of `d` renews it (four pages); the name's own lookup
    // goes on with that sweep (a page), then asks for the name (absent), then whether it is a
    // directory.
    assert_eq!(b.total_calls() - before, 4 + 1 + 1 + 1);
}

/// A name that is both a directory and a parameter stays a directory when only its parameter
/// was refreshed (the parameter is `NAME%`).
#[tokio::test(start_paused = true)]
async fn a_refreshed_parameter_does_not_hide_its_directory() {
    let b = MemoryBackend::new();
    for f in 0..150 {
        b.put(&format!("/t/app/f{f:03}"), Str, "v");
    }
    b.put("/t/app/db", Str, "whole");
    b.put("/t/app/db/x", Str, "x");
    let fs = started(&b, "/t", Duration::from_secs(60)).await;
    assert!(ls(&fs, "app").await.contains(&"db%".to_string()));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cat(&fs, "app/db%").await.unwrap(), b"whole");
    let entry = resolve(&fs, "app/db").await.unwrap();
    assert_eq!(entry.attr.kind, Kind::Dir);
}
