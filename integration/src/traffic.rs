//! Traffic between pods, the way a user would check it: `ping` (loss and round-trip
//! time), a verified TCP transfer (every byte of a deterministic pseudo-random stream is
//! checked on arrival), and `iperf3` for throughput. Every run is bounded in time.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::lab::Pod;
use crate::netns::Netns;
use crate::process::Proc;

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Packet loss in percent, as ping prints it.
    pub loss_percent: f64,
    /// Average round-trip time in milliseconds; `None` when nothing came back.
    pub rtt_avg_ms: Option<f64>,
    /// ping's full output, for messages.
    pub output: String,
}

/// Parses ping's summary (`N packets transmitted, M received, X% packet loss` and
/// `rtt min/avg/max/mdev = a/b/c/d ms`).
pub fn parse_ping(output: &str) -> Result<PingStats> {
    let bad = |reason: &str| LabError::Parse {
        what: "ping".into(),
        reason: reason.into(),
        output: output.to_string(),
    };
    let summary = output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| bad("no `packets transmitted` line"))?;
    let mut transmitted = None;
    let mut received = None;
    let mut loss = None;
    for part in summary.split(',').map(str::trim) {
        let first = part.split_whitespace().next().unwrap_or("");
        if part.ends_with("packets transmitted") {
            transmitted = first.parse().ok();
        } else if part.ends_with("received") {
            received = first.parse().ok();
        } else if part.ends_with("packet loss") {
            loss = first.trim_end_matches('%').parse().ok();
        }
    }
    let rtt_avg_ms = output
        .lines()
        .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
        .and_then(|values| values.split('/').nth(1))
        .and_then(|avg| avg.trim().parse().ok());
    Ok(PingStats {
        transmitted: transmitted.ok_or_else(|| bad("no transmitted count"))?,
        received: received.ok_or_else(|| bad("no received count"))?,
        loss_percent: loss.ok_or_else(|| bad("no packet loss figure"))?,
        rtt_avg_ms,
        output: output.to_string(),
    })
}

fn ping_args(to: Ipv4Addr, count: u32, interval: Duration) -> Vec<String> {
    vec![
        "ping".into(),
        "-n".into(),
        "-c".into(),
        count.to_string(),
        "-i".into(),
        format!("{:.3}", interval.as_secs_f64()),
        "-W".into(),
        "2".into(),
        to.to_string(),
    ]
}

/// Pings `to` from `from` `count` times, 100 ms apart.
pub fn ping(from: &Pod, to: Ipv4Addr, count: u32) -> Result<PingStats> {
    ping_in(from.netns(), to, count, Duration::from_millis(100))
}

/// Pings `to` from namespace `netns`.
pub fn ping_in(netns: &Netns, to: Ipv4Addr, count: u32, interval: Duration) -> Result<PingStats> {
    let args = ping_args(to, count, interval);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let timeout = interval * count + Duration::from_secs(10);
    let output = netns.exec_output(&args, timeout)?;
    // Exit status 1 means "some replies missing": the numbers say how many.
    parse_ping(&output.stdout).map_err(|err| match output.status.code() {
        Some(0) | Some(1) => err,
        _ => LabError::Command {
            command: output.command.clone(),
            status: output.status.to_string(),
            stderr: output.stderr.trim().to_string(),
        },
    })
}

/// Pings once a second (one probe at a time) until `to` answers or `timeout` passes:
/// the first packets may be spent on ARP and neighbour resolution.
pub fn wait_reachable(from: &Pod, to: Ipv4Addr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = from.netns().exec_output(
            &["ping", "-n", "-c", "1", "-W", "1", &to.to_string()],
            Duration::from_secs(5),
        )?;
        if out.status.success() {
            return Ok(());
        }
        last = out.stdout + &out.stderr;
        // A failed probe usually took its 1 s wait; an immediate error should not spin.
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError::Timeout {
        what: format!(
            "waiting for {to} to answer pings from {}; last ping said:\n{last}",
            from.name
        ),
        after: timeout,
    })
}

/// A ping running in the background.
#[derive(Debug)]
pub struct PingRun {
    proc: Proc,
    stdout: Option<JoinHandle<String>>,
    timeout: Duration,
}

/// Starts `ping` from `from` to `to` in the background; see [`PingRun::finish`].
pub fn ping_start(from: &Pod, to: Ipv4Addr, count: u32, interval: Duration) -> Result<PingRun> {
    let args = ping_args(to, count, interval);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proc = from.netns().spawn(
        format!("ping from {}", from.name),
        &args,
        Stdio::piped(),
        Stdio::null(),
    )?;
    let stdout = proc.take_stdout().and_then(|mut pipe| {
        std::thread::Builder::new()
            .name("tapwire-lab-ping".into())
            .spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
            .ok()
    });
    Ok(PingRun {
        proc,
        stdout,
        timeout: interval * count + Duration::from_secs(10),
    })
}

impl PingRun {
    /// Waits for the ping to finish and returns its statistics.
    pub fn finish(mut self) -> Result<PingStats> {
        if self.proc.wait_timeout(self.timeout)?.is_none() {
            // SIGINT makes ping print its summary before exiting.
            self.proc.signal(libc::SIGINT);
            self.proc.wait_timeout(Duration::from_secs(5))?;
        }
        let output = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        parse_ping(&output)
    }
}

/// The period of the pseudo-random stream: a prime, so that no segment or buffer size
/// lines up with it and a shifted or repeated segment cannot match by accident.
const PATTERN_PERIOD: usize = 1_048_573;

/// One period of the stream (xorshift64 output), generated once.
fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        let mut state: u64 = 0x7461_7077_6972_6521; // "tapwire!"
        let mut bytes = Vec::with_capacity(PATTERN_PERIOD + 8);
        while bytes.len() < PATTERN_PERIOD {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            bytes.extend_from_slice(&state.to_le_bytes());
        }
        bytes.truncate(PATTERN_PERIOD);
        bytes
    })
}

/// Fills `buf` with the stream's bytes starting at stream offset `offset`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let pattern = pattern();
    let mut at = (offset % PATTERN_PERIOD as u64) as usize;
    let mut filled = 0;
    while filled < buf.len() {
        let n = (PATTERN_PERIOD - at).min(buf.len() - filled);
        buf[filled..filled + n].copy_from_slice(&pattern[at..at + n]);
        filled += n;
        at = 0;
    }
}

/// What to send in a [`tcp_transfer`].
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Bytes to send (the most, if `stop_after` ends the transfer first).
    pub bytes: u64,
    /// Stop sending after this long, even if fewer than `bytes` were sent.
    pub stop_after: Option<Duration>,
    /// The receiver's TCP port.
    pub port: u16,
    /// The longest time without progress before the transfer counts as stalled.
    pub stall_timeout: Duration,
    /// The bound on the whole transfer.
    pub timeout: Duration,
}

impl Transfer {
    /// Sends exactly `bytes` bytes, within 120 s.
    pub fn bytes(bytes: u64) -> Transfer {
        Transfer {
            bytes,
            stop_after: None,
            port: 5001,
            stall_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
        }
    }

    /// Sends for `duration` (at most `max_bytes`).
    pub fn for_duration(duration: Duration, max_bytes: u64) -> Transfer {
        Transfer {
            bytes: max_bytes,
            stop_after: Some(duration),
            timeout: duration + Duration::from_secs(60),
            ..Transfer::bytes(max_bytes)
        }
    }
}

/// What a [`tcp_transfer`] delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferReport {
    /// Bytes sent, all of which arrived and matched.
    pub bytes: u64,
    /// From connect until the receiver confirmed the last byte.
    pub duration: Duration,
}

impl TransferReport {
    /// Goodput in Gbit/s.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.duration.as_secs_f64().max(1e-9) / 1e9
    }
}

/// `16 MiB in 52.31ms (2.57 Gbit/s)`, for test logs.
impl std::fmt::Display for TransferReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} MiB in {:.2?} ({:.2} Gbit/s)",
            self.bytes >> 20,
            self.duration,
            self.gbps()
        )
    }
}

const CHUNK: usize = 256 * 1024;

/// Sends the pseudo-random stream from `from` to `to` over TCP: a receiver thread in
/// `to`'s namespace checks every byte; the sender, in `from`'s namespace, waits for the
/// receiver's byte count before reporting. Errors name the offset of the first bad byte.
pub fn tcp_transfer(from: &Pod, to: &Pod, spec: &Transfer) -> Result<TransferReport> {
    let fail = |reason: String| LabError::Transfer {
        from: from.name.clone(),
        to: to.name.clone(),
        reason,
    };
    let addr = SocketAddr::from((to.ip, spec.port));
    let listener = to.netns().run(|| {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    let deadline = Instant::now() + spec.timeout;
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive(listener, spec, deadline));
        let sent = send(from, addr, spec, deadline);
        let received = receiver
            .join()
            .unwrap_or_else(|_| Err("the receiver thread panicked".into()));
        match (sent, received) {
            (Ok(report), Ok(count)) if count == report.bytes => Ok(report),
            (Ok(report), Ok(count)) => Err(fail(format!(
                "sent {} bytes but the receiver counted {count}",
                report.bytes
            ))),
            (Ok(_), Err(recv_err)) => Err(fail(format!("receiver: {recv_err}"))),
            // Both sides' view: a bad byte at the receiver explains a sender error.
            (Err(send_err), Err(recv_err)) => {
                Err(fail(format!("receiver: {recv_err}; sender: {send_err}")))
            }
            (Err(send_err), Ok(count)) => Err(fail(format!(
                "sender: {send_err} (the receiver got {count} good bytes)"
            ))),
        }
    })
}

fn send(
    from: &Pod,
    addr: SocketAddr,
    spec: &Transfer,
    deadline: Instant,
) -> Result<TransferReport, String> {
    let mut stream = from
        .netns()
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(spec.stall_timeout))
        .and_then(|()| stream.set_read_timeout(Some(spec.stall_timeout)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let stop_at = spec.stop_after.map(|d| started + d);
    let mut buf = vec![0u8; CHUNK];
    let mut sent: u64 = 0;
    while sent < spec.bytes {
        let now = Instant::now();
        if stop_at.is_some_and(|t| now >= t) {
            break;
        }
        if now >= deadline {
            return Err(format!(
                "not finished within {:?} ({sent} bytes sent)",
                spec.timeout
            ));
        }
        let n = (spec.bytes - sent).min(CHUNK as u64) as usize;
        fill_pattern(sent, &mut buf[..n]);
        stream.write_all(&buf[..n]).map_err(|e| {
            format!(
                "writing at offset {sent} after {:?}: {e}",
                started.elapsed()
            )
        })?;
        sent += n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("closing the sending side: {e}"))?;
    let mut count = [0u8; 8];
    stream
        .read_exact(&mut count)
        .map_err(|e| format!("waiting for the receiver's count after sending {sent} bytes: {e}"))?;
    let duration = started.elapsed();
    let confirmed = u64::from_le_bytes(count);
    if confirmed != sent {
        return Err(format!(
            "sent {sent} bytes but the receiver confirmed {confirmed}"
        ));
    }
    Ok(TransferReport {
        bytes: sent,
        duration,
    })
}

fn receive(listener: TcpListener, spec: &Transfer, deadline: Instant) -> Result<u64, String> {
    let accept_by = Instant::now() + Duration::from_secs(15);
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= accept_by {
                    return Err("no connection arrived within 15 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("accepting: {e}")),
        }
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(spec.stall_timeout)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; CHUNK];
    let mut expected = vec![0u8; CHUNK];
    let mut received: u64 = 0;
    loop {
        if Instant::now() >= deadline {
            return Err(format!(
                "not finished within {:?} ({received} bytes received)",
                spec.timeout
            ));
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(format!(
                    "reading after {received} bytes (no progress for {:?}?): {e}",
                    spec.stall_timeout
                ))
            }
        };
        fill_pattern(received, &mut expected[..n]);
        if buf[..n] != expected[..n] {
            let bad = buf[..n]
                .iter()
                .zip(&expected[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!(
                "byte {} differs from what was sent (got {:#04x}, expected {:#04x})",
                received + bad as u64,
                buf[bad],
                expected[bad]
            ));
        }
        received += n as u64;
    }
    stream
        .write_all(&received.to_le_bytes())
        .map_err(|e| format!("confirming {received} bytes: {e}"))?;
    Ok(received)
}

/// What one `iperf3` run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IperfReport {
    /// Received goodput in Gbit/s.
    pub gbps: f64,
    /// TCP retransmissions the sender saw.
    pub retransmits: u64,
}

/// Runs an `iperf3` server in `server`'s namespace (bound to `server.ip`) and a client in
/// `client`'s namespace for `seconds` (one TCP stream), and returns the receiver's rate.
pub fn iperf3(client: &Pod, server: &Pod, seconds: u32) -> Result<IperfReport> {
    iperf3_streams(client, server, seconds, 1)
}

/// [`iperf3`] with `streams` parallel TCP streams (`-P`); the rate is their sum.
pub fn iperf3_streams(
    client: &Pod,
    server: &Pod,
    seconds: u32,
    streams: u32,
) -> Result<IperfReport> {
    let ip = server.ip.to_string();
    let mut server_proc = server.netns().spawn(
        format!("iperf3 server in {}", server.name),
        &["iperf3", "-s", "-1", "-B", &ip, "-p", "5201"],
        Stdio::null(),
        Stdio::null(),
    )?;
    let secs = seconds.to_string();
    let parallel = streams.to_string();
    let mut args = vec!["iperf3", "-c", &ip, "-p", "5201", "-t", &secs, "-J"];
    if streams > 1 {
        args.extend(["-P", &parallel]);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let output = loop {
        let out = client
            .netns()
            .exec_output(&args, Duration::from_secs(u64::from(seconds) + 30))?;
        // The server may not be listening yet: retry refused connections for a while
        // (iperf3 reports them in its JSON, whatever its exit status).
        let refused =
            out.stdout.contains("unable to connect") || out.stderr.contains("unable to connect");
        if !refused || Instant::now() >= deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = server_proc.stop(Duration::from_secs(2));
    let json = output.success()?;
    parse_iperf3(&json)
}

/// Reads `end.sum_received.bits_per_second` and `end.sum_sent.retransmits`.
pub fn parse_iperf3(json: &str) -> Result<IperfReport> {
    let bad = |reason: &str| LabError::Parse {
        what: "iperf3 --json".into(),
        reason: reason.into(),
        output: crate::lab::tail(json, 30),
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let bps = value
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| bad("no end.sum_received.bits_per_second"))?;
    let retransmits = value
        .pointer("/end/sum_sent/retransmits")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Ok(IperfReport {
        gbps: bps / 1e9,
        retransmits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_with_loss_and_rtt() {
        let out = "PING 10.65.2.2 (10.65.2.2) 56(84) bytes of data.\n\
                   64 bytes from 10.65.2.2: icmp_seq=1 ttl=62 time=0.101 ms\n\
                   \n--- 10.65.2.2 ping statistics ---\n\
                   4 packets transmitted, 3 received, 25% packet loss, time 301ms\n\
                   rtt min/avg/max/mdev = 0.081/0.095/0.101/0.008 ms\n";
        let stats = parse_ping(out).map_err(|e| e.to_string());
        let stats = stats
            .as_ref()
            .map(|s| (s.transmitted, s.received, s.loss_percent, s.rtt_avg_ms));
        assert_eq!(stats, Ok((4, 3, 25.0, Some(0.095))));
    }

    #[test]
    fn ping_summary_without_replies_has_no_rtt() {
        let out = "--- 10.65.9.9 ping statistics ---\n\
                   2 packets transmitted, 0 received, +2 errors, 100% packet loss, time 1000ms\n";
        let stats = parse_ping(out).map_err(|e| e.to_string());
        let stats = stats
            .as_ref()
            .map(|s| (s.received, s.loss_percent, s.rtt_avg_ms));
        assert_eq!(stats, Ok((0, 100.0, None)));
    }

    #[test]
    fn pattern_is_continuous_across_fills_and_the_period() {
        let mut whole = vec![0u8; 3 * PATTERN_PERIOD / 2];
        fill_pattern(0, &mut whole);
        let mut piece = vec![0u8; 1000];
        let offset = (PATTERN_PERIOD - 300) as u64;
        fill_pattern(offset, &mut piece);
        assert_eq!(piece[..], whole[offset as usize..offset as usize + 1000]);
        assert_ne!(whole[..64], whole[1..65], "not a constant stream");
    }
}
