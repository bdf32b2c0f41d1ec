//! Route table benches: lookups per second in `tapwire_dataplane::fib::Fib` against the
//! `prefix-trie` crate on random tables of 1k, 10k, 100k and 1M prefixes and on a
//! pod-shaped table, and the cost of one route insert + publish and remove + publish at
//! 100k routes while another thread keeps looking up in the published versions.
//!
//! Tables and addresses come from the fixed-seed generators in `tapwire_bench::tables`, so
//! every run measures the same data. The memory of each table is printed once to stderr,
//! and so is the median / p99 of 20k individually timed route changes (criterion reports
//! means).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;
use tapwire_bench::{destinations, pod_routes, random_routes, Rng};
use tapwire_dataplane::fib::{Fib, Prefix};
use tapwire_dataplane::rcu::{Rcu, RcuReader};

/// Addresses looked up per measured iteration: enough that the working set spreads over
/// the table instead of sitting in L1.
const LOOKUPS_PER_ITER: usize = 1 << 16;
/// Lookups a reader does per version it takes (its "batch").
const BATCH: usize = 64;

fn to_ipnet(prefix: Prefix) -> Option<Ipv4Net> {
    Ipv4Net::new(prefix.addr(), prefix.len()).ok()
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn bench_lookups(c: &mut Criterion) {
    let mut rng = Rng::new(0x7a9_0f1b);
    let mut tables: Vec<(String, Vec<(Prefix, u32)>)> = [1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .map(|n| {
            let name = if n >= 1_000_000 {
                format!("random-{}M", n / 1_000_000)
            } else {
                format!("random-{}k", n / 1000)
            };
            (name, random_routes(n, &mut rng))
        })
        .collect();
    tables.push(("pods-16k-blocks".to_owned(), pod_routes()));

    let mut group = c.benchmark_group("fib_lookup");
    group.throughput(Throughput::Elements(LOOKUPS_PER_ITER as u64));
    for (name, routes) in &tables {
        let fib: Fib<u32> = routes.iter().copied().collect();
        let mut reference: PrefixMap<Ipv4Net, u32> = PrefixMap::new();
        for &(prefix, value) in routes {
            if let Some(net) = to_ipnet(prefix) {
                reference.insert(net, value);
            }
        }
        let addrs = destinations(routes, LOOKUPS_PER_ITER, &mut rng);
        let hits = addrs
            .iter()
            .filter(|&&a| fib.lookup_u32(a).is_some())
            .count();
        // The two tables must agree before their speeds are worth comparing.
        let disagree = addrs
            .iter()
            .filter(|&&a| {
                let theirs = reference.get_lpm(&Ipv4Net::from(Ipv4Addr::from(a)));
                fib.lookup_u32(a) != theirs.map(|(_, v)| v)
            })
            .count();
        assert_eq!(disagree, 0, "{name}: tapwire and prefix-trie disagree");
        eprintln!(
            "{name}: {} routes; tapwire Fib {:.2} MiB, prefix-trie {:.2} MiB; {:.0}% of lookups hit",
            fib.len(),
            mib(fib.memory_bytes()),
            mib(reference.mem_size()),
            100.0 * hits as f64 / addrs.len() as f64,
        );

        let published = Rcu::new(fib);
        let mut reader = published.reader();
        group.bench_with_input(BenchmarkId::new("tapwire", name), &addrs, |b, addrs| {
            b.iter(|| {
                let mut sum = 0u32;
                for batch in addrs.chunks(BATCH) {
                    // One version per batch, as a worker takes it.
                    let version = reader.read();
                    for &a in batch {
                        if let Some(&v) = version.lookup_u32(black_box(a)) {
                            sum = sum.wrapping_add(v);
                        }
                    }
                    reader.quiesce();
                }
                sum
            })
        });
        let probes: Vec<Ipv4Net> = addrs
            .iter()
            .map(|&a| Ipv4Net::from(Ipv4Addr::from(a)))
            .collect();
        group.bench_with_input(
            BenchmarkId::new("prefix-trie", name),
            &probes,
            |b, probes| {
                b.iter(|| {
                    let mut sum = 0u32;
                    for probe in probes {
                        if let Some((_, &v)) = reference.get_lpm(black_box(probe)) {
                            sum = sum.wrapping_add(v);
                        }
                    }
                    sum
                })
            },
        );
    }
    group.finish();
}

/// Looks up in batches until `stop`, quiescing after each batch; returns the lookups done.
fn reader_loop(mut reader: RcuReader<Fib<u32>>, addrs: &[u32], stop: &AtomicBool) -> u64 {
    let mut done = 0u64;
    let mut sum = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for batch in addrs.chunks(BATCH) {
            let version = reader.read();
            for &a in batch {
                if let Some(&v) = version.lookup_u32(a) {
                    sum = sum.wrapping_add(v);
                }
            }
            reader.quiesce();
            done += batch.len() as u64;
        }
    }
    black_box(sum);
    done
}

/// One route change and its publication.
#[derive(Clone, Copy)]
enum Change {
    Insert,
    Remove,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Insert => "insert+publish/random-100k",
            Change::Remove => "remove+publish/random-100k",
        }
    }
}

fn bench_update(c: &mut Criterion) {
    let mut rng = Rng::new(0x5eed_0002);
    let routes = random_routes(100_000, &mut rng);
    let mut fib: Fib<u32> = routes.iter().copied().collect();
    // Updates cycle over 4096 prefixes not in the table: each timed insert is undone by an
    // untimed remove (and each timed remove prepared by an untimed insert), so the table
    // stays at 100k routes and every change adds or deletes a route.
    let updates: Vec<Prefix> = random_routes(104_096, &mut Rng::new(0x5eed_0003))
        .into_iter()
        .map(|(prefix, _)| prefix)
        .filter(|prefix| fib.get(prefix).is_none())
        .take(4096)
        .collect();
    let addrs = destinations(&routes, LOOKUPS_PER_ITER, &mut Rng::new(0x5eed_0004));
    let mut published = Rcu::new(fib.clone());
    let stop = AtomicBool::new(false);
    let mut next = 0usize;

    // One change + publish, timed; the opposite change + publish untimed.
    let mut change = |kind: Change, fib: &mut Fib<u32>, published: &mut Rcu<Fib<u32>>| {
        let prefix = updates[next % updates.len()];
        next += 1;
        let value = next as u32;
        match kind {
            Change::Insert => {
                let start = Instant::now();
                fib.insert(prefix, value);
                published.publish(fib.clone());
                let elapsed = start.elapsed();
                fib.remove(&prefix);
                published.publish(fib.clone());
                elapsed
            }
            Change::Remove => {
                fib.insert(prefix, value);
                published.publish(fib.clone());
                let start = Instant::now();
                fib.remove(&prefix);
                published.publish(fib.clone());
                start.elapsed()
            }
        }
    };

    std::thread::scope(|s| {
        let reader = published.reader();
        let (addrs, stop) = (&addrs, &stop);
        let reader = s.spawn(move || reader_loop(reader, addrs, stop));
        let started = Instant::now();

        for kind in [Change::Insert, Change::Remove] {
            let mut samples: Vec<Duration> = (0..20_000)
                .map(|_| change(kind, &mut fib, &mut published))
                .collect();
            samples.sort_unstable();
            eprintln!(
                "{}: median {:.2} µs, p99 {:.2} µs over {} changes (reader running)",
                kind.name(),
                samples[samples.len() / 2].as_secs_f64() * 1e6,
                samples[samples.len() * 99 / 100].as_secs_f64() * 1e6,
                samples.len(),
            );
        }

        let mut group = c.benchmark_group("fib_update");
        group.throughput(Throughput::Elements(1));
        for kind in [Change::Insert, Change::Remove] {
            group.bench_function(kind.name(), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| change(kind, &mut fib, &mut published))
                        .sum()
                })
            });
        }
        group.finish();

        stop.store(true, Ordering::Relaxed);
        let lookups = match reader.join() {
            Ok(lookups) => lookups,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let seconds = started.elapsed().as_secs_f64();
        // The reader is gone: everything retired can be freed now.
        published.reclaim();
        eprintln!(
            "reader during updates: {:.1} M lookups/s; {} versions pending after it left",
            lookups as f64 / seconds / 1e6,
            published.pending(),
        );
    });
}

criterion_group!(benches, bench_lookups, bench_update);
criterion_main!(benches);
