//! Where the CPU time goes on each path: a machine-wide `perf record` (the software
//! `cpu-clock` event; this VM exposes no hardware counters) during one 1-stream TCP run per
//! path, taken after the measured rounds so sampling never disturbs a figure of record.
//!
//! Everything on the machine is sampled — both iperf3 ends, the forwarder's workers, the
//! kernel's softirq work, idle — so tapwire's and the kernel's profiles add up to the same
//! whole and can be read side by side. The parsers are pure functions over `perf report`'s
//! text; [`record`] is the only part that runs anything.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// Samples per second per CPU.
const FREQUENCY_HZ: u32 = 1999;
/// Symbols kept in `results.json` per path (the text file next to it has them all).
const TOP_SYMBOLS: usize = 20;
/// Symbols below this share are left out of the text file.
const TEXT_PERCENT_LIMIT: f64 = 0.2;

/// One path's profile, as `results.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathProfile {
    pub path: String,
    /// The 1-stream TCP rate during the profiled run (sampling costs a little).
    pub tcp_gbps: f64,
    /// Share of all samples per kind of thread (see [`task_group`]), largest first.
    pub by_task: Vec<Share>,
    /// Share of all samples per kind of work (see [`work_kind`]), largest first.
    pub by_work: Vec<Share>,
    /// The heaviest symbols, largest first.
    pub top: Vec<SymbolShare>,
    /// Where the full `perf report` text is, relative to the report directory.
    pub text: String,
}

/// A share of all samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub name: String,
    pub percent: f64,
}

/// One (thread, object, symbol) line of `perf report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolShare {
    pub percent: f64,
    pub task: String,
    pub object: String,
    pub symbol: String,
}

/// Whether `perf` is installed and can sample the whole machine.
pub fn perf_available() -> bool {
    Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Samples the whole machine while `work` runs and returns what `work` returned, the
/// parsed profile and the name of the text report within `dir`; the recording goes to
/// `dir/<name>.perf.data` and the full report to `dir/<name>.txt`. `bound` caps the
/// recording should `work` hang (perf then stops by itself).
pub fn record<T>(
    dir: &Path,
    name: &str,
    bound: Duration,
    work: impl FnOnce() -> Result<T>,
) -> Result<(T, Vec<SymbolShare>, String)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let data = dir.join(format!("{name}.perf.data"));
    // A recording left by an earlier run must not pass for this one's.
    match std::fs::remove_file(&data) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(BenchError::io(format!("removing {}", data.display()), e));
        }
        _ => {}
    }
    let perf = Command::new("perf")
        .args(["record", "-a", "-q", "-e", "cpu-clock", "-F"])
        .arg(FREQUENCY_HZ.to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep"])
        .arg(bound.as_secs().max(1).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::io("starting perf record", e))?;
    // perf needs a moment to open its events on every CPU before the work starts.
    std::thread::sleep(Duration::from_millis(300));
    let outcome = work();
    // SIGINT ends the recording early and cleanly; perf writes the file and exits.
    crate::sys::interrupt(perf.id());
    let recorded = perf
        .wait_with_output()
        .map_err(|e| BenchError::io("waiting for perf record", e))?;
    let value = outcome?;
    if !data.exists() {
        return Err(BenchError::measure(
            "the profile",
            format!(
                "perf record wrote nothing ({}): {}",
                recorded.status,
                String::from_utf8_lossy(&recorded.stderr).trim()
            ),
        ));
    }
    let output = Command::new("perf")
        .arg("report")
        .arg("-i")
        .arg(&data)
        .args([
            "--stdio",
            "--no-children",
            "-q",
            "--sort",
            "comm,dso,sym",
            "-t",
            "\t",
            "--percent-limit",
        ])
        .arg(TEXT_PERCENT_LIMIT.to_string())
        .output()
        .map_err(|e| BenchError::io("running perf report", e))?;
    if !output.status.success() {
        return Err(BenchError::measure(
            "the profile",
            format!(
                "perf report failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let symbols = parse_report(&text);
    if symbols.is_empty() {
        return Err(BenchError::measure(
            "the profile",
            "perf recorded no samples",
        ));
    }
    let file = format!("{name}.txt");
    let text_path = dir.join(&file);
    std::fs::write(&text_path, render_text(&symbols))
        .map_err(|e| BenchError::io(format!("writing {}", text_path.display()), e))?;
    Ok((value, symbols, file))
}

/// Builds the profile of `path` from its symbols.
pub fn summarize(path: &str, tcp_gbps: f64, symbols: &[SymbolShare], text: String) -> PathProfile {
    PathProfile {
        path: path.to_string(),
        tcp_gbps,
        by_task: shares(symbols, |s| task_group(&s.task)),
        by_work: shares(symbols, work_kind),
        top: symbols.iter().take(TOP_SYMBOLS).cloned().collect(),
        text,
    }
}

/// Reads `perf report --stdio -q -t '\t' --sort comm,dso,sym` lines: `percent%`, task,
/// object, `[k] symbol` or `[.] symbol`. Lines that do not read so are skipped.
pub fn parse_report(text: &str) -> Vec<SymbolShare> {
    let mut out: Vec<SymbolShare> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t').map(str::trim);
            let percent = fields.next()?.strip_suffix('%')?.parse::<f64>().ok()?;
            let task = fields.next()?.to_string();
            let object = fields.next()?.to_string();
            let symbol = fields.next()?;
            let symbol = symbol
                .strip_prefix("[k] ")
                .or_else(|| symbol.strip_prefix("[.] "))
                .unwrap_or(symbol)
                .trim()
                .to_string();
            Some(SymbolShare {
                percent,
                task,
                object,
                symbol,
            })
        })
        .collect();
    out.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    out
}

/// The kind of thread a sample ran on: the forwarder's workers, the benchmark's iperf3
/// ends, the kernel's softirq threads, idle CPUs, or anything else.
pub fn task_group(task: &str) -> &'static str {
    if task.starts_with("tapwire-w") {
        "tapwire workers"
    } else if task.starts_with("tapwire") {
        "tapwire other threads"
    } else if task == "iperf3" {
        "iperf3 (both ends)"
    } else if task.starts_with("ksoftirqd") {
        "ksoftirqd"
    } else if task == "swapper" {
        "idle"
    } else {
        "other"
    }
}

/// The kind of work a symbol does, by its name: copying bytes, checksumming, idling, or
/// the rest split into kernel and userspace.
pub fn work_kind(s: &SymbolShare) -> &'static str {
    let sym = s.symbol.as_str();
    if s.task == "swapper" || sym.contains("safe_halt") || sym.contains("idle") {
        "idle"
    } else if sym.contains("copy") || sym.contains("memcpy") || sym.contains("memmove") {
        "copying bytes"
    } else if sym.contains("csum") || sym.contains("checksum") {
        "checksums"
    } else if s.object.starts_with("[kernel") {
        "other kernel"
    } else {
        "other userspace"
    }
}

fn shares(symbols: &[SymbolShare], key: impl Fn(&SymbolShare) -> &'static str) -> Vec<Share> {
    let mut out: Vec<Share> = Vec::new();
    for s in symbols {
        let name = key(s);
        match out.iter_mut().find(|x| x.name == name) {
            Some(share) => share.percent += s.percent,
            None => out.push(Share {
                name: name.to_string(),
                percent: s.percent,
            }),
        }
    }
    out.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    out
}

/// The text file: one symbol per line, aligned.
fn render_text(symbols: &[SymbolShare]) -> String {
    let mut out =
        String::from("# perf record -a -e cpu-clock, one 1-stream TCP run; share of all samples\n");
    for s in symbols {
        out.push_str(&format!(
            "{:6.2}%  {:<16} {:<28} {}\n",
            s.percent, s.task, s.object, s.symbol
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "    31.20%\tswapper         \t[kernel.kallsyms]  \t[k] pv_native_safe_halt\n\
         \n\
         \x20   12.50%\tiperf3          \t[kernel.kallsyms]  \t[k] copy_user_generic\n\
         \x20    8.00%\ttapwire-w0      \ttapwire-dataplane  \t[.] tapwire_dataplane::offload::copy_and_sum\n\
         \x20    4.25%\ttapwire-w1      \t[kernel.kallsyms]  \t[k] csum_partial\n\
         \x20    2.00%\tksoftirqd/0     \t[kernel.kallsyms]  \t[k] __netif_receive_skb_core\n\
         # a comment perf may print\n";

    #[test]
    fn report_lines_parse_into_symbols_heaviest_first() {
        let symbols = parse_report(REPORT);
        assert_eq!(symbols.len(), 5);
        assert_eq!(
            symbols[2],
            SymbolShare {
                percent: 8.0,
                task: "tapwire-w0".into(),
                object: "tapwire-dataplane".into(),
                symbol: "tapwire_dataplane::offload::copy_and_sum".into(),
            }
        );
        assert!(symbols.windows(2).all(|w| w[0].percent >= w[1].percent));
    }

    #[test]
    fn shares_group_threads_and_work() {
        let symbols = parse_report(REPORT);
        let profile = summarize("tapwire-vxlan", 8.0, &symbols, "profile/x.txt".into());
        let task = |name: &str| {
            profile
                .by_task
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.percent)
        };
        assert_eq!(task("idle"), Some(31.2));
        assert_eq!(task("tapwire workers"), Some(12.25));
        assert_eq!(task("ksoftirqd"), Some(2.0));
        let work = |name: &str| {
            profile
                .by_work
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.percent)
        };
        assert_eq!(work("copying bytes"), Some(20.5));
        assert_eq!(work("checksums"), Some(4.25));
        assert_eq!(work("other kernel"), Some(2.0));
        assert_eq!(profile.by_task[0].name, "idle");
    }
}
