//! mount(8) and fstab: `mount -t fuse.ssmfs SOURCE DIR -o OPTIONS` goes through mount.fuse3,
//! which runs `ssmfs SOURCE DIR -o OPTIONS` (found on the default PATH) and waits for it.
//!
//! Each test runs in its own mount namespace, where a tmpfs over /usr/local/sbin holds a link to
//! this build, so that nothing is installed on the machine and nothing outlives the test.

mod common;

use std::process::Output;

use common::{in_namespace, succeeded, Moto};

/// Runs a bash script in a new private mount namespace, with this build as `ssmfs` on the
/// PATH that mount.fuse3 searches.
fn with_ssmfs(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let prelude = format!(
        "mount -t tmpfs tmpfs /usr/local/sbin\n\
         ln -s {} /usr/local/sbin/ssmfs\n",
        env!("CARGO_BIN_EXE_ssmfs")
    );
    in_namespace(&(prelude + script), args)
}

/// A directory holding the mountpoint `mnt`, removed on drop.
fn mountpoint() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (dir, mnt)
}

/// The script's body after mounting: read, show the mount, unmount, and wait for the daemon
/// to exit (it is not the script's child: `tail --pid` waits for any process).
const READ_AND_UNMOUNT: &str = r#"
pid=$(pgrep -f -n "^ssmfs ssm:/app $mnt")
echo "value=$(cat "$mnt/a")"
grep " $mnt fuse.ssmfs " /proc/self/mounts | cut -d' ' -f1,3,4
if echo 1 > "$mnt/.refresh" 2>/dev/null; then echo refresh=ok; else echo refresh=refused; fi
umount "$mnt"
tail --pid="$pid" -f /dev/null
grep -q " $mnt " /proc/self/mounts && echo still-mounted
echo done
"#;

#[test]
fn an_fstab_line_mounts_with_mount_and_unmounts_with_umount() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "from fstab");
    let (dir, mnt) = mountpoint();
    let fstab = dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "ssm:/app {} fuse.ssmfs _netdev,nofail,noauto,allow_other,max_age=300,\
             endpoint_url={},region=us-east-1 0 0\n",
            mnt.display(),
            moto.url()
        ),
    )
    .unwrap();
    let script = format!("mnt=$2\nmount --fstab \"$1\" \"$mnt\"\n{READ_AND_UNMOUNT}");
    let out = succeeded(&with_ssmfs(&script, &[&fstab, &mnt]));
    assert_eq!(
        out,
        format!(
            "value=from fstab\nssm:/app fuse.ssmfs rw,nosuid,nodev,noatime,user_id=0,group_id=0,default_permissions,allow_other\nrefresh=ok\ndone\n"
        ),
        "mount returns once the mount is live; umount ends the daemon"
    );
}

#[test]
fn mount_t_takes_generic_options_and_ro() {
    let moto = Moto::start();
    moto.put("/app/a", "String", "read-only");
    let (_dir, mnt) = mountpoint();
    let script = format!(
        "mnt=$2\nmount -t fuse.ssmfs ssm:/app \"$mnt\" \
         -o ro,nosuid,nodev,noexec,user,defaults,x-systemd.automount,max_tps=5,endpoint_url=$1\n\
         {READ_AND_UNMOUNT}"
    );
    let out = succeeded(&with_ssmfs(&script, &[&moto.url(), &mnt]));
    assert_eq!(
        out,
        "value=read-only\nssm:/app fuse.ssmfs ro,nosuid,nodev,noexec,noatime,user_id=0,group_id=0,default_permissions\nrefresh=refused\ndone\n"
    );
}

#[test]
fn a_bad_option_fails_the_mount_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = with_ssmfs(
        "mount -t fuse.ssmfs ssm:/app \"$1\" -o max_agee=5",
        &[&dir.path()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mount option 'max_agee=5'"), "{err}");
}
