//! CNI ADD latency as pods accumulate on one node: a one-node tapwire control plane
//! (`tapwire-dataplane` and `tapwire-control`, Calico's default IPIP pool), `pods` pods
//! added one after another through the `tapwire` plugin, each ADD timed from exec to exit.
//! The first `window` ADDs are compared with the last `window` of the same pass (a ratio
//! of medians, so the machine's speed cancels out); each pass is a fresh control plane,
//! and the passes give the spread. At the end of a pass the last pod must ping the first:
//! the figures come from a working node.
//!
//! Why the plugin is executed directly rather than through the lab's runtime
//! ([`tapwire_integration::cni::Runtime`]): that runs plugins with `ip netns exec <node>`,
//! whose own cost grows with every namespace (bind mount) the pods add — a growth of the
//! harness, not of tapwire. The plugin needs nothing of the node's namespace (it only
//! talks to the agent's socket, whose path is in the network configuration), so it runs
//! in the harness's namespace with the same CNI environment and configuration, and the
//! wait for it blocks (no polling interval in the figure). How much `ip netns exec`
//! itself grew over the pass is measured on the side and reported.
//!
//! Besides the wall time, the CPU time `tapwire-control` and `tapwire-dataplane` spent
//! per ADD in each window (from `/proc`, including the work an ADD leaves for later, such
//! as the agent's recompute of the cluster).
//!
//! [`summarize_pass`] and [`window`] are pure; [`measure_pass`] drives the lab.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tapwire_integration::cni::{plugin_env, CniArgs, CniCommand, PluginRun, PLUGIN_TIMEOUT};
use tapwire_integration::controlplane::default_ipip_pool;
use tapwire_integration::lab::{bin_dir, binary};
use tapwire_integration::process::CommandOutput;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{ControlPlane, Lab, Netns};

use crate::error::{BenchError, Result};
use crate::procfs::{process_cpu_ticks, ticks_per_second};
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
    /// The full run: five passes of 200 pods (about 5 s each).
    pub fn full() -> CniOptions {
        CniOptions {
            pods: 200,
            window: 20,
            passes: 5,
        }
    }

    /// The quick run (CI): three passes of 200 pods.
    pub fn quick() -> CniOptions {
        CniOptions {
            pods: 200,
            window: 20,
            passes: 3,
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

/// What one pass recorded, before summarizing.
#[derive(Debug, Clone, PartialEq)]
pub struct PassSamples {
    /// Each ADD's wall time, in order, ms.
    pub add_ms: Vec<f64>,
    /// `tapwire-control`'s CPU ticks before each ADD, then once after the last (one more
    /// entry than `add_ms`).
    pub control_ticks: Vec<u64>,
    /// The same for `tapwire-dataplane`.
    pub dataplane_ticks: Vec<u64>,
    /// Milliseconds per CPU tick.
    pub ms_per_tick: f64,
    /// `ip netns exec <node> true`, ms, before the first ADD and after the last.
    pub netns_exec_ms_before: f64,
    pub netns_exec_ms_after: f64,
}

/// The figures of ADDs `from..to` (0-based, `to` exclusive) of `samples`; `None` if the
/// range is empty or outside the samples.
pub fn window(samples: &PassSamples, from: usize, to: usize) -> Option<AddWindow> {
    let add_ms = samples.add_ms.get(from..to).filter(|w| !w.is_empty())?;
    let count = add_ms.len() as f64;
    let cpu_ms_per_add = |ticks: &[u64]| -> Option<f64> {
        let spent = ticks.get(to)?.checked_sub(*ticks.get(from)?)?;
        Some(spent as f64 * samples.ms_per_tick / count)
    };
    Some(AddWindow {
        from_pod: from + 1,
        to_pod: to,
        p50_ms: percentile(add_ms, 50.0)?,
        p90_ms: percentile(add_ms, 90.0)?,
        control_cpu_ms_per_add: cpu_ms_per_add(&samples.control_ticks)?,
        dataplane_cpu_ms_per_add: cpu_ms_per_add(&samples.dataplane_ticks)?,
    })
}

/// Pass `pass` summarized: its first and last `window` ADDs and their ratio of medians.
/// `None` when there are fewer than `2 × window` ADDs or the first median is not positive.
pub fn summarize_pass(pass: usize, samples: &PassSamples, window_len: usize) -> Option<CniPass> {
    let n = samples.add_ms.len();
    if window_len == 0 || n < 2 * window_len {
        return None;
    }
    let first = window(samples, 0, window_len)?;
    let last = window(samples, n - window_len, n)?;
    let ratio_p50 = (first.p50_ms > 0.0).then(|| last.p50_ms / first.p50_ms)?;
    Some(CniPass {
        pass,
        first,
        last,
        ratio_p50,
        netns_exec_ms_before: samples.netns_exec_ms_before,
        netns_exec_ms_after: samples.netns_exec_ms_after,
        add_ms: samples.add_ms.clone(),
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

/// Runs every pass of `opts`, each in a lab of its own (dropped, so cleaned up, before the
/// next one starts).
pub fn measure(opts: &CniOptions, progress: &mut dyn FnMut(String)) -> Result<CniScaling> {
    opts.check()?;
    let mut passes = Vec::with_capacity(opts.passes);
    for pass in 1..=opts.passes {
        let started = Instant::now();
        let samples = {
            let lab = Lab::new()?;
            measure_pass(&lab, opts.pods, &mut *progress)?
        };
        let summary = summarize_pass(pass, &samples, opts.window).ok_or_else(|| {
            BenchError::measure(
                format!("CNI ADD pass {pass}"),
                "too few ADDs or a zero median",
            )
        })?;
        progress(format!(
            "CNI pass {pass}/{}: ADD p50 {:.1} ms (p90 {:.1}) at pods {}–{}, {:.1} ms (p90 {:.1}) \
             at pods {}–{}: ×{:.2}; `ip netns exec` {:.1} → {:.1} ms; {:.0} s with teardown",
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
            summary.netns_exec_ms_before,
            summary.netns_exec_ms_after,
            started.elapsed().as_secs_f64()
        ));
        passes.push(summary);
    }
    scaling(opts.pods, opts.window, passes)
        .ok_or_else(|| BenchError::measure("CNI ADD", "no pass was measured"))
}

/// One pass in `lab`: starts the node, adds `pods` pods timing each ADD, and checks the
/// last pod reaches the first.
pub fn measure_pass(
    lab: &Lab,
    pods: usize,
    progress: &mut dyn FnMut(String),
) -> Result<PassSamples> {
    let cp = ControlPlane::with_pool(lab, &[NODE], &default_ipip_pool())?;
    let node = cp.node(NODE)?;
    let plugin = binary("tapwire")?;
    let cni_path = bin_dir()?.display().to_string();
    let conf = serde_json::to_vec(&cp.network_conf(NODE)?)?;
    let missing = |what: &str| BenchError::Invalid(format!("no {what} runs on {NODE}"));
    let control = cp
        .control_pid(NODE)?
        .ok_or_else(|| missing("tapwire-control"))?;
    let dataplane = cp
        .dataplane_pid(NODE)?
        .ok_or_else(|| missing("tapwire-dataplane"))?;
    progress(format!(
        "CNI: one node up; adding {pods} pods, timing the plugin's ADD"
    ));

    // The plugin's executable in the page cache before the first timed ADD.
    for _ in 0..WARM_UP_RUNS {
        let env = plugin_env(CniCommand::Version, &cni_path, &no_container());
        exec_plugin(&plugin, &env, &conf)?;
    }
    let netns_exec_ms_before = netns_exec_ms(node.netns())?;
    let mut samples = PassSamples {
        add_ms: Vec::with_capacity(pods),
        control_ticks: Vec::with_capacity(pods + 1),
        dataplane_ticks: Vec::with_capacity(pods + 1),
        ms_per_tick: 1e3 / ticks_per_second() as f64,
        netns_exec_ms_before,
        netns_exec_ms_after: 0.0,
    };
    let mut first = None;
    let mut last = None;
    for i in 1..=pods {
        let sandbox = cp.sandbox(&format!("p{i}"))?;
        let env = plugin_env(CniCommand::Add, &cni_path, &sandbox.args);
        samples.control_ticks.push(process_cpu_ticks(control)?);
        samples.dataplane_ticks.push(process_cpu_ticks(dataplane)?);
        let (output, elapsed) = exec_plugin(&plugin, &env, &conf)?;
        let run = PluginRun {
            plugin: "tapwire".into(),
            command: CniCommand::Add,
            container: sandbox.args.container_id.clone(),
            output,
            elapsed,
        };
        let result = run.into_result()?;
        samples.add_ms.push(elapsed.as_secs_f64() * 1e3);
        let added = cp.record_pod(NODE, &sandbox, result, elapsed)?;
        if i == 1 {
            first = Some(added.pod);
        } else if i == pods {
            last = Some(added.pod);
        }
        if i % 50 == 0 && i < pods {
            progress(format!(
                "CNI: {i} pods, last ADD {:.1} ms",
                elapsed.as_secs_f64() * 1e3
            ));
        }
    }
    samples.control_ticks.push(process_cpu_ticks(control)?);
    samples.dataplane_ticks.push(process_cpu_ticks(dataplane)?);
    samples.netns_exec_ms_after = netns_exec_ms(node.netns())?;

    let (Some(first), Some(last)) = (first, last) else {
        return Err(BenchError::Invalid(format!("{pods} pods: need at least 2")));
    };
    wait_reachable(&last, first.ip, REACHABLE_TIMEOUT)?;
    cp.check_running()?;
    progress(format!(
        "CNI: {pods} pods added; {} ({}) answers pings from {} ({})",
        first.name, first.ip, last.name, last.ip
    ));
    Ok(samples)
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

/// The arguments of a command about no container (`VERSION`).
fn no_container() -> CniArgs {
    CniArgs {
        container_id: String::new(),
        netns: String::new(),
        ifname: String::new(),
        pod: None,
    }
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

    /// `n` ADDs whose times grow from 10 ms by `step` ms each; the control spends one
    /// tick per ADD, the dataplane one every other ADD.
    fn growing(n: usize, step: f64) -> PassSamples {
        PassSamples {
            add_ms: (0..n).map(|i| 10.0 + step * i as f64).collect(),
            control_ticks: (0..=n as u64).map(|i| 100 + i).collect(),
            dataplane_ticks: (0..=n as u64).map(|i| 50 + i / 2).collect(),
            ms_per_tick: 10.0,
            netns_exec_ms_before: 2.0,
            netns_exec_ms_after: 9.0,
        }
    }

    #[test]
    fn windows_take_nearest_rank_percentiles_and_cpu_per_add() {
        let samples = growing(100, 1.0);
        let w = window(&samples, 0, 20);
        let Some(w) = w else { panic!("a window of 20") };
        // 10..=29 ms: the 10th and 18th of 20.
        assert_eq!((w.from_pod, w.to_pod), (1, 20));
        assert_eq!((w.p50_ms, w.p90_ms), (19.0, 27.0));
        assert_eq!(w.control_cpu_ms_per_add, 10.0);
        assert_eq!(w.dataplane_cpu_ms_per_add, 5.0);
        assert_eq!(window(&samples, 20, 20), None);
        assert_eq!(window(&samples, 90, 101), None);
    }

    #[test]
    fn a_pass_compares_its_last_adds_with_its_first() {
        let samples = growing(200, 0.1);
        let Some(pass) = summarize_pass(2, &samples, 20) else {
            panic!("200 ADDs make a pass")
        };
        assert_eq!(pass.pass, 2);
        assert_eq!((pass.last.from_pod, pass.last.to_pod), (181, 200));
        // First p50: 10 + 0.1 × 9 = 10.9; last: 10 + 0.1 × 189 = 28.9.
        assert!((pass.first.p50_ms - 10.9).abs() < 1e-9);
        assert!((pass.last.p50_ms - 28.9).abs() < 1e-9);
        assert!((pass.ratio_p50 - 28.9 / 10.9).abs() < 1e-9);
        assert_eq!(pass.add_ms.len(), 200);
        assert_eq!(pass.netns_exec_ms_after, 9.0);
        // Flat ADDs give 1.
        let flat = summarize_pass(1, &growing(40, 0.0), 20).map(|p| p.ratio_p50);
        assert_eq!(flat, Some(1.0));
    }

    #[test]
    fn too_few_adds_or_a_zero_median_is_no_pass() {
        assert_eq!(summarize_pass(1, &growing(39, 1.0), 20), None);
        assert_eq!(summarize_pass(1, &growing(40, 1.0), 0), None);
        let mut zero = growing(40, 0.0);
        zero.add_ms.iter_mut().take(20).for_each(|ms| *ms = 0.0);
        assert_eq!(summarize_pass(1, &zero, 20), None);
    }

    #[test]
    fn the_judged_ratio_is_the_median_over_passes() {
        let pass = |n: usize, ratio: f64| {
            summarize_pass(n, &growing(40, 0.0), 20).map(|mut p| {
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
