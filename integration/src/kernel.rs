//! Nodes that use the kernel's dataplane the way Calico's Linux dataplane programs it, as
//! interoperability peers and performance baselines for tapwire:
//!
//! - a VXLAN device `vxlan.calico` (VNI 4096, port 4789, on `eth0`) with the node's VTEP
//!   MAC and its tunnel address as a /32;
//! - per remote block: `ip route replace BLOCK via TUNNEL_IP dev vxlan.calico onlink`,
//!   a permanent neighbour entry for the tunnel address and an FDB entry pointing the
//!   peer's VTEP MAC at its underlay address;
//! - pods on veths: the pod end is `eth0` with the pod's /32 and Calico's two routes, the
//!   host end has MAC `ee:ee:ee:ee:ee:ee`, `proxy_arp=1`, `proxy_delay=0` and a /32 route
//!   to the pod; forwarding is on.
//!
//! Checksum offload: on a virtual underlay (veths), a kernel VXLAN device that offloads
//! transmit checksums sends inner TCP/UDP packets whose checksum was never filled in
//! (no NIC exists to fill it), which a userspace receiver such as tapwire rightly rejects
//! as corrupt (the kernel on the other end trusts the offload flag it received). Calico's
//! Felix turns transmit checksum offload off on `vxlan.calico` for a similar kernel bug;
//! [`setup_vxlan_device`] can do the same.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tapwire_proto::VXLAN_PORT;
use tapwire_sys::link;

use crate::desired::VNI;
use crate::error::Result;
use crate::lab::{format_mac, Lab, Node, Pod};

/// The name Calico gives its VXLAN device.
pub const VXLAN_DEVICE: &str = "vxlan.calico";

/// Turns on forwarding on `node` (needed for veth pods to reach anything).
pub fn enable_forwarding(node: &Node) -> Result<()> {
    node.netns().sysctl("net.ipv4.ip_forward", "1")
}

/// Whether `vxlan.calico` keeps transmit checksum offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxChecksum {
    /// Offload on (the kernel default): fine between kernel nodes.
    Offload,
    /// Checksums computed before encapsulation (Felix's setting): needed when the peer
    /// is a userspace dataplane on a virtual underlay.
    Software,
}

/// Creates `vxlan.calico` on `node` with the node's VTEP MAC and tunnel address.
pub fn setup_vxlan_device(node: &Node, tx_checksum: TxChecksum) -> Result<()> {
    enable_forwarding(node)?;
    let ns = node.netns();
    ns.ip(&[
        "link",
        "add",
        VXLAN_DEVICE,
        "address",
        &format_mac(node.vtep_mac),
        "type",
        "vxlan",
        "id",
        &VNI.to_string(),
        "dstport",
        &VXLAN_PORT.to_string(),
        "dev",
        "eth0",
        "local",
        &node.underlay_ip.to_string(),
    ])?;
    ns.ip(&[
        "addr",
        "add",
        &format!("{}/32", node.tunnel_ip),
        "dev",
        VXLAN_DEVICE,
    ])?;
    if tx_checksum == TxChecksum::Software {
        ns.run(|| set_offload(VXLAN_DEVICE, Offload::TxChecksum, false))?;
    }
    ns.ip(&["link", "set", VXLAN_DEVICE, "up"])?;
    Ok(())
}

/// Makes `node` a kernel VXLAN node as Calico's Linux dataplane would: `vxlan.calico`
/// (see [`setup_vxlan_device`]) and, for each of `peers`, the route, neighbour and FDB
/// entries that reach its block (see [`add_vxlan_peer`]).
pub fn setup_vxlan_node(node: &Node, tx_checksum: TxChecksum, peers: &[&Node]) -> Result<()> {
    setup_vxlan_device(node, tx_checksum)?;
    for peer in peers {
        add_vxlan_peer(node, peer)?;
    }
    Ok(())
}

/// Turns TCP segmentation offload and generic segmentation offload off on `ifname` in
/// `node`'s namespace (`ethtool -K IFNAME tso off gso off`): the kernel then segments a
/// super-frame before that device sends it, so every packet crossing it is MTU-sized.
pub fn segmentation_offload_off(node: &Node, ifname: &str) -> Result<()> {
    let ns = node.netns();
    ns.run(|| set_offload(ifname, Offload::Tso, false))?;
    ns.run(|| set_offload(ifname, Offload::Gso, false))?;
    Ok(())
}

/// An offload `ethtool -K` switches, by its legacy `SIOCETHTOOL` command.
#[derive(Debug, Clone, Copy)]
enum Offload {
    /// `tx` (`ETHTOOL_STXCSUM`).
    TxChecksum,
    /// `tso` (`ETHTOOL_STSO`).
    Tso,
    /// `gso` (`ETHTOOL_SGSO`).
    Gso,
}

impl Offload {
    fn command(self) -> u32 {
        match self {
            Offload::TxChecksum => 0x17,
            Offload::Tso => 0x1f,
            Offload::Gso => 0x24,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Offload::TxChecksum => "tx checksum offload",
            Offload::Tso => "TCP segmentation offload",
            Offload::Gso => "generic segmentation offload",
        }
    }
}

/// `ethtool -K IFNAME <offload> on|off` in the calling thread's namespace, through the
/// `SIOCETHTOOL` ioctl, so the lab does not need ethtool installed.
fn set_offload(ifname: &str, offload: Offload, on: bool) -> io::Result<()> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let name = ifname.as_bytes();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {ifname:?} too long"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    let mut value = EthtoolValue {
        cmd: offload.command(),
        data: u32::from(on),
    };
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: socket() has no memory arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket() and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `req` is a valid ifreq naming the interface, and its data pointer refers to
    // `value`, a live ethtool_value, for the duration of the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!(
                "turning {} {} on {ifname}: {err}",
                offload.name(),
                if on { "on" } else { "off" }
            ),
        ));
    }
    Ok(())
}

/// Programs `node`'s kernel to reach `peer`'s block through VXLAN, as Calico does.
pub fn add_vxlan_peer(node: &Node, peer: &Node) -> Result<()> {
    add_vxlan_route(
        node,
        &peer.block.to_string(),
        peer.tunnel_ip,
        peer.vtep_mac,
        peer.underlay_ip,
    )
}

/// Programs `node`'s kernel to reach `block` through VXLAN as Felix programs a remote
/// block: `ip route replace BLOCK via NEXT_HOP dev vxlan.calico onlink`, a permanent
/// neighbour entry NEXT_HOP → `vtep_mac`, and an FDB entry `vtep_mac` → `underlay_ip`.
/// `next_hop` is the peer's tunnel address; any address works for a peer that has none
/// (it only keys the neighbour entry).
pub fn add_vxlan_route(
    node: &Node,
    block: &str,
    next_hop: Ipv4Addr,
    vtep_mac: [u8; 6],
    underlay_ip: Ipv4Addr,
) -> Result<()> {
    let ns = node.netns();
    let next_hop = next_hop.to_string();
    let mac = format_mac(vtep_mac);
    ns.ip(&[
        "route",
        "replace",
        block,
        "via",
        &next_hop,
        "dev",
        VXLAN_DEVICE,
        "onlink",
    ])?;
    ns.ip(&[
        "neigh",
        "replace",
        &next_hop,
        "lladdr",
        &mac,
        "dev",
        VXLAN_DEVICE,
        "nud",
        "permanent",
    ])?;
    ns.exec(&[
        "bridge",
        "fdb",
        "append",
        &mac,
        "dev",
        VXLAN_DEVICE,
        "dst",
        &underlay_ip.to_string(),
    ])?;
    Ok(())
}

/// Adds a pod on a kernel node, wired like Calico's CNI plugin wires a veth pod.
pub fn add_veth_pod(
    lab: &Lab,
    node: &Node,
    name: &str,
    ip: Ipv4Addr,
    mtu_bytes: u32,
) -> Result<Pod> {
    let pod_ns = lab.create_netns(name)?;
    let host_if: String = format!("cali{name}").chars().take(15).collect();
    let ns = node.netns();
    let mtu = mtu_bytes.to_string();
    ns.add_veth_to_eth0(&host_if, &pod_ns)?;
    ns.ip(&[
        "link",
        "set",
        &host_if,
        "address",
        "ee:ee:ee:ee:ee:ee",
        "mtu",
        &mtu,
        "up",
    ])?;
    ns.sysctl(&format!("net.ipv4.conf.{host_if}.proxy_arp"), "1")?;
    ns.sysctl(&format!("net.ipv4.neigh.{host_if}.proxy_delay"), "0")?;
    ns.ip(&[
        "route",
        "add",
        &format!("{ip}/32"),
        "dev",
        &host_if,
        "scope",
        "link",
    ])?;

    pod_ns.ip(&["link", "set", "eth0", "mtu", &mtu, "up"])?;
    pod_ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
    pod_ns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ])?;
    pod_ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ])?;
    let mac = pod_ns.run(|| link::hwaddr("eth0"))?;
    Ok(Pod::new(name, node, ip, mac, mtu_bytes, pod_ns))
}
