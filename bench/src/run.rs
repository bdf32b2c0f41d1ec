//! One benchmark run from start to end: the route-table measurements, the dataplane's
//! memory, CNI ADD latency as pods accumulate, the control plane at scale, then the paths — every lab up at once, several rounds, each round measuring
//! every path in turn — then medians, targets and the report files. Progress goes to
//! stderr as it happens; the caller prints the final table.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tapwire_integration::traffic::{iperf3_streams, IperfReport};
use tapwire_integration::Lab;

use crate::cni::{self, CniOptions};
use crate::error::{BenchError, Result};
use crate::fibbench::{self, FibOptions};
use crate::labs::{self, Pair, TapwireCluster, Underlay, POD_MTU};
use crate::memory;
use crate::paths::PathKind;
use crate::procfs::{machine_cpu, mem_total_bytes, process_cpu_ticks, ticks_per_second, CpuTimes};
use crate::profile::{self, PathProfile};
use crate::ratesearch::SearchLimits;
use crate::report::{self, PathResult, Results, RoundSample, Setup};
use crate::scale::{self, ScaleOptions};
use crate::stats::percentile;
use crate::taphop::{TapHop, TapHopRound, TapWire};
use crate::traffic::{request_response, udp_small_packets, UdpLimits};

/// Dataplane workers per tapwire node (and in the memory test).
pub const WORKERS: usize = 2;
/// Pods and routes of the memory test.
pub const MEMORY_PODS: usize = 64;
pub const MEMORY_ROUTES: usize = 100_000;
const UDP_PORT: u16 = 5301;
const RR_PORT: u16 = 5401;
/// Where the profiles go, inside the report directory.
const PROFILE_DIR: &str = "profile";

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub quick: bool,
    pub out: PathBuf,
    pub rounds: usize,
    pub tcp_seconds: u32,
    /// The small-packet test: the unpaced trial, then the paced trials of the search.
    pub udp: UdpLimits,
    pub rr_duration: Duration,
    pub fib: FibOptions,
    pub cni: CniOptions,
    pub scale: ScaleOptions,
    /// Which parts to run (all by default).
    pub sections: Sections,
    /// The command line, for the report.
    pub command: String,
}

/// The parts of a run; a skipped part leaves its targets "not measured".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections {
    /// Route-table lookups, memory and update latency.
    pub fib: bool,
    /// The dataplane's RSS with 64 pods and 100k routes.
    pub memory: bool,
    /// CNI ADD latency with 1 to 200 pods on one node.
    pub cni: bool,
    /// One real node's control plane against thousands of simulated nodes on etcd.
    pub scale: bool,
    /// The paths (see [`PathKind`]).
    pub paths: bool,
    /// A `perf` profile of each path's 1-stream TCP run, after the measured rounds.
    pub profile: bool,
}

impl Default for Sections {
    fn default() -> Self {
        Sections {
            fib: true,
            memory: true,
            cni: true,
            scale: true,
            paths: true,
            profile: true,
        }
    }
}

impl RunOptions {
    /// The full run: three rounds of 5 s TCP, UDP (1.5 s unpaced, then up to seven paced
    /// trials of 0.5 s to within 5%) and 3 s request/response per path.
    pub fn full(out: PathBuf, command: String) -> RunOptions {
        RunOptions {
            quick: false,
            out,
            rounds: 3,
            tcp_seconds: 5,
            udp: UdpLimits {
                unpaced: Duration::from_millis(1500),
                trial: Duration::from_millis(500),
                search: SearchLimits {
                    max_trials: 7,
                    resolution: 0.05,
                },
            },
            rr_duration: Duration::from_secs(3),
            fib: FibOptions::full(),
            cni: CniOptions::full(),
            scale: ScaleOptions::full(),
            sections: Sections::default(),
            command,
        }
    }

    /// The quick run (CI): one round of short runs (UDP: 0.5 s unpaced, then up to five
    /// paced trials of 0.25 s to within 10%).
    pub fn quick(out: PathBuf, command: String) -> RunOptions {
        RunOptions {
            quick: true,
            out,
            rounds: 1,
            tcp_seconds: 2,
            udp: UdpLimits {
                unpaced: Duration::from_millis(500),
                trial: Duration::from_millis(250),
                search: SearchLimits {
                    max_trials: 5,
                    resolution: 0.1,
                },
            },
            rr_duration: Duration::from_secs(1),
            fib: FibOptions::quick(),
            cni: CniOptions::quick(),
            scale: ScaleOptions::quick(),
            sections: Sections {
                profile: false,
                ..Sections::default()
            },
            command,
        }
    }
}

/// Progress lines on stderr, stamped with the time since the run started.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            started: Instant::now(),
        }
    }

    pub fn say(&self, line: impl AsRef<str>) {
        use std::io::Write;
        // A closed stderr must not stop a measurement.
        let _ = writeln!(
            std::io::stderr(),
            "[{:6.1}s] {}",
            self.started.elapsed().as_secs_f64(),
            line.as_ref()
        );
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Runs everything `opts` asks for and writes the report; `allocated` reads the bytes the
/// process's allocator holds (for the route-table memory figures).
pub fn run(opts: &RunOptions, allocated: &dyn Fn() -> u64) -> Result<Results> {
    if opts.rounds == 0 {
        return Err(BenchError::Invalid("--rounds must be at least 1".into()));
    }
    if !labs::pod_mtu_matches_the_vxlan_pool() {
        return Err(BenchError::Invalid(format!(
            "the control plane no longer gives VXLAN pods MTU {POD_MTU}; update labs::POD_MTU"
        )));
    }
    let progress = Progress::new();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut setup = machine_setup(opts);
    setup.started_unix_s = started_unix_s;
    progress.say(format!(
        "tapwire-bench: {} run, {} round(s); {} cores, kernel {}; report in {}",
        if opts.quick { "quick" } else { "full" },
        opts.rounds,
        setup.cores,
        setup.kernel,
        opts.out.display()
    ));

    let mut errors = Vec::new();
    let (fib, fib_update) = if opts.sections.fib {
        progress.say("route table: lookups and memory, tapwire Fib against prefix-trie");
        let measured = section("route table", &progress, &mut errors, || {
            let fib = fibbench::lookups(&opts.fib, allocated, &mut |line| progress.say(line))?;
            progress.say(format!(
                "route table: {} single changes at {} routes with a reader running",
                opts.fib.update_ops, opts.fib.update_routes
            ));
            let update = fibbench::update_latency(&opts.fib)?;
            progress.say(format!(
                "route change: median {:.2} µs, p99 {:.2} µs",
                update.median_us, update.p99_us
            ));
            Ok((fib, update))
        });
        match measured {
            Some((fib, update)) => (fib, Some(update)),
            None => (Vec::new(), None),
        }
    } else {
        (Vec::new(), None)
    };

    let dataplane_memory = if opts.sections.memory {
        progress.say(format!(
            "dataplane memory: {MEMORY_PODS} pods, {MEMORY_ROUTES} routes, {WORKERS} workers"
        ));
        section("dataplane memory", &progress, &mut errors, || {
            let lab = Lab::new()?;
            let memory =
                memory::dataplane_rss(&lab, WORKERS, MEMORY_PODS, MEMORY_ROUTES, &mut |line| {
                    progress.say(line)
                })?;
            progress.say(format!(
                "dataplane memory: RSS {:.1} MiB (applied in {:.1} s)",
                memory.rss_bytes as f64 / (1 << 20) as f64,
                memory.apply_s
            ));
            Ok(memory)
        })
    } else {
        None
    };

    let cni = if opts.sections.cni {
        progress.say(format!(
            "CNI ADD: {} passes of {} pods on one node, first {} ADDs against the last {}",
            opts.cni.passes, opts.cni.pods, opts.cni.window, opts.cni.window
        ));
        section("CNI ADD", &progress, &mut errors, || {
            let scaling = cni::measure(&opts.cni, &mut |line| progress.say(line))?;
            progress.say(format!(
                "CNI ADD: last/first p50 ×{:.2} (median of {} passes)",
                scaling.ratio_p50,
                scaling.passes.len()
            ));
            Ok(scaling)
        })
    } else {
        None
    };

    let scale = if opts.sections.scale {
        let sizes: Vec<String> = opts.scale.sizes.iter().map(|n| n.to_string()).collect();
        progress.say(format!(
            "scale: {} simulated nodes on etcd, one real node; {} changes each",
            sizes.join(" and "),
            opts.scale.changes
        ));
        section("scale", &progress, &mut errors, || {
            scale::measure(&opts.scale, &mut |line| progress.say(line))
        })
        .unwrap_or_default()
    } else {
        Vec::new()
    };

    let paths_started = machine_cpu()?;
    let (paths, switches, profiles, tap_hop) = if opts.sections.paths {
        section("paths", &progress, &mut errors, || {
            measure_paths(opts, &progress)
        })
        .map(|measured| {
            errors.extend(measured.profile_errors);
            setup.background_busy_share = measured.background_busy_share;
            (
                measured.paths,
                measured.switches,
                measured.profiles,
                measured.tap_hop,
            )
        })
        .unwrap_or_default()
    } else {
        (Vec::new(), Vec::new(), Vec::new(), None)
    };
    setup.steal_share = machine_cpu()?.since(&paths_started).steal_share();
    setup.mode_switch_ms = switches.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    setup.duration_s = progress.started.elapsed().as_secs_f64();

    let mut results = Results {
        paths,
        fib,
        fib_update,
        dataplane_memory,
        cni,
        scale,
        profiles,
        tap_hop,
        targets: Vec::new(),
        errors,
        setup,
    };
    results.targets = report::evaluate_targets(&results);
    report::write_report(&opts.out, &results)?;
    progress.say(format!(
        "wrote {}/results.json, report.md and chart.svg",
        opts.out.display()
    ));
    Ok(results)
}

/// Runs one part of the run; a failure (an error, or a panic in the code measured) is
/// reported and recorded in `errors`, and the run goes on with the other parts. Labs are
/// dropped, and so cleaned up, before this returns.
fn section<T>(
    name: &str,
    progress: &Progress,
    errors: &mut Vec<String>,
    f: impl FnOnce() -> Result<T>,
) -> Option<T> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let error = match outcome {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(err)) => err.to_string(),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            format!("panicked: {what}")
        }
    };
    progress.say(format!("{name} FAILED: {error}"));
    errors.push(format!("{name}: {error}"));
    None
}

/// The machine and the run's parameters, for the report.
fn machine_setup(opts: &RunOptions) -> Setup {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Setup {
        command: opts.command.clone(),
        kernel,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_bytes: mem_total_bytes().unwrap_or(0),
        commit: git_commit(),
        steal_share: 0.0,
        background_busy_share: 0.0,
        quick: opts.quick,
        rounds: opts.rounds,
        tcp_seconds: opts.tcp_seconds,
        udp_seconds: opts.udp.unpaced.as_secs_f64(),
        udp_trial_seconds: opts.udp.trial.as_secs_f64(),
        udp_max_trials: opts.udp.search.max_trials,
        udp_resolution: opts.udp.search.resolution,
        rr_seconds: opts.rr_duration.as_secs_f64(),
        pod_mtu_bytes: POD_MTU,
        dataplane_workers: WORKERS,
        mode_switch_ms: Vec::new(),
        started_unix_s: 0,
        duration_s: 0.0,
        kernel_ipip: kernel_ipip_note(),
    }
}

/// The commit of the tree the run is started in (`scripts/bench.sh` starts it at the
/// repository's root, after building the binaries from it), `+dirty` when tracked files
/// differ from it; `unknown` outside a git tree or without git.
fn git_commit() -> String {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|changes| !changes.is_empty());
            if dirty {
                format!("{commit}+dirty")
            } else {
                commit
            }
        }
        _ => "unknown".into(),
    }
}

/// Whether this kernel can make an IPIP device, said for the report (it decides that
/// tapwire-ipip is compared with kernel VXLAN).
fn kernel_ipip_note() -> String {
    let has_ipip = std::fs::read_to_string("/proc/modules")
        .map(|m| m.lines().any(|l| l.starts_with("ipip ")))
        .unwrap_or(false)
        || std::path::Path::new("/sys/module/ipip").exists();
    if has_ipip {
        "this kernel has IPIP, but kernel IPIP is not measured: tapwire-ipip is compared with kernel-vxlan".into()
    } else {
        "no kernel IPIP path: this kernel has no ipip device type, so tapwire-ipip is compared with kernel-vxlan".into()
    }
}

/// What [`measure_paths`] produced.
struct MeasuredPaths {
    /// Per-path medians.
    paths: Vec<PathResult>,
    /// Each pool switch's duration.
    switches: Vec<Duration>,
    profiles: Vec<PathProfile>,
    /// Profiles that could not be taken (the figures stand without them).
    profile_errors: Vec<String>,
    tap_hop: Option<TapHop>,
    /// The machine's busy share while every lab was up and idle.
    background_busy_share: f64,
}

/// Builds every lab, measures every path `opts.rounds` times, then profiles each path if
/// asked.
fn measure_paths(opts: &RunOptions, progress: &Progress) -> Result<MeasuredPaths> {
    progress.say(
        "labs: tapwire control plane (2 nodes, 2 workers each, 3 pods through CNI, host path)",
    );
    let tapwire_lab = Lab::new()?;
    let tapwire = TapwireCluster::start(&tapwire_lab)?;
    progress.say(
        "labs: kernel, one node (2 veth pods; the node reaches one) and the TAP wire (2 TAP pods)",
    );
    let local_lab = Lab::new()?;
    let local = labs::kernel_local(&local_lab)?;
    let tap_wire = TapWire::new(&local_lab, &local.node)?;
    tap_wire.wait_reachable()?;
    progress.say("labs: kernel routed, unencapsulated (2 nodes, a veth pod each)");
    let routed_lab = Lab::new()?;
    let routed = labs::kernel_routed(&routed_lab, Underlay::SuperFrames)?;
    progress.say(
        "labs: kernel routed, MTU-sized packets on the underlay (2 nodes, segmentation offload off)",
    );
    let routed_mtu_lab = Lab::new()?;
    let routed_mtu = labs::kernel_routed(&routed_mtu_lab, Underlay::MtuPackets)?;
    progress.say("labs: kernel VXLAN (2 nodes, vxlan.calico)");
    let vxlan_lab = Lab::new()?;
    let kernel_vxlan = labs::kernel_vxlan(&vxlan_lab)?;
    let mut labs_for_path = PathLabs {
        tapwire,
        local,
        routed,
        routed_mtu,
        kernel_vxlan,
    };
    let mut hop_rounds = Vec::new();
    let mut idle_before = idle_machine_busy()?;

    let mut rounds: Vec<(PathKind, Vec<RoundSample>)> = PathKind::ROUND_ORDER
        .iter()
        .map(|k| (*k, Vec::new()))
        .collect();
    let mut switches = Vec::new();
    for round in 1..=opts.rounds {
        for (kind, samples) in &mut rounds {
            let label = format!("round {round}/{} {}", opts.rounds, kind.name());
            let (pair, switched) = labs_for_path.ready(*kind)?;
            if let Some(took) = switched {
                progress.say(format!(
                    "{label}: pool switched; new form on the wire both ways after {took:.0?}"
                ));
                switches.push(took);
            }
            let pids = match kind.tapwire_mode() {
                Some(_) => Some(labs_for_path.tapwire.dataplane_pids()?),
                None => None,
            };
            let sample = measure_once(opts, round, &label, &pair, pids.as_deref(), progress)?;
            if *kind == PathKind::KernelLocal {
                let label = format!("round {round}/{} TAP wire", opts.rounds);
                let veth = sample.machine_cpu_s_per_gbit;
                let wire =
                    tap_wire.forward_during(|| tcp_with_cpu(opts, &label, &tap_wire.pair, None))?;
                let hop = TapHopRound {
                    round,
                    tap_wire_gbps: wire.iperf.gbps,
                    tap_wire_machine_cpu_s_per_gbit: wire.machine_cpu_s_per_gbit,
                    veth_machine_cpu_s_per_gbit: veth,
                    hop_s_per_gbit: wire.machine_cpu_s_per_gbit - veth,
                };
                progress.say(format!(
                    "{label}: TCP 1 stream {:.2} Gbit/s, machine {:.3} s/Gbit; one TAP hop {:.3} s/Gbit",
                    hop.tap_wire_gbps, hop.tap_wire_machine_cpu_s_per_gbit, hop.hop_s_per_gbit
                ));
                hop_rounds.push(hop);
            }
            samples.push(sample);
            if kind.tapwire_mode().is_some() {
                labs_for_path.tapwire.check_running()?;
            }
        }
    }
    let idle_after = idle_machine_busy()?;
    idle_before.0 += idle_after.0;
    idle_before.1 += idle_after.1;
    let background_busy_share = idle_before.0 as f64 / idle_before.1.max(1) as f64;
    progress.say(format!(
        "background: the machine was {:.1}% busy with every lab idle (other processes)",
        background_busy_share * 100.0
    ));
    let mut profiles = Vec::new();
    let mut profile_errors = Vec::new();
    if opts.sections.profile {
        for kind in PathKind::ROUND_ORDER {
            let (pair, _) = labs_for_path.ready(kind)?;
            match profile_path(opts, kind, &pair, progress) {
                Ok(profile) => profiles.push(profile),
                Err(err) => {
                    progress.say(format!("profile {}: FAILED: {err}", kind.name()));
                    profile_errors.push(format!("profile {}: {err}", kind.name()));
                }
            }
        }
    }
    let paths = PathKind::REPORT_ORDER
        .iter()
        .filter_map(|kind| {
            let (_, samples) = rounds.iter().find(|(k, _)| k == kind)?;
            let source = if kind.tapwire_mode().is_some() {
                "tapwire-dataplane processes of both nodes, user + system"
            } else {
                "softirq time of the machine (/proc/stat)"
            };
            PathResult::from_rounds(kind.name(), source, samples.clone())
        })
        .collect();
    Ok(MeasuredPaths {
        paths,
        switches,
        profiles,
        profile_errors,
        tap_hop: TapHop::from_rounds(hop_rounds),
        background_busy_share,
    })
}

/// How long the machine is watched with every lab idle, before the rounds and after.
const IDLE_WATCH: Duration = Duration::from_secs(1);

/// The machine's busy and total CPU ticks over [`IDLE_WATCH`] while nothing of the run
/// sends: what other processes on the machine take, which every machine CPU figure
/// includes.
fn idle_machine_busy() -> Result<(u64, u64)> {
    let before = machine_cpu()?;
    std::thread::sleep(IDLE_WATCH);
    let spent = machine_cpu()?.since(&before);
    Ok((spent.busy(), spent.total()))
}

/// The four labs, which between them realize every path.
struct PathLabs<'lab> {
    tapwire: TapwireCluster<'lab>,
    local: labs::KernelLocal,
    routed: Pair,
    routed_mtu: Pair,
    kernel_vxlan: Pair,
}

impl PathLabs<'_> {
    /// The endpoints to measure `kind` between, switching the tapwire pool to the path's
    /// mode first if needed; with how long that switch took to show on the wire.
    fn ready(&mut self, kind: PathKind) -> Result<(Pair, Option<Duration>)> {
        let switched = match kind.tapwire_mode() {
            Some(mode) => self.tapwire.set_mode(mode)?,
            None => None,
        };
        let pair = match kind {
            PathKind::TapwireNone | PathKind::TapwireVxlan | PathKind::TapwireIpip => {
                &self.tapwire.pair
            }
            PathKind::TapwireHost => &self.tapwire.host,
            PathKind::TapwireLocal => &self.tapwire.local,
            PathKind::KernelRouted => &self.routed,
            PathKind::KernelRoutedMtu => &self.routed_mtu,
            PathKind::KernelLocal => &self.local.pair,
            PathKind::KernelHost => &self.local.host,
            PathKind::KernelVxlan => &self.kernel_vxlan,
        };
        Ok((pair.clone(), switched))
    }
}

/// Profiles the whole machine during one 1-stream TCP run of `kind`.
fn profile_path(
    opts: &RunOptions,
    kind: PathKind,
    pair: &Pair,
    progress: &Progress,
) -> Result<PathProfile> {
    let dir = opts.out.join(PROFILE_DIR);
    let bound = Duration::from_secs(u64::from(opts.tcp_seconds) + 30);
    let (tcp, symbols, file) = profile::record(&dir, kind.name(), bound, || {
        iperf3_streams(&pair.client, &pair.server, opts.tcp_seconds, 1).map_err(Into::into)
    })?;
    let text = format!("{PROFILE_DIR}/{file}");
    let summary = profile::summarize(kind.name(), tcp.gbps, &symbols, text);
    let top = |shares: &[profile::Share]| {
        shares
            .iter()
            .take(4)
            .map(|s| format!("{} {:.0}%", s.name, s.percent))
            .collect::<Vec<_>>()
            .join(", ")
    };
    progress.say(format!(
        "profile {}: {:.2} Gbit/s; {}; {}",
        kind.name(),
        tcp.gbps,
        top(&summary.by_task),
        top(&summary.by_work)
    ));
    Ok(summary)
}

/// CPU counters around one run.
struct CpuSample {
    machine: CpuTimes,
    dataplane_ticks: u64,
}

fn sample_cpu(pids: Option<&[u32]>) -> Result<CpuSample> {
    let mut dataplane_ticks = 0;
    for pid in pids.unwrap_or_default() {
        dataplane_ticks += process_cpu_ticks(*pid)?;
    }
    Ok(CpuSample {
        machine: machine_cpu()?,
        dataplane_ticks,
    })
}

/// A 1-stream TCP run and the CPU it cost.
struct TcpRun {
    iperf: IperfReport,
    /// The dataplane processes' CPU per Gbit (`pids`), or the machine's softirq time.
    cpu_s_per_gbit: f64,
    machine_cpu_s_per_gbit: f64,
    softirq_s_per_gbit: f64,
    steal_share: f64,
}

/// One 1-stream TCP run over `pair` with the machine's CPU time (and that of the
/// processes `dataplane_pids`) around it.
fn tcp_with_cpu(
    opts: &RunOptions,
    label: &str,
    pair: &Pair,
    dataplane_pids: Option<&[u32]>,
) -> Result<TcpRun> {
    let hz = ticks_per_second() as f64;
    let before = sample_cpu(dataplane_pids)?;
    let iperf = iperf3_streams(&pair.client, &pair.server, opts.tcp_seconds, 1)?;
    let after = sample_cpu(dataplane_pids)?;
    let gbits = iperf.gbps * f64::from(opts.tcp_seconds);
    if gbits <= 0.0 {
        return Err(BenchError::measure(
            label,
            "the 1-stream TCP run moved nothing",
        ));
    }
    let machine = after.machine.since(&before.machine);
    let per_gbit = |ticks: u64| ticks as f64 / hz / gbits;
    let softirq_s_per_gbit = per_gbit(machine.softirq);
    Ok(TcpRun {
        iperf,
        cpu_s_per_gbit: match dataplane_pids {
            Some(_) => per_gbit(after.dataplane_ticks.saturating_sub(before.dataplane_ticks)),
            None => softirq_s_per_gbit,
        },
        machine_cpu_s_per_gbit: per_gbit(machine.busy()),
        softirq_s_per_gbit,
        steal_share: machine.steal_share(),
    })
}

/// One round of one path: TCP 1 stream (with CPU), TCP 4 streams, UDP small packets, RTT.
fn measure_once(
    opts: &RunOptions,
    round: usize,
    label: &str,
    pair: &Pair,
    dataplane_pids: Option<&[u32]>,
    progress: &Progress,
) -> Result<RoundSample> {
    let (client, server) = (&pair.client, &pair.server);
    let tcp1 = tcp_with_cpu(opts, label, pair, dataplane_pids)?;
    progress.say(format!(
        "{label}: TCP 1 stream {:.2} Gbit/s ({} retransmits), CPU {:.3} s/Gbit, machine {:.3} s/Gbit",
        tcp1.iperf.gbps, tcp1.iperf.retransmits, tcp1.cpu_s_per_gbit, tcp1.machine_cpu_s_per_gbit
    ));

    let tcp4 = iperf3_streams(client, server, opts.tcp_seconds, 4)?;
    progress.say(format!(
        "{label}: TCP 4 streams {:.2} Gbit/s ({} retransmits)",
        tcp4.gbps, tcp4.retransmits
    ));

    let udp = udp_small_packets(client, server, UDP_PORT, &opts.udp)?;
    let best = udp.best;
    progress.say(format!(
        "{label}: UDP 64 B unpaced: {:.0} kpps sent (sender busy {:.0}%), {:.0} received ({:.1}% lost: {} at the sender, {} at the receiver's devices, {} at its socket); under 1% loss: {} after {} paced trial(s)",
        udp.unpaced.sent_pps() / 1e3,
        udp.sender_busy * 100.0,
        udp.unpaced.received_pps() / 1e3,
        udp.unpaced.loss() * 100.0,
        udp.lost.at_sender,
        udp.lost.at_receiver_devices,
        udp.lost.at_receiving_socket,
        best.map_or("none passed".into(), |t| format!("{:.0} kpps", t.received_pps() / 1e3)),
        udp.paced.len()
    ));

    let rtts = request_response(client, server, RR_PORT, opts.rr_duration)?;
    let missing = || BenchError::measure(label, "no request/response completed");
    let rtt_us_p50 = percentile(&rtts, 50.0).ok_or_else(missing)?;
    let rtt_us_p99 = percentile(&rtts, 99.0).ok_or_else(missing)?;
    progress.say(format!(
        "{label}: RTT p50 {rtt_us_p50:.1} µs, p99 {rtt_us_p99:.1} µs ({} exchanges)",
        rtts.len()
    ));

    Ok(RoundSample {
        round,
        tcp_gbps_1: tcp1.iperf.gbps,
        tcp_retransmits_1: tcp1.iperf.retransmits,
        tcp_gbps_4: tcp4.gbps,
        tcp_retransmits_4: tcp4.retransmits,
        udp_small_pps: best.map_or(0.0, |t| t.received_pps()),
        udp_small_loss: best.map_or(0.0, |t| t.loss()),
        udp_max_sent_pps: udp.unpaced.sent_pps(),
        udp_max_received_pps: udp.unpaced.received_pps(),
        udp_max_lost_at_sender: udp.lost.at_sender,
        udp_max_lost_at_receiver_devices: udp.lost.at_receiver_devices,
        udp_max_lost_at_receiving_socket: udp.lost.at_receiving_socket,
        udp_max_sender_busy: udp.sender_busy,
        udp_trials: std::iter::once(udp.unpaced).chain(udp.paced).collect(),
        udp_lowest_failed_pps: udp.lowest_failed_pps,
        rtt_us_p50,
        rtt_us_p99,
        rtt_samples: rtts.len(),
        cpu_s_per_gbit: tcp1.cpu_s_per_gbit,
        machine_cpu_s_per_gbit: tcp1.machine_cpu_s_per_gbit,
        softirq_s_per_gbit: tcp1.softirq_s_per_gbit,
        steal_share: tcp1.steal_share,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_part_is_recorded_and_the_run_goes_on() {
        let progress = Progress::new();
        let mut errors = Vec::new();
        let ok = section("one", &progress, &mut errors, || Ok(1));
        let failed: Option<u32> = section("two", &progress, &mut errors, || {
            Err(BenchError::measure("UDP", "nothing arrived"))
        });
        let panicked: Option<u32> = section("three", &progress, &mut errors, || {
            panic!("slice index starts at 260 but ends at 256")
        });
        assert_eq!((ok, failed, panicked), (Some(1), None, None));
        assert_eq!(
            errors,
            [
                "two: measuring UDP: nothing arrived",
                "three: panicked: slice index starts at 260 but ends at 256"
            ]
        );
    }
}
