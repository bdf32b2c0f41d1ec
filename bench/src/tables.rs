//! Route tables and lookup addresses for the LPM measurements, shared by the criterion
//! benches (`benches/fib.rs`) and `tapwire-bench`: a fixed-seed xorshift generator,
//! Internet-shaped prefix lengths, random tables, a pod-shaped (Calico IPAM) table, and
//! destinations drawn mostly from inside a table.
//!
//! Everything is deterministic: the same seed gives the same tables and addresses on every
//! run and machine, so two runs measure the same work. Nothing here measures anything.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use tapwire_dataplane::fib::Prefix;

/// xorshift64*: deterministic, dependency-free, good enough to scatter prefixes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; zero is made odd).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next 32 random bits (the high half of [`Rng::next_u64`]).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A value in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }
}

/// A prefix length drawn roughly like an Internet table: /24 dominates, then /22–/23,
/// /16–/21 and a tail of /25–/32.
pub fn real_world_len(rng: &mut Rng) -> u8 {
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

/// `n` distinct random prefixes with [`real_world_len`] lengths; the value of each is its
/// index in the returned vector.
pub fn random_routes(n: usize, rng: &mut Rng) -> Vec<(Prefix, u32)> {
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
/// 10.64.0.0/12 (about 5000 nodes with three blocks each; a block's value is its node),
/// this node owning the first two, plus a /32 for each of its 110 pods (values from
/// 100000).
pub fn pod_routes() -> Vec<(Prefix, u32)> {
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

/// `count` consecutive /26 blocks from `first` on (a big cluster's remote blocks, as
/// Felix sends them: one route per block). Stops early at the end of the address space.
pub fn block_prefixes(first: Ipv4Addr, count: usize) -> Vec<Prefix> {
    let start = u32::from(first) & !63;
    (0..count as u64)
        .map_while(|i| u32::try_from(u64::from(start) + i * 64).ok())
        .filter_map(|addr| Prefix::from_u32(addr, 26).ok())
        .collect()
}

/// `count` destinations to look up: mostly inside a route of `routes` (a forwarder mostly
/// sees routable traffic), one in eight anywhere.
pub fn destinations(routes: &[(Prefix, u32)], count: usize, rng: &mut Rng) -> Vec<u32> {
    (0..count)
        .map(|_| {
            if rng.below(8) == 0 || routes.is_empty() {
                return rng.next_u32();
            }
            let (prefix, _) = routes[rng.below(routes.len() as u32) as usize];
            prefix.addr_u32() | (rng.next_u32() & !prefix.mask_u32())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tables_are_distinct_deterministic_and_internet_shaped() {
        let a = random_routes(5000, &mut Rng::new(7));
        let b = random_routes(5000, &mut Rng::new(7));
        assert_eq!(a, b, "same seed, same table");
        let distinct: HashSet<Prefix> = a.iter().map(|(p, _)| *p).collect();
        assert_eq!(distinct.len(), 5000);
        let slash24 = a.iter().filter(|(p, _)| p.len() == 24).count();
        // 56 of 100 weight units: about 2800 of 5000.
        assert!((2500..3100).contains(&slash24), "{slash24} /24s");
    }

    #[test]
    fn destinations_mostly_fall_inside_the_table() {
        let routes = random_routes(1000, &mut Rng::new(3));
        let addrs = destinations(&routes, 4000, &mut Rng::new(4));
        let inside = addrs
            .iter()
            .filter(|&&a| routes.iter().any(|(p, _)| p.contains(Ipv4Addr::from(a))))
            .count();
        assert!(inside >= 3400, "{inside} of 4000 inside a route");
    }

    #[test]
    fn block_prefixes_are_consecutive_slash26() {
        let blocks = block_prefixes(Ipv4Addr::new(10, 128, 0, 0), 3);
        let text: Vec<String> = blocks.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["10.128.0.0/26", "10.128.0.64/26", "10.128.0.128/26"]);
        assert_eq!(
            block_prefixes(Ipv4Addr::new(255, 255, 255, 128), 5).len(),
            2
        );
    }
}
