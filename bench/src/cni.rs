//! CNI ADD latency as pods accumulate on one node. Each pass starts two one-node tapwire
//! control planes (`tapwire-dataplane` and `tapwire-control`, Calico's default IPIP pool),
//! each in a lab of its own: the *filled* node is given `pods` pods one after another
//! through the `tapwire` plugin, and its last `window` ADDs alternate with the first
//! `window` ADDs of the *fresh* node. The figure is the filled node's median ADD over the
//! fresh node's — pods `pods − window + 1..=pods` against pods `1..=window`, measured at
//! the same time, so that a machine busy with other work (this one is shared) slows both
//! ends alike, as the paths section alternates its paths. Passes on new nodes give the
//! spread; the filled node's ADDs from the first on are kept as the curve. At the end of
//! a pass the last pod of each node must ping its first: the figures come from working
//! nodes.
//!
//! An ADD is timed from the plugin's exec to its exit (waited for without polling), with
//! the CNI environment and configuration a runtime passes — but not through the lab's
//! runtime ([`tapwire_integration::cni::Runtime`]), which runs plugins with
//! `ip netns exec <node>`, whose own cost grows with every namespace (bind mount) the pods
//! add: a growth of the harness, not of tapwire. The plugin needs nothing of the node's
//! namespace (it talks only to the agent's socket, whose path is in the configuration),
//! so it runs in the harness's namespace. How much `ip netns exec` itself grew over the
//! pass is measured on the side and reported.
//!
//! Before every ADD both nodes' processes get to finish what earlier ADDs left them (a
//! recompute of the cluster): the ADD waits until none of their threads runs
//! ([`SETTLE_MIN`] at least, [`SETTLE_MAX`] at most), so that the fresh node's ADDs are
//! not slowed by the filled node's background work. That work shows in the CPU figures:
//! the CPU time `tapwire-control` and `tapwire-dataplane` spent per ADD over each window
//! (`/proc`).
//!
//! [`summarize_pass`] and [`window`] are pure; [`measure_pass`] drives the labs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tapwire_integration::cni::{plugin_env, CniArgs, CniCommand, PluginRun, PLUGIN_TIMEOUT};
use tapwire_integration::controlplane::default_ipip_pool;
use tapwire_integration::lab::{bin_dir, binary};
use tapwire_integration::process::CommandOutput;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{ControlPlane, Lab, Netns, Pod};

use crate::error::{BenchError, Result};
use crate::procfs::{process_cpu_ticks, running_threads, ticks_per_second};
use crate::report::{AddWindow, CniPass, CniScaling};
use crate::stats::{median, percentile};

/// The node the pods are added on.
const NODE: &str = "node1";
/// How long the last pod may take to reach the first.
const REACHABLE_TIMEOUT: Duration = Duration::from_secs(20);
/// `ip netns exec` timings taken (the median is kept) before the first ADD and after
/// the last.
const NETNS_EXEC_PROBES: usize = 5;

/// Untimed `VERSION` runs of the plugin before a pass.
const WARM_UP_RUNS: usize = 3;
/// Before each ADD, the processes of both nodes get at least this long, and then until
/// none of their threads runs, to finish what earlier ADDs left them …
pub const SETTLE_MIN: Duration = Duration::from_millis(5);
/// … but no longer than this.
pub const SETTLE_MAX: Duration = Duration::from_millis(500);
/// How often the threads are looked at while settling.
const SETTLE_POLL: Duration = Duration::from_millis(1);

/// How much to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniOptions {
    /// Pods added per pass.
    pub pods: usize,
    /// ADDs compared at each end of a pass.
    pub window: usize,
    /// Passes, each on a fresh control plane.
    pub passes: usize,
}

impl CniOptions {
    /// The full run: five passes of 200 pods (10 to 20 s each).
    pub fn full() -> CniOptions {
        CniOptions {
            pods: 200,
            window: 20,
            passes: 5,
        }
    }

    /// The quick run (CI): two passes of 200 pods.
    pub fn quick() -> CniOptions {
        CniOptions {
            pods: 200,
            window: 20,
            passes: 2,
        }
    }

    fn check(&self) -> Result<()> {
        if self.window == 0 || self.passes == 0 || self.pods < 2 * self.window {
            return Err(BenchError::Invalid(format!(
                "CNI scaling needs at least one pass and twice {} pods per pass, not {} pods \
                 in {} pass(es)",
                self.window, self.pods, self.passes
            )));
        }
        // The pool's /26 blocks hold 64 addresses each; 250 pods stays well inside the
        // /16 and inside the lab's name lengths.
        if self.pods > 250 {
            return Err(BenchError::Invalid(format!(
                "{} pods per pass: at most 250",
                self.pods
            )));
        }
        Ok(())
    }
}

/// The ADDs of one node, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeSamples {
    /// Each ADD's wall time, ms.
    pub add_ms: Vec<f64>,
    /// `tapwire-control`'s CPU ticks before each ADD, then once after the last (one more
    /// entry than `add_ms`).
    pub control_ticks: Vec<u64>,
    /// The same for `tapwire-dataplane`.
    pub dataplane_ticks: Vec<u64>,
}

/// What one pass recorded, before summarizing.
#[derive(Debug, Clone, PartialEq)]
pub struct PassSamples {
    /// The node given every pod; its last `window` ADDs alternated with `fresh`'s.
    pub filled: NodeSamples,
    /// The node given only `window` pods, alternating with `filled`'s last ones.
    pub fresh: NodeSamples,
    /// Milliseconds per CPU tick.
    pub ms_per_tick: f64,
    /// `ip netns exec <node> true`, ms, before the first ADD and after the last.
    pub netns_exec_ms_before: f64,
    pub netns_exec_ms_after: f64,
}

/// The figures of ADDs `from..to` (0-based, `to` exclusive) of `node`; `None` if the
/// range is empty or outside the samples.
pub fn window(node: &NodeSamples, ms_per_tick: f64, from: usize, to: usize) -> Option<AddWindow> {
    let add_ms = node.add_ms.get(from..to).filter(|w| !w.is_empty())?;
    let count = add_ms.len() as f64;
    let cpu_ms_per_add = |ticks: &[u64]| -> Option<f64> {
        let spent = ticks.get(to)?.checked_sub(*ticks.get(from)?)?;
        Some(spent as f64 * ms_per_tick / count)
    };
    Some(AddWindow {
        from_pod: from + 1,
        to_pod: to,
        p50_ms: percentile(add_ms, 50.0)?,
        p90_ms: percentile(add_ms, 90.0)?,
        control_cpu_ms_per_add: cpu_ms_per_add(&node.control_ticks)?,
        dataplane_cpu_ms_per_add: cpu_ms_per_add(&node.dataplane_ticks)?,
    })
}

/// Pass `pass` summarized: the fresh node's `window_len` ADDs against the filled node's
/// last `window_len`, and their ratio of medians. `None` when a node has fewer ADDs or
/// a first median is not positive. The filled node's own first ADDs, taken seconds
/// earlier, are kept beside them (`filled_first`).
pub fn summarize_pass(pass: usize, samples: &PassSamples, window_len: usize) -> Option<CniPass> {
    let n = samples.filled.add_ms.len();
    if window_len == 0 || n < 2 * window_len || samples.fresh.add_ms.len() < window_len {
        return None;
    }
    let first = window(&samples.fresh, samples.ms_per_tick, 0, window_len)?;
    let last = window(&samples.filled, samples.ms_per_tick, n - window_len, n)?;
    let filled_first = window(&samples.filled, samples.ms_per_tick, 0, window_len)?;
    let ratio_p50 = (first.p50_ms > 0.0).then(|| last.p50_ms / first.p50_ms)?;
    let filled_ratio_p50 =
        (filled_first.p50_ms > 0.0).then(|| last.p50_ms / filled_first.p50_ms)?;
    Some(CniPass {
        pass,
        first,
        last,
        ratio_p50,
        filled_first,
        filled_ratio_p50,
        netns_exec_ms_before: samples.netns_exec_ms_before,
        netns_exec_ms_after: samples.netns_exec_ms_after,
        add_ms: samples.filled.add_ms.clone(),
        fresh_add_ms: samples.fresh.add_ms.clone(),
    })
}

/// The passes put together: the ratio judged is the median of the passes' ratios.
pub fn scaling(pods: usize, window: usize, passes: Vec<CniPass>) -> Option<CniScaling> {
    let ratios: Vec<f64> = passes.iter().map(|p| p.ratio_p50).collect();
    Some(CniScaling {
        pods,
        window,
        ratio_p50: median(&ratios)?,
        passes,
    })
}

/// Runs every pass of `opts`, each in labs of its own (dropped, so cleaned up, before the
/// next one starts).
pub fn measure(opts: &CniOptions, progress: &mut dyn FnMut(String)) -> Result<CniScaling> {
    opts.check()?;
    let mut passes = Vec::with_capacity(opts.passes);
    for pass in 1..=opts.passes {
        let started = Instant::now();
        let samples = {
            let filled_lab = Lab::new()?;
            let fresh_lab = Lab::new()?;
            measure_pass(&filled_lab, &fresh_lab, opts, &mut *progress)?
        };
        let summary = summarize_pass(pass, &samples, opts.window).ok_or_else(|| {
            BenchError::measure(
                format!("CNI ADD pass {pass}"),
                "too few ADDs or a zero median",
            )
        })?;
        progress(format!(
            "CNI pass {pass}/{}: ADD p50 {:.1} ms (p90 {:.1}) at pods {}–{}, {:.1} ms (p90 {:.1}) \
             at pods {}–{}: ×{:.2} (×{:.2} against the filled node's own first {}); \
             `ip netns exec` {:.1} → {:.1} ms; {:.0} s with teardown",
            opts.passes,
            summary.first.p50_ms,
            summary.first.p90_ms,
            summary.first.from_pod,
            summary.first.to_pod,
            summary.last.p50_ms,
            summary.last.p90_ms,
            summary.last.from_pod,
            summary.last.to_pod,
            summary.ratio_p50,
            summary.filled_ratio_p50,
            opts.window,
            summary.netns_exec_ms_before,
            summary.netns_exec_ms_after,
            started.elapsed().as_secs_f64()
        ));
        passes.push(summary);
    }
    scaling(opts.pods, opts.window, passes)
        .ok_or_else(|| BenchError::measure("CNI ADD", "no pass was measured"))
}

/// One node of a pass: its control plane, what a runtime passes its plugin, and what
/// its ADDs measured.
struct TimedNode<'lab> {
    cp: ControlPlane<'lab>,
    plugin: PathBuf,
    cni_path: String,
    conf: Vec<u8>,
    control: u32,
    dataplane: u32,
    samples: NodeSamples,
    pods: Vec<Pod>,
}

impl<'lab> TimedNode<'lab> {
    /// Starts a one-node control plane with the default IPIP pool in `lab`.
    fn start(lab: &'lab Lab) -> Result<TimedNode<'lab>> {
        let cp = ControlPlane::with_pool(lab, &[NODE], &default_ipip_pool())?;
        let missing = |what: &str| BenchError::Invalid(format!("no {what} runs on {NODE}"));
        let control = cp
            .control_pid(NODE)?
            .ok_or_else(|| missing("tapwire-control"))?;
        let dataplane = cp
            .dataplane_pid(NODE)?
            .ok_or_else(|| missing("tapwire-dataplane"))?;
        let conf = serde_json::to_vec(&cp.network_conf(NODE)?)?;
        Ok(TimedNode {
            cp,
            plugin: binary("tapwire")?,
            cni_path: bin_dir()?.display().to_string(),
            conf,
            control,
            dataplane,
            samples: NodeSamples::default(),
            pods: Vec::new(),
        })
    }

    /// Runs the plugin's `VERSION` a few times, untimed: its executable in the page cache
    /// before the first timed ADD.
    fn warm_up(&self) -> Result<()> {
        let none = CniArgs {
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            pod: None,
        };
        let env = plugin_env(CniCommand::Version, &self.cni_path, &none);
        for _ in 0..WARM_UP_RUNS {
            exec_plugin(&self.plugin, &env, &self.conf)?;
        }
        Ok(())
    }

    /// Creates pod `name`'s namespace, waits until the processes `quiet` are idle
    /// ([`settle`]), then runs and times the plugin's ADD for it and records the pod.
    /// Returns the ADD's wall time.
    fn add(&mut self, name: &str, quiet: &[u32]) -> Result<Duration> {
        let sandbox = self.cp.sandbox(name)?;
        let env = plugin_env(CniCommand::Add, &self.cni_path, &sandbox.args);
        settle(quiet)?;
        self.samples
            .control_ticks
            .push(process_cpu_ticks(self.control)?);
        self.samples
            .dataplane_ticks
            .push(process_cpu_ticks(self.dataplane)?);
        let (output, elapsed) = exec_plugin(&self.plugin, &env, &self.conf)?;
        let run = PluginRun {
            plugin: "tapwire".into(),
            command: CniCommand::Add,
            container: sandbox.args.container_id.clone(),
            output,
            elapsed,
        };
        let result = run.into_result()?;
        self.samples.add_ms.push(elapsed.as_secs_f64() * 1e3);
        let added = self.cp.record_pod(NODE, &sandbox, result, elapsed)?;
        self.pods.push(added.pod);
        Ok(elapsed)
    }

    /// Closes the CPU samples, right after the last ADD.
    fn close(&mut self) -> Result<()> {
        self.samples
            .control_ticks
            .push(process_cpu_ticks(self.control)?);
        self.samples
            .dataplane_ticks
            .push(process_cpu_ticks(self.dataplane)?);
        Ok(())
    }

    /// Checks the last pod reaches the first and that both processes still run; returns
    /// the samples and what was checked.
    fn finish(self) -> Result<(NodeSamples, String)> {
        let (Some(first), Some(last)) = (self.pods.first(), self.pods.last()) else {
            return Err(BenchError::Invalid("no pods were added".into()));
        };
        wait_reachable(last, first.ip, REACHABLE_TIMEOUT)?;
        self.cp.check_running()?;
        let checked = format!(
            "{} ({}) answers pings from {} ({})",
            first.name, first.ip, last.name, last.ip
        );
        Ok((self.samples, checked))
    }
}

/// One pass: `opts.pods − opts.window` pods added on a node in `filled_lab`, then the
/// last `opts.window` alternating with the first `opts.window` pods of a fresh node in
/// `fresh_lab`, so that both ends of the comparison run at the same time and a machine
/// busy with something else slows both alike. Before every ADD both nodes' processes
/// have finished what earlier ADDs left them ([`settle`]: the fresh node's ADDs are not
/// slowed by the filled node's recompute); what they spend is in the CPU figures.
pub fn measure_pass(
    filled_lab: &Lab,
    fresh_lab: &Lab,
    opts: &CniOptions,
    progress: &mut dyn FnMut(String),
) -> Result<PassSamples> {
    let mut filled = TimedNode::start(filled_lab)?;
    let mut fresh = TimedNode::start(fresh_lab)?;
    filled.warm_up()?;
    let node = filled.cp.node(NODE)?;
    let alone = opts.pods - opts.window;
    progress(format!(
        "CNI: two nodes up; adding {alone} pods on one, then {} on each in turn",
        opts.window
    ));
    let quiet = [
        filled.control,
        filled.dataplane,
        fresh.control,
        fresh.dataplane,
    ];
    let netns_exec_ms_before = netns_exec_ms(node.netns())?;
    for i in 1..=alone {
        let took = filled.add(&format!("p{i}"), &quiet)?;
        if i % 50 == 0 {
            progress(format!(
                "CNI: {i} pods, last ADD {:.1} ms",
                took.as_secs_f64() * 1e3
            ));
        }
    }
    for k in 1..=opts.window {
        fresh.add(&format!("p{k}"), &quiet)?;
        filled.add(&format!("p{}", alone + k), &quiet)?;
    }
    filled.close()?;
    fresh.close()?;
    let netns_exec_ms_after = netns_exec_ms(node.netns())?;
    let (filled, filled_check) = filled.finish()?;
    let (fresh, fresh_check) = fresh.finish()?;
    progress(format!(
        "CNI: {} pods on one node, {} on the other; {filled_check}; {fresh_check}",
        opts.pods, opts.window
    ));
    Ok(PassSamples {
        filled,
        fresh,
        ms_per_tick: 1e3 / ticks_per_second() as f64,
        netns_exec_ms_before,
        netns_exec_ms_after,
    })
}

/// Waits [`SETTLE_MIN`], then until no thread of `pids` has been running or runnable in
/// two looks in a row, at most [`SETTLE_MAX`] in all (a process that stays busy longer
/// is measured busy).
fn settle(pids: &[u32]) -> Result<()> {
    let deadline = Instant::now() + SETTLE_MAX;
    std::thread::sleep(SETTLE_MIN);
    let mut quiet_looks = 0;
    while quiet_looks < 2 && Instant::now() < deadline {
        let mut running = 0;
        for pid in pids {
            running += running_threads(*pid)?;
        }
        quiet_looks = if running == 0 { quiet_looks + 1 } else { 0 };
        std::thread::sleep(SETTLE_POLL);
    }
    Ok(())
}

/// Executes `plugin` in this process's namespace with `env` and `stdin`, as a runtime
/// does, and returns what it printed and how long it ran (exec to exit, waited for
/// without polling). Fails if it runs longer than [`PLUGIN_TIMEOUT`] (the plugin then
/// still ends by its own agent timeout).
fn exec_plugin(
    plugin: &Path,
    env: &[(&'static str, String)],
    stdin: &[u8],
) -> Result<(CommandOutput, Duration)> {
    let mut cmd = Command::new(plugin);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let command = plugin.display().to_string();
    let input = stdin.to_vec();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tapwire-bench-cni".into())
        .spawn(move || {
            let started = Instant::now();
            let outcome = cmd.spawn().and_then(|mut child| {
                if let Some(mut pipe) = child.stdin.take() {
                    use std::io::Write;
                    // The configuration is far below a pipe's buffer: this cannot block
                    // on a plugin that prints first. A plugin that exits without reading
                    // it says why on its output.
                    let _ = pipe.write_all(&input);
                }
                child.wait_with_output()
            });
            let _ = tx.send(outcome.map(|output| (output, started.elapsed())));
        })
        .map_err(|e| BenchError::io("starting the CNI plugin's thread", e))?;
    let (output, elapsed) = match rx.recv_timeout(PLUGIN_TIMEOUT) {
        Ok(outcome) => outcome.map_err(|e| BenchError::io(format!("running {command}"), e))?,
        Err(_) => {
            return Err(BenchError::measure(
                "CNI ADD",
                format!("{command} did not exit within {PLUGIN_TIMEOUT:?}"),
            ))
        }
    };
    Ok((
        CommandOutput {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        elapsed,
    ))
}

/// The median time of `ip netns exec <netns> true`, ms: the lab runtime's own overhead
/// per plugin run, which is not in the ADD figures.
fn netns_exec_ms(netns: &Netns) -> Result<f64> {
    let mut times = Vec::with_capacity(NETNS_EXEC_PROBES);
    for _ in 0..NETNS_EXEC_PROBES {
        let mut cmd = netns.command(&["true"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        let status = cmd
            .status()
            .map_err(|e| BenchError::io(format!("ip netns exec {} true", netns.name()), e))?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        if !status.success() {
            return Err(BenchError::measure(
                "ip netns exec",
                format!("`ip netns exec {} true` exited with {status}", netns.name()),
            ));
        }
    }
    median(&times).ok_or_else(|| BenchError::measure("ip netns exec", "no timing"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` ADDs whose times grow from `from_ms` by `step` ms each; the control spends one
    /// tick per ADD, the dataplane one every other ADD.
    fn node(n: usize, from_ms: f64, step: f64) -> NodeSamples {
        NodeSamples {
            add_ms: (0..n).map(|i| from_ms + step * i as f64).collect(),
            control_ticks: (0..=n as u64).map(|i| 100 + i).collect(),
            dataplane_ticks: (0..=n as u64).map(|i| 50 + i / 2).collect(),
        }
    }

    /// A pass whose filled node grows by `step` ms per ADD from 10 ms and whose fresh node
    /// takes 10 ms and up, like the filled node's first ADDs.
    fn pass_samples(pods: usize, fresh: usize, step: f64) -> PassSamples {
        PassSamples {
            filled: node(pods, 10.0, step),
            fresh: node(fresh, 10.0, step),
            ms_per_tick: 10.0,
            netns_exec_ms_before: 2.0,
            netns_exec_ms_after: 9.0,
        }
    }

    #[test]
    fn windows_take_nearest_rank_percentiles_and_cpu_per_add() {
        let samples = node(100, 10.0, 1.0);
        let Some(w) = window(&samples, 10.0, 0, 20) else {
            panic!("a window of 20")
        };
        // 10..=29 ms: the 10th and 18th of 20.
        assert_eq!((w.from_pod, w.to_pod), (1, 20));
        assert_eq!((w.p50_ms, w.p90_ms), (19.0, 27.0));
        assert_eq!(w.control_cpu_ms_per_add, 10.0);
        assert_eq!(w.dataplane_cpu_ms_per_add, 5.0);
        assert_eq!(window(&samples, 10.0, 20, 20), None);
        assert_eq!(window(&samples, 10.0, 90, 101), None);
    }

    #[test]
    fn a_pass_compares_the_filled_nodes_last_adds_with_the_fresh_nodes() {
        let mut samples = pass_samples(200, 20, 0.1);
        // The fresh node is what counts as "pods 1–20", not the filled node's start.
        samples.fresh = node(20, 12.0, 0.0);
        let Some(pass) = summarize_pass(2, &samples, 20) else {
            panic!("200 and 20 ADDs make a pass")
        };
        assert_eq!(pass.pass, 2);
        assert_eq!((pass.first.from_pod, pass.first.to_pod), (1, 20));
        assert_eq!((pass.last.from_pod, pass.last.to_pod), (181, 200));
        // Last p50: 10 + 0.1 × 189 = 28.9.
        assert_eq!(pass.first.p50_ms, 12.0);
        assert!((pass.last.p50_ms - 28.9).abs() < 1e-9);
        assert!((pass.ratio_p50 - 28.9 / 12.0).abs() < 1e-9);
        // The filled node against its own start: 28.9 / 10.9.
        assert!((pass.filled_first.p50_ms - 10.9).abs() < 1e-9);
        assert!((pass.filled_ratio_p50 - 28.9 / 10.9).abs() < 1e-9);
        assert_eq!((pass.add_ms.len(), pass.fresh_add_ms.len()), (200, 20));
        assert_eq!(pass.netns_exec_ms_after, 9.0);
        // Flat ADDs give 1.
        let flat = summarize_pass(1, &pass_samples(40, 20, 0.0), 20).map(|p| p.ratio_p50);
        assert_eq!(flat, Some(1.0));
    }

    #[test]
    fn too_few_adds_or_a_zero_median_is_no_pass() {
        assert_eq!(summarize_pass(1, &pass_samples(39, 20, 1.0), 20), None);
        assert_eq!(summarize_pass(1, &pass_samples(40, 19, 1.0), 20), None);
        assert_eq!(summarize_pass(1, &pass_samples(40, 20, 1.0), 0), None);
        let mut zero = pass_samples(40, 20, 0.0);
        zero.fresh.add_ms.iter_mut().for_each(|ms| *ms = 0.0);
        assert_eq!(summarize_pass(1, &zero, 20), None);
    }

    #[test]
    fn the_judged_ratio_is_the_median_over_passes() {
        let pass = |n: usize, ratio: f64| {
            summarize_pass(n, &pass_samples(40, 20, 0.0), 20).map(|mut p| {
                p.ratio_p50 = ratio;
                p
            })
        };
        let passes: Vec<CniPass> = [pass(1, 1.3), pass(2, 0.9), pass(3, 1.1)]
            .into_iter()
            .flatten()
            .collect();
        let s = scaling(40, 20, passes).map(|s| (s.ratio_p50, s.passes.len()));
        assert_eq!(s, Some((1.1, 3)));
        assert_eq!(scaling(40, 20, Vec::new()), None);
    }

    #[test]
    fn options_need_room_for_both_windows() {
        assert!(CniOptions::full().check().is_ok());
        assert!(CniOptions::quick().check().is_ok());
        let small = CniOptions {
            pods: 30,
            ..CniOptions::full()
        };
        assert!(small.check().is_err());
        let none = CniOptions {
            passes: 0,
            ..CniOptions::full()
        };
        assert!(none.check().is_err());
    }
}
