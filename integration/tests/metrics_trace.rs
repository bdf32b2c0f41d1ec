//! Prometheus metrics and the packet trace, as an operator reads them (issue 13, item 3).
//!
//! Two nodes on IPIP run both daemons with a metrics endpoint on their namespace's
//! loopback (`--metrics-addr` for the dataplane, `metrics_addr` in node.toml for the
//! control); pod-a and pod-b are on node1, pod-c on node2, all added through the CNI
//! plugin.
//!
//! - Metrics: a plain `GET /metrics` before and after pods ping each other (on the node
//!   and across the tunnel) and ping an address of the pool that no block holds. The
//!   exposition parses as Prometheus reads it; pod-a's and pod-b's packet counters, IPIP's
//!   and the `no_route` drops moved by at least what was sent; the workers were busy; the
//!   control timed its CNI ADDs, IPAM assignments, datastore calls and the dataplane's
//!   sync. An address already in use stops a second dataplane at once, saying which.
//! - Trace: `tapwirectl trace --pod pod-a --count 4` while pod-a pings pod-b shows the
//!   echo's walk (received from pod-a, the /32 route to pod-b, delivered to pod-b, the
//!   counters touched) and exits after 4 packets, long before its timeout; on node2, the
//!   echo from pod-a arrives through IPIP from node1 and pod-c's reply is encapsulated
//!   back. A pod the node does not have is refused by name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use tapwire_integration::check::assert_pings;
use tapwire_integration::controlplane::{default_ipip_pool, POD_NAMESPACE};
use tapwire_integration::lab::binary;
use tapwire_integration::scrape::{http_get, Exposition, DATAPLANE_METRICS_ADDR};
use tapwire_integration::traffic::{ping, ping_start, wait_reachable};
use tapwire_integration::{skip_unless_root, ControlPlane, Daemon, Lab, Pod};

/// Inside the pool (10.65.0.0/16), in no block any node holds: `drop.no_route`.
const UNROUTED: Ipv4Addr = Ipv4Addr::new(10, 65, 255, 1);

/// The dataplane's name of a lab pod's endpoint.
fn endpoint(pod: &Pod) -> String {
    format!("k8s/{POD_NAMESPACE}/{}/eth0", pod.name)
}

/// node1 (pod-a, pod-b) and node2 (pod-c) serving metrics, IPIP pool.
fn cluster(lab: &Lab) -> (ControlPlane<'_>, [Pod; 3]) {
    let cp = ControlPlane::new(lab).unwrap().serving_metrics();
    cp.add_node("node1").unwrap();
    cp.add_node("node2").unwrap();
    cp.apply("node1", &default_ipip_pool()).unwrap();
    let pods = cp
        .add_pods([("node1", "pod-a"), ("node1", "pod-b"), ("node2", "pod-c")])
        .unwrap();
    let [a, b, c] = &pods;
    for (from, to) in [(a, b), (a, c)] {
        wait_reachable(from, to.ip, Duration::from_secs(15)).unwrap();
    }
    (cp, pods)
}

/// How much the series grew between two scrapes.
fn grew(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[test]
fn metrics_count_pod_traffic_drops_and_control_latencies() {
    if skip_unless_root("metrics_count_pod_traffic_drops_and_control_latencies") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, b, c]) = cluster(&lab);
    let before = cp.scrape("node1", Daemon::Dataplane).unwrap();

    assert_pings(&a, &b, 5);
    assert_pings(&a, &c, 5);
    let unrouted = ping(&a, UNROUTED, 3).unwrap();
    assert_eq!(unrouted.received, 0, "{}", unrouted.output);
    assert!(
        unrouted.output.contains("Destination Net Unreachable"),
        "{}",
        unrouted.output
    );

    let after = cp.scrape("node1", Daemon::Dataplane).unwrap();
    let (pa, pb) = (endpoint(&a), endpoint(&b));
    let packets = "tapwire_dataplane_endpoint_packets_total";
    for (ep, direction, least) in [
        // pod-a sent 10 echoes and 3 to nowhere, and got 10 replies.
        (&pa, "rx", 13.0),
        (&pa, "tx", 10.0),
        (&pb, "rx", 5.0),
        (&pb, "tx", 5.0),
    ] {
        let labels = [("endpoint", ep.as_str()), ("direction", direction)];
        let got = grew(&before, &after, packets, &labels);
        assert!(
            got >= least,
            "{packets}{labels:?} grew by {got}, expected at least {least}"
        );
        assert!(after.value(packets, &labels).is_some());
    }
    let bytes = grew(
        &before,
        &after,
        "tapwire_dataplane_endpoint_bytes_total",
        &[("endpoint", &pa), ("direction", "rx")],
    );
    assert!(bytes >= 13.0 * 84.0, "pod-a's rx bytes grew by {bytes}");
    for direction in ["tx", "rx"] {
        let labels = [("encapsulation", "ipip"), ("direction", direction)];
        let got = grew(
            &before,
            &after,
            "tapwire_dataplane_encap_packets_total",
            &labels,
        );
        assert!(got >= 5.0, "IPIP {direction} grew by {got}");
    }
    let no_route = grew(
        &before,
        &after,
        "tapwire_dataplane_drops_total",
        &[("reason", "no_route")],
    );
    assert_eq!(no_route, 3.0, "drops by reason no_route");
    let a_drops = grew(
        &before,
        &after,
        "tapwire_dataplane_endpoint_drops_total",
        &[("endpoint", &pa)],
    );
    // (Its other drops, an IPv6 or a gratuitous ARP frame, may add to them.)
    assert!(a_drops >= 3.0, "pod-a's drops grew by {a_drops}");
    assert!(
        grew(
            &before,
            &after,
            "tapwire_dataplane_icmp_errors_sent_total",
            &[]
        ) >= 3.0
    );
    // Every drop reason is a series, zeros too.
    let reasons = after
        .samples
        .iter()
        .filter(|s| s.name == "tapwire_dataplane_drops_total")
        .count();
    assert!(reasons >= 30, "{reasons} drop reasons exported");
    let busy = grew(
        &before,
        &after,
        "tapwire_dataplane_worker_busy_seconds_total",
        &[],
    );
    let batches = grew(
        &before,
        &after,
        "tapwire_dataplane_worker_batches_total",
        &[],
    );
    assert!(
        busy > 0.0 && batches >= 20.0,
        "busy {busy} s in {batches} batches"
    );
    assert!(after
        .value(
            "tapwire_dataplane_worker_busy_seconds_total",
            &[("worker", "1")]
        )
        .is_some());
    assert_eq!(
        after.value("tapwire_dataplane_endpoints", &[("state", "attached")]),
        Some(2.0)
    );
    assert_eq!(
        after.value("tapwire_dataplane_control_connected", &[]),
        Some(1.0)
    );

    // The control of node1 timed what it did for its two pods.
    let control = cp.scrape("node1", Daemon::Control).unwrap();
    let count = |name: &str, label: (&str, &str)| control.value(name, &[label]).unwrap_or(-1.0);
    assert_eq!(
        count(
            "tapwire_control_cni_request_seconds_count",
            ("command", "add")
        ),
        2.0
    );
    assert_eq!(
        count("tapwire_control_cni_errors_total", ("command", "add")),
        0.0
    );
    assert_eq!(
        count(
            "tapwire_control_ipam_operation_seconds_count",
            ("operation", "assign")
        ),
        2.0
    );
    for op in ["get", "list", "create", "update"] {
        let n = count(
            "tapwire_control_datastore_operation_seconds_count",
            ("operation", op),
        );
        assert!(n >= 1.0, "datastore {op}: {n} calls timed");
    }
    assert!(
        count(
            "tapwire_control_sync_seconds_count",
            ("stage", "snapshot_in_sync")
        ) >= 1.0
    );
    assert!(count("tapwire_control_sync_seconds_count", ("stage", "diff_sent")) >= 1.0);
    assert!(
        control
            .value("tapwire_control_sync_messages_total", &[])
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        control.value("tapwire_control_dataplane_in_sync", &[]),
        Some(1.0)
    );
    assert_eq!(
        control.types["tapwire_control_cni_request_seconds"],
        "histogram"
    );

    // A scraper that asks for OpenMetrics gets it.
    let node1 = cp.node("node1").unwrap();
    let open = http_get(
        node1.netns(),
        DATAPLANE_METRICS_ADDR,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .unwrap();
    assert_eq!(open.status, 200);
    assert!(open.headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);
    assert_eq!(
        http_get(node1.netns(), DATAPLANE_METRICS_ADDR, "/other", None)
            .unwrap()
            .status,
        404
    );

    // The address is taken: a second dataplane (another socket) stops at once, saying so.
    let socket = lab.dir().join("second.sock").display().to_string();
    let bin = binary("tapwire-dataplane").unwrap().display().to_string();
    let cmd = node1.netns().command(&[
        &bin,
        "--socket",
        &socket,
        "--underlay-interface",
        "eth0",
        "--metrics-addr",
        DATAPLANE_METRICS_ADDR,
    ]);
    let second = lab.run(cmd, None, Duration::from_secs(10)).unwrap();
    assert!(!second.status.success());
    assert!(
        second.stderr.contains(&format!(
            "metrics address {DATAPLANE_METRICS_ADDR}: Address already in use"
        )),
        "{}",
        second.stderr
    );
    cp.check_running().unwrap();
}

/// The blocks of `trace`'s output, one per packet.
fn packets(trace: &str) -> Vec<&str> {
    trace
        .split("\n\n")
        .filter(|block| block.starts_with("Packet "))
        .collect()
}

/// The first block of `trace`'s output that shows `needle`.
#[track_caller]
fn packet_showing<'t>(trace: &'t str, needle: &str) -> &'t str {
    packets(trace)
        .into_iter()
        .find(|block| block.contains(needle))
        .unwrap_or_else(|| panic!("no packet shows {needle:?} in:\n{trace}"))
}

#[test]
fn trace_shows_the_echo_walk_and_stops_after_count_packets() {
    if skip_unless_root("trace_shows_the_echo_walk_and_stops_after_count_packets") {
        return;
    }
    let lab = Lab::new().unwrap();
    let (cp, [a, b, c]) = cluster(&lab);
    let (pa, pb, pc) = (endpoint(&a), endpoint(&b), endpoint(&c));

    // pod-a pings pod-b every 50 ms while node1 traces pod-a's next 4 packets.
    let pinging = ping_start(&a, b.ip, 100, Duration::from_millis(50)).unwrap();
    let started = Instant::now();
    let out = cp
        .ctl("node1")
        .unwrap()
        .run(&["trace", "--pod", "pod-a", "--count", "4", "--timeout", "20"])
        .unwrap();
    let took = started.elapsed();
    pinging.finish().unwrap();
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    eprintln!(
        "tapwirectl trace --pod pod-a --count 4 ({took:.1?}):\n{}",
        out.stdout
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(packets(&out.stdout).len(), 4, "{}", out.stdout);
    assert!(
        out.stdout.ends_with(&format!(
            "4 packets traced (all asked for), from or to {pa}.\n"
        )),
        "{}",
        out.stdout
    );
    let request = packet_showing(
        &out.stdout,
        &format!("{} -> {} ICMP echo request", a.ip, b.ip),
    );
    for line in [
        format!("  received  pod {pa}\n"),
        format!("  route     {}/32 -> pod {pb}\n", b.ip),
        format!("  action    deliver to pod {pb}\n"),
        format!("  counters  endpoint.{pa}.rx_packets, endpoint.{pa}.rx_bytes, endpoint.{pb}.tx_packets"),
    ] {
        assert!(request.contains(&line), "{line:?} not in:\n{request}");
    }
    let reply = packet_showing(
        &out.stdout,
        &format!("{} -> {} ICMP echo reply", b.ip, a.ip),
    );
    assert!(
        reply.contains(&format!("  received  pod {pb}\n")),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("  action    deliver to pod {pa}\n")),
        "{reply}"
    );

    // On node2, pod-a's echo comes out of the IPIP tunnel from node1 and pod-c's reply
    // goes back into it.
    let node1 = cp.node("node1").unwrap();
    let pinging = ping_start(&a, c.ip, 100, Duration::from_millis(50)).unwrap();
    let out = cp
        .ctl("node2")
        .unwrap()
        .run(&[
            "trace",
            "--pod",
            "default/pod-c",
            "--count",
            "4",
            "--timeout",
            "20",
        ])
        .unwrap();
    pinging.finish().unwrap();
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    eprintln!("tapwirectl trace on node2:\n{}", out.stdout);
    let from_node1 = format!("node node1 ({})", node1.underlay_ip);
    assert_eq!(packets(&out.stdout).len(), 4, "{}", out.stdout);
    let arrived = packet_showing(&out.stdout, "ICMP echo request");
    assert!(
        arrived.contains(&format!("  received  underlay IPIP from {from_node1}\n")),
        "{arrived}"
    );
    assert!(
        arrived.contains(&format!("  action    deliver to pod {pc}\n")),
        "{arrived}"
    );
    assert!(arrived.contains("encap.ipip.rx_packets"), "{arrived}");
    let answered = packet_showing(&out.stdout, "ICMP echo reply");
    assert!(
        answered.contains(&format!(
            "  action    encapsulate in IPIP to {from_node1}\n"
        )),
        "{answered}"
    );

    // A pod the node does not have.
    let out = cp
        .ctl("node1")
        .unwrap()
        .run(&["trace", "--pod", "pod-c", "--timeout", "5"])
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no pod \"pod-c\" on node node1"),
        "{}",
        out.stderr
    );
}
