//! Secrets Manager as a source, on real mounts over moto.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::proxy::Proxy;
use common::{rt, xattr, Moto, Mount};

fn sm(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    moto.secrets_client()
}

fn create(c: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    rt().block_on(c.create_secret().name(name).secret_string(value).send())
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"));
}

fn create_binary(c: &aws_sdk_secretsmanager::Client, name: &str, value: &[u8]) {
    rt().block_on(
        c.create_secret()
            .name(name)
            .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(value))
            .send(),
    )
    .unwrap();
}

fn put_value(c: &aws_sdk_secretsmanager::Client, name: &str, value: &str) {
    rt().block_on(
        c.put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send(),
    )
    .unwrap();
}

const DB: &str =
    r#"{"username":"app","password":"pw","port":5432,"tls":true,"nested":{"a":{"b":"deep"}}}"#;

fn seeded() -> (Moto, aws_sdk_secretsmanager::Client) {
    let moto = Moto::start();
    let c = sm(&moto);
    create(&c, "prod/api_key", "k-123");
    create(&c, "prod/db", DB);
    create(&c, "prod/team/a@b+c=d", "odd but legal name");
    create_binary(&c, "prod/cert.der", b"\x00\x01binary\x00\xff");
    create(&c, "production/other", "not below prod/");
    create(&c, "dev/x", "not below prod/");
    (moto, c)
}

#[test]
fn secret_names_become_a_tree() {
    let (moto, _c) = seeded();
    let m = Mount::start(&moto, "secretsmanager:prod/", &[]);
    assert_eq!(
        m.ls(""),
        [".refresh", ".stats", "api_key", "cert.der", "db", "db%", "team"]
    );
    assert_eq!(m.ls("team"), [".refresh", "a@b+c=d"]);
    assert_eq!(m.read("api_key"), b"k-123");
    assert_eq!(m.read("team/a@b+c=d"), b"odd but legal name");
    assert_eq!(
        m.read("cert.der"),
        b"\x00\x01binary\x00\xff",
        "binary secrets as raw bytes"
    );
    let mode = std::fs::metadata(m.path("api_key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o400, "secrets are owner-only");
    drop(m);
    let all = Mount::start(&moto, "sm:", &[]);
    assert_eq!(
        all.ls(""),
        [".refresh", ".stats", "dev", "prod", "production"]
    );
}

#[test]
fn json_secrets_are_directories_of_their_keys() {
    let (moto, _c) = seeded();
    let m = Mount::start(&moto, "sm:prod", &[]);
    assert_eq!(m.read_str("db%"), DB, "the whole secret");
    assert_eq!(
        m.ls("db"),
        [".refresh", "nested", "password", "port", "tls", "username"]
    );
    assert_eq!(m.read("db/password"), b"pw", "strings raw");
    assert_eq!(m.read("db/port"), b"5432", "numbers as JSON text");
    assert_eq!(m.read("db/tls"), b"true");
    assert_eq!(
        m.read("db/nested/a/b"),
        b"deep",
        "nested objects as directories"
    );
    drop(m);
    let m = Mount::start(&moto, "sm:prod", &["--no-json-dirs"]);
    assert!(m.path("db").is_file());
    assert_eq!(m.read_str("db"), DB);
}

#[test]
fn stages_and_versions_after_a_rotation() {
    let (moto, c) = seeded();
    let m = Mount::start(&moto, "sm:prod", &["--max-age", "3600"]);
    assert_eq!(m.read("api_key"), b"k-123");
    let first =
        String::from_utf8(xattr(&m.path("api_key"), "user.sm.version_id").unwrap()).unwrap();
    put_value(&c, "prod/api_key", "k-456");
    assert_eq!(m.read("api_key"), b"k-123", "within max-age");
    m.refresh("").unwrap();
    assert_eq!(m.read("api_key"), b"k-456");
    assert_eq!(m.read("api_key:AWSCURRENT"), b"k-456");
    assert_eq!(m.read("api_key:AWSPREVIOUS"), b"k-123");
    assert_eq!(
        m.read(&format!("api_key:{first}")),
        b"k-123",
        "a version by its VersionId"
    );
    assert!(
        !m.path("api_key:AWSPENDING").exists(),
        "no pending version: ENOENT"
    );
    let stages = String::from_utf8(xattr(&m.path("api_key"), "user.sm.stages").unwrap()).unwrap();
    assert_eq!(stages, "AWSCURRENT");
    let arn = String::from_utf8(xattr(&m.path("api_key"), "user.sm.arn").unwrap()).unwrap();
    assert!(arn.starts_with("arn:aws:secretsmanager:"), "{arn}");
    assert!(xattr(&m.path("api_key"), "user.sm.created")
        .unwrap()
        .ends_with(b"Z"));
}

#[test]
fn a_45_secret_prefix_costs_one_listing_and_three_batches() {
    let moto = Moto::start();
    let c = sm(&moto);
    for i in 0..45 {
        create(&c, &format!("big/s{i:02}"), &format!("value {i}"));
    }
    let m = Mount::start(&moto, "sm:big", &[]);
    assert_eq!(m.ls("").len(), 45 + 2);
    assert_eq!(m.read("s44"), b"value 44");
    let calls = &m.stats()["api_calls"];
    assert_eq!(calls["ListSecrets"], 1, "{calls}");
    assert_eq!(calls["BatchGetSecretValue"], 3, "{calls}");
    assert!(calls["GetSecretValue"].is_null(), "{calls}");

    // A refresh in which nothing changed costs the listing alone; one change, one batch.
    m.refresh("").unwrap();
    put_value(&c, "big/s07", "rotated");
    m.refresh("").unwrap();
    let calls = &m.stats()["api_calls"];
    assert_eq!(calls["ListSecrets"], 3, "{calls}");
    assert_eq!(calls["BatchGetSecretValue"], 4, "{calls}");
    assert_eq!(m.read("s07"), b"rotated");
}

#[test]
fn an_unreadable_secret_is_eacces_and_the_rest_reads() {
    let (moto, _c) = seeded();
    // moto does not enforce KMS or IAM per secret, so the proxy turns one secret of each
    // BatchGetSecretValue answer into a per-secret AccessDenied error, as AWS reports them.
    let proxy = Proxy::start(moto.port);
    proxy.rewrite(|target, body| {
        if !target.ends_with("BatchGetSecretValue") {
            return body;
        }
        let mut doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let values = doc["SecretValues"].as_array_mut().unwrap();
        if let Some(i) = values.iter().position(|v| v["Name"] == "prod/api_key") {
            values.remove(i);
            doc["Errors"] = serde_json::json!([{
                "SecretId": "prod/api_key",
                "ErrorCode": "AccessDeniedException",
                "Message": "not authorized to perform secretsmanager:GetSecretValue"
            }]);
        }
        serde_json::to_vec(&doc).unwrap()
    });
    let m = Mount::start_at(&proxy.url(), "sm:prod", &[]);
    assert!(m.ls("").contains(&"api_key".to_string()), "still listed");
    let err = std::fs::read(m.path("api_key")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    assert_eq!(m.read("db/password"), b"pw", "the rest of the mount reads");
    let _ = std::fs::read(m.path("api_key"));
    m.refresh("").unwrap();
    let log = m.log();
    assert_eq!(
        log.matches("secret cannot be read").count(),
        1,
        "reported once: {log}"
    );
}

#[test]
fn the_same_caching_guarantees_as_ssm() {
    let (mut moto, _c) = seeded();
    let m = Mount::start(&moto, "sm:prod", &["--max-age", "0"]);
    assert_eq!(m.read("db/password"), b"pw");
    drop(m);
    let m = Mount::start(&moto, "sm:prod", &["--max-age", "3600"]);
    m.read("api_key");
    m.ls("db");
    let before = m.calls();
    for _ in 0..10 {
        assert_eq!(m.read("api_key"), b"k-123");
        assert_eq!(m.read("db/port"), b"5432");
        assert!(!m.path("missing").exists());
        assert!(!m.path("db/missing").exists());
    }
    assert_eq!(
        m.calls(),
        before,
        "cached reads and missing names cost nothing"
    );
    drop(m);
    let m = Mount::start(&moto, "sm:prod", &["--max-age", "0"]);
    assert_eq!(m.read("db/password"), b"pw");
    moto.stop();
    assert_eq!(
        m.read("db/password"),
        b"pw",
        "an outage serves the last good values"
    );
    assert_eq!(m.read("api_key"), b"k-123");
}

/// The Secrets Manager backend itself (no mount) over moto, counting its calls.
fn backend(
    moto: &Moto,
) -> (
    ssmfs::backend::secrets::SecretsBackend,
    std::sync::Arc<ssmfs::backend::ApiCalls>,
) {
    let config = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto.url())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("test", "test", None, None, "tests"),
            ),
        )
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let calls = std::sync::Arc::new(ssmfs::backend::ApiCalls::paced(0));
    let b = ssmfs::backend::secrets::SecretsBackend::new(&config, calls.clone(), false);
    (b, calls)
}

/// Every page of one listing; the names it returned.
async fn list_all(
    b: &ssmfs::backend::secrets::SecretsBackend,
    path: &str,
    recursive: bool,
) -> Vec<String> {
    use ssmfs::backend::Backend;
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = b.list(path, recursive, token).await.unwrap();
        names.extend(page.params.into_iter().map(|p| p.name));
        token = page.next_token;
        if token.is_none() {
            return names;
        }
    }
}

/// 40 secrets one level down, then 150 at the top, in that order (moto lists in creation order):
/// ListSecrets's first page of 100 holds the 40 and 60 of the top, the second page the other 90.
fn many(c: &aws_sdk_secretsmanager::Client) {
    for i in 0..40 {
        create(c, &format!("deep/d{i:02}"), &format!("deep {i}"));
    }
    for i in 0..150 {
        create(c, &format!("s{i:03}"), &format!("value {i}"));
    }
}

#[test]
fn a_refresh_of_a_prefix_over_100_secrets_costs_the_listing_alone() {
    use ssmfs::backend::Op;
    let moto = Moto::start();
    let c = sm(&moto);
    many(&c);
    let (b, calls) = backend(&moto);
    // The whole account (`sm:`), every level.
    let list = || rt().block_on(list_all(&b, "", true)).len();
    let cost = || {
        (
            calls.get(Op::ListSecrets),
            calls.get(Op::BatchGetSecretValue),
        )
    };
    assert_eq!(list(), 190);
    assert_eq!(cost(), (2, 5 + 5), "two pages, 190 values in batches of 20");
    assert_eq!(list(), 190);
    assert_eq!(cost(), (4, 10), "nothing changed: the two pages alone");
    put_value(&c, "s003", "rotated");
    list();
    assert_eq!(cost(), (6, 11), "one change, one batch");
    assert_eq!(b.held_secrets(), 190);
    for gone in ["s010", "s140", "deep/d05"] {
        rt().block_on(
            c.delete_secret()
                .secret_id(gone)
                .force_delete_without_recovery(true)
                .send(),
        )
        .unwrap();
    }
    assert_eq!(list(), 187);
    assert_eq!(cost(), (8, 11));
    assert_eq!(
        b.held_secrets(),
        187,
        "the values of deleted secrets are dropped"
    );
}

#[test]
fn a_one_level_listing_fetches_only_the_values_it_returns() {
    use ssmfs::backend::Op;
    let moto = Moto::start();
    let c = sm(&moto);
    many(&c);
    let (b, calls) = backend(&moto);
    rt().block_on(async {
        let names = list_all(&b, "", false).await;
        assert_eq!(names.len(), 150, "the top level only");
        // 60 values on the first page, 90 on the second: 3 + 5 batches; none for deep/.
        assert_eq!(calls.get(Op::BatchGetSecretValue), 8);
        // Then the level below costs its own 40 values and no more.
        assert_eq!(list_all(&b, "deep", false).await.len(), 40);
        assert_eq!(calls.get(Op::BatchGetSecretValue), 8 + 2);
        list_all(&b, "", true).await;
        assert_eq!(calls.get(Op::BatchGetSecretValue), 10, "all were held");
    });
}

#[test]
fn watchers_hear_of_a_changed_secret_and_only_of_the_keys_that_changed() {
    let moto = Moto::start();
    let c = sm(&moto);
    create(&c, "prod/db", r#"{"user":"app","password":"one"}"#);
    create(&c, "prod/api_key", "k1");
    let m = Mount::start(&moto, "secretsmanager:prod/", &[]);
    assert_eq!(m.read("db/password"), b"one");
    let mut w = common::watch::Watch::start(&["-r"], &[&m.path("")]);
    put_value(&c, "prod/db", r#"{"user":"app","password":"two"}"#);
    put_value(&c, "prod/api_key", "k2");
    create(&c, "prod/new", "n");
    m.refresh("").unwrap();
    let path = |rel: &str| m.path(rel).display().to_string();
    // In path order: api_key, db% (the whole JSON), db/password; then the new secret.
    let seen = w.expect(&["CREATE", &path("new")]);
    let modified: Vec<&str> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("MODIFY "))
        .filter(|p| !p.ends_with("/.refresh"))
        .collect();
    assert_eq!(
        modified,
        [path("api_key"), path("db%"), path("db/password")],
        "db/user kept its value: no event"
    );
    assert_eq!(m.read("db/password"), b"two");
    assert_eq!(m.read("new"), b"n");
}
