//! The power-cut filesystem: a FUSE passthrough to a backing directory (the "disk") that keeps
//! every file's written data in memory (the "page cache") until the file is fsynced, and on a
//! power cut throws all of it away and fails every later request.
//!
//! What it models:
//! - `write` goes to a per-inode cache of 4 KiB pages and never to the disk by itself; reads see
//!   the cache over the disk, so the processes see their writes as on a real page cache.
//! - `fsync` and `fdatasync` (both reach FUSE as FSYNC) on any descriptor of a file write that
//!   file's cached pages and size to the disk and fsync the backing file; once they return, that
//!   data survives a cut. Like Linux, the cache is per inode, not per descriptor.
//! - A truncation (`ftruncate`, `O_TRUNC`) is data too: it reaches the disk with the next fsync.
//! - `close` (FUSE FLUSH and RELEASE) makes nothing durable, as on a real filesystem.
//! - `sync_file_range(2)` has no FUSE request: the kernel never tells this filesystem about it, so
//!   it makes nothing durable. Its man page promises no more where a write extends a file (the
//!   size and block allocation are metadata it never writes) and it never flushes the device's
//!   write cache, so a real disk loses such data too on a power cut.
//! - On a cut every unsynced page and size is dropped and every later request fails with EIO,
//!   so the disk holds exactly what was fsynced before the cut.
//!
//! What it does not model:
//! - Metadata is synchronous: create, mkdir, unlink, rmdir, rename, chmod and chown reach the
//!   disk at once and survive a cut without an fsync of the directory. A real filesystem may
//!   lose a new file's directory entry (or a rename) unless the directory is fsynced, so this
//!   test cannot catch a missing directory fsync: the broker fsyncs its store directory anyway.
//! - Writes are never partly durable: no torn pages, no reordering, no data written back early
//!   by the kernel (a real cut may keep some unsynced writes; this one keeps none, the harshest
//!   case for a "receipt means durable" promise).
//! - Timestamps are not set (setattr's times are accepted and ignored); symlinks, hard links,
//!   device nodes and extended attributes are refused; byte-range and flock locks are the
//!   kernel's local ones (as with bindfs without lock forwarding), shared by every process on
//!   the mount, which is all one host needs.
//! - mmap'd writes: the kernel's write-through mode (no writeback cache, fuser's default) sends
//!   every write(2) here, but shared writable mappings are not supported. sled does not map its
//!   files.

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The cache's page size.
const PAGE: u64 = 4096;

/// Attributes and entries are not cached by the kernel: every lookup and stat asks here, so
/// the sizes it sees include unsynced writes and nothing stale survives a rename.
const TTL: Duration = Duration::ZERO;

/// What a cut threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    /// Files that had unsynced data.
    pub files: usize,
    /// Unsynced pages dropped (4 KiB each).
    pub pages: usize,
}

/// The filesystem, given to fuser.
pub struct PowercutFs {
    state: Arc<Mutex<State>>,
}

/// The power switch of a [`PowercutFs`], for another thread (a signal handler's).
#[derive(Clone)]
pub struct Switch {
    state: Arc<Mutex<State>>,
}

impl Switch {
    /// Cuts the power: drops every unsynced write and fails every later request. A request being
    /// served holds the state, so a cut falls between two requests: an fsync that returned before
    /// it is on the disk.
    pub fn cut(&self) -> Lost {
        let mut state = lock(&self.state);
        state.cut = true;
        let lost = Lost {
            files: state.cache.len(),
            pages: state.cache.values().map(|d| d.pages.len()).sum(),
        };
        state.cache.clear();
        lost
    }
}

/// Unsynced data of one file.
struct Dirty {
    /// Page index -> the page's bytes, as the processes wrote them.
    pages: BTreeMap<u64, Box<[u8]>>,
    /// The file's size as the processes see it.
    size: u64,
    /// The smallest size the file was truncated to since its last sync: the disk's bytes from
    /// here on are no longer the file's (they read as zeros until written again).
    floor: u64,
}

struct State {
    /// FUSE inode -> path on the disk. The root is inode 1; every other inode is the backing
    /// file's own inode number, which is unique on one backing filesystem.
    paths: HashMap<u64, PathBuf>,
    /// Open files by handle, each with its inode. Opened read-write whatever the process asked
    /// (the kernel checks the process's permissions: the mount uses `default_permissions`), so
    /// an fsync through any handle can write the inode's pages.
    open: HashMap<u64, (u64, File)>,
    next_fh: u64,
    cache: HashMap<u64, Dirty>,
    cut: bool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(err: std::io::Error) -> Errno {
    Errno::from(err)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs.max(0) as u64, nsecs.clamp(0, 999_999_999) as u32)
}

fn kind_of(md: &Metadata) -> FileType {
    FileType::from_std(md.file_type()).unwrap_or(FileType::RegularFile)
}

fn attr_of(ino: u64, md: &Metadata, dirty: Option<&Dirty>) -> FileAttr {
    let size = dirty.map_or(md.size(), |d| d.size);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: dirty.map_or(md.blocks(), |d| d.size.div_ceil(512)),
        atime: time(md.atime(), md.atime_nsec()),
        mtime: time(md.mtime(), md.mtime_nsec()),
        ctime: time(md.ctime(), md.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(md),
        perm: (md.mode() & 0o7777) as u16,
        nlink: md.nlink() as u32,
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev() as u32,
        blksize: PAGE as u32,
        flags: 0,
    }
}

/// Reads up to `buf.len()` bytes at `offset`, zero-filling past the end of the file.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(done)
}

impl State {
    fn path(&self, ino: u64) -> Result<PathBuf, Errno> {
        self.paths.get(&ino).cloned().ok_or(Errno::ENOENT)
    }

    /// The FUSE inode of a backing file: 1 for the root, its own inode number otherwise.
    fn ino_of(&self, md: &Metadata) -> u64 {
        let root = self.paths.get(&INodeNo::ROOT.0);
        match root.and_then(|p| std::fs::symlink_metadata(p).ok()) {
            Some(root) if root.ino() == md.ino() && root.dev() == md.dev() => INodeNo::ROOT.0,
            _ => md.ino(),
        }
    }

    /// Registers `path` (just looked up or created) and returns its attributes.
    fn entry(&mut self, path: PathBuf) -> Result<FileAttr, Errno> {
        let md = std::fs::symlink_metadata(&path).map_err(errno)?;
        let ino = self.ino_of(&md);
        self.paths.insert(ino, path);
        Ok(attr_of(ino, &md, self.cache.get(&ino)))
    }

    fn attr(&self, ino: u64, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let md = match fh.and_then(|fh| self.open.get(&fh.0)) {
            Some((_, file)) => file.metadata(),
            None => std::fs::symlink_metadata(self.path(ino)?),
        }
        .map_err(errno)?;
        Ok(attr_of(ino, &md, self.cache.get(&ino)))
    }

    /// A file of inode `ino` on the disk: the handle's, or opened by path.
    fn backing(&self, ino: u64, fh: Option<FileHandle>) -> Result<File, Errno> {
        if let Some((_, file)) = fh.and_then(|fh| self.open.get(&fh.0)) {
            return file.try_clone().map_err(errno);
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path(ino)?)
            .map_err(errno)
    }

    /// The inode's unsynced data, started from the disk's size if it has none yet.
    fn dirty(&mut self, ino: u64, file: &File) -> Result<&mut Dirty, Errno> {
        let entry = match self.cache.entry(ino) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let size = file.metadata().map_err(errno)?.size();
                entry.insert(Dirty {
                    pages: BTreeMap::new(),
                    size,
                    floor: size,
                })
            }
        };
        Ok(entry)
    }

    /// Drops what is known of a file that no longer exists at `path`.
    fn forget_path(&mut self, path: &Path) {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            if md.nlink() <= 1 {
                let ino = self.ino_of(&md);
                self.cache.remove(&ino);
                self.paths.remove(&ino);
            }
        }
    }
}

impl Dirty {
    /// Page `index` as the processes see it: cached, or read from the disk (zeros from `floor`).
    fn page(&mut self, file: &File, index: u64) -> Result<&mut [u8], Errno> {
        if !self.pages.contains_key(&index) {
            let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
            let start = index * PAGE;
            if start < self.floor {
                let valid = ((self.floor - start).min(PAGE)) as usize;
                read_full(file, &mut page[..valid], start).map_err(errno)?;
            }
            self.pages.insert(index, page);
        }
        Ok(self.pages.get_mut(&index).expect("just inserted"))
    }

    fn write(&mut self, file: &File, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            let (index, within) = (at / PAGE, (at % PAGE) as usize);
            let n = (PAGE as usize - within).min(data.len() - done);
            self.page(file, index)?[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        self.size = self.size.max(offset + data.len() as u64);
        Ok(())
    }

    fn read(&mut self, file: &File, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let (index, within) = (at / PAGE, (at % PAGE) as usize);
            let n = ((PAGE - within as u64).min(end - at)) as usize;
            match self.pages.get(&index) {
                Some(page) => out.extend_from_slice(&page[within..within + n]),
                None => {
                    let mut buf = vec![0u8; n];
                    if at < self.floor {
                        let valid = ((self.floor - at).min(n as u64)) as usize;
                        read_full(file, &mut buf[..valid], at).map_err(errno)?;
                    }
                    out.extend_from_slice(&buf);
                }
            }
            at += n as u64;
        }
        Ok(out)
    }

    fn truncate(&mut self, file: &File, size: u64) -> Result<(), Errno> {
        if size < self.size {
            self.pages.retain(|&index, _| index * PAGE < size);
            if !size.is_multiple_of(PAGE) {
                let within = (size % PAGE) as usize;
                self.page(file, size / PAGE)?[within..].fill(0);
            }
            self.floor = self.floor.min(size);
        }
        self.size = size;
        Ok(())
    }

    /// Writes the pages and the size to the disk and fsyncs it.
    fn sync(&self, file: &File) -> std::io::Result<()> {
        file.set_len(self.floor)?;
        for (&index, page) in &self.pages {
            let start = index * PAGE;
            if start < self.size {
                let len = (self.size - start).min(PAGE) as usize;
                file.write_all_at(&page[..len], start)?;
            }
        }
        file.set_len(self.size)?;
        file.sync_all()
    }
}

impl PowercutFs {
    /// A filesystem over the directory `disk`, powered on.
    pub fn new(disk: &Path) -> std::io::Result<PowercutFs> {
        let disk = disk.canonicalize()?;
        let mut paths = HashMap::new();
        paths.insert(INodeNo::ROOT.0, disk);
        Ok(PowercutFs {
            state: Arc::new(Mutex::new(State {
                paths,
                open: HashMap::new(),
                next_fh: 1,
                cache: HashMap::new(),
                cut: false,
            })),
        })
    }

    /// The switch that cuts this filesystem's power.
    pub fn switch(&self) -> Switch {
        Switch {
            state: Arc::clone(&self.state),
        }
    }

    /// Runs `op` on the state, powered; after a cut every request fails with EIO.
    fn powered<T>(&self, op: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = lock(&self.state);
        if state.cut {
            return Err(Errno::EIO);
        }
        op(&mut state)
    }

    /// Sets a new entry's owner to the caller's, as the kernel would for a local filesystem.
    fn own(req: &Request, path: &Path) -> Result<(), Errno> {
        std::os::unix::fs::lchown(path, Some(req.uid()), Some(req.gid())).map_err(errno)
    }
}

impl Filesystem for PowercutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.powered(|s| s.entry(s.path(parent.0)?.join(name))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.powered(|s| s.attr(ino.0, fh)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.powered(|s| {
            let path = s.path(ino.0);
            if let Some(mode) = mode {
                let perms = std::fs::Permissions::from_mode(mode & 0o7777);
                std::fs::set_permissions(path.clone()?, perms).map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(path?, uid, gid).map_err(errno)?;
            }
            if let Some(size) = size {
                let file = s.backing(ino.0, fh)?;
                s.dirty(ino.0, &file)?.truncate(&file, size)?;
            }
            s.attr(ino.0, fh)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.powered(|s| {
            let path = s.path(parent.0)?.join(name);
            std::fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(&path)
                .map_err(errno)?;
            Self::own(req, &path)?;
            s.entry(path)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.powered(|s| {
            let path = s.path(parent.0)?.join(name);
            s.forget_path(&path);
            std::fs::remove_file(&path).map_err(errno)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.powered(|s| {
            let path = s.path(parent.0)?.join(name);
            s.forget_path(&path);
            std::fs::remove_dir(&path).map_err(errno)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.powered(|s| {
            if !flags.is_empty() {
                return Err(Errno::EINVAL);
            }
            let from = s.path(parent.0)?.join(name);
            let to = s.path(newparent.0)?.join(newname);
            s.forget_path(&to);
            std::fs::rename(&from, &to).map_err(errno)?;
            // Every known path at or under `from` moves under `to`.
            for path in s.paths.values_mut() {
                if let Ok(rest) = path.strip_prefix(&from) {
                    *path = if rest.as_os_str().is_empty() {
                        to.clone()
                    } else {
                        to.join(rest)
                    };
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.powered(|s| {
            let file = s.backing(ino.0, None)?;
            let fh = s.next_fh;
            s.next_fh += 1;
            s.open.insert(fh, (ino.0, file));
            Ok(fh)
        });
        match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.powered(|s| {
            let path = s.path(parent.0)?.join(name);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .create_new(flags & libc::O_EXCL != 0)
                .mode(mode & !umask & 0o7777)
                .open(&path)
                .map_err(errno)?;
            Self::own(req, &path)?;
            let attr = s.entry(path)?;
            let fh = s.next_fh;
            s.next_fh += 1;
            s.open.insert(fh, (attr.ino.0, file));
            Ok((attr, fh))
        });
        match result {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.powered(|s| {
            let file = s.backing(ino.0, Some(fh))?;
            match s.cache.get_mut(&ino.0) {
                Some(dirty) => dirty.read(&file, offset, size as usize),
                None => {
                    let mut buf = vec![0u8; size as usize];
                    let n = read_full(&file, &mut buf, offset).map_err(errno)?;
                    buf.truncate(n);
                    Ok(buf)
                }
            }
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.powered(|s| {
            let file = s.backing(ino.0, Some(fh))?;
            s.dirty(ino.0, &file)?.write(&file, offset, data)
        });
        match result {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) makes nothing durable.
        match self.powered(|_| Ok(())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The inode's cache outlives its descriptors, as a page cache does.
        lock(&self.state).open.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.powered(|s| {
            let file = s.backing(ino.0, Some(fh))?;
            match s.cache.get(&ino.0) {
                Some(dirty) => dirty.sync(&file).map_err(errno)?,
                None => file.sync_all().map_err(errno)?,
            }
            s.cache.remove(&ino.0);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.powered(|s| s.path(ino.0).map(drop)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.powered(|s| {
            let path = s.path(ino.0)?;
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for entry in std::fs::read_dir(&path).map_err(errno)? {
                let entry = entry.map_err(errno)?;
                let md = entry.metadata().map_err(errno)?;
                entries.push((s.ino_of(&md), kind_of(&md), entry.file_name()));
            }
            Ok(entries)
        });
        match result {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is synchronous here (see the module's header): nothing to do.
        match self.powered(|_| Ok(())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let result = self.powered(|s| {
            nix::sys::statvfs::statvfs(&s.path(INodeNo::ROOT.0)?)
                .map_err(|e| Errno::from_i32(e as i32))
        });
        match result {
            Ok(st) => reply.statfs(
                st.blocks(),
                st.blocks_free(),
                st.blocks_available(),
                st.files(),
                st.files_free(),
                st.block_size() as u32,
                st.name_max() as u32,
                st.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }
}
