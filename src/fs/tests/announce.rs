//! How the announcer's own requests are answered (see `fs::announce`).

use super::*;
use crate::fs::announce::{Stage, Staged};

fn stage(fs: &Fs<MemoryBackend>, shown: &str, staged: Staged) {
    fs.stage(Some(Stage {
        shown: shown.to_string(),
        path: shown.trim_end_matches('%').to_string(),
        staged,
    }));
}

#[tokio::test]
async fn only_the_staged_path_is_seen_differently() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let db = resolve(&fs, "db").await.unwrap().attr.ino;
    let pw = fs.core.lock().unwrap().tree.dir("db").unwrap().files["password"].clone();
    let name = |s: &str| OsStr::new(s).to_owned();

    assert!(!fs.is_announcer(0));
    fs.set_announcer(4242);
    assert!(fs.is_announcer(4242) && !fs.is_announcer(4243));

    // Nothing staged: every request is answered as for anyone.
    assert!(fs.announced_lookup(db, &name("password")).is_none());
    assert!(!fs.announced_create(db, &name("host")));
    assert!(!fs.announced_remove(db, &name("password"), false));

    // About to be made: absent for the announcer, and it may make that name alone.
    stage(&fs, "db/host", Staged::Absent);
    assert_eq!(
        fs.announced_lookup(db, &name("host")).unwrap().unwrap_err(),
        Error::NotFound
    );
    assert!(fs.announced_lookup(db, &name("user")).is_none());
    assert!(fs.announced_create(db, &name("host")));
    assert!(!fs.announced_create(db, &name("user")));
    assert!(
        !fs.announced_create(ROOT, &name("host")),
        "another directory"
    );
    assert!(!fs.announced_remove(db, &name("host"), false));

    // About to be removed: still there for the announcer, with a zero TTL, and removable.
    b.delete("/app/db/password");
    fs.refresh("").await.unwrap();
    assert_eq!(
        resolve(&fs, "db/password").await.unwrap_err(),
        Error::NotFound
    );
    stage(&fs, "db/password", Staged::File(pw.clone()));
    let entry = fs.announced_lookup(db, &name("password")).unwrap().unwrap();
    assert_eq!(entry.ttl, Duration::ZERO);
    assert_eq!(entry.attr.size, 7);
    assert!(fs.announced_remove(db, &name("password"), false));
    assert!(
        !fs.announced_remove(db, &name("password"), true),
        "not a directory"
    );
    assert!(!fs.announced_remove(db, &name("user"), false));
    assert!(!fs.announced_create(db, &name("password")));
    fs.stage(None);
    assert!(fs.announced_lookup(db, &name("password")).is_none());
}

#[tokio::test]
async fn a_removed_directory_is_there_for_the_announcer_while_it_removes_what_was_in_it() {
    let b = sample();
    b.put("/app/gone/deep/x", Str, "1");
    let fs = started(&b, "/app", LONG).await;
    let x = fs.core.lock().unwrap().tree.dir("gone/deep").unwrap().files["x"].clone();
    b.delete("/app/gone/deep/x");
    fs.refresh("").await.unwrap();
    fs.set_announcer(4242);
    stage(&fs, "gone/deep/x", Staged::File(x));
    let gone = fs
        .announced_lookup(ROOT, OsStr::new("gone"))
        .unwrap()
        .unwrap();
    assert_eq!((gone.attr.kind, gone.ttl), (Kind::Dir, Duration::ZERO));
    let deep = fs
        .announced_lookup(gone.attr.ino, OsStr::new("deep"))
        .unwrap()
        .unwrap();
    let file = fs
        .announced_lookup(deep.attr.ino, OsStr::new("x"))
        .unwrap()
        .unwrap();
    assert_eq!(file.attr.kind, Kind::File);
    assert!(fs.announced_remove(deep.attr.ino, OsStr::new("x"), false));
    // A directory the announcer removes is a new inode to the kernel if it comes back.
    stage(&fs, "gone/deep", Staged::Dir);
    assert!(fs.announced_remove(gone.attr.ino, OsStr::new("deep"), true));
    assert_eq!(
        fs.getattr(deep.attr.ino).unwrap().generation,
        deep.generation + 1
    );
    // A directory that exists is looked up as for anyone.
    assert!(fs.announced_lookup(ROOT, OsStr::new("db")).is_none());
}

#[tokio::test]
async fn the_announcer_may_truncate_only_its_staged_file_to_its_own_size() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let pw = resolve(&fs, "db/password").await.unwrap().attr.ino;
    let name = resolve(&fs, "name").await.unwrap().attr.ino;
    fs.set_announcer(4242);
    assert_eq!(
        fs.announced_truncate(pw, 7).unwrap_err(),
        Error::ReadOnly,
        "not staged"
    );
    stage(&fs, "db/password", Staged::Written);
    assert_eq!(fs.announced_truncate(pw, 7).unwrap().attr.size, 7);
    assert_eq!(
        fs.announced_truncate(pw, 0).unwrap_err(),
        Error::ReadOnly,
        "another size"
    );
    assert_eq!(
        fs.announced_truncate(name, 4).unwrap_err(),
        Error::ReadOnly,
        "another file"
    );
    assert_eq!(cat(&fs, "db/password").await.unwrap(), b"hunter2");
}

#[tokio::test]
async fn the_announcer_makes_no_call_whatever_the_max_age() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    let calls = b.total_calls();
    let db = fs.lookup_held(ROOT, OsStr::new("db")).unwrap();
    assert_eq!(db.attr.kind, Kind::Dir);
    let pw = fs.lookup_held(db.attr.ino, OsStr::new("password")).unwrap();
    assert_eq!(pw.attr.size, 7);
    assert_eq!(
        fs.lookup_held(ROOT, OsStr::new("unknown")).unwrap_err(),
        Error::NotFound
    );
    assert_eq!(b.total_calls(), calls, "all from what is held, however old");
}
