//! The FUSE adapter: turns fuser's requests into calls on [`Fs`] and its results into replies.
//!
//! Promises:
//! - a request answered from memory is answered on the FUSE thread (the core's `*_now` methods);
//!   only a request that waits for AWS moves to a tokio task, so hot requests pay no thread hop;
//! - `open`, `opendir` and `flush` answer `ENOSYS`: the kernel then stops sending them and serves
//!   hot reads from its page cache with no round trip to the daemon;
//! - every mutating operation answers `EROFS`; nothing here can change AWS; the one exception
//!   is the announcer thread's, which only raises inotify events (see [`crate::fs::announce`]);
//! - kernel invalidations are [`crate::kernel`]'s, on their own thread, never on a request's path;
//! - every request runs in a `debug` span naming its operation, inode, name and pid, and every
//!   failure is counted by operation and errno (`.stats`, `/metrics`).

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::{debug, debug_span, Instrument, Span};

use crate::backend::Backend;
use crate::error::Error;
use crate::fs::{Attr, Entries, Entry, Fs, Kind};
use crate::stats::Stats;

pub struct FuseFs<B> {
    fs: Arc<Fs<B>>,
    rt: tokio::runtime::Handle,
}

impl<B: Backend> FuseFs<B> {
    pub fn new(fs: Arc<Fs<B>>, rt: tokio::runtime::Handle) -> Self {
        FuseFs { fs, rt }
    }

    /// Finishes a request that waits for AWS on the runtime.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, fut: F) {
        self.rt.spawn(fut);
    }

    /// Answers a lookup from memory, or from a task when it waits for AWS.
    fn answer_lookup(&self, span: Span, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Some(r) = span.in_scope(|| self.fs.lookup_now(parent.0, name)) {
            return reply_entry(self.fs.stats(), reply, r);
        }
        let fs = self.fs.clone();
        let name = name.to_owned();
        self.spawn(
            async move {
                let result = fs.lookup(parent.0, &name).await;
                reply_entry(fs.stats(), reply, result)
            }
            .instrument(span),
        );
    }

    /// A creation: only the announcer's, of its staged path (see [`crate::fs::announce`]).
    fn create_node(
        &self,
        req: &Request,
        op: &'static str,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
    ) {
        if self.fs.is_announcer(req.pid()) && self.fs.announced_create(parent.0, name) {
            let _span = span(op, req, parent, Some(name)).entered();
            return reply_entry(self.fs.stats(), reply, self.fs.lookup_held(parent.0, name));
        }
        reply.error(read_only(self.fs.stats()));
    }

    /// A removal: only the announcer's, of its staged path; it removes the kernel's entry alone.
    fn remove_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        dir: bool,
        reply: ReplyEmpty,
    ) {
        if self.fs.is_announcer(req.pid()) && self.fs.announced_remove(parent.0, name, dir) {
            return reply.ok();
        }
        reply.error(read_only(self.fs.stats()));
    }
}

/// The errno of a failed request, counted and (but for the everyday ENOENT) logged at debug.
fn errno(stats: &Stats, op: &'static str, err: &Error) -> Errno {
    match err {
        Error::NotFound => {}
        _ => debug!(op, error = %err, "request failed"),
    }
    stats.request_failed(op, err.errno());
    Errno::from_i32(err.errno())
}

/// A request that would change the filesystem: refused, and counted.
fn read_only(stats: &Stats) -> Errno {
    stats.request_failed("modify", libc::EROFS);
    Errno::EROFS
}

/// The span a request runs in.
fn span(op: &'static str, req: &Request, ino: INodeNo, name: Option<&OsStr>) -> Span {
    debug_span!(
        "request",
        op,
        ino = ino.0,
        name = name.map(tracing::field::debug),
        pid = req.pid()
    )
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        flags: 0,
        blksize: 4096,
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

/// The xattr protocol: a zero size asks for the length; a buffer too small is ERANGE.
fn reply_sized(stats: &Stats, op: &'static str, reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        stats.request_failed(op, libc::ERANGE);
        reply.error(Errno::from_i32(libc::ERANGE));
    }
}

fn reply_entry(stats: &Stats, reply: ReplyEntry, result: Result<Entry, Error>) {
    match result {
        Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(e.generation)),
        Err(err) => reply.error(errno(stats, "lookup", &err)),
    }
}

fn reply_attr(stats: &Stats, reply: ReplyAttr, op: &'static str, result: Result<Entry, Error>) {
    match result {
        Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
        Err(err) => reply.error(errno(stats, op, &err)),
    }
}

impl<B: Backend> Filesystem for FuseFs<B> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // With auto_inval_data the kernel drops a file's cached pages when a fresh GETATTR shows
        // a new mtime or size, so a value refreshed by TTL expiry is read anew.
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        // Without it the kernel sends one lookup or readdir of a directory at a time: readers
        // of different names in one directory would queue behind each other's fetches, and
        // could never share a call. The core is safe for concurrent requests.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let span = span("lookup", req, parent, Some(name));
        if self.fs.is_announcer(req.pid()) {
            let _span = span.entered();
            return match self.fs.announced_lookup(parent.0, name) {
                // A name about to be made: no miss to count.
                Some(Err(Error::NotFound)) => reply.error(Errno::ENOENT),
                Some(r) => reply_entry(self.fs.stats(), reply, r),
                // What the announcer walks through is answered from what is held: it acts
                // on a fetch just applied, and never makes one.
                None => reply_entry(self.fs.stats(), reply, self.fs.lookup_held(parent.0, name)),
            };
        }
        self.answer_lookup(span, parent, name, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _span = span("getattr", req, ino, None).entered();
        reply_attr(self.fs.stats(), reply, "getattr", self.fs.getattr(ino.0));
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _span = span("setattr", req, ino, None).entered();
        let owner = mode.is_some() || uid.is_some() || gid.is_some();
        let other = owner || atime.is_some() || mtime.is_some();
        let result = match size {
            Some(size) if !owner && self.fs.is_announcer(req.pid()) => {
                self.fs.announced_truncate(ino.0, size)
            }
            _ => self.fs.setattr(ino.0, size, other),
        };
        reply_attr(self.fs.stats(), reply, "setattr", result);
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _span = span("read", req, ino, None).entered();
        match self.fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(err) => reply.error(errno(self.fs.stats(), "read", &err)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let span = span("write", req, ino, None);
        let fs = self.fs.clone();
        let len = data.len();
        self.spawn(
            async move {
                match fs.write(ino.0, len).await {
                    Ok(n) => reply.written(n as u32),
                    Err(err) => reply.error(errno(fs.stats(), "write", &err)),
                }
            }
            .instrument(span),
        );
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let span = span("readdir", req, ino, None);
        let fill = move |stats: &Stats, r: Result<Entries, Error>| match r {
            Ok(entries) => {
                for e in entries.iter() {
                    if reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => reply.error(errno(stats, "readdir", &err)),
        };
        match span.in_scope(|| self.fs.readdir_now(ino.0, offset)) {
            Some(r) => fill(self.fs.stats(), r),
            None => {
                let fs = self.fs.clone();
                self.spawn(
                    async move {
                        let result = fs.readdir(ino.0, offset).await;
                        fill(fs.stats(), result)
                    }
                    .instrument(span),
                );
            }
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _span = span("getxattr", req, ino, Some(name)).entered();
        let stats = self.fs.stats();
        let attrs = match self.fs.xattrs(ino.0) {
            Ok(attrs) => attrs,
            Err(err) => return reply.error(errno(stats, "getxattr", &err)),
        };
        match attrs.iter().find(|(n, _)| OsStr::new(n) == name) {
            // The usual answer, not a failure: `ls -l` asks every file for its SELinux label
            // and ACLs.
            None => reply.error(Errno::from_i32(libc::ENODATA)),
            Some((_, value)) => reply_sized(stats, "getxattr", reply, size, value),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _span = span("listxattr", req, ino, None).entered();
        let stats = self.fs.stats();
        match self.fs.xattrs(ino.0) {
            Ok(attrs) => {
                let mut names = Vec::new();
                for (name, _) in attrs {
                    names.extend_from_slice(name.as_bytes());
                    names.push(0);
                }
                reply_sized(stats, "listxattr", reply, size, &names);
            }
            Err(err) => reply.error(errno(stats, "listxattr", &err)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(read_only(self.fs.stats()));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(read_only(self.fs.stats()));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.create_node(req, "mknod", parent, name, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.create_node(req, "mkdir", parent, name, reply);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_node(req, parent, name, false, reply);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove_node(req, parent, name, true, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(read_only(self.fs.stats()));
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(read_only(self.fs.stats()));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(read_only(self.fs.stats()));
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(read_only(self.fs.stats()));
    }
}
