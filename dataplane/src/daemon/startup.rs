//! Start-up: the underlay's facts, the host path and VXLAN TAPs, the workers and their
//! sockets, the resolver and the control socket; then the state thread runs.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use tapwire_metrics::ScrapeServer;
use tapwire_sys::unix::InstanceLock;
use tapwire_sys::{link, tap};

use crate::counters::WorkerCounters;
use crate::io::{
    IpipSink, PacketSocket, Poller, RawIpSender, UdpReceiver, UnderlayFrames, VxlanSender,
};
use crate::rcu::Rcu;
use crate::resolver;
use crate::state::{build_tables, Desired, Underlay};
use crate::tables::HostPath;
use crate::trace::Tracer;
use crate::worker::{Snapshot, UnderlayTap, Worker, WorkerHandle, WorkerSockets};

use super::control::accept_loop;
use super::{Dataplane, Event, Options, SAMPLE_WAIT};

/// VXLAN sending sockets per worker: each flow keeps one, so its packets share a source
/// port while flows spread over several (ECMP entropy).
const VXLAN_TX_SOCKETS: usize = 4;

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("underlay interface {name}: {source}")]
    Underlay { name: String, source: io::Error },
    #[error("opening {what} for worker {worker}: {source}")]
    Socket {
        what: &'static str,
        worker: usize,
        source: io::Error,
    },
    #[error("control socket: {source}")]
    ControlSocket { path: PathBuf, source: io::Error },
    #[error("starting a thread: {0}")]
    Thread(io::Error),
    #[error("host path interface {name}: {source}")]
    HostPath { name: String, source: io::Error },
    /// Another `tapwire-dataplane` serves this socket.
    #[error("not starting: {0}")]
    AlreadyRunning(io::Error),
    /// `--metrics-addr` cannot be listened on.
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
}

/// Runs the dataplane until the process is killed.
pub fn run(opts: Options) -> Result<(), StartError> {
    // Before any socket is opened: a second dataplane on this node would steal the
    // control socket and the underlay's traffic from the first.
    let instance = InstanceLock::for_socket(&opts.socket).map_err(StartError::AlreadyRunning)?;
    let metrics = opts
        .metrics_addr
        .map(|addr| ScrapeServer::bind(addr).map_err(|source| StartError::Metrics { addr, source }))
        .transpose()?;
    let ul = &opts.underlay_interface;
    let ipip_partial_checksums = is_virtual_device(ul);
    if !ipip_partial_checksums {
        tracing::info!(interface = %ul, "a physical underlay: IPIP leaves with its checksums complete");
    }
    let underlay_err = |source| StartError::Underlay {
        name: ul.clone(),
        source,
    };
    let ifindex = link::ifindex(ul).map_err(underlay_err)?;
    let underlay_mtu = link::mtu(ul).map_err(underlay_err)?;
    let (host_path, mut host_queues) =
        match &opts.host_interface {
            Some(name) => {
                let (path, queues) = open_host_path(name, opts.workers.max(1), underlay_mtu)
                    .map_err(|source| StartError::HostPath {
                        name: name.clone(),
                        source,
                    })?;
                tracing::info!(interface = %name, mtu = path.mtu_bytes, "host path attached");
                (Some(path), queues)
            }
            None => (None, Vec::new()),
        };
    let mut vxlan_taps = match &opts.vxlan_tap_interface {
        Some(name) => match open_vxlan_tap(name, opts.workers.max(1), underlay_mtu) {
            Ok((mac, queues)) => {
                tracing::info!(interface = %name, "VXLAN leaves through the underlay TAP");
                queues
                    .into_iter()
                    .map(|queue| UnderlayTap { queue, mac })
                    .collect()
            }
            Err(err) => {
                tracing::info!(interface = %name, %err, "no underlay TAP; VXLAN is segmented here and sent on UDP sockets");
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let underlay = Underlay {
        ip: link::ipv4_addr(ul).map_err(underlay_err)?,
        mac: link::hwaddr(ul).map_err(underlay_err)?,
        mtu_bytes: underlay_mtu,
        vxlan_port: opts.vxlan_port,
        host_path,
    };
    tracing::info!(
        interface = %ul, ip = %underlay.ip, mtu = underlay.mtu_bytes,
        workers = opts.workers, "starting"
    );

    let desired = Desired::default();
    let first = build_tables(&desired, &underlay, &BTreeMap::new(), &HashMap::new());
    let snapshot = Rcu::new(Snapshot {
        tables: first,
        pods: Vec::new(),
    });

    let (events_tx, events_rx) = mpsc::channel();
    let tracer = Tracer::new();
    let workers = opts.workers.max(1);
    let fanout_group = (std::process::id() & 0xffff) as u16;
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let sock_err = |what| {
            move |source| StartError::Socket {
                what,
                worker: w,
                source,
            }
        };
        let handle = Arc::new(WorkerHandle {
            poller: Poller::new().map_err(sock_err("epoll"))?,
            counters: WorkerCounters::default(),
        });
        let sockets = WorkerSockets {
            raw: RawIpSender::open().map_err(sock_err("raw IP socket"))?,
            vxlan: {
                let socket =
                    UdpReceiver::bind(opts.vxlan_port).map_err(sock_err("VXLAN UDP socket"))?;
                // Without UDP GRO each datagram is its own read; with it, a peer's GSO
                // burst arrives as one.
                if let Err(err) = socket.enable_gro() {
                    tracing::warn!(%err, "UDP GRO refused; receiving VXLAN per datagram");
                }
                socket
            },
            vxlan_tx: VxlanSender::open(VXLAN_TX_SOCKETS)
                .map_err(sock_err("VXLAN sending socket"))?,
            underlay: PacketSocket::open(ifindex, fanout_group, UnderlayFrames::NotTo(underlay.ip))
                .map_err(sock_err("underlay packet socket"))?,
            ipip: PacketSocket::open(
                ifindex,
                fanout_group ^ 0x8000,
                UnderlayFrames::IpipTo(underlay.ip),
            )
            .map_err(sock_err("IPIP packet socket"))?,
            ipip_sink: if w == 0 {
                Some(IpipSink::open().map_err(sock_err("IPIP raw socket"))?)
            } else {
                None
            },
            host: host_queues.pop(),
            vxlan_tap: vxlan_taps.pop(),
            ipip_partial_checksums,
        };
        let report_dead = {
            let events = events_tx.clone();
            Box::new(move |dead| {
                let _ = events.send(Event::QueueDead(dead));
            })
        };
        let worker = Worker::new(
            w,
            Arc::clone(&handle),
            sockets,
            opts.busy_poll,
            report_dead,
            tracer.trace(),
        )
        .map_err(sock_err("epoll registration"))?;
        let reader = snapshot.reader();
        std::thread::Builder::new()
            .name(format!("tapwire-w{w}"))
            .spawn(move || worker.run(reader))
            .map_err(StartError::Thread)?;
        handles.push(handle);
    }

    let link = resolver::UnderlayLink {
        ifindex,
        ip: underlay.ip,
        mac: underlay.mac,
    };
    let resolver_tx = resolver::spawn(link, {
        let events = events_tx.clone();
        move |r| events.send(Event::Resolved(r)).is_ok()
    })
    .map_err(underlay_err)?;
    if let Some(server) = metrics {
        tracing::info!(addr = %server.local_addr(), "serving metrics at /metrics");
        let events = events_tx.clone();
        server
            .spawn("tapwire-metrics", move |exposition| {
                let (tx, rx) = mpsc::sync_channel(1);
                events.send(Event::Sample(tx)).ok()?;
                rx.recv_timeout(SAMPLE_WAIT).ok()?.render(exposition)
            })
            .map_err(StartError::Thread)?;
    }
    let listener = bind_control_socket(&opts.socket, &instance)?;
    std::thread::Builder::new()
        .name("tapwire-accept".into())
        .spawn(move || accept_loop(listener, events_tx))
        .map_err(StartError::Thread)?;

    let mut dataplane = Dataplane::new(underlay, handles, snapshot, resolver_tx);
    dataplane.tracer = tracer;
    dataplane.run(events_rx);
    Ok(())
}

/// The host path: a persistent multi-queue TAP in the node's namespace, created on first
/// start (a restarted dataplane attaches to the one it left, so the kernel's routes
/// through it survive), one queue per worker with a virtio-net header and TSO offloads so
/// that node↔pod TCP moves super-frames as pod↔pod TCP does. Its MTU is the underlay's
/// (the kernel's pool routes carry the pods' smaller MTU); IPv6 is off on it (nothing
/// IPv6 crosses tapwire) and its reverse-path filter loose: ICMP errors the dataplane
/// sends the kernel come from 169.254.1.1, which only the default route covers.
fn open_host_path(
    name: &str,
    workers: usize,
    mtu_bytes: u32,
) -> io::Result<(HostPath, Vec<tap::TapQueue>)> {
    match tap::create_persistent(name) {
        Ok(()) => tracing::info!(interface = %name, "host path TAP created"),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let queues = (0..workers)
        .map(|_| tap::attach_queue_with_offloads(name))
        .collect::<io::Result<Vec<_>>>()?;
    if let Some(queue) = queues.first() {
        let wanted = tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6;
        if let Err(err) = queue.set_offloads(wanted) {
            tracing::warn!(interface = %name, %err, "host path TAP offloads refused");
        }
    }
    for (key, value) in [
        (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "2"),
    ] {
        if let Err(err) = std::fs::write(&key, value) {
            tracing::warn!(%key, %err, "setting a host path sysctl failed");
        }
    }
    link::set_mtu(name, mtu_bytes)?;
    link::set_up(name)?;
    let path = HostPath {
        mac: link::hwaddr(name)?,
        mtu_bytes,
    };
    Ok((path, queues))
}

/// The TAP VXLAN leaves through: a multi-queue TAP in the node's namespace, one queue per
/// worker, with the 24-byte tunnel virtio-net header and UDP-tunnel GSO, so that a pod's
/// TCP super-frame, wrapped in outer Ethernet/IPv4/UDP/VXLAN headers, crosses it whole; the
/// node's kernel forwards it out of the underlay interface, where the device (or the
/// kernel's GSO, for a device that cannot) cuts it into datagrams and fills in the inner
/// checksums. The frames come from this node's own address, so the TAP accepts a local
/// source (`accept_local`, no reverse-path filter) and forwards (`forwarding`, for this
/// input device only). Not persistent: it goes when the dataplane's queues close.
///
/// Fails on a kernel without UDP-tunnel GSO (before 6.17: the header size or the offload
/// is refused), and where a strict reverse-path filter on all interfaces would drop the
/// frames.
fn open_vxlan_tap(
    name: &str,
    workers: usize,
    mtu_bytes: u32,
) -> io::Result<(crate::packet::Mac, Vec<tap::TapQueue>)> {
    let strict_rpf = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")
        .is_ok_and(|v| v.trim() == "1");
    if strict_rpf {
        return Err(io::Error::other(
            "net.ipv4.conf.all.rp_filter is 1 (strict), which drops frames from the node's own address",
        ));
    }
    match tap::create_persistent(name) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    let queues = match (0..workers)
        .map(|_| tap::attach_queue_with_offloads(name))
        .collect::<io::Result<Vec<_>>>()
    {
        Ok(queues) => queues,
        Err(err) => {
            let _ = tap::delete_persistent(name);
            return Err(err);
        }
    };
    let Some(first) = queues.first() else {
        return Err(io::Error::other("no worker to attach a queue for"));
    };
    // From here on, an error drops the queues and with them the device.
    first.set_persistent(false)?;
    first.set_vnet_hdr_len(tap::TUNNEL_VNET_HDR_LEN)?;
    let offloads =
        tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6 | tap::offload::UDP_TUNNEL_GSO;
    first.set_offloads(offloads)?;
    for (key, value) in [
        (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{name}/accept_local"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "1"),
    ] {
        std::fs::write(&key, value)
            .map_err(|err| io::Error::new(err.kind(), format!("setting {key}: {err}")))?;
    }
    link::set_mtu(name, mtu_bytes)?;
    link::set_up(name)?;
    Ok((link::hwaddr(name)?, queues))
}

fn bind_control_socket(path: &Path, held: &InstanceLock) -> Result<UnixListener, StartError> {
    tapwire_sys::unix::bind_private(path, held).map_err(|source| StartError::ControlSocket {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether the network device `name` is virtual (veth, bridge, …: no `device` link in
/// sysfs). Frames left with a partial checksum are fine on such a device — its peer keeps
/// the mark or finishes the sum — but a NIC whose driver reads the outer header to find
/// what to checksum may get an IPIP segment's wrong: IPIP leaves a physical device with its
/// checksums complete.
pub(super) fn is_virtual_device(name: &str) -> bool {
    !Path::new("/sys/class/net")
        .join(name)
        .join("device")
        .exists()
}
