//! The dataplane's Prometheus metrics (`--metrics-addr`): what `tapwirectl stats` shows,
//! with labels, plus each worker's busy time and a few gauges of the state thread.
//!
//! Nothing here is on the packet path. A scrape asks the state thread for a [`Sample`]
//! (the per-worker single-writer counters read with relaxed loads, exactly as `stats`
//! reads them, and the attached endpoints' counters), then encodes it through
//! [`prometheus_client`] on the metrics thread. Every counter is exported, zeros too, so
//! that `rate()` sees a series from its start.
//!
//! Names (all prefixed `tapwire_dataplane_`; `_total` for counters):
//!
//! | metric | labels |
//! |---|---|
//! | `endpoint_packets_total`, `endpoint_bytes_total` | `endpoint`, `direction` (`rx`: sent by the pod, `tx`: given to it) |
//! | `endpoint_drops_total` | `endpoint` (its packets dropped) |
//! | `encap_packets_total`, `encap_bytes_total` | `encapsulation` (`none`, `ipip`, `vxlan`), `direction` (`tx`, `rx`) |
//! | `host_path_packets_total`, `host_path_bytes_total` | `direction` (`rx`: from the node's kernel, `tx`: to it) |
//! | `drops_total` | `reason` (the `drop.*` names) |
//! | `arp_replies_total`, `icmp_errors_sent_total`, `tx_errors_total`, `underlay_ignored_total` | |
//! | `worker_busy_seconds_total`, `worker_batches_total` | `worker` |
//! | `trace_records_dropped_total` | |
//! | `endpoints` (gauge) | `state` (`attached`, `waiting`: wanted, queues not attached) |
//! | `routes`, `peers`, `workers`, `control_connected` (gauges) | |

use std::sync::Arc;

use tapwire_metrics::prometheus_client::collector::Collector;
use tapwire_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use tapwire_metrics::prometheus_client::metrics::counter::ConstCounter;
use tapwire_metrics::prometheus_client::metrics::gauge::ConstGauge;
use tapwire_metrics::prometheus_client::metrics::MetricType;
use tapwire_metrics::prometheus_client::registry::{Registry, Unit};
use tapwire_metrics::Exposition;

use crate::counters::{EndpointCounters, Flow, WorkerCounters};
use crate::forward::DropReason;
use crate::tables::Encap;
use crate::worker::WorkerHandle;

/// Every metric name starts with this.
const PREFIX: &str = "tapwire_dataplane";

/// One worker's counters, read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSample {
    pub drops: [u64; DropReason::ALL.len()],
    /// Per encapsulation ([`Encap`] order): packets and bytes.
    pub encap_tx: [[u64; 2]; 3],
    pub encap_rx: [[u64; 2]; 3],
    pub host_rx: [u64; 2],
    pub host_tx: [u64; 2],
    pub arp_replies: u64,
    pub icmp_errors_sent: u64,
    pub tx_errors: u64,
    pub underlay_ignored: u64,
    pub busy_ns: u64,
    pub batches: u64,
}

fn flow(f: &Flow) -> [u64; 2] {
    [f.packets.get(), f.bytes.get()]
}

impl WorkerSample {
    /// Reads a worker's counters (relaxed loads; the worker keeps writing).
    pub fn read(c: &WorkerCounters) -> WorkerSample {
        WorkerSample {
            drops: std::array::from_fn(|i| c.drops[i].get()),
            encap_tx: std::array::from_fn(|i| flow(&c.encap_tx[i])),
            encap_rx: std::array::from_fn(|i| flow(&c.encap_rx[i])),
            host_rx: flow(&c.host_rx),
            host_tx: flow(&c.host_tx),
            arp_replies: c.arp_replies.get(),
            icmp_errors_sent: c.icmp_errors_sent.get(),
            tx_errors: c.tx_errors.get(),
            underlay_ignored: c.underlay_ignored.get(),
            busy_ns: c.busy_ns.get(),
            batches: c.batches.get(),
        }
    }
}

/// One attached endpoint's counters, summed over workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSample {
    /// `orchestrator/workload/endpoint`.
    pub key: String,
    /// rx packets, rx bytes, tx packets, tx bytes, drops ([`EndpointCounters::totals`]).
    pub totals: [u64; 5],
}

/// What the state thread knows besides counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateGauges {
    pub attached: usize,
    pub waiting: usize,
    pub routes: usize,
    pub peers: usize,
    pub control_connected: bool,
}

/// Everything one scrape reports, read by the state thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub workers: Vec<WorkerSample>,
    pub endpoints: Vec<EndpointSample>,
    pub state: StateGauges,
    pub trace_records_dropped: u64,
}

impl Sample {
    /// Reads the workers' and the endpoints' counters.
    pub fn gather<'a>(
        workers: &[Arc<WorkerHandle>],
        endpoints: impl Iterator<Item = (&'a String, &'a EndpointCounters)>,
        state: StateGauges,
        trace_records_dropped: u64,
    ) -> Sample {
        Sample {
            workers: workers
                .iter()
                .map(|w| WorkerSample::read(&w.counters))
                .collect(),
            endpoints: endpoints
                .map(|(key, counters)| EndpointSample {
                    key: key.clone(),
                    totals: counters.totals(),
                })
                .collect(),
            state,
            trace_records_dropped,
        }
    }

    /// The sample in `exposition` (`None` if encoding failed, which writing to a
    /// `String` does not).
    pub fn render(self, exposition: Exposition) -> Option<String> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        tapwire_metrics::encode(&registry, exposition).ok()
    }

    /// Sums `f` over workers.
    fn sum(&self, f: impl Fn(&WorkerSample) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
}

/// Writes one metric family: `name` (without prefix and unit), its help, unit and type,
/// then one sample per `(labels, metric)`.
fn family<'a, M: EncodeMetric, const N: usize>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, unit): (&str, &str, Option<Unit>),
    metric_type: MetricType,
    series: impl IntoIterator<Item = ([(&'static str, &'a str); N], M)>,
) -> Result<(), std::fmt::Error> {
    let name = format!("{PREFIX}_{name}");
    let mut family = encoder.encode_descriptor(&name, help, unit.as_ref(), metric_type)?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A family of one counter without labels.
fn single_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let name = format!("{PREFIX}_{name}");
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        &name,
        help,
        None,
        MetricType::Counter,
    )?)
}

/// A family of one gauge without labels.
fn single_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), std::fmt::Error> {
    let name = format!("{PREFIX}_{name}");
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    ConstGauge::new(value).encode(encoder.encode_descriptor(
        &name,
        help,
        None,
        MetricType::Gauge,
    )?)
}

const COUNTER: MetricType = MetricType::Counter;

impl Collector for Sample {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        // Flows are (packets, bytes): one family each.
        let flows = |what: &'static str, help: &'static str| {
            [
                (
                    format!("{what}_packets"),
                    format!("Packets {help}"),
                    None,
                    0,
                ),
                (
                    what.to_string(),
                    format!("Bytes {help}"),
                    Some(Unit::Bytes),
                    1,
                ),
            ]
        };
        for (name, help, unit, i) in flows(
            "endpoint",
            "of a pod's interface: rx sent by the pod, tx given to it.",
        ) {
            let series = self.endpoints.iter().flat_map(|ep| {
                [("rx", i), ("tx", i + 2)].map(|(direction, i)| {
                    (
                        [("endpoint", ep.key.as_str()), ("direction", direction)],
                        ConstCounter::new(ep.totals[i]),
                    )
                })
            });
            family(e, (&name, &help, unit), COUNTER, series)?;
        }
        let series = self.endpoints.iter().map(|ep| {
            (
                [("endpoint", ep.key.as_str())],
                ConstCounter::new(ep.totals[4]),
            )
        });
        let about = (
            "endpoint_drops",
            "Packets a pod sent that were dropped.",
            None,
        );
        family(e, about, COUNTER, series)?;
        for (name, help, unit, i) in flows(
            "encap",
            "sent to (tx) and received from (rx) peers, by encapsulation.",
        ) {
            let series = Encap::ALL.iter().flat_map(|&encap| {
                let n = encap as usize;
                [
                    ("tx", self.sum(|w| w.encap_tx[n][i])),
                    ("rx", self.sum(|w| w.encap_rx[n][i])),
                ]
                .map(|(direction, value)| {
                    (
                        [("encapsulation", encap.name()), ("direction", direction)],
                        ConstCounter::new(value),
                    )
                })
            });
            family(e, (&name, &help, unit), COUNTER, series)?;
        }
        for (name, help, unit, i) in flows(
            "host_path",
            "through the host path: rx from the node's kernel, tx to it.",
        ) {
            let series = [
                ("rx", self.sum(|w| w.host_rx[i])),
                ("tx", self.sum(|w| w.host_tx[i])),
            ]
            .map(|(direction, value)| ([("direction", direction)], ConstCounter::new(value)));
            family(e, (&name, &help, unit), COUNTER, series)?;
        }
        let series = DropReason::ALL.iter().map(|&reason| {
            let value = self.sum(|w| w.drops[reason as usize]);
            ([("reason", reason.name())], ConstCounter::new(value))
        });
        let about = (
            "drops",
            "Packets dropped, by reason (the drop.* counters of tapwirectl stats).",
            None,
        );
        family(e, about, COUNTER, series)?;
        for (name, help, value) in [
            (
                "arp_replies",
                "ARP requests answered with the gateway MAC.",
                self.sum(|w| w.arp_replies),
            ),
            (
                "icmp_errors_sent",
                "ICMP errors sent back to senders (unreachable, time exceeded, fragmentation needed).",
                self.sum(|w| w.icmp_errors_sent),
            ),
            (
                "tx_errors",
                "Sends to peers that failed.",
                self.sum(|w| w.tx_errors),
            ),
            (
                "underlay_ignored",
                "Frames seen on the underlay packet socket that were not for a local pod.",
                self.sum(|w| w.underlay_ignored),
            ),
            (
                "trace_records_dropped",
                "Packet trace records lost because the trace buffer was full.",
                self.trace_records_dropped,
            ),
        ] {
            single_counter(e, name, help, value)?;
        }
        let workers: Vec<String> = (0..self.workers.len()).map(|w| w.to_string()).collect();
        let series = self.workers.iter().zip(&workers).map(|(w, name)| {
            // Seconds as a float: nanoseconds fit f64 exactly for 104 days of busy time.
            let seconds = w.busy_ns as f64 / 1e9;
            ([("worker", name.as_str())], ConstCounter::new(seconds))
        });
        let about = (
            "worker_busy",
            "Time each worker spent handling batches of packets (not polling or waiting).",
            Some(Unit::Seconds),
        );
        family(e, about, COUNTER, series)?;
        let series = self
            .workers
            .iter()
            .zip(&workers)
            .map(|(w, name)| ([("worker", name.as_str())], ConstCounter::new(w.batches)));
        let about = (
            "worker_batches",
            "Wake-ups of each worker that found packets to handle.",
            None,
        );
        family(e, about, COUNTER, series)?;
        let state = self.state;
        let series =
            [("attached", state.attached), ("waiting", state.waiting)].map(|(label, n)| {
                let n = i64::try_from(n).unwrap_or(i64::MAX);
                ([("state", label)], ConstGauge::new(n))
            });
        let about = (
            "endpoints",
            "Pods the dataplane serves (attached) or waits to attach (waiting).",
            None,
        );
        family(e, about, MetricType::Gauge, series)?;
        for (name, help, value) in [
            ("routes", "Routes in the forwarding table.", state.routes),
            (
                "peers",
                "Other nodes the forwarding table knows.",
                state.peers,
            ),
            ("workers", "Worker threads.", self.workers.len()),
            (
                "control_connected",
                "1 while tapwire-control is connected.",
                usize::from(state.control_connected),
            ),
        ] {
            single_gauge(e, name, help, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
    use super::*;

    fn sample() -> Sample {
        let mut w0 = WorkerSample {
            busy_ns: 1_500_000_000,
            batches: 7,
            arp_replies: 2,
            ..WorkerSample::default()
        };
        w0.drops[DropReason::NoRoute as usize] = 3;
        w0.encap_tx[Encap::Vxlan as usize] = [10, 1000];
        let mut w1 = WorkerSample {
            busy_ns: 250_000_000,
            ..WorkerSample::default()
        };
        w1.drops[DropReason::NoRoute as usize] = 1;
        w1.encap_tx[Encap::Vxlan as usize] = [5, 500];
        Sample {
            workers: vec![w0, w1],
            endpoints: vec![EndpointSample {
                key: "k8s/default/pod-a/eth0".into(),
                totals: [4, 400, 6, 600, 1],
            }],
            state: StateGauges {
                attached: 1,
                waiting: 0,
                routes: 12,
                peers: 2,
                control_connected: true,
            },
            trace_records_dropped: 0,
        }
    }

    /// The sample line for `series` (a name with its labels), exactly.
    fn value<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn counters_are_labelled_and_summed_over_workers() {
        let text = sample().render(Exposition::Prometheus).unwrap();
        let ep = r#"endpoint="k8s/default/pod-a/eth0""#;
        for (series, want) in [
            (
                format!("tapwire_dataplane_endpoint_packets_total{{{ep},direction=\"rx\"}}"),
                "4",
            ),
            (
                format!("tapwire_dataplane_endpoint_packets_total{{{ep},direction=\"tx\"}}"),
                "6",
            ),
            (
                format!("tapwire_dataplane_endpoint_bytes_total{{{ep},direction=\"rx\"}}"),
                "400",
            ),
            (
                format!("tapwire_dataplane_endpoint_bytes_total{{{ep},direction=\"tx\"}}"),
                "600",
            ),
            (
                format!("tapwire_dataplane_endpoint_drops_total{{{ep}}}"),
                "1",
            ),
            (
                r#"tapwire_dataplane_encap_packets_total{encapsulation="vxlan",direction="tx"}"#
                    .into(),
                "15",
            ),
            (
                r#"tapwire_dataplane_encap_bytes_total{encapsulation="vxlan",direction="tx"}"#
                    .into(),
                "1500",
            ),
            (
                r#"tapwire_dataplane_encap_packets_total{encapsulation="ipip",direction="rx"}"#
                    .into(),
                "0",
            ),
            (
                r#"tapwire_dataplane_drops_total{reason="no_route"}"#.into(),
                "4",
            ),
            (
                r#"tapwire_dataplane_drops_total{reason="blackhole"}"#.into(),
                "0",
            ),
            (
                r#"tapwire_dataplane_host_path_packets_total{direction="rx"}"#.into(),
                "0",
            ),
            ("tapwire_dataplane_arp_replies_total".into(), "2"),
            (
                r#"tapwire_dataplane_worker_busy_seconds_total{worker="0"}"#.into(),
                "1.5",
            ),
            (
                r#"tapwire_dataplane_worker_busy_seconds_total{worker="1"}"#.into(),
                "0.25",
            ),
            (
                r#"tapwire_dataplane_worker_batches_total{worker="0"}"#.into(),
                "7",
            ),
            (
                r#"tapwire_dataplane_endpoints{state="attached"}"#.into(),
                "1",
            ),
            ("tapwire_dataplane_routes".into(), "12"),
            ("tapwire_dataplane_workers".into(), "2"),
            ("tapwire_dataplane_control_connected".into(), "1"),
        ] {
            assert_eq!(value(&text, &series), Some(want), "{series} in\n{text}");
        }
        for family in [
            "# TYPE tapwire_dataplane_endpoint_bytes_total counter",
            "# TYPE tapwire_dataplane_worker_busy_seconds_total counter",
            "# TYPE tapwire_dataplane_endpoints gauge",
        ] {
            assert!(text.lines().any(|l| l == family), "{family} in\n{text}");
        }
        // Every drop reason has a series, zeros included.
        let drops = text
            .lines()
            .filter(|l| l.starts_with("tapwire_dataplane_drops_total{"))
            .count();
        assert_eq!(drops, DropReason::ALL.len());
    }

    #[test]
    fn openmetrics_carries_units_and_ends_with_eof() {
        let text = sample().render(Exposition::OpenMetrics).unwrap();
        assert!(
            text.contains("# UNIT tapwire_dataplane_endpoint_bytes bytes\n"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT tapwire_dataplane_worker_busy_seconds seconds\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn an_endpoint_name_with_quotes_is_escaped() {
        let mut s = Sample::default();
        s.endpoints.push(EndpointSample {
            key: "k8s/a\"b\\c/eth0".into(),
            totals: [1, 2, 3, 4, 5],
        });
        let text = s.render(Exposition::Prometheus).unwrap();
        assert!(
            text.contains(
                r#"tapwire_dataplane_endpoint_drops_total{endpoint="k8s/a\"b\\c/eth0"} 5"#
            ),
            "{text}"
        );
    }
}
