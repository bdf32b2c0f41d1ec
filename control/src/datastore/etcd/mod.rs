//! The etcd v3 store: the [`Datastore`] of a cluster of several hosts.
//!
//! Keys follow Calico's layout ([`keys`]); values are tapwire's JSON documents, stored
//! without `metadata.resourceVersion`, which every read fills in from the key's
//! `mod_revision` (as Calico does). So a document's revision *is* etcd's mod revision and
//! the global revision is etcd's store revision (a response header's `revision`):
//!
//! - create: `If(Version(key) = 0) Then Put(key)`, else [`DatastoreError::AlreadyExists`];
//! - update: `If(Version(key) > 0 ∧ ModRevision(key) = expected) Then Put(key) Else
//!   Get(key)`: the `Get` tells a [`DatastoreError::Conflict`] (with the revision found)
//!   from a [`DatastoreError::NotFound`], in the same round trip;
//! - delete with a revision: the same compare, `Then Delete(key)`;
//! - list: a range over the kind's prefix, in pages read at one revision; a value that is
//!   not a JSON object of the right name is reported in [`super::Listing::damaged`] with its
//!   key.
//!
//! Changes: [`Datastore::wait_for_change`] opens a watch on the whole `/calico/` prefix
//! from the revision after the last one seen and returns at the first event (the caller,
//! a [`super::Watcher`], keeps that revision and the next wait starts after it, so changes
//! made between two waits are reported at once). A stream that breaks (an etcd restart, a
//! member that lost its leader) is opened again from that same revision, so no event is
//! missed; when etcd has compacted that history away, the answer is [`Change::Relist`]:
//! everything may have changed, read it all again.
//!
//! Time: every call is bounded ([`OP_TIMEOUT`], connecting [`CONNECT_TIMEOUT`] per
//! endpoint): a dead or unreachable etcd is a [`DatastoreError::Unreachable`] naming the endpoints,
//! never a hang. Failover is explicit, one client per endpoint: a call goes to the endpoint
//! that answered last, then to the others in turn (see `EtcdStore::run` for which failures
//! move on: a write that may have been applied is never sent twice); HTTP/2 keep-alives
//! notice a connection that died silently.
//!
//! The client is `etcd-client` (tonic): async, so the store owns a tokio runtime with one
//! worker thread, and each blocking call here runs its future on the caller's thread
//! with `block_on`. Nothing else of tapwire is async, and nothing here knows what the
//! documents mean (IPAM, routes) beyond their names.

pub mod keys;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde_json::Value;

use super::{
    check_kind, check_name, stamp, stamp_metadata, Change, Damaged, Datastore, DatastoreError,
    Listing, ObjectChange, RawObject,
};
use crate::model::{read_pem, EtcdConfig};

/// How long one operation may take, from sending it to its answer (connecting included).
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long connecting to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 pings on an idle connection (a watch waiting for changes), and how long a ping
/// may go unanswered before the connection counts as dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Keys per page of a listing: at most 256 documents of at most 512 KiB each.
const PAGE_KEYS: i64 = 256;
/// The largest answer taken from etcd (a full page of the largest documents).
const MAX_ANSWER_BYTES: usize = 256 << 20;
/// The pause before a broken watch is opened again.
const WATCH_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// A [`Datastore`] in etcd v3 (see the module docs for the layout and guarantees).
pub struct EtcdStore {
    /// One client per endpoint, in the configuration's order.
    clients: Vec<Client>,
    /// The endpoint that answered last: where the next call goes first.
    current: AtomicUsize,
    /// The endpoints, for messages (`http://10.0.0.1:2379, http://10.0.0.2:2379`).
    endpoints: String,
    op_timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

/// An error's message with its causes (`transport error: … : connection refused`).
fn describe(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

/// `text`, then each cause that it does not already say.
fn with_causes(mut text: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// An etcd client error, shortly: a gRPC status by its message and causes (`tcp connect
/// error: Connection refused (os error 111)`), not its debug form.
fn describe_call(error: &etcd_client::Error) -> String {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return describe(error);
    };
    let mut text = with_causes(
        status.message().to_string(),
        std::error::Error::source(status),
    );
    if text.is_empty() {
        text = format!("{:?}", status.code());
    }
    text
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

/// A revision as etcd's signed one (a revision past `i64::MAX` can match nothing).
fn etcd_revision(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

/// Whether a call only reads (and so may be sent again to another endpoint after any
/// failure) or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
}

/// Whether a call failed before it reached etcd (no connection could be made): safe to
/// send to another endpoint, a write too.
fn not_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && describe_call(error).contains("connect")
        }
        _ => false,
    }
}

/// Whether another endpoint may do better for a read: this one is unavailable (cut off
/// from its leader, shutting down).
fn worth_another(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status) if status.code() == tonic::Code::Unavailable)
}

/// How one watch ended.
enum WatchEnd {
    /// Objects changed, the last at this revision.
    Changed(u64, Vec<ObjectChange>),
    Compacted,
    TimedOut,
    /// The stream could not be opened (`opening`) or broke: worth opening again from the
    /// same place.
    Broken {
        opening: bool,
        reason: String,
    },
    /// etcd refused the watch.
    Refused(String),
}

/// What one watch event did to a document; `None` for a key that is not one of
/// tapwire's objects.
fn object_change(event: &etcd_client::Event) -> Option<ObjectChange> {
    let kv = event.kv()?;
    let (kind, name) = keys::object(std::str::from_utf8(kv.key()).ok()?)?;
    // A deleted key's event carries version 0 (a stored key's is at least 1). Read so
    // rather than through `Event::event_type`, which panics on a type it does not know.
    if kv.version() == 0 {
        return Some(ObjectChange::Deleted {
            kind,
            name,
            revision: u64::try_from(kv.mod_revision()).unwrap_or(0),
        });
    }
    Some(match EtcdStore::decode(&kind, &name, kv) {
        Ok(object) => ObjectChange::Put(object),
        Err(error) => ObjectChange::Damaged(Damaged::new(&kind, &name, &error)),
    })
}

impl EtcdStore {
    /// A client of the cluster `config` names. Checks the configuration and reads the TLS
    /// files; connects lazily, so an unreachable etcd is reported by the first operation.
    pub fn open(config: &EtcdConfig) -> Result<EtcdStore, DatastoreError> {
        config
            .check()
            .map_err(|(key, reason)| DatastoreError::Config { key, reason })?;
        let endpoints = config.endpoints.join(", ");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            // A member cut off from its cluster refuses instead of serving stale data or a
            // watch that will never see another event.
            .with_require_leader(true);
        if config.uses_tls() {
            let pem = |key: &'static str, path: &std::path::Path| {
                read_pem(path).map_err(|reason| DatastoreError::Config { key, reason })
            };
            let mut tls = TlsOptions::new();
            tls = match &config.ca_file {
                Some(path) => {
                    tls.ca_certificate(Certificate::from_pem(pem("datastore.ca_file", path)?))
                }
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(
                    pem("datastore.cert_file", cert)?,
                    pem("datastore.key_file", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tapwire-etcd")
            .enable_all()
            .build()
            .map_err(|e| DatastoreError::Etcd {
                endpoints: endpoints.clone(),
                reason: format!("starting the client's runtime: {e}"),
            })?;
        // A client of its own per endpoint (connected lazily): which one a call goes to, and
        // when to try the next, is decided here (see `run`), not by a balancer.
        let mut clients = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            // Nothing is sent yet: what can fail here is the TLS set-up, whose files were
            // read, but whose contents the TLS library could not use.
            let client = runtime
                .block_on(Client::connect([endpoint], Some(options.clone())))
                .map_err(|e| {
                    let (key, what) = match (&config.cert_file, &config.key_file) {
                        (Some(cert), Some(key)) => (
                            "datastore.cert_file",
                            format!(
                                "the client certificate {} and key {}",
                                cert.display(),
                                key.display()
                            ),
                        ),
                        _ => ("datastore.ca_file", "the TLS settings".to_string()),
                    };
                    DatastoreError::Config {
                        key,
                        reason: format!("{what} cannot be used: {}", describe(&e)),
                    }
                })?;
            clients.push(client);
        }
        Ok(EtcdStore {
            clients,
            current: AtomicUsize::new(0),
            endpoints,
            op_timeout: OP_TIMEOUT,
            runtime,
        })
    }

    /// The same store, giving each operation `timeout` instead of [`OP_TIMEOUT`].
    pub fn with_op_timeout(mut self, timeout: Duration) -> EtcdStore {
        self.op_timeout = timeout;
        self
    }

    /// The endpoints, as messages name them.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    fn error(&self, op: &str, reason: String) -> DatastoreError {
        DatastoreError::Etcd {
            endpoints: self.endpoints.clone(),
            reason: format!("{op}: {reason}"),
        }
    }

    /// No endpoint answered `op`: see [`DatastoreError::Unreachable`].
    fn unreachable(&self, op: &str, reason: String) -> DatastoreError {
        DatastoreError::Unreachable {
            endpoints: self.endpoints.clone(),
            reason: format!("{op}: {reason}"),
        }
    }

    fn timed_out(&self, op: &str) -> DatastoreError {
        self.unreachable(
            op,
            format!(
                "no answer within {} ms (is etcd running and reachable?)",
                self.op_timeout.as_millis()
            ),
        )
    }

    /// Runs one etcd call within [`EtcdStore::with_op_timeout`]'s bound, failing over
    /// between the endpoints: first the one that answered last, then the others in turn,
    /// each with its share of the time left. A call moves on to the next endpoint when it
    /// could not reach this one (so it was never sent); a read also when this one did not
    /// answer in time or refused for want of a leader. A write that got no answer may
    /// have been applied: it is not sent again, the caller reads and decides.
    fn run<T, F, Fut>(&self, op: &str, kind: Call, call: F) -> Result<T, DatastoreError>
    where
        F: Fn(etcd_client::KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.op_timeout;
        let count = self.clients.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for attempt in 0..count {
            let index = (first + attempt) % count;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // u32: there are never billions of endpoints; at least one share.
            let share = left / u32::try_from(count - attempt).unwrap_or(1);
            let kv = self.kv(index);
            let answer = self
                .runtime
                .block_on(async { tokio::time::timeout(share, call(kv)).await });
            let endpoint = self.endpoint(index);
            match answer {
                Ok(Ok(answer)) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(Err(e)) if not_sent(&e) || (kind == Call::Read && worth_another(&e)) => {
                    failures.push(format!("{endpoint}: {}", describe_call(&e)));
                }
                Ok(Err(e)) => return Err(self.error(op, describe_call(&e))),
                Err(_) if kind == Call::Read => {
                    failures.push(format!("{endpoint}: no answer in time"));
                }
                Err(_) => {
                    return Err(self.error(
                        op,
                        format!(
                            "{endpoint} did not answer in time; the write may or may not have been applied"
                        ),
                    ))
                }
            }
            // The next call starts with the next endpoint too.
            self.current.store((index + 1) % count, Ordering::Relaxed);
        }
        if failures.is_empty() {
            return Err(self.timed_out(op));
        }
        Err(self.unreachable(
            op,
            format!(
                "no endpoint answered (is etcd running and reachable?): {}",
                failures.join("; ")
            ),
        ))
    }

    fn endpoint(&self, index: usize) -> &str {
        self.endpoints.split(", ").nth(index).unwrap_or_default()
    }

    fn kv(&self, index: usize) -> etcd_client::KvClient {
        self.clients[index % self.clients.len()]
            .kv_client()
            .max_decoding_message_size(MAX_ANSWER_BYTES)
    }

    /// The key of an object, after the checks every store makes.
    fn key(kind: &str, name: &str) -> Result<String, DatastoreError> {
        check_kind(kind)?;
        check_name(name)?;
        keys::key(kind, name).map_err(|reason| DatastoreError::InvalidKey {
            what: "name",
            value: name.to_string(),
            reason,
        })
    }

    /// The JSON stored for a new version of an object (checked as every store checks it,
    /// without a `resourceVersion`: etcd's mod revision is the revision), and the value to
    /// hand back once the revision is known.
    fn encode(kind: &str, name: &str, value: Value) -> Result<(Vec<u8>, Value), DatastoreError> {
        let mut value = stamp(kind, name, value, 0)?;
        if let Some(Value::Object(metadata)) = value.get_mut("metadata") {
            metadata.remove("resourceVersion");
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| DatastoreError::InvalidObject {
            kind: kind.to_string(),
            name: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok((bytes, value))
    }

    fn written(kind: &str, name: &str, value: Value, revision: u64) -> RawObject {
        let mut value = value;
        // `encode` checked the value: this cannot fail.
        let _ = stamp_metadata(&mut value, name, revision);
        RawObject {
            kind: kind.to_string(),
            name: name.to_string(),
            revision,
            value,
        }
    }

    /// A stored value as an object: JSON, an object, named as its key says; its revision
    /// (the key's mod revision) stamped in.
    fn decode(kind: &str, name: &str, kv: &KeyValue) -> Result<RawObject, DatastoreError> {
        let corrupt = |reason: String| DatastoreError::CorruptValue {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            reason,
        };
        let mut value: Value =
            serde_json::from_slice(kv.value()).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
        stamp_metadata(&mut value, name, revision).map_err(corrupt)?;
        Ok(RawObject {
            kind: kind.to_string(),
            name: name.to_string(),
            revision,
            value,
        })
    }

    /// After a failed compare: whether the object is gone or was changed (the `Else Get`).
    fn lost_compare(
        kind: &str,
        name: &str,
        expected: u64,
        answer: &etcd_client::TxnResponse,
    ) -> DatastoreError {
        let current = answer.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().map(KeyValue::mod_revision)),
            _ => None,
        });
        match current.flatten() {
            Some(found) => DatastoreError::Conflict {
                kind: kind.to_string(),
                name: name.to_string(),
                expected,
                found: u64::try_from(found).unwrap_or(0),
            },
            None => DatastoreError::NotFound {
                kind: kind.to_string(),
                name: name.to_string(),
            },
        }
    }

    /// The compare of an update or a conditional delete: the key exists at `expected`.
    fn at_revision(key: &str, expected: u64) -> Vec<Compare> {
        vec![
            Compare::version(key, CompareOp::Greater, 0),
            Compare::mod_revision(key, CompareOp::Equal, etcd_revision(expected)),
        ]
    }

    /// One watch of the whole prefix from `seen + 1`, opened by `open_by`, until a change,
    /// `deadline`, or the stream's end.
    fn watch_once(&self, seen: u64, open_by: Instant, deadline: Instant) -> WatchEnd {
        let index = self.current.load(Ordering::Relaxed) % self.clients.len();
        let mut client = self.clients[index].watch_client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(etcd_revision(seen.saturating_add(1)));
        self.runtime.block_on(async move {
            let deadline = tokio::time::Instant::from_std(deadline);
            let open_by = tokio::time::Instant::from_std(open_by);
            let opened =
                tokio::time::timeout_at(open_by, client.watch(keys::ROOT, Some(options))).await;
            let mut stream = match opened {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return WatchEnd::Broken {
                        opening: true,
                        reason: describe_call(&e),
                    }
                }
                Err(_) => {
                    return WatchEnd::Broken {
                        opening: true,
                        reason: "no answer in time".into(),
                    }
                }
            };
            loop {
                let answer = match tokio::time::timeout_at(deadline, stream.message()).await {
                    Err(_) => return WatchEnd::TimedOut,
                    Ok(Err(e)) => {
                        return WatchEnd::Broken {
                            opening: false,
                            reason: describe_call(&e),
                        }
                    }
                    Ok(Ok(None)) => {
                        return WatchEnd::Broken {
                            opening: false,
                            reason: "the watch stream ended".into(),
                        }
                    }
                    Ok(Ok(Some(answer))) => answer,
                };
                if answer.compact_revision() > 0 {
                    return WatchEnd::Compacted;
                }
                // etcd sends all of a revision's events in one answer (this watch asks
                // for no fragments), so what follows starts at a revision of its own.
                if let Some(last) = answer.events().iter().rev().find_map(|e| e.kv()) {
                    let revision = u64::try_from(last.mod_revision()).unwrap_or(0);
                    let objects = answer.events().iter().filter_map(object_change).collect();
                    return WatchEnd::Changed(revision, objects);
                }
                if answer.canceled() {
                    return WatchEnd::Refused(answer.cancel_reason().to_string());
                }
            }
        })
    }
}

impl Datastore for EtcdStore {
    fn get(&self, kind: &str, name: &str) -> Result<Option<RawObject>, DatastoreError> {
        let key = Self::key(kind, name)?;
        let answer = self.run("get", Call::Read, |mut kv| {
            let key = key.clone();
            async move { kv.get(key, None).await }
        })?;
        answer
            .kvs()
            .first()
            .map(|stored| Self::decode(kind, name, stored))
            .transpose()
    }

    fn list(&self, kind: &str) -> Result<Listing<RawObject>, DatastoreError> {
        check_kind(kind)?;
        let prefix = keys::prefix(kind);
        let end = keys::range_end(&prefix);
        let mut from = prefix.into_bytes();
        let mut at = 0;
        let mut listing = Listing::default();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_KEYS);
            // Every page at the first page's revision: one consistent snapshot.
            if at > 0 {
                options = options.with_revision(at);
            }
            let answer = self.run("list", Call::Read, |mut kv| {
                let (start, options) = (from.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })?;
            if at == 0 {
                at = answer.header().map_or(0, |h| h.revision());
            }
            for stored in answer.kvs() {
                // Keys of the range that are not this kind's (not UTF-8, another layout)
                // are someone else's.
                let Ok(key) = std::str::from_utf8(stored.key()) else {
                    continue;
                };
                let Some(name) = keys::name(kind, key) else {
                    continue;
                };
                match Self::decode(kind, &name, stored) {
                    Ok(obj) => listing.items.push(obj),
                    Err(e) => listing.damaged.push(Damaged::new(kind, &name, &e)),
                }
            }
            match answer.kvs().last() {
                Some(last) if answer.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        listing.items.sort_by(|a, b| a.name.cmp(&b.name));
        listing.damaged.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    fn create(&self, kind: &str, name: &str, value: Value) -> Result<RawObject, DatastoreError> {
        let key = Self::key(kind, name)?;
        let (bytes, value) = Self::encode(kind, name, value)?;
        let txn = Txn::new()
            .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, bytes, None)]);
        let answer = self.run("create", Call::Write, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        if !answer.succeeded() {
            return Err(DatastoreError::AlreadyExists {
                kind: kind.to_string(),
                name: name.to_string(),
            });
        }
        Ok(Self::written(
            kind,
            name,
            value,
            revision_of(answer.header()),
        ))
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: Value,
        expected_revision: u64,
    ) -> Result<RawObject, DatastoreError> {
        let key = Self::key(kind, name)?;
        let (bytes, value) = Self::encode(kind, name, value)?;
        let txn = Txn::new()
            .when(Self::at_revision(&key, expected_revision))
            .and_then([TxnOp::put(key.as_str(), bytes, None)])
            .or_else([TxnOp::get(key, None)]);
        let answer = self.run("update", Call::Write, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        if !answer.succeeded() {
            return Err(Self::lost_compare(kind, name, expected_revision, &answer));
        }
        Ok(Self::written(
            kind,
            name,
            value,
            revision_of(answer.header()),
        ))
    }

    fn delete(
        &self,
        kind: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), DatastoreError> {
        let key = Self::key(kind, name)?;
        let not_found = || DatastoreError::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
        };
        match expected_revision {
            Some(expected) => {
                let txn = Txn::new()
                    .when(Self::at_revision(&key, expected))
                    .and_then([TxnOp::delete(key.as_str(), None)])
                    .or_else([TxnOp::get(key, None)]);
                let answer = self.run("delete", Call::Write, |mut kv| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })?;
                if !answer.succeeded() {
                    return Err(Self::lost_compare(kind, name, expected, &answer));
                }
            }
            // Unconditional: it does not read the value, so it also removes a damaged one.
            None => {
                let answer = self.run("delete", Call::Write, |mut kv| {
                    let key = key.clone();
                    async move { kv.delete(key, None).await }
                })?;
                if answer.deleted() == 0 {
                    return Err(not_found());
                }
            }
        }
        Ok(())
    }

    fn revision(&self) -> Result<u64, DatastoreError> {
        // Any read answers with the store's revision in its header; this key never exists.
        let answer = self.run("revision", Call::Read, |mut kv| async move {
            kv.get(keys::ROOT, Some(GetOptions::new().with_count_only()))
                .await
        })?;
        Ok(revision_of(answer.header()))
    }

    fn tells_what_changed(&self) -> bool {
        true
    }

    fn wait_for_change(
        &self,
        seen: u64,
        timeout: Duration,
    ) -> Result<Option<Change>, DatastoreError> {
        let deadline = Instant::now() + timeout;
        // Since when the watch has been failing: a stream that breaks is opened again, from
        // the same revision, for as long as an operation may take.
        let mut failing_since: Option<Instant> = None;
        loop {
            let attempt = Instant::now();
            // Opening may take this endpoint's share of an operation's time, and no more
            // than what is left of it while the watch keeps failing.
            let share = self.op_timeout / u32::try_from(self.clients.len()).unwrap_or(1);
            let open_by = match failing_since {
                Some(since) => (attempt + share).min(since + self.op_timeout),
                None => attempt + share,
            };
            match self.watch_once(seen, open_by, deadline) {
                WatchEnd::Changed(revision, objects) => {
                    return Ok(Some(Change::Changed {
                        revision,
                        objects: Some(objects),
                    }))
                }
                WatchEnd::TimedOut => return Ok(None),
                WatchEnd::Compacted => {
                    return Ok(Some(Change::Relist {
                        revision: self.revision()?,
                    }))
                }
                WatchEnd::Refused(reason) => {
                    return Err(self.error("watch", format!("refused: {reason}")))
                }
                WatchEnd::Broken { opening, reason } => {
                    // Again from the same revision, on the next endpoint.
                    let next = self.current.load(Ordering::Relaxed).wrapping_add(1);
                    self.current
                        .store(next % self.clients.len(), Ordering::Relaxed);
                    let now = Instant::now();
                    // A stream that ran and broke has been failing since now; one that
                    // could not be opened since this attempt began.
                    let since = *failing_since.get_or_insert(if opening { attempt } else { now });
                    // Given up when no other attempt fits in an operation's time.
                    if now.duration_since(since) + WATCH_RETRY_PAUSE >= self.op_timeout {
                        return Err(self.unreachable(
                            "watch",
                            format!(
                                "no endpoint could be watched for {} ms (is etcd running and reachable?): {reason}",
                                self.op_timeout.as_millis()
                            ),
                        ));
                    }
                    if now + WATCH_RETRY_PAUSE >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(WATCH_RETRY_PAUSE);
                }
            }
        }
    }
}
