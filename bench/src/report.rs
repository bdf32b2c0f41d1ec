//! What a run produced and how it is shown: the `results.json` model (serde), the targets
//! and their verdicts, the terminal table, `report.md` and `chart.svg`. Pure functions of
//! [`Results`]; writing the files is [`write_report`]'s only I/O.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::floor::Floor;
use crate::paths::PathKind;
use crate::profile::PathProfile;
use crate::ratesearch::Trial;
use crate::stats::{median, Spread};
use crate::taphop::TapHop;

/// Everything one run measured (`results.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub paths: Vec<PathResult>,
    pub fib: Vec<FibResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fib_update: Option<FibUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_memory: Option<DataplaneMemory>,
    /// CNI ADD latency as pods accumulate on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<CniScaling>,
    /// One real node against many simulated ones on etcd, per size.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<ScaleResult>,
    /// Where the CPU time goes on each path (full runs, or `--profile`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<PathProfile>,
    /// One TAP hop's cost on this machine, for the floors (with the paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_hop: Option<TapHop>,
    #[serde(default)]
    pub targets: Vec<TargetResult>,
    /// Parts of the run that failed (their figures are missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub setup: Setup,
}

/// One path's figures: the median over rounds of each measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathResult {
    pub name: String,
    /// TCP throughput, one stream (iperf3, received), Gbit/s.
    pub tcp_gbps_1: f64,
    /// TCP throughput, four streams, Gbit/s.
    pub tcp_gbps_4: f64,
    /// The highest rate of 64-byte UDP payloads received with under 1% loss, per second
    /// (0 when no trial passed).
    pub udp_small_pps: f64,
    /// The loss at that rate, 0–1.
    #[serde(default)]
    pub udp_small_loss: f64,
    /// Request/response round trip, median, µs.
    pub rtt_us_p50: f64,
    /// Request/response round trip, 99th percentile, µs.
    pub rtt_us_p99: f64,
    /// The dataplane's CPU seconds per Gbit moved in the 1-stream TCP run: the
    /// `tapwire-dataplane` processes for tapwire, softirq time for the kernel.
    pub cpu_s_per_gbit: f64,
    /// All busy CPU time of the machine per Gbit in the same run.
    pub machine_cpu_s_per_gbit: f64,
    /// Softirq CPU time of the machine per Gbit in the same run (every path).
    pub softirq_s_per_gbit: f64,
    /// What `cpu_s_per_gbit` counts.
    pub cpu_source: String,
    /// The unpaced UDP trial: 64-byte payloads the sender handed the kernel per second.
    #[serde(alias = "udp_small_sent_pps")]
    pub udp_max_sent_pps: f64,
    /// The unpaced UDP trial: received per second.
    #[serde(default)]
    pub udp_max_received_pps: f64,
    /// The unpaced UDP trial's loss, 0–1.
    #[serde(default)]
    pub udp_max_loss: f64,
    /// TCP retransmissions in the 1-stream run (median).
    pub tcp_retransmits_1: f64,
    /// TCP retransmissions in the 4-stream run (median).
    #[serde(default)]
    pub tcp_retransmits_4: f64,
    /// Every round's figures, in order.
    pub rounds: Vec<RoundSample>,
}

/// One round's figures of one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSample {
    pub round: usize,
    pub tcp_gbps_1: f64,
    /// Retransmissions the sender counted (`end.sum_sent.retransmits` of iperf3 `-J`).
    pub tcp_retransmits_1: u64,
    pub tcp_gbps_4: f64,
    #[serde(default)]
    pub tcp_retransmits_4: u64,
    /// The best passing trial's received rate (0 when none passed).
    pub udp_small_pps: f64,
    /// The best passing trial's loss, 0–1.
    #[serde(default)]
    pub udp_small_loss: f64,
    /// The unpaced trial's sent and received rates.
    #[serde(alias = "udp_small_sent_pps")]
    pub udp_max_sent_pps: f64,
    #[serde(default)]
    pub udp_max_received_pps: f64,
    /// Where the unpaced trial lost datagrams (see [`crate::traffic::UdpLoss`]): at the
    /// sender (its devices' transmit drops and UDP `SndbufErrors`), at the receiver's
    /// devices (receive drops), at the receiving socket (`RcvbufErrors`).
    #[serde(default)]
    pub udp_max_lost_at_sender: u64,
    #[serde(default)]
    pub udp_max_lost_at_receiver_devices: u64,
    #[serde(default)]
    pub udp_max_lost_at_receiving_socket: u64,
    /// The sending thread's CPU time over the unpaced trial, 0–1.
    #[serde(default)]
    pub udp_max_sender_busy: f64,
    /// Every UDP trial, the unpaced one first.
    #[serde(default)]
    pub udp_trials: Vec<Trial>,
    /// The lowest offered rate that lost 1% or more, packets/s.
    #[serde(default)]
    pub udp_lowest_failed_pps: Option<f64>,
    pub rtt_us_p50: f64,
    pub rtt_us_p99: f64,
    pub rtt_samples: usize,
    pub cpu_s_per_gbit: f64,
    pub machine_cpu_s_per_gbit: f64,
    pub softirq_s_per_gbit: f64,
    /// The machine's steal time during the 1-stream TCP run, share of all CPU time.
    #[serde(default)]
    pub steal_share: f64,
}

impl RoundSample {
    /// The unpaced UDP trial's loss, 0–1.
    pub fn udp_max_loss(&self) -> f64 {
        if self.udp_max_sent_pps > 0.0 {
            (1.0 - self.udp_max_received_pps / self.udp_max_sent_pps).max(0.0)
        } else {
            0.0
        }
    }
}

impl PathResult {
    /// The medians of `rounds` (none: `None`).
    pub fn from_rounds(
        name: &str,
        cpu_source: &str,
        rounds: Vec<RoundSample>,
    ) -> Option<PathResult> {
        let m = |f: fn(&RoundSample) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        Some(PathResult {
            name: name.to_string(),
            tcp_gbps_1: m(|r| r.tcp_gbps_1)?,
            tcp_gbps_4: m(|r| r.tcp_gbps_4)?,
            udp_small_pps: m(|r| r.udp_small_pps)?,
            udp_small_loss: m(|r| r.udp_small_loss)?,
            rtt_us_p50: m(|r| r.rtt_us_p50)?,
            rtt_us_p99: m(|r| r.rtt_us_p99)?,
            cpu_s_per_gbit: m(|r| r.cpu_s_per_gbit)?,
            machine_cpu_s_per_gbit: m(|r| r.machine_cpu_s_per_gbit)?,
            softirq_s_per_gbit: m(|r| r.softirq_s_per_gbit)?,
            cpu_source: cpu_source.to_string(),
            udp_max_sent_pps: m(|r| r.udp_max_sent_pps)?,
            udp_max_received_pps: m(|r| r.udp_max_received_pps)?,
            udp_max_loss: m(RoundSample::udp_max_loss)?,
            tcp_retransmits_1: m(|r| r.tcp_retransmits_1 as f64)?,
            tcp_retransmits_4: m(|r| r.tcp_retransmits_4 as f64)?,
            rounds,
        })
    }

    /// The spread of one figure over the rounds.
    pub fn spread(&self, figure: fn(&RoundSample) -> f64) -> Option<Spread> {
        Spread::of(&self.rounds.iter().map(figure).collect::<Vec<_>>())
    }
}

/// Longest-prefix-match speed and size of one table implementation at one size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FibResult {
    /// `tapwire` or `prefix-trie`.
    #[serde(rename = "impl")]
    pub implementation: String,
    pub routes: usize,
    pub lookups_per_s: f64,
    /// Heap bytes held by the table once built, counted by the allocator.
    pub memory_bytes: u64,
    /// What the implementation itself reports (`Fib::memory_bytes`, `PrefixMap::mem_size`).
    pub reported_memory_bytes: u64,
}

/// Latency of one route change at a large table while a reader looks up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FibUpdate {
    pub routes: usize,
    /// Changes timed (inserts and removes).
    pub ops: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub insert_median_us: f64,
    pub remove_median_us: f64,
    /// Lookups per second the reader thread managed meanwhile.
    pub reader_lookups_per_s: f64,
}

/// The dataplane's resident memory with a given load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataplaneMemory {
    pub workers: usize,
    pub pods: usize,
    pub routes: usize,
    pub rss_bytes: u64,
    /// Before any state was pushed.
    pub rss_empty_bytes: u64,
    /// From the first message to `DataplaneInSync` with every endpoint up.
    pub apply_s: f64,
}

/// CNI ADD latency as pods accumulate on one node (see [`crate::cni`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniScaling {
    /// Pods added one after another in each pass.
    pub pods: usize,
    /// ADDs compared at each end of a pass.
    pub window: usize,
    /// The median over passes of each pass's `ratio_p50` (what the target judges).
    pub ratio_p50: f64,
    pub passes: Vec<CniPass>,
}

/// One pass: a one-node control plane given `pods` pods, its last `window` ADDs
/// alternating with the first `window` of a fresh node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniPass {
    pub pass: usize,
    /// The fresh node's `window` ADDs (pods 1 to `window`).
    pub first: AddWindow,
    /// The filled node's last `window` ADDs, alternating with the fresh node's.
    pub last: AddWindow,
    /// `last.p50_ms / first.p50_ms` (what the target judges).
    pub ratio_p50: f64,
    /// The filled node's own first `window` ADDs, seconds before its last: the same
    /// comparison on one node, exposed to whatever else the machine did meanwhile.
    pub filled_first: AddWindow,
    /// `last.p50_ms / filled_first.p50_ms`.
    pub filled_ratio_p50: f64,
    /// `ip netns exec <node> true` before the first ADD and after the last, ms: the lab
    /// runtime's overhead, which grows with namespaces and is kept out of the ADD figures.
    pub netns_exec_ms_before: f64,
    pub netns_exec_ms_after: f64,
    /// Every ADD's wall time (plugin exec to exit) on the filled node, in order, ms.
    pub add_ms: Vec<f64>,
    /// The fresh node's ADDs, ms.
    pub fresh_add_ms: Vec<f64>,
}

/// The ADDs of pods `from_pod..=to_pod` (1-based) of one pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddWindow {
    pub from_pod: usize,
    pub to_pod: usize,
    /// Nearest-rank percentiles of the ADDs' wall times, ms.
    pub p50_ms: f64,
    pub p90_ms: f64,
    /// CPU time of the node's `tapwire-control` (and `tapwire-dataplane`) from just before
    /// the window's first ADD to just after its last, per ADD, ms: what the agent did for
    /// these pods, also after their ADDs returned.
    pub control_cpu_ms_per_add: f64,
    pub dataplane_cpu_ms_per_add: f64,
}

impl CniPass {
    /// The median ADD of each run of `size` consecutive ADDs on the filled node (the last
    /// run may be shorter).
    pub fn p50_per(&self, size: usize) -> Vec<f64> {
        self.add_ms
            .chunks(size.max(1))
            .filter_map(|chunk| crate::stats::percentile(chunk, 50.0))
            .collect()
    }
}

/// One real node's control plane against `nodes` simulated nodes on etcd (see
/// [`crate::scale`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleResult {
    /// Simulated nodes, a Node document and one IPAM block each.
    pub nodes: usize,
    /// Writing them (not judged), s.
    pub populate_s: f64,
    /// From spawning `tapwire-control` to its dataplane in sync with every route, s.
    pub full_sync_s: f64,
    /// Remote routes the control held then.
    pub routes: usize,
    /// One new node's block: from its write to a dataplane round trip after the control
    /// showed the route (nearest-rank), ms.
    pub change_p50_ms: f64,
    pub change_p99_ms: f64,
    /// The same until the control's route for the block showed it, median, ms.
    pub change_control_p50_ms: f64,
    pub change_dataplane_ms: Vec<f64>,
    pub change_control_ms: Vec<f64>,
    /// `VmRSS` of `tapwire-control` once in sync, and its `VmHWM`.
    pub control_rss_bytes: u64,
    pub control_peak_rss_bytes: u64,
    /// `VmRSS` of `tapwire-dataplane` once in sync.
    pub dataplane_rss_bytes: u64,
    /// Where the time goes, timed from the harness on the same etcd: the IPAM check a
    /// control runs at start (`Ipam::repair`), s, and one read of the whole cluster state
    /// (`read_cluster_state`: what a control reads at start and after a relist; a change
    /// on etcd costs only its own document), median, ms.
    #[serde(default)]
    pub ipam_check_s: f64,
    #[serde(default)]
    pub cluster_read_ms: f64,
    /// One call of the control's route lookup (`tapwirectl routes ADDRESS`) while polling
    /// for a change, median, ms: what looking costs.
    #[serde(default)]
    pub routes_call_ms: f64,
}

/// The size the scale targets are judged at.
pub const SCALE_TARGET_NODES: usize = 5_000;

/// The scale targets, at [`SCALE_TARGET_NODES`].
fn scale_targets(scale: &[ScaleResult]) -> Vec<TargetResult> {
    let at = scale.iter().find(|s| s.nodes == SCALE_TARGET_NODES);
    let n = SCALE_TARGET_NODES;
    let sync = at.map(|s| s.full_sync_s);
    let change = at.map(|s| s.change_p50_ms);
    let rss = at.map(|s| s.control_rss_bytes as f64);
    vec![
        TargetResult {
            what: format!("scale: control start to dataplane in sync, {n} nodes on etcd"),
            measured: sync,
            shown: sync.map_or("not measured".into(), |v| format!("{v:.2} s")),
            target: "< 2 s".into(),
            pass: sync.map(|v| v < 2.0),
        },
        TargetResult {
            what: format!("scale: one new node's block to the dataplane, {n} nodes (p50)"),
            measured: change,
            shown: at.map_or("not measured".into(), |s| {
                format!("{:.1} ms (p99 {:.1})", s.change_p50_ms, s.change_p99_ms)
            }),
            target: "< 100 ms".into(),
            pass: change.map(|v| v < 100.0),
        },
        TargetResult {
            what: format!("scale: tapwire-control RSS in sync, {n} nodes"),
            measured: rss,
            shown: at.map_or("not measured".into(), |s| {
                format!(
                    "{:.1} MiB (peak {:.1})",
                    s.control_rss_bytes as f64 / MIB,
                    s.control_peak_rss_bytes as f64 / MIB
                )
            }),
            target: "< 200 MiB".into(),
            pass: rss.map(|v| v < 200.0 * MIB),
        },
    ]
}

const SCALE_HEADER: [&str; 11] = [
    "scale, etcd",
    "full sync s",
    "routes",
    "change p50 ms",
    "change p99 ms",
    "control p50 ms",
    "control RSS MiB",
    "control peak MiB",
    "dataplane RSS MiB",
    "IPAM check s",
    "cluster read ms",
];

fn scale_rows(scale: &[ScaleResult]) -> Vec<Vec<String>> {
    scale
        .iter()
        .map(|s| {
            vec![
                format!("{} nodes", s.nodes),
                format!("{:.2}", s.full_sync_s),
                s.routes.to_string(),
                format!("{:.1}", s.change_p50_ms),
                format!("{:.1}", s.change_p99_ms),
                format!("{:.1}", s.change_control_p50_ms),
                format!("{:.1}", s.control_rss_bytes as f64 / MIB),
                format!("{:.1}", s.control_peak_rss_bytes as f64 / MIB),
                format!("{:.1}", s.dataplane_rss_bytes as f64 / MIB),
                format!("{:.2}", s.ipam_check_s),
                format!("{:.1}", s.cluster_read_ms),
            ]
        })
        .collect()
}

/// The scale section of `report.md`.
fn scale_section(scale: &[ScaleResult]) -> String {
    let mut out = String::from("\n## Control plane at scale (etcd)\n\n");
    out.push_str(
        "A one-member etcd (mutual TLS, in a lab namespace) holds one IPPool and N simulated \
         nodes, each a `Node` document (underlay address, derived VTEP MAC) with one /26 \
         `IPAMBlock` holding one pod's address, its `IPAMHandle` and the block's \
         `BlockAffinity`, written through tapwire's etcd store (untimed). \
         Then one real node: `tapwire-dataplane`, then `tapwire-control` on that etcd. \
         **Full sync**: from spawning the control until `node status` says the dataplane is \
         in sync (the dataplane's answer to the snapshot) and `routes` holds a remote route \
         per simulated block (polled every 2 ms). **One change**: a new simulated node's \
         Node, handle and affinity are written and the control let settle (no thread running), then \
         its block is written; timed until the control's route for the block's first address \
         (`tapwirectl routes ADDRESS`) is it (*control*; polled \
         with a pause as long as the last call, at least 2 ms) and \
         until a counters round trip through the dataplane completed after that (*change*, \
         an upper bound of when the dataplane had it: it answers in order). \
         **RSS**: `VmRSS` once in sync; *peak* is the control's `VmHWM`. To tell where \
         the time goes, the harness then times two of the control's own steps on the same \
         etcd (its own client, from the etcd member's namespace): the cluster-wide \
         *IPAM check* (`Ipam::repair`) a control runs before it serves, and one *cluster \
         read* (`read_cluster_state`, median of 5): what a control reads at start and after \
         etcd compacted the history its watch needed; a change otherwise costs the control \
         only the document the watch reports.\n\n",
    );
    out.push_str(&md_table(&SCALE_HEADER, &scale_rows(scale)));
    out.push('\n');
    for s in scale {
        let shown: Vec<String> = s
            .change_dataplane_ms
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect();
        let _ = writeln!(
            out,
            "- {} nodes: populated in {:.1} s; one route lookup call while polling {:.1} ms; \
             changes (ms): {}",
            s.nodes,
            s.populate_s,
            s.routes_call_ms,
            shown.join(", ")
        );
    }
    out
}

/// One target and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub what: String,
    /// The measured figure (ratio, µs or bytes), `None` when it could not be computed.
    pub measured: Option<f64>,
    /// The measured figure as the report shows it.
    pub shown: String,
    pub target: String,
    /// `None` when not measured.
    pub pass: Option<bool>,
}

/// How, where and when the run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    pub command: String,
    pub kernel: String,
    /// vCPUs the run could use.
    pub cores: usize,
    pub cpu_model: String,
    /// The machine's memory (`MemTotal`), bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// The commit the binaries were built from (`git describe`-like, `+dirty` when the
    /// tree had changes), or `unknown`.
    #[serde(default)]
    pub commit: String,
    /// The machine's steal time from the first measurement to the last, share of all CPU
    /// time (`/proc/stat`).
    #[serde(default)]
    pub steal_share: f64,
    /// The machine's busy share with every lab up and idle (1 s before the rounds and 1 s
    /// after): other processes' load, which every machine CPU figure includes.
    #[serde(default)]
    pub background_busy_share: f64,
    pub quick: bool,
    pub rounds: usize,
    pub tcp_seconds: u32,
    /// The unpaced UDP trial, s.
    pub udp_seconds: f64,
    /// Each paced UDP trial, s; at most `udp_max_trials` of them, until the bracket is
    /// narrower than `udp_resolution` of its top.
    #[serde(default)]
    pub udp_trial_seconds: f64,
    #[serde(default)]
    pub udp_max_trials: usize,
    #[serde(default)]
    pub udp_resolution: f64,
    pub rr_seconds: f64,
    pub pod_mtu_bytes: u32,
    pub dataplane_workers: usize,
    /// Each tapwire pool switch: until both directions used the new form, ms.
    pub mode_switch_ms: Vec<f64>,
    pub started_unix_s: u64,
    pub duration_s: f64,
    /// Why there is no kernel IPIP path.
    pub kernel_ipip: String,
}

impl Results {
    /// The result of path `kind`.
    pub fn path(&self, kind: PathKind) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.name == kind.name())
    }

    /// Every path: the known ones in report order, then any others as they come.
    pub fn ordered_paths(&self) -> Vec<&PathResult> {
        let known = PathKind::REPORT_ORDER.iter().filter_map(|k| self.path(*k));
        let others = self
            .paths
            .iter()
            .filter(|p| PathKind::from_name(&p.name).is_none());
        known.chain(others).collect()
    }

    /// The modelled floor of tapwire path `kind` beside its measured machine CPU s/Gbit
    /// (see [`crate::floor`]); `None` for a kernel path or when a figure is missing.
    pub fn floor(&self, kind: PathKind) -> Option<Floor> {
        let measured = self.path(kind)?.machine_cpu_s_per_gbit;
        let base = self.path(kind.floor_base()?)?.machine_cpu_s_per_gbit;
        Floor::model(kind, measured, base, self.tap_hop.as_ref()?.hop_s_per_gbit)
    }

    /// The highest 1-stream TCP ratio to its counterpart that tapwire path `kind` could
    /// show on this machine: a forwarder at its floor with every vCPU to itself
    /// ([`Floor::ceiling_gbps`]) over the counterpart's measured rate.
    pub fn ceiling_ratio(&self, kind: PathKind) -> Option<f64> {
        let ceiling = self.floor(kind)?.ceiling_gbps(self.setup.cores)?;
        ratio(ceiling, self.path(kind.counterpart()?)?.tcp_gbps_1)
    }

    /// `figure` of path `a` over that of path `b`, round by round (rounds matched by
    /// number).
    pub fn round_ratios(
        &self,
        a: PathKind,
        b: PathKind,
        figure: fn(&RoundSample) -> f64,
    ) -> Vec<f64> {
        let (Some(a), Some(b)) = (self.path(a), self.path(b)) else {
            return Vec::new();
        };
        a.rounds
            .iter()
            .filter_map(|ra| {
                let rb = b.rounds.iter().find(|rb| rb.round == ra.round)?;
                ratio(figure(ra), figure(rb))
            })
            .collect()
    }

    fn fib_at(&self, implementation: &str, routes: usize) -> Option<&FibResult> {
        self.fib
            .iter()
            .find(|f| f.implementation == implementation && f.routes == routes)
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// The least node → own pod TCP throughput, as a share of pod → pod on the same node,
/// that passes issue 11's "not slower": 10% is left to the noise of one shared machine.
pub const HOST_PATH_MIN_RATIO: f64 = 0.9;

/// The least tapwire/kernel TCP ratio that passes for one stream (none, VXLAN) and for
/// four streams (none, VXLAN), and for one IPIP stream (issue 12).
pub const TCP1_MIN_RATIO: f64 = 0.75;
pub const TCP4_MIN_RATIO: f64 = 0.4;
pub const IPIP_TCP1_MIN_RATIO: f64 = 0.4;
/// The most machine CPU per Gbit over the modelled floor that passes (issue 12).
pub const FLOOR_MAX_RATIO: f64 = 1.3;

/// The targets, judged on `results`: issue 12's throughput and floor targets (which
/// replace issue 4's throughput targets), then those of issues 4, 11 and later that stay
/// (small packets, the host path, RTT, the route table, CNI, scale, RSS).
pub fn evaluate_targets(results: &Results) -> Vec<TargetResult> {
    let get = |k: PathKind| results.path(k);
    let tcp = |a: PathKind, b: PathKind, figure: fn(&RoundSample) -> f64| {
        let medians = ratio(
            figure_median(get(a)?, figure)?,
            figure_median(get(b)?, figure)?,
        )?;
        Some((medians, results.round_ratios(a, b, figure)))
    };
    let at_least = |what: &str, value: Option<(f64, Vec<f64>)>, min: f64| TargetResult {
        what: what.to_string(),
        measured: value.as_ref().map(|v| v.0),
        shown: value.as_ref().map_or("not measured".into(), |(v, rounds)| {
            // Three decimals where two would round onto the limit and hide the verdict.
            let decimals = if (v - min).abs() < 0.005 { 3 } else { 2 };
            with_rounds(*v, rounds, decimals)
        }),
        target: format!("≥ {min}"),
        pass: value.map(|v| v.0 >= min),
    };
    let tcp1 = |r: &RoundSample| r.tcp_gbps_1;
    let tcp4 = |r: &RoundSample| r.tcp_gbps_4;
    // A 1-stream target says beside its figure the most its path could show here.
    let tcp1_target = |what: &str, kind: PathKind, min: f64| {
        let mut target = at_least(what, tcp(kind, kind.counterpart()?, tcp1), min);
        if let (Some(_), Some(ceiling)) = (target.measured, results.ceiling_ratio(kind)) {
            target.shown = format!("{}; at the floor ≤ {ceiling:.2}", target.shown);
        }
        Some(target)
    };
    let mut out: Vec<TargetResult> = [
        (
            "tapwire-none TCP 1 stream / kernel-routed",
            PathKind::TapwireNone,
            TCP1_MIN_RATIO,
        ),
        (
            "tapwire-vxlan TCP 1 stream / kernel-vxlan",
            PathKind::TapwireVxlan,
            TCP1_MIN_RATIO,
        ),
        (
            "tapwire-ipip TCP 1 stream / kernel-vxlan (no kernel IPIP)",
            PathKind::TapwireIpip,
            IPIP_TCP1_MIN_RATIO,
        ),
    ]
    .into_iter()
    .filter_map(|(what, kind, min)| tcp1_target(what, kind, min))
    .collect();
    out.extend([
        at_least(
            "tapwire-none TCP 4 streams / kernel-routed",
            tcp(PathKind::TapwireNone, PathKind::KernelRouted, tcp4),
            TCP4_MIN_RATIO,
        ),
        at_least(
            "tapwire-vxlan TCP 4 streams / kernel-vxlan",
            tcp(PathKind::TapwireVxlan, PathKind::KernelVxlan, tcp4),
            TCP4_MIN_RATIO,
        ),
    ]);
    for kind in [PathKind::TapwireNone, PathKind::TapwireVxlan] {
        let floor = results.floor(kind);
        let value = floor.and_then(|f| f.ratio());
        out.push(TargetResult {
            what: format!("{} machine CPU s/Gbit / modelled floor", kind.name()),
            measured: value,
            shown: match (floor, value) {
                (Some(f), Some(v)) => format!(
                    "{v:.2} ({:.3} / {:.3})",
                    f.measured_s_per_gbit, f.floor_s_per_gbit
                ),
                _ => "not measured".into(),
            },
            target: format!("≤ {FLOOR_MAX_RATIO}"),
            pass: value.map(|v| v <= FLOOR_MAX_RATIO),
        });
    }
    let pps = |r: &RoundSample| r.udp_small_pps;
    out.push(at_least(
        "tapwire-vxlan small-packet pps under 1% loss / kernel-vxlan",
        tcp(PathKind::TapwireVxlan, PathKind::KernelVxlan, pps),
        0.5,
    ));
    out.push(at_least(
        "tapwire-host TCP 1 stream / tapwire-local (node → its pod against pod → pod, one node)",
        tcp(PathKind::TapwireHost, PathKind::TapwireLocal, tcp1),
        HOST_PATH_MIN_RATIO,
    ));
    let rtt = get(PathKind::TapwireVxlan)
        .zip(get(PathKind::KernelVxlan))
        .map(|(a, b)| a.rtt_us_p50 - b.rtt_us_p50);
    out.push(TargetResult {
        what: "RTT p50, tapwire-vxlan − kernel-vxlan".into(),
        measured: rtt,
        shown: rtt.map_or("not measured".into(), |v| format!("{v:+.1} µs")),
        target: "≤ 30 µs".into(),
        pass: rtt.map(|v| v <= 30.0),
    });
    let ours = results.fib_at("tapwire", 100_000);
    let theirs = results.fib_at("prefix-trie", 100_000);
    let lpm = ours
        .zip(theirs)
        .and_then(|(a, b)| ratio(a.lookups_per_s, b.lookups_per_s));
    let lpm_mem = ours.map(|a| a.memory_bytes as f64);
    out.push(TargetResult {
        what: "LPM lookups at 100k routes / prefix-trie, tapwire memory".into(),
        measured: lpm,
        shown: match (lpm, lpm_mem) {
            (Some(r), Some(m)) => format!("{r:.2}, {:.2} MiB", m / MIB),
            _ => "not measured".into(),
        },
        target: "≥ 1.5, with ≤ 4 MiB".into(),
        pass: lpm.zip(lpm_mem).map(|(r, m)| r >= 1.5 && m <= 4.0 * MIB),
    });
    let update = results.fib_update.as_ref().map(|u| u.median_us);
    out.push(TargetResult {
        what: "one route add/remove at 100k routes, lookups running (median)".into(),
        measured: update,
        shown: update.map_or("not measured".into(), |v| format!("{v:.2} µs")),
        target: "≤ 10 µs".into(),
        pass: update.map(|v| v <= 10.0),
    });
    out.push(cni_target(results.cni.as_ref()));
    out.extend(scale_targets(&results.scale));
    let rss = results
        .dataplane_memory
        .as_ref()
        .map(|m| m.rss_bytes as f64);
    out.push(TargetResult {
        what: "dataplane RSS, 2 workers, 64 pods, 100k routes".into(),
        measured: rss,
        shown: rss.map_or("not measured".into(), |v| format!("{:.1} MiB", v / MIB)),
        target: "≤ 64 MiB".into(),
        pass: rss.map(|v| v <= 64.0 * MIB),
    });
    out
}

/// The largest growth of CNI ADD p50 from a node's first pods to its last that passes.
pub const CNI_MAX_RATIO: f64 = 1.5;

/// ADD p50 of the last pods over the first, median of the passes, with their spread.
fn cni_target(cni: Option<&CniScaling>) -> TargetResult {
    let (pods, window) = cni.map_or((200, 20), |c| (c.pods, c.window));
    let ratio = cni.map(|c| c.ratio_p50);
    let shown = match cni {
        Some(c) if c.passes.len() > 1 => {
            let ratios = c.passes.iter().map(|p| p.ratio_p50);
            let low = ratios.clone().fold(f64::INFINITY, f64::min);
            let high = ratios.fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{:.2} ({low:.2}–{high:.2} over {} passes)",
                c.ratio_p50,
                c.passes.len()
            )
        }
        Some(c) => format!("{:.2} (1 pass)", c.ratio_p50),
        None => "not measured".into(),
    };
    TargetResult {
        what: format!(
            "CNI ADD p50 at pods {}–{pods} / pods 1–{window}, one node",
            pods.saturating_sub(window) + 1
        ),
        measured: ratio,
        shown,
        target: format!("≤ {CNI_MAX_RATIO}"),
        pass: ratio.map(|r| r <= CNI_MAX_RATIO),
    }
}

/// The median of one figure over a path's rounds.
fn figure_median(path: &PathResult, figure: fn(&RoundSample) -> f64) -> Option<f64> {
    path.spread(figure).map(|s| s.median)
}

/// A ratio of medians, with the per-round ratios' range when there are several rounds.
fn with_rounds(value: f64, rounds: &[f64], decimals: usize) -> String {
    match Spread::of(rounds) {
        Some(s) if s.rounds > 1 => format!(
            "{value:.decimals$} (rounds {:.decimals$}–{:.decimals$})",
            s.min, s.max
        ),
        _ => format!("{value:.decimals$}"),
    }
}

fn verdict(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "n/a",
    }
}

fn ratio_text(a: f64, b: f64) -> String {
    ratio(a, b).map_or("-".into(), |r| format!("{r:.2}x"))
}

/// A table of rows: the header, then rows; columns padded to their widest cell, the first
/// left-aligned and the rest right-aligned.
fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str("  ");
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// A Markdown table.
fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// A figure's median with its rounds' spread: `12.3 (10.1–13.0)`, followed by `noisy`
/// when the spread is over [`crate::stats::NOISY_SPREAD`] of the median; the median alone
/// for one round.
fn spread_cell(spread: Option<Spread>, decimals: usize) -> String {
    let Some(s) = spread else {
        return "-".into();
    };
    let mut cell = format!("{:.*}", decimals, s.median);
    if s.rounds > 1 {
        let _ = write!(cell, " ({:.*}–{:.*})", decimals, s.min, decimals, s.max);
        if s.is_noisy() {
            cell.push_str(" noisy");
        }
    }
    cell
}

const PATH_HEADER: [&str; 8] = [
    "path",
    "TCP 1 stream Gbit/s",
    "TCP 4 streams Gbit/s",
    "UDP 64 B kpps, <1% loss",
    "RTT p50 µs",
    "RTT p99 µs",
    "CPU s/Gbit",
    "machine CPU s/Gbit",
];

fn path_rows(results: &Results) -> Vec<Vec<String>> {
    results
        .ordered_paths()
        .into_iter()
        .map(|p| {
            vec![
                p.name.clone(),
                spread_cell(p.spread(|r| r.tcp_gbps_1), 2),
                spread_cell(p.spread(|r| r.tcp_gbps_4), 2),
                spread_cell(p.spread(|r| r.udp_small_pps / 1e3), 0),
                spread_cell(p.spread(|r| r.rtt_us_p50), 1),
                spread_cell(p.spread(|r| r.rtt_us_p99), 1),
                spread_cell(p.spread(|r| r.cpu_s_per_gbit), 3),
                spread_cell(p.spread(|r| r.machine_cpu_s_per_gbit), 3),
            ]
        })
        .collect()
}

const LOSS_HEADER: [&str; 15] = [
    "path",
    "TCP 1 retransmits",
    "TCP 4 retransmits",
    "unpaced UDP sent kpps",
    "sender µs/datagram",
    "received kpps",
    "loss",
    "lost at sender",
    "in between",
    "at receiver's devices",
    "at receiving socket",
    "<1% loss kpps",
    "its loss",
    "lowest failing kpps",
    "paced trials",
];

/// The sending thread's CPU time per datagram it sent in the unpaced trial, µs.
fn sender_us_per_datagram(r: &RoundSample) -> f64 {
    if r.udp_max_sent_pps > 0.0 {
        r.udp_max_sender_busy / r.udp_max_sent_pps * 1e6
    } else {
        f64::NAN
    }
}

/// The unpaced trial's datagrams lost where no counter saw them: in the forwarder, the
/// underlay or the peer node.
fn lost_in_between(r: &RoundSample) -> f64 {
    let Some(unpaced) = r.udp_trials.first() else {
        return f64::NAN;
    };
    let counted = r.udp_max_lost_at_sender
        + r.udp_max_lost_at_receiver_devices
        + r.udp_max_lost_at_receiving_socket;
    unpaced
        .sent
        .saturating_sub(unpaced.received)
        .saturating_sub(counted) as f64
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn loss_rows(results: &Results) -> Vec<Vec<String>> {
    results
        .ordered_paths()
        .into_iter()
        .map(|p| {
            let m = |figure: fn(&RoundSample) -> f64| figure_median(p, figure);
            let count = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
            let kpps = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.0}", v / 1e3));
            vec![
                p.name.clone(),
                count(m(|r| r.tcp_retransmits_1 as f64)),
                count(m(|r| r.tcp_retransmits_4 as f64)),
                kpps(m(|r| r.udp_max_sent_pps)),
                m(sender_us_per_datagram).map_or("-".into(), |us| format!("{us:.2}")),
                kpps(m(|r| r.udp_max_received_pps)),
                m(RoundSample::udp_max_loss).map_or("-".into(), percent),
                count(m(|r| r.udp_max_lost_at_sender as f64)),
                count(m(lost_in_between)),
                count(m(|r| r.udp_max_lost_at_receiver_devices as f64)),
                count(m(|r| r.udp_max_lost_at_receiving_socket as f64)),
                kpps(m(|r| r.udp_small_pps)),
                m(|r| r.udp_small_loss).map_or("-".into(), |l| format!("{:.2}%", l * 100.0)),
                kpps(m(|r| r.udp_lowest_failed_pps.unwrap_or(f64::NAN))),
                count(m(|r| r.udp_trials.len().saturating_sub(1) as f64)),
            ]
        })
        .collect()
}

const FLOOR_HEADER: [&str; 9] = [
    "tapwire path",
    "floor built on",
    "its machine CPU s/Gbit",
    "TAP hops",
    "modelled floor s/Gbit",
    "measured s/Gbit",
    "measured/floor",
    "TCP 1 at the floor, at most Gbit/s",
    "that / counterpart's TCP 1",
];

fn floor_rows(results: &Results) -> Vec<Vec<String>> {
    PathKind::REPORT_ORDER
        .into_iter()
        .filter_map(|k| results.floor(k))
        .map(|f| {
            vec![
                f.path.name().to_string(),
                f.base.name().to_string(),
                format!("{:.3}", f.base_s_per_gbit),
                f.hops.to_string(),
                format!("{:.3}", f.floor_s_per_gbit),
                format!("{:.3}", f.measured_s_per_gbit),
                f.ratio().map_or("-".into(), |r| format!("{r:.2}x")),
                f.ceiling_gbps(results.setup.cores)
                    .map_or("-".into(), |g| format!("{g:.2}")),
                results
                    .ceiling_ratio(f.path)
                    .map_or("-".into(), |r| format!("{r:.2}x")),
            ]
        })
        .collect()
}

/// What the kernel itself reaches with MTU-sized packets on the underlay, against kernel
/// VXLAN, which IPIP is compared with: the same bound on IPIP's ratio, for any forwarder.
fn mtu_underlay_line(results: &Results) -> Option<String> {
    let mtu = results.path(PathKind::KernelRoutedMtu)?;
    let vxlan = results.path(PathKind::KernelVxlan)?;
    let share = ratio(mtu.tcp_gbps_1, vxlan.tcp_gbps_1)?;
    Some(format!(
        "The kernel itself, with MTU-sized packets on the underlay (`kernel-routed-mtu`), \
         moved {:.2} Gbit/s in one TCP stream: {share:.2}x `kernel-vxlan`'s {:.2}, which \
         carries super-frames whole. tapwire's IPIP must cross the underlay that way (no \
         virtio-net GSO type describes IPIP).",
        mtu.tcp_gbps_1, vxlan.tcp_gbps_1
    ))
}

/// One line on the TAP hop: its median, spread and what it is made of.
fn tap_hop_line(hop: &TapHop) -> String {
    let rounds = hop.rounds.len();
    format!(
        "one TAP hop, machine CPU s/Gbit (TAP wire minus kernel-local, {} round{}): {}",
        rounds,
        if rounds == 1 { "" } else { "s" },
        spread_cell(hop.spread(), 3)
    )
}

const RATIO_HEADER: [&str; 8] = [
    "tapwire path",
    "compared with",
    "TCP 1",
    "TCP 4",
    "UDP pps <1% loss",
    "RTT p50 Δ µs",
    "RTT p99 Δ µs",
    "machine CPU/Gbit",
];

/// Every comparison a tapwire path takes part in: with its kernel counterpart, then with
/// its tapwire peer (the host path with pod → pod on the same node).
fn ratio_rows(results: &Results) -> Vec<Vec<String>> {
    PathKind::REPORT_ORDER
        .iter()
        .flat_map(|k| {
            [k.counterpart(), k.tapwire_peer()]
                .into_iter()
                .flatten()
                .map(move |other| (*k, other))
        })
        .filter_map(|(k, other)| Some((results.path(k)?, other)))
        .map(|(ours, other_kind)| {
            let shown_other = if ours.name == PathKind::TapwireIpip.name() {
                format!("{} (no kernel IPIP here)", other_kind.name())
            } else if other_kind == PathKind::TapwireLocal {
                format!("{} (pod → pod, same node)", other_kind.name())
            } else {
                other_kind.name().to_string()
            };
            match results.path(other_kind) {
                Some(k) => vec![
                    ours.name.clone(),
                    shown_other,
                    ratio_text(ours.tcp_gbps_1, k.tcp_gbps_1),
                    ratio_text(ours.tcp_gbps_4, k.tcp_gbps_4),
                    ratio_text(ours.udp_small_pps, k.udp_small_pps),
                    format!("{:+.1}", ours.rtt_us_p50 - k.rtt_us_p50),
                    format!("{:+.1}", ours.rtt_us_p99 - k.rtt_us_p99),
                    ratio_text(ours.machine_cpu_s_per_gbit, k.machine_cpu_s_per_gbit),
                ],
                None => {
                    let mut row = vec![ours.name.clone(), shown_other];
                    row.extend(std::iter::repeat_n("not measured".to_string(), 6));
                    row
                }
            }
        })
        .collect()
}

const FIB_HEADER: [&str; 6] = [
    "table",
    "routes",
    "M lookups/s",
    "heap MiB",
    "self-reported MiB",
    "vs prefix-trie",
];

fn fib_rows(results: &Results) -> Vec<Vec<String>> {
    results
        .fib
        .iter()
        .map(|f| {
            let vs = if f.implementation == "tapwire" {
                results
                    .fib_at("prefix-trie", f.routes)
                    .map_or("-".into(), |p| ratio_text(f.lookups_per_s, p.lookups_per_s))
            } else {
                String::new()
            };
            vec![
                f.implementation.clone(),
                f.routes.to_string(),
                format!("{:.1}", f.lookups_per_s / 1e6),
                format!("{:.2}", f.memory_bytes as f64 / MIB),
                format!("{:.2}", f.reported_memory_bytes as f64 / MIB),
                vs,
            ]
        })
        .collect()
}

/// The CNI table's header for windows of `c`.
fn cni_header(c: &CniScaling) -> Vec<String> {
    let (first, last) = c.passes.first().map_or(((0, 0), (0, 0)), |p| {
        (
            (p.first.from_pod, p.first.to_pod),
            (p.last.from_pod, p.last.to_pod),
        )
    });
    vec![
        "CNI ADD, one node".into(),
        format!("pods {}–{} p50 ms", first.0, first.1),
        "p90 ms".into(),
        format!("pods {}–{} p50 ms", last.0, last.1),
        "p90 ms".into(),
        "last/first p50".into(),
        format!("filled node pods {}–{} p50 ms", first.0, first.1),
        "last/that p50".into(),
        "control CPU ms/ADD".into(),
        "dataplane CPU ms/ADD".into(),
        "ip netns exec ms".into(),
    ]
}

fn cni_rows(c: &CniScaling) -> Vec<Vec<String>> {
    c.passes
        .iter()
        .map(|p| {
            vec![
                format!("pass {}", p.pass),
                format!("{:.1}", p.first.p50_ms),
                format!("{:.1}", p.first.p90_ms),
                format!("{:.1}", p.last.p50_ms),
                format!("{:.1}", p.last.p90_ms),
                format!("{:.2}x", p.ratio_p50),
                format!("{:.1}", p.filled_first.p50_ms),
                format!("{:.2}x", p.filled_ratio_p50),
                format!(
                    "{:.1} → {:.1}",
                    p.first.control_cpu_ms_per_add, p.last.control_cpu_ms_per_add
                ),
                format!(
                    "{:.1} → {:.1}",
                    p.first.dataplane_cpu_ms_per_add, p.last.dataplane_cpu_ms_per_add
                ),
                format!(
                    "{:.1} → {:.1}",
                    p.netns_exec_ms_before, p.netns_exec_ms_after
                ),
            ]
        })
        .collect()
}

const TARGET_HEADER: [&str; 4] = ["target", "measured", "required", "verdict"];

fn target_rows(results: &Results) -> Vec<Vec<String>> {
    results
        .targets
        .iter()
        .map(|t| {
            vec![
                t.what.clone(),
                t.shown.clone(),
                t.target.clone(),
                verdict(t.pass).to_string(),
            ]
        })
        .collect()
}

fn extras_lines(results: &Results) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(u) = &results.fib_update {
        lines.push(format!(
            "route change at {} routes with a reader looking up: median {:.2} µs (insert {:.2}, \
             remove {:.2}), p99 {:.2} µs over {} changes; reader {:.1} M lookups/s meanwhile",
            u.routes,
            u.median_us,
            u.insert_median_us,
            u.remove_median_us,
            u.p99_us,
            u.ops,
            u.reader_lookups_per_s / 1e6
        ));
    }
    if let Some(m) = &results.dataplane_memory {
        lines.push(format!(
            "tapwire-dataplane --workers {}: RSS {:.1} MiB with {} pods and {} routes \
             ({:.1} MiB before any state; applied in {:.1} s)",
            m.workers,
            m.rss_bytes as f64 / MIB,
            m.pods,
            m.routes,
            m.rss_empty_bytes as f64 / MIB,
            m.apply_s
        ));
    }
    if !results.setup.mode_switch_ms.is_empty() {
        let shown: Vec<String> = results
            .setup
            .mode_switch_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect();
        lines.push(format!(
            "tapwire pool switches (apply → new form on the wire both ways): {} ms",
            shown.join(", ")
        ));
    }
    lines
}

/// The table printed at the end of a run.
pub fn terminal_table(results: &Results) -> String {
    let mut out = String::new();
    let s = &results.setup;
    let _ = writeln!(
        out,
        "tapwire-bench: {} round(s), median shown (min–max over rounds; noisy: spread over {:.0}% of the median); {}",
        s.rounds,
        crate::stats::NOISY_SPREAD * 100.0,
        machine_line(s)
    );
    if let Some(warning) = background_warning(s) {
        let _ = writeln!(out, "{warning}");
    }
    out.push('\n');
    out.push_str(&text_table(&PATH_HEADER, &path_rows(results)));
    out.push('\n');
    out.push_str(&text_table(&RATIO_HEADER, &ratio_rows(results)));
    let _ = writeln!(out, "({})", s.kernel_ipip);
    if !results.paths.is_empty() {
        out.push('\n');
        out.push_str(&text_table(&LOSS_HEADER, &loss_rows(results)));
    }
    if let Some(hop) = &results.tap_hop {
        out.push('\n');
        out.push_str(&text_table(&FLOOR_HEADER, &floor_rows(results)));
        let _ = writeln!(out, "{}", tap_hop_line(hop));
    }
    if !results.fib.is_empty() {
        out.push('\n');
        out.push_str(&text_table(&FIB_HEADER, &fib_rows(results)));
    }
    if let Some(c) = &results.cni {
        let header = cni_header(c);
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push('\n');
        out.push_str(&text_table(&header, &cni_rows(c)));
    }
    if !results.scale.is_empty() {
        out.push('\n');
        out.push_str(&text_table(&SCALE_HEADER, &scale_rows(&results.scale)));
    }
    for line in extras_lines(results) {
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
    out.push_str(&text_table(&TARGET_HEADER, &target_rows(results)));
    let _ = writeln!(out, "{TARGETS_ARE_REPORTED}");
    for error in &results.errors {
        let _ = writeln!(out, "FAILED: {error}");
    }
    out
}

/// What a missed target does to the run (the exit status policy), said under the targets.
pub const TARGETS_ARE_REPORTED: &str = "Targets are reported, not enforced: a FAIL does not \
     change tapwire-bench's exit status, which is non-zero only when a part of the run could \
     not be measured (so CI's quick run fails on a broken benchmark, not on a missed figure).";

/// Above this busy share of the machine with every lab idle, other processes' load is
/// large enough to distort every machine CPU figure, and the report says so.
pub const BACKGROUND_WARNING_SHARE: f64 = 0.1;

/// The warning for a run made while other processes kept the machine busy, if it was.
fn background_warning(s: &Setup) -> Option<String> {
    (s.background_busy_share > BACKGROUND_WARNING_SHARE).then(|| {
        format!(
            "WARNING: other processes kept the machine {:.0}% busy while the labs were idle. \
             Every machine CPU s/Gbit figure counts their time too (at full load it is no \
             more than the vCPUs divided by the rate), so the floors and their ratios say \
             little in this run, and rates and RTTs are lower than on a quiet machine.",
            s.background_busy_share * 100.0
        )
    })
}

/// The machine in one line: CPU, vCPUs, memory, kernel, steal, commit.
fn machine_line(s: &Setup) -> String {
    format!(
        "{} vCPUs ({}), {:.1} GiB, kernel {}, steal {:.1}% and background load {:.1}% during the run, commit {}",
        s.cores,
        s.cpu_model,
        s.memory_bytes as f64 / (MIB * 1024.0),
        s.kernel,
        s.steal_share * 100.0,
        s.background_busy_share * 100.0,
        if s.commit.is_empty() {
            "unknown"
        } else {
            &s.commit
        }
    )
}

/// `report.md`: machine, setup, definitions, every table, the targets and the command.
pub fn markdown(results: &Results) -> String {
    let s = &results.setup;
    let mut out = String::from("# tapwire benchmark report\n\n");
    let _ = writeln!(
        out,
        "Produced by `{}` in {:.0} s ({} mode, {} round(s), medians shown with the rounds' \
         min–max).\n",
        s.command,
        s.duration_s,
        if s.quick { "quick" } else { "full" },
        s.rounds
    );
    if !results.errors.is_empty() {
        out.push_str("**Parts of this run failed; their figures are missing:**\n\n");
        for error in &results.errors {
            let _ = writeln!(out, "- {}", error.replace('\n', " "));
        }
        out.push('\n');
    }
    out.push_str("## Machine\n\n");
    let _ = writeln!(out, "- CPU: {}, {} vCPUs", s.cpu_model, s.cores);
    let _ = writeln!(
        out,
        "- memory: {:.1} GiB",
        s.memory_bytes as f64 / (MIB * 1024.0)
    );
    let _ = writeln!(out, "- kernel {}", s.kernel);
    let _ = writeln!(
        out,
        "- commit: {}",
        if s.commit.is_empty() {
            "unknown"
        } else {
            &s.commit
        }
    );
    let steal_per_run: Vec<f64> = results
        .paths
        .iter()
        .flat_map(|p| p.rounds.iter().map(|r| r.steal_share))
        .collect();
    let worst = steal_per_run.iter().copied().fold(0.0_f64, f64::max);
    let _ = writeln!(
        out,
        "- steal time (`/proc/stat`): {:.1}% of all CPU time from the first path measurement \
         to the last; at most {:.1}% during one 1-stream TCP run",
        s.steal_share * 100.0,
        worst * 100.0
    );
    let _ = writeln!(
        out,
        "- background load: the machine was {:.1}% busy (of {} vCPUs) with every lab up and \
         idle, 1 s before the rounds and 1 s after: other processes, whose CPU time every \
         machine CPU figure includes",
        s.background_busy_share * 100.0,
        s.cores
    );
    let _ = writeln!(out, "- {}\n", s.kernel_ipip);
    if let Some(warning) = background_warning(s) {
        let _ = writeln!(out, "**{warning}**\n");
    }

    out.push_str("## Setup\n\n");
    out.push_str(
        "Every lab runs on this host in network namespaces, all of them up for the whole run; \
         each round measures every path once, tapwire and kernel paths alternating, so drift \
         during the run hits all paths alike. Two-node paths are compared with two-node \
         kernel paths, one-node paths with one-node kernel paths.\n\n",
    );
    for kind in PathKind::REPORT_ORDER {
        let _ = writeln!(out, "- `{}`: {}", kind.name(), kind.description());
    }
    let _ = writeln!(
        out,
        "- TAP wire (for the TAP hop, not a path of its own): two pods of one node, each with \
         a tapwire pod TAP as `eth0`, joined by a userspace forwarder that only copies frames \
         (virtio-net header and TCP super-frames included) from one TAP to the other.\n"
    );
    let _ = writeln!(
        out,
        "The tapwire nodes run `tapwire-dataplane --workers {}` and `tapwire-control` over \
         one file datastore; pods are added through the `tapwire` CNI plugin and the pool is \
         switched with `tapwirectl apply`, each switch waiting until a ping shows the new \
         form on the underlay both ways. Every pod has MTU {} (what the VXLAN pool gives on \
         the 1500-byte underlay; the kernel pods are given the same). The kernel's \
         `vxlan.calico` keeps transmit checksum offload on, as Felix does on kernels ≥ 5.7. \
         The node's own traffic to its pods has the same MTU: tapwire's pool route through \
         `tapwire0` carries the pods' MTU, and the kernel node's `caliX` veths have it. \
         Every two-node lab's nodes share one underlay segment: each node's `eth0` is a veth \
         into one bridge.\n",
        s.dataplane_workers, s.pod_mtu_bytes
    );

    out.push_str("## Definitions\n\n");
    let _ = writeln!(
        out,
        "- **TCP 1 / 4 streams**: iperf3 `-J` for {tcp} s (`-P 4` for four), the receiver's \
         rate, pod to pod (node to pod on the host paths: the node's own namespace is the \
         client of every test). **Retransmits** are the sender's count \
         (`end.sum_sent.retransmits`).\n\
         - **UDP 64 B kpps, <1% loss**: the highest rate of 64-byte UDP payloads received \
         with under 1% loss, found as RFC 2544 finds throughput. One thread sends with \
         `sendmmsg`, a socket in the other pod receives with `recvmmsg` (16 MiB buffer). \
         First an *unpaced* trial of {udp:.1} s (as fast as the kernel takes them; \
         *sender µs/datagram* is the sending thread's CPU time over the datagrams it sent); \
         if it \
         lost 1% or more, paced trials of {trial:.2} s each (the first at the rate the \
         unpaced trial delivered, then bisecting between the best passing rate and the \
         lowest failing one, at most 1.5× up from a pass), at most {trials} of them, until \
         the bracket is within {resolution:.0}% (the figure is then a lower bound, the \
         lowest failing rate is shown beside it). A trial's count ends once the receiver \
         has been quiet for 50 ms after the sender stopped; loss = 1 − received / sent. \
         Where the unpaced trial lost, from the two ends' namespace counters: *at sender* \
         is datagrams `sendmmsg` counted as sent that the sending namespace dropped (its \
         devices' transmit drops in `/proc/net/dev`, such as a TAP whose reader had no \
         room, and its UDP `SndbufErrors`, which the kernel reports as an error only to \
         `IP_RECVERR` sockets); *at receiver's devices* is the receiving namespace's \
         receive drops (a frame written to a TAP or arriving on a veth that the backlog \
         could not take); *at receiving socket* its UDP `RcvbufErrors`; *in between* is \
         the rest, which no counter at either end saw: lost in the forwarder, the underlay \
         or the peer node.\n\
         - **Why the kernel paths lose nothing unpaced**: a veth transmits by queueing the \
         packet on the sending CPU's backlog, which the kernel processes in softirq as soon \
         as the send re-enables bottom halves, so each datagram is carried through the \
         node's routing, the underlay (and VXLAN) and the peer up to the receiving socket \
         inside the sender's own `sendmmsg` call. This kernel's tick-based CPU accounting \
         charges that work to the sending thread, and it shows: the sender spends several \
         times more CPU per datagram on a kernel path than on a tapwire path (*sender \
         µs/datagram*), where its work ends at the pod's TAP. The sender is paced by the \
         path, not by its socket's send buffer (a datagram leaves it when the node's IP \
         layer takes it, within the same call): sent = received is real and the count is \
         right (every loss counter stays at 0), and the rate is the path's capacity for one \
         sending thread. On tapwire paths the sender can outrun the dataplane, and what the \
         dataplane cannot take is lost (*at sender*: the pod's TAP queue was full; *in \
         between*).\n\
         - **RTT p50 / p99**: one TCP connection (`TCP_NODELAY`), a 64-byte request answered \
         by a 64-byte response, one at a time for {rr:.1} s after 200 warm-up exchanges; \
         every round trip is timed by the client; nearest-rank percentiles.\n\
         - **CPU s/Gbit**: the dataplane's CPU time during the 1-stream TCP run divided by the \
         Gbit it moved (rate × duration). For tapwire: user + system time of both \
         nodes' `tapwire-dataplane` processes (`/proc/PID/stat`). For the kernel, which \
         forwards without a process of its own: the machine's softirq time (`/proc/stat`). \
         The two are not the same quantity — compare **machine CPU s/Gbit** (all busy time \
         of the machine from `/proc/stat`: user, nice, system, irq, softirq, steal; senders, \
         receivers and forwarding alike, and whatever else the machine ran meanwhile) for a \
         like-for-like total. `softirq_s_per_gbit` is in `results.json` for every path.\n\
         - **TAP hop and modelled floor**: a byte crossing a kernel path is copied twice \
         (the applications' write and read); a forwarder with TAPs at the pods adds, on each \
         node it runs on, one TAP hop: a copy out of the kernel (TAP read or underlay \
         receive) and one back in (underlay send or TAP write), with their system calls. \
         One hop's cost is measured in each round as the *TAP wire*'s machine CPU s/Gbit \
         (1-stream TCP) minus `kernel-local`'s in the same round. A tapwire path's floor is \
         its kernel counterpart's machine CPU s/Gbit plus its hops × one hop: two hops \
         across two nodes, one on a node. IPIP's is built on `kernel-routed-mtu` instead: \
         kernel VXLAN carries a super-frame whole from node to node, which IPIP cannot here \
         (no virtio-net GSO type describes IPIP, so the forwarder hands the underlay \
         MTU-sized packets, and a veth handed them one send at a time coalesces none), and the kernel's own cost \
         with MTU-sized packets on the underlay is what a forwarder cannot go below. \
         Measured/floor is how far a path is from what a TAP forwarder can reach on this \
         machine (1 = the floor). A floor also bounds throughput: a forwarder at it, given \
         every vCPU (senders and receivers included), moves at most vCPUs / floor Gbit/s; \
         over the counterpart's rate that is the highest TCP 1 ratio the path can show here \
         (*at the floor ≤* beside each 1-stream target).\n\
         - **Spread and noise**: each figure is the median of the rounds, shown with the \
         lowest and highest round; a figure whose spread (max − min) is over {noisy:.0}% of \
         its median is marked *noisy*. Ratios are of medians, with the range of the \
         round-by-round ratios in the targets.\n\
         - **Ratios** divide a tapwire path's figure by its kernel counterpart's from the \
         same run: unencapsulated across two nodes by `kernel-routed`, VXLAN and IPIP by \
         `kernel-vxlan` (the kernel here has no IPIP), pod → pod on one node \
         (`tapwire-local`) by `kernel-local`, node → its pod (`tapwire-host`) by the \
         kernel's node → veth pod. `tapwire-host` is also divided by `tapwire-local`: the \
         node reaching its pod through the host path against a pod reaching a pod on the same \
         node (issue 11). RTT is compared as a difference.\n\
         - **LPM**: random Internet-shaped tables (fixed seed; /24 dominant), 65536 \
         destinations mostly inside the table, single thread; the two implementations must \
         agree on every destination before they are timed. Heap bytes are what a counting \
         global allocator saw held after building the table (same method for both). \
         **Route change**: insert or remove one prefix in a 100k-route `Fib` and publish the \
         new version (`rcu::Rcu`, as the dataplane publishes), timed per change, while \
         another thread looks up, one version per 64 lookups; replaced versions are \
         reclaimed after each change, untimed.\n\
         - **Dataplane RSS**: `VmRSS` of one `tapwire-dataplane --workers 2` given 64 pods \
         (TAPs) and 100k /26 routes directly over its control socket, after \
         `DataplaneInSync` with every endpoint up.\n",
        tcp = s.tcp_seconds,
        udp = s.udp_seconds,
        trial = s.udp_trial_seconds,
        trials = s.udp_max_trials,
        resolution = s.udp_resolution * 100.0,
        rr = s.rr_seconds,
        noisy = crate::stats::NOISY_SPREAD * 100.0,
    );

    out.push_str("## Paths\n\n");
    out.push_str(&md_table(&PATH_HEADER, &path_rows(results)));
    out.push_str("\n## tapwire against the kernel (and node → pod against pod → pod)\n\n");
    out.push_str(&md_table(&RATIO_HEADER, &ratio_rows(results)));
    out.push_str(
        "\n![TCP throughput, each tapwire path beside its kernel counterpart](chart.svg)\n",
    );
    if !results.paths.is_empty() {
        out.push_str("\n## Loss and retransmits\n\n");
        out.push_str(&md_table(&LOSS_HEADER, &loss_rows(results)));
    }
    if let Some(hop) = &results.tap_hop {
        out.push_str("\n## The floor (machine CPU s/Gbit)\n\n");
        if let Some(warning) = background_warning(s) {
            let _ = writeln!(out, "**{warning}**\n");
        }
        out.push_str(&md_table(&FLOOR_HEADER, &floor_rows(results)));
        if let Some(line) = mtu_underlay_line(results) {
            let _ = writeln!(out, "\n{line}");
        }
        let _ = writeln!(out, "\n{}\n", capitalized(&tap_hop_line(hop)));
        let rows: Vec<Vec<String>> = hop
            .rounds
            .iter()
            .map(|r| {
                vec![
                    r.round.to_string(),
                    format!("{:.2}", r.tap_wire_gbps),
                    format!("{:.3}", r.tap_wire_machine_cpu_s_per_gbit),
                    format!("{:.3}", r.veth_machine_cpu_s_per_gbit),
                    format!("{:.3}", r.hop_s_per_gbit),
                ]
            })
            .collect();
        out.push_str(&md_table(
            &[
                "round",
                "TAP wire TCP 1 Gbit/s",
                "TAP wire machine CPU s/Gbit",
                "kernel-local machine CPU s/Gbit",
                "one TAP hop s/Gbit",
            ],
            &rows,
        ));
    }
    if !results.fib.is_empty() {
        out.push_str("\n## Route table (LPM)\n\n");
        out.push_str(&md_table(&FIB_HEADER, &fib_rows(results)));
    }
    if let Some(c) = &results.cni {
        out.push_str(&cni_section(c));
    }
    if !results.scale.is_empty() {
        out.push_str(&scale_section(&results.scale));
    }
    let extras = extras_lines(results);
    if !extras.is_empty() {
        out.push('\n');
        for line in extras {
            let _ = writeln!(out, "- {line}");
        }
    }
    out.push_str("\n## Targets\n\n");
    out.push_str(&md_table(&TARGET_HEADER, &target_rows(results)));
    let _ = writeln!(out, "\n{TARGETS_ARE_REPORTED}");
    if !results.profiles.is_empty() {
        out.push_str(&profile_section(&results.profiles));
    }
    out.push_str("\n## Per-round figures\n\n");
    let round_rows: Vec<Vec<String>> = results
        .ordered_paths()
        .into_iter()
        .flat_map(|p| {
            p.rounds.iter().map(move |r| {
                vec![
                    p.name.clone(),
                    r.round.to_string(),
                    format!("{:.2}", r.tcp_gbps_1),
                    r.tcp_retransmits_1.to_string(),
                    format!("{:.2}", r.tcp_gbps_4),
                    r.tcp_retransmits_4.to_string(),
                    format!("{:.0}", r.udp_small_pps / 1e3),
                    format!(
                        "{:.0} / {:.0}",
                        r.udp_max_sent_pps / 1e3,
                        r.udp_max_received_pps / 1e3
                    ),
                    format!("{:.1}", r.rtt_us_p50),
                    format!("{:.1}", r.rtt_us_p99),
                    format!("{:.3}", r.cpu_s_per_gbit),
                    format!("{:.3}", r.machine_cpu_s_per_gbit),
                    percent(r.steal_share),
                ]
            })
        })
        .collect();
    out.push_str(&md_table(
        &[
            "path",
            "round",
            "TCP 1",
            "retr.",
            "TCP 4",
            "retr.",
            "UDP <1% loss kpps",
            "unpaced sent / received kpps",
            "RTT p50",
            "RTT p99",
            "CPU s/Gbit",
            "machine CPU s/Gbit",
            "steal",
        ],
        &round_rows,
    ));
    out
}

/// `text` with its first letter in upper case.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The CNI scaling section of `report.md`: how it was measured, the passes, and each
/// pass's median ADD per `window` pods.
fn cni_section(c: &CniScaling) -> String {
    let mut out = String::from("\n## CNI ADD as pods accumulate\n\n");
    let _ = writeln!(
        out,
        "Each pass starts two one-node control planes (`tapwire-dataplane` and \
         `tapwire-control`, IPIP pool). One is given {pods} pods one after another through \
         the `tapwire` CNI plugin; its last {window} ADDs alternate with the first {window} \
         of the other, fresh node, so both ends of the comparison run at the same time and \
         other work on the machine slows both alike. An ADD is timed from the plugin's \
         exec to its exit, the plugin run directly with the CNI environment and \
         configuration a runtime passes — not through `ip netns exec`, whose own cost \
         grows with every namespace (its time before the first ADD and after the last is \
         shown apart). Before each ADD the processes of both nodes finish what earlier \
         ADDs left them: at least {settle_ms} ms, then until none of their threads runs \
         (at most {settle_max_ms} ms). Percentiles are nearest-rank; the target judges the median of the \
         passes' ratios. CPU ms/ADD is the node's process CPU time over the window, per \
         ADD, including work an ADD leaves for later. For comparison, the filled node's \
         own first {window} ADDs (seconds earlier, so exposed to whatever else ran \
         meanwhile) and its last against them. Each pass ends with the last pod of each \
         node pinging its first.\n",
        pods = c.pods,
        window = c.window,
        settle_ms = crate::cni::SETTLE_MIN.as_millis(),
        settle_max_ms = crate::cni::SETTLE_MAX.as_millis()
    );
    let header = cni_header(c);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push_str(&md_table(&header, &cni_rows(c)));
    let _ = writeln!(
        out,
        "\nMedian ADD (ms) of each {} pods on the filled node, in order (the last {} \
         alternating with the fresh node's):\n",
        c.window, c.window
    );
    for p in &c.passes {
        let shown: Vec<String> = p
            .p50_per(c.window)
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect();
        let _ = writeln!(out, "- pass {}: {}", p.pass, shown.join(", "));
    }
    out
}

/// The profiles: per path, the shares by thread and by kind of work side by side, then the
/// heaviest symbols.
fn profile_section(profiles: &[PathProfile]) -> String {
    let mut out = String::from("\n## Where the time goes\n\n");
    out.push_str(
        "One 1-stream TCP run per path after the measured rounds, the whole machine sampled by \
         `perf record -a -e cpu-clock` (a software clock: this VM has no hardware counters). \
         Shares are of all samples on all CPUs, so idle is what was left over. The full \
         symbol lists are in the files named below.\n\n",
    );
    // Columns: every thread group, then every kind of work, as any profile has them. The
    // two families share a name ("idle"), so a column is (family, name).
    let mut columns: Vec<(bool, &str)> = Vec::new();
    for (is_task, shares) in profiles
        .iter()
        .flat_map(|p| [(true, &p.by_task), (false, &p.by_work)])
    {
        for share in shares {
            if !columns.contains(&(is_task, share.name.as_str())) {
                columns.push((is_task, &share.name));
            }
        }
    }
    columns.sort_by_key(|(is_task, _)| !is_task);
    let mut header = vec!["path".to_string(), "TCP 1 Gbit/s".to_string()];
    header.extend(
        columns.iter().map(|(is_task, name)| {
            format!("{name} ({})", if *is_task { "thread" } else { "work" })
        }),
    );
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            let mut row = vec![p.path.clone(), format!("{:.2}", p.tcp_gbps)];
            row.extend(columns.iter().map(|(is_task, name)| {
                let shares = if *is_task { &p.by_task } else { &p.by_work };
                shares
                    .iter()
                    .find(|s| s.name == *name)
                    .map_or_else(|| "–".to_string(), |s| format!("{:.1}%", s.percent))
            }));
            row
        })
        .collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push_str(&md_table(&header_refs, &rows));
    for p in profiles {
        let _ = writeln!(out, "\n### {} (`{}`)\n", p.path, p.text);
        let rows: Vec<Vec<String>> = p
            .top
            .iter()
            .map(|s| {
                vec![
                    format!("{:.2}%", s.percent),
                    s.task.clone(),
                    s.object.clone(),
                    format!("`{}`", s.symbol),
                ]
            })
            .collect();
        out.push_str(&md_table(&["share", "thread", "object", "symbol"], &rows));
    }
    out
}

/// Writes `results.json`, `report.md` and `chart.svg` into `dir` (created if missing).
pub fn write_report(dir: &Path, results: &Results) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let json = serde_json::to_string_pretty(results)? + "\n";
    for (name, text) in [
        ("results.json", json),
        ("report.md", markdown(results)),
        ("chart.svg", chart_svg(results)),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// Reads a `results.json` written by [`write_report`].
pub fn read_results(path: &Path) -> Result<Results> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| BenchError::Parse {
        what: path.display().to_string(),
        reason: e.to_string(),
    })
}

mod chart;
pub use chart::chart_svg;

#[cfg(test)]
mod tests;
