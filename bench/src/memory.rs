//! The dataplane's memory under load: one `tapwire-dataplane --workers N` in a lab node,
//! given pods (persistent multi-queue TAPs) and a large route table straight over its
//! control socket — the lab plays Felix, as [`tapwire_integration::Cluster`] does — then
//! its resident set (`VmRSS`) once everything is applied. A test of the forwarder's
//! memory, not of the control plane.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tapwire_integration::desired::{self, Mode};
use tapwire_integration::Lab;

use crate::error::{BenchError, Result};
use crate::labs::POD_MTU;
use crate::procfs::process_rss_bytes;
use crate::report::DataplaneMemory;
use crate::tables::block_prefixes;

/// Where the synthetic cluster's remote blocks start (outside the lab pool 10.65.0.0/16).
const REMOTE_BLOCKS_FROM: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);
/// How long the dataplane may take to apply the whole state.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts a dataplane with `workers` workers on a fresh node of `lab`, gives it `pods`
/// pods of its own and `routes` remote /26 blocks (all behind a second node, VXLAN), waits
/// until it is in sync with every endpoint up, and reads its RSS.
pub fn dataplane_rss(
    lab: &Lab,
    workers: usize,
    pods: usize,
    routes: usize,
    progress: &mut dyn FnMut(String),
) -> Result<DataplaneMemory> {
    if pods > 200 {
        return Err(BenchError::Invalid(format!(
            "{pods} pods: at most 200 fit the node's addresses here"
        )));
    }
    let own = lab.add_node("mem1")?;
    let peer = lab.add_node("mem2")?;
    let mut pod_list = Vec::with_capacity(pods);
    for i in 0..pods {
        let host = u8::try_from(i + 2)
            .map_err(|_| BenchError::Invalid(format!("pod {i} has no address")))?;
        pod_list.push(lab.add_pod(&own, &format!("m{i}"), own.pod_ip(host), POD_MTU)?);
    }
    progress(format!(
        "{pods} pods (TAPs) created; starting tapwire-dataplane --workers {workers}"
    ));
    let mut dataplane = lab.start_dataplane(&own, workers)?;
    let pid = dataplane.pid();
    // Let the process settle (threads started, allocator warmed).
    std::thread::sleep(Duration::from_millis(200));
    let rss_empty_bytes = process_rss_bytes(pid)?;

    let nodes = [own.clone(), peer.clone()];
    let mut messages = desired::snapshot(&own, &nodes, &pod_list, Mode::Vxlan);
    // The snapshot ends with InSync: the synthetic routes go before it.
    let in_sync = messages.pop();
    let blocks = block_prefixes(REMOTE_BLOCKS_FROM, routes);
    if blocks.len() != routes {
        return Err(BenchError::Invalid(format!(
            "only {} /26 blocks fit from {REMOTE_BLOCKS_FROM} on",
            blocks.len()
        )));
    }
    messages.extend(
        blocks
            .iter()
            .map(|block| desired::route_to(&own, &peer, &block.to_string(), Mode::Vxlan)),
    );
    messages.extend(in_sync);

    let started = Instant::now();
    let control = dataplane.control()?;
    control.send_all(messages)?;
    control.wait_in_sync(APPLY_TIMEOUT)?;
    for pod in &pod_list {
        control.wait_endpoint_status(&desired::endpoint_key(pod), "up", APPLY_TIMEOUT)?;
    }
    // A counters round trip after the last update: everything before it was applied.
    dataplane.counters()?;
    let apply_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    dataplane.counters()?;
    // The peak of a few samples: tables are rebuilt and published asynchronously.
    let mut rss_bytes = 0;
    for _ in 0..5 {
        rss_bytes = rss_bytes.max(process_rss_bytes(pid)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    dataplane.check_running()?;
    Ok(DataplaneMemory {
        workers,
        pods,
        routes,
        rss_bytes,
        rss_empty_bytes,
        apply_s,
    })
}
