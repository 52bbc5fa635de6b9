//! Unit tests of the core over the in-memory backend: caching is proven with call counts.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::Op;
use crate::content::ParamType::{SecureString, String as Str, StringList};

const LONG: Duration = Duration::from_secs(3600);

fn config(source: &str, max_age: Duration) -> Config {
    Config {
        source: source.parse().unwrap(),
        max_age,
        max_age_for: Vec::new(),
        recursive: true,
        max_stale: None,
        secret_mode: 0o400,
        uid: 1000,
        gid: 1000,
        events: Default::default(),
    }
}

fn mount(backend: &MemoryBackend, source: &str, max_age: Duration) -> Arc<Fs<MemoryBackend>> {
    Fs::new(backend.clone(), config(source, max_age))
}

async fn started_with(backend: &MemoryBackend, config: Config) -> Arc<Fs<MemoryBackend>> {
    let fs = Fs::new(backend.clone(), config);
    fs.check_source().await.unwrap();
    fs
}

async fn started(
    backend: &MemoryBackend,
    source: &str,
    max_age: Duration,
) -> Arc<Fs<MemoryBackend>> {
    let fs = mount(backend, source, max_age);
    fs.check_source().await.unwrap();
    fs
}

async fn resolve(fs: &Fs<MemoryBackend>, path: &str) -> Result<Entry, Error> {
    let mut entry = fs.getattr(ROOT)?;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        entry = fs.lookup(entry.attr.ino, OsStr::new(part)).await?;
    }
    Ok(entry)
}

/// What `cat` does once the kernel caches are cold: resolve, stat, read.
async fn cat(fs: &Fs<MemoryBackend>, path: &str) -> Result<Vec<u8>, Error> {
    let entry = resolve(fs, path).await?;
    let attr = fs.getattr(entry.attr.ino)?.attr;
    fs.read(attr.ino, 0, attr.size as u32 + 1)
}

async fn ls(fs: &Fs<MemoryBackend>, path: &str) -> Vec<String> {
    let ino = resolve(fs, path).await.unwrap().attr.ino;
    let mut names: Vec<String> = fs
        .readdir(ino, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names
}

fn sample() -> MemoryBackend {
    let b = MemoryBackend::new();
    b.put("/app/db/password", SecureString, "hunter2");
    b.put("/app/db/user", Str, "app");
    b.put("/app/hosts", StringList, "a,b");
    b.put("/app/name", Str, "demo");
    b.put("/other/secret", Str, "not mounted");
    b
}

/// Records the invalidations (`.0`), the news (`.1`) and the inodes replaced (`.2`) the core
/// sends.
#[derive(Clone, Default)]
struct Recorder(
    Arc<Mutex<Vec<Inval>>>,
    Arc<Mutex<Vec<News>>>,
    Arc<Mutex<Vec<Replaced>>>,
);

impl Recorder {
    /// The news recorded since the last call, as (kind, shown path) pairs.
    fn news(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.1.lock().unwrap())
            .into_iter()
            .map(|n| (news_kind(&n.what), n.shown))
            .collect()
    }
}

fn news_kind(what: &What) -> &'static str {
    match what {
        What::Added => "added",
        What::Changed(_) => "changed",
        What::Removed(_) => "removed",
        What::DirAdded => "dir added",
        What::DirRemoved => "dir removed",
        What::Label => "label",
    }
}

impl Invalidator for Recorder {
    fn invalidate(&self, outcome: Outcome) {
        self.0.lock().unwrap().extend(outcome.invals);
        self.1.lock().unwrap().extend(outcome.news);
        self.2.lock().unwrap().extend(outcome.replaced);
    }

    fn barrier(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tx.send(()).unwrap();
        rx
    }
}

#[tokio::test]
async fn small_tree_is_loaded_by_the_startup_call_and_then_costs_nothing() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    assert_eq!(b.total_calls(), 1);

    assert_eq!(cat(&fs, "db/password").await.unwrap(), b"hunter2");
    assert_eq!(cat(&fs, "hosts").await.unwrap(), b"a\nb\n");
    assert_eq!(
        ls(&fs, "").await,
        [".", "..", ".refresh", ".stats", "db", "hosts", "name"]
    );
    assert_eq!(
        ls(&fs, "db").await,
        [".", "..", ".refresh", "password", "user"]
    );
    for _ in 0..3 {
        assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
        assert_eq!(resolve(&fs, "nope").await.unwrap_err(), Error::NotFound);
        assert_eq!(resolve(&fs, "db/nope").await.unwrap_err(), Error::NotFound);
    }
    assert_eq!(
        b.total_calls(),
        1,
        "cached reads and misses must make no call"
    );
}

#[tokio::test]
async fn attributes_follow_the_parameter() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let secret = resolve(&fs, "db/password").await.unwrap();
    assert_eq!((secret.attr.perm, secret.attr.size), (0o400, 7));
    let plain = resolve(&fs, "name").await.unwrap();
    assert_eq!(plain.attr.perm, 0o444);
    assert!(plain.ttl > Duration::from_secs(3000) && plain.ttl <= LONG);
    let dir = resolve(&fs, "db").await.unwrap();
    assert_eq!(
        (dir.attr.kind, dir.attr.perm, dir.attr.uid),
        (Kind::Dir, 0o555, 1000)
    );
}

#[tokio::test]
async fn parameters_outside_the_source_never_appear() {
    let b = sample();
    b.put("/application/x", Str, "prefix but not below");
    let fs = started(&b, "/app", LONG).await;
    assert!(!ls(&fs, "")
        .await
        .iter()
        .any(|n| n.contains("secret") || n == "x"));
    assert_eq!(resolve(&fs, "secret").await.unwrap_err(), Error::NotFound);
}

#[tokio::test]
async fn a_parameter_shadowed_by_a_directory_is_name_percent() {
    let b = sample();
    b.put("/app/db", Str, "the db parameter");
    b.put("/app/.refresh", Str, "shadowed by a control file");
    let fs = started(&b, "/app", LONG).await;
    assert_eq!(resolve(&fs, "db").await.unwrap().attr.kind, Kind::Dir);
    assert_eq!(cat(&fs, "db%").await.unwrap(), b"the db parameter");
    assert_eq!(
        cat(&fs, ".refresh%").await.unwrap(),
        b"shadowed by a control file"
    );
    assert_eq!(
        cat(&fs, "name%").await.unwrap(),
        b"demo",
        "NAME% works for any parameter"
    );
    let names = ls(&fs, "").await;
    assert!(names.contains(&"db".to_string()) && names.contains(&"db%".to_string()));
    assert!(names.contains(&".refresh%".to_string()));
    assert!(
        !names.contains(&"name%".to_string()),
        "only shadowed parameters are listed with %"
    );
}

#[tokio::test]
async fn names_ssm_cannot_hold_cost_no_call() {
    let b = MemoryBackend::new();
    for i in 0..30 {
        b.put(&format!("/big/p{i}"), Str, "v");
    }
    let fs = started(&b, "/big", LONG).await;
    let before = b.total_calls();
    for name in [
        "a b",
        "a:0",
        "a:",
        ":1",
        "%",
        "x%y",
        "ünï",
        &"a".repeat(2100),
    ] {
        assert_eq!(
            fs.lookup(ROOT, OsStr::new(name)).await.unwrap_err(),
            Error::NotFound,
            "{name}"
        );
    }
    assert_eq!(b.total_calls(), before);
}

#[tokio::test]
async fn a_big_tree_is_not_swept_for_one_read() {
    let b = MemoryBackend::new();
    for i in 0..20 {
        for j in 0..10 {
            for k in 0..5 {
                b.put(&format!("/big/l{i:02}/m{j}/p{k}"), Str, "value");
            }
        }
    }
    let fs = started(&b, "/big", LONG).await;
    assert_eq!(b.total_calls(), 1);
    assert_eq!(cat(&fs, "l13/m7/p3").await.unwrap(), b"value");
    let cold = b.total_calls() - 1;
    assert!(cold <= 4, "a cold read three levels down cost {cold} calls");

    // Listing a directory costs calls in proportion to what is under it (50 parameters: 5
    // pages), not to the tree (1,000 parameters).
    let before = b.total_calls();
    assert_eq!(ls(&fs, "l05").await.len(), 3 + 10);
    let listing = b.total_calls() - before;
    assert!(listing <= 6, "listing l05 cost {listing} calls");

    // Reading back what was listed and missing names in it cost nothing more.
    let before = b.total_calls();
    assert_eq!(cat(&fs, "l05/m2/p4").await.unwrap(), b"value");
    assert_eq!(
        resolve(&fs, "l05/m2/zz").await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(b.total_calls(), before);
}

#[tokio::test]
async fn a_missing_name_in_an_unlisted_directory_is_asked_once() {
    let b = MemoryBackend::new();
    for i in 0..30 {
        b.put(&format!("/big/p{i}"), Str, "v");
    }
    let fs = started(&b, "/big", LONG).await;
    assert_eq!(resolve(&fs, "nope").await.unwrap_err(), Error::NotFound);
    let after_first = b.total_calls();
    // Where files have been seen, a missing name is taken for one more: the next page of the
    // sweep the start-up check began, the name itself, and then whether it is a directory.
    assert_eq!(after_first, 1 + 3, "a page, a get and a probe");
    assert_eq!(resolve(&fs, "nope").await.unwrap_err(), Error::NotFound);
    assert_eq!(b.total_calls(), after_first);
}

#[tokio::test]
async fn expired_values_are_refetched_and_fresh_ones_are_not() {
    let b = sample();
    let fresh = started(&b, "/app", LONG).await;
    let expired = started(&b, "/app", Duration::ZERO).await;
    let before = b.total_calls();
    cat(&fresh, "name").await.unwrap();
    assert_eq!(b.total_calls(), before);

    b.put("/app/name", Str, "new");
    assert_eq!(cat(&expired, "name").await.unwrap(), b"new");
    assert!(b.total_calls() > before);
    assert_eq!(
        cat(&fresh, "name").await.unwrap(),
        b"demo",
        "within max-age the cache answers"
    );
}

#[tokio::test]
async fn an_expired_file_refreshes_its_directory_with_one_call() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    let db = resolve(&fs, "db").await.unwrap().attr.ino;
    let before = b.calls(Op::GetParametersByPath);
    fs.lookup(db, OsStr::new("password")).await.unwrap();
    assert_eq!(b.calls(Op::GetParametersByPath) - before, 1);
    assert_eq!(b.calls(Op::GetParameter), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn many_readers_of_an_expired_value_share_one_call() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    resolve(&fs, "name").await.unwrap();
    let gate = b.hold_calls();
    let before = b.total_calls();
    let readers: Vec<_> = (0..32)
        .map(|_| {
            let fs = fs.clone();
            tokio::spawn(async move { fs.lookup(ROOT, OsStr::new("name")).await })
        })
        .collect();
    // On this single-threaded runtime, yielding lets every reader run up to its wait.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(1000);
    for r in readers {
        assert_eq!(r.await.unwrap().unwrap().attr.size, 4);
    }
    assert_eq!(b.total_calls() - before, 1, "32 readers, one refresh");
}

#[tokio::test]
async fn an_outage_serves_the_last_good_values_without_errors() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    assert_eq!(cat(&fs, "db/password").await.unwrap(), b"hunter2");
    b.fail_with(Some(BackendError::Unavailable("connection refused".into())));
    assert_eq!(cat(&fs, "db/password").await.unwrap(), b"hunter2");
    assert_eq!(ls(&fs, "db").await.len(), 5, "listings stay complete");
    assert!(
        fs.stats()
            .stale_served
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // While backing off, requests are answered without trying AWS at all.
    let calls = b.total_calls();
    cat(&fs, "name").await.unwrap();
    assert_eq!(b.total_calls(), calls);

    // Data never fetched cannot be served: EIO, not a hang.
    let fs2 = mount(&b, "/app", LONG);
    assert_eq!(cat(&fs2, "name").await.unwrap_err().errno(), libc::EIO);
}

#[tokio::test]
async fn throttling_is_an_outage_and_access_denied_is_eacces() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    b.fail_with(Some(BackendError::Throttled("ThrottlingException".into())));
    assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
    assert_eq!(
        fs.stats().errors.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "a throttled fetch that finally failed is one error"
    );

    let denied = sample();
    let fs = mount(&denied, "/app", LONG);
    denied.fail_with(Some(BackendError::AccessDenied("not allowed".into())));
    assert_eq!(cat(&fs, "name").await.unwrap_err().errno(), libc::EACCES);
}

#[tokio::test]
async fn refresh_file_refreshes_its_subtree_and_invalidates_changes() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    let pw = resolve(&fs, "db/password").await.unwrap().attr.ino;
    let name = resolve(&fs, "name").await.unwrap().attr.ino;
    let db = resolve(&fs, "db").await.unwrap().attr.ino;

    b.put("/app/db/password", SecureString, "rotated");
    b.put("/app/name", Str, "changed outside db");
    b.delete("/app/db/user");
    b.put("/app/db/port", Str, "5432");
    let refresh = resolve(&fs, "db/.refresh").await.unwrap().attr.ino;
    let before = b.total_calls();
    assert_eq!(fs.write(refresh, 2).await.unwrap(), 2);
    assert_eq!(
        b.total_calls() - before,
        1,
        "a 3-entry directory refreshes with one call"
    );

    assert_eq!(cat(&fs, "db/password").await.unwrap(), b"rotated");
    assert_eq!(cat(&fs, "db/port").await.unwrap(), b"5432");
    assert_eq!(resolve(&fs, "db/user").await.unwrap_err(), Error::NotFound);
    assert_eq!(
        cat(&fs, "name").await.unwrap(),
        b"demo",
        "outside the subtree: untouched"
    );

    let invals = rec.0.lock().unwrap().clone();
    assert!(invals.contains(&Inval(db, "password".into())));
    assert!(invals.contains(&Inval(db, "user".into())));
    assert!(!invals.contains(&Inval(ROOT, "name".into())));
    let new_pw = resolve(&fs, "db/password").await.unwrap().attr.ino;
    assert_ne!(new_pw, pw, "a new version is a new inode");
    assert_eq!(
        fs.read(pw, 0, 100).unwrap(),
        b"hunter2",
        "the old version stays whole while held"
    );
    fs.forget(pw, 2);
    assert_eq!(
        fs.read(pw, 0, 100).unwrap_err(),
        Error::NotFound,
        "and goes once forgotten"
    );
    let _ = name;
}

#[tokio::test]
async fn a_failed_refresh_is_eio_and_keeps_the_old_values() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let refresh = resolve(&fs, ".refresh").await.unwrap().attr.ino;
    b.fail_with(Some(BackendError::Unavailable("down".into())));
    assert_eq!(fs.write(refresh, 1).await.unwrap_err().errno(), libc::EIO);
    b.fail_with(None);
    assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
}

#[tokio::test]
async fn created_and_deleted_parameters_show_at_the_next_refresh() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    b.put("/app/new/deep/x", Str, "fresh");
    b.delete("/app/hosts");
    assert_eq!(cat(&fs, "new/deep/x").await.unwrap(), b"fresh");
    assert_eq!(resolve(&fs, "hosts").await.unwrap_err(), Error::NotFound);
    let names = ls(&fs, "").await;
    assert!(names.contains(&"new".to_string()) && !names.contains(&"hosts".to_string()));
}

#[tokio::test]
async fn writes_anywhere_else_are_read_only() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let name = resolve(&fs, "name").await.unwrap().attr.ino;
    assert_eq!(fs.write(name, 1).await.unwrap_err().errno(), libc::EROFS);
    assert_eq!(
        fs.setattr(name, Some(0), false).unwrap_err().errno(),
        libc::EROFS
    );
    let refresh = resolve(&fs, ".refresh").await.unwrap().attr.ino;
    assert!(
        fs.setattr(refresh, Some(0), false).is_ok(),
        "`>` truncates first"
    );
    assert_eq!(fs.read(ROOT, 0, 10).unwrap_err(), Error::IsDir);
}

#[tokio::test]
async fn readdir_offsets_survive_a_refresh() {
    let b = MemoryBackend::new();
    for i in 0..100 {
        b.put(&format!("/d/p{i:03}"), Str, "v");
    }
    let fs = started(&b, "/d", Duration::ZERO).await;
    let first = fs.readdir(ROOT, 0).await.unwrap();
    let (head, _) = first.split_at(40);
    b.delete("/d/p000");
    b.delete("/d/p099");
    b.put("/d/zzz", Str, "new");
    let rest = fs.readdir(ROOT, head.last().unwrap().offset).await.unwrap();
    let mut seen: Vec<&str> = head
        .iter()
        .chain(rest.iter())
        .map(|e| e.name.as_str())
        .collect();
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), total, "no entry twice");
    for i in 1..99 {
        assert!(
            seen.contains(&format!("p{i:03}").as_str()),
            "p{i:03} missing"
        );
    }
    assert!(seen.contains(&"zzz"));
}

#[tokio::test]
async fn stats_count_calls() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let doc = cat(&fs, ".stats").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(v["api_calls"]["GetParametersByPath"], 1);
    assert!(
        v["api_calls"]["GetParameter"].is_null(),
        "not called: not shown"
    );
    assert!(v["seconds_since_last_good_fetch"].as_f64().unwrap() < 60.0);
}

#[tokio::test]
async fn stat_then_open_of_stats_finds_one_inode_and_each_read_is_current() {
    // cp: stat (a lookup), open (a lookup), fstat: both must name the same inode.
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let stat = resolve(&fs, ".stats").await.unwrap().attr;
    let open = resolve(&fs, ".stats").await.unwrap().attr;
    assert_eq!(stat.ino, open.ino);
    let first = fs.read(open.ino, 0, 1 << 16).unwrap();
    assert_eq!(first.len() as u64, stat.size, "the size stat saw");
    // Once read, the next lookup renders the figures anew: the read above is counted.
    cat(&fs, "name").await.unwrap();
    let next = resolve(&fs, ".stats").await.unwrap().attr;
    assert_ne!(next.ino, open.ino);
    let doc: serde_json::Value =
        serde_json::from_slice(&fs.read(next.ino, 0, 1 << 16).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert!(
        doc["cache_hits"].as_u64() > before["cache_hits"].as_u64(),
        "{doc}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stats_snapshot_no_one_read_is_handed_out_for_a_second_at_most() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let first = resolve(&fs, ".stats").await.unwrap().attr.ino;
    tokio::time::advance(Duration::from_millis(900)).await;
    assert_eq!(resolve(&fs, ".stats").await.unwrap().attr.ino, first);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_ne!(resolve(&fs, ".stats").await.unwrap().attr.ino, first);
}

#[tokio::test]
async fn pinned_versions_and_labels() {
    let b = sample();
    b.put("/app/name", Str, "second");
    b.put("/app/name", Str, "third");
    b.label("/app/name", 2, "prod");
    let fs = started(&b, "/app", LONG).await;
    let before = b.total_calls();
    assert_eq!(cat(&fs, "name:1").await.unwrap(), b"demo");
    assert_eq!(cat(&fs, "name:prod").await.unwrap(), b"second");
    assert_eq!(
        cat(&fs, "name:3").await.unwrap(),
        b"third",
        "the current version costs nothing"
    );
    assert_eq!(b.total_calls() - before, 2);
    assert_eq!(resolve(&fs, "name:99").await.unwrap_err(), Error::NotFound);
    assert_eq!(
        resolve(&fs, "name:nolabel").await.unwrap_err(),
        Error::NotFound
    );
    assert_eq!(resolve(&fs, "nope:1").await.unwrap_err(), Error::NotFound);
    assert!(
        !ls(&fs, "").await.iter().any(|n| n.contains(':')),
        "selectors are not listed"
    );

    // Pinned versions never expire; repeated lookups cost nothing.
    let calls = b.total_calls();
    for _ in 0..3 {
        assert_eq!(cat(&fs, "name:1").await.unwrap(), b"demo");
        assert_eq!(resolve(&fs, "name:99").await.unwrap_err(), Error::NotFound);
    }
    assert_eq!(b.total_calls(), calls);

    // A label that moves is seen after a forced refresh; a pinned version survives overwrites.
    b.label("/app/name", 3, "prod");
    b.put("/app/name", Str, "fourth");
    let refresh = resolve(&fs, ".refresh").await.unwrap().attr.ino;
    fs.write(refresh, 1).await.unwrap();
    assert_eq!(cat(&fs, "name:prod").await.unwrap(), b"third");
    assert_eq!(cat(&fs, "name:1").await.unwrap(), b"demo");
    assert_eq!(cat(&fs, "name").await.unwrap(), b"fourth");
    assert_eq!(
        resolve(&fs, "name:3").await.unwrap().attr.ino,
        resolve(&fs, "name:prod").await.unwrap().attr.ino,
        "a version is one inode, whatever names it"
    );
}

#[tokio::test]
async fn labels_follow_max_age_and_versions_do_not() {
    let b = sample();
    b.put("/app/name", Str, "second");
    b.label("/app/name", 1, "prod");
    let fs = started(&b, "/app", Duration::ZERO).await;
    assert_eq!(cat(&fs, "name:prod").await.unwrap(), b"demo");
    b.label("/app/name", 2, "prod");
    assert_eq!(cat(&fs, "name:prod").await.unwrap(), b"second");
    assert_eq!(cat(&fs, "name:1").await.unwrap(), b"demo");
    let calls = b.calls(Op::GetParameter);
    assert_eq!(cat(&fs, "name:1").await.unwrap(), b"demo");
    assert_eq!(
        b.calls(Op::GetParameter),
        calls,
        "a version is never fetched twice"
    );
}

#[tokio::test]
async fn selectors_read_together_are_fetched_together() {
    let b = sample();
    for i in 0..12 {
        b.put(&format!("/app/s{i}"), Str, "one");
        b.put(&format!("/app/s{i}"), Str, "two");
        b.label(&format!("/app/s{i}"), 2, "prod");
    }
    let fs = started(&b, "/app", LONG).await;
    ls(&fs, "").await;
    let before = b.total_calls();
    let readers: Vec<_> = (0..12)
        .map(|i| {
            let fs = fs.clone();
            let name = if i % 2 == 0 {
                format!("s{i}:1")
            } else {
                format!("s{i}:prod")
            };
            tokio::spawn(async move { cat(&fs, &name).await.unwrap() })
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let want: &[u8] = if i % 2 == 0 { b"one" } else { b"two" };
        assert_eq!(reader.await.unwrap(), want);
    }
    // Ten names in the first call, the other two in the next.
    assert_eq!(b.total_calls() - before, 2);
    assert_eq!(b.calls(Op::GetParameters), 2);
}

#[tokio::test]
async fn selectors_work_where_a_directory_shadows_the_parameter() {
    let b = sample();
    b.put("/app/db", Str, "v1");
    b.put("/app/db", Str, "v2");
    let fs = started(&b, "/app", LONG).await;
    assert_eq!(resolve(&fs, "db").await.unwrap().attr.kind, Kind::Dir);
    assert_eq!(cat(&fs, "db:1").await.unwrap(), b"v1");
    assert_eq!(cat(&fs, "db%").await.unwrap(), b"v2");
}

#[tokio::test]
async fn max_age_can_differ_by_subtree() {
    let b = sample();
    b.put("/app/static/logo", Str, "v1");
    let mut cfg = config("/app", Duration::ZERO);
    cfg.max_age_for = vec![("static".to_string(), LONG)];
    let fs = started_with(&b, cfg).await;
    assert_eq!(cat(&fs, "static/logo").await.unwrap(), b"v1");
    assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
    b.put("/app/static/logo", Str, "v2");
    b.put("/app/name", Str, "new");
    let calls = b.total_calls();
    assert_eq!(
        cat(&fs, "static/logo").await.unwrap(),
        b"v1",
        "a day-long subtree"
    );
    assert!(resolve(&fs, "static/logo").await.unwrap().ttl > Duration::from_secs(3000));
    assert_eq!(b.total_calls(), calls);
    assert_eq!(
        cat(&fs, "name").await.unwrap(),
        b"new",
        "the default elsewhere"
    );
}

#[tokio::test]
async fn non_recursive_mounts_show_no_directories() {
    let b = sample();
    let mut cfg = config("/app", LONG);
    cfg.recursive = false;
    let fs = started_with(&b, cfg).await;
    assert_eq!(
        ls(&fs, "").await,
        [".", "..", ".refresh", ".stats", "hosts", "name"]
    );
    let before = b.total_calls();
    assert_eq!(resolve(&fs, "db").await.unwrap_err(), Error::NotFound);
    assert_eq!(b.total_calls(), before, "no probe for directories");
}

#[tokio::test]
async fn a_filtered_mount_never_uses_get_parameter() {
    let b = MemoryBackend::new();
    for i in 0..30 {
        b.put(&format!("/big/p{i:02}"), Str, "v");
    }
    b.set_lists_only(true);
    let fs = started(&b, "/big", LONG).await;
    cat(&fs, "p25").await.unwrap();
    assert_eq!(resolve(&fs, "zz").await.unwrap_err(), Error::NotFound);
    assert_eq!(
        b.calls(Op::GetParameter),
        0,
        "GetParameter cannot apply the filters"
    );
}

#[tokio::test]
async fn a_listing_that_stats_every_entry_ends() {
    // `ls -la`: a lookup of `.stats` may make a new snapshot inode; the listing must still end
    // and show `.stats` once.
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let mut offset = 0;
    let mut seen = Vec::new();
    loop {
        let batch = fs.readdir(ROOT, offset).await.unwrap();
        let Some(first) = batch.first().cloned() else {
            break;
        };
        if first.name != "." && first.name != ".." {
            fs.lookup(ROOT, OsStr::new(&first.name)).await.unwrap();
        }
        seen.push(first.name);
        offset = first.offset;
        assert!(seen.len() < 100, "the listing does not end: {seen:?}");
    }
    assert_eq!(seen.iter().filter(|n| *n == ".stats").count(), 1);
}

#[tokio::test]
async fn many_names_in_one_directory_end_in_one_listing() {
    let b = MemoryBackend::new();
    for i in 0..1000 {
        b.put(&format!("/flat/f{i:04}"), Str, "v");
    }
    let fs = started(&b, "/flat", LONG).await;
    for i in 0..1000 {
        assert_eq!(cat(&fs, &format!("f{i:04}")).await.unwrap(), b"v");
    }
    // Name by name until 20 calls are spent, then one listing of 100 pages; not 2 per name.
    let calls = b.total_calls();
    assert!(calls <= 1 + 20 + 100 + 2, "{calls} calls for 1,000 names");
}

/// On tokio's paused clock, time moves only when every task waits: the refresh wait is
/// measured exactly.
#[tokio::test(start_paused = true)]
async fn a_slow_aws_never_holds_up_a_held_value() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
    b.put("/app/name", Str, "new");
    // The core's clock is tokio's: what was fetched ages only as paused time moves.
    tokio::time::advance(Duration::from_millis(1)).await;
    let gate = b.hold_calls();
    let start = tokio::time::Instant::now();
    assert_eq!(
        cat(&fs, "name").await.unwrap(),
        b"demo",
        "the held value, not a wait"
    );
    assert!(
        start.elapsed() <= REFRESH_WAIT * 2,
        "waited {:?}",
        start.elapsed()
    );
    assert!(
        fs.stats()
            .stale_served
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    // The refresh goes on in the background and lands once AWS answers.
    gate.add_permits(1000);
    let mut value = Vec::new();
    for _ in 0..100 {
        tokio::task::yield_now().await;
        value = cat(&fs, "name").await.unwrap();
        if value == b"new" {
            break;
        }
    }
    assert_eq!(value, b"new");
}

/// A slow AWS costs one `open` one wait in all, not one per path level: once a refresh has
/// kept a request waiting, requests that hold a value answer at once until it lands.
#[tokio::test(start_paused = true)]
async fn a_slow_aws_costs_a_deep_read_one_wait() {
    let b = sample();
    b.put("/app/a/b/c/name", Str, "old");
    let fs = started(&b, "/app", Duration::ZERO).await;
    assert_eq!(cat(&fs, "a/b/c/name").await.unwrap(), b"old");
    b.put("/app/a/b/c/name", Str, "new");
    tokio::time::advance(Duration::from_millis(1)).await;
    let gate = b.hold_calls();
    let start = tokio::time::Instant::now();
    assert_eq!(cat(&fs, "a/b/c/name").await.unwrap(), b"old");
    assert_eq!(
        start.elapsed(),
        REFRESH_WAIT,
        "one wait for four lookups and a read"
    );
    // While the refresh is out, the next reads do not wait at all.
    let start = tokio::time::Instant::now();
    assert_eq!(cat(&fs, "a/b/c/name").await.unwrap(), b"old");
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Once AWS answers, the new value lands, and a later refresh is waited for again.
    gate.add_permits(1000);
    let mut value = Vec::new();
    for _ in 0..100 {
        tokio::task::yield_now().await;
        value = cat(&fs, "a/b/c/name").await.unwrap();
        if value == b"new" {
            break;
        }
    }
    assert_eq!(value, b"new");
    for _ in 0..100 {
        if fs.slow.out() == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(fs.slow.out(), 0, "the refreshes given up on have ended");
    tokio::time::advance(Duration::from_millis(1)).await;
    let gate = b.hold_calls();
    let start = tokio::time::Instant::now();
    assert_eq!(cat(&fs, "a/b/c/name").await.unwrap(), b"new");
    assert_eq!(start.elapsed(), REFRESH_WAIT);
    // A refresh that stays out stops the waits for a window at most: then a request waits
    // again, and opens a new window.
    let start = tokio::time::Instant::now();
    assert_eq!(cat(&fs, "a/b/c/name").await.unwrap(), b"new");
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::advance(slow::SLOW_WINDOW).await;
    let start = tokio::time::Instant::now();
    assert_eq!(cat(&fs, "a/b/c/name").await.unwrap(), b"new");
    assert_eq!(start.elapsed(), REFRESH_WAIT);
    gate.add_permits(1000);
}

#[tokio::test]
async fn max_stale_bounds_what_an_outage_serves() {
    let b = sample();
    let mut cfg = config("/app", Duration::ZERO);
    cfg.max_stale = Some(Duration::ZERO);
    let strict = started_with(&b, cfg).await;
    let mut cfg = config("/app", Duration::ZERO);
    cfg.max_stale = Some(LONG);
    let lenient = started_with(&b, cfg).await;
    cat(&strict, "name").await.unwrap();
    cat(&lenient, "name").await.unwrap();
    b.fail_with(Some(BackendError::Unavailable("down".into())));
    assert_eq!(cat(&strict, "name").await.unwrap_err().errno(), libc::EIO);
    assert_eq!(cat(&lenient, "name").await.unwrap(), b"demo");
}

mod ahead;
mod announce;
mod bounds;
mod cold;
#[cfg(feature = "shuttle")]
mod interleavings;
mod news;
mod outages;
mod races;
mod rendered;
mod storms;

/// A store whose listing of a path returns the entry named by the path itself first, in a page
/// of its own with a token, as Secrets Manager's name-prefix filter can.
struct SelfFirst(Arc<crate::backend::ApiCalls>);

fn entry(name: &str) -> crate::backend::Param {
    crate::backend::Param::test(name, "v", 1)
}

impl crate::backend::Backend for SelfFirst {
    fn api_calls(&self) -> Arc<crate::backend::ApiCalls> {
        self.0.clone()
    }

    async fn list(
        &self,
        path: &str,
        _recursive: bool,
        token: Option<String>,
    ) -> Result<crate::backend::Page, BackendError> {
        self.0.count(Op::ListSecrets);
        Ok(match token {
            None => crate::backend::Page {
                params: vec![entry(path)],
                next_token: Some("2".to_string()),
            },
            Some(_) => crate::backend::Page::default(),
        })
    }

    async fn get(&self, name: &str) -> Result<Option<crate::backend::Param>, BackendError> {
        self.0.count(Op::GetSecretValue);
        Ok(Some(entry(name)))
    }
}

/// Review finding: a probe whose first page held only the entry named by the path itself
/// never settled whether the path is a directory, and the lookup ended in EIO.
#[tokio::test]
async fn a_probe_that_first_finds_the_path_itself_goes_on_paging() {
    let calls = Arc::new(crate::backend::ApiCalls::default());
    let fs = Fs::new(SelfFirst(calls.clone()), config("sm:prod/", LONG));
    let entry = fs.lookup(ROOT, OsStr::new("db")).await.unwrap();
    assert_eq!(entry.attr.kind, Kind::File);
    assert!(calls.total() <= 3, "{} calls", calls.total());
}
