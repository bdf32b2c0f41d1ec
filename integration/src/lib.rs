//! A network-namespace lab for tapwire's end-to-end tests and the `tapwire-lab` tool.
//!
//! A [`Lab`] builds, inside one machine and under a unique name prefix (`tw<pid>x<n>`):
//!
//! - an underlay in namespace `<prefix>-ul`: a bridge per subnet, routed to each other,
//!   with one veth per node whose node end is `eth0` in the node's namespace
//!   (`192.168.<subnet>.<index>/24`, MTU 1500);
//! - nodes ([`Lab::add_node`]) and pods ([`Lab::add_pod`]: a namespace whose `eth0` is a
//!   persistent multi-queue TAP built by `tapwire_control::podnet`);
//! - `tapwire-dataplane` processes ([`Lab::start_dataplane`]) with a small control client
//!   ([`Controller`]) that pushes Felix-shaped desired state ([`desired`]) and reads
//!   endpoint status and counters;
//! - traffic and observation helpers: [`ping`], a byte-verified [`tcp_transfer`],
//!   [`iperf3`], underlay captures with tcpdump ([`capture`]), raw frames from inside a
//!   pod ([`rawsock`]), and the assertions the tests share on them ([`check`]);
//! - kernel-dataplane peers wired the way Calico's Linux dataplane wires them
//!   ([`kernel`]), for interoperability tests and baselines.
//!
//! [`Cluster`] puts these together into the 2-node × 2-pod cluster the dataplane tests
//! use, with the lab itself playing the control plane. [`ControlPlane`] runs tapwire's
//! real control plane instead: `tapwire-control` next to every dataplane, one shared file
//! datastore, pods added through the `tapwire` CNI plugin invoked as a container runtime
//! invokes it ([`cni`], configuration lists with `prevResult` included), and the cluster
//! driven with `tapwirectl` ([`ctl`]). [`EtcdCluster`] runs a 3-member (or N-member)
//! etcd cluster with mutual TLS in namespaces on the underlay ([`etcd`]), for the etcd
//! datastore. With [`ControlPlane::with_bird`] the nodes route by BGP, each with the BIRD
//! its control runs; [`bird::RouterBird`] is a fabric router with its own stock BIRD.
//!
//! Cleanup: dropping the lab kills every process it started (by PID) and deletes every
//! namespace it created, also when a test panics (the dataplane logs are printed first);
//! Ctrl-C, SIGTERM and SIGHUP do the same for every live lab before the process exits.
//!
//! A [`ControlPlane`] built with [`ControlPlane::serving_metrics`] runs both daemons of
//! every node with a metrics endpoint on the node's loopback, which [`scrape`] reads as
//! Prometheus does.
//! Every command and traffic run is bounded in time.
//!
//! The lab needs root, iproute2, tcpdump, iputils-ping and iperf3 (and, for chained
//! CNI tests, Debian's containernetworking-plugins; for etcd, etcd-server, etcd-client
//! and openssl), and the workspace binaries built (`cargo build --workspace --bins`); they are found next to the running
//! executable (a test's `target/<profile>/deps/..`) or in `$TAPWIRE_BIN_DIR`.
//!
//! ```no_run
//! use tapwire_integration::{ping, Cluster, Lab, Mode};
//!
//! let lab = Lab::new()?;
//! let cluster = Cluster::start(&lab, Mode::Vxlan)?;
//! let (a, c) = (cluster.pod("pod-a")?, cluster.pod("pod-c")?);
//! let stats = ping(a, c.ip, 5)?;
//! assert_eq!(stats.loss_percent, 0.0);
//! # Ok::<(), tapwire_integration::LabError>(())
//! ```

pub mod bird;
pub mod capture;
pub mod check;
mod cleanup;
pub mod cluster;
pub mod cni;
pub mod control;
pub mod controlplane;
pub mod ctl;
pub mod desired;
mod error;
pub mod etcd;
pub mod kernel;
pub mod lab;
pub mod netns;
pub mod process;
pub mod rawsock;
pub mod scrape;
pub mod traffic;

pub use cleanup::install_signal_cleanup;
pub use cluster::{push_snapshot, Cluster, ClusterSpec};
pub use control::{Controller, Counters};
pub use controlplane::{CniPod, ControlPlane, Daemon, LabDatastore, Sandbox};
pub use ctl::{Table, Tapwirectl};
pub use desired::Mode;
pub use error::{CniFailure, LabError, Result};
pub use etcd::{EtcdCluster, EtcdTls};
pub use lab::{is_root, Dataplane, Lab, Node, Pod};
pub use netns::Netns;
pub use traffic::{iperf3, ping, tcp_transfer, PingStats, Transfer, TransferReport};

/// For tests: prints why a test is skipped and returns true when not running as root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        false
    } else {
        eprintln!("skipping {test}: network-namespace tests need root");
        true
    }
}
