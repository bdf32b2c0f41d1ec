//! Tests of [`Fib`]: fixed cases, property tests against a naive longest-match scan
//! (inserts, removes, bulk extends, short routes), persistence, memory, and readers
//! racing a writer that publishes through [`crate::rcu::Rcu`].

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;

use super::*;

fn p(s: &str) -> Prefix {
    match s.parse() {
        Ok(p) => p,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn table(routes: &[(&str, u32)]) -> Fib<u32> {
    routes.iter().map(|&(s, v)| (p(s), v)).collect()
}

#[test]
fn empty_table_matches_nothing() {
    let fib: Fib<u32> = Fib::new();
    assert!(fib.is_empty());
    assert_eq!(fib.len(), 0);
    assert_eq!(fib.lookup(ip("0.0.0.0")), None);
    assert_eq!(fib.lookup(ip("10.1.2.3")), None);
    assert_eq!(fib.lookup(Ipv4Addr::BROADCAST), None);
    assert_eq!(fib.iter().count(), 0);
}

#[test]
fn default_route_matches_everything() {
    let fib = table(&[("0.0.0.0/0", 7)]);
    for a in ["0.0.0.0", "10.0.0.1", "128.0.0.0", "255.255.255.255"] {
        assert_eq!(fib.lookup(ip(a)), Some(&7), "{a}");
    }
}

#[test]
fn nested_prefixes_resolve_to_the_longest() {
    let fib = table(&[
        ("0.0.0.0/0", 0),
        ("10.65.0.0/16", 16),
        ("10.65.3.0/26", 26),
        ("10.65.3.5/32", 32),
    ]);
    let cases = [
        ("10.65.3.5", 32),
        ("10.65.3.4", 26),
        ("10.65.3.6", 26),
        ("10.65.3.0", 26),
        ("10.65.3.63", 26),
        ("10.65.3.64", 16),
        ("10.65.255.255", 16),
        ("10.65.0.0", 16),
        ("10.66.0.0", 0),
        ("10.64.255.255", 0),
        ("192.168.0.1", 0),
    ];
    for (a, want) in cases {
        assert_eq!(fib.lookup(ip(a)), Some(&want), "{a}");
    }
}

#[test]
fn longest_match_inside_one_stride() {
    // /17../24 share a node: expansion must let the longest win whatever the insert order.
    let mut fib = table(&[
        ("10.1.0.0/24", 24),
        ("10.1.0.0/17", 17),
        ("10.1.0.0/20", 20),
    ]);
    assert_eq!(fib.lookup(ip("10.1.0.9")), Some(&24));
    assert_eq!(fib.lookup(ip("10.1.1.9")), Some(&20));
    assert_eq!(fib.lookup(ip("10.1.15.255")), Some(&20));
    assert_eq!(fib.lookup(ip("10.1.16.0")), Some(&17));
    assert_eq!(fib.lookup(ip("10.1.127.255")), Some(&17));
    assert_eq!(fib.lookup(ip("10.1.128.0")), None);
    fib.insert(p("10.1.0.0/18"), 18);
    assert_eq!(fib.lookup(ip("10.1.16.0")), Some(&18));
    assert_eq!(fib.lookup(ip("10.1.1.9")), Some(&20));
}

#[test]
fn removing_a_prefix_re_exposes_the_covering_one() {
    let mut fib = table(&[
        ("0.0.0.0/0", 0),
        ("10.0.0.0/8", 8),
        ("10.1.0.0/18", 18),
        ("10.1.0.0/20", 20),
        ("10.1.0.0/30", 30),
    ]);
    assert_eq!(fib.lookup(ip("10.1.0.1")), Some(&30));

    assert_eq!(fib.remove(&p("10.1.0.0/30")), Some(30));
    assert_eq!(fib.lookup(ip("10.1.0.1")), Some(&20));

    assert_eq!(fib.remove(&p("10.1.0.0/20")), Some(20));
    assert_eq!(fib.lookup(ip("10.1.0.1")), Some(&18));
    assert_eq!(fib.lookup(ip("10.1.15.1")), Some(&18));

    assert_eq!(fib.remove(&p("10.1.0.0/18")), Some(18));
    assert_eq!(fib.lookup(ip("10.1.0.1")), Some(&8));

    assert_eq!(fib.remove(&p("10.0.0.0/8")), Some(8));
    assert_eq!(fib.lookup(ip("10.1.0.1")), Some(&0));

    assert_eq!(fib.remove(&p("0.0.0.0/0")), Some(0));
    assert_eq!(fib.lookup(ip("10.1.0.1")), None);
    assert!(fib.is_empty());
    // Every chunk went back to the shared empty one; only the 32 groups the /0 made
    // copies of (32 pointers each) remain.
    let empty = Fib::<u32>::new().memory_bytes();
    assert!(
        fib.memory_bytes() <= empty + 32 * 300,
        "{} vs {empty}",
        fib.memory_bytes()
    );
}

#[test]
fn removing_an_absent_prefix_changes_nothing() {
    let mut fib = table(&[("10.1.0.0/16", 1)]);
    assert_eq!(fib.remove(&p("10.1.0.0/17")), None);
    assert_eq!(fib.remove(&p("10.1.0.0/24")), None);
    assert_eq!(fib.remove(&p("10.0.0.0/8")), None);
    assert_eq!(fib.len(), 1);
    assert_eq!(fib.lookup(ip("10.1.200.1")), Some(&1));
}

#[test]
fn short_and_long_prefixes() {
    let fib = table(&[
        ("128.0.0.0/1", 1),
        ("10.0.0.0/7", 7),
        ("172.16.0.0/12", 12),
        ("10.1.2.128/25", 25),
        ("10.1.2.200/31", 31),
        ("10.1.2.201/32", 32),
    ]);
    assert_eq!(fib.lookup(ip("200.1.1.1")), Some(&1));
    assert_eq!(fib.lookup(ip("127.255.255.255")), None);
    assert_eq!(fib.lookup(ip("11.255.0.0")), Some(&7));
    assert_eq!(fib.lookup(ip("12.0.0.0")), None);
    assert_eq!(fib.lookup(ip("172.31.255.255")), Some(&12));
    assert_eq!(fib.lookup(ip("172.32.0.0")), Some(&1));
    assert_eq!(fib.lookup(ip("10.1.2.127")), Some(&7));
    assert_eq!(fib.lookup(ip("10.1.2.128")), Some(&25));
    assert_eq!(fib.lookup(ip("10.1.2.200")), Some(&31));
    assert_eq!(fib.lookup(ip("10.1.2.201")), Some(&32));
    assert_eq!(fib.lookup(ip("10.1.2.202")), Some(&25));
    assert_eq!(fib.lookup(ip("10.1.2.255")), Some(&25));
}

#[test]
fn boundary_addresses() {
    let fib = table(&[
        ("0.0.0.0/32", 1),
        ("0.0.0.0/8", 2),
        ("255.255.255.255/32", 3),
        ("255.255.255.0/24", 4),
    ]);
    assert_eq!(fib.lookup(ip("0.0.0.0")), Some(&1));
    assert_eq!(fib.lookup(ip("0.0.0.1")), Some(&2));
    assert_eq!(fib.lookup(ip("0.255.255.255")), Some(&2));
    assert_eq!(fib.lookup(ip("1.0.0.0")), None);
    assert_eq!(fib.lookup(Ipv4Addr::BROADCAST), Some(&3));
    assert_eq!(fib.lookup(ip("255.255.255.254")), Some(&4));
    assert_eq!(fib.lookup(ip("255.255.254.255")), None);
    assert_eq!(fib.lookup_u32(u32::MAX), Some(&3));
    assert_eq!(fib.lookup_u32(0), Some(&1));
}

#[test]
fn insert_replaces_and_returns_the_old_value() {
    let mut fib = Fib::new();
    assert_eq!(fib.insert(p("10.65.0.0/26"), 1), None);
    assert_eq!(fib.insert(p("10.65.0.0/26"), 2), Some(1));
    assert_eq!(fib.len(), 1);
    assert_eq!(fib.lookup(ip("10.65.0.9")), Some(&2));
    assert_eq!(fib.get(&p("10.65.0.0/26")), Some(&2));
    // Host bits are not part of the key.
    assert_eq!(fib.insert(p("10.65.0.7/26"), 3), Some(2));
    assert_eq!(fib.len(), 1);
}

#[test]
fn get_is_exact_while_lookup_is_longest_match() {
    let fib = table(&[("10.0.0.0/8", 8), ("10.1.0.0/16", 16)]);
    assert_eq!(fib.get(&p("10.0.0.0/8")), Some(&8));
    assert_eq!(fib.get(&p("10.1.0.0/16")), Some(&16));
    assert_eq!(fib.get(&p("10.1.0.0/17")), None);
    assert_eq!(fib.get(&p("10.1.2.3/32")), None);
    assert_eq!(fib.get(&p("10.0.0.0/9")), None);
    assert_eq!(fib.get(&p("0.0.0.0/0")), None);
    assert_eq!(fib.lookup(ip("10.1.2.3")), Some(&16));
    assert!(fib.contains_prefix(&p("10.0.0.0/8")));
    assert!(!fib.contains_prefix(&p("10.0.0.0/7")));
}

#[test]
fn iterates_in_prefix_order() {
    let routes = [
        ("192.168.0.0/16", 1),
        ("10.0.0.0/8", 2),
        ("10.1.0.0/24", 3),
        ("10.0.0.0/16", 4),
        ("0.0.0.0/0", 5),
        ("10.1.0.0/16", 6),
        ("10.1.0.5/32", 7),
        ("10.0.255.0/24", 8),
        ("10.1.0.0/25", 9),
    ];
    let fib = table(&routes);
    let mut want: Vec<(Prefix, u32)> = routes.iter().map(|&(s, v)| (p(s), v)).collect();
    want.sort();
    let got: Vec<(Prefix, u32)> = fib.iter().map(|(p, &v)| (p, v)).collect();
    assert_eq!(got, want);
    assert_eq!(fib.iter().len(), routes.len());
    assert_eq!(format!("{fib:?}").split(", ").next(), Some("{0.0.0.0/0: 5"));
}

#[test]
fn a_clone_keeps_its_routes_when_the_original_changes() {
    let mut fib = table(&[("10.0.0.0/8", 1), ("10.1.2.0/24", 2), ("10.1.2.3/32", 3)]);
    let snapshot = fib.clone();
    fib.insert(p("10.1.2.0/24"), 20);
    fib.insert(p("10.1.2.4/32"), 4);
    fib.insert(p("0.0.0.0/0"), 0);
    fib.remove(&p("10.1.2.3/32"));

    assert_eq!(snapshot.len(), 3);
    assert_eq!(snapshot.lookup(ip("10.1.2.3")), Some(&3));
    assert_eq!(snapshot.lookup(ip("10.1.2.4")), Some(&2));
    assert_eq!(snapshot.lookup(ip("10.1.3.0")), Some(&1));
    assert_eq!(snapshot.lookup(ip("11.0.0.0")), None);

    assert_eq!(fib.len(), 4);
    assert_eq!(fib.lookup(ip("10.1.2.3")), Some(&20));
    assert_eq!(fib.lookup(ip("10.1.2.4")), Some(&4));
    assert_eq!(fib.lookup(ip("11.0.0.0")), Some(&0));
}

#[test]
fn a_lone_route_costs_one_chunk_of_direct_entries_and_a_small_node() {
    let empty = Fib::<u32>::new().memory_bytes();
    assert!(empty < 16 * 1024, "{empty} bytes for an empty table");
    let one = table(&[("10.65.3.0/24", 1)]);
    // 256 direct words (1 KiB), a five-word node, one packed route, one value, the
    // chunk's and the copied group's headers.
    let cost = one.memory_bytes() - empty;
    assert!(cost < 1024 + 20 + 8 + 4 + 400, "{cost} bytes for one /24");
    // A second /24 under another /18 of the same chunk adds a node and a route only.
    let two = table(&[("10.65.3.0/24", 1), ("10.66.200.0/24", 1)]);
    let more = two.memory_bytes() - one.memory_bytes();
    assert!(more <= 20 + 8, "{more} bytes for a second /24");
}

#[test]
fn bulk_extend_agrees_with_one_by_one_inserts() {
    let mut x = 0x1234_5678u32;
    let mut routes = Vec::new();
    for n in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Crowd one /12 so chunks hold many routes, plus some anywhere and short ones.
        let addr = match n % 4 {
            0 => x,
            _ => 0x0a40_0000 | (x & 0x000f_ffff),
        };
        let len = [8u8, 12, 16, 18, 20, 22, 24, 24, 24, 26, 28, 30, 32][(x % 13) as usize];
        routes.push((Prefix::masked(addr, len), n % 7));
    }
    let bulk: Fib<u32> = routes.iter().copied().collect();
    let mut one_by_one = Fib::new();
    let mut naive = Naive::default();
    for &(p, v) in &routes {
        one_by_one.insert(p, v);
        naive.insert(p, v);
    }
    assert_eq!(bulk.len(), naive.routes.len());
    assert_eq!(one_by_one.len(), naive.routes.len());
    let mut probes: Vec<u32> = Vec::new();
    for (q, _) in &naive.routes {
        probes.extend([q.addr_u32(), q.last_u32(), q.last_u32().wrapping_add(1)]);
    }
    for &a in &probes {
        let want = naive.lookup(a);
        assert_eq!(bulk.lookup_u32(a).copied(), want, "{}", Ipv4Addr::from(a));
        assert_eq!(
            one_by_one.lookup_u32(a).copied(),
            want,
            "{}",
            Ipv4Addr::from(a)
        );
    }
    let a: Vec<(Prefix, u32)> = bulk.iter().map(|(p, &v)| (p, v)).collect();
    let b: Vec<(Prefix, u32)> = one_by_one.iter().map(|(p, &v)| (p, v)).collect();
    assert_eq!(a, b);

    // Now remove every other route, one by one, and compare again.
    let mut shrinking = bulk.clone();
    for (i, &(p, _)) in routes.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(shrinking.remove(&p), naive.remove(&p));
        }
    }
    for &a in &probes {
        assert_eq!(
            shrinking.lookup_u32(a).copied(),
            naive.lookup(a),
            "{}",
            Ipv4Addr::from(a)
        );
    }
    // The bulk-built table is untouched by the removals from its clone.
    assert_eq!(bulk.len(), one_by_one.len());
}

/// The reference: every route in a list, longest match by scanning.
#[derive(Default)]
struct Naive {
    routes: Vec<(Prefix, u32)>,
}

impl Naive {
    fn insert(&mut self, prefix: Prefix, value: u32) -> Option<u32> {
        match self.routes.iter_mut().find(|(q, _)| *q == prefix) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.routes.push((prefix, value));
                None
            }
        }
    }

    fn remove(&mut self, prefix: &Prefix) -> Option<u32> {
        let i = self.routes.iter().position(|(q, _)| q == prefix)?;
        Some(self.routes.swap_remove(i).1)
    }

    fn lookup(&self, addr: u32) -> Option<u32> {
        self.routes
            .iter()
            .filter(|(q, _)| q.contains_u32(addr))
            .max_by_key(|(q, _)| q.len())
            .map(|&(_, v)| v)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Prefix, u32),
    /// Many routes at once: the bulk path of `Extend`.
    Extend(Vec<(Prefix, u32)>),
    Remove(Prefix),
    /// Remove the n-th route currently present (modulo their count).
    RemoveExisting(usize),
}

/// Addresses drawn from a few crowded regions so prefixes nest and collide often, plus
/// the two ends of the address space.
fn address() -> impl Strategy<Value = u32> {
    prop_oneof![
        (0u32..4, any::<u16>(), any::<u8>()).prop_map(|(hi, mid, lo)| (10 << 24)
            | (hi << 16)
            | (u32::from(mid & 0x0f03) << 4)
            | u32::from(lo & 0x7)),
        Just(0),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn prefix() -> impl Strategy<Value = Prefix> {
    (address(), 0u8..=32).prop_map(|(a, len)| Prefix::masked(a, len))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prefix(), any::<u32>()).prop_map(|(p, v)| Op::Insert(p, v)),
        1 => prefix().prop_map(Op::Remove),
        1 => prop::collection::vec((prefix(), 0u32..4), 64..160).prop_map(Op::Extend),
        2 => any::<usize>().prop_map(Op::RemoveExisting),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_a_naive_scan(ops in prop::collection::vec(op(), 1..120),
                            probes in prop::collection::vec(address(), 64)) {
        let mut fib = Fib::new();
        let mut naive = Naive::default();
        let mut snapshots = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Insert(p, v) => prop_assert_eq!(fib.insert(*p, *v), naive.insert(*p, *v)),
                Op::Remove(p) => prop_assert_eq!(fib.remove(p), naive.remove(p)),
                Op::Extend(routes) => {
                    fib.extend(routes.iter().copied());
                    for &(p, v) in routes {
                        naive.insert(p, v);
                    }
                }
                Op::RemoveExisting(n) => {
                    if !naive.routes.is_empty() {
                        let p = naive.routes[n % naive.routes.len()].0;
                        prop_assert_eq!(fib.remove(&p), naive.remove(&p));
                    }
                }
            }
            if step % 16 == 0 {
                snapshots.push((fib.clone(), naive.routes.clone()));
            }
        }
        prop_assert_eq!(fib.len(), naive.routes.len());

        // Probe random addresses and the edges of every route.
        let mut addrs = probes.clone();
        for (q, _) in &naive.routes {
            addrs.extend([q.addr_u32(), q.last_u32(), q.addr_u32().wrapping_sub(1), q.last_u32().wrapping_add(1)]);
        }
        for &a in &addrs {
            prop_assert_eq!(fib.lookup_u32(a).copied(), naive.lookup(a), "lookup {}", Ipv4Addr::from(a));
        }
        for (q, v) in &naive.routes {
            prop_assert_eq!(fib.get(q), Some(v));
        }

        let mut want = naive.routes.clone();
        want.sort();
        let got: Vec<(Prefix, u32)> = fib.iter().map(|(p, &v)| (p, v)).collect();
        prop_assert_eq!(got, want);

        // Earlier versions are untouched by everything applied after them.
        for (old, routes) in snapshots {
            let reference = Naive { routes };
            prop_assert_eq!(old.len(), reference.routes.len());
            for &a in &addrs {
                prop_assert_eq!(old.lookup_u32(a).copied(), reference.lookup(a));
            }
        }
    }
}

#[test]
fn readers_see_only_published_versions_while_a_writer_publishes() {
    const UPDATES: u32 = 10_000;
    // A /8 that is always present, routes churned inside it, and a /32 holding the
    // version number so readers can check versions never go backwards.
    let fixed = p("10.0.0.0/8");
    let version = p("192.0.2.1/32");
    let mut fib: Fib<u32> = Fib::new();
    fib.insert(fixed, 8);
    fib.insert(version, 0);
    let mut published = crate::rcu::Rcu::new(fib.clone());
    let done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2u32)
            .map(|r| {
                let mut reader = published.reader();
                let done = &done;
                s.spawn(move || {
                    let mut last_version = 0;
                    let mut lookups = 0u64;
                    let mut x = 0x9e37_79b9u32 ^ r;
                    while !done.load(Ordering::Acquire) {
                        // One version per batch, as the workers do.
                        let snapshot = reader.read();
                        let Some(&v) = snapshot.lookup_u32(0xc000_0201) else {
                            panic!("the version route vanished");
                        };
                        assert!(
                            v >= last_version,
                            "version went back from {last_version} to {v}"
                        );
                        last_version = v;
                        for _ in 0..64 {
                            x ^= x << 13;
                            x ^= x >> 17;
                            x ^= x << 5;
                            let addr = (10 << 24) | (x & 0x00ff_ffff);
                            match snapshot.lookup_u32(addr) {
                                // The /8 itself, or a churned route (values ≥ 100).
                                Some(&8) => {}
                                Some(&v) => assert!(v >= 100, "unexpected value {v}"),
                                None => panic!("{} fell through the /8", Ipv4Addr::from(addr)),
                            }
                            assert_eq!(snapshot.lookup_u32(0x0b00_0000 | (x & 0xffff)), None);
                        }
                        lookups += 65;
                        reader.quiesce();
                    }
                    (last_version, lookups)
                })
            })
            .collect();

        let mut churn = Vec::new();
        let mut x = 12345u32;
        for n in 1..=UPDATES {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = 17 + (x % 16) as u8;
            let route = Prefix::masked((10 << 24) | (x & 0x00ff_ffff), len);
            if churn.len() > 200 {
                let old: Prefix = churn.swap_remove((x as usize) % churn.len());
                fib.remove(&old);
            }
            fib.insert(route, 100 + n);
            churn.push(route);
            fib.insert(version, n);
            published.publish(fib.clone());
        }
        done.store(true, Ordering::Release);

        for reader in readers {
            match reader.join() {
                Ok((last, lookups)) => {
                    assert!(last <= UPDATES);
                    assert!(lookups > 0);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    assert!(published.synchronize(std::time::Duration::from_secs(5)));
    let last = published.current();
    assert_eq!(last.lookup(ip("192.0.2.1")), Some(&UPDATES));
    assert!(last.lookup(ip("10.255.255.255")).is_some());
}
