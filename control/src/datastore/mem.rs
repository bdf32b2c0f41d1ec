//! An in-memory [`Datastore`] for tests: the same semantics as the file store (keys,
//! revisions, compare-and-swap) behind one mutex, shared only within a process.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use super::{check_kind, check_name, stamp, Datastore, DatastoreError, Listing, RawObject};

/// A [`Datastore`] held in memory.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    revision: u64,
    /// (kind, name) → (revision, stamped value).
    objects: BTreeMap<(String, String), (u64, Value)>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied mutation (each one
        // is a single insert or remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(kind: &str, name: &str) -> Result<(String, String), DatastoreError> {
    check_kind(kind)?;
    check_name(name)?;
    Ok((kind.to_string(), name.to_string()))
}

fn raw(kind: &str, name: &str, revision: u64, value: &Value) -> RawObject {
    RawObject {
        kind: kind.to_string(),
        name: name.to_string(),
        revision,
        value: value.clone(),
    }
}

impl Inner {
    fn write(&mut self, key: (String, String), value: Value) -> Result<RawObject, DatastoreError> {
        let revision = self.revision + 1;
        let value = stamp(&key.0, &key.1, value, revision)?;
        self.revision = revision;
        let obj = raw(&key.0, &key.1, revision, &value);
        self.objects.insert(key, (revision, value));
        Ok(obj)
    }

    fn check_revision(
        &self,
        key: &(String, String),
        expected: Option<u64>,
    ) -> Result<(), DatastoreError> {
        let Some((current, _)) = self.objects.get(key) else {
            return Err(DatastoreError::NotFound {
                kind: key.0.clone(),
                name: key.1.clone(),
            });
        };
        match expected {
            Some(expected) if expected != *current => Err(DatastoreError::Conflict {
                kind: key.0.clone(),
                name: key.1.clone(),
                expected,
                found: *current,
            }),
            _ => Ok(()),
        }
    }
}

impl Datastore for MemStore {
    fn get(&self, kind: &str, name: &str) -> Result<Option<RawObject>, DatastoreError> {
        let key = key(kind, name)?;
        Ok(self
            .inner()
            .objects
            .get(&key)
            .map(|(rev, value)| raw(kind, name, *rev, value)))
    }

    fn list(&self, kind: &str) -> Result<Listing<RawObject>, DatastoreError> {
        check_kind(kind)?;
        // Values are stored only after `stamp` checked them, so every one is readable here;
        // documents of the wrong shape show up as damaged in `list_as`.
        let items = self
            .inner()
            .objects
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|((_, name), (rev, value))| raw(kind, name, *rev, value))
            .collect();
        Ok(Listing {
            items,
            damaged: Vec::new(),
        })
    }

    fn create(&self, kind: &str, name: &str, value: Value) -> Result<RawObject, DatastoreError> {
        let key = key(kind, name)?;
        let mut inner = self.inner();
        if inner.objects.contains_key(&key) {
            return Err(DatastoreError::AlreadyExists {
                kind: key.0,
                name: key.1,
            });
        }
        inner.write(key, value)
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: Value,
        expected_revision: u64,
    ) -> Result<RawObject, DatastoreError> {
        let key = key(kind, name)?;
        let mut inner = self.inner();
        inner.check_revision(&key, Some(expected_revision))?;
        inner.write(key, value)
    }

    fn delete(
        &self,
        kind: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), DatastoreError> {
        let key = key(kind, name)?;
        let mut inner = self.inner();
        inner.check_revision(&key, expected_revision)?;
        inner.objects.remove(&key);
        inner.revision += 1;
        Ok(())
    }

    fn revision(&self) -> Result<u64, DatastoreError> {
        Ok(self.inner().revision)
    }
}
