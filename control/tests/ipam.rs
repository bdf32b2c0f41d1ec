//! IPAM under the conditions CNI puts it in: many ADDs and DELs at once on several nodes,
//! each node's control (or each CNI invocation) with its own view of one shared file
//! store — as threads with separate store instances, and as separate processes. After
//! every run: no address was handed out twice, and once everything is released no block,
//! affinity or handle is left behind.
// clippy.toml allows unwrap/expect in #[test] fns; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use ipnet::Ipv4Net;
use tapwire_control::datastore::{Datastore, DatastoreExt, FileStore};
use tapwire_control::ipam::{Ipam, IpamError};
use tapwire_control::model::{BlockAffinity, IpPool, IpamBlock, IpamHandle, Resource};

const NODES: [&str; 2] = ["node-a", "node-b"];
const THREADS_PER_NODE: usize = 4;
const PODS: usize = 50;
const POOL: &str = "10.65.0.0/16";

fn store_with_pool(dir: &Path, block_size: u8) -> FileStore {
    let store = FileStore::open(dir).unwrap();
    let mut pool = IpPool::new("default-ipv4-ippool", POOL.parse().unwrap());
    pool.spec.block_size = block_size;
    store.create_as(&pool).unwrap();
    store
}

/// Pod `i` runs on node `i % 2`, handled by worker `(i / 2) % THREADS_PER_NODE` of it.
fn pods_of(node: usize, worker: usize) -> Vec<usize> {
    (0..PODS)
        .filter(|i| i % NODES.len() == node && (i / NODES.len()) % THREADS_PER_NODE == worker)
        .collect()
}

fn handle(pod: usize) -> String {
    format!("k8s-pod-network.pod{pod:03}")
}

/// Runs `op` on every (node, worker) at once, each with its own store instance.
fn on_all_workers<T: Send + 'static>(
    dir: &Path,
    op: impl Fn(&Ipam<'_>, &'static str, Vec<usize>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let workers = NODES.len() * THREADS_PER_NODE;
    let barrier = Arc::new(Barrier::new(workers));
    let op = Arc::new(op);
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (node, worker) = (w / THREADS_PER_NODE, w % THREADS_PER_NODE);
            let dir = dir.to_path_buf();
            let barrier = Arc::clone(&barrier);
            let op = Arc::clone(&op);
            thread::spawn(move || {
                let store = FileStore::open(dir).unwrap();
                let ipam = Ipam::new(&store);
                barrier.wait();
                op(&ipam, NODES[node], pods_of(node, worker))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Checks the store's IPAM documents against each other and returns every allocation
/// (address → (node, handle)).
fn check_consistent(store: &dyn Datastore) -> BTreeMap<Ipv4Addr, (String, String)> {
    let blocks = store.list_as::<IpamBlock>().unwrap().items;
    let affinities = store.list_as::<BlockAffinity>().unwrap().items;
    let handles = store.list_as::<IpamHandle>().unwrap().items;
    let mut allocations = BTreeMap::new();
    for block in &blocks {
        let node = block
            .node()
            .expect("every block is affine to a node")
            .to_string();
        assert!(
            !block.spec.allocations.is_empty(),
            "empty block {} left",
            block.spec.cidr
        );
        assert!(
            affinities
                .iter()
                .any(|a| a.spec.node == node && a.spec.cidr == block.spec.cidr),
            "block {} has no affinity",
            block.spec.cidr
        );
        for (&ordinal, h) in &block.spec.allocations {
            let addr = block.address(ordinal).unwrap();
            let previous = allocations.insert(addr, (node.clone(), h.clone()));
            assert!(previous.is_none(), "{addr} allocated twice");
        }
    }
    assert_eq!(
        affinities.len(),
        blocks.len(),
        "an affinity without a block"
    );
    assert_eq!(
        handles.len(),
        allocations.len(),
        "handles and allocations differ"
    );
    for h in &handles {
        assert_eq!(
            allocations
                .get(&h.spec.address)
                .map(|(_, name)| name.as_str()),
            Some(h.spec.handle_id.as_str()),
            "handle {} does not match its block",
            h.spec.handle_id
        );
    }
    // Blocks never overlap.
    let cidrs: Vec<Ipv4Net> = blocks.iter().map(|b| b.spec.cidr).collect();
    for (i, a) in cidrs.iter().enumerate() {
        for b in &cidrs[i + 1..] {
            assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
        }
    }
    allocations
}

fn assert_empty(store: &dyn Datastore) {
    assert!(
        store.list_as::<IpamBlock>().unwrap().items.is_empty(),
        "blocks leaked"
    );
    assert!(
        store.list_as::<BlockAffinity>().unwrap().items.is_empty(),
        "affinities leaked"
    );
    assert!(
        store.list_as::<IpamHandle>().unwrap().items.is_empty(),
        "handles leaked"
    );
}

/// 50 concurrent ADDs, then 50 concurrent DELs, on two nodes.
fn adds_then_dels(block_size: u8) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_pool(dir.path(), block_size);
    let pool: Ipv4Net = POOL.parse().unwrap();

    let start = Instant::now();
    let assigned: Vec<(String, usize, Ipv4Addr)> =
        on_all_workers(dir.path(), |ipam, node, pods| {
            pods.into_iter()
                .map(|pod| {
                    (
                        node.to_string(),
                        pod,
                        ipam.assign(node, &handle(pod)).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect();
    let add_time = start.elapsed();

    assert_eq!(assigned.len(), PODS);
    let distinct: BTreeSet<Ipv4Addr> = assigned.iter().map(|(_, _, a)| *a).collect();
    assert_eq!(distinct.len(), PODS, "an address was handed out twice");
    let allocations = check_consistent(&store);
    assert_eq!(allocations.len(), PODS);
    for (node, pod, addr) in &assigned {
        assert!(pool.contains(addr), "{addr} is outside the pool");
        assert_eq!(
            allocations.get(addr),
            Some(&(node.clone(), handle(*pod))),
            "{addr} is not in a block of {node}"
        );
    }
    // ADD is idempotent: asking again gives the same address.
    let ipam = Ipam::new(&store);
    let (node, pod, addr) = &assigned[0];
    assert_eq!(ipam.assign(node, &handle(*pod)).unwrap(), *addr);

    let start = Instant::now();
    let released: Vec<(usize, Option<Ipv4Addr>)> = on_all_workers(dir.path(), |ipam, _, pods| {
        pods.into_iter()
            .map(|pod| (pod, ipam.release(&handle(pod)).unwrap()))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let del_time = start.elapsed();

    let by_pod: BTreeMap<usize, Ipv4Addr> = assigned.iter().map(|(_, p, a)| (*p, *a)).collect();
    for (pod, addr) in released {
        assert_eq!(
            addr,
            Some(by_pod[&pod]),
            "pod {pod} released the wrong address"
        );
    }
    assert_empty(&store);
    // DEL is idempotent.
    assert_eq!(ipam.release(&handle(0)).unwrap(), None);
    eprintln!("/{block_size} blocks: {PODS} concurrent ADDs in {add_time:?}, DELs in {del_time:?}");
}

#[test]
fn fifty_concurrent_adds_then_dels_on_two_nodes() {
    adds_then_dels(26);
}

#[test]
fn fifty_concurrent_adds_then_dels_claiming_and_releasing_many_small_blocks() {
    // 8 addresses per block: each node claims and later frees several blocks while its
    // neighbours do the same.
    adds_then_dels(29);
}

#[test]
fn adds_and_dels_interleaved_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_pool(dir.path(), 30);
    let results = on_all_workers(dir.path(), |ipam, node, pods| {
        let mut held: Vec<(usize, Ipv4Addr)> = Vec::new();
        let mut seen = Vec::new();
        for pod in pods {
            let addr = ipam.assign(node, &handle(pod)).unwrap();
            seen.push(addr);
            held.push((pod, addr));
            // Release every other pod right away, so blocks fill and empty while others
            // claim.
            if pod % 4 < 2 {
                let (p, a) = held.remove(0);
                assert_eq!(ipam.release(&handle(p)).unwrap(), Some(a));
            }
        }
        (held, seen)
    });
    // No two pods held the same address at the same time: everything still held is
    // distinct, and the store agrees.
    let held: Vec<(usize, Ipv4Addr)> = results.iter().flat_map(|(h, _)| h.clone()).collect();
    let distinct: BTreeSet<Ipv4Addr> = held.iter().map(|(_, a)| *a).collect();
    assert_eq!(distinct.len(), held.len());
    let allocations = check_consistent(&store);
    assert_eq!(allocations.len(), held.len());
    let ipam = Ipam::new(&store);
    for (pod, addr) in held {
        assert_eq!(ipam.release(&handle(pod)).unwrap(), Some(addr));
    }
    assert_empty(&store);
}

#[test]
fn concurrent_adds_of_one_handle_agree_on_one_address() {
    // A runtime retrying an ADD while the first is still running, on every worker at once,
    // for several pods in a row (so some rounds claim a block and some fill one).
    const ROUNDS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_pool(dir.path(), 29);
    let got = on_all_workers(dir.path(), |ipam, _, _| {
        (0..ROUNDS)
            .map(|round| ipam.assign("node-a", &handle(round)).unwrap())
            .collect::<Vec<_>>()
    });
    for round in 0..ROUNDS {
        let distinct: BTreeSet<Ipv4Addr> = got.iter().map(|worker| worker[round]).collect();
        assert_eq!(
            distinct.len(),
            1,
            "pod {round}: one handle, one address: {distinct:?}"
        );
    }
    let allocations = check_consistent(&store);
    assert_eq!(
        allocations.len(),
        ROUNDS,
        "no second allocation left behind"
    );
    let ipam = Ipam::new(&store);
    for (round, addr) in got[0].iter().enumerate() {
        assert_eq!(ipam.release(&handle(round)).unwrap(), Some(*addr));
    }
    assert_empty(&store);
}

#[test]
fn an_exhausted_pool_fails_cleanly_and_recovers_after_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut pool = IpPool::new("small", "10.65.0.0/29".parse().unwrap());
    pool.spec.block_size = 30;
    store.create_as(&pool).unwrap();
    let ipam = Ipam::new(&store);
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(ipam.assign("node-a", &handle(i)).unwrap());
    }
    for i in 4..8 {
        got.push(ipam.assign("node-b", &handle(i)).unwrap());
    }
    let before = store.revision().unwrap();
    let err = ipam.assign("node-a", &handle(8)).unwrap_err();
    assert!(matches!(err, IpamError::ExhaustedPool { .. }), "{err}");
    assert!(err.to_string().contains("no free address"), "{err}");
    assert_eq!(
        store.revision().unwrap(),
        before,
        "a failed ADD writes nothing"
    );
    check_consistent(&store);
    // node-a cannot take node-b's addresses, but gets its own back after a DEL.
    assert_eq!(ipam.release(&handle(1)).unwrap(), Some(got[1]));
    assert_eq!(ipam.assign("node-a", &handle(8)).unwrap(), got[1]);
}

// --- Separate processes -----------------------------------------------------------------

/// When set, [`ipam_child_process`] runs one IPAM worker: `dir|node|op|first|count`.
const CHILD_ENV: &str = "TAPWIRE_IPAM_TEST_CHILD";

/// The body of a child process spawned by
/// [`separate_processes_on_two_nodes_never_share_an_address`]; does nothing otherwise.
#[test]
fn ipam_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [dir, node, op, first, count] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let (first, count): (usize, usize) = (first.parse().unwrap(), count.parse().unwrap());
    let store = FileStore::open(dir).unwrap();
    let ipam = Ipam::new(&store);
    for pod in first..first + count {
        match op {
            "assign" => println!("ADDR {pod} {}", ipam.assign(node, &handle(pod)).unwrap()),
            "release" => {
                let addr = ipam.release(&handle(pod)).unwrap().unwrap();
                println!("ADDR {pod} {addr}");
            }
            other => panic!("unknown op {other}"),
        }
    }
}

/// Runs one child per (node, share) at once; returns pod → address as they printed it.
fn run_children(dir: &Path, op: &str) -> BTreeMap<usize, Ipv4Addr> {
    let exe = std::env::current_exe().unwrap();
    let shares = [(0, 13), (13, 12), (25, 13), (38, 12)];
    let children: Vec<_> = shares
        .iter()
        .enumerate()
        .map(|(i, (first, count))| {
            let node = NODES[i / 2];
            let spec = format!("{}|{node}|{op}|{first}|{count}", dir.display());
            Command::new(&exe)
                .args([
                    "ipam_child_process",
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, spec)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut out = BTreeMap::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The harness may print "test ipam_child_process ... " on the same line first.
        for line in stdout
            .lines()
            .filter_map(|l| l.split_once("ADDR ").map(|(_, rest)| rest))
        {
            let (pod, addr) = line.split_once(' ').unwrap();
            let previous = out.insert(pod.parse().unwrap(), addr.parse().unwrap());
            assert!(previous.is_none(), "pod {pod} reported twice");
        }
    }
    out
}

#[test]
fn separate_processes_on_two_nodes_never_share_an_address() {
    let scratch = tempfile::tempdir().unwrap();
    let dir: PathBuf = scratch.path().to_path_buf();
    let store = store_with_pool(&dir, 28);
    let assigned = run_children(&dir, "assign");
    assert_eq!(assigned.len(), PODS);
    let distinct: BTreeSet<&Ipv4Addr> = assigned.values().collect();
    assert_eq!(distinct.len(), PODS, "an address was handed out twice");
    let allocations = check_consistent(&store);
    for (pod, addr) in &assigned {
        let node = if *pod < 25 { "node-a" } else { "node-b" };
        assert_eq!(
            allocations.get(addr),
            Some(&(node.to_string(), handle(*pod)))
        );
    }
    let released = run_children(&dir, "release");
    assert_eq!(
        released, assigned,
        "each DEL released the address its ADD got"
    );
    assert_empty(&store);
}

#[test]
fn a_damaged_block_keeps_its_range_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_pool(dir.path(), 26);
    let ipam = Ipam::new(&store);
    assert_eq!(
        ipam.assign("node-a", "h0").unwrap(),
        Ipv4Addr::new(10, 65, 0, 0)
    );
    // The block's file is damaged: its allocations cannot be read any more.
    std::fs::write(dir.path().join("IPAMBlock/10-65-0-0-26.json"), b"not json").unwrap();
    // Nothing of its range is handed out again, and assign does not loop on it.
    let started = Instant::now();
    let next = ipam.assign("node-a", "h1").unwrap();
    assert_eq!(next, Ipv4Addr::new(10, 65, 0, 64));
    let other = ipam.assign("node-b", "h2").unwrap();
    assert_eq!(other, Ipv4Addr::new(10, 65, 0, 128));
    assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
    // Releasing the other handles works; the damaged block is reported by repair.
    assert_eq!(ipam.release("h1").unwrap(), Some(next));
    let report = ipam.repair().unwrap();
    assert!(
        report.unresolved.iter().any(|u| u.contains("10-65-0-0-26")),
        "{report:?}"
    );
}

#[test]
fn a_deleted_block_file_never_leads_to_a_duplicate_address() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_pool(dir.path(), 26);
    let ipam = Ipam::new(&store);
    let first: Vec<Ipv4Addr> = (0..3)
        .map(|i| ipam.assign("node-a", &handle(i)).unwrap())
        .collect();
    std::fs::remove_file(dir.path().join("IPAMBlock/10-65-0-0-26.json")).unwrap();
    // The next ADDs, on this node and another, take nothing in use.
    let a = ipam.assign("node-a", &handle(3)).unwrap();
    let b = ipam.assign("node-b", &handle(4)).unwrap();
    assert!(!first.contains(&a) && !first.contains(&b), "{a} {b}");
    // Repair writes the block again from its handles (its affinity names the node).
    let report = ipam.repair().unwrap();
    assert_eq!(report.blocks_rebuilt, 1, "{report:?}");
    for (i, want) in first.iter().enumerate() {
        assert_eq!(ipam.lookup(&handle(i)).unwrap(), Some(*want));
    }
    let blocks = ipam.blocks_of("node-a").unwrap();
    assert!(
        blocks.iter().any(|b| b.name() == "10-65-0-0-26"),
        "{blocks:?}"
    );
}
