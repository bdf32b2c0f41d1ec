//! `tapwire-bench`: measures tapwire's paths against the kernel's on this host and writes
//! `bench-report/` (see `scripts/bench.sh`).
//!
//! - `tapwire-bench run [--quick] [--out DIR] [--rounds N] [--skip fib|memory|cni|scale|paths|profile]
//!   [--profile]`: everything — route table, dataplane memory, CNI ADD latency with 1 to
//!   200 pods on one node, one node's control plane against 1,000 and 5,000 simulated
//!   nodes on etcd, every path (tapwire none/VXLAN/IPIP/host/local, kernel
//!   routed/VXLAN/host/local) with one TAP hop's cost, and a `perf` profile of each path
//!   (full runs, or `--profile`) — with progress on stderr and the final table on stdout.
//!   The exit status is non-zero only when a part failed; targets are reported, not
//!   enforced.
//! - `tapwire-bench fib [--quick]`: only the in-process route-table measurements.
//! - `tapwire-bench report [--out DIR]`: re-renders `report.md`, `chart.svg` and the table
//!   from `DIR/results.json`.
//!
//! The binary installs a counting global allocator so that route-table memory is the heap
//! bytes each table really holds, measured the same way for every implementation.

#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Parser, Subcommand, ValueEnum};
use tapwire_bench::fibbench::{self, FibOptions};
use tapwire_bench::profile;
use tapwire_bench::report::{self, Results};
use tapwire_bench::run::{self, RunOptions, Sections};
use tapwire_bench::BenchError;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicU64 = AtomicU64::new(0);

#[allow(unsafe_code)]
// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged and only adds bookkeeping on an atomic; the contract is System's.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size() as u64, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
            ALLOCATED.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> u64 {
    ALLOCATED.load(Ordering::Relaxed)
}

/// tapwire against the kernel on this host: throughput, packet rate, latency, CPU, the
/// route table and the dataplane's memory.
#[derive(Debug, Parser)]
#[command(name = "tapwire-bench", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// A part of `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Route-table lookups, memory and update latency.
    Fib,
    /// The dataplane's RSS with 64 pods and 100k routes.
    Memory,
    /// CNI ADD latency as 200 pods are added on one node (first ADDs against the last).
    Cni,
    /// One real node against 1,000 and 5,000 simulated nodes on etcd (full sync, one
    /// change, RSS).
    Scale,
    /// The paths (tapwire none/VXLAN/IPIP/host/local, kernel routed/VXLAN/host/local) and
    /// the TAP hop.
    Paths,
    /// The `perf` profile of each path (taken after the measured rounds).
    Profile,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure everything and write results.json, report.md and chart.svg.
    Run {
        /// One round of short runs (CI; about two and a half minutes).
        #[arg(long)]
        quick: bool,
        /// Where the report goes.
        #[arg(long, default_value = "bench-report")]
        out: PathBuf,
        /// Rounds (default: 3, or 1 with --quick); medians are reported.
        #[arg(long)]
        rounds: Option<usize>,
        /// Leave out a part (repeatable); its targets show as not measured.
        #[arg(long, value_enum)]
        skip: Vec<Section>,
        /// Profile each path with `perf` even in a quick run (full runs always do, unless
        /// `--skip profile`).
        #[arg(long)]
        profile: bool,
    },
    /// Only the route-table measurements (no root needed).
    Fib {
        /// 1k–100k routes and shorter repetitions.
        #[arg(long)]
        quick: bool,
    },
    /// Re-judge the targets and re-render results.json, report.md, chart.svg and the table
    /// from DIR/results.json.
    Report {
        #[arg(long, default_value = "bench-report")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match execute(args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tapwire-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> Result<(), BenchError> {
    match command {
        Command::Run {
            quick,
            out,
            rounds,
            skip,
            profile,
        } => {
            if !tapwire_integration::is_root() {
                return Err(BenchError::Invalid(
                    "`run` needs root: it builds network namespaces, veths and TAPs".into(),
                ));
            }
            tapwire_integration::install_signal_cleanup();
            let command_line = std::env::args().collect::<Vec<_>>().join(" ");
            let mut opts = if quick {
                RunOptions::quick(out, command_line)
            } else {
                RunOptions::full(out, command_line)
            };
            if let Some(rounds) = rounds {
                opts.rounds = rounds;
            }
            opts.sections = Sections {
                fib: !skip.contains(&Section::Fib),
                memory: !skip.contains(&Section::Memory),
                cni: !skip.contains(&Section::Cni),
                scale: !skip.contains(&Section::Scale),
                paths: !skip.contains(&Section::Paths),
                profile: (profile || opts.sections.profile)
                    && !skip.contains(&Section::Profile)
                    && !skip.contains(&Section::Paths),
            };
            if opts.sections.profile && !profile::perf_available() {
                return Err(BenchError::Invalid(
                    "profiling needs `perf` (Debian: linux-perf); install it or pass --skip profile"
                        .into(),
                ));
            }
            let results = run::run(&opts, &allocated)?;
            print!("{}", report::terminal_table(&results));
            if results.errors.is_empty() {
                Ok(())
            } else {
                Err(BenchError::PartsFailed {
                    count: results.errors.len(),
                    report: opts.out.join("report.md").display().to_string(),
                })
            }
        }
        Command::Fib { quick } => {
            let opts = if quick {
                FibOptions::quick()
            } else {
                FibOptions::full()
            };
            let progress = run::Progress::new();
            let fib = fibbench::lookups(&opts, &allocated, &mut |line| progress.say(line))?;
            let update = fibbench::update_latency(&opts)?;
            for f in &fib {
                println!(
                    "{:<12} {:>8} routes  {:>7.1} M lookups/s  {:>8.2} MiB held ({:.2} MiB self-reported)",
                    f.implementation,
                    f.routes,
                    f.lookups_per_s / 1e6,
                    f.memory_bytes as f64 / (1 << 20) as f64,
                    f.reported_memory_bytes as f64 / (1 << 20) as f64
                );
            }
            println!(
                "route change at {} routes: median {:.2} µs, p99 {:.2} µs (insert {:.2}, remove {:.2}); reader {:.1} M lookups/s",
                update.routes,
                update.median_us,
                update.p99_us,
                update.insert_median_us,
                update.remove_median_us,
                update.reader_lookups_per_s / 1e6
            );
            Ok(())
        }
        Command::Report { out } => {
            let mut results: Results = report::read_results(&out.join("results.json"))?;
            // Judged again, so a changed target or its wording shows in the new report.
            results.targets = report::evaluate_targets(&results);
            report::write_report(&out, &results)?;
            print!("{}", report::terminal_table(&results));
            Ok(())
        }
    }
}
