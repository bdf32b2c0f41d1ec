//! Where cluster state lives: the [`Datastore`] trait, its backends and the helpers every
//! backend shares.
//!
//! Objects are JSON documents keyed by (kind, name). Every mutation bumps a global
//! revision counter and stamps the new revision into the object's
//! `metadata.resourceVersion`; that revision is the compare-and-swap token of
//! [`Datastore::update`] and [`Datastore::delete`], which is how several writers (nodes'
//! controls, the CLI, concurrent CNI ADDs) change shared documents without losing each
//! other's writes. A [`Watcher`] waits for the revision to move
//! ([`Datastore::wait_for_change`]: etcd watches and says what changed, the file store is
//! woken by inotify and says which object files changed, the memory store polls the cheap
//! [`Datastore::revision`]) and the caller applies what the store said, or re-reads what
//! it needs when the store cannot tell.
//!
//! A damaged document (a file that is not JSON, a value that is not of its kind's shape)
//! never stops work on the others: listings return the readable objects in
//! [`Listing::items`] and each damaged one, with why, in [`Listing::damaged`], for the
//! caller to skip and report. Reading a damaged object by name is an error naming it;
//! deleting it, or applying a good document over it, repairs it.
//!
//! Backends: [`FileStore`] (one directory, safe for several processes on one host),
//! [`EtcdStore`] (etcd v3, for a cluster of several hosts, in Calico's key layout) and
//! [`MemStore`] (tests). [`DatastoreExt`] adds typed access over [`crate::model`] documents.
//! This module knows nothing of IPAM or routes.

mod cluster;
pub mod etcd;
mod file;
mod mem;

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::model::{self, DatastoreConfig, ModelError, Resource};

pub use cluster::{read_cluster_state, ClusterCache};
pub use etcd::EtcdStore;
pub use file::{FileStore, LOCK_TIMEOUT};
pub use mem::MemStore;

/// How often a [`Watcher`] looks at the revision while waiting, with a backend that has no
/// watch of its own (the file and memory stores).
pub const WATCH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Why a datastore operation failed. Nothing was changed when an operation fails.
#[derive(Debug, thiserror::Error)]
pub enum DatastoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    /// The compare-and-swap failed: someone else changed the object first.
    #[error(
        "{kind} {name:?} was changed by someone else (expected revision {expected}, found {found}); read it again and retry"
    )]
    Conflict {
        kind: String,
        name: String,
        expected: u64,
        found: u64,
    },
    /// A kind or name that cannot be a key (empty, a path separator, `..`, …).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidKey {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// The value handed to the store is not a storable document.
    #[error("{kind} {name:?}: {reason}")]
    InvalidObject {
        kind: String,
        name: String,
        reason: String,
    },
    /// A typed update needs the revision it read (`metadata.resourceVersion`).
    #[error("{kind} {name:?}: an update needs metadata.resourceVersion (read the object first)")]
    MissingRevision { kind: String, name: String },
    /// A stored document exists but is not of its kind's shape.
    #[error("stored {kind} {name:?} is unreadable: {}", error.detail())]
    Decode {
        kind: String,
        name: String,
        error: Box<ModelError>,
    },
    /// A file of the store is not what the store wrote.
    #[error("corrupt datastore file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// The directory holds other things than a store: the store does not take it over
    /// (it would make it root's alone).
    #[error(
        "{} is not a tapwire datastore (it holds other files and no .lock); point the datastore at a new or empty directory",
        dir.display()
    )]
    NotAStore { dir: PathBuf },
    /// Another process held the store's lock for longer than an operation waits.
    #[error(
        "the datastore is locked by another process: {} was still locked after {waited_ms} ms",
        path.display()
    )]
    Locked { path: PathBuf, waited_ms: u64 },
    /// The store cannot be written here (a read-only mount, or not this user's): it can
    /// be read, not changed.
    #[error("the datastore {} is read-only here ({source}); it can be read but not changed", dir.display())]
    ReadOnly {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A value stored in etcd is not a document: someone wrote it there by hand, or it
    /// is not tapwire's.
    #[error("corrupt datastore value at etcd key {key}: {reason}")]
    CorruptValue { key: String, reason: String },
    /// etcd refused the operation; names the endpoints.
    #[error("etcd at {endpoints}: {reason}")]
    Etcd { endpoints: String, reason: String },
    /// No endpoint of the datastore answered: it is down or cut off. Worth a retry.
    #[error("the datastore is unreachable: etcd at {endpoints}: {reason}")]
    Unreachable { endpoints: String, reason: String },
    /// The datastore's configuration cannot be used; names its key (`datastore.ca_file`).
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
}

impl DatastoreError {
    /// Whether the error is about one damaged stored document (rather than the store as a
    /// whole): that document can be skipped, deleted or overwritten.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            DatastoreError::Corrupt { .. }
                | DatastoreError::CorruptValue { .. }
                | DatastoreError::Decode { .. }
        )
    }
}

/// A stored document that cannot be read, as listings report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Damaged {
    pub kind: String,
    pub name: String,
    /// Why, naming where it is stored (for the file store, the file).
    pub reason: String,
}

impl Damaged {
    fn new(kind: &str, name: &str, error: &DatastoreError) -> Damaged {
        Damaged {
            kind: kind.to_string(),
            name: name.to_string(),
            reason: error.to_string(),
        }
    }
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "damaged {} {:?}: {}", self.kind, self.name, self.reason)
    }
}

/// What a listing found: the readable objects, sorted by name, and the damaged ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub damaged: Vec<Damaged>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing {
            items: Vec::new(),
            damaged: Vec::new(),
        }
    }
}

/// One stored object: its key, revision and document.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    pub kind: String,
    pub name: String,
    /// The global revision of the object's last write (also in `metadata.resourceVersion`).
    pub revision: u64,
    pub value: Value,
}

/// A store of documents keyed by (kind, name), with compare-and-swap updates and a global
/// revision. Implementations are safe to share between threads; the file store is also
/// safe to share between processes.
pub trait Datastore: Send + Sync + fmt::Debug {
    /// The object, or `None` when there is none.
    fn get(&self, kind: &str, name: &str) -> Result<Option<RawObject>, DatastoreError>;

    /// Every object of `kind`, sorted by name; objects that cannot be read are listed in
    /// [`Listing::damaged`] instead. An error means the listing as a whole failed.
    fn list(&self, kind: &str) -> Result<Listing<RawObject>, DatastoreError>;

    /// Stores a new object; [`DatastoreError::AlreadyExists`] if the key is taken.
    /// `value` must be a JSON object; its `metadata.name` (added if absent) must be `name`.
    fn create(&self, kind: &str, name: &str, value: Value) -> Result<RawObject, DatastoreError>;

    /// Replaces an object if its revision is still `expected_revision`, else
    /// [`DatastoreError::Conflict`]; [`DatastoreError::NotFound`] if it is gone.
    fn update(
        &self,
        kind: &str,
        name: &str,
        value: Value,
        expected_revision: u64,
    ) -> Result<RawObject, DatastoreError>;

    /// Deletes an object, if its revision is still `expected_revision` when one is given.
    fn delete(
        &self,
        kind: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), DatastoreError>;

    /// The global revision: it increases with every successful mutation of any object.
    fn revision(&self) -> Result<u64, DatastoreError>;

    /// Whether [`Datastore::wait_for_change`] lists the objects that changed (etcd's
    /// watch and the file store's do; a polled revision cannot): then a reader that keeps what it read
    /// current from those lists has nothing to read after its own writes.
    fn tells_what_changed(&self) -> bool {
        false
    }

    /// Waits up to `timeout` for an object to change after revision `seen`; `None` when
    /// nothing did. Every change after `seen` is reported (none is lost between two calls
    /// that pass on the revision reported), though several may be reported as one.
    /// The default polls [`Datastore::revision`] every [`WATCH_POLL_INTERVAL`] and cannot
    /// tell what changed (`objects: None`); etcd watches and lists each object changed.
    fn wait_for_change(
        &self,
        seen: u64,
        timeout: Duration,
    ) -> Result<Option<Change>, DatastoreError> {
        wait_for_revision(self, seen, timeout, |left| {
            std::thread::sleep(left.min(WATCH_POLL_INTERVAL));
        })
    }
}

/// Reads `store`'s revision until it is not `seen` (a change the store cannot describe)
/// or `timeout` passes, calling `pause` with the time left between two reads.
fn wait_for_revision<S: Datastore + ?Sized>(
    store: &S,
    seen: u64,
    timeout: Duration,
    mut pause: impl FnMut(Duration),
) -> Result<Option<Change>, DatastoreError> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = store.revision()?;
        if now != seen {
            return Ok(Some(Change::Changed {
                revision: now,
                objects: None,
            }));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        pause(left);
    }
}

/// What [`Datastore::wait_for_change`] saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Objects changed, the last of them at `revision`. `objects` lists every change in
    /// the order made when the backend can tell (etcd's watch); `None` when it cannot (a
    /// polled revision): then read again whatever is needed.
    Changed {
        revision: u64,
        objects: Option<Vec<ObjectChange>>,
    },
    /// The history since the revision seen is gone (etcd compacted it): what changed
    /// cannot be told, so everything may have; read it all again. The store was at
    /// `revision`.
    Relist { revision: u64 },
}

impl Change {
    /// The revision to wait from next.
    pub fn revision(&self) -> u64 {
        match self {
            Change::Changed { revision, .. } | Change::Relist { revision } => *revision,
        }
    }
}

/// One object's change, as a watch tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectChange {
    /// Created or replaced: the object as it now is.
    Put(RawObject),
    /// Created or replaced with a value that cannot be read.
    Damaged(Damaged),
    Deleted {
        kind: String,
        name: String,
        /// The revision of the deletion.
        revision: u64,
    },
}

/// Opens the datastore a node configuration names.
pub fn open(config: &DatastoreConfig) -> Result<Box<dyn Datastore>, DatastoreError> {
    match config {
        DatastoreConfig::File { path } => Ok(Box::new(FileStore::open(path)?)),
        DatastoreConfig::Etcd(etcd) => Ok(Box::new(EtcdStore::open(etcd)?)),
    }
}

/// Checks a kind: ASCII letters and digits (it becomes a directory name).
pub fn check_kind(kind: &str) -> Result<(), DatastoreError> {
    let bad = |reason: &str| DatastoreError::InvalidKey {
        what: "kind",
        value: kind.to_string(),
        reason: reason.to_string(),
    };
    if kind.is_empty() || kind.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad("only ASCII letters and digits are allowed"));
    }
    Ok(())
}

/// Checks a name with [`model::check_object_name`] (the one rule for every object name).
pub fn check_name(name: &str) -> Result<(), DatastoreError> {
    model::check_object_name(name).map_err(|reason| DatastoreError::InvalidKey {
        what: "name",
        value: name.to_string(),
        reason,
    })
}

/// The largest document a store takes (its JSON encoding): far above any IPPool, Node or
/// IPAM block (a full IPAM block of a /20, the largest block size, is ~300 KiB), far below the API's request cap.
pub const MAX_DOCUMENT_BYTES: usize = 512 << 10;

/// Checks a value about to be stored and stamps its name and revision into `metadata`.
fn stamp(kind: &str, name: &str, mut value: Value, revision: u64) -> Result<Value, DatastoreError> {
    stamp_metadata(&mut value, name, revision).map_err(|reason| DatastoreError::InvalidObject {
        kind: kind.to_string(),
        name: name.to_string(),
        reason,
    })?;
    check_document_size(kind, name, &value)?;
    Ok(value)
}

/// Puts `name` (when it is missing) and `revision` into a document's `metadata`; or why
/// the value is not a document of that name.
fn stamp_metadata(value: &mut Value, name: &str, revision: u64) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err("a document must be a JSON object".into());
    };
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    let Value::Object(metadata) = metadata else {
        return Err("metadata must be an object".into());
    };
    match metadata.get("name") {
        None => {
            metadata.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(format!(
                "metadata.name {other} does not match the key {name:?}"
            ))
        }
    }
    metadata.insert(
        "resourceVersion".into(),
        Value::String(revision.to_string()),
    );
    Ok(())
}

/// Refuses a document larger than [`MAX_DOCUMENT_BYTES`]. Every document is read again
/// and again (each recompute, each ADD): one huge one would slow them all down, and none
/// of tapwire's kinds comes anywhere near the limit.
pub fn check_document_size(kind: &str, name: &str, value: &Value) -> Result<(), DatastoreError> {
    let bytes = serde_json::to_vec(value).map_or(usize::MAX, |b| b.len());
    if bytes > MAX_DOCUMENT_BYTES {
        return Err(DatastoreError::InvalidObject {
            kind: kind.to_string(),
            name: name.to_string(),
            reason: format!(
                "the document is {} KiB; a stored document may be at most {} KiB",
                bytes.div_ceil(1024),
                MAX_DOCUMENT_BYTES / 1024
            ),
        });
    }
    Ok(())
}

/// The revision stamped in a stored value.
fn stamped_revision(value: &Value) -> Option<u64> {
    value
        .get("metadata")?
        .get("resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// Typed access over any [`Datastore`]: documents of [`crate::model`] in and out, with
/// `metadata.resourceVersion` carrying the revision.
pub trait DatastoreExt: Datastore {
    /// The document, if stored.
    fn get_as<T: Resource>(&self, name: &str) -> Result<Option<T>, DatastoreError> {
        self.get(T::KIND, name)?.map(decode).transpose()
    }

    /// Every stored document of the kind, sorted by name; those that cannot be read or
    /// decoded are in [`Listing::damaged`].
    fn list_as<T: Resource>(&self) -> Result<Listing<T>, DatastoreError> {
        let raw = self.list(T::KIND)?;
        let mut listing = Listing {
            items: Vec::with_capacity(raw.items.len()),
            damaged: raw.damaged,
        };
        for obj in raw.items {
            let (kind, name) = (obj.kind.clone(), obj.name.clone());
            match decode(obj) {
                Ok(doc) => listing.items.push(doc),
                Err(e) => listing.damaged.push(Damaged::new(&kind, &name, &e)),
            }
        }
        listing.damaged.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// Stores a new document; returns it with its revision.
    fn create_as<T: Resource>(&self, doc: &T) -> Result<T, DatastoreError> {
        decode(self.create(T::KIND, doc.name(), model::to_document_value(doc))?)
    }

    /// Replaces a document if it has not changed since it was read (its
    /// `metadata.resourceVersion` is the expected revision).
    fn update_as<T: Resource>(&self, doc: &T) -> Result<T, DatastoreError> {
        let expected =
            doc.metadata()
                .revision()
                .ok_or_else(|| DatastoreError::MissingRevision {
                    kind: T::KIND.to_string(),
                    name: doc.name().to_string(),
                })?;
        decode(self.update(T::KIND, doc.name(), model::to_document_value(doc), expected)?)
    }

    /// Creates the document or replaces whatever is stored under its name (last writer
    /// wins, as `calicoctl apply`), a damaged document too; retries a few times if it
    /// races with another writer.
    fn apply_as<T: Resource>(&self, doc: &T) -> Result<T, DatastoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = match self.get(T::KIND, doc.name()) {
                // A damaged document has no revision to compare against: it is removed,
                // and the next round creates the new one.
                Err(e) if e.is_damage() && attempt < 8 => {
                    match self.delete(T::KIND, doc.name(), None) {
                        Ok(()) | Err(DatastoreError::NotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
                other => other?,
            };
            let result = match current {
                None => self.create(T::KIND, doc.name(), model::to_document_value(doc)),
                Some(current) => self.update(
                    T::KIND,
                    doc.name(),
                    model::to_document_value(doc),
                    current.revision,
                ),
            };
            match result {
                Ok(raw) => return decode(raw),
                // Someone else wrote (or deleted) it between our read and write: read again.
                Err(
                    DatastoreError::Conflict { .. }
                    | DatastoreError::AlreadyExists { .. }
                    | DatastoreError::NotFound { .. },
                ) if attempt < 8 => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes a document (if its revision is still `expected_revision`, when given).
    fn delete_as<T: Resource>(
        &self,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), DatastoreError> {
        self.delete(T::KIND, name, expected_revision)
    }
}

impl<D: Datastore + ?Sized> DatastoreExt for D {}

/// Decodes a stored object into its typed document, with `resourceVersion` set.
pub fn decode<T: Resource>(raw: RawObject) -> Result<T, DatastoreError> {
    let mut doc: T =
        model::from_document_value(raw.value).map_err(|error| DatastoreError::Decode {
            kind: raw.kind.clone(),
            name: raw.name.clone(),
            error: Box::new(error),
        })?;
    doc.metadata_mut().resource_version = Some(raw.revision.to_string());
    Ok(doc)
}

/// Notices changes to a store through [`Datastore::wait_for_change`] (an etcd watch, or
/// polling the revision), remembering the last revision reported so that no change is
/// missed between two waits.
#[derive(Debug, Clone)]
pub struct Watcher {
    seen: u64,
}

impl Watcher {
    /// A watcher that has seen the store as it is now.
    pub fn new(store: &dyn Datastore) -> Result<Watcher, DatastoreError> {
        Ok(Watcher {
            seen: store.revision()?,
        })
    }

    /// A watcher that has seen revision `seen` (0: nothing yet).
    pub fn from_revision(seen: u64) -> Watcher {
        Watcher { seen }
    }

    /// The last revision reported.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The new revision if the store changed since the last report, without waiting.
    pub fn poll(&mut self, store: &dyn Datastore) -> Result<Option<u64>, DatastoreError> {
        let now = store.revision()?;
        if now != self.seen {
            self.seen = now;
            return Ok(Some(now));
        }
        Ok(None)
    }

    /// Waits up to `timeout` for a change; the new revision, or `None` on timeout.
    pub fn wait(
        &mut self,
        store: &dyn Datastore,
        timeout: Duration,
    ) -> Result<Option<u64>, DatastoreError> {
        Ok(self
            .wait_for_change(store, timeout)?
            .map(|change| change.revision()))
    }

    /// Waits up to `timeout` for a change, saying whether it is one the store could tell
    /// ([`Change::Changed`]) or a [`Change::Relist`].
    pub fn wait_for_change(
        &mut self,
        store: &dyn Datastore,
        timeout: Duration,
    ) -> Result<Option<Change>, DatastoreError> {
        let change = store.wait_for_change(self.seen, timeout)?;
        if let Some(change) = &change {
            self.seen = change.revision();
        }
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_files_are_rejected() {
        for bad in ["", ".", "..", ".hidden", "a/b", "../etc", "a\0b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(model::MAX_NAME_BYTES + 1)).is_err());
        assert!(check_name(&"x".repeat(model::MAX_NAME_BYTES)).is_ok());
        for good in [
            "default-ipv4-ippool",
            "10-65-0-0-26",
            "k8s-pod-network.abc123",
            "a..b",
        ] {
            assert!(check_name(good).is_ok(), "{good:?} rejected");
        }
        assert!(check_kind("IPPool").is_ok());
        assert!(check_kind("../x").is_err());
        assert!(check_kind("").is_err());
    }

    #[test]
    fn stamp_sets_name_and_revision_and_rejects_mismatches() {
        let v = stamp("IPPool", "p", serde_json::json!({"spec": {}}), 7).unwrap();
        assert_eq!(v["metadata"]["name"], "p");
        assert_eq!(stamped_revision(&v), Some(7));
        let err = stamp(
            "IPPool",
            "p",
            serde_json::json!({"metadata": {"name": "q"}}),
            1,
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(stamp("IPPool", "p", serde_json::json!([1]), 1).is_err());
        let big = "x".repeat(MAX_DOCUMENT_BYTES);
        let err = stamp("IPPool", "p", serde_json::json!({"spec": {"note": big}}), 1).unwrap_err();
        assert!(err.to_string().contains("may be at most 512 KiB"), "{err}");
        assert!(stamp(
            "IPPool",
            "p",
            serde_json::json!({"spec": {"note": "x".repeat(400 << 10)}}),
            1
        )
        .is_ok());
    }
}
