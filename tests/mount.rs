//! Integration tests: real mounts of ssmfs over a real moto server.

mod common;

use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Moto, Mount};

fn seeded() -> Moto {
    let moto = Moto::start();
    moto.put("/app/db/password", "SecureString", "hunter2");
    moto.put("/app/db/user", "String", "app");
    moto.put("/app/hosts", "StringList", "a.example,b.example,c.example");
    moto.put("/app/name", "String", "demo");
    moto.put("/outside/secret", "String", "never shown");
    moto
}

#[test]
fn the_hierarchy_is_directories_and_files() {
    let moto = seeded();
    moto.put("/app/db", "String", "a parameter and a directory");
    let m = Mount::start(&moto, "/app", &[]);
    assert_eq!(
        m.ls(""),
        [".refresh", ".stats", "db", "db%", "hosts", "name"]
    );
    assert_eq!(m.ls("db"), [".refresh", "password", "user"]);
    assert_eq!(
        m.read("db/password"),
        b"hunter2",
        "decrypted, no newline added"
    );
    assert_eq!(m.read("name"), b"demo");
    assert_eq!(m.read_str("hosts"), "a.example\nb.example\nc.example\n");
    assert_eq!(m.read("db%"), b"a parameter and a directory");
    assert!(m.path("db").is_dir());
    let missing = std::fs::read(m.path("secret")).unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

#[test]
fn cp_copies_the_whole_mount() {
    // cp checks that the file it opened is the one it stat'ed, and `.stats` is a new snapshot
    // for each reader.
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    let dest = tempfile::tempdir().unwrap();
    let copy = dest.path().join("copy");
    for args in [&["-a"][..], &["-r"]] {
        let _ = std::fs::remove_dir_all(&copy);
        let out = std::process::Command::new("cp")
            .args(args)
            .arg(m.path(""))
            .arg(&copy)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "cp {args:?}: {err}");
        assert_eq!(std::fs::read(copy.join("db/password")).unwrap(), b"hunter2");
        let stats = std::fs::read(copy.join(".stats")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&stats).expect("a whole snapshot");
    }
}

#[test]
fn ssm_prefix_form_and_root_source() {
    let moto = seeded();
    let m = Mount::start(&moto, "ssm:/", &[]);
    assert_eq!(m.ls(""), [".refresh", ".stats", "app", "outside"]);
    assert_eq!(m.read("app/db/password"), b"hunter2");
}

#[test]
fn stat_is_true() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--uid", "1234", "--gid", "5678"]);
    let pw = std::fs::metadata(m.path("db/password")).unwrap();
    assert_eq!(pw.len(), 7);
    assert_eq!(pw.permissions().mode() & 0o7777, 0o400);
    assert_eq!((pw.uid(), pw.gid()), (1234, 5678));
    let modified = moto.last_modified("/app/db/password");
    let delta = pw
        .modified()
        .unwrap()
        .duration_since(modified)
        .unwrap_or_else(|e| e.duration());
    assert!(delta.as_millis() < 1000, "mtime is LastModifiedDate");
    let name = std::fs::metadata(m.path("name")).unwrap();
    assert_eq!(name.permissions().mode() & 0o7777, 0o444);
    assert_eq!(name.len(), 4);
    let dir = std::fs::metadata(m.path("db")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o555);
}

#[test]
fn nothing_can_be_changed() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    let refused = |r: std::io::Result<()>| {
        let err = r.unwrap_err();
        assert!(
            [libc::EROFS, libc::EACCES].contains(&err.raw_os_error().unwrap()),
            "{err}"
        );
    };
    refused(std::fs::write(m.path("name"), b"x"));
    refused(std::fs::write(m.path("new"), b"x"));
    refused(std::fs::create_dir(m.path("dir")));
    refused(std::fs::remove_file(m.path("name")));
    refused(std::fs::remove_dir(m.path("db")));
    refused(std::fs::rename(m.path("name"), m.path("name2")));
    refused(std::os::unix::fs::symlink("name", m.path("link")));
    refused(std::fs::set_permissions(
        m.path("name"),
        std::fs::Permissions::from_mode(0o777),
    ));
    assert_eq!(m.read("name"), b"demo");
    drop(m);
    let m = Mount::start(&moto, "/app", &[]);
    assert_eq!(
        m.ls(""),
        [".refresh", ".stats", "db", "hosts", "name"],
        "AWS unchanged"
    );
}

#[test]
fn cached_reads_and_missing_names_cost_no_calls() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    m.read("name");
    m.ls("db");
    let before = m.calls();
    for _ in 0..20 {
        assert_eq!(m.read("db/password"), b"hunter2");
        assert_eq!(m.read("name"), b"demo");
        assert!(!m.path("does-not-exist").exists());
        assert!(!m.path("db/nope/deeper").exists());
        m.ls("");
    }
    assert_eq!(m.calls(), before);
}

#[test]
fn refresh_file_shows_changes_through_the_kernel_cache() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "3600"]);
    assert_eq!(m.read("db/password"), b"hunter2");
    assert_eq!(m.read("name"), b"demo");
    moto.put(
        "/app/db/password",
        "SecureString",
        "a much longer rotated password",
    );
    moto.put("/app/db/port", "String", "5432");
    moto.delete("/app/db/user");
    moto.put("/app/name", "String", "changed");
    assert_eq!(
        m.read("db/password"),
        b"hunter2",
        "within max-age the cache answers"
    );

    let before = m.calls();
    m.refresh("db").unwrap();
    assert_eq!(m.calls() - before, 1, "a 3-entry directory: one call");
    assert_eq!(m.read("db/password"), b"a much longer rotated password");
    assert_eq!(m.ls("db"), [".refresh", "password", "port"]);
    assert_eq!(
        m.read("name"),
        b"demo",
        "refresh of db/ leaves the rest alone"
    );

    m.refresh("").unwrap();
    assert_eq!(m.read("name"), b"changed");
}

#[test]
fn values_never_outlive_max_age() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "0"]);
    assert_eq!(m.read("name"), b"demo");
    moto.put("/app/name", "String", "next");
    assert_eq!(m.read("name"), b"next");
    moto.put("/app/new", "String", "appears");
    assert_eq!(m.read("new"), b"appears");
    moto.delete("/app/hosts");
    assert!(!m.path("hosts").exists());
    assert!(!m.ls("").contains(&"hosts".to_string()));
}

#[test]
fn an_outage_serves_the_last_good_values() {
    let mut moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "0"]);
    assert_eq!(m.read("db/password"), b"hunter2");
    m.ls("db");
    moto.stop();
    for _ in 0..3 {
        assert_eq!(m.read("db/password"), b"hunter2");
        assert_eq!(m.ls("db"), [".refresh", "password", "user"]);
    }
    let err = m.refresh("").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EIO),
        "a forced refresh that fails is EIO"
    );
    assert_eq!(m.read("name"), b"demo", "and the old values stay");
    assert!(m.stats()["stale_served"].as_u64().unwrap() > 0);
    let log = m.log_with("serving the last good values");
    assert!(log.contains("serving the last good values"), "{log}");

    // AWS comes back (with new data): the next refresh brings it.
    let back = Moto::start_on(moto.port);
    back.put("/app/name", "String", "after the outage");
    m.refresh("").unwrap();
    assert_eq!(m.read("name"), b"after the outage");
    assert!(!m.path("db").exists(), "the new AWS has no db/");
}

#[test]
fn a_refresh_racing_readers_never_shows_a_torn_value() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "3600"]);
    let values: Vec<String> = (0..6)
        .map(|i| format!("value-{i}-{}", "x".repeat(i * 100)))
        .collect();
    moto.put("/app/name", "String", &values[0]);
    m.refresh("").unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut reads = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                        let got = std::fs::read_to_string(m.path("name")).unwrap();
                        assert!(
                            values.contains(&got),
                            "torn or stale-mixed read: {} bytes",
                            got.len()
                        );
                        reads += 1;
                    }
                })
            })
            .collect();
        for v in &values[1..] {
            moto.put("/app/name", "String", v);
            m.refresh("").unwrap();
            assert_eq!(&m.read_str("name"), v);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    });
}

/// Correct values under concurrency; that concurrent misses share one call is proven exactly by
/// the core's unit test `many_readers_of_an_expired_value_share_one_call`.
#[test]
fn parallel_readers_of_an_expired_tree_read_correct_values() {
    let moto = Moto::start();
    for i in 0..5 {
        moto.put(&format!("/app/p{i}"), "String", "v");
    }
    let m = Mount::start(&moto, "/app", &["--max-age", "0"]);
    let before = m.calls();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert_eq!(std::fs::read(m.path("p1")).unwrap(), b"v"));
        }
    });
    let used = m.calls() - before;
    // Each reader looks up and stats the file, each of which needs a refresh at max-age 0: at
    // most two one-page refreshes (plus moto's trailing empty page) per reader.
    assert!(used <= 8 * 4, "{used} calls for 8 readers");
}

#[test]
fn signals_unmount_cleanly() {
    let moto = seeded();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut m = Mount::start(&moto, "/app", &[]);
        assert!(m.is_mounted());
        let status = m.stop_with(signal);
        assert!(status.success(), "{status}: {}", m.log());
        assert!(!m.is_mounted());
    }
}

#[test]
fn an_external_umount_ends_the_daemon() {
    let moto = seeded();
    let mut m = Mount::start(&moto, "/app", &[]);
    let status = std::process::Command::new("umount")
        .arg(m.path(""))
        .status()
        .unwrap();
    assert!(status.success());
    let status = m.wait();
    assert!(status.success(), "{status}: {}", m.log());
}

#[test]
fn values_never_reach_the_log() {
    let mut moto = Moto::start();
    let canary = "CANARY-7f3a9c-secret-value";
    moto.put("/app/secret", "SecureString", canary);
    moto.put("/app/list", "StringList", &format!("{canary},x"));
    let m = Mount::start(&moto, "/app", &["--log-level", "trace", "--max-age", "0"]);
    assert_eq!(m.read_str("secret"), canary);
    m.read("list");
    m.refresh("").unwrap();
    moto.stop();
    m.read("secret");
    let _ = m.refresh("");
    let _ = std::fs::read(m.path("never/fetched"));
    let log = m.log();
    assert!(log.contains("fetching"), "trace logging was on: {log}");
    assert!(!log.contains("CANARY"), "a value reached the log");
}

#[test]
fn a_cold_read_deep_in_a_big_tree_costs_at_most_four_calls() {
    let moto = Moto::start();
    for i in 0..6 {
        for j in 0..5 {
            for k in 0..8 {
                moto.put(&format!("/big/l{i}/m{j}/p{k}"), "String", "v");
            }
        }
    }
    let m = Mount::start(&moto, "/big", &[]);
    let start = m.calls();
    assert_eq!(start, 1, "one call at start-up");
    assert_eq!(m.read("l3/m2/p5"), b"v");
    let cold = m.calls() - start;
    assert!(cold <= 4, "{cold} calls");
    // Listing one directory costs in proportion to it: one call to look `l1` up, then its 40
    // parameters in 4 pages (+1 empty page that moto adds), not the 24 pages of the tree.
    let before = m.calls();
    assert_eq!(m.ls("l1").len(), 6);
    assert!(m.calls() - before <= 6, "{} calls", m.calls() - before);
}
