//! Versions, labels, metadata and ssm-cache's other options, on real mounts over moto.

mod common;

use std::io::ErrorKind;

use std::time::Duration;

use common::proxy::Proxy;
use common::{set_xattr, ssmfs, xattr, xattr_names, Moto, Mount};

fn versioned() -> Moto {
    let moto = Moto::start();
    for v in ["one", "two", "three"] {
        moto.put("/app/db_password", "SecureString", v);
    }
    moto.label("/app/db_password", 2, "prod");
    moto.put("/app/db/host", "String", "db.internal");
    moto.put("/app/db", "String", "first");
    moto.put("/app/db", "String", "second");
    moto.put("/app/hosts", "StringList", "a,b");
    moto
}

fn not_found(m: &Mount, rel: &str) -> bool {
    std::fs::read(m.path(rel)).unwrap_err().kind() == ErrorKind::NotFound
}

#[test]
fn versions_and_labels_are_files() {
    let moto = versioned();
    let m = Mount::start(&moto, "/app", &[]);
    assert_eq!(m.read("db_password"), b"three");
    assert_eq!(m.read("db_password:2"), b"two");
    assert_eq!(m.read("db_password:1"), b"one");
    assert_eq!(m.read("db_password:prod"), b"two");
    assert!(
        not_found(&m, "db_password:99"),
        "a version that does not exist"
    );
    assert!(
        not_found(&m, "db_password:nolabel"),
        "a label that does not exist"
    );
    assert!(not_found(&m, "missing:1"));
    assert!(
        !m.ls("").iter().any(|n| n.contains(':')),
        "selectors are not listed"
    );
    // Where a directory shadows the parameter, selectors still name the parameter.
    assert_eq!(m.read("db:1"), b"first");
    assert_eq!(m.read("db%"), b"second");
}

/// moto answers GetParameters without the `Selector` field that AWS gives back: answers are
/// matched on name and version.
#[test]
fn selectors_read_together_go_in_one_get_parameters() {
    let moto = Moto::start();
    for i in 0..10 {
        let name = format!("/app/s{i}");
        moto.put(&name, "SecureString", &format!("one {i}"));
        moto.put(&name, "SecureString", &format!("two {i}"));
        moto.label(&name, 1, "prod");
    }
    let proxy = Proxy::start(moto.port);
    let m = Mount::start_at(&proxy.url(), "/app", &[]);
    assert!(m.ls("").contains(&"s9".to_string()));
    let read = |name: String| {
        let path = m.path(&name);
        std::thread::spawn(move || std::fs::read(path).unwrap())
    };
    // The first read starts a call, which the proxy holds; the other nine, asked together
    // meanwhile, start at most one call of their own and queue, and the queued ones leave
    // together when a call ends.
    proxy.delay(Some(Duration::from_secs(2)));
    let first = [read("s0:1".to_string())];
    proxy.wait_in_flight(1);
    let rest: Vec<_> = (1..10)
        .map(|i| {
            read(if i % 2 == 0 {
                format!("s{i}:2")
            } else {
                format!("s{i}:prod")
            })
        })
        .collect();
    for (i, reader) in first.into_iter().chain(rest).enumerate() {
        let want = if i % 2 == 0 && i > 0 {
            format!("two {i}")
        } else {
            format!("one {i}")
        };
        assert_eq!(reader.join().unwrap(), want.as_bytes(), "s{i}");
    }
    let calls = &m.stats()["api_calls"];
    let singles = calls["GetParameter"].as_u64().unwrap_or(0);
    let batched = calls["GetParameters"].as_u64().unwrap_or(0);
    assert!(batched >= 1, "{calls}");
    assert!(
        singles + batched <= 3,
        "ten names in at most three calls: {calls}"
    );
}

#[test]
fn a_moved_label_is_seen_after_refresh_and_pinned_versions_survive_overwrites() {
    let moto = versioned();
    let m = Mount::start(&moto, "/app", &["--max-age", "3600"]);
    assert_eq!(m.read("db_password:prod"), b"two");
    assert_eq!(m.read("db_password:1"), b"one");
    moto.label("/app/db_password", 3, "prod");
    moto.put("/app/db_password", "SecureString", "four");
    assert_eq!(m.read("db_password:prod"), b"two", "within max-age");
    m.refresh("").unwrap();
    assert_eq!(m.read("db_password:prod"), b"three");
    assert_eq!(m.read("db_password"), b"four");
    assert_eq!(m.read("db_password:1"), b"one", "a version never changes");
}

#[test]
fn metadata_is_in_extended_attributes_at_no_cost() {
    let moto = versioned();
    let m = Mount::start(&moto, "/app", &[]);
    let path = m.path("db_password");
    m.read("db_password");
    m.read("db_password:1");
    let before = m.calls();
    assert_eq!(
        xattr_names(&path),
        [
            "user.ssm.arn",
            "user.ssm.data_type",
            "user.ssm.last_modified",
            "user.ssm.type",
            "user.ssm.version"
        ]
    );
    assert_eq!(xattr(&path, "user.ssm.version").unwrap(), b"3");
    assert_eq!(xattr(&path, "user.ssm.type").unwrap(), b"SecureString");
    assert_eq!(xattr(&path, "user.ssm.data_type").unwrap(), b"text");
    let arn = String::from_utf8(xattr(&path, "user.ssm.arn").unwrap()).unwrap();
    assert!(
        arn.starts_with("arn:aws:ssm:") && arn.ends_with(":parameter/app/db_password"),
        "{arn}"
    );
    let modified = String::from_utf8(xattr(&path, "user.ssm.last_modified").unwrap()).unwrap();
    assert!(
        modified.len() >= 20 && modified.as_bytes()[10] == b'T' && modified.ends_with('Z'),
        "{modified}"
    );
    assert_eq!(
        xattr(&m.path("db_password:1"), "user.ssm.version").unwrap(),
        b"1"
    );
    assert_eq!(
        xattr(&m.path("hosts"), "user.ssm.type").unwrap(),
        b"StringList"
    );
    assert_eq!(xattr(&path, "user.ssm.nope"), Err(libc::ENODATA));
    assert_eq!(m.calls(), before, "metadata comes from what was fetched");
    assert_eq!(set_xattr(&path, "user.ssm.version", b"9"), libc::EROFS);
    assert_eq!(xattr(&path, "user.ssm.version").unwrap(), b"3");
}

#[test]
fn type_and_key_filters() {
    let moto = versioned();
    moto.put("/app/plain", "String", "p");
    let m = Mount::start(&moto, "/app", &["--filter", "Type=SecureString"]);
    assert_eq!(m.ls(""), [".refresh", ".stats", "db_password"]);
    assert!(
        not_found(&m, "plain"),
        "filtered out, also when looked up by name"
    );
    drop(m);
    let m = Mount::start(
        &moto,
        "/app",
        &["--filter", "Type=String", "--filter", "Type=StringList"],
    );
    assert_eq!(
        m.ls(""),
        [".refresh", ".stats", "db", "db%", "hosts", "plain"]
    );
    drop(m);
    // SecureString parameters put without a key use the account's default key, alias/aws/ssm.
    let m = Mount::start(&moto, "/app", &["--filter", "KeyId=alias/aws/ssm"]);
    assert_eq!(m.ls(""), [".refresh", ".stats", "db_password"]);
}

#[test]
fn label_filter_is_passed_to_ssm() {
    let moto = versioned();
    // AWS returns the parameters that carry the label; moto's GetParametersByPath ignores
    // parameters matched by a Label filter and returns none. ssmfs passes the filter as AWS
    // defines it, so against moto the mount is empty.
    let m = Mount::start(&moto, "/app", &["--filter", "Label=prod"]);
    assert_eq!(m.ls(""), [".refresh", ".stats"]);
}

#[test]
fn bad_filters_are_refused_before_mounting() {
    for (filter, says) in [
        ("Tier=Advanced", "Type, KeyId or Label"),
        ("Type=Secret", "String, StringList or SecureString"),
        ("Label=9lives", "label"),
    ] {
        let out = ssmfs()
            .args(["/app", "/nonexistent", "--filter", filter])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{filter}: {stderr}");
    }
}

#[test]
fn non_recursive_shows_only_the_top_level() {
    let moto = versioned();
    let m = Mount::start(&moto, "/app", &["--no-recursive"]);
    assert_eq!(
        m.ls(""),
        [".refresh", ".stats", "db", "db_password", "hosts"]
    );
    assert_eq!(
        m.read("db"),
        b"second",
        "db is the parameter: there are no directories"
    );
    assert!(m.path("db").is_file());
}

#[test]
fn no_decrypt_shows_what_ssm_returns_undecrypted() {
    let moto = versioned();
    let m = Mount::start(&moto, "/app", &["--no-decrypt"]);
    let raw = m.read_str("db_password");
    // AWS returns the base64 ciphertext; moto returns "kms:<key>:<value>". Either way it is
    // not the plain value.
    assert_ne!(raw, "three");
    assert!(raw.starts_with("kms:") || !raw.contains("three"), "{raw}");
    assert_eq!(
        m.read("db/host"),
        b"db.internal",
        "String parameters are unaffected"
    );
}

#[test]
fn max_age_differs_by_subtree() {
    let moto = versioned();
    moto.put("/app/static/logo", "String", "v1");
    let m = Mount::start(
        &moto,
        "/app",
        &["--max-age", "0", "--max-age-for", "/app/static=86400"],
    );
    assert_eq!(m.read("static/logo"), b"v1");
    assert_eq!(m.read("db/host"), b"db.internal");
    moto.put("/app/static/logo", "String", "v2");
    moto.put("/app/db/host", "String", "db2.internal");
    assert_eq!(m.read("static/logo"), b"v1", "cached for a day");
    assert_eq!(m.read("db/host"), b"db2.internal", "max-age 0 elsewhere");
    m.refresh("static").unwrap();
    assert_eq!(m.read("static/logo"), b"v2", ".refresh still forces it");
}
