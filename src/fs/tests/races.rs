//! The core under concurrency: a lookup racing a refresh, concurrent `.stats` lookups, listings
//! spanning changes. Each test here failed on the core before inodes carried their versions.

use super::*;

/// `cat` as the kernel does it, with the kernel's reference dropped at the end.
async fn cat_and_forget(fs: &Fs<MemoryBackend>, path: &str) -> Result<Vec<u8>, Error> {
    let entry = resolve(fs, path).await?;
    let attr = fs.getattr(entry.attr.ino)?.attr;
    let data = fs.read(attr.ino, 0, attr.size as u32 + 1);
    fs.forget(attr.ino, 1);
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lookup_racing_a_refresh_hands_out_an_inode_that_answers() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let refresh = resolve(&fs, ".refresh").await.unwrap().attr.ino;
    let writer = {
        let (fs, b) = (fs.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                b.put("/app/name", Str, &format!("v{i}"));
                fs.write(refresh, 1).await.unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let fs = fs.clone();
            tokio::spawn(async move {
                let mut n = 0;
                for _ in 0..3000 {
                    match cat_and_forget(&fs, "name").await {
                        Ok(_) => n += 1,
                        Err(err) => panic!("cat of a file that exists failed: {err}"),
                    }
                }
                n
            })
        })
        .collect();
    writer.await.unwrap();
    for r in readers {
        assert_eq!(r.await.unwrap(), 3000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stats_lookups_each_read_their_snapshot() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let fs = fs.clone();
            tokio::spawn(async move {
                for _ in 0..2000 {
                    let doc = cat_and_forget(&fs, ".stats").await.expect(".stats reads");
                    serde_json::from_slice::<serde_json::Value>(&doc).expect("whole JSON");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn a_listing_shows_each_name_once_while_versions_change() {
    let b = MemoryBackend::new();
    for i in 0..60 {
        b.put(&format!("/d/p{i:02}"), Str, "v");
    }
    let fs = started(&b, "/d", LONG).await;
    let refresh = resolve(&fs, ".refresh").await.unwrap().attr.ino;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page: Vec<DirEntry> = fs
            .readdir(ROOT, offset)
            .await
            .unwrap()
            .iter()
            .take(7)
            .cloned()
            .collect();
        let Some(last) = page.last() else { break };
        offset = last.offset;
        // Every name listed so far gets a new version before the next page.
        for e in &page {
            if e.name.starts_with('p') {
                b.put(&format!("/d/{}", e.name), Str, "changed");
            }
        }
        fs.write(refresh, 1).await.unwrap();
        seen.extend(page.into_iter().map(|e| e.name));
        assert!(seen.len() < 200, "the listing does not end");
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a name twice: {seen:?}");
    assert_eq!(
        seen.len(),
        60 + 4,
        "every name once, with . .. .refresh .stats"
    );
}

#[tokio::test]
async fn durations_that_overflow_an_instant_do_not_panic() {
    let b = sample();
    let mut cfg = config("/app", Duration::MAX);
    cfg.max_age_for = vec![("db".to_string(), Duration::MAX)];
    cfg.max_stale = Some(Duration::MAX);
    let fs = started_with(&b, cfg).await;
    assert_eq!(cat(&fs, "db/password").await.unwrap(), b"hunter2");
    assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
    assert!(ls(&fs, "db").await.contains(&"user".to_string()));
    b.fail_with(Some(BackendError::Unavailable("down".into())));
    assert_eq!(cat(&fs, "name").await.unwrap(), b"demo");
}

/// Review finding: a name through a label was handed out for as long as its version's fetch
/// stayed valid, not as long as the label's resolution did.
#[tokio::test(start_paused = true)]
async fn a_label_is_handed_out_no_longer_than_its_resolution_holds() {
    let b = sample();
    b.put("/app/name", Str, "second");
    b.label("/app/name", 2, "prod");
    let fs = started(&b, "/app", Duration::from_secs(10)).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    resolve(&fs, "name:prod").await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    // The file expired and is fetched anew; the label, resolved 5 s ago, has 5 s left.
    let entry = resolve(&fs, "name:prod").await.unwrap();
    assert!(entry.ttl <= Duration::from_secs(5), "{:?}", entry.ttl);
}

#[tokio::test]
async fn during_a_back_off_a_name_never_fetched_costs_no_call() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    b.fail_with(Some(BackendError::Unavailable("down".into())));
    assert!(resolve(&fs, "name:prod").await.is_err(), "AWS is down");
    let calls = b.total_calls();
    for i in 0..5 {
        let err = resolve(&fs, &format!("name:label{i}")).await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
    }
    assert_eq!(b.total_calls(), calls, "no call while backing off");
}

#[tokio::test]
async fn a_directory_named_like_a_control_file_is_not_listed() {
    let b = sample();
    b.put("/app/.refresh/x", Str, "v");
    let fs = started(&b, "/app", LONG).await;
    let names = ls(&fs, "").await;
    assert_eq!(
        names.iter().filter(|n| *n == ".refresh").count(),
        1,
        "{names:?}"
    );
}
