//! The embedded file store: one directory that every control on a host and the CLI share.
//!
//! Layout: `<dir>/<kind>/<name>.json`, one pretty-printed document per object, plus
//! `<dir>/.revision` (the global revision, decimal) and `<dir>/.lock`.
//!
//! Safety between processes: every mutation holds an exclusive `flock(2)` on `.lock`
//! (reads hold a shared one, so a list is a consistent snapshot). Each lock is taken on a
//! freshly opened file, so threads of one process exclude each other too. Every write goes
//! to a temporary file that is fsynced and renamed over the target, then the directory is
//! fsynced: a crash leaves either the old or the new document, never a torn one. The
//! global revision is bumped *before* the object is written, so a crash between the two
//! can only skip a revision, never hand the same revision to two versions of an object.
//! Files that do not parse are reported with their path. A write that fails removes its
//! temporary file.
//!
//! The store holds container ids, namespace paths and pod addresses, and whoever can lock
//! it can stall every CNI call: it is root's alone (directories 0700, files 0600, the lock
//! included), and [`FileStore::open`] tightens a store made before that (or, when another
//! process holds the lock at that moment, the instance's first write does). No operation
//! waits longer than [`LOCK_TIMEOUT`] for another process's lock; then it fails with
//! [`DatastoreError::Locked`]. A store that cannot be written (a read-only mount, a copy
//! owned by someone else) can still be read; writing to it fails with
//! [`DatastoreError::ReadOnly`].
//!
//! Watching ([`Datastore::wait_for_change`]) names the objects that changed: an inotify
//! watch on every kind directory, kept from one wait to the next, sees each object file
//! renamed into place or removed, so that a watcher reads the objects that changed rather
//! than the whole store again. Whatever it cannot vouch for (a lost event, a kind directory
//! made meanwhile, no inotify at all) is reported as a change it cannot describe.
//! Listings are kept between calls the same way: each kind listed is kept parsed, and a
//! later listing reads again only the files touched since (see `ListCache`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fd::OwnedFd;
use rustix::fs::{inotify, FlockOperation};
use serde_json::Value;

use super::{
    check_kind, check_name, stamp, stamped_revision, Change, Damaged, Datastore, DatastoreError,
    Listing, ObjectChange, RawObject,
};

const LOCK_FILE: &str = ".lock";
const REVISION_FILE: &str = ".revision";
const OBJECT_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";
/// The store's directories: root's alone.
const DIR_MODE: u32 = 0o700;
/// The store's files, the lock included (`flock` works on a read-only descriptor, so a
/// readable lock file would let anyone stall the store).
const FILE_MODE: u32 = 0o600;

/// How long an operation waits for a lock another process holds before it fails with
/// [`DatastoreError::Locked`]. Writers hold it for a few milliseconds.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The sleeps between two attempts to take a contended lock: short, so that a waiter
/// finds the gaps between other writers' locks (`flock` has no timed wait).
const LOCK_POLL_MIN: Duration = Duration::from_micros(100);
const LOCK_POLL_MAX: Duration = Duration::from_millis(2);

/// A [`Datastore`] in a directory (see the module docs for the layout and guarantees).
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    lock_timeout: Duration,
    /// Whether [`FileStore::maintain`] has run (shared by clones).
    maintained: Arc<AtomicBool>,
    /// What the watcher has seen since its last wait (shared by clones; one watcher at a
    /// time uses it, any other waits the way a store that cannot tell what changed does).
    feed: Arc<Mutex<Option<Feed>>>,
    /// The documents of the kinds listed so far (shared by clones).
    listed: Arc<Mutex<ListCache>>,
}

/// Holds a `flock` until dropped (closing the file releases it); holds nothing for a
/// store nobody can write (no lock file, and none can be made).
struct Lock {
    _file: Option<File>,
}

/// Whether opening a file failed because the store cannot be written here.
fn is_read_only(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS | libc::EACCES | libc::EPERM)
    )
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DatastoreError + 'a {
    move |source| DatastoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`: makes it root's alone (directories
    /// 0700, files 0600, also of a store made before), and removes temporary files a
    /// crashed writer may have left. A store that cannot be written opens for reading.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore, DatastoreError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&dir)
                .map_err(io_error("creating directory", &dir))?;
        }
        if !Self::is_store_dir(&dir)? {
            return Err(DatastoreError::NotAStore { dir });
        }
        let store = FileStore {
            dir,
            lock_timeout: LOCK_TIMEOUT,
            maintained: Arc::new(AtomicBool::new(false)),
            feed: Arc::new(Mutex::new(None)),
            listed: Arc::new(Mutex::new(ListCache::default())),
        };
        // Without waiting: a busy store is tidied by this instance's first write instead
        // (waiting behind a stream of writers here would starve the open).
        match store.lock_within(FlockOperation::LockExclusive, Duration::ZERO) {
            Ok(_lock) => store.maintain()?,
            // Readable still; every write will say it is read-only.
            Err(DatastoreError::ReadOnly { .. } | DatastoreError::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(store)
    }

    /// Makes the store root's alone and removes temporary files a crashed writer left,
    /// once per instance. Called with the exclusive lock held (a temporary file may be a
    /// write in progress otherwise).
    fn maintain(&self) -> Result<(), DatastoreError> {
        if !self.maintained.load(Ordering::Relaxed) {
            self.tighten_permissions()?;
            self.remove_temp_files()?;
            self.maintained.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The exclusive lock, for a mutation (after [`FileStore::maintain`] if this instance
    /// has not yet).
    fn lock_for_writing(&self) -> Result<Lock, DatastoreError> {
        let lock = self.lock(FlockOperation::LockExclusive)?;
        self.maintain()?;
        Ok(lock)
    }

    /// The same store, waiting at most `timeout` for another process's lock (instead of
    /// [`LOCK_TIMEOUT`]).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> FileStore {
        self.lock_timeout = timeout;
        self
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the store's lock, waiting at most `lock_timeout` for other holders. A shared
    /// lock of a store that cannot be written is taken on a read-only descriptor (or not at
    /// all when there is no lock file: then nobody can write); an exclusive one fails with
    /// [`DatastoreError::ReadOnly`].
    fn lock(&self, operation: FlockOperation) -> Result<Lock, DatastoreError> {
        self.lock_within(operation, self.lock_timeout)
    }

    fn lock_within(
        &self,
        operation: FlockOperation,
        timeout: Duration,
    ) -> Result<Lock, DatastoreError> {
        let path = self.dir.join(LOCK_FILE);
        let exclusive = operation == FlockOperation::LockExclusive;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if is_read_only(&e) && exclusive => {
                return Err(DatastoreError::ReadOnly {
                    dir: self.dir.clone(),
                    source: e,
                })
            }
            Err(e) if is_read_only(&e) => match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lock { _file: None }),
                Err(e) => return Err(io_error("opening lock file", &path)(e)),
            },
            Err(e) => return Err(io_error("opening lock file", &path)(e)),
        };
        let attempt = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        let started = Instant::now();
        let mut pause = LOCK_POLL_MIN;
        loop {
            match rustix::fs::flock(&file, attempt) {
                Ok(()) => return Ok(Lock { _file: Some(file) }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let waited = started.elapsed();
                    if waited >= timeout {
                        return Err(DatastoreError::Locked {
                            path,
                            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                        });
                    }
                    std::thread::sleep(pause.min(timeout - waited));
                    pause = (pause * 2).min(LOCK_POLL_MAX);
                }
                Err(errno) => return Err(io_error("locking", &path)(errno.into())),
            }
        }
    }

    /// Makes every directory of the store 0700 and every file 0600 (a store made by an
    /// older version was world-readable). Called with the exclusive lock held.
    fn tighten_permissions(&self) -> Result<(), DatastoreError> {
        set_mode(&self.dir, DIR_MODE)?;
        let mut dirs = vec![self.dir.clone()];
        dirs.extend(self.kind_dirs()?);
        for (depth, dir) in dirs.iter().enumerate() {
            if depth > 0 {
                set_mode(dir, DIR_MODE)?;
            }
            let entries = fs::read_dir(dir).map_err(io_error("listing", dir))?;
            for entry in entries {
                let entry = entry.map_err(io_error("listing", dir))?;
                // Symbolic links and the like are not the store's.
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    set_mode(&entry.path(), FILE_MODE)?;
                }
            }
        }
        Ok(())
    }

    /// Whether the directory is a store (or can become one): it holds the store's lock or
    /// revision file, or nothing but kind directories (a new store is empty). Anything
    /// else is someone else's directory, whose permissions the store must not change.
    fn is_store_dir(dir: &Path) -> Result<bool, DatastoreError> {
        if dir.join(LOCK_FILE).exists() || dir.join(REVISION_FILE).exists() {
            return Ok(true);
        }
        for entry in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let entry = entry.map_err(io_error("listing", dir))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let name = entry.file_name();
            if !is_dir || check_kind(&name.to_string_lossy()).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn kind_dir(&self, kind: &str) -> Result<PathBuf, DatastoreError> {
        check_kind(kind)?;
        Ok(self.dir.join(kind))
    }

    fn object_path(&self, kind: &str, name: &str) -> Result<PathBuf, DatastoreError> {
        check_name(name)?;
        Ok(self.kind_dir(kind)?.join(format!("{name}{OBJECT_SUFFIX}")))
    }

    /// Reads one object file; `None` if it does not exist.
    fn read_object(
        path: &Path,
        kind: &str,
        name: &str,
    ) -> Result<Option<RawObject>, DatastoreError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading", path)(e)),
        };
        let corrupt = |reason: String| DatastoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let revision = stamped_revision(&value)
            .ok_or_else(|| corrupt("no numeric metadata.resourceVersion".into()))?;
        Ok(Some(RawObject {
            kind: kind.to_string(),
            name: name.to_string(),
            revision,
            value,
        }))
    }

    /// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the
    /// directory. When a step fails (a full disk), the temporary file is removed.
    fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DatastoreError> {
        let parent = path.parent().unwrap_or(Path::new("."));
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = parent.join(format!(".{file_name}{TEMP_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&temp)
            .map_err(io_error("creating", &temp))?;
        let written = file
            .write_all(bytes)
            .map_err(io_error("writing", &temp))
            .and_then(|()| file.sync_all().map_err(io_error("syncing", &temp)));
        drop(file);
        if let Err(e) = written
            .and_then(|()| fs::rename(&temp, path).map_err(io_error("renaming into place", path)))
        {
            // Best effort: the error to report is the one above.
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        sync_dir(parent)
    }

    /// The revision file's value; `None` when it does not exist. Lock-free: the file is
    /// only ever replaced by rename, so a read sees a whole old or new value.
    fn revision_file(&self) -> Result<Option<u64>, DatastoreError> {
        let path = self.dir.join(REVISION_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| DatastoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("expected a revision number, found {:?}", text.trim()),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", &path)(e)),
        }
    }

    /// The global revision before a mutation; when the file is missing (a fresh store, or
    /// one whose file was removed), the highest revision of any object, so revisions never
    /// go backwards.
    fn read_revision(&self) -> Result<u64, DatastoreError> {
        match self.revision_file()? {
            Some(revision) => Ok(revision),
            None => self.highest_object_revision(),
        }
    }

    fn highest_object_revision(&self) -> Result<u64, DatastoreError> {
        let mut highest = 0;
        for kind_dir in self.kind_dirs()? {
            for (path, name) in object_files(&kind_dir)? {
                // Unreadable files are reported when they are read as objects; here only
                // the readable revisions matter.
                if let Ok(Some(obj)) = Self::read_object(&path, "", &name) {
                    highest = highest.max(obj.revision);
                }
            }
        }
        Ok(highest)
    }

    fn write_revision(&self, revision: u64) -> Result<(), DatastoreError> {
        Self::write_atomic(
            &self.dir.join(REVISION_FILE),
            format!("{revision}\n").as_bytes(),
        )
    }

    fn kind_dirs(&self) -> Result<Vec<PathBuf>, DatastoreError> {
        let mut dirs = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("listing", &self.dir))?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if !hidden && entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    }

    fn remove_temp_files(&self) -> Result<(), DatastoreError> {
        let mut dirs = self.kind_dirs()?;
        dirs.push(self.dir.clone());
        for dir in dirs {
            let entries = fs::read_dir(&dir).map_err(io_error("listing", &dir))?;
            for entry in entries {
                let entry = entry.map_err(io_error("listing", &dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                    let path = entry.path();
                    fs::remove_file(&path).map_err(io_error("removing", &path))?;
                }
            }
        }
        Ok(())
    }

    /// Writes `value` as the new version of an object: bumps the revision, stamps it, writes
    /// the file. Called with the exclusive lock held.
    fn write_object(
        &self,
        kind: &str,
        name: &str,
        path: &Path,
        value: Value,
    ) -> Result<RawObject, DatastoreError> {
        let revision = self.read_revision()? + 1;
        // Stamping also checks the value: a bad one fails before anything is written.
        let value = stamp(kind, name, value, revision)?;
        let mut bytes =
            serde_json::to_vec_pretty(&value).map_err(|e| DatastoreError::InvalidObject {
                kind: kind.to_string(),
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        bytes.push(b'\n');
        let kind_dir = path.parent().unwrap_or(&self.dir);
        if !kind_dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(kind_dir)
                .map_err(io_error("creating directory", kind_dir))?;
            sync_dir(&self.dir)?;
        }
        self.write_revision(revision)?;
        Self::write_atomic(path, &bytes)?;
        Ok(RawObject {
            kind: kind.to_string(),
            name: name.to_string(),
            revision,
            value,
        })
    }
}

/// The `(path, name)` of every object file in a kind directory.
fn object_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, DatastoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing", dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("listing", dir))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with('.') {
            continue;
        }
        if let Some(name) = file_name.strip_suffix(OBJECT_SUFFIX) {
            files.push((entry.path(), name.to_string()));
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// Sets `path`'s permission bits to `mode` unless they already are.
fn set_mode(path: &Path, mode: u32) -> Result<(), DatastoreError> {
    let current = fs::metadata(path)
        .map_err(io_error("reading permissions of", path))?
        .permissions()
        .mode();
    if current & 0o7777 != mode {
        fs::set_permissions(path, Permissions::from_mode(mode))
            .map_err(io_error("restricting permissions of", path))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), DatastoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

impl Datastore for FileStore {
    fn get(&self, kind: &str, name: &str) -> Result<Option<RawObject>, DatastoreError> {
        let path = self.object_path(kind, name)?;
        let _lock = self.lock(FlockOperation::LockShared)?;
        Self::read_object(&path, kind, name)
    }

    fn list(&self, kind: &str) -> Result<Listing<RawObject>, DatastoreError> {
        let dir = self.kind_dir(kind)?;
        let _lock = self.lock(FlockOperation::LockShared)?;
        let mut cache = self
            .listed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.list(self, kind, &dir)
    }

    fn create(&self, kind: &str, name: &str, value: Value) -> Result<RawObject, DatastoreError> {
        let path = self.object_path(kind, name)?;
        let _lock = self.lock_for_writing()?;
        if path.symlink_metadata().is_ok() {
            return Err(DatastoreError::AlreadyExists {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        }
        self.write_object(kind, name, &path, value)
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: Value,
        expected_revision: u64,
    ) -> Result<RawObject, DatastoreError> {
        let path = self.object_path(kind, name)?;
        let _lock = self.lock_for_writing()?;
        let current =
            Self::read_object(&path, kind, name)?.ok_or_else(|| DatastoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            })?;
        if current.revision != expected_revision {
            return Err(DatastoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected: expected_revision,
                found: current.revision,
            });
        }
        self.write_object(kind, name, &path, value)
    }

    fn delete(
        &self,
        kind: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), DatastoreError> {
        let path = self.object_path(kind, name)?;
        let _lock = self.lock_for_writing()?;
        let not_found = || DatastoreError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
        };
        match expected_revision {
            Some(expected) => {
                let current = Self::read_object(&path, kind, name)?.ok_or_else(not_found)?;
                if current.revision != expected {
                    return Err(DatastoreError::Conflict {
                        kind: kind.to_string(),
                        name: name.to_string(),
                        expected,
                        found: current.revision,
                    });
                }
            }
            // An unconditional delete does not read the file, so it also removes a
            // corrupt one.
            None if path.symlink_metadata().is_err() => return Err(not_found()),
            None => {}
        }
        let revision = self.read_revision()? + 1;
        self.write_revision(revision)?;
        fs::remove_file(&path).map_err(io_error("removing", &path))?;
        sync_dir(path.parent().unwrap_or(&self.dir))
    }

    fn revision(&self) -> Result<u64, DatastoreError> {
        // A missing file is a store nobody has written to yet.
        Ok(self.revision_file()?.unwrap_or(0))
    }

    /// The store names what changed. Every mutation renames a new `.revision` into the
    /// directory, and an object file into its kind's directory (or removes it): the watch
    /// on those directories wakes the wait at once and says which objects changed, and
    /// those are read — under the shared lock, so every mutation up to the revision
    /// reported is complete and its event queued. The revision is still read every
    /// [`NOTIFIED_RECHECK`], should an event be lost. While another thread waits on the
    /// same store, and without inotify (no watches left), the change is not described and
    /// the revision is polled every [`super::WATCH_POLL_INTERVAL`].
    fn tells_what_changed(&self) -> bool {
        true
    }

    fn wait_for_change(
        &self,
        seen: u64,
        timeout: Duration,
    ) -> Result<Option<Change>, DatastoreError> {
        if let Ok(mut slot) = self.feed.try_lock() {
            if slot.is_none() {
                *slot = Feed::start(&self.dir, || self.revision())
                    .inspect_err(|err| {
                        tracing::debug!(%err, "no inotify watch on the datastore's kinds; changes are not described");
                    })
                    .ok();
            }
            if let Some(feed) = slot.as_mut() {
                let change = self.wait_described(feed, seen, timeout);
                if feed.replaced {
                    *slot = None;
                }
                return change;
            }
        }
        // Watching starts before the revision is read, so no change slips in between.
        let notify = watch_directory(&self.dir)
            .inspect_err(|err| {
                tracing::debug!(%err, "no inotify watch on the datastore; polling its revision");
            })
            .ok();
        super::wait_for_revision(self, seen, timeout, |left| match &notify {
            Some(fd) => wait_for_events(fd, left.min(NOTIFIED_RECHECK)),
            None => std::thread::sleep(left.min(super::WATCH_POLL_INTERVAL)),
        })
    }
}

impl FileStore {
    /// [`Datastore::wait_for_change`] with the feed's watch: the objects touched since
    /// revision `seen`, read as they are at the revision reported.
    fn wait_described(
        &self,
        feed: &mut Feed,
        seen: u64,
        timeout: Duration,
    ) -> Result<Option<Change>, DatastoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            feed.drain();
            if self.revision()? != seen {
                return self.describe(feed, seen).map(Some);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            wait_readable(&feed.fd, left.min(NOTIFIED_RECHECK));
        }
    }

    /// The change since `seen`: every object the feed saw touched, as stored now, or
    /// `objects: None` when the feed cannot vouch for having seen every change since.
    fn describe(&self, feed: &mut Feed, seen: u64) -> Result<Change, DatastoreError> {
        let _lock = self.lock(FlockOperation::LockShared)?;
        // Every mutation before the lock was taken has its events queued by now.
        feed.drain();
        let revision = self.revision()?;
        let objects = if feed.lost || feed.base > seen {
            None
        } else {
            self.read_touched(&feed.touched, revision)
        };
        feed.base = revision;
        feed.touched.clear();
        feed.lost = false;
        Ok(Change::Changed { revision, objects })
    }

    /// The objects `touched`, as stored at `revision` (each once, whatever happened to it
    /// in between); `None` if one cannot be read for another reason than damage.
    fn read_touched(
        &self,
        touched: &BTreeSet<(String, String)>,
        revision: u64,
    ) -> Option<Vec<ObjectChange>> {
        let mut changes = Vec::with_capacity(touched.len());
        for (kind, name) in touched {
            // A file name that is no key is not the store's.
            let Ok(path) = self.object_path(kind, name) else {
                continue;
            };
            changes.push(match Self::read_object(&path, kind, name) {
                Ok(Some(object)) => ObjectChange::Put(object),
                Ok(None) => ObjectChange::Deleted {
                    kind: kind.clone(),
                    name: name.clone(),
                    revision,
                },
                Err(e) if e.is_damage() => ObjectChange::Damaged(Damaged::new(kind, name, &e)),
                Err(_) => return None,
            });
        }
        Some(changes)
    }
}

/// The documents of each kind listed so far, parsed, kept current by an inotify watch of
/// the store's directories ([`Feed`]): a listing reads only the files touched since the
/// last one, so that listing a kind of a thousand documents after one write costs one
/// file, not a thousand. Without inotify nothing is kept and every listing reads every
/// file.
#[derive(Debug, Default)]
struct ListCache {
    /// `None` before the first listing, and when inotify cannot be had.
    feed: Option<Feed>,
    /// Whether starting the feed failed (it is not tried again).
    unavailable: bool,
    /// Each cached kind's documents.
    kinds: HashMap<String, KindDocuments>,
}

/// One kind's documents by name: readable, or why not.
type KindDocuments = BTreeMap<String, Result<RawObject, Damaged>>;

impl ListCache {
    /// Every document of `kind` (whose directory is `dir`), as [`Datastore::list`] lists
    /// them. Called with the store's shared lock held: every mutation before it has its
    /// events queued, and none happens meanwhile.
    fn list(
        &mut self,
        store: &FileStore,
        kind: &str,
        dir: &Path,
    ) -> Result<Listing<RawObject>, DatastoreError> {
        if self.feed.is_none() && !self.unavailable {
            match Feed::start(&store.dir, || Ok(0)) {
                Ok(feed) => self.feed = Some(feed),
                Err(err) => {
                    tracing::debug!(%err, "no inotify watch on the datastore; listings read every file");
                    self.unavailable = true;
                }
            }
        }
        let Some(feed) = self.feed.as_mut() else {
            return Ok(read_listing(kind, dir)?.0);
        };
        feed.drain();
        if feed.replaced {
            // Nothing kept is of this directory; the next listing watches it anew.
            self.feed = None;
            self.kinds.clear();
            return Ok(read_listing(kind, dir)?.0);
        }
        if std::mem::take(&mut feed.lost) {
            self.kinds.clear();
        }
        for (touched_kind, name) in std::mem::take(&mut feed.touched) {
            let Some(documents) = self.kinds.get_mut(&touched_kind) else {
                continue;
            };
            let Ok(path) = store.object_path(&touched_kind, &name) else {
                continue;
            };
            match FileStore::read_object(&path, &touched_kind, &name) {
                Ok(Some(object)) => {
                    documents.insert(name, Ok(object));
                }
                Ok(None) => {
                    documents.remove(&name);
                }
                Err(e) if e.is_damage() => {
                    documents.insert(name.clone(), Err(Damaged::new(&touched_kind, &name, &e)));
                }
                // Not kept: the next listing reads the kind again.
                Err(_) => {
                    self.kinds.remove(&touched_kind);
                }
            }
        }
        if let Some(documents) = self.kinds.get(kind) {
            let mut listing = Listing::default();
            for document in documents.values() {
                match document {
                    Ok(object) => listing.items.push(object.clone()),
                    Err(damaged) => listing.damaged.push(damaged.clone()),
                }
            }
            return Ok(listing);
        }
        // Watched before it is read, so that no write in between is missed; a kind
        // directory that is not there yet is not kept (the feed sees it made).
        let watched = feed.kinds.values().any(|k| k == kind)
            || (dir.is_dir() && feed.watch_kind(kind).is_ok());
        let (listing, documents) = read_listing(kind, dir)?;
        if let Some(documents) = documents.filter(|_| watched) {
            self.kinds.insert(kind.to_string(), documents);
        }
        Ok(listing)
    }
}

/// Reads every document of `kind` in `dir`: the listing, and the same by name to keep
/// (`None` when a file could not be read for another reason than damage).
fn read_listing(
    kind: &str,
    dir: &Path,
) -> Result<(Listing<RawObject>, Option<KindDocuments>), DatastoreError> {
    let mut listing = Listing::default();
    let mut documents = Some(BTreeMap::new());
    for (path, name) in object_files(dir)? {
        let document = match FileStore::read_object(&path, kind, &name) {
            Ok(Some(obj)) => Ok(obj),
            Ok(None) => continue,
            // One file that cannot be read (not JSON, no revision, an I/O error on it)
            // is that object's problem, not the listing's.
            Err(e) => {
                if !e.is_damage() {
                    documents = None;
                }
                Err(Damaged::new(kind, &name, &e))
            }
        };
        match &document {
            Ok(obj) => listing.items.push(obj.clone()),
            Err(damaged) => listing.damaged.push(damaged.clone()),
        }
        if let Some(documents) = documents.as_mut() {
            documents.insert(name, document);
        }
    }
    Ok((listing, documents))
}

/// The events of object files the feed watches for, in a kind directory.
fn object_events() -> inotify::WatchFlags {
    inotify::WatchFlags::MOVED_TO
        | inotify::WatchFlags::MOVED_FROM
        | inotify::WatchFlags::DELETE
        | inotify::WatchFlags::CLOSE_WRITE
}

/// The objects touched since a revision, from an inotify watch on the store's directory
/// (new kind directories, and `.revision` to wake on) and on each kind directory (object
/// files renamed into place, edited or removed).
#[derive(Debug)]
struct Feed {
    fd: OwnedFd,
    dir: PathBuf,
    /// The kind of each kind directory's watch.
    kinds: HashMap<i32, String>,
    /// Every change after this revision is in `touched`, unless `lost`.
    base: u64,
    /// (kind, name) of the object files touched since `base`.
    touched: BTreeSet<(String, String)>,
    /// Some change since `base` cannot be named: events were dropped (a full queue), a
    /// kind directory was made, replaced or moved away (its first files may have come
    /// before its watch), or the store's directory was replaced.
    lost: bool,
    /// The store's directory (device, inode) when the watch began.
    root: (u64, u64),
    /// The store's directory is no longer the one watched (moved away, replaced by
    /// another, as when a backup is restored): nothing more will be seen through this
    /// feed, and its owner starts a new one.
    replaced: bool,
}

impl Feed {
    /// Watches `dir` and its kind directories; `revision` reads the store's revision,
    /// after the watches are in place (every later change is then seen).
    fn start(
        dir: &Path,
        revision: impl FnOnce() -> Result<u64, DatastoreError>,
    ) -> Result<Feed, DatastoreError> {
        let failed = io_error("watching", dir);
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(|e| failed(e.into()))?;
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::MOVED_FROM
                | inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::CREATE,
        )
        .map_err(|e| io_error("watching", dir)(e.into()))?;
        let root = directory_identity(dir).map_err(io_error("reading", dir))?;
        let mut feed = Feed {
            fd,
            dir: dir.to_path_buf(),
            kinds: HashMap::new(),
            base: 0,
            touched: BTreeSet::new(),
            lost: false,
            root,
            replaced: false,
        };
        let entries = fs::read_dir(dir).map_err(io_error("listing", dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("listing", dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && check_kind(&name).is_ok() {
                feed.watch_kind(&name)
                    .map_err(io_error("watching", &entry.path()))?;
            }
        }
        feed.base = revision()?;
        Ok(feed)
    }

    fn watch_kind(&mut self, kind: &str) -> io::Result<()> {
        let wd = inotify::add_watch(&self.fd, self.dir.join(kind), object_events())?;
        self.kinds.insert(wd, kind.to_string());
        Ok(())
    }

    /// Takes the queued events into `touched`, without waiting.
    fn drain(&mut self) {
        let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
        let (mut new_kinds, mut gone_kinds) = (Vec::new(), Vec::new());
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    self.lost = true;
                    break;
                }
            };
            let flags = event.events();
            if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                self.lost = true;
                continue;
            }
            if flags.contains(inotify::ReadFlags::IGNORED) {
                // A kind directory is gone (removed, or on a file system unmounted); a
                // watch this feed removed itself was already accounted for.
                if self.kinds.remove(&event.wd()).is_some() {
                    self.lost = true;
                }
                continue;
            }
            let Some(name) = event.file_name().and_then(|n| n.to_str().ok()) else {
                continue;
            };
            match self.kinds.get(&event.wd()) {
                Some(kind) => {
                    if let Some(object) = name
                        .strip_suffix(OBJECT_SUFFIX)
                        .filter(|_| !name.starts_with('.'))
                    {
                        self.touched.insert((kind.clone(), object.to_string()));
                    }
                }
                None if flags.contains(inotify::ReadFlags::ISDIR) && check_kind(name).is_ok() => {
                    if flags.contains(inotify::ReadFlags::MOVED_FROM) {
                        gone_kinds.push(name.to_string());
                    } else {
                        new_kinds.push(name.to_string());
                    }
                }
                // `.revision` and the like: a wake-up only.
                None => {}
            }
        }
        for kind in gone_kinds {
            // Moved away with what it held: its watch would follow it.
            self.unwatch_kind(&kind);
            self.lost = true;
        }
        for kind in new_kinds {
            // Made, or moved in over the one watched: its first files may have been
            // renamed into it before the watch.
            self.unwatch_kind(&kind);
            self.lost = true;
            if self.watch_kind(&kind).is_err() {
                tracing::debug!(%kind, "no inotify watch on a new kind directory");
            }
        }
        if directory_identity(&self.dir).ok() != Some(self.root) {
            self.lost = true;
            self.replaced = true;
        }
    }

    /// Stops watching the directory of `kind`, if it is watched.
    fn unwatch_kind(&mut self, kind: &str) {
        let stale: Vec<i32> = self
            .kinds
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in stale {
            self.kinds.remove(&wd);
            // Fails only for a watch the kernel already dropped.
            let _ = inotify::remove_watch(&self.fd, wd);
        }
    }
}

/// The (device, inode) of directory `dir`: another value under the same path is another
/// directory.
fn directory_identity(dir: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(dir)?;
    Ok((meta.dev(), meta.ino()))
}

/// How often a wait woken by inotify reads the revision anyway.
const NOTIFIED_RECHECK: Duration = Duration::from_secs(1);

/// An inotify descriptor watching files written or renamed into `dir`.
fn watch_directory(dir: &Path) -> io::Result<OwnedFd> {
    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
    inotify::add_watch(
        &fd,
        dir,
        inotify::WatchFlags::MOVED_TO | inotify::WatchFlags::CLOSE_WRITE,
    )?;
    Ok(fd)
}

/// Waits up to `timeout` for events on inotify descriptor `fd` and consumes them (which
/// file changed does not matter: the caller reads the revision).
fn wait_for_events(fd: &OwnedFd, timeout: Duration) {
    if !wait_readable(fd, timeout) {
        return;
    }
    let mut buf = [0u8; 4096];
    while matches!(rustix::io::read(fd, &mut buf), Ok(n) if n > 0) {}
}

/// Waits up to `timeout` for inotify descriptor `fd` to have events, leaving them queued;
/// `false` when the wait failed (then it has paused a little, not to spin).
fn wait_readable(fd: &OwnedFd, timeout: Duration) -> bool {
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    if poll(&mut fds, Some(&timeout)).is_err() {
        // Interrupted or failing: the caller reads the revision and waits again; not
        // spinning meanwhile.
        std::thread::sleep(Duration::from_millis(10));
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_wakes_a_waiter_through_inotify() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let notify = watch_directory(dir.path()).unwrap();
        let readable = |fd: &OwnedFd| {
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            poll(&mut fds, Some(&Timespec::default())).unwrap()
        };
        assert_eq!(readable(&notify), 0);
        store.create("Counter", "c", serde_json::json!({})).unwrap();
        assert_eq!(readable(&notify), 1, "the write was notified");
        wait_for_events(&notify, Duration::ZERO);
        assert_eq!(readable(&notify), 0, "the events were consumed");

        // A wait reports a write made while it waits.
        let seen = store.revision().unwrap();
        let change = std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                store.create("Counter", "d", serde_json::json!({})).unwrap();
            });
            store
                .wait_for_change(seen, Duration::from_secs(10))
                .unwrap()
        });
        let Some(Change::Changed {
            revision,
            objects: Some(objects),
        }) = change
        else {
            panic!("not a described change: {change:?}")
        };
        assert_eq!(revision, seen + 1);
        let named: Vec<_> = objects.iter().map(change_name).collect();
        assert_eq!(named, ["put Counter/d"]);
    }

    fn change_name(change: &ObjectChange) -> String {
        match change {
            ObjectChange::Put(o) => format!("put {}/{}", o.kind, o.name),
            ObjectChange::Damaged(d) => format!("damaged {}/{}", d.kind, d.name),
            ObjectChange::Deleted { kind, name, .. } => format!("deleted {kind}/{name}"),
        }
    }

    /// The objects a watcher is told of, as `change_name`s, or `None` for a change the
    /// store could not describe.
    fn next_change(store: &FileStore, seen: &mut u64) -> Option<Vec<String>> {
        let change = store
            .wait_for_change(*seen, Duration::from_secs(5))
            .unwrap()
            .expect("a change");
        *seen = change.revision();
        match change {
            Change::Changed { objects, .. } => objects.map(|o| o.iter().map(change_name).collect()),
            Change::Relist { .. } => None,
        }
    }

    #[test]
    fn a_watcher_is_told_each_object_changed_and_reads_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        for i in 0..50 {
            store
                .create("WorkloadEndpoint", &format!("w{i}"), serde_json::json!({}))
                .unwrap();
        }
        let mut seen = store.revision().unwrap();
        // The first wait starts the watch: a change it did not see is not described.
        store.create("Counter", "c", serde_json::json!({})).unwrap();
        assert_eq!(next_change(&store, &mut seen), None);
        // From then on, each change names its objects, as they are stored now.
        store
            .create("WorkloadEndpoint", "w50", serde_json::json!({"spec": 1}))
            .unwrap();
        assert_eq!(
            next_change(&store, &mut seen),
            Some(vec!["put WorkloadEndpoint/w50".to_string()])
        );
        let w1 = store.get("WorkloadEndpoint", "w1").unwrap().unwrap();
        store
            .update(
                "WorkloadEndpoint",
                "w1",
                serde_json::json!({"spec": 2}),
                w1.revision,
            )
            .unwrap();
        store.delete("WorkloadEndpoint", "w2", None).unwrap();
        store.delete("Counter", "c", None).unwrap();
        store.create("Counter", "c", serde_json::json!({})).unwrap();
        assert_eq!(
            next_change(&store, &mut seen),
            Some(vec![
                "put Counter/c".to_string(),
                "put WorkloadEndpoint/w1".to_string(),
                "deleted WorkloadEndpoint/w2".to_string(),
            ])
        );
        // A file that is no document is named damaged (an edit in place, no new revision
        // of its own: a later write wakes the watcher).
        fs::write(dir.path().join("WorkloadEndpoint/w3.json"), "not json").unwrap();
        store.create("Counter", "d", serde_json::json!({})).unwrap();
        assert_eq!(
            next_change(&store, &mut seen),
            Some(vec![
                "put Counter/d".to_string(),
                "damaged WorkloadEndpoint/w3".to_string(),
            ])
        );
        // A new kind: its first files may have come before its watch.
        store.create("IPPool", "p", serde_json::json!({})).unwrap();
        assert_eq!(next_change(&store, &mut seen), None);
        store.create("IPPool", "q", serde_json::json!({})).unwrap();
        assert_eq!(
            next_change(&store, &mut seen),
            Some(vec!["put IPPool/q".to_string()])
        );
        // A watcher behind the feed (another one, or one that missed a report) is not
        // told a partial story.
        store.create("IPPool", "r", serde_json::json!({})).unwrap();
        let mut behind = seen - 1;
        assert_eq!(next_change(&store, &mut behind), None);
    }

    #[test]
    fn listings_kept_between_calls_see_every_write_of_any_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        // Another instance: another process writing to the same directory.
        let other = FileStore::open(dir.path()).unwrap();
        let names = |store: &FileStore, kind: &str| -> (Vec<String>, Vec<String>) {
            let listing = store.list(kind).unwrap();
            (
                listing
                    .items
                    .iter()
                    .map(|o| format!("{}@{}", o.name, o.revision))
                    .collect(),
                listing.damaged.iter().map(|d| d.name.clone()).collect(),
            )
        };
        assert_eq!(names(&store, "Counter"), (vec![], vec![]));
        // The kind's directory is made after the first listing.
        other.create("Counter", "a", serde_json::json!({})).unwrap();
        other.create("Counter", "b", serde_json::json!({})).unwrap();
        assert_eq!(
            names(&store, "Counter"),
            (vec!["a@1".into(), "b@2".into()], vec![])
        );
        let b = other.get("Counter", "b").unwrap().unwrap();
        other
            .update("Counter", "b", serde_json::json!({"x": 1}), b.revision)
            .unwrap();
        other.delete("Counter", "a", None).unwrap();
        store.create("Counter", "c", serde_json::json!({})).unwrap();
        assert_eq!(
            names(&store, "Counter"),
            (vec!["b@3".into(), "c@5".into()], vec![])
        );
        // Edited in place, by hand: damaged until written anew.
        fs::write(dir.path().join("Counter/c.json"), "{").unwrap();
        assert_eq!(
            names(&store, "Counter"),
            (vec!["b@3".into()], vec!["c".into()])
        );
        assert_eq!(
            store.list("Counter").unwrap(),
            other.list("Counter").unwrap()
        );
        store.delete("Counter", "c", None).unwrap();
        assert_eq!(names(&store, "Counter"), (vec!["b@3".into()], vec![]));
        // What is kept is what a fresh read finds.
        let fresh = FileStore::open(dir.path()).unwrap();
        assert_eq!(
            store.list("Counter").unwrap(),
            fresh.list("Counter").unwrap()
        );
    }

    #[test]
    fn a_store_directory_restored_under_a_running_reader_is_read_anew() {
        let root = tempfile::tempdir().unwrap();
        let (live, restored) = (root.path().join("store"), root.path().join("restored"));
        let store = FileStore::open(&live).unwrap();
        store.create("Counter", "a", serde_json::json!({})).unwrap();
        store.create("Counter", "b", serde_json::json!({})).unwrap();
        let names = |store: &FileStore| -> Vec<String> {
            let listing = store.list("Counter").unwrap();
            listing.items.iter().map(|o| o.name.clone()).collect()
        };
        assert_eq!(names(&store), ["a", "b"]);
        let mut seen = store.revision().unwrap();
        // Starts the watcher's feed (a change before it is not described).
        store.create("Counter", "c", serde_json::json!({})).unwrap();
        assert_eq!(next_change(&store, &mut seen), None);
        assert_eq!(names(&store), ["a", "b", "c"]);

        // A kind's directory replaced by another (moved in over it): its documents.
        let other = FileStore::open(&restored).unwrap();
        other.create("Counter", "x", serde_json::json!({})).unwrap();
        other.create("Counter", "y", serde_json::json!({})).unwrap();
        other.create("Counter", "z", serde_json::json!({})).unwrap();
        fs::rename(live.join("Counter"), root.path().join("old-counters")).unwrap();
        fs::rename(restored.join("Counter"), live.join("Counter")).unwrap();
        assert_eq!(names(&store), ["x", "y", "z"]);
        // A write through the store is seen in the new directory.
        store.create("Counter", "w", serde_json::json!({})).unwrap();
        assert_eq!(names(&store), ["w", "x", "y", "z"]);
        assert_eq!(next_change(&store, &mut seen), None, "not described");

        // The whole store replaced (a backup restored): its documents, and the watcher
        // is told the change cannot be described, then follows the new directory.
        let backup = root.path().join("backup");
        let restored = FileStore::open(&backup).unwrap();
        for name in ["p", "q", "r", "s", "t", "u", "v"] {
            restored
                .create("Counter", name, serde_json::json!({}))
                .unwrap();
        }
        fs::rename(&live, root.path().join("replaced")).unwrap();
        fs::rename(&backup, &live).unwrap();
        assert_eq!(names(&store), ["p", "q", "r", "s", "t", "u", "v"]);
        assert_eq!(next_change(&store, &mut seen), None, "not described");
        store.create("Counter", "o", serde_json::json!({})).unwrap();
        assert_eq!(
            next_change(&store, &mut seen),
            None,
            "a new feed's first change"
        );
        store.delete("Counter", "p", None).unwrap();
        assert_eq!(
            next_change(&store, &mut seen),
            Some(vec!["deleted Counter/p".to_string()])
        );
        assert_eq!(names(&store), ["o", "q", "r", "s", "t", "u", "v"]);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory that is not empty: the rename fails.
        let target = dir.path().join("x.json");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"").unwrap();
        let err = FileStore::write_atomic(&target, b"{}\n").unwrap_err();
        assert!(err.to_string().contains("renaming into place"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["x.json"], "the temporary file is gone");
    }
}
