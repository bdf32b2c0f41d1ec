//! Pod network interfaces: a persistent multi-queue TAP as the pod's `eth0`, set up the way
//! Calico's CNI plugin sets up its veth.
//!
//! Inside the pod's network namespace a pod gets:
//!
//! - `lo` up;
//! - `eth0`: a persistent TAP (`IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE`), MTU as computed by
//!   [`pod_mtu`], administratively up, with the pod's address as a /32;
//! - `169.254.1.1 dev eth0 scope link` and `default via 169.254.1.1 dev eth0`.
//!
//! Nothing owns 169.254.1.1 ([`POD_GATEWAY`]): the dataplane answers the pod's ARP for it with
//! [`GATEWAY_MAC`](tapwire_proto::GATEWAY_MAC) on the TAP queues it holds. This module creates the device and leaves it
//! without queues (no carrier) until the dataplane attaches; it never holds a queue itself.
//!
//! All work happens on a short-lived thread inside the pod namespace
//! ([`tapwire_sys::netns::run_in_netns`]); the caller's thread never changes namespace.
//! Creation is all or nothing: if a step fails after the TAP exists, the TAP is removed again.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tapwire_proto::{Encap, POD_GATEWAY};
use tapwire_sys::netlink::{Netlink, RouteScope, RouteSpec};
use tapwire_sys::{link, netns, tap};

/// What a pod's interface should look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterfaceSpec {
    /// The pod's network namespace, e.g. `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    pub netns_path: PathBuf,
    /// The interface name inside the pod, normally `eth0`.
    pub ifname: String,
    /// The pod's IPv4 address (installed as a /32).
    pub address: Ipv4Addr,
    /// The interface MTU, normally [`pod_mtu`] of the underlay.
    pub mtu_bytes: u32,
}

/// A pod interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The interface name inside the pod.
    pub ifname: String,
    /// The interface index inside the pod namespace.
    pub ifindex: u32,
    /// The TAP's MAC address (the pod's source MAC).
    pub mac: [u8; 6],
    /// The interface's primary IPv4 address.
    pub address: Ipv4Addr,
    /// The interface MTU.
    pub mtu_bytes: u32,
}

/// The pod MTU for an underlay MTU: underlay MTU minus the encapsulation overhead
/// (1500 → 1500 / 1480 / 1450). Saturates at 0; the kernel refuses MTUs below 68 when the
/// result is applied.
pub fn pod_mtu(underlay_mtu: u32, encap: Encap) -> u32 {
    underlay_mtu.saturating_sub(encap.overhead_bytes())
}

/// Why a pod interface could not be created, read or deleted. Each message names the step,
/// the interface and the pod namespace.
#[derive(Debug, thiserror::Error)]
pub enum PodnetError {
    /// The spec asks for something no pod may have.
    #[error("invalid pod interface {ifname} for {}: {reason}", netns.display())]
    InvalidSpec {
        netns: PathBuf,
        ifname: String,
        reason: String,
    },
    /// The pod namespace could not be opened or entered (the message names the path).
    #[error("{source}")]
    EnterNetns { netns: PathBuf, source: io::Error },
    /// Bringing the pod's loopback up failed.
    #[error("bringing lo up in {}: {source}", netns.display())]
    LoopbackUp { netns: PathBuf, source: io::Error },
    /// Creating the TAP failed (`File exists` when the name is taken).
    #[error("creating TAP {ifname} in {}: {source}", netns.display())]
    CreateTap {
        netns: PathBuf,
        ifname: String,
        source: io::Error,
    },
    /// The kernel refused the MTU.
    #[error("setting MTU {mtu_bytes} on {ifname} in {}: {source}", netns.display())]
    SetMtu {
        netns: PathBuf,
        ifname: String,
        mtu_bytes: u32,
        source: io::Error,
    },
    /// Bringing the interface up failed.
    #[error("bringing {ifname} up in {}: {source}", netns.display())]
    SetUp {
        netns: PathBuf,
        ifname: String,
        source: io::Error,
    },
    /// No rtnetlink socket could be opened in the pod namespace.
    #[error("opening an rtnetlink socket in {}: {source}", netns.display())]
    Netlink { netns: PathBuf, source: io::Error },
    /// Adding the pod address failed.
    #[error("adding address {address}/32 to {ifname} in {}: {source}", netns.display())]
    AddAddress {
        netns: PathBuf,
        ifname: String,
        address: Ipv4Addr,
        source: io::Error,
    },
    /// Adding a route failed; `route` is in `ip route` syntax.
    #[error("adding route `{route}` in {}: {source}", netns.display())]
    AddRoute {
        netns: PathBuf,
        route: String,
        source: io::Error,
    },
    /// Reading one property of an existing interface failed.
    #[error("reading the {what} of {ifname} in {}: {source}", netns.display())]
    ReadInterface {
        netns: PathBuf,
        ifname: String,
        what: &'static str,
        source: io::Error,
    },
    /// The interface exists but is not a TAP of ours (e.g. another plugin's veth).
    #[error("{ifname} in {} is not a multi-queue TAP; not deleting it", netns.display())]
    NotATap { netns: PathBuf, ifname: String },
    /// Removing the TAP failed.
    #[error("deleting TAP {ifname} in {}: {source}", netns.display())]
    DeleteTap {
        netns: PathBuf,
        ifname: String,
        source: io::Error,
    },
    /// Creation failed and removing the half-made TAP failed as well.
    #[error("{failed}; removing the half-made TAP {ifname} failed too: {source}")]
    Cleanup {
        failed: Box<PodnetError>,
        ifname: String,
        source: io::Error,
    },
}

/// Creates the pod interface `spec` describes, inside the pod's namespace: `lo` up, the
/// persistent multi-queue TAP with its MTU, up, the /32 address, the link route to
/// [`POD_GATEWAY`] and the default route via it. Returns the interface as the kernel reports
/// it.
///
/// Fails with [`PodnetError::CreateTap`] (`File exists`) when `spec.ifname` already exists,
/// leaving the existing interface untouched. Any failure after the TAP was made removes it.
pub fn create_pod_interface(spec: &PodInterfaceSpec) -> Result<PodInterface, PodnetError> {
    check_address(spec)?;
    in_netns(&spec.netns_path, || {
        let step = Step::new(&spec.netns_path, &spec.ifname);
        link::set_up("lo").map_err(|source| PodnetError::LoopbackUp {
            netns: step.netns(),
            source,
        })?;
        tap::create_persistent(&spec.ifname).map_err(|source| PodnetError::CreateTap {
            netns: step.netns(),
            ifname: step.ifname(),
            source,
        })?;
        // No half-made interface: whatever failed after creation, the TAP goes again.
        configure(spec, &step).map_err(|failed| match remove_tap(&spec.ifname) {
            Ok(()) => failed,
            Err(source) => PodnetError::Cleanup {
                failed: Box::new(failed),
                ifname: step.ifname(),
                source,
            },
        })
    })
}

/// Deletes the pod's TAP `ifname` in `netns_path`, at once, even while the dataplane still
/// holds queues of it (their reads and writes then fail). Succeeds when the interface or the
/// namespace does not exist, so it can be repeated (CNI DEL).
///
/// Refuses ([`PodnetError::NotATap`]) to delete an interface that is not a multi-queue TAP.
pub fn delete_pod_interface(netns_path: &Path, ifname: &str) -> Result<(), PodnetError> {
    let outcome = match netns::run_in_netns(netns_path, || Ok(remove_tap(ifname))) {
        Ok(outcome) => outcome,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PodnetError::EnterNetns {
                netns: netns_path.to_owned(),
                source,
            })
        }
    };
    outcome.map_err(|source| {
        // attach_queue (inside remove_tap) gets EINVAL for anything but a multi-queue TAP.
        if source.raw_os_error() == Some(libc::EINVAL) {
            PodnetError::NotATap {
                netns: netns_path.to_owned(),
                ifname: ifname.to_owned(),
            }
        } else {
            PodnetError::DeleteTap {
                netns: netns_path.to_owned(),
                ifname: ifname.to_owned(),
                source,
            }
        }
    })
}

/// Reads back the interface `ifname` in `netns_path`: index, MAC, primary IPv4 address, MTU.
///
/// A missing interface is [`PodnetError::ReadInterface`] with an `io::ErrorKind::NotFound`
/// source; an interface without an IPv4 address fails on the address.
pub fn pod_interface(netns_path: &Path, ifname: &str) -> Result<PodInterface, PodnetError> {
    in_netns(netns_path, || {
        read_interface(&Step::new(netns_path, ifname))
    })
}

/// Context for errors of the steps inside the namespace.
struct Step<'a> {
    netns: &'a Path,
    ifname: &'a str,
}

impl<'a> Step<'a> {
    fn new(netns: &'a Path, ifname: &'a str) -> Self {
        Step { netns, ifname }
    }

    fn netns(&self) -> PathBuf {
        self.netns.to_owned()
    }

    fn ifname(&self) -> String {
        self.ifname.to_owned()
    }

    fn read_error(&self, what: &'static str) -> impl FnOnce(io::Error) -> PodnetError + '_ {
        move |source| PodnetError::ReadInterface {
            netns: self.netns(),
            ifname: self.ifname(),
            what,
            source,
        }
    }
}

/// Runs `f` inside the namespace at `netns`, mapping a failure to enter it.
fn in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, PodnetError> + Send,
) -> Result<T, PodnetError> {
    match netns::run_in_netns(netns, || Ok(f())) {
        Ok(result) => result,
        Err(source) => Err(PodnetError::EnterNetns {
            netns: netns.to_owned(),
            source,
        }),
    }
}

/// Everything after the TAP exists, in the pod namespace.
fn configure(spec: &PodInterfaceSpec, step: &Step<'_>) -> Result<PodInterface, PodnetError> {
    let ifname = spec.ifname.as_str();
    let ifindex = link::ifindex(ifname).map_err(step.read_error("index"))?;
    link::set_mtu(ifname, spec.mtu_bytes).map_err(|source| PodnetError::SetMtu {
        netns: step.netns(),
        ifname: step.ifname(),
        mtu_bytes: spec.mtu_bytes,
        source,
    })?;
    link::set_up(ifname).map_err(|source| PodnetError::SetUp {
        netns: step.netns(),
        ifname: step.ifname(),
        source,
    })?;

    let mut netlink = Netlink::open().map_err(|source| PodnetError::Netlink {
        netns: step.netns(),
        source,
    })?;
    netlink
        .add_ipv4_address(ifindex, spec.address, 32)
        .map_err(|source| PodnetError::AddAddress {
            netns: step.netns(),
            ifname: step.ifname(),
            address: spec.address,
            source,
        })?;
    let routes = [
        (
            RouteSpec {
                dst: POD_GATEWAY,
                prefix_len: 32,
                gateway: None,
                oif: ifindex,
                scope: RouteScope::Link,
                onlink: false,
                prefsrc: None,
                mtu_bytes: None,
            },
            format!("{POD_GATEWAY} dev {ifname} scope link"),
        ),
        (
            RouteSpec {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(POD_GATEWAY),
                oif: ifindex,
                scope: RouteScope::Universe,
                onlink: false,
                prefsrc: None,
                mtu_bytes: None,
            },
            format!("default via {POD_GATEWAY} dev {ifname}"),
        ),
    ];
    for (route, text) in routes {
        netlink
            .add_ipv4_route(&route)
            .map_err(|source| PodnetError::AddRoute {
                netns: step.netns(),
                route: text,
                source,
            })?;
    }
    read_interface(step)
}

/// Reads the interface's properties in the current namespace.
fn read_interface(step: &Step<'_>) -> Result<PodInterface, PodnetError> {
    let ifname = step.ifname;
    Ok(PodInterface {
        ifname: step.ifname(),
        ifindex: link::ifindex(ifname).map_err(step.read_error("index"))?,
        mac: link::hwaddr(ifname).map_err(step.read_error("MAC address"))?,
        address: link::ipv4_addr(ifname).map_err(step.read_error("IPv4 address"))?,
        mtu_bytes: link::mtu(ifname).map_err(step.read_error("MTU"))?,
    })
}

/// Removes the TAP `ifname` in the current namespace; Ok when it does not exist.
///
/// Clearing persistence alone would leave the device alive while the dataplane holds queues,
/// so whatever remains is deleted through rtnetlink as well.
fn remove_tap(ifname: &str) -> io::Result<()> {
    // Attaches a queue first, which also proves the device is a multi-queue TAP.
    tap::delete_persistent(ifname)?;
    let ifindex = match link::ifindex(ifname) {
        Ok(ifindex) => ifindex,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    match Netlink::open()?.del_link(ifindex) {
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// Refuses addresses no pod can have, before anything is created.
fn check_address(spec: &PodInterfaceSpec) -> Result<(), PodnetError> {
    let address = spec.address;
    let reason = if address.is_unspecified() {
        Some("0.0.0.0 is not a host address")
    } else if address.is_loopback() {
        Some("loopback addresses cannot be pod addresses")
    } else if address.is_multicast() || address.is_broadcast() {
        Some("multicast and broadcast addresses cannot be pod addresses")
    } else if address.is_link_local() {
        Some("169.254.0.0/16 is reserved for the pod gateway")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(PodnetError::InvalidSpec {
            netns: spec.netns_path.clone(),
            ifname: spec.ifname.clone(),
            reason: format!("address {address}: {reason}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_mtu_subtracts_the_encapsulation_overhead() {
        assert_eq!(pod_mtu(1500, Encap::None), 1500);
        assert_eq!(pod_mtu(1500, Encap::Ipip), 1480);
        assert_eq!(pod_mtu(1500, Encap::Vxlan), 1450);
        assert_eq!(pod_mtu(9000, Encap::Vxlan), 8950);
        assert_eq!(pod_mtu(30, Encap::Vxlan), 0, "saturates");
    }

    fn spec(address: Ipv4Addr) -> PodInterfaceSpec {
        PodInterfaceSpec {
            netns_path: PathBuf::from("/var/run/netns/pod-a"),
            ifname: "eth0".to_owned(),
            address,
            mtu_bytes: 1450,
        }
    }

    #[test]
    fn addresses_no_pod_can_have_are_refused_before_any_syscall() {
        for bad in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::LOCALHOST,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
            POD_GATEWAY,
            Ipv4Addr::new(169, 254, 9, 9),
        ] {
            let err = check_address(&spec(bad)).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.starts_with("invalid pod interface eth0 for /var/run/netns/pod-a: "),
                "{text}"
            );
            assert!(text.contains(&bad.to_string()), "{text}");
        }
        assert!(check_address(&spec(Ipv4Addr::new(10, 65, 0, 5))).is_ok());
    }

    #[test]
    fn messages_name_the_step_the_interface_and_the_namespace() {
        let err = PodnetError::CreateTap {
            netns: PathBuf::from("/var/run/netns/x"),
            ifname: "eth0".to_owned(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(
            err.to_string(),
            "creating TAP eth0 in /var/run/netns/x: File exists (os error 17)"
        );
        let err = PodnetError::AddRoute {
            netns: PathBuf::from("/var/run/netns/x"),
            route: format!("default via {POD_GATEWAY} dev eth0"),
            source: io::Error::from_raw_os_error(libc::ENETUNREACH),
        };
        assert_eq!(
            err.to_string(),
            "adding route `default via 169.254.1.1 dev eth0` in /var/run/netns/x: \
             Network is unreachable (os error 101)"
        );
    }
}
