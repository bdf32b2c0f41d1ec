//! In-process route-table measurements: lookups per second and heap bytes of
//! `tapwire_dataplane::fib::Fib` against `prefix_trie::PrefixMap` on the same random
//! tables, and the latency of one route change at 100k routes while a reader thread
//! looks up. Uses only the `Fib` API the dataplane uses (`insert`, `remove`, `lookup`,
//! `memory_bytes`), with versions published to the reader through `rcu::Rcu` as the
//! dataplane publishes its tables.
//!
//! Heap bytes come from the caller's allocation counter (the `tapwire-bench` binary
//! installs a counting global allocator): bytes held after building minus before, the
//! same way for both implementations. Without a counter they read 0.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;
use tapwire_dataplane::fib::{Fib, Prefix};
use tapwire_dataplane::rcu::Rcu;

use crate::error::{BenchError, Result};
use crate::report::{FibResult, FibUpdate};
use crate::stats::{median, percentile};
use crate::tables::{destinations, random_routes, Rng};

/// Destinations per table: enough that lookups spread over the table instead of sitting
/// in L1.
const DESTINATIONS: usize = 1 << 16;
/// Lookups between two snapshot loads in the update test, as a worker's batch.
const READER_BATCH: usize = 64;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct FibOptions {
    /// Table sizes (routes).
    pub sizes: Vec<usize>,
    /// Time per lookup-rate repetition.
    pub measure: Duration,
    /// Repetitions per rate (the median is kept).
    pub repetitions: usize,
    /// Route changes timed in the update test (half inserts, half removes).
    pub update_ops: usize,
    /// Table size of the update test.
    pub update_routes: usize,
}

impl FibOptions {
    /// The full run: 1k to 1M routes.
    pub fn full() -> FibOptions {
        FibOptions {
            sizes: vec![1_000, 10_000, 100_000, 1_000_000],
            measure: Duration::from_millis(500),
            repetitions: 5,
            update_ops: 20_000,
            update_routes: 100_000,
        }
    }

    /// The quick run: 1k to 100k routes, shorter repetitions.
    pub fn quick() -> FibOptions {
        FibOptions {
            sizes: vec![1_000, 10_000, 100_000],
            measure: Duration::from_millis(200),
            repetitions: 3,
            update_ops: 4_000,
            update_routes: 100_000,
        }
    }
}

fn to_ipnet(prefix: Prefix) -> Option<Ipv4Net> {
    Ipv4Net::new(prefix.addr(), prefix.len()).ok()
}

/// Runs `pass` (which does `n` lookups and returns a checksum) repeatedly for `measure`,
/// `repetitions` times; returns the median rate in lookups per second.
fn lookup_rate(n: usize, opts: &FibOptions, mut pass: impl FnMut() -> u64) -> f64 {
    let mut rates = Vec::with_capacity(opts.repetitions);
    black_box(pass()); // warm caches and branch predictors
    for _ in 0..opts.repetitions.max(1) {
        let started = Instant::now();
        let mut done = 0usize;
        while started.elapsed() < opts.measure {
            black_box(pass());
            done += n;
        }
        rates.push(done as f64 / started.elapsed().as_secs_f64());
    }
    median(&rates).unwrap_or(0.0)
}

/// Lookup rate and heap bytes of both implementations at every size of `opts`;
/// `allocated` returns the bytes currently held by the process's allocator.
pub fn lookups(
    opts: &FibOptions,
    allocated: &dyn Fn() -> u64,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<FibResult>> {
    let mut out = Vec::new();
    for &size in &opts.sizes {
        let mut rng = Rng::new(0x7a9_0f1b ^ size as u64);
        let routes = random_routes(size, &mut rng);
        let addrs = destinations(&routes, DESTINATIONS, &mut rng);
        let probes: Vec<Ipv4Net> = addrs
            .iter()
            .map(|&a| Ipv4Net::from(Ipv4Addr::from(a)))
            .collect();

        let before = allocated();
        let mut fib: Fib<u32> = Fib::new();
        for &(prefix, value) in &routes {
            fib.insert(prefix, value);
        }
        let fib_bytes = allocated().saturating_sub(before);

        let before = allocated();
        let mut trie: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
        for &(prefix, value) in &routes {
            if let Some(net) = to_ipnet(prefix) {
                trie.insert(net, value);
            }
        }
        let trie_bytes = allocated().saturating_sub(before);

        // The two must agree before their speeds are worth comparing.
        let disagree = addrs
            .iter()
            .zip(&probes)
            .filter(|(a, probe)| {
                fib.lookup(Ipv4Addr::from(**a)) != trie.get_lpm(probe).map(|(_, v)| v)
            })
            .count();
        if disagree > 0 {
            return Err(BenchError::measure(
                format!("LPM at {size} routes"),
                format!(
                    "tapwire's Fib and prefix-trie disagree on {disagree} of {} destinations",
                    addrs.len()
                ),
            ));
        }

        let ours = lookup_rate(addrs.len(), opts, || {
            let mut sum = 0u64;
            for &a in &addrs {
                if let Some(&v) = fib.lookup(Ipv4Addr::from(black_box(a))) {
                    sum = sum.wrapping_add(u64::from(v));
                }
            }
            sum
        });
        let theirs = lookup_rate(probes.len(), opts, || {
            let mut sum = 0u64;
            for probe in &probes {
                if let Some((_, &v)) = trie.get_lpm(black_box(probe)) {
                    sum = sum.wrapping_add(u64::from(v));
                }
            }
            sum
        });
        progress(format!(
            "LPM {size} routes: tapwire {:.1} M lookups/s, {:.2} MiB; prefix-trie {:.1} M lookups/s, {:.2} MiB",
            ours / 1e6,
            fib_bytes as f64 / (1 << 20) as f64,
            theirs / 1e6,
            trie_bytes as f64 / (1 << 20) as f64,
        ));
        out.push(FibResult {
            implementation: "tapwire".into(),
            routes: size,
            lookups_per_s: ours,
            memory_bytes: fib_bytes,
            reported_memory_bytes: fib.memory_bytes() as u64,
        });
        out.push(FibResult {
            implementation: "prefix-trie".into(),
            routes: size,
            lookups_per_s: theirs,
            memory_bytes: trie_bytes,
            reported_memory_bytes: trie.mem_size() as u64,
        });
    }
    Ok(out)
}

/// Times single route changes (insert + publish, then remove + publish) at
/// `opts.update_routes` routes while a second thread looks up in published versions, one
/// version per batch of [`READER_BATCH`] lookups. Reclaiming replaced versions happens
/// after each timed change, untimed (the dataplane does it off the update path too).
pub fn update_latency(opts: &FibOptions) -> Result<FibUpdate> {
    let routes = random_routes(opts.update_routes, &mut Rng::new(0x5eed_0002));
    let mut fib: Fib<u32> = Fib::new();
    for &(prefix, value) in &routes {
        fib.insert(prefix, value);
    }
    let addrs = destinations(&routes, DESTINATIONS, &mut Rng::new(0x5eed_0004));
    let changes: Vec<Prefix> = random_routes(
        opts.update_ops.div_ceil(2).max(1),
        &mut Rng::new(0x5eed_0003),
    )
    .into_iter()
    .map(|(prefix, _)| prefix)
    .collect();
    let mut published = Rcu::new(fib.clone());
    let mut reader = published.reader();
    let stop = &AtomicBool::new(false);

    let (inserts, removes, reader_lookups_per_s) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let started = Instant::now();
            let mut done = 0u64;
            'outer: loop {
                for batch in addrs.chunks(READER_BATCH) {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    let mut sum = 0u32;
                    let version = reader.read();
                    for &a in batch {
                        if let Some(&v) = version.lookup(Ipv4Addr::from(black_box(a))) {
                            sum = sum.wrapping_add(v);
                        }
                    }
                    reader.quiesce();
                    black_box(sum);
                    done += batch.len() as u64;
                }
            }
            drop(reader);
            (done, started.elapsed().as_secs_f64())
        });
        // Let the reader get going before timing.
        std::thread::sleep(Duration::from_millis(20));
        let mut inserts = Vec::with_capacity(changes.len());
        let mut removes = Vec::with_capacity(changes.len());
        for (i, &prefix) in changes.iter().enumerate() {
            let started = Instant::now();
            let old = fib.insert(prefix, u32::MAX - i as u32);
            published.publish(fib.clone());
            inserts.push(started.elapsed().as_secs_f64() * 1e6);
            published.reclaim();
            let started = Instant::now();
            // A change that replaced an existing route puts it back instead.
            match old {
                Some(value) => {
                    fib.insert(prefix, value);
                }
                None => {
                    fib.remove(&prefix);
                }
            }
            published.publish(fib.clone());
            removes.push(started.elapsed().as_secs_f64() * 1e6);
            published.reclaim();
        }
        stop.store(true, Ordering::Relaxed);
        let (lookups, seconds) = reader.join().unwrap_or((0, 0.0));
        (inserts, removes, lookups as f64 / seconds.max(1e-9))
    });
    let all: Vec<f64> = inserts.iter().chain(&removes).copied().collect();
    let missing = || BenchError::measure("route changes", "no change was timed");
    Ok(FibUpdate {
        routes: opts.update_routes,
        ops: all.len(),
        median_us: median(&all).ok_or_else(missing)?,
        p99_us: percentile(&all, 99.0).ok_or_else(missing)?,
        insert_median_us: median(&inserts).ok_or_else(missing)?,
        remove_median_us: median(&removes).ok_or_else(missing)?,
        reader_lookups_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_agree_and_report_rates_and_memory() {
        let opts = FibOptions {
            sizes: vec![500],
            measure: Duration::from_millis(5),
            repetitions: 1,
            update_ops: 20,
            update_routes: 500,
        };
        let results = lookups(&opts, &|| 0, &mut |_| {}).map_err(|e| e.to_string());
        let Ok(results) = results else {
            panic!("{results:?}");
        };
        let names: Vec<&str> = results.iter().map(|r| r.implementation.as_str()).collect();
        assert_eq!(names, ["tapwire", "prefix-trie"]);
        assert!(results
            .iter()
            .all(|r| r.routes == 500 && r.lookups_per_s > 0.0));
        assert!(results.iter().all(|r| r.reported_memory_bytes > 0));

        let update = update_latency(&opts).map_err(|e| e.to_string());
        assert!(
            matches!(&update, Ok(u) if u.ops == 20 && u.median_us > 0.0 && u.p99_us >= u.median_us),
            "{update:?}"
        );
    }
}
