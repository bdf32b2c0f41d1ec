//! The control's Prometheus metrics (`metrics_addr` in node.toml, or `--metrics-addr`):
//! how long the datastore, IPAM, the sync to the dataplane and CNI requests take, and how
//! often they fail.
//!
//! [`ControlMetrics`] holds live histograms and counters in a [`prometheus_client`]
//! registry; the code it measures records into them (a histogram observation takes a
//! short lock of its own, never one the agent's watch loop or API handlers take), and a
//! scrape encodes the registry on the metrics thread. The datastore is measured by
//! wrapping it ([`ControlMetrics::instrument`]), so every caller is, whatever the backend.
//!
//! Names (all prefixed `tapwire_control_`):
//!
//! | metric | labels |
//! |---|---|
//! | `datastore_operation_seconds` (histogram) | `operation` (`get`, `list`, `create`, `update`, `delete`, `revision`) |
//! | `datastore_errors_total` | `operation`, `error` (`not_found`, `already_exists`, `conflict`, `unreachable`, `locked`, `damaged`, `other`) |
//! | `ipam_operation_seconds` (histogram), `ipam_errors_total` | `operation` (`assign`, `release`) |
//! | `cni_request_seconds` (histogram), `cni_errors_total` | `command` (`add`, `del`, `check`) |
//! | `sync_seconds` (histogram) | `stage`: `snapshot_in_sync` (connect → the dataplane's `DataplaneInSync`), `diff_sent` (a new desired state → its changes written) |
//! | `sync_messages_total` | messages written to the dataplane |
//! | `sync_errors_total` | `error` (`write_failed`, `connection_lost`) |
//! | `dataplane_connected`, `dataplane_in_sync` (gauges) | |

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tapwire_metrics::prometheus_client::metrics::counter::Counter;
use tapwire_metrics::prometheus_client::metrics::family::Family;
use tapwire_metrics::prometheus_client::metrics::gauge::Gauge;
use tapwire_metrics::prometheus_client::metrics::histogram::Histogram;
use tapwire_metrics::prometheus_client::registry::{Registry, Unit};
use tapwire_metrics::{latency_buckets, Exposition};

use crate::api::Request;
use crate::datastore::{Change, Datastore, DatastoreError, Listing, RawObject};

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type Histograms = Family<Labels1, Histogram, fn() -> Histogram>;

/// Datastore and sync latencies: 100 µs … 6.6 s.
fn fast_buckets() -> Histogram {
    Histogram::new(latency_buckets(0.0001, 17))
}

/// CNI requests (an ADD waits for the dataplane) and IPAM: 1 ms … 8.2 s.
fn slow_buckets() -> Histogram {
    Histogram::new(latency_buckets(0.001, 14))
}

const DATASTORE_OPERATIONS: [&str; 6] = ["get", "list", "create", "update", "delete", "revision"];
const IPAM_OPERATIONS: [&str; 2] = ["assign", "release"];
const CNI_COMMANDS: [&str; 3] = ["add", "del", "check"];

/// The control's metrics; one per agent, shared by every thread that records.
#[derive(Debug)]
pub struct ControlMetrics {
    registry: Registry,
    datastore_seconds: Histograms,
    datastore_errors: Family<Labels2, Counter>,
    ipam_seconds: Histograms,
    ipam_errors: Family<Labels1, Counter>,
    cni_seconds: Histograms,
    cni_errors: Family<Labels1, Counter>,
    sync_seconds: Histograms,
    sync_messages: Counter,
    sync_errors: Family<Labels1, Counter>,
    dataplane_connected: Gauge,
    dataplane_in_sync: Gauge,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControlMetrics {
    pub fn new() -> ControlMetrics {
        let metrics = ControlMetrics {
            registry: Registry::with_prefix("tapwire_control"),
            datastore_seconds: Family::new_with_constructor(fast_buckets),
            datastore_errors: Family::default(),
            ipam_seconds: Family::new_with_constructor(slow_buckets),
            ipam_errors: Family::default(),
            cni_seconds: Family::new_with_constructor(slow_buckets),
            cni_errors: Family::default(),
            sync_seconds: Family::new_with_constructor(fast_buckets),
            sync_messages: Counter::default(),
            sync_errors: Family::default(),
            dataplane_connected: Gauge::default(),
            dataplane_in_sync: Gauge::default(),
        };
        // Every series that is known up front exists from the start, zeros included, so
        // that rates work from the first scrape.
        for op in DATASTORE_OPERATIONS {
            drop(
                metrics
                    .datastore_seconds
                    .get_or_create(&[("operation", op)]),
            );
        }
        for op in IPAM_OPERATIONS {
            drop(metrics.ipam_seconds.get_or_create(&[("operation", op)]));
            drop(metrics.ipam_errors.get_or_create(&[("operation", op)]));
        }
        for command in CNI_COMMANDS {
            drop(metrics.cni_seconds.get_or_create(&[("command", command)]));
            drop(metrics.cni_errors.get_or_create(&[("command", command)]));
        }
        for stage in ["snapshot_in_sync", "diff_sent"] {
            drop(metrics.sync_seconds.get_or_create(&[("stage", stage)]));
        }
        for error in ["write_failed", "connection_lost"] {
            drop(metrics.sync_errors.get_or_create(&[("error", error)]));
        }
        metrics.registered()
    }

    /// Registers every metric (the registry keeps clones; they share their values).
    fn registered(mut self) -> ControlMetrics {
        let r = &mut self.registry;
        r.register_with_unit(
            "datastore_operation",
            "Datastore calls by operation (every backend, every caller)",
            Unit::Seconds,
            self.datastore_seconds.clone(),
        );
        r.register(
            "datastore_errors",
            "Datastore calls that failed, by operation and error (conflicts and not-found answers included: callers may expect them)",
            self.datastore_errors.clone(),
        );
        r.register_with_unit(
            "ipam_operation",
            "IPAM address assignments (CNI ADD) and releases (CNI DEL, a failed ADD undone)",
            Unit::Seconds,
            self.ipam_seconds.clone(),
        );
        r.register(
            "ipam_errors",
            "IPAM assignments and releases that failed",
            self.ipam_errors.clone(),
        );
        r.register_with_unit(
            "cni_request",
            "CNI requests from the tapwire plugin, from the request read to the answer",
            Unit::Seconds,
            self.cni_seconds.clone(),
        );
        r.register(
            "cni_errors",
            "CNI requests answered with an error",
            self.cni_errors.clone(),
        );
        r.register_with_unit(
            "sync",
            "Dataplane sync: a full snapshot from connect to the dataplane's in-sync answer, and each new desired state until its changes are written",
            Unit::Seconds,
            self.sync_seconds.clone(),
        );
        r.register(
            "sync_messages",
            "Messages written to the dataplane",
            self.sync_messages.clone(),
        );
        r.register(
            "sync_errors",
            "Writes to the dataplane that failed, and connections to it that were lost",
            self.sync_errors.clone(),
        );
        r.register(
            "dataplane_connected",
            "1 while the dataplane is connected",
            self.dataplane_connected.clone(),
        );
        r.register(
            "dataplane_in_sync",
            "1 once the dataplane has applied the current connection's snapshot",
            self.dataplane_in_sync.clone(),
        );
        self
    }

    /// Every metric in `exposition`.
    pub fn render(&self, exposition: Exposition) -> Option<String> {
        tapwire_metrics::encode(&self.registry, exposition).ok()
    }

    /// `store`, with every call timed and every failure counted.
    pub fn instrument(self: &Arc<Self>, store: Box<dyn Datastore>) -> Box<dyn Datastore> {
        Box::new(InstrumentedStore {
            inner: store,
            metrics: Arc::clone(self),
        })
    }

    /// Runs IPAM `operation` (`assign` or `release`), timed and its failure counted.
    pub fn ipam<T, E>(
        &self,
        operation: &'static str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = f();
        let labels = [("operation", operation)];
        observe(&self.ipam_seconds, &labels, started.elapsed());
        if result.is_err() {
            self.ipam_errors.get_or_create(&labels).inc();
        }
        result
    }

    /// The CNI command an API request is (`add`, `del`, `check`), if it is one.
    pub fn cni_command(request: &Request) -> Option<&'static str> {
        match request {
            Request::CniAdd(_) => Some("add"),
            Request::CniDel(_) => Some("del"),
            Request::CniCheck(_) => Some("check"),
            _ => None,
        }
    }

    /// A CNI request answered after `elapsed`, successfully or not.
    pub fn cni_request(&self, command: &'static str, elapsed: Duration, ok: bool) {
        let labels = [("command", command)];
        observe(&self.cni_seconds, &labels, elapsed);
        if !ok {
            self.cni_errors.get_or_create(&labels).inc();
        }
    }

    /// The dataplane applied a full snapshot whose sending began `elapsed` ago.
    pub fn snapshot_in_sync(&self, elapsed: Duration) {
        observe(
            &self.sync_seconds,
            &[("stage", "snapshot_in_sync")],
            elapsed,
        );
    }

    /// The changes of a desired state handed over `elapsed` ago are written.
    pub fn diff_sent(&self, elapsed: Duration) {
        observe(&self.sync_seconds, &[("stage", "diff_sent")], elapsed);
    }

    /// `n` messages were written to the dataplane.
    pub fn messages_sent(&self, n: usize) {
        self.sync_messages.inc_by(n as u64);
    }

    /// A write to the dataplane failed (`write_failed`) or its connection was lost
    /// (`connection_lost`).
    pub fn sync_error(&self, error: &'static str) {
        self.sync_errors.get_or_create(&[("error", error)]).inc();
    }

    /// What the dataplane connection is now.
    pub fn dataplane_state(&self, connected: bool, in_sync: bool) {
        self.dataplane_connected.set(i64::from(connected));
        self.dataplane_in_sync.set(i64::from(in_sync));
    }

    fn datastore<T>(
        &self,
        operation: &'static str,
        f: impl FnOnce() -> Result<T, DatastoreError>,
    ) -> Result<T, DatastoreError> {
        let started = Instant::now();
        let result = f();
        observe(
            &self.datastore_seconds,
            &[("operation", operation)],
            started.elapsed(),
        );
        if let Err(err) = &result {
            self.datastore_errors
                .get_or_create(&[("operation", operation), ("error", error_class(err))])
                .inc();
        }
        result
    }
}

fn observe(family: &Histograms, labels: &Labels1, elapsed: Duration) {
    family.get_or_create(labels).observe(elapsed.as_secs_f64());
}

/// The `error` label of a datastore failure.
fn error_class(err: &DatastoreError) -> &'static str {
    match err {
        DatastoreError::NotFound { .. } => "not_found",
        DatastoreError::AlreadyExists { .. } => "already_exists",
        DatastoreError::Conflict { .. } => "conflict",
        DatastoreError::Unreachable { .. } => "unreachable",
        DatastoreError::Locked { .. } => "locked",
        e if e.is_damage() => "damaged",
        _ => "other",
    }
}

/// A datastore whose calls are timed into [`ControlMetrics`]. Waiting for a change is
/// passed through untimed: it waits by design.
#[derive(Debug)]
struct InstrumentedStore {
    inner: Box<dyn Datastore>,
    metrics: Arc<ControlMetrics>,
}

impl Datastore for InstrumentedStore {
    fn get(&self, kind: &str, name: &str) -> Result<Option<RawObject>, DatastoreError> {
        self.metrics.datastore("get", || self.inner.get(kind, name))
    }

    fn list(&self, kind: &str) -> Result<Listing<RawObject>, DatastoreError> {
        self.metrics.datastore("list", || self.inner.list(kind))
    }

    fn create(&self, kind: &str, name: &str, value: Value) -> Result<RawObject, DatastoreError> {
        self.metrics
            .datastore("create", || self.inner.create(kind, name, value))
    }

    fn update(
        &self,
        kind: &str,
        name: &str,
        value: Value,
        expected_revision: u64,
    ) -> Result<RawObject, DatastoreError> {
        self.metrics.datastore("update", || {
            self.inner.update(kind, name, value, expected_revision)
        })
    }

    fn delete(
        &self,
        kind: &str,
        name: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), DatastoreError> {
        self.metrics.datastore("delete", || {
            self.inner.delete(kind, name, expected_revision)
        })
    }

    fn revision(&self) -> Result<u64, DatastoreError> {
        self.metrics.datastore("revision", || self.inner.revision())
    }

    fn tells_what_changed(&self) -> bool {
        self.inner.tells_what_changed()
    }

    fn wait_for_change(
        &self,
        seen: u64,
        timeout: Duration,
    ) -> Result<Option<Change>, DatastoreError> {
        self.inner.wait_for_change(seen, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datastore::{DatastoreExt, MemStore};
    use crate::model::{IpPool, NodeConfig};
    use std::path::Path;

    /// The value of the sample line `series` (name and labels, exactly).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn datastore_calls_are_timed_and_failures_counted_by_error() {
        let metrics = Arc::new(ControlMetrics::new());
        let store = metrics.instrument(Box::new(MemStore::new()));
        let pool = IpPool::new("p", "10.65.0.0/16".parse().unwrap());
        store.create_as(&pool).unwrap();
        assert!(store.create_as(&pool).is_err());
        assert!(store.get_as::<IpPool>("p").unwrap().is_some());
        let text = metrics.render(Exposition::Prometheus).unwrap();
        let count = |op: &str| {
            value(
                &text,
                &format!("tapwire_control_datastore_operation_seconds_count{{operation=\"{op}\"}}"),
            )
        };
        assert_eq!(count("create"), Some(2.0), "{text}");
        assert_eq!(count("get"), Some(1.0), "{text}");
        // Known operations are there before their first call.
        assert_eq!(count("delete"), Some(0.0), "{text}");
        assert_eq!(
            value(
                &text,
                r#"tapwire_control_datastore_errors_total{operation="create",error="already_exists"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert!(
            text.contains(r#"tapwire_control_datastore_operation_seconds_bucket{le="0.0001",operation="create"}"#)
                || text.contains(r#"tapwire_control_datastore_operation_seconds_bucket{operation="create",le="0.0001"}"#),
            "{text}"
        );
        assert!(text.contains("# TYPE tapwire_control_datastore_operation_seconds histogram\n"));
    }

    #[test]
    fn cni_ipam_and_sync_are_recorded() {
        let metrics = ControlMetrics::new();
        metrics.cni_request("add", Duration::from_millis(30), true);
        metrics.cni_request("add", Duration::from_millis(5), false);
        let failed: Result<(), &str> = metrics.ipam("assign", || Err("pool full"));
        assert!(failed.is_err());
        assert_eq!(metrics.ipam("release", || Ok::<_, ()>(7)), Ok(7));
        metrics.snapshot_in_sync(Duration::from_millis(2));
        metrics.messages_sent(3);
        metrics.sync_error("connection_lost");
        metrics.dataplane_state(true, false);
        let text = metrics.render(Exposition::Prometheus).unwrap();
        for (series, want) in [
            (
                r#"tapwire_control_cni_request_seconds_count{command="add"}"#,
                2.0,
            ),
            (
                r#"tapwire_control_cni_request_seconds_sum{command="add"}"#,
                0.035,
            ),
            (r#"tapwire_control_cni_errors_total{command="add"}"#, 1.0),
            (r#"tapwire_control_cni_errors_total{command="del"}"#, 0.0),
            (
                r#"tapwire_control_ipam_errors_total{operation="assign"}"#,
                1.0,
            ),
            (
                r#"tapwire_control_ipam_operation_seconds_count{operation="release"}"#,
                1.0,
            ),
            (
                r#"tapwire_control_sync_seconds_count{stage="snapshot_in_sync"}"#,
                1.0,
            ),
            (
                r#"tapwire_control_sync_seconds_count{stage="diff_sent"}"#,
                0.0,
            ),
            ("tapwire_control_sync_messages_total", 3.0),
            (
                r#"tapwire_control_sync_errors_total{error="connection_lost"}"#,
                1.0,
            ),
            ("tapwire_control_dataplane_connected", 1.0),
            ("tapwire_control_dataplane_in_sync", 0.0),
        ] {
            let got = value(&text, series);
            assert!(
                got.is_some_and(|v| (v - want).abs() < 1e-9),
                "{series}: {got:?}, want {want}, in\n{text}"
            );
        }
        // A 30 ms ADD is in the 32 ms bucket and above, not in the 16 ms one.
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("tapwire_control_cni_request_seconds_bucket{")
                        && l.contains("command=\"add\"")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        assert_eq!(bucket("0.016"), Some(1.0), "{text}");
        assert_eq!(bucket("0.032"), Some(2.0), "{text}");
        assert_eq!(bucket("+Inf"), Some(2.0), "{text}");
        // The registry ends help texts with a period: ours do not add another.
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("# HELP") && l.ends_with("..")),
            "{text}"
        );
        let open = metrics.render(Exposition::OpenMetrics).unwrap();
        assert!(open.ends_with("# EOF\n"));
        assert!(
            open.contains("# UNIT tapwire_control_cni_request_seconds seconds\n"),
            "{open}"
        );
    }

    #[test]
    fn only_cni_requests_are_cni_commands() {
        assert_eq!(ControlMetrics::cni_command(&Request::Stats), None);
        assert_eq!(ControlMetrics::cni_command(&Request::CniStatus), None);
    }

    #[test]
    fn the_metrics_address_is_a_node_toml_key() {
        let base = "node = \"a\"\nunderlay_interface = \"eth0\"\n";
        let config = NodeConfig::parse(base, Path::new("node.toml")).unwrap();
        assert_eq!(config.metrics_addr, None);
        let config = NodeConfig::parse(
            &format!("{base}metrics_addr = \"127.0.0.1:9102\"\n"),
            Path::new("node.toml"),
        )
        .unwrap();
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9102".parse().unwrap()));
        let err = NodeConfig::parse(
            &format!("{base}metrics_addr = \"localhost\"\n"),
            Path::new("node.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("node.toml") && err.contains("metrics_addr"),
            "{err}"
        );
    }
}
