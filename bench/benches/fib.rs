//! Route table benches: lookups per second in `tapwire_dataplane::fib::Fib` against the
//! `prefix-trie` crate on random tables of 1k, 10k and 100k prefixes and on a pod-shaped
//! table, plus the cost of one update + publish at 100k routes.
//!
//! Everything is drawn from a fixed-seed xorshift generator, so every run measures the same
//! tables and the same addresses. Memory of each table is printed once to stderr.

use std::collections::HashSet;
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;
use tapwire_dataplane::fib::{Fib, Prefix, PublishedFib};

/// Addresses looked up per measured iteration: enough that the working set spreads over
/// the table instead of sitting in L1.
const LOOKUPS_PER_ITER: usize = 1 << 16;

/// xorshift64*: deterministic, dependency-free, good enough to scatter prefixes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }
}

/// A prefix length drawn roughly like an Internet table: /24 dominates, then /22–/23,
/// /16–/21 and a tail of /25–/32.
fn real_world_len(rng: &mut Rng) -> u8 {
    const WEIGHTS: [(u8, u32); 17] = [
        (16, 3),
        (17, 1),
        (18, 2),
        (19, 3),
        (20, 4),
        (21, 4),
        (22, 9),
        (23, 8),
        (24, 56),
        (25, 1),
        (26, 2),
        (27, 1),
        (28, 1),
        (29, 1),
        (30, 1),
        (31, 1),
        (32, 2),
    ];
    let total: u32 = WEIGHTS.iter().map(|&(_, w)| w).sum();
    let mut pick = rng.below(total);
    for (len, weight) in WEIGHTS {
        if pick < weight {
            return len;
        }
        pick -= weight;
    }
    24
}

/// `n` distinct random prefixes with [`real_world_len`] lengths.
fn random_routes(n: usize, rng: &mut Rng) -> Vec<(Prefix, u32)> {
    let mut seen = HashSet::with_capacity(n);
    let mut routes = Vec::with_capacity(n);
    while routes.len() < n {
        let Ok(prefix) = Prefix::from_u32(rng.next_u32(), real_world_len(rng)) else {
            continue;
        };
        if seen.insert(prefix) {
            routes.push((prefix, routes.len() as u32));
        }
    }
    routes
}

/// A cluster the way Calico's IPAM lays it out: 16384 /26 blocks handed out in order from
/// 10.64.0.0/12 (about 5000 nodes with three blocks each), this node owning the first two,
/// plus a /32 for each of its 110 pods.
fn pod_routes() -> Vec<(Prefix, u32)> {
    let pool = u32::from(Ipv4Addr::new(10, 64, 0, 0));
    let mut routes = Vec::new();
    for block in 0..16_384u32 {
        if let Ok(prefix) = Prefix::from_u32(pool + block * 64, 26) {
            routes.push((prefix, block / 3));
        }
    }
    for pod in 0..110u32 {
        let addr = pool + 1 + pod;
        routes.push((Prefix::host(Ipv4Addr::from(addr)), 100_000 + pod));
    }
    routes
}

/// Destinations to look up: mostly inside a route of the table (a forwarder mostly sees
/// routable traffic), one in eight anywhere.
fn destinations(routes: &[(Prefix, u32)], rng: &mut Rng) -> Vec<u32> {
    (0..LOOKUPS_PER_ITER)
        .map(|_| {
            if rng.below(8) == 0 || routes.is_empty() {
                return rng.next_u32();
            }
            let (prefix, _) = routes[rng.below(routes.len() as u32) as usize];
            prefix.addr_u32() | (rng.next_u32() & !prefix.mask_u32())
        })
        .collect()
}

fn to_ipnet(prefix: Prefix) -> Option<Ipv4Net> {
    Ipv4Net::new(prefix.addr(), prefix.len()).ok()
}

fn bench_lookups(c: &mut Criterion) {
    let mut rng = Rng::new(0x7a9_0f1b);
    let mut tables: Vec<(String, Vec<(Prefix, u32)>)> = [1_000, 10_000, 100_000]
        .into_iter()
        .map(|n| (format!("random-{}k", n / 1000), random_routes(n, &mut rng)))
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
        let addrs = destinations(routes, &mut rng);
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
            "{name}: {} routes; tapwire Fib {:.1} MiB, prefix-trie {:.1} MiB; {:.0}% of lookups hit",
            fib.len(),
            fib.memory_bytes() as f64 / (1 << 20) as f64,
            reference.mem_size() as f64 / (1 << 20) as f64,
            100.0 * hits as f64 / addrs.len() as f64,
        );

        let published = PublishedFib::new(fib);
        group.bench_with_input(BenchmarkId::new("tapwire", name), &addrs, |b, addrs| {
            b.iter(|| {
                // One snapshot per batch, as a worker takes it.
                let snapshot = published.load();
                let mut sum = 0u32;
                for &a in addrs {
                    if let Some(&v) = snapshot.lookup_u32(black_box(a)) {
                        sum = sum.wrapping_add(v);
                    }
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

fn bench_update(c: &mut Criterion) {
    let mut rng = Rng::new(0x5eed_0002);
    let routes = random_routes(100_000, &mut rng);
    let mut fib: Fib<u32> = routes.iter().copied().collect();
    // Updates cycle over 4096 further prefixes: new inserts on the first pass, value
    // replacements after; either way one path is copied and the old version freed.
    let updates: Vec<Prefix> = random_routes(104_096, &mut Rng::new(0x5eed_0003))
        .into_iter()
        .map(|(prefix, _)| prefix)
        .filter(|prefix| fib.get(prefix).is_none())
        .take(4096)
        .collect();
    let published = PublishedFib::new(fib.clone());

    let mut group = c.benchmark_group("fib_update");
    group.throughput(Throughput::Elements(1));
    let mut next = 0usize;
    group.bench_function("insert+publish/random-100k", |b| {
        b.iter(|| {
            let prefix = updates[next % updates.len()];
            next += 1;
            fib.insert(prefix, next as u32);
            published.publish(fib.clone());
        })
    });
    group.finish();
}

criterion_group!(benches, bench_lookups, bench_update);
criterion_main!(benches);
