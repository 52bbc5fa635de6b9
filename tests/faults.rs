//! Reliability: outages, throttling, a slow AWS, races, signals, hostile names and values at the
//! limits, on real mounts over moto and a fault-injecting proxy the tests own.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::proxy::Proxy;
use common::{Moto, Mount};

fn seeded() -> Moto {
    let moto = Moto::start();
    moto.put("/app/name", "String", "demo");
    moto.put("/app/db/password", "SecureString", "hunter2");
    moto
}

#[test]
fn throttling_on_half_the_calls_shows_no_reader_an_error() {
    let moto = seeded();
    let proxy = Proxy::start(moto.port);
    let m = Mount::start_at(&proxy.url(), "/app", &["--max-age", "0"]);
    proxy.fail_every(2, 400, "ThrottlingException");
    // At least 20 rounds, and on until AWS has throttled five attempts (a loaded machine makes
    // fewer calls in 20 rounds: reads are answered from held values while the mount backs off).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    loop {
        assert_eq!(m.read("name"), b"demo");
        assert_eq!(m.read("db/password"), b"hunter2");
        // Reads do not wait for a refresh that is slow (being retried): let it land, so that
        // each round's reads start refreshes of their own.
        proxy.wait_idle();
        rounds += 1;
        let throttled = m.stats()["throttles"].as_u64().unwrap() >= 5;
        if rounds >= 20 && (throttled || std::time::Instant::now() > deadline) {
            break;
        }
    }
    // Every read succeeded: by a retry, or from the held value while retries went on.
    let stats = m.stats();
    assert!(stats["throttles"].as_u64().unwrap() >= 5, "{stats}");
}

#[test]
fn a_slow_aws_never_holds_up_a_held_value() {
    let moto = seeded();
    let proxy = Proxy::start(moto.port);
    let m = Mount::start_at(&proxy.url(), "/app", &["--max-age", "0"]);
    assert_eq!(m.read("name"), b"demo");
    moto.put("/app/name", "String", "next");
    proxy.delay(Some(Duration::from_secs(5)));
    // The read is answered while its refresh is still held by the proxy: it did not wait.
    assert_eq!(m.read("name"), b"demo");
    assert!(proxy.in_flight() >= 1, "the refresh was still on its way");
    proxy.delay(None);
    // Once AWS answers (the held refresh is released), the next read brings the new value.
    proxy.wait_idle();
    let mut value = m.read("name");
    for _ in 0..50 {
        if value == b"next" {
            break;
        }
        value = m.read("name");
    }
    assert_eq!(value, b"next");
}

#[test]
fn max_stale_turns_an_old_value_into_eio_with_a_reason() {
    let mut moto = seeded();
    let m = Mount::start(&moto, "/app", &["--max-age", "0", "--max-stale", "0"]);
    assert_eq!(m.read("name"), b"demo");
    moto.stop();
    let err = std::fs::read(m.path("name")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    let log = m.log_with("--max-stale");
    assert!(log.contains("--max-stale"), "{log}");
}

#[test]
fn a_refresh_racing_readers_and_a_big_listing() {
    let moto = Moto::start();
    common::seed(
        &moto,
        (0..5000).map(|i| (format!("/wide/d/p{i:04}"), "v".to_string())),
    );
    moto.put("/wide/d/value", "String", "v0");
    let m = Mount::start(&moto, "/wide", &["--max-age", "3600", "--max-tps", "0"]);
    let next = format!("v1-{}", "x".repeat(300));
    let refreshing = std::sync::atomic::AtomicBool::new(true);
    let listings = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                while refreshing.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = std::fs::read_to_string(m.path("d/value")).unwrap();
                    assert!(got == "v0" || got == next, "torn: {} bytes", got.len());
                    // Readers read steadily; flat out, 32 of them would starve moto on 2 CPUs.
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        // Listings run back to back while the refresh is under way, so that the refresh lands
        // in the middle of one: every entry must still appear exactly once in each.
        s.spawn(|| {
            while refreshing.load(std::sync::atomic::Ordering::Relaxed) {
                let mut names: Vec<_> = std::fs::read_dir(m.path("d"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                let total = names.len();
                names.sort();
                names.dedup();
                assert_eq!(names.len(), total, "an entry listed twice");
                // Every parameter and .refresh, with or without the one added meanwhile.
                assert!(total == 5002 || total == 5003, "{total} entries");
                listings.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        moto.put("/wide/d/value", "String", &next);
        moto.put("/wide/d/p9999", "String", "added during the listings");
        m.refresh("d").unwrap();
        refreshing.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(listings.into_inner() > 1);
    assert_eq!(m.read_str("d/value"), next);
}

#[test]
fn sigterm_with_reads_in_flight_exits_cleanly() {
    let moto = seeded();
    let proxy = Proxy::start(moto.port);
    // With max-age 0 the lookup below must ask AWS; the proxy holds it there.
    let mut m = Mount::start_at(&proxy.url(), "/app", &["--max-age", "0"]);
    proxy.delay(Some(Duration::from_secs(2)));
    let path = m.path("never/fetched");
    let reader = std::thread::spawn(move || std::fs::read(path));
    // Wait until the reader's lookup is with AWS (at the proxy).
    let asked = std::time::Instant::now();
    while proxy.in_flight() == 0 {
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "the lookup never reached AWS"
        );
        std::thread::yield_now();
    }
    let status = m.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}: {}", m.log());
    assert!(!m.is_mounted(), "nothing stays mounted");
    assert!(
        reader.join().unwrap().is_err(),
        "the reader got an answer, not a hang"
    );
}

#[test]
fn a_lazy_umount_from_outside_ends_the_daemon() {
    let moto = seeded();
    let mut m = Mount::start(&moto, "/app", &[]);
    let status = std::process::Command::new("umount")
        .arg("-l")
        .arg(m.path(""))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(m.wait().success(), "{}", m.log());
    assert!(!m.is_mounted());
}

#[test]
fn readers_of_a_killed_daemon_get_enotconn() {
    let moto = seeded();
    let mut m = Mount::start(&moto, "/app", &[]);
    let status = m.stop_with(libc::SIGKILL);
    assert!(!status.success());
    let err = std::fs::read(m.path("name")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    // Mount's drop detaches the dead mount.
}

#[test]
fn hostile_names_get_a_clean_errno_and_no_call() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &[]);
    let before = m.calls();
    let long = "a".repeat(256);
    let names: Vec<&OsStr> = vec![
        OsStr::new("a:"),
        OsStr::new(":1"),
        OsStr::new("a:1:2"),
        OsStr::new("a:0"),
        OsStr::new("a:99999999999999999999"),
        OsStr::new("100%"),
        OsStr::new("%"),
        OsStr::new("with space"),
        OsStr::from_bytes(b"bad\xff\xfe"),
        OsStr::new(&long),
    ];
    for name in names {
        let err = std::fs::read(m.path("").join(name)).unwrap_err();
        let errno = err.raw_os_error().unwrap();
        assert!(
            [libc::ENOENT, libc::ENAMETOOLONG].contains(&errno),
            "{name:?}: {err}"
        );
    }
    assert!(!m.path("..").join("..").join("nonexistent-ssmfs").exists());
    assert!(m.path(".").is_dir());
    assert_eq!(m.calls(), before, "no API call for names SSM cannot hold");
}

#[test]
fn values_at_the_limits() {
    let moto = Moto::start();
    let advanced = "A".repeat(8 * 1024);
    common::rt()
        .block_on(
            moto.client
                .put_parameter()
                .name("/lim/advanced")
                .value(&advanced)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .tier(aws_sdk_ssm::types::ParameterTier::Advanced)
                .send(),
        )
        .unwrap();
    let sm = moto.secrets_client();
    let big: String = (0..64 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let binary: Vec<u8> = (0..64 * 1024).map(|i| (i % 256) as u8).collect();
    common::rt()
        .block_on(
            sm.create_secret()
                .name("lim/big")
                .secret_string(&big)
                .send(),
        )
        .unwrap();
    common::rt()
        .block_on(
            sm.create_secret()
                .name("lim/bin")
                .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
                    binary.clone(),
                ))
                .send(),
        )
        .unwrap();
    let p = Mount::start(&moto, "/lim", &[]);
    assert_eq!(p.read_str("advanced"), advanced);
    let s = Mount::start(&moto, "sm:lim", &[]);
    assert_eq!(s.read_str("big"), big);
    assert_eq!(s.read("bin"), binary);
    assert_eq!(std::fs::metadata(s.path("bin")).unwrap().len(), 64 * 1024);
}

#[test]
fn file_mode_and_mlock() {
    let moto = seeded();
    let m = Mount::start(&moto, "/app", &["--file-mode", "0440", "--mlock"]);
    let mode = std::fs::metadata(m.path("db/password"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o440);
    let plain = std::fs::metadata(m.path("name"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(plain, 0o444, "only secret files take --file-mode");
    let status = std::fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
    let locked: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(locked > 0, "--mlock locked nothing");
}

#[test]
fn the_daemon_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    // The kernel makes the files of /proc/PID (environ, mem...) of a non-dumpable process root's,
    // whoever runs it, so that its owner cannot read its memory there either. Run the daemon
    // as nobody against an endpoint that accepts connections and never answers, so that it stays
    // in its start-up check while /proc is looked at.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = common::binary_for_nobody(dir.path());
    let mut child = common::ssmfs_at(&binary)
        .args(["-f", "/app"])
        .arg(dir.path())
        .args(["--endpoint-url", &url])
        .env("HOME", dir.path())
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its start-up call reaching the listener shows the daemon is past its first steps.
    let (_conn, _) = silent.accept().unwrap();
    let environ = std::fs::metadata(format!("/proc/{}/environ", child.id())).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    assert_eq!(
        environ.uid(),
        0,
        "/proc/PID/environ of a dumpable process would be nobody's"
    );
}
