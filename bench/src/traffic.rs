//! The two traffic tests the harness runs itself (TCP throughput is iperf3's, see
//! [`tapwire_integration::traffic::iperf3_streams`]):
//!
//! - [`udp_small_packets`]: a blaster in the client pod sends 64-byte UDP payloads with
//!   `sendmmsg`, first as fast as it can, then paced at the rates of an RFC 2544-style
//!   search ([`crate::ratesearch`]); a counter in the server pod receives them with
//!   `recvmmsg`. The result is the highest rate delivered with under 1% loss, beside
//!   what the unpaced trial sent, delivered and where it lost.
//! - [`request_response`]: a 64-byte request and a 64-byte response over one TCP
//!   connection (`TCP_NODELAY`), one at a time; every round trip is timed on the client.
//!
//! Both ends are threads of this process whose sockets were created inside the pods'
//! namespaces (a socket stays in the namespace it was made in). Every wait is bounded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tapwire_integration::Pod;

use crate::error::{BenchError, Result};
use crate::procfs::{
    parse_net_dev_drops, parse_snmp_udp, read_namespace_counters, thread_cpu_ticks,
    ticks_per_second, DeviceDrops, UdpCounters,
};
use crate::ratesearch::{RateSearch, SearchLimits, Trial};
use crate::sys::{self, RecvBatch, BATCH};

/// The UDP payload of the small-packet test, in bytes.
pub const SMALL_PAYLOAD_BYTES: usize = 64;
/// The request and response size of the latency test, in bytes.
pub const RR_MESSAGE_BYTES: usize = 64;
/// How long the path may take to pass a first packet before a test starts.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// A trial's count ends once the receiver has had nothing for this long after the sender
/// stopped (what is still queued on the path arrives well within it).
const QUIET: Duration = Duration::from_millis(50);
/// A paced sender wakes about this often.
const PACE_QUANTUM: Duration = Duration::from_micros(100);
/// The pause after a trial's count before the next trial starts, so that a path still
/// working off an overload does not start the next trial behind.
const SETTLE: Duration = Duration::from_millis(100);
/// The longest a single receive or round trip may stall before the test fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the small-packet test may take on one path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpLimits {
    /// The unpaced trial: the sender as fast as it goes.
    pub unpaced: Duration,
    /// Each paced trial of the search.
    pub trial: Duration,
    pub search: SearchLimits,
}

/// What the small-packet test found on one path: the unpaced trial, where its losses
/// were counted, and the search for the highest rate delivered with under 1% loss.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpSearch {
    pub unpaced: Trial,
    /// Where the unpaced trial's datagrams were lost, as far as the two ends' counters
    /// tell.
    pub lost: UdpLoss,
    /// The sending thread's CPU time over the unpaced trial's length, 0–1: near 1, the
    /// sender itself is the limit of what it sent.
    pub sender_busy: f64,
    /// The paced trials, in order.
    pub paced: Vec<Trial>,
    /// The passing trial with the highest received rate (the unpaced one if it passed).
    pub best: Option<Trial>,
    /// The lowest rate that failed, packets/s.
    pub lowest_failed_pps: Option<f64>,
}

/// Where datagrams were lost, from the counters of the sending and the receiving
/// namespace (what none of them counted was lost in between: the forwarder, the underlay,
/// the peer node).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpLoss {
    /// Dropped by the sender's namespace after `sendmmsg` counted them as sent: its
    /// devices' transmit drops (a TAP whose reader had no room, a veth whose peer could not
    /// take more) and its UDP `SndbufErrors` (a full queue discipline).
    pub at_sender: u64,
    /// Receive drops of the receiving namespace's devices (a TAP write or veth arrival the
    /// backlog could not take).
    pub at_receiver_devices: u64,
    /// The receiving socket's full buffer (the receiving namespace's UDP `RcvbufErrors`).
    pub at_receiving_socket: u64,
}

/// A namespace's UDP counters and device drops at one moment.
#[derive(Debug, Clone, Copy)]
struct Counters {
    udp: UdpCounters,
    drops: DeviceDrops,
}

impl Counters {
    /// How much each counter grew since `before`.
    fn since(&self, before: &Counters) -> Counters {
        Counters {
            udp: self.udp.since(&before.udp),
            drops: self.drops.since(&before.drops),
        }
    }
}

impl UdpLoss {
    /// The loss told by how much the sender's and the receiver's counters grew.
    fn from_growth(sender: &Counters, receiver: &Counters) -> UdpLoss {
        UdpLoss {
            at_sender: sender.udp.sndbuf_errors + sender.drops.tx,
            at_receiver_devices: receiver.drops.rx,
            at_receiving_socket: receiver.udp.rcvbuf_errors,
        }
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

/// Sends 64-byte UDP datagrams from `from` to `to`:`port`: first for `limits.unpaced` as
/// fast as `sendmmsg` goes, then paced at the rates [`RateSearch`] asks for, each for
/// `limits.trial`, counting what arrives.
pub fn udp_small_packets(from: &Pod, to: &Pod, port: u16, limits: &UdpLimits) -> Result<UdpSearch> {
    let mut probe = UdpProbe::open(from, to, port)?;
    let before = probe.counters()?;
    let sender_before = thread_cpu_ticks()?;
    let unpaced = probe.trial(None, limits.unpaced)?;
    let sender_ticks = thread_cpu_ticks()?.saturating_sub(sender_before);
    let after = probe.counters()?;
    let mut search = RateSearch::new(unpaced, limits.search);
    let mut paced = Vec::new();
    while let Some(rate) = search.next_rate() {
        let trial = probe.trial(Some(rate), limits.trial)?;
        search.record(trial);
        paced.push(trial);
    }
    Ok(UdpSearch {
        unpaced,
        lost: UdpLoss::from_growth(&after.0.since(&before.0), &after.1.since(&before.1)),
        sender_busy: sender_ticks as f64 / ticks_per_second() as f64 / unpaced.seconds.max(1e-9),
        paced,
        best: search.best(),
        lowest_failed_pps: search.lowest_failed(),
    })
}

/// A connected sender in one pod and a receiver in another, ready for trials. Every
/// datagram's first byte is the number of the trial that sent it, and a trial counts only
/// its own: a straggler of an earlier trial is not received by a later one.
struct UdpProbe<'pods> {
    from: &'pods Pod,
    to: &'pods Pod,
    what: String,
    sender: UdpSocket,
    receiver: UdpSocket,
    /// The last trial's number (0: the datagrams that opened the path).
    trial: u8,
}

impl<'pods> UdpProbe<'pods> {
    /// Opens both sockets and sends single datagrams until one arrives (the first
    /// packets resolve neighbours), then drains the receiver.
    fn open(from: &'pods Pod, to: &'pods Pod, port: u16) -> Result<UdpProbe<'pods>> {
        let what = format!("UDP {} -> {}:{port}", from.name, to.ip);
        let dst = SocketAddr::from((to.ip, port));
        let receiver = to.netns().run(|| {
            let socket = UdpSocket::bind(dst)?;
            sys::force_recv_buffer(&socket, 16 << 20)?;
            socket.set_read_timeout(Some(QUIET))?;
            Ok(socket)
        })?;
        let sender = from.netns().run(|| {
            let socket = UdpSocket::bind((from.ip, 0))?;
            socket.connect(dst)?;
            Ok(socket)
        })?;
        // Trial 0: datagrams sent before any trial.
        let mut payload = [0x5au8; SMALL_PAYLOAD_BYTES];
        payload[0] = 0;
        let mut batch = RecvBatch::default();
        let ready_by = Instant::now() + READY_TIMEOUT;
        loop {
            // A full queue or an unresolved neighbour is not an error here; we retry.
            let _ = sender.send(&payload);
            match batch.recv(&receiver) {
                Ok(n) if n > 0 => break,
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(io_err(format!("{what}: first receive"))(e)),
            }
            if Instant::now() >= ready_by {
                return Err(BenchError::measure(
                    &what,
                    format!("no datagram arrived within {READY_TIMEOUT:?}"),
                ));
            }
        }
        while matches!(batch.recv(&receiver), Ok(n) if n > 0) {}
        Ok(UdpProbe {
            from,
            to,
            what,
            sender,
            receiver,
            trial: 0,
        })
    }

    /// The counters of the sending and the receiving namespace.
    fn counters(&self) -> Result<(Counters, Counters)> {
        let read = |pod: &Pod| -> Result<Counters> {
            let (snmp, dev) = pod.netns().run(read_namespace_counters)?;
            Ok(Counters {
                udp: parse_snmp_udp(&snmp)?,
                drops: parse_net_dev_drops(&dev)?,
            })
        };
        Ok((read(self.from)?, read(self.to)?))
    }

    /// Sends for `duration`, paced to `rate` packets/s or (`None`) as fast as it goes,
    /// and counts what arrives until the receiver has been quiet for [`QUIET`].
    fn trial(&mut self, rate: Option<f64>, duration: Duration) -> Result<Trial> {
        // Trial numbers wrap past 255, but never to the path-opening 0.
        self.trial = self.trial % u8::MAX + 1;
        let id = self.trial;
        let mut payload = [0x5au8; SMALL_PAYLOAD_BYTES];
        payload[0] = id;
        let stop = AtomicBool::new(false);
        let received = AtomicU64::new(0);
        let hard_stop = Instant::now() + duration + STALL_TIMEOUT;
        let what = &self.what;
        let (sent, seconds) = std::thread::scope(|scope| {
            let counter =
                scope.spawn(|| count_until_quiet(&self.receiver, id, &stop, &received, hard_stop));
            let sent = blast(&self.sender, &payload, duration, rate);
            stop.store(true, Ordering::Release);
            let counted = counter
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the receiver thread panicked")));
            match (sent, counted) {
                (Ok(sent), Ok(())) => Ok(sent),
                (Err(e), _) => Err(io_err(format!("{what}: sending"))(e)),
                (_, Err(e)) => Err(io_err(format!("{what}: receiving"))(e)),
            }
        })?;
        std::thread::sleep(SETTLE);
        Ok(Trial {
            offered_pps: rate,
            sent,
            received: received.load(Ordering::Acquire),
            seconds,
        })
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sends batches for `duration`, as fast as the kernel takes them or paced to `rate`
/// packets/s; returns (datagrams sent, seconds spent). Paced, the sender sleeps until a
/// burst of about [`PACE_QUANTUM`]'s worth of datagrams is due, then sends what is due
/// (at most [`BATCH`] per call), so a late wake-up is caught up at once.
fn blast(
    socket: &UdpSocket,
    payload: &[u8],
    duration: Duration,
    rate: Option<f64>,
) -> io::Result<(u64, f64)> {
    let started = Instant::now();
    let end = started + duration;
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let count = match rate {
            None => BATCH,
            Some(pps) => {
                let due = (now - started).as_secs_f64() * pps;
                let burst = (pps * PACE_QUANTUM.as_secs_f64()).clamp(1.0, BATCH as f64);
                if due - (sent as f64) < burst {
                    let next = Duration::from_secs_f64((sent as f64 + burst) / pps);
                    std::thread::sleep((started + next).min(end).saturating_duration_since(now));
                    continue;
                }
                ((due - sent as f64) as usize).min(BATCH)
            }
        };
        match sys::send_batch(socket, payload, count) {
            Ok(n) => sent += n as u64,
            // The device queue is full: the path is the bottleneck, keep offering load.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) || is_timeout(&e) => {}
            // An ICMP error reported on the connected socket (e.g. a transient
            // unreachable): counted as not delivered, keep going.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// Counts datagrams of trial `id` until `stop` is set and nothing more arrives for one
/// read timeout, or `hard_stop` passes.
fn count_until_quiet(
    socket: &UdpSocket,
    id: u8,
    stop: &AtomicBool,
    received: &AtomicU64,
    hard_stop: Instant,
) -> io::Result<()> {
    let mut batch = RecvBatch::default();
    let mut total = 0u64;
    loop {
        match batch.recv(socket) {
            Ok(_) => total += batch.first_bytes().filter(|b| *b == Some(id)).count() as u64,
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
        if Instant::now() >= hard_stop {
            break;
        }
    }
    received.store(total, Ordering::Release);
    Ok(())
}

/// Times 64-byte request/response exchanges from `client` to `server`:`port` over one TCP
/// connection for `duration` (after a short warm-up); returns every round trip in µs.
pub fn request_response(
    client: &Pod,
    server: &Pod,
    port: u16,
    duration: Duration,
) -> Result<Vec<f64>> {
    let what = format!(
        "TCP request/response {} -> {}:{port}",
        client.name, server.ip
    );
    let addr = SocketAddr::from((server.ip, port));
    let listener = server.netns().run(|| {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })?;
    std::thread::scope(|scope| {
        let echo = scope.spawn(|| serve_echo(&listener));
        let timed = time_exchanges(client, addr, duration);
        let served = echo
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the echo thread panicked")));
        match (timed, served) {
            (Ok(rtts), Ok(())) => Ok(rtts),
            (Err(e), _) => Err(io_err(format!("{what}: client"))(e)),
            (_, Err(e)) => Err(io_err(format!("{what}: server"))(e)),
        }
    })
}

/// Accepts one connection (within [`READY_TIMEOUT`]) and echoes fixed-size messages until
/// the client closes it.
fn serve_echo(listener: &TcpListener) -> io::Result<()> {
    let accept_by = Instant::now() + READY_TIMEOUT;
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= accept_by {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no connection within {READY_TIMEOUT:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STALL_TIMEOUT))?;
    stream.set_write_timeout(Some(STALL_TIMEOUT))?;
    let mut buf = [0u8; RR_MESSAGE_BYTES];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => stream.write_all(&buf)?,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// The client side of [`request_response`].
fn time_exchanges(client: &Pod, addr: SocketAddr, duration: Duration) -> io::Result<Vec<f64>> {
    const WARMUP: usize = 200;
    const MAX_SAMPLES: usize = 5_000_000;
    let mut stream = client
        .netns()
        .run(|| TcpStream::connect_timeout(&addr, READY_TIMEOUT))
        .map_err(|e| io::Error::other(e.to_string()))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STALL_TIMEOUT))?;
    stream.set_write_timeout(Some(STALL_TIMEOUT))?;
    let request = [0xa5u8; RR_MESSAGE_BYTES];
    let mut response = [0u8; RR_MESSAGE_BYTES];
    for _ in 0..WARMUP {
        stream.write_all(&request)?;
        stream.read_exact(&mut response)?;
    }
    let mut rtts = Vec::with_capacity(1 << 16);
    let end = Instant::now() + duration;
    while rtts.len() < MAX_SAMPLES {
        let sent_at = Instant::now();
        if sent_at >= end {
            break;
        }
        stream.write_all(&request)?;
        stream.read_exact(&mut response)?;
        rtts.push(sent_at.elapsed().as_secs_f64() * 1e6);
    }
    if response != request {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the echoed response differs from the request",
        ));
    }
    stream.shutdown(std::net::Shutdown::Both)?;
    Ok(rtts)
}
