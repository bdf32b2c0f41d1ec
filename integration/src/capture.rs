//! Underlay captures: `tcpdump -i eth0 -nn -v -e` in a node's namespace, with a filter and
//! a packet count, bounded by a timeout. tcpdump's verbose output spreads one packet over
//! several lines (outer header, inner headers); [`Capture::finish`] groups them back into
//! one text per packet so a test can assert on "this packet was IPIP between the nodes".

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::desired::Mode;
use crate::error::{LabError, Result};
use crate::lab::{Node, Pod};
use crate::netns::Netns;
use crate::process::Proc;
use crate::traffic::ping;

/// How long tcpdump may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running capture; see [`Capture::finish`].
#[derive(Debug)]
pub struct Capture {
    proc: Proc,
    what: String,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<Vec<String>>>,
}

/// Starts `tcpdump` on `interface` in `netns`, stopping by itself after `count` packets
/// that match `filter` (pcap-filter syntax). Returns once tcpdump is listening.
pub fn start(netns: &Netns, interface: &str, filter: &str, count: usize) -> Result<Capture> {
    start_with(netns, interface, filter, count, Timestamps::TimeOfDay)
}

/// The tcpdump filter for what `mode` puts on the underlay for traffic of pod `pod_ip`:
/// IP protocol 4 for IPIP, UDP port 4789 for VXLAN, the pod's own ICMP when
/// unencapsulated.
pub fn encapsulation_filter(mode: Mode, pod_ip: Ipv4Addr) -> String {
    match mode {
        Mode::None => format!("icmp and host {pod_ip}"),
        Mode::Ipip => "ip proto 4".to_string(),
        Mode::Vxlan => "udp port 4789".to_string(),
    }
}

/// Captures on `node`'s underlay `eth0` the packets matching `filter` during one ping
/// `from` → `to`: tcpdump stops after two packets (the request and the reply, when the
/// filter matches both) or after `within`. The ping's own result is not judged; the
/// caller judges the packets.
pub fn during_one_ping(
    node: &Node,
    filter: &str,
    from: &Pod,
    to: &Pod,
    within: Duration,
) -> Result<Vec<String>> {
    during_one_ping_on(node.netns(), "eth0", filter, from, to, within)
}

/// [`during_one_ping`] on `interface` in `netns` (the lab's router, say).
pub fn during_one_ping_on(
    netns: &Netns,
    interface: &str,
    filter: &str,
    from: &Pod,
    to: &Pod,
    within: Duration,
) -> Result<Vec<String>> {
    let cap = start(netns, interface, filter, 2)?;
    ping(from, to.ip, 1)?;
    cap.finish(within)
}

/// How tcpdump stamps each packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// `18:59:28.866946` (tcpdump's default; what a user reads).
    TimeOfDay,
    /// Seconds since the epoch, `1712345678.866946` (`-tt`): comparable with
    /// [`SystemTime`], for measuring when something first appeared on the wire
    /// ([`packet_time`]).
    Epoch,
}

/// [`start`], choosing the timestamp format.
pub fn start_with(
    netns: &Netns,
    interface: &str,
    filter: &str,
    count: usize,
    timestamps: Timestamps,
) -> Result<Capture> {
    let count_arg = count.to_string();
    let mut args = vec![
        "tcpdump",
        "-i",
        interface,
        "-nn",
        "-v",
        "-e",
        "-l",
        "--immediate-mode",
        "-c",
        &count_arg,
    ];
    if timestamps == Timestamps::Epoch {
        args.push("-tt");
    }
    args.extend(filter.split_whitespace());
    let what = format!("tcpdump -i {interface} '{filter}' in {}", netns.name());
    let mut proc = netns.spawn(what.clone(), &args, Stdio::piped(), Stdio::piped())?;
    let stdout = proc.take_stdout().and_then(|pipe| {
        std::thread::Builder::new()
            .name("tapwire-lab-tcpdump".into())
            .spawn(move || BufReader::new(pipe).lines().map_while(|l| l.ok()).collect())
            .ok()
    });
    // tcpdump says "listening on eth0" on stderr once the capture is armed.
    let (listening_tx, listening_rx) = mpsc::channel();
    let stderr = proc.take_stderr().and_then(|pipe| {
        std::thread::Builder::new()
            .name("tapwire-lab-tcpdump-err".into())
            .spawn(move || {
                let mut lines = Vec::new();
                for line in BufReader::new(pipe).lines().map_while(|l| l.ok()) {
                    if line.contains("listening on") {
                        let _ = listening_tx.send(());
                    }
                    lines.push(line);
                }
                lines
            })
            .ok()
    });
    let mut capture = Capture {
        proc,
        what,
        stdout,
        stderr,
    };
    if listening_rx.recv_timeout(START_TIMEOUT).is_err() {
        let _ = capture.proc.kill();
        let stderr = capture
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        return Err(LabError::Timeout {
            what: format!(
                "waiting for {} to listen; it said: {}",
                capture.what,
                stderr.join("\n")
            ),
            after: START_TIMEOUT,
        });
    }
    Ok(capture)
}

impl Capture {
    /// Waits up to `timeout` for tcpdump to see its packet count, stops it otherwise, and
    /// returns the captured packets: one string per packet, continuation lines joined with
    /// `\n`. Fewer packets than asked for is not an error; the caller judges.
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<String>> {
        if self.proc.wait_timeout(timeout)?.is_none() {
            // SIGINT makes tcpdump flush what it has and exit.
            self.proc.signal(libc::SIGINT);
            if self.proc.wait_timeout(Duration::from_secs(5))?.is_none() {
                self.proc.kill()?;
            }
        }
        let lines = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(group_packets(&lines))
    }
}

/// Groups tcpdump's lines into packets: a packet starts with a line that starts with a
/// timestamp (`18:59:28.866946 `); with `-e`, a VXLAN packet's inner Ethernet line is not
/// indented, so indentation alone cannot tell.
pub fn group_packets(lines: &[String]) -> Vec<String> {
    let mut packets: Vec<String> = Vec::new();
    // tcpdump may end with an empty line when interrupted; it is no packet.
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        match packets.last_mut() {
            Some(last) if !starts_with_timestamp(line) => {
                last.push('\n');
                last.push_str(line.trim_end());
            }
            _ => packets.push(line.trim_end().to_string()),
        }
    }
    packets
}

/// `HH:MM:SS.` or an epoch timestamp (`1712345678.866946 `) at the start of the line.
fn starts_with_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    let time_of_day = b.len() > 9
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
        && b[2] == b':'
        && b[5] == b':'
        && b[8] == b'.';
    time_of_day || epoch_prefix(line).is_some()
}

/// The leading `SECONDS.FRACTION ` of a `-tt` line, as a duration since the epoch.
fn epoch_prefix(line: &str) -> Option<Duration> {
    let stamp = line.split(' ').next()?;
    let (secs, frac) = stamp.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if secs.len() < 9 || !digits(secs) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = format!("{frac:0<9}").parse().ok()?;
    Some(Duration::new(secs.parse().ok()?, nanos))
}

/// When a packet captured with [`Timestamps::Epoch`] was seen.
pub fn packet_time(packet: &str) -> Option<SystemTime> {
    epoch_prefix(packet).map(|since| SystemTime::UNIX_EPOCH + since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_lines_group_into_packets() {
        let lines: Vec<String> = [
            "12:00:00.1 aa:aa:aa:aa:aa:01 > aa:aa:aa:aa:aa:02, ethertype IPv4 (0x0800), length 118: (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto IPIP (4), length 104)",
            "    192.168.0.1 > 192.168.0.2: (tos 0x0, ttl 63, id 7, offset 0, flags [DF], proto ICMP (1), length 84)",
            "    10.65.1.2 > 10.65.2.2: ICMP echo request, id 3, seq 1, length 64",
            "66:74:77:00:00:01 > 66:74:77:00:00:02, ethertype IPv4 (0x0800), length 98: (inner)",
            "12:00:00.2 aa:aa:aa:aa:aa:02 > aa:aa:aa:aa:aa:01, ethertype IPv4 (0x0800), length 118: (tos 0x0, ttl 64, id 2, offset 0, flags [none], proto IPIP (4), length 104)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let packets = group_packets(&lines);
        assert_eq!(packets.len(), 2);
        assert!(packets[0].contains("proto IPIP (4)"));
        assert!(packets[0].contains("\n    10.65.1.2 > 10.65.2.2: ICMP echo request"));
        assert!(packets[0].ends_with("length 98: (inner)"), "{}", packets[0]);
    }

    #[test]
    fn epoch_stamped_lines_group_and_give_their_time() {
        let lines: Vec<String> = [
            "1712345678.250000 aa:aa:aa:aa:aa:01 > aa:aa:aa:aa:aa:02, ethertype IPv4 (0x0800), length 98: (tos 0x0)",
            "    10.65.0.2 > 10.65.0.66: ICMP echo request, id 3, seq 1, length 64",
            "1712345678.5 aa:aa:aa:aa:aa:02 > aa:aa:aa:aa:aa:01, ethertype IPv4 (0x0800), length 98: (tos 0x0)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let packets = group_packets(&lines);
        assert_eq!(packets.len(), 2);
        let at =
            |p: &str| packet_time(p).and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
        assert_eq!(
            at(&packets[0]),
            Some(Duration::new(1_712_345_678, 250_000_000))
        );
        assert_eq!(
            at(&packets[1]),
            Some(Duration::new(1_712_345_678, 500_000_000))
        );
        assert_eq!(packet_time("    10.65.0.2 > 10.65.0.66: ICMP"), None);
        assert_eq!(packet_time("12:00:00.1 aa:aa"), None);
    }
}
