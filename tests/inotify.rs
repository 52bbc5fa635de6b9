//! inotify: programs watching the mount hear of changes from AWS, as `inotifywait` shows them.
//! Needs inotify-tools (scripts/setup installs it).

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use common::watch::Watch;
use common::{Moto, Mount};

fn seeded() -> Moto {
    let moto = Moto::start();
    moto.put("/app/db/password", "SecureString", "hunter2");
    moto.put("/app/db/user", "String", "app");
    moto.put("/app/name", "String", "demo");
    moto.put("/app/deep/a/b/leaf", "String", "one");
    moto
}

fn p(m: &Mount, rel: &str) -> String {
    m.path(rel).display().to_string()
}

#[test]
fn a_changed_value_is_a_modify_and_a_watched_file_hears_it_was_replaced() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    assert_eq!(m.read("db/password"), b"hunter2");
    let mut dir = Watch::start(&[], &[&m.path("db")]);
    let mut file = Watch::start(&[], &[&m.path("db/password")]);
    moto.put("/app/db/password", "SecureString", "rotated");
    m.refresh("").unwrap();
    let seen = dir.expect(&["CLOSE_WRITE", &p(&m, "db/password")]);
    assert!(
        seen.iter()
            .any(|l| l.starts_with("MODIFY ") && l.ends_with("/db/password")),
        "{seen:?}"
    );
    file.expect(&["DELETE_SELF"]);
    assert_eq!(m.read("db/password"), b"rotated");
    // The count follows the step the watchers saw end: read it until it does (bounded).
    let start = std::time::Instant::now();
    while m.stats()["changes_announced"] != 1 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.stats()["changes_announced"], 1);
}

#[test]
fn new_parameters_and_directories_are_created_and_deleted_ones_deleted() {
    let moto = seeded();
    moto.put("/app/old/x", "String", "1");
    let m = Mount::start(&moto, "/app", &[]);
    let mut w = Watch::start(&["-r"], &[&m.path("")]);
    let mut user = Watch::start(&[], &[&m.path("db/user")]);
    moto.put("/app/db/host", "String", "db.example");
    moto.delete("/app/db/user");
    moto.put("/app/cache/host", "String", "redis");
    moto.delete("/app/old/x");
    m.refresh("").unwrap();
    // Removals come first, deepest first; then what appeared, parents first.
    w.expect(&["DELETE", &p(&m, "old/x")]);
    w.expect(&["DELETE,ISDIR", &p(&m, "old")]);
    w.expect(&["DELETE", &p(&m, "db/user")]);
    w.expect(&["CREATE,ISDIR", &p(&m, "cache")]);
    w.expect(&["CREATE", &p(&m, "db/host")]);
    user.expect(&["DELETE_SELF"]);
    assert_eq!(m.read("db/host"), b"db.example");
    assert_eq!(m.read("cache/host"), b"redis");
    assert!(!m.path("db/user").exists());
    assert!(!m.path("old").exists());
    assert_eq!(m.ls("db"), [".refresh", "host", "password"]);
}

#[test]
fn a_change_deep_in_a_subdirectory_reaches_a_recursive_watch() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "1"]);
    assert_eq!(m.read("deep/a/b/leaf"), b"one");
    let mut w = Watch::start(&["-r"], &[&m.path("")]);
    moto.put("/app/deep/a/b/leaf", "String", "two");
    // No forced refresh: once the max age has run out, a read brings the change.
    std::thread::sleep(Duration::from_millis(1200));
    m.read("deep/a/b/leaf");
    w.expect(&["MODIFY", &p(&m, "deep/a/b/leaf")]);
    assert_eq!(m.read("deep/a/b/leaf"), b"two");
}

#[test]
fn a_reader_keeps_its_version_while_watchers_hear_of_the_new_one() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    let mut reader = std::fs::File::open(m.path("name")).unwrap();
    let mut w = Watch::start(&[], &[&m.path("")]);
    moto.put("/app/name", "String", "a longer new value");
    m.refresh("").unwrap();
    w.expect(&["MODIFY", &p(&m, "name")]);
    let mut old = String::new();
    std::io::Read::read_to_string(&mut reader, &mut old).unwrap();
    assert_eq!(old, "demo", "an open file keeps the version it opened");
    assert_eq!(m.read("name"), b"a longer new value");
}

#[test]
fn programs_cannot_raise_events_or_change_anything() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    let refused = |r: std::io::Result<()>| {
        let err = r.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    };
    // What the announcer does, tried by anyone else.
    let name = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(m.path("name"))
        .unwrap();
    refused(name.set_len(4));
    refused(std::fs::remove_file(m.path("name")));
    refused(std::fs::create_dir(m.path("new")));
    refused(std::fs::remove_dir(m.path("db")));
    let node = std::ffi::CString::new(p(&m, "node")).unwrap();
    // SAFETY: mknod with a valid path and a regular file type.
    let made = unsafe { libc::mknod(node.as_ptr(), libc::S_IFREG | 0o444, 0) };
    assert_eq!(made, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS)
    );
    assert_eq!(m.read("name"), b"demo");
    assert_eq!(m.ls("db"), [".refresh", "password", "user"]);
    assert_eq!(m.stats()["changes_announced"], 0);
}

#[test]
fn with_poll_a_watcher_hears_of_a_change_though_nothing_reads() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "1", "--poll"]);
    let mut w = Watch::start(&["-r"], &[&m.path("")]);
    moto.put("/app/db/user", "String", "changed");
    w.expect(&["MODIFY", &p(&m, "db/user")]);
}

#[test]
fn a_directory_removed_while_held_comes_back_whole() {
    let moto = seeded();
    moto.put("/app/sub/a", "String", "1");
    let m = Mount::start(&moto, "/app", &[]);
    // A process holds the directory (a shell in it would): its inode outlives the name.
    let held = std::fs::File::open(m.path("sub")).unwrap();
    let mut w = Watch::start(&[], &[&m.path("")]);
    moto.delete("/app/sub/a");
    m.refresh("").unwrap();
    w.expect(&["DELETE,ISDIR", &p(&m, "sub")]);
    moto.put("/app/sub/b", "String", "2");
    m.refresh("").unwrap();
    w.expect(&["CREATE,ISDIR", &p(&m, "sub")]);
    assert_eq!(m.ls("sub"), [".refresh", "b"]);
    assert_eq!(m.read("sub/b"), b"2");
    drop(held);
}
