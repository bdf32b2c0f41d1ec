//! Interface ioctls in the calling thread's network namespace: index, MTU, up, hardware
//! address, IPv4 address.
//!
//! Each call opens its own `AF_INET` datagram socket (the classic handle for `SIOC*IF*`
//! ioctls) and closes it again; these are setup-time calls, never per packet.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::ifname;

/// The ifindex of interface `name`.
///
/// Errors: `InvalidInput` for a malformed name; `NotFound` (message naming the interface)
/// when there is no such interface in this namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    ifname::index_of(name)?.ok_or_else(|| ifname::not_found(name))
}

/// Sets the MTU of interface `name` (`SIOCSIFMTU`). The kernel refuses values outside the
/// device's range with `EINVAL`.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mtu = libc::c_int::try_from(mtu).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("MTU {mtu} for {name} is out of range"),
        )
    })?;
    let mut req = ifname::ifreq(name)?;
    req.ifr_ifru.ifru_mtu = mtu;
    ioctl(libc::SIOCSIFMTU, &mut req)
}

/// The MTU of interface `name` (`SIOCGIFMTU`).
pub fn mtu(name: &str) -> io::Result<u32> {
    let mut req = ifname::ifreq(name)?;
    ioctl(libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote the `ifru_mtu` member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("kernel reported a negative MTU {mtu} for {name}"),
        )
    })
}

/// Brings interface `name` administratively up (sets `IFF_UP`, keeps the other flags).
pub fn set_up(name: &str) -> io::Result<()> {
    let mut req = ifname::ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote the `ifru_flags` member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    // IFF_UP is 0x1; the flags field is a C short.
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(libc::SIOCSIFFLAGS, &mut req)
}

/// Whether interface `name` is administratively up (`IFF_UP`).
pub fn is_up(name: &str) -> io::Result<bool> {
    let mut req = ifname::ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the kernel wrote the `ifru_flags` member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags & libc::IFF_UP as libc::c_short != 0)
}

/// The Ethernet (MAC) address of interface `name` (`SIOCGIFHWADDR`).
///
/// Errors: `InvalidData` when the interface is not Ethernet-like (a TUN device, a tunnel);
/// loopback counts as Ethernet-like and reports all zeros.
pub fn hwaddr(name: &str) -> io::Result<[u8; 6]> {
    let mut req = ifname::ifreq(name)?;
    ioctl(libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR succeeded, so the kernel wrote the `ifru_hwaddr` member.
    let addr = unsafe { req.ifr_ifru.ifru_hwaddr };
    if addr.sa_family != libc::ARPHRD_ETHER && addr.sa_family != libc::ARPHRD_LOOPBACK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "interface {name} has hardware type {}, not Ethernet",
                addr.sa_family
            ),
        ));
    }
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(addr.sa_data.iter()) {
        // `c_char` is i8 or u8 depending on the target; this is a byte copy either way.
        *dst = src as u8;
    }
    Ok(mac)
}

/// The primary IPv4 address of interface `name` (`SIOCGIFADDR`).
///
/// Errors: `EADDRNOTAVAIL` from the kernel when the interface has no IPv4 address.
pub fn ipv4_addr(name: &str) -> io::Result<Ipv4Addr> {
    ipv4_ioctl(name, libc::SIOCGIFADDR)
}

/// The prefix length of interface `name`'s primary IPv4 address (`SIOCGIFNETMASK`).
pub fn ipv4_prefix_len(name: &str) -> io::Result<u8> {
    let mask = u32::from(ipv4_ioctl(name, libc::SIOCGIFNETMASK)?);
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{name} has a non-contiguous netmask {}",
                Ipv4Addr::from(mask)
            ),
        ));
    }
    Ok(mask.leading_ones() as u8)
}

/// Issues an ioctl that returns an `AF_INET` address in `ifru_addr` (address or netmask).
fn ipv4_ioctl(name: &str, request: libc::c_ulong) -> io::Result<Ipv4Addr> {
    let mut req = ifname::ifreq(name)?;
    ioctl(request, &mut req)?;
    // SAFETY: the ioctl succeeded, so the kernel wrote an address into the `ifru_addr`
    // member (SIOCGIFNETMASK uses the same union member as SIOCGIFADDR).
    let addr = unsafe { req.ifr_ifru.ifru_addr };
    if addr.sa_family != libc::AF_INET as libc::sa_family_t {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "kernel returned address family {} for {name}",
                addr.sa_family
            ),
        ));
    }
    // struct sockaddr_in: family (2 bytes), port (2 bytes), then the address in network
    // order, which lands in sa_data[2..6].
    let mut octets = [0u8; 4];
    for (dst, &src) in octets.iter_mut().zip(addr.sa_data[2..6].iter()) {
        *dst = src as u8;
    }
    Ok(Ipv4Addr::from(octets))
}

/// Issues interface ioctl `request` with `req` on a fresh `AF_INET` datagram socket.
fn ioctl(request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    let sock = control_socket()?;
    // SAFETY: every request passed here is a SIOC*IF* ioctl that reads and/or writes exactly
    // one `struct ifreq`, and `req` is a valid, exclusively borrowed one for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An `AF_INET` datagram socket in the calling thread's namespace, for ioctls only.
fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every process has `lo` in its namespace, so these need no root and no devices.

    #[test]
    fn loopback_is_index_one_with_a_zero_mac() {
        assert_eq!(ifindex("lo").expect("lo exists"), 1);
        assert_eq!(hwaddr("lo").expect("lo has a hw address"), [0; 6]);
        assert!(mtu("lo").expect("lo has an MTU") >= 1500);
    }

    #[test]
    fn missing_interface_is_not_found_and_named() {
        let err = ifindex("tw-missing0").expect_err("no such interface");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("tw-missing0"), "{err}");

        let err = mtu("tw-missing0").expect_err("no such interface");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn bad_names_never_reach_the_kernel() {
        let err = set_mtu("a/b", 1500).expect_err("invalid name");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn mtu_beyond_c_int_is_refused() {
        let err = set_mtu("lo", u32::MAX).expect_err("out of range");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
