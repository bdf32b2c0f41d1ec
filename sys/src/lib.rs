//! The syscalls tapwire needs around pods, and nothing else.
//!
//! This crate owns every raw syscall the control plane makes (the dataplane's `io` module is
//! the only other place with `unsafe`):
//!
//! - [`netns`]: running a closure inside another network namespace, on a short-lived thread,
//!   so the caller's thread never changes namespace;
//! - [`tap`]: persistent multi-queue TAP devices — creating, attaching queues, deleting;
//! - [`link`]: interface ioctls (index, MTU, up, hardware and IPv4 address);
//! - [`netlink`]: a small rtnetlink client for addresses, routes (and `ip route get`
//!   lookups, and one table's routes as `ip route show table N`) and link deletion, and a
//!   watch on route changes;
//! - [`process`]: children that end with the thread that started them;
//! - [`unix`]: the daemons' private Unix sockets.
//!
//! Everything except [`netns::run_in_netns`] acts on the network namespace of the calling
//! thread. No policy lives here: which devices, addresses and routes a pod gets is decided by
//! the callers (`tapwire_control::podnet`, the dataplane).
//!
//! Errors are `std::io::Error`. Where a syscall failed, the error is the kernel's errno
//! (`raw_os_error()` works, e.g. `EEXIST`, `ENODEV`) and callers add the context they know.
//! Errors this crate detects itself carry a message naming the object (a namespace path, an
//! interface name) and a fitting [`std::io::ErrorKind`] (`NotFound`, `InvalidInput`, …).
//!
//! With the `testing` feature, the `testing` module offers scratch network namespaces for tests.

pub mod link;
pub mod netlink;
pub mod netns;
pub mod process;
pub mod tap;
#[cfg(feature = "testing")]
pub mod testing;
pub mod unix;

mod ifname;
