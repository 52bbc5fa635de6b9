//! News of changes in AWS: what a fetch reports to whoever watches the mount.

use super::*;
use crate::backend::Param;

async fn watched(b: &MemoryBackend) -> (Arc<Fs<MemoryBackend>>, Recorder) {
    let fs = started(b, "/app", LONG).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    (fs, rec)
}

fn news(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, p)| (*k, p.to_string())).collect()
}

#[tokio::test]
async fn start_up_and_first_reads_are_no_news() {
    let b = sample();
    for i in 0..30 {
        b.put(&format!("/app/big/p{i:02}"), Str, "v");
    }
    let (fs, rec) = watched(&b).await;
    // Paged: the start-up check saw one page; the rest is learned as it is read.
    for i in 0..30 {
        cat(&fs, &format!("big/p{i:02}")).await.unwrap();
    }
    ls(&fs, "db").await;
    assert_eq!(
        rec.news(),
        news(&[]),
        "nothing was known before, nothing changed"
    );
    fs.refresh("").await.unwrap();
    assert_eq!(rec.news(), news(&[]), "a refresh that changed nothing");
}

#[tokio::test]
async fn directories_first_seen_by_a_sweep_are_no_news() {
    let b = sample();
    for i in 0..30 {
        b.put(&format!("/app/a/p{i:02}"), Str, "v");
    }
    // The start-up check sees the first page only; the refresh is the first whole listing,
    // and the directories it finds were never known absent.
    let (fs, rec) = watched(&b).await;
    assert!(fs.core.lock().unwrap().tree.dir("db").is_none());
    fs.refresh("").await.unwrap();
    assert!(fs.core.lock().unwrap().tree.dir("db").is_some());
    assert_eq!(rec.news(), news(&[]));
}

#[tokio::test]
async fn a_refresh_reports_what_changed_appeared_and_went_away() {
    let b = sample();
    let (fs, rec) = watched(&b).await;
    b.put("/app/db/password", SecureString, "rotated");
    b.put("/app/db/port", Str, "5432");
    b.delete("/app/db/user");
    b.put("/app/cache/host", Str, "redis");
    b.put("/app/cache/tls/ca", Str, "pem");
    fs.refresh("").await.unwrap();
    assert_eq!(
        rec.news(),
        news(&[
            ("dir added", "cache"),
            ("added", "cache/host"),
            ("dir added", "cache/tls"),
            ("added", "cache/tls/ca"),
            ("changed", "db/password"),
            ("added", "db/port"),
            ("removed", "db/user"),
        ])
    );

    b.delete("/app/cache/host");
    b.delete("/app/cache/tls/ca");
    fs.refresh("").await.unwrap();
    assert_eq!(
        rec.news(),
        news(&[
            ("dir removed", "cache"),
            ("removed", "cache/host"),
            ("dir removed", "cache/tls"),
            ("removed", "cache/tls/ca"),
        ])
    );
}

#[tokio::test]
async fn a_changed_value_is_news_for_the_fetch_that_sees_it_whatever_its_kind() {
    let b = sample();
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    b.put("/app/name", Str, "renamed");
    // Expiry, not a forced refresh: the lookup's own fetch brings the news.
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cat(&fs, "name").await.unwrap(), b"renamed");
    assert_eq!(rec.news(), news(&[("changed", "name")]));
}

#[tokio::test]
async fn a_name_asked_for_and_absent_is_news_when_it_appears() {
    let b = sample();
    let fs = started(&b, "/app", Duration::ZERO).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    assert_eq!(resolve(&fs, "db/new").await.unwrap_err(), Error::NotFound);
    b.put("/app/db/new", Str, "here");
    assert_eq!(cat(&fs, "db/new").await.unwrap(), b"here");
    assert_eq!(rec.news(), news(&[("added", "db/new")]));
}

#[tokio::test]
async fn a_value_changed_and_changed_back_within_a_fetch_is_no_news() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    // One apply that sees the parameter twice: the second sighting restores the first version.
    let mut core = fs.core.lock().unwrap();
    let at = tokio::time::Instant::now();
    let cached = core.tree.dir("").unwrap().files["name"].clone();
    let mut other = cached.param.clone();
    other.version = "99".into();
    let source = &fs.config.source;
    core.tree.apply_seen(vec![other], source, at);
    core.tree.apply_seen(vec![cached.param.clone()], source, at);
    assert!(core.tree.take_news().is_empty());
}

#[tokio::test]
async fn a_parameter_shadowed_by_a_directory_is_news_under_its_shown_name() {
    let b = sample();
    b.put("/app/db", Str, "also a parameter");
    let (fs, rec) = watched(&b).await;
    b.put("/app/db", Str, "changed");
    fs.refresh("").await.unwrap();
    assert_eq!(rec.news(), news(&[("changed", "db%")]));
}

#[tokio::test]
async fn a_label_that_moved_is_news() {
    let b = sample();
    b.put("/app/name", Str, "v2");
    b.label("/app/name", 1, "live");
    let fs = started(&b, "/app", Duration::ZERO).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    assert_eq!(cat(&fs, "name:live").await.unwrap(), b"demo");
    b.label("/app/name", 2, "live");
    assert_eq!(cat(&fs, "name:live").await.unwrap(), b"v2");
    assert_eq!(rec.news(), news(&[("label", "name:live")]));
}

#[tokio::test]
async fn a_changed_file_the_kernel_holds_is_replaced() {
    let b = sample();
    let (fs, rec) = watched(&b).await;
    let db = resolve(&fs, "db").await.unwrap().attr.ino;
    let pw = resolve(&fs, "db/password").await.unwrap().attr.ino;
    b.put("/app/db/password", SecureString, "rotated");
    b.put("/app/name", Str, "never looked up");
    fs.refresh("").await.unwrap();
    assert_eq!(
        *rec.2.lock().unwrap(),
        [Replaced(db, pw, "password".into())],
        "only inodes the kernel holds"
    );
}

#[tokio::test]
async fn a_label_that_moved_after_a_forced_refresh_is_news() {
    let b = sample();
    b.put("/app/name", Str, "v2");
    b.label("/app/name", 1, "live");
    let (fs, rec) = watched(&b).await;
    assert_eq!(cat(&fs, "name:live").await.unwrap(), b"demo");
    fs.refresh("").await.unwrap();
    b.label("/app/name", 2, "live");
    assert_eq!(cat(&fs, "name:live").await.unwrap(), b"v2");
    assert_eq!(rec.news(), news(&[("label", "name:live")]));
    // Asked again with nothing moved: no news.
    fs.refresh("").await.unwrap();
    assert_eq!(cat(&fs, "name:live").await.unwrap(), b"v2");
    assert_eq!(rec.news(), news(&[]));
}

#[tokio::test]
async fn a_key_of_a_json_secret_is_news_only_when_its_own_value_changed() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let source = fs.config.source.clone();
    let key = |name: &str, value: &str, version: u64| {
        let mut p = Param::test(&format!("/app/s/{name}"), value, version);
        p.derived = true;
        p
    };
    let mut core = fs.core.lock().unwrap();
    let at = tokio::time::Instant::now();
    core.tree.apply_sweep(
        "s",
        vec![key("user", "app", 1), key("pass", "one", 1)],
        &source,
        at,
    );
    core.tree.take_news();
    // The secret has a new version: both keys carry it, only one changed.
    let later = at + Duration::from_secs(1);
    core.tree.apply_sweep(
        "s",
        vec![key("user", "app", 2), key("pass", "two", 2)],
        &source,
        later,
    );
    let news: Vec<String> = core.tree.take_news().into_iter().map(|n| n.shown).collect();
    assert_eq!(news, ["s/pass"]);
}

#[tokio::test(start_paused = true)]
async fn a_polled_group_is_swept_once_a_max_age_whether_read_or_not() {
    let b = sample();
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    tokio::spawn(fs.clone().poll());
    b.put("/app/name", Str, "polled");
    let calls = b.total_calls();
    tokio::time::sleep(Duration::from_secs(47)).await;
    assert_eq!(
        b.total_calls(),
        calls,
        "not before the last fifth of the max age"
    );
    tokio::time::sleep(Duration::from_secs(14)).await;
    assert_eq!(b.total_calls(), calls + 1, "one sweep of the group");
    assert_eq!(rec.news(), news(&[("changed", "name")]));
    // A sweep that something else made (here `.refresh`, just before the earliest next poll)
    // puts the next poll a max age after it.
    tokio::time::sleep(Duration::from_secs(34)).await;
    fs.refresh("").await.unwrap();
    let calls = b.total_calls();
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(
        b.total_calls(),
        calls,
        "the refresh counts as the group's sweep"
    );
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert_eq!(b.total_calls(), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_poll_waits_for_the_next_turn() {
    let b = sample();
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    tokio::spawn(fs.clone().poll());
    b.fail_with(Some(crate::backend::BackendError::AccessDenied(
        "no".into(),
    )));
    // The first poll comes between 48 s and 60 s, the next one 48 s to 60 s after it.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let calls = b.total_calls();
    assert_eq!(calls, 2, "the start-up check and the poll");
    tokio::time::sleep(Duration::from_secs(34)).await;
    assert_eq!(b.total_calls(), calls, "no retry before the next turn");
    tokio::time::sleep(Duration::from_secs(26)).await;
    assert_eq!(b.total_calls(), calls + 1, "tried again at the next turn");
}

#[tokio::test(start_paused = true)]
async fn a_listing_of_files_alone_does_not_stand_for_a_poll_of_the_subtree() {
    let b = sample();
    for i in 0..150 {
        b.put(&format!("/app/p{i:03}"), Str, "v");
    }
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    fs.refresh("").await.unwrap();
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    tokio::spawn(fs.clone().poll());
    b.put("/app/db/password", SecureString, "rotated");
    // At 48 s a reader of a file at the root is in the last fifth: refresh ahead lists the
    // root's files alone (the tree is too big to sweep for one name). The poll, due between
    // 48 s and 60 s, still sweeps the subtree.
    tokio::time::sleep(Duration::from_secs(48)).await;
    let calls = b.total_calls();
    resolve(&fs, "p000").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(
        b.total_calls() > calls,
        "refresh ahead listed the root's files"
    );
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert!(
        rec.news().contains(&("changed", "db/password".to_string())),
        "the poll swept the subtree"
    );
}

#[tokio::test]
async fn changes_told_by_events_are_fetched_together_and_are_news() {
    let b = sample();
    let mut cfg = config("/app", Duration::from_secs(60));
    cfg.events = EventsAge::new(LONG);
    let fs = started_with(&b, cfg).await;
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    assert_eq!(
        fs.config.max_age_of("db"),
        Duration::from_secs(60),
        "not flowing yet"
    );
    tokio::time::pause();
    assert!(fs.events().set_flowing(true, Instant::now()));
    assert_eq!(
        fs.config.max_age_of("db"),
        Duration::from_secs(60),
        "what was fetched before events flowed is trusted no longer than before"
    );
    tokio::time::advance(Duration::from_secs(600)).await;
    assert_eq!(fs.config.max_age_of("db"), Duration::from_secs(600));
    tokio::time::advance(LONG).await;
    assert_eq!(fs.config.max_age_of("db"), LONG);
    cat(&fs, "db/password").await.unwrap();
    cat(&fs, "name").await.unwrap();
    b.put("/app/db/password", SecureString, "rotated");
    b.put("/app/name", Str, "renamed");
    b.put("/app/new", Str, "x");
    let before = b.total_calls();
    let paths =
        [("db/password", false), ("name", false), ("new", false)].map(|(p, l)| (p.to_string(), l));
    let results = fs.apply_changes(&paths).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(
        b.total_calls() - before,
        1,
        "one GetParameters call for three names"
    );
    let mut got = rec.news();
    got.sort();
    assert_eq!(
        got,
        news(&[
            ("added", "new"),
            ("changed", "db/password"),
            ("changed", "name")
        ])
    );
    assert_eq!(
        fs.event_path(crate::names::Dialect::Ssm, "/app/db/x"),
        Some("db/x".into())
    );
    assert_eq!(fs.event_path(crate::names::Dialect::Ssm, "/other/x"), None);
    assert_eq!(
        fs.event_path(crate::names::Dialect::SecretsManager, "/app/x"),
        None
    );
    assert!(fs.events().set_flowing(false, Instant::now()));
    assert_eq!(fs.config.max_age_of("db"), Duration::from_secs(60));
}
