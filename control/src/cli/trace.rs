//! `tapwirectl trace`: each traced packet as VPP's `show trace` lays one out, one block per
//! packet, then a line saying how the trace ended:
//!
//! ```text
//! Packet 1  worker 0  +0.000 ms
//!   received  pod k8s/default/pod-a/eth0
//!   parsed    IPv4 10.65.1.2 -> 10.65.1.3 ICMP echo request id 17 seq 1, ttl 64, 84 bytes (frame 98)
//!   route     10.65.1.3/32 -> pod k8s/default/pod-b/eth0
//!   action    deliver to pod k8s/default/pod-b/eth0
//!   counters  endpoint.k8s/default/pod-a/eth0.rx_packets, endpoint.k8s/default/pod-a/eth0.rx_bytes, …
//!
//! 1 packet traced (all asked for).
//! ```

use std::fmt::Write;

use tapwire_proto::{TraceAction, TraceIngress, TracePacket, TraceRecord, TraceRoute};

use crate::api::TraceReport;

/// The whole report.
pub fn format_trace(report: &TraceReport) -> String {
    let mut out = String::new();
    for record in &report.records {
        out.push_str(&format_record(record));
        out.push('\n');
    }
    let n = report.records.len();
    let packets = if n == 1 { "packet" } else { "packets" };
    let ended = match report.ended.as_str() {
        "complete" => "all asked for".to_string(),
        "timeout" => format!("{} asked for; the time ran out", report.count),
        "replaced" => "a newer trace on this node took over".to_string(),
        "disconnected" => "the dataplane went away".to_string(),
        other => other.to_string(),
    };
    let _ = write!(out, "{n} {packets} traced ({ended})");
    if let Some(endpoint) = &report.endpoint {
        let _ = write!(out, ", from or to {endpoint}");
    }
    out.push_str(".\n");
    if report.dropped > 0 {
        let _ = writeln!(
            out,
            "{} more were traced but their records were lost (the dataplane's trace buffer was full).",
            report.dropped
        );
    }
    out
}

/// One packet's block.
pub fn format_record(record: &TraceRecord) -> String {
    let mut out = format!(
        "Packet {}  worker {}  +{}.{:03} ms\n",
        record.index,
        record.worker,
        record.elapsed_us / 1000,
        record.elapsed_us % 1000
    );
    let mut line = |what: &str, text: String| {
        let _ = writeln!(out, "  {what:<9} {text}");
    };
    if let Some(ingress) = &record.ingress {
        line("received", received(ingress));
    }
    if let Some(packet) = &record.packet {
        line("parsed", parsed(packet));
    }
    if let Some(route) = &record.route {
        line("route", route_line(route));
    }
    if let Some(action) = &record.action {
        line("action", action_line(action));
    }
    if !record.counters.is_empty() {
        line("counters", record.counters.join(", "));
    }
    out
}

/// `node node-b (192.168.0.2)`, or the address alone for a sender that is no known node.
fn node(name: &str, ip: &str) -> String {
    match (name.is_empty(), ip.is_empty()) {
        (false, false) => format!("node {name} ({ip})"),
        (false, true) => format!("node {name}"),
        (true, false) => format!("{ip} (no known node)"),
        (true, true) => "an unknown node".into(),
    }
}

fn received(ingress: &TraceIngress) -> String {
    match ingress.kind.as_str() {
        "pod" => format!("pod {}", ingress.endpoint),
        "host" => "host path (the node's kernel)".into(),
        "vxlan" => format!(
            "underlay VXLAN from {}",
            node(&ingress.peer_node, &ingress.peer_ip)
        ),
        "ipip" => format!(
            "underlay IPIP from {}",
            node(&ingress.peer_node, &ingress.peer_ip)
        ),
        "underlay" => "underlay packet socket (unencapsulated)".into(),
        other => other.into(),
    }
}

fn icmp(packet: &TracePacket) -> String {
    let echo = |what: &str| format!("{what} id {} seq {}", packet.icmp_id, packet.icmp_seq);
    match (packet.icmp_type, packet.icmp_code) {
        (0, _) => echo("echo reply"),
        (8, _) => echo("echo request"),
        (3, 0) => "net unreachable".into(),
        (3, 1) => "host unreachable".into(),
        (3, 3) => "port unreachable".into(),
        (3, 4) => "fragmentation needed".into(),
        (11, _) => "time exceeded".into(),
        (kind, code) => format!("type {kind} code {code}"),
    }
}

fn parsed(p: &TracePacket) -> String {
    let mut text = if p.ipv4 {
        let (src, dst) = match p.protocol {
            6 | 17 => (
                format!("{}:{}", p.src, p.src_port),
                format!("{}:{}", p.dst, p.dst_port),
            ),
            _ => (p.src.clone(), p.dst.clone()),
        };
        let protocol = match p.protocol {
            1 => format!("ICMP {}", icmp(p)),
            6 => "TCP".into(),
            17 => "UDP".into(),
            n => format!("protocol {n}"),
        };
        format!(
            "IPv4 {src} -> {dst} {protocol}, ttl {}, {} bytes",
            p.ttl, p.ip_bytes
        )
    } else if p.arp_operation != 0 {
        match p.arp_operation {
            1 => format!("ARP request who-has {} tell {}", p.dst, p.src),
            2 => format!("ARP reply {} to {}", p.src, p.dst),
            op => format!("ARP operation {op} from {} to {}", p.src, p.dst),
        }
    } else if p.ethertype != 0 {
        format!("ethertype 0x{:04x}, {} bytes", p.ethertype, p.frame_bytes)
    } else {
        format!("not parsed, {} bytes", p.frame_bytes)
    };
    if (p.ipv4 || p.arp_operation != 0) && p.ethertype != 0 {
        let _ = write!(text, " (frame {})", p.frame_bytes);
    }
    if p.gso_size != 0 {
        let _ = write!(
            text,
            ", GSO super-frame: {} segments of {}",
            p.segments, p.gso_size
        );
    }
    text
}

/// `none` → `unencapsulated`, `ipip` → `IPIP`, `vxlan` → `VXLAN`.
fn encap(name: &str) -> String {
    match name {
        "none" | "" => "unencapsulated".into(),
        other => other.to_ascii_uppercase(),
    }
}

fn route_line(route: &TraceRoute) -> String {
    let target = match route.target.as_str() {
        "none" => return "no route".into(),
        "local" => format!("pod {}", route.endpoint),
        "remote" => format!(
            "{}, {}",
            node(&route.peer_node, &route.peer_ip),
            encap(&route.encap)
        ),
        "blackhole" => "blackhole (this node's block, no pod there)".into(),
        "unrouted" => "unrouted (in a pool, in no block)".into(),
        "host" => "host path (the node's kernel)".into(),
        other => other.into(),
    };
    format!("{} -> {target}", route.prefix)
}

fn action_line(action: &TraceAction) -> String {
    match action.kind.as_str() {
        "deliver" => format!("deliver to pod {}", action.endpoint),
        "encapsulate" if action.encap == "none" => format!(
            "send unencapsulated to {}",
            node(&action.peer_node, &action.peer_ip)
        ),
        "encapsulate" => format!(
            "encapsulate in {} to {}",
            encap(&action.encap),
            node(&action.peer_node, &action.peer_ip)
        ),
        "host" => "to the host path (the node's kernel)".into(),
        "reply" => "ARP reply with the gateway's MAC, on the same queue".into(),
        "drop" if action.icmp_error => {
            format!("drop ({}), ICMP error sent back", action.drop_reason)
        }
        "drop" => format!("drop ({})", action.drop_reason),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_from_a() -> TraceRecord {
        TraceRecord {
            trace_id: 3,
            index: 1,
            worker: 0,
            elapsed_us: 1234,
            ingress: Some(TraceIngress {
                kind: "pod".into(),
                endpoint: "k8s/default/pod-a/eth0".into(),
                ..Default::default()
            }),
            packet: Some(TracePacket {
                ethertype: 0x0800,
                frame_bytes: 98,
                src: "10.65.1.2".into(),
                dst: "10.65.1.3".into(),
                protocol: 1,
                ttl: 64,
                ip_bytes: 84,
                icmp_type: 8,
                icmp_id: 17,
                icmp_seq: 1,
                ipv4: true,
                ..Default::default()
            }),
            route: Some(TraceRoute {
                prefix: "10.65.1.3/32".into(),
                target: "local".into(),
                endpoint: "k8s/default/pod-b/eth0".into(),
                ..Default::default()
            }),
            action: Some(TraceAction {
                kind: "deliver".into(),
                endpoint: "k8s/default/pod-b/eth0".into(),
                ..Default::default()
            }),
            counters: vec![
                "endpoint.k8s/default/pod-a/eth0.rx_packets".into(),
                "endpoint.k8s/default/pod-b/eth0.tx_packets".into(),
            ],
        }
    }

    #[test]
    fn a_packet_is_laid_out_as_vpp_does() {
        assert_eq!(
            format_record(&echo_from_a()),
            "Packet 1  worker 0  +1.234 ms\n\
             \x20 received  pod k8s/default/pod-a/eth0\n\
             \x20 parsed    IPv4 10.65.1.2 -> 10.65.1.3 ICMP echo request id 17 seq 1, ttl 64, 84 bytes (frame 98)\n\
             \x20 route     10.65.1.3/32 -> pod k8s/default/pod-b/eth0\n\
             \x20 action    deliver to pod k8s/default/pod-b/eth0\n\
             \x20 counters  endpoint.k8s/default/pod-a/eth0.rx_packets, endpoint.k8s/default/pod-b/eth0.tx_packets\n"
        );
    }

    #[test]
    fn tunnels_drops_and_super_frames_read_plainly() {
        let mut record = echo_from_a();
        record.ingress = Some(TraceIngress {
            kind: "ipip".into(),
            peer_ip: "192.168.0.2".into(),
            peer_node: "node-b".into(),
            ..Default::default()
        });
        record.packet = Some(TracePacket {
            ethertype: 0,
            frame_bytes: 1500,
            src: "10.65.2.7".into(),
            dst: "10.65.9.1".into(),
            protocol: 6,
            src_port: 40000,
            dst_port: 5201,
            ttl: 63,
            ip_bytes: 1500,
            ipv4: true,
            ..Default::default()
        });
        record.route = Some(TraceRoute {
            prefix: "10.65.9.0/26".into(),
            target: "remote".into(),
            peer_node: "node-c".into(),
            peer_ip: "192.168.0.3".into(),
            encap: "vxlan".into(),
            ..Default::default()
        });
        record.action = Some(TraceAction {
            kind: "drop".into(),
            drop_reason: "not_local".into(),
            ..Default::default()
        });
        let text = format_record(&record);
        assert!(
            text.contains("  received  underlay IPIP from node node-b (192.168.0.2)\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  parsed    IPv4 10.65.2.7:40000 -> 10.65.9.1:5201 TCP, ttl 63, 1500 bytes\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  route     10.65.9.0/26 -> node node-c (192.168.0.3), VXLAN\n"),
            "{text}"
        );
        assert!(text.contains("  action    drop (not_local)\n"), "{text}");

        let gso = TracePacket {
            gso_size: 1448,
            segments: 45,
            ..record.packet.clone().unwrap_or_default()
        };
        assert!(parsed(&gso).ends_with(", GSO super-frame: 45 segments of 1448"));
        let unreachable = TraceAction {
            kind: "drop".into(),
            drop_reason: "no_route".into(),
            icmp_error: true,
            ..Default::default()
        };
        assert_eq!(
            action_line(&unreachable),
            "drop (no_route), ICMP error sent back"
        );
        let arp = TracePacket {
            ethertype: 0x0806,
            frame_bytes: 42,
            src: "10.65.1.2".into(),
            dst: "169.254.1.1".into(),
            arp_operation: 1,
            ..Default::default()
        };
        assert_eq!(
            parsed(&arp),
            "ARP request who-has 169.254.1.1 tell 10.65.1.2 (frame 42)"
        );
        let encapsulate = TraceAction {
            kind: "encapsulate".into(),
            peer_ip: "192.168.0.9".into(),
            encap: "none".into(),
            ..Default::default()
        };
        assert_eq!(
            action_line(&encapsulate),
            "send unencapsulated to 192.168.0.9 (no known node)"
        );
    }

    #[test]
    fn the_report_ends_with_how_the_trace_ended() {
        let mut report = TraceReport {
            endpoint: Some("k8s/default/pod-a/eth0".into()),
            count: 2,
            records: vec![echo_from_a()],
            ended: "timeout".into(),
            dropped: 0,
        };
        let text = format_trace(&report);
        assert!(text.starts_with("Packet 1  worker 0"), "{text}");
        assert!(
            text.ends_with(
                "\n\n1 packet traced (2 asked for; the time ran out), from or to k8s/default/pod-a/eth0.\n"
            ),
            "{text}"
        );
        report.ended = "complete".into();
        report.endpoint = None;
        report.dropped = 1;
        let text = format_trace(&report);
        assert!(
            text.contains("1 packet traced (all asked for).\n1 more were traced"),
            "{text}"
        );
    }
}
