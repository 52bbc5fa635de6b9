//! Memory is bounded by what the kernel holds plus capped caches.

use super::*;

#[tokio::test]
async fn inodes_are_dropped_when_the_kernel_forgets_them_whatever_their_kind() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let before = fs.held_inodes();
    for _ in 0..1000 {
        for path in [".stats", "db", "db/.refresh", "db/password", "name:1"] {
            let ino = resolve(&fs, path).await.unwrap().attr.ino;
            fs.forget(ino, 1);
        }
    }
    // `resolve` also looked up `db` on the way to its files: forget those references too.
    let db = resolve(&fs, "db").await.unwrap().attr.ino;
    fs.forget(db, 2 * 1000 + 1);
    assert_eq!(
        fs.held_inodes(),
        before,
        "only what the kernel holds is kept"
    );
}

#[tokio::test]
async fn a_deleted_parameter_keeps_nothing_in_memory() {
    let b = sample();
    b.put("/app/name", Str, "second");
    let fs = started(&b, "/app", LONG).await;
    assert_eq!(cat(&fs, "name:1").await.unwrap(), b"demo");
    assert_eq!(fs.core.lock().unwrap().tree.cache_sizes().1, 1);
    b.delete("/app/name");
    fs.refresh("").await.unwrap();
    assert_eq!(resolve(&fs, "name:1").await.unwrap_err(), Error::NotFound);
    assert_eq!(fs.core.lock().unwrap().tree.cache_sizes(), (0, 0, 0));
}

#[tokio::test]
async fn a_long_listing_is_built_once_and_paged_without_copying() {
    let b = MemoryBackend::new();
    for i in 0..5000 {
        b.put(&format!("/flat/f{i:04}"), Str, "v");
    }
    let fs = started(&b, "/flat", LONG).await;
    let first = fs.readdir(ROOT, 0).await.unwrap();
    assert_eq!(first.len(), 5004);
    let mut offset = first[100].offset;
    let second = fs.readdir(ROOT, offset).await.unwrap();
    assert!(
        std::ptr::eq(&first[101], &second[0]),
        "the second page is the same listing"
    );
    let mut names = 101;
    while let Some(e) = fs
        .readdir_now(ROOT, offset)
        .unwrap()
        .unwrap()
        .iter()
        .take(50)
        .next_back()
    {
        offset = e.offset;
        names += 50;
    }
    assert!(names >= 5004);
}
