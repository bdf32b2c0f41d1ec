//! The two traffic tests the harness runs itself (TCP throughput is iperf3's, see
//! [`tapwire_integration::traffic::iperf3_streams`]):
//!
//! - [`udp_small_packets`]: a blaster in the client pod sends 64-byte UDP payloads with
//!   `sendmmsg` as fast as it can for a fixed time; a counter in the server pod receives
//!   them with `recvmmsg`. The result is packets *delivered* per second.
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
use crate::sys::{self, RecvBatch, BATCH};

/// The UDP payload of the small-packet test, in bytes.
pub const SMALL_PAYLOAD_BYTES: usize = 64;
/// The request and response size of the latency test, in bytes.
pub const RR_MESSAGE_BYTES: usize = 64;
/// How long the path may take to pass a first packet before a test starts.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a single receive or round trip may stall before the test fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What a [`udp_small_packets`] run counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpRate {
    /// Datagrams the kernel accepted from the sender.
    pub sent: u64,
    /// Datagrams the receiver got.
    pub received: u64,
    /// How long the sender sent.
    pub seconds: f64,
}

impl UdpRate {
    /// Delivered packets per second.
    pub fn delivered_pps(&self) -> f64 {
        self.received as f64 / self.seconds.max(1e-9)
    }

    /// Sent packets per second (what the sender managed to hand the kernel).
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.seconds.max(1e-9)
    }
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

/// Sends 64-byte UDP datagrams from `from` to `to`:`port` for `duration`, as fast as
/// `sendmmsg` goes, and counts what arrives.
pub fn udp_small_packets(from: &Pod, to: &Pod, port: u16, duration: Duration) -> Result<UdpRate> {
    let what = format!("UDP {} -> {}:{port}", from.name, to.ip);
    let dst = SocketAddr::from((to.ip, port));
    let receiver = to.netns().run(|| {
        let socket = UdpSocket::bind(dst)?;
        sys::force_recv_buffer(&socket, 16 << 20)?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(socket)
    })?;
    let sender = from.netns().run(|| {
        let socket = UdpSocket::bind((from.ip, 0))?;
        socket.connect(dst)?;
        Ok(socket)
    })?;
    let payload = [0x5au8; SMALL_PAYLOAD_BYTES];
    let mut batch = RecvBatch::default();

    // First packets resolve neighbours: send one at a time until one arrives, then drain.
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

    let stop = AtomicBool::new(false);
    let received = AtomicU64::new(0);
    let hard_stop = Instant::now() + duration + STALL_TIMEOUT;
    let (sent, seconds) = std::thread::scope(|scope| {
        let counter = scope.spawn(|| count_until_quiet(&receiver, &stop, &received, hard_stop));
        let sent = blast(&sender, &payload, duration);
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
    let received = received.load(Ordering::Acquire);
    if received == 0 {
        return Err(BenchError::measure(&what, "nothing arrived during the run"));
    }
    Ok(UdpRate {
        sent,
        received,
        seconds,
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sends batches for `duration`; returns (datagrams sent, seconds spent).
fn blast(socket: &UdpSocket, payload: &[u8], duration: Duration) -> io::Result<(u64, f64)> {
    let started = Instant::now();
    let end = started + duration;
    let mut sent = 0u64;
    while Instant::now() < end {
        match sys::send_batch(socket, payload, BATCH) {
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

/// Counts datagrams until `stop` is set and nothing more arrives for one read timeout, or
/// `hard_stop` passes.
fn count_until_quiet(
    socket: &UdpSocket,
    stop: &AtomicBool,
    received: &AtomicU64,
    hard_stop: Instant,
) -> io::Result<()> {
    let mut batch = RecvBatch::default();
    let mut total = 0u64;
    loop {
        match batch.recv(socket) {
            Ok(n) => total += n as u64,
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
