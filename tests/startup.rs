//! Start-up: the daemon either mounts and reports it, or exits non-zero with one line saying
//! what to fix and leaves nothing mounted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::proxy::Proxy;
use common::{is_mounted, moto_iam, ssmfs, wait_for, xml_field, Moto, Mount};

/// Runs ssmfs to completion (background mode returns once mounted or failed).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mountpoint() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (dir, mnt)
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    lines[0]
}

#[test]
fn background_mode_returns_once_the_mount_is_live() {
    let moto = Moto::start();
    moto.put("/app/name", "String", "demo");
    let (_dir, mnt) = mountpoint();
    let (ok, stderr) = run(ssmfs()
        .arg("/app")
        .arg(&mnt)
        .args(["--endpoint-url", &moto.url()]));
    assert!(ok, "{stderr}");
    assert!(is_mounted(&mnt), "live when the command returns");
    assert_eq!(std::fs::read(mnt.join("name")).unwrap(), b"demo");
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
}

#[test]
fn an_unreachable_endpoint_fails_in_both_modes() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for foreground in [false, true] {
        let (_dir, mnt) = mountpoint();
        let mut cmd = ssmfs();
        cmd.arg("/app")
            .arg(&mnt)
            .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")]);
        if foreground {
            cmd.arg("-f");
        }
        let (ok, stderr) = run(&mut cmd);
        assert!(!ok);
        let line = one_line(&stderr);
        assert!(
            line.contains("cannot reach") && line.contains("--endpoint-url"),
            "{line}"
        );
        assert!(!is_mounted(&mnt));
    }
}

#[test]
fn a_missing_mountpoint_is_reported_by_its_path() {
    let (dir, _mnt) = mountpoint();
    let missing = dir.path().join("not-there");
    let (ok, stderr) = run(ssmfs().arg("/app").arg(&missing));
    assert!(!ok);
    assert!(
        one_line(&stderr).contains(missing.to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn missing_credentials_say_how_to_provide_them() {
    let (dir, mnt) = mountpoint();
    let (ok, stderr) = run(ssmfs()
        .arg("/app")
        .arg(&mnt)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none")));
    assert!(!ok);
    let line = one_line(&stderr);
    assert!(
        line.contains("no AWS credentials") && line.contains("AWS_PROFILE"),
        "{line}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_host_without_ca_certificates_is_told_what_to_install() {
    // A minimal image without ca-certificates: the SDK's HTTPS client would panic.
    let (dir, mnt) = mountpoint();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (ok, stderr) = run(ssmfs()
        .arg("/app")
        .arg(&mnt)
        .args([
            "--region",
            "us-east-1",
            "--endpoint-url",
            "http://127.0.0.1:9",
        ])
        .env("SSL_CERT_FILE", &empty)
        .env("SSL_CERT_DIR", dir.path().join("none")));
    assert!(!ok);
    let line = one_line(&stderr);
    assert!(line.contains("install ca-certificates"), "{line}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn bad_source_and_options_are_rejected_before_anything() {
    let (_dir, mnt) = mountpoint();
    for source in ["app", "/a//b", "s3:/x"] {
        let (ok, stderr) = run(ssmfs().arg(source).arg(&mnt));
        assert!(!ok);
        assert!(
            stderr.contains("SSM path") || stderr.contains("source"),
            "{source}: {stderr}"
        );
    }
}

#[test]
fn rejected_credentials_and_access_denied_say_what_to_fix() {
    // moto enforces IAM after its first two actions: creating a user without any policy and
    // its access key. (moto answers these errors with an XML body where AWS sends JSON; ssmfs
    // reads error codes as AWS sends them, never from bodies the SDK cannot parse, so the test
    // proxy turns moto's answers into AWS's.)
    let moto = Moto::start_with(free_port(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "2")]);
    let proxy = Proxy::start(moto.port);
    proxy.aws_errors();
    moto_iam(
        moto.port,
        "Action=CreateUser&UserName=reader&Version=2010-05-08",
    );
    let key = moto_iam(
        moto.port,
        "Action=CreateAccessKey&UserName=reader&Version=2010-05-08",
    );
    let (id, secret) = (
        xml_field(&key, "AccessKeyId"),
        xml_field(&key, "SecretAccessKey"),
    );

    let (_dir, mnt) = mountpoint();
    let (ok, stderr) = run(ssmfs()
        .arg("/app")
        .arg(&mnt)
        .args(["--endpoint-url", &proxy.url()])
        .env("AWS_ACCESS_KEY_ID", &id)
        .env("AWS_SECRET_ACCESS_KEY", &secret));
    assert!(!ok);
    let line = one_line(&stderr);
    assert!(
        line.contains("access denied")
            && line.contains("ssm:GetParametersByPath")
            && line.contains("parameter/app/*"),
        "{line}"
    );
    assert!(!is_mounted(&mnt));

    let (ok, stderr) = run(ssmfs()
        .arg("/app")
        .arg(&mnt)
        .args(["--endpoint-url", &proxy.url()])
        .env("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN")
        .env("AWS_SECRET_ACCESS_KEY", "wrong"));
    assert!(!ok);
    assert!(
        one_line(&stderr).contains("rejected the credentials"),
        "{stderr}"
    );
    assert!(!is_mounted(&mnt));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cat` as user nobody (65534).
fn read_as_nobody(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let out = Command::new("cat")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

#[test]
fn other_users_read_only_with_allow_other_and_never_secure_strings() {
    let moto = Moto::start();
    moto.put("/app/name", "String", "demo");
    moto.put("/app/password", "SecureString", "hunter2");
    let private = Mount::start(&moto, "/app", &[]);
    let shared = Mount::start(&moto, "/app", &["--allow-other"]);
    for m in [&private, &shared] {
        std::fs::set_permissions(m.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(
        read_as_nobody(&private.path("name")).is_err(),
        "without --allow-other"
    );
    assert_eq!(read_as_nobody(&shared.path("name")).unwrap(), b"demo");
    let refused = read_as_nobody(&shared.path("password")).unwrap_err();
    assert!(
        refused.to_string().contains("Permission denied"),
        "{refused}"
    );
    assert_eq!(
        shared.read("password"),
        b"hunter2",
        "the owner still reads it"
    );
}

#[test]
fn a_restart_detaches_the_dead_mount_a_killed_daemon_left() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "1");
    let mut first = Mount::start(&moto, "/app", &[]);
    let mnt = first.path("");
    // The kernel keeps the root's attributes: `stat` of a dead mount's root may still answer.
    std::fs::metadata(&mnt).unwrap();
    assert!(first.stop_with(libc::SIGKILL).code().is_none());
    let dead = std::fs::read_dir(&mnt).unwrap_err();
    assert_eq!(dead.raw_os_error(), Some(libc::ENOTCONN), "{dead}");

    let out = ssmfs()
        .args(["/app"])
        .arg(&mnt)
        .args(["--endpoint-url", &moto.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("detached the dead ssmfs mount"), "{stderr}");
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"1");
    let umount = std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(umount.success());
}

#[test]
fn a_second_mount_on_a_live_one_is_refused() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "1");
    let first = Mount::start(&moto, "/app", &[]);
    let mnt = first.path("");
    // Through a path of another spelling, too.
    let other = mnt.join("..").join(mnt.file_name().unwrap());
    let out = ssmfs()
        .args(["/app"])
        .arg(&other)
        .args(["--endpoint-url", &moto.url()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is already an ssmfs mount"), "{stderr}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let canonical = std::fs::canonicalize(&mnt).unwrap();
    let at = format!(" {} ", canonical.display());
    assert_eq!(mounts.lines().filter(|l| l.contains(&at)).count(), 1);
    assert_eq!(first.read("a"), b"1");
}

#[test]
fn a_mountpoint_with_a_blank_is_found_in_the_mount_table_live_or_dead() {
    // The mount table escapes blanks: `with space` is `with\040space` there.
    let moto = Moto::start();
    moto.put("/app/a", "String", "1");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("with space");
    std::fs::create_dir(&mnt).unwrap();
    let start = || {
        ssmfs()
            .args(["/app"])
            .arg(&mnt)
            .args(["--endpoint-url", &moto.url()])
            .env("SSMFS_RUNTIME_DIR", dir.path().join("run"))
            .output()
            .unwrap()
    };
    let first = start();
    assert!(first.status.success(), "{first:?}");
    let second = start();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("is already an ssmfs mount"), "{stderr}");

    let killed = std::process::Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(format!("ssmfs /app {}", mnt.display()))
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        wait_for(std::time::Duration::from_secs(10), || std::fs::read_dir(
            &mnt
        )
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))),
        "the mount is dead"
    );
    let third = start();
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success(), "{stderr}");
    assert!(stderr.contains("detached the dead ssmfs mount"), "{stderr}");
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"1");
    assert!(std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
}

#[test]
fn a_user_without_mount_rights_mounts_through_fusermount3_as_fuse_ssmfs() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "as nobody");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();
    std::fs::create_dir(dir.path().join("dev")).unwrap();
    let binary = common::binary_for_nobody(dir.path());
    // In a mount namespace of its own, /dev/fuse is a 0666 node as on a stock system (this
    // machine's is 0600), so that nobody gets as far as mount(2), is refused, and goes through
    // the setuid fusermount3.
    let script = r#"
        mount -t tmpfs tmpfs "$1/dev"
        mknod -m 0666 "$1/dev/fuse" c 10 229
        mount --bind "$1/dev/fuse" /dev/fuse
        as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups env HOME="$1" "${@:2}"; }
        as_nobody "$1" "$3" ssm:/app "$1/mnt" --endpoint-url "$2"
        grep " $1/mnt " /proc/self/mounts | cut -d' ' -f1,3,4
        as_nobody "$1" cat "$1/mnt/a"; echo
        umount "$1/mnt"
    "#;
    let out = common::succeeded(&common::in_namespace(
        script,
        &[&dir.path(), &moto.url(), &binary],
    ));
    assert_eq!(
        out,
        "ssm:/app fuse.ssmfs rw,nosuid,nodev,noatime,user_id=65534,group_id=65534,default_permissions\nas nobody\n"
    );
}
