//! Rendered files: `.env`, `.json` and templates, what they cost and how they follow changes.

use std::io::Write;

use super::*;
use crate::render::template::Templates;

fn templates(list: &[(&str, &str)]) -> (tempfile::TempDir, Templates) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, std::path::PathBuf)> = list
        .iter()
        .map(|(name, text)| {
            let path = dir.path().join(name);
            std::fs::File::create(&path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            (name.to_string(), path)
        })
        .collect();
    let t = Templates::load(&files).unwrap();
    (dir, t)
}

/// The news of a whole refresh, sorted.
async fn refreshed(fs: &Fs<MemoryBackend>, rec: &Recorder) -> Vec<(&'static str, String)> {
    fs.refresh("").await.unwrap();
    let mut news = rec.news();
    news.sort();
    news
}

fn text(bytes: Result<Vec<u8>, Error>) -> String {
    String::from_utf8(bytes.unwrap()).unwrap()
}

#[tokio::test]
async fn env_and_json_are_looked_up_never_listed() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    let env = text(cat(&fs, ".env").await);
    assert_eq!(
        env,
        "DB_PASSWORD='hunter2'\nDB_USER='app'\nHOSTS='a,b'\nNAME='demo'\n"
    );
    assert_eq!(
        text(cat(&fs, "db/.env").await),
        "PASSWORD='hunter2'\nUSER='app'\n"
    );
    let json: serde_json::Value = serde_json::from_str(&text(cat(&fs, ".json").await)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"db": {"password": "hunter2", "user": "app"}, "hosts": ["a", "b"], "name": "demo"})
    );
    for dir in ["", "db"] {
        let names = ls(&fs, dir).await;
        assert!(
            !names
                .iter()
                .any(|n| n == ".env" || n == ".json" || n == ".templates"),
            "{names:?}"
        );
    }
    // A SecureString inside: the secret mode.
    assert_eq!(resolve(&fs, ".env").await.unwrap().attr.perm, 0o400);
    assert_eq!(resolve(&fs, ".json").await.unwrap().attr.perm, 0o400);
    b.put("/app/plain/a", Str, "1");
    fs.refresh("").await.unwrap();
    assert_eq!(resolve(&fs, "plain/.env").await.unwrap().attr.perm, 0o444);
}

#[tokio::test]
async fn a_parameter_that_is_also_a_directory_is_under_the_empty_key() {
    let b = MemoryBackend::new();
    b.put("/app/b", Str, "own");
    b.put("/app/b/c", Str, "below");
    let fs = started(&b, "/app", LONG).await;
    let json: serde_json::Value = serde_json::from_str(&text(cat(&fs, ".json").await)).unwrap();
    assert_eq!(json, serde_json::json!({"b": {"": "own", "c": "below"}}));
    assert_eq!(text(cat(&fs, ".env").await), "B='own'\nB_C='below'\n");
}

#[tokio::test]
async fn unusable_keys_are_left_out_with_a_comment() {
    let b = MemoryBackend::new();
    b.put("/app/a-b", Str, "1");
    b.put("/app/a.b", Str, "2");
    b.put("/app/9lives", Str, "3");
    b.put("/app/both", Str, "it's $5");
    b.put("/app/ok", Str, "fine");
    let fs = started(&b, "/app", LONG).await;
    let env = text(cat(&fs, ".env").await);
    assert_eq!(
        env,
        "OK='fine'\n\
         # left out: 9lives: 9LIVES is not a variable name\n\
         # left out: a-b, a.b all make A_B\n\
         # left out: both (BOTH): no quoting reads its value back in every .env reader\n"
    );
    assert!(!env.contains("$5"), "a comment never holds a value");
}

#[tokio::test]
async fn a_fresh_env_costs_nothing_and_a_stale_one_one_sweep() {
    let b = sample();
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    cat(&fs, ".env").await.unwrap();
    let calls = b.total_calls();
    let first = resolve(&fs, ".env").await.unwrap().attr.ino;
    cat(&fs, "db/.json").await.unwrap();
    assert_eq!(b.total_calls(), calls, "fresh: no call");
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    let again = resolve(&fs, ".env").await.unwrap().attr.ino;
    assert_eq!(b.total_calls() - calls, 1, "stale: one listing");
    assert_eq!(again, first, "nothing changed: the same inode");
    b.put("/app/name", Str, "renamed");
    tokio::time::advance(Duration::from_secs(61)).await;
    let changed = resolve(&fs, ".env").await.unwrap().attr.ino;
    assert_ne!(changed, first, "a new version is a new inode");
    assert!(text(cat(&fs, ".env").await).contains("NAME='renamed'"));
}

#[tokio::test]
async fn a_template_reads_parameters_lists_directories_and_selectors() {
    let b = sample();
    b.put("/app/db/password", SecureString, "rotated");
    b.put("/app/up/one", Str, "10.0.0.1");
    b.put("/app/up/two", Str, "10.0.0.2");
    let (_d, t) = templates(&[(
        "app.conf",
        "pw={{ param('db/password') }} old={{ param('/app/db/password:1') }}\n\
         {% for h in param('hosts') %}host {{ h }};\n{% endfor %}\
         {% for name, ip in dir('up')|items %}{{ name }}={{ ip }}\n{% endfor %}\
         missing={{ param('nope', 'dflt') }}\n",
    )]);
    let fs = started(&b, "/app", LONG).await;
    fs.set_templates(t);
    assert_eq!(ls(&fs, ".templates").await, [".", "..", "app.conf"]);
    assert_eq!(
        text(cat(&fs, ".templates/app.conf").await),
        "pw=rotated old=hunter2\nhost a;\nhost b;\none=10.0.0.1\ntwo=10.0.0.2\nmissing=dflt\n"
    );
    assert_eq!(
        resolve(&fs, ".templates/app.conf").await.unwrap().attr.perm,
        0o400
    );
    assert_eq!(
        resolve(&fs, ".templates/other").await.unwrap_err(),
        Error::NotFound
    );
}

#[tokio::test]
async fn a_template_of_twenty_parameters_costs_what_reading_them_costs() {
    let b = MemoryBackend::new();
    for i in 0..20 {
        b.put(&format!("/app/svc/p{i:02}"), Str, &format!("v{i}"));
    }
    for i in 0..200 {
        b.put(&format!("/app/other/x{i:03}"), Str, "x");
    }
    let body: String = (0..20)
        .map(|i| format!("{{{{ param('svc/p{i:02}') }}}}\n"))
        .collect();
    let (_d, t) = templates(&[("t", &body)]);
    let fs = started(&b, "/app", LONG).await;
    fs.set_templates(t);
    let before = b.total_calls();
    let out = text(cat(&fs, ".templates/t").await);
    let rendering = b.total_calls() - before;
    assert_eq!(out.lines().count(), 20);

    let cold = started(&b, "/app", LONG).await;
    let before = b.total_calls();
    let reads = (0..20).map(|i| {
        let cold = cold.clone();
        async move { cat(&cold, &format!("svc/p{i:02}")).await.unwrap() }
    });
    futures_util::future::join_all(reads).await;
    let reading = b.total_calls() - before;
    assert!(
        rendering <= reading,
        "rendering cost {rendering} calls, reading the same files {reading}"
    );
    // Rendered again while fresh: nothing.
    let before = b.total_calls();
    cat(&fs, ".templates/t").await.unwrap();
    assert_eq!(b.total_calls(), before);
}

#[tokio::test]
async fn a_missing_parameter_fails_that_file_alone() {
    let b = sample();
    let (_d, t) = templates(&[
        ("bad", "x={{ param('db/nope') }}\n"),
        ("good", "{{ param('name') }}"),
    ]);
    let fs = started(&b, "/app", LONG).await;
    fs.set_templates(t);
    assert_eq!(cat(&fs, ".templates/bad").await.unwrap_err(), Error::Render);
    assert_eq!(text(cat(&fs, ".templates/good").await), "demo");
    assert_eq!(text(cat(&fs, "name").await), "demo");
    // The parameter appears: the template renders.
    b.put("/app/db/nope", Str, "here");
    fs.refresh("").await.unwrap();
    assert_eq!(text(cat(&fs, ".templates/bad").await), "x=here\n");
}

#[tokio::test]
async fn rendered_files_read_are_news_when_what_they_read_changes() {
    let b = sample();
    let (_d, t) = templates(&[
        ("pw", "{{ param('db/password') }}"),
        ("name", "{{ param('name') }}"),
    ]);
    let fs = started(&b, "/app", LONG).await;
    fs.set_templates(t);
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    for path in [".templates/pw", ".templates/name", "db/.env", ".json"] {
        cat(&fs, path).await.unwrap();
    }
    b.put("/app/db/password", SecureString, "rotated");
    assert_eq!(
        refreshed(&fs, &rec).await,
        [
            ("changed", ".json".to_string()),
            ("changed", ".templates/pw".to_string()),
            ("changed", "db/.env".to_string()),
            ("changed", "db/password".to_string()),
        ]
    );
    assert_eq!(text(cat(&fs, ".templates/pw").await), "rotated");
    // Nothing read by the templates changed: no news of them.
    b.put("/app/db/user", Str, "other");
    assert_eq!(
        refreshed(&fs, &rec).await,
        [
            ("changed", ".json".to_string()),
            ("changed", "db/.env".to_string()),
            ("changed", "db/user".to_string()),
        ]
    );
}

#[tokio::test]
async fn a_template_file_changed_on_disk_is_read_again_on_reload() {
    let b = sample();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t");
    std::fs::write(&file, "one {{ param('name') }}").unwrap();
    let fs = started(&b, "/app", LONG).await;
    fs.set_templates(Templates::load(&[("t".to_string(), file.clone())]).unwrap());
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    assert_eq!(text(cat(&fs, ".templates/t").await), "one demo");
    std::fs::write(&file, "two {{ param('name') }}").unwrap();
    fs.reload_templates().await.unwrap();
    assert_eq!(rec.news(), [("changed", ".templates/t".to_string())]);
    assert_eq!(text(cat(&fs, ".templates/t").await), "two demo");
    // A syntax error keeps the loaded template.
    std::fs::write(&file, "{% for %}").unwrap();
    assert!(fs.reload_templates().await.is_err());
    assert_eq!(text(cat(&fs, ".templates/t").await), "two demo");
}

#[tokio::test]
async fn a_rendered_file_is_kept_no_longer_than_what_it_reads() {
    let b = sample();
    let (_d, t) = templates(&[("t", "{{ param('db/password') }} {{ param('name') }}")]);
    let mut cfg = config("/app", LONG);
    cfg.max_age_for = vec![("db".to_string(), Duration::from_secs(30))];
    let fs = started_with(&b, cfg).await;
    fs.set_templates(t);
    let entry = resolve(&fs, ".templates/t").await.unwrap();
    assert!(entry.ttl <= Duration::from_secs(30), "{:?}", entry.ttl);
    assert!(entry.ttl > Duration::ZERO);
    let root = resolve(&fs, ".env").await.unwrap();
    assert!(root.ttl <= Duration::from_secs(30), "{:?}", root.ttl);
    let name = resolve(&fs, "name").await.unwrap();
    assert!(name.ttl > Duration::from_secs(60), "{:?}", name.ttl);
}

#[tokio::test]
async fn a_parameter_read_with_a_default_is_followed_until_it_exists() {
    let b = sample();
    let (_d, t) = templates(&[("t", "{{ param('name') }} {{ param('later', 'none') }}")]);
    let fs = started(&b, "/app", Duration::from_secs(60)).await;
    fs.set_templates(t);
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    assert_eq!(text(cat(&fs, ".templates/t").await), "demo none");
    b.put("/app/later", Str, "here");
    fs.refresh("").await.unwrap();
    let news = rec.news();
    assert!(
        news.contains(&("changed", ".templates/t".to_string())),
        "{news:?}"
    );
    assert_eq!(text(cat(&fs, ".templates/t").await), "demo here");
    // Also when it is learned by a lookup after the max age, not a refresh.
    b.delete("/app/later");
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(text(cat(&fs, ".templates/t").await), "demo none");
}

#[tokio::test]
async fn a_failed_render_mended_by_a_change_is_news() {
    let b = sample();
    let (_d, t) = templates(&[("t", "{{ param('db/nope') }}")]);
    let fs = started(&b, "/app", LONG).await;
    fs.set_templates(t);
    let rec = Recorder::default();
    fs.set_invalidator(Box::new(rec.clone()));
    assert_eq!(cat(&fs, ".templates/t").await.unwrap_err(), Error::Render);
    b.put("/app/db/nope", Str, "here");
    assert_eq!(
        refreshed(&fs, &rec).await,
        [
            ("added", "db/nope".to_string()),
            ("changed", ".templates/t".to_string())
        ]
    );
    // The announcer's lookup finds the stand-in it can act on; readers get the render.
    let tpl = resolve(&fs, ".templates").await.unwrap().attr.ino;
    let held = fs.lookup_held(tpl, OsStr::new("t")).unwrap();
    assert_eq!((held.attr.size, held.ttl), (0, Duration::ZERO));
    assert_eq!(text(cat(&fs, ".templates/t").await), "here");
}

#[tokio::test]
async fn a_stale_subdirectory_is_swept_alone() {
    let b = sample();
    for i in 0..200 {
        b.put(&format!("/app/other/x{i:03}"), Str, "x");
    }
    let mut cfg = config("/app", LONG);
    cfg.max_age_for = vec![("db".to_string(), Duration::from_secs(30))];
    let fs = started_with(&b, cfg).await;
    cat(&fs, ".env").await.unwrap();
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(31)).await;
    let before = b.total_calls();
    cat(&fs, ".env").await.unwrap();
    assert_eq!(b.total_calls() - before, 1, "db alone, not the 200 others");
}

#[tokio::test]
async fn unreadable_values_are_never_rendered_empty() {
    let b = sample();
    let fs = started(&b, "/app", LONG).await;
    // A value AWS refused, as a listing shows it.
    {
        let mut core = fs.core.lock().unwrap();
        let mut p = crate::backend::Param::test("/app/db/key", "", 1);
        p.unreadable = Some("AccessDeniedException".into());
        core.tree
            .apply_seen(vec![p], &fs.config.source, Instant::now());
    }
    let env = text(cat(&fs, "db/.env").await);
    assert!(
        env.contains("# left out: key (KEY): AWS refused to return it (AccessDeniedException)"),
        "{env}"
    );
    assert!(!env.contains("KEY=''"), "{env}");
    assert!(matches!(
        cat(&fs, "db/.json").await.unwrap_err(),
        Error::Backend(crate::backend::BackendError::AccessDenied(_))
    ));
}
