//! Changing a pool's encapsulation on a running cluster: while one TCP stream runs from a
//! pod on node1 to a pod on node2, both dataplanes are switched IPIP → VXLAN → none →
//! IPIP. The stream survives every switch and arrives byte for byte, and the counters
//! show that each phase's traffic really used that phase's encapsulation.
//!
//! The pods keep the MTU they were created with (1480, for IPIP). During the VXLAN phase
//! (path MTU 1450) the dataplane answers full-size segments with ICMP
//! fragmentation-needed and the pods' TCP lowers its segment size: existing pods keep
//! working, as the design promises.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use tapwire_integration::check::REACHABLE_WITHIN;
use tapwire_integration::traffic::wait_reachable;
use tapwire_integration::{skip_unless_root, tcp_transfer, Cluster, Counters, Lab, Mode, Transfer};

const PHASE: Duration = Duration::from_secs(5);
/// Each phase must carry at least this many packets of its encapsulation each way.
const MIN_PACKETS_PER_PHASE: u64 = 1000;

#[test]
fn a_running_stream_survives_ipip_vxlan_none_ipip() {
    if skip_unless_root("a_running_stream_survives_ipip_vxlan_none_ipip") {
        return;
    }
    let lab = Lab::new().unwrap();
    let mut cluster = Cluster::start(&lab, Mode::Ipip).unwrap();
    let (a, c) = cluster
        .reachable_pair("pod-a", "pod-c", REACHABLE_WITHIN)
        .unwrap();
    wait_reachable(&c, a.ip, REACHABLE_WITHIN).unwrap();

    let phases = [Mode::Ipip, Mode::Vxlan, Mode::None, Mode::Ipip];
    let stream_for = PHASE * phases.len() as u32 + Duration::from_secs(2);
    let (report, marks) = std::thread::scope(|scope| {
        let stream =
            scope.spawn(|| tcp_transfer(&a, &c, &Transfer::for_duration(stream_for, u64::MAX)));
        // Let the stream get going before the first mark.
        std::thread::sleep(Duration::from_millis(500));
        let mut marks: Vec<Vec<Counters>> = vec![cluster.counters().unwrap()];
        for (i, mode) in phases.iter().enumerate() {
            if i > 0 {
                cluster.switch_mode(*mode).unwrap();
            }
            std::thread::sleep(PHASE);
            marks.push(cluster.counters().unwrap());
        }
        (stream.join().expect("transfer thread panicked"), marks)
    });
    let report = report.unwrap();
    eprintln!("{report} across four modes");

    for (i, mode) in phases.iter().enumerate() {
        let node1 = marks[i + 1][0].since(&marks[i][0]);
        let node2 = marks[i + 1][1].since(&marks[i][1]);
        let tx = format!("encap.{}.tx_packets", mode.name());
        let rx = format!("encap.{}.rx_packets", mode.name());
        assert!(
            node1.get(&tx) >= MIN_PACKETS_PER_PHASE && node2.get(&rx) >= MIN_PACKETS_PER_PHASE,
            "phase {i} ({mode}): node1 {tx} = {}, node2 {rx} = {}\nnode1:\n{}\nnode2:\n{}",
            node1.get(&tx),
            node2.get(&rx),
            node1.nonzero(),
            node2.nonzero()
        );
        eprintln!(
            "phase {i} ({mode}): node1 sent {} {mode} packets, node2 received {}; \
             ICMP errors sent to pods: {}",
            node1.get(&tx),
            node2.get(&rx),
            node1.get("icmp.errors_sent")
        );
    }
    cluster.check_running().unwrap();
}
