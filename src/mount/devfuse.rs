//! Mounting /dev/fuse with mount(2) under the filesystem type `fuse.ssmfs`.
//!
//! fuser's own mount(2) path registers every filesystem as plain `fuse`; mount(8), fstab and
//! systemd know an ssmfs mount by the type `fuse.ssmfs` (`mount -a` would mount an fstab line
//! again if the type did not match, and `findmnt -t fuse.ssmfs` would find nothing). So ssmfs
//! mounts the device itself and hands the open descriptor to fuser.
//!
//! Promises: on success the mount is live once the session's handshake is done; without the
//! right to mount (EPERM: not root) nothing is mounted and the caller falls back to fuser's
//! `fusermount3` path, which sets the same type from the subtype. [`ssmfs_mounted`] finds such a
//! mount in the mount table, for start-up and for the Docker plugin.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use fuser::MountOption;
use nix::mount::MsFlags;

pub const FS_TYPE: &str = "fuse.ssmfs";

/// What the mount looks like to the kernel.
pub struct MountRequest<'a> {
    /// Shown as the mount's source (`ssm:/app`, `secretsmanager:prod/`).
    pub fsname: &'a str,
    pub mountpoint: &'a Path,
    pub read_only: bool,
    pub no_exec: bool,
    /// Whether users other than the one mounting may reach the mount at all (the session
    /// narrows it to root with `allow_root`).
    pub allow_other: bool,
}

impl MountRequest<'_> {
    /// The same mount as fuser's options, for its fusermount3 path (the ACL, including
    /// allow_other, is fuser's `Config::acl`).
    pub fn fuser_options(&self) -> Vec<MountOption> {
        let mut options = vec![
            MountOption::FSName(self.fsname.to_string()),
            MountOption::Subtype(FS_TYPE.trim_start_matches("fuse.").to_string()),
            MountOption::DefaultPermissions,
            MountOption::NoSuid,
            MountOption::NoDev,
            MountOption::NoAtime,
        ];
        if self.read_only {
            options.push(MountOption::RO);
        }
        if self.no_exec {
            options.push(MountOption::NoExec);
        }
        options
    }
}

/// Whether the topmost mount at the absolute path `at` is of type fuse.ssmfs, live or dead, from
/// the mount table alone (no request reaches a daemon).
pub fn ssmfs_mounted(at: &Path) -> bool {
    let Ok(mounts) = procfs::process::Process::myself().and_then(|p| p.mountinfo()) else {
        return false;
    };
    // The mount table writes blanks and backslashes in paths as octal escapes.
    let mut escaped = String::new();
    for c in at.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => escaped.push_str(&format!("\\{:03o}", c as u32)),
            c => escaped.push(c),
        }
    }
    mounts
        .into_iter()
        .rfind(|m| m.mount_point.as_os_str() == escaped.as_str())
        .is_some_and(|m| m.fs_type == FS_TYPE)
}

/// Opens /dev/fuse and mounts it. `Ok(None)`: not permitted, nothing done.
pub fn mount(req: &MountRequest) -> std::io::Result<Option<OwnedFd>> {
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map_err(|e| {
            let hint = match e.kind() {
                // A stock /dev/fuse is 0666, and fusermount3 does the mount(2) a user may not.
                std::io::ErrorKind::PermissionDenied => {
                    "this user may not open it: a user mounts only where /dev/fuse is 0666, as \
                     on a stock system"
                }
                _ => "load the fuse module: modprobe fuse",
            };
            std::io::Error::new(e.kind(), format!("/dev/fuse: {e} ({hint})"))
        })?
        .into();
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        fd.as_raw_fd(),
        libc::S_IFDIR,
        nix::unistd::getuid(),
        nix::unistd::getgid(),
    );
    if req.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME;
    if req.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    if req.no_exec {
        flags |= MsFlags::MS_NOEXEC;
    }
    match nix::mount::mount(
        Some(req.fsname),
        req.mountpoint,
        Some(FS_TYPE),
        flags,
        Some(data.as_str()),
    ) {
        Ok(()) => Ok(Some(fd)),
        Err(nix::errno::Errno::EPERM) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
