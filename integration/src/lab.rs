//! The lab itself: an underlay bridge, nodes plugged into it, pods on nodes, and the
//! dataplane processes of nodes. Everything is named with the lab's unique prefix and
//! removed when the [`Lab`] is dropped (also on panic, and on Ctrl-C through the signal
//! thread of [`crate::cleanup`]).
//!
//! Topology: namespace `<prefix>-ul` is the underlay network. Each underlay subnet *s* is
//! a bridge `br<s>` there (one L2 segment) carrying the router address `192.168.<s>.254`;
//! forwarding between the bridges is on. Each node is a namespace `<prefix>-<node>`
//! whose `eth0` is a veth into its subnet's bridge, addressed `192.168.<s>.<index>/24`
//! (MTU 1500), with a default route via its subnet's router, so nodes in different
//! subnets reach each other only through the router, as across a real L3 hop; pod blocks
//! are routable there once taught ([`Lab::route_on_router`]). Pods are
//! namespaces `<prefix>-<pod>` whose `eth0` is built by `tapwire_control::podnet`.
//! Subnet [`ETCD_SUBNET`] is kept for the etcd members of [`crate::etcd`], plugged in
//! the same way as nodes.

use std::fmt;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tapwire_control::podnet::{self, PodInterfaceSpec};
use tapwire_sys::link;

use crate::cleanup::{self, lock, Resources, Shared};
use crate::control::{Controller, Counters};
use crate::error::{LabError, Result};
use crate::netns::Netns;
use crate::process::{CommandOutput, Proc};

/// The underlay MTU of every node's `eth0`.
pub const UNDERLAY_MTU: u32 = 1500;
/// Environment variable naming the directory with the tapwire binaries.
pub const BIN_DIR_ENV: &str = "TAPWIRE_BIN_DIR";
/// How long a dataplane may take to open its control socket.
const DATAPLANE_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long control messages may take to be applied.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);
/// The underlay subnet (`192.168.254.0/24`) of the lab's etcd members
/// ([`crate::etcd`]); nodes cannot be added to it, so member addresses never collide
/// with node addresses.
pub const ETCD_SUBNET: u8 = 254;

/// Distinguishes the labs one process creates.
static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether the process runs as root; the namespace tests skip themselves otherwise.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The tools a lab shells out to, with their Debian packages.
const TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("bridge", "iproute2"),
    ("tcpdump", "tcpdump"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    // tapwire-control programs natOutgoing with it.
    ("nft", "nftables"),
];

/// Fails with [`LabError::ToolMissing`] for the first tool that is not installed.
pub fn check_tools() -> Result<()> {
    for (tool, package) in TOOLS {
        require_tool(tool, package)?;
    }
    Ok(())
}

/// Fails with [`LabError::ToolMissing`] (naming Debian package `package`) unless `tool`
/// is in `$PATH`, `/usr/sbin` or `/sbin`.
pub fn require_tool(tool: &'static str, package: &'static str) -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(tool).is_file());
    if found {
        Ok(())
    } else {
        Err(LabError::ToolMissing { tool, package })
    }
}

/// The directory holding the workspace binaries: `$TAPWIRE_BIN_DIR`, else the directory
/// of the running executable (a test binary lives in `target/<profile>/deps`, whose
/// parent holds the binaries).
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()
        .map_err(|source| LabError::io("locating the running executable", source))?;
    let mut dir = exe
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| LabError::Invalid(format!("{} has no parent", exe.display())))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of workspace binary `name`, which must exist.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::BinaryMissing { path })
    }
}

/// An IPv4 block (`10.65.1.0/26`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Block {
    /// Reads `a.b.c.d/len`.
    pub fn parse(text: &str) -> Option<Block> {
        let (addr, len) = text.trim().split_once('/')?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(Block {
            addr: addr.parse().ok()?,
            len,
        })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }

    /// The `n`-th address of the block.
    pub fn host(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + u32::from(n))
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A node: a namespace on the underlay with its `eth0`, and the identity control
/// announces for it (block, tunnel address, VTEP MAC).
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// 1-based; the node's block is `10.65.<index>.0/26`.
    pub index: u8,
    /// The underlay subnet: `192.168.<subnet>.0/24`.
    pub subnet: u8,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: [u8; 6],
    /// The IPAM block this node owns.
    pub block: Block,
    /// The node's tunnel address (the block's first address, as Calico allocates it).
    pub tunnel_ip: Ipv4Addr,
    /// The node's VTEP MAC (locally administered, `66:74:77:00:00:<index>`).
    pub vtep_mac: [u8; 6],
    netns: Netns,
}

impl Node {
    /// The node's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Runs a command in the node's namespace and returns its standard output.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        self.netns.exec(args)
    }

    /// The `n`-th pod address of the node's block (`n` ≥ 2 leaves room for the tunnel
    /// address).
    pub fn pod_ip(&self, n: u8) -> Ipv4Addr {
        self.block.host(n)
    }

    /// The node itself as a traffic endpoint (its namespace at its underlay address), so
    /// that the ping, transfer and capture helpers serve node ↔ pod traffic too.
    pub fn as_host(&self) -> Pod {
        Pod::new(
            &self.name,
            self,
            self.underlay_ip,
            self.underlay_mac,
            UNDERLAY_MTU,
            self.netns.clone(),
        )
    }
}

/// A pod: a namespace whose `eth0` is a tapwire TAP (or, for kernel nodes, a veth).
#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    /// The name of the node the pod runs on.
    pub node: String,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub mtu_bytes: u32,
    netns: Netns,
}

impl Pod {
    pub(crate) fn new(
        name: &str,
        node: &Node,
        ip: Ipv4Addr,
        mac: [u8; 6],
        mtu_bytes: u32,
        netns: Netns,
    ) -> Pod {
        Pod {
            name: name.to_string(),
            node: node.name.clone(),
            ip,
            mac,
            mtu_bytes,
            netns,
        }
    }

    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Runs a command in the pod (`ip netns exec`) and returns its standard output.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        self.netns.exec(args)
    }
}

/// A log file the lab prints when a test fails.
#[derive(Debug, Clone)]
struct Log {
    what: String,
    path: PathBuf,
}

/// A network-namespace lab. See the module documentation for the topology.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    dir: PathBuf,
    shared: Shared,
    registry_id: u64,
    underlay: Netns,
    nodes: Mutex<Vec<Node>>,
    subnets: Mutex<Vec<u8>>,
    logs: Mutex<Vec<Log>>,
}

impl Lab {
    /// Creates an empty lab: its temporary directory and the underlay namespace (each
    /// subnet's bridge appears with the subnet's first node).
    pub fn new() -> Result<Lab> {
        cleanup::install_signal_cleanup();
        check_tools()?;
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("tw{}x{n}", std::process::id());
        let shared: Shared = Arc::new(Mutex::new(Resources::default()));
        let registry_id = cleanup::register(&shared);
        let dir = std::env::temp_dir().join(&prefix);
        lock(&shared).add_dir(dir.clone());
        let underlay_name = format!("{prefix}-ul");
        // The lab exists before anything is made, so that any error below drops it and
        // its Drop removes whatever was made.
        let mut lab = Lab {
            prefix,
            dir,
            underlay: Netns::unmade(&shared, &underlay_name),
            shared,
            registry_id,
            nodes: Mutex::new(Vec::new()),
            subnets: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
        };
        std::fs::create_dir_all(&lab.dir)
            .map_err(|source| LabError::io(format!("creating {}", lab.dir.display()), source))?;
        lab.underlay = Netns::create(&lab.shared, &underlay_name)?;
        lab.underlay.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(lab)
    }

    /// The lab's unique name prefix (`tw<pid>x<n>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The lab's temporary directory (sockets, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlay namespace (holds a bridge `br<subnet>` per subnet).
    pub fn underlay(&self) -> &Netns {
        &self.underlay
    }

    /// Runs `cmd` in the host namespace to completion within `timeout`, with `input` on
    /// its standard input (`None`: `/dev/null`), registered with the lab while it runs.
    /// Any exit status is returned; [`CommandOutput::success`] requires success.
    pub fn run(
        &self,
        cmd: std::process::Command,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        crate::process::run_with_input(&self.shared, cmd, input, timeout)
    }

    /// The lab's resources, to register processes and namespaces with.
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Creates a namespace named `<prefix>-<name>`.
    pub fn create_netns(&self, name: &str) -> Result<Netns> {
        check_name(name)?;
        Netns::create(&self.shared, &format!("{}-{name}", self.prefix))
    }

    /// Adds a node in underlay subnet 0 (`192.168.0.0/24`).
    pub fn add_node(&self, name: &str) -> Result<Node> {
        self.add_node_in_subnet(name, 0)
    }

    /// Adds a node in underlay subnet `subnet` (`192.168.<subnet>.0/24`).
    pub fn add_node_in_subnet(&self, name: &str, subnet: u8) -> Result<Node> {
        let index = {
            let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
            if nodes.iter().any(|n| n.name == name) {
                return Err(LabError::Invalid(format!("node {name} exists already")));
            }
            u8::try_from(nodes.len() + 1)
                .ok()
                .filter(|i| *i < 250)
                .ok_or_else(|| LabError::Invalid("a lab holds at most 249 nodes".into()))?
        };
        if subnet == 255 {
            return Err(LabError::Invalid(
                "underlay subnet 255 is not usable".into(),
            ));
        }
        if subnet == ETCD_SUBNET {
            return Err(LabError::Invalid(format!(
                "underlay subnet {ETCD_SUBNET} is reserved for the lab's etcd members"
            )));
        }
        let netns = self.create_netns(name)?;
        let (underlay_ip, underlay_mac) =
            self.attach_to_underlay(&netns, &format!("n{index}"), subnet, index)?;

        let block = Block {
            addr: Ipv4Addr::new(10, 65, index, 0),
            len: 26,
        };
        let node = Node {
            name: name.to_string(),
            index,
            subnet,
            underlay_ip,
            underlay_mac,
            block,
            tunnel_ip: block.host(0),
            vtep_mac: [0x66, 0x74, 0x77, 0, 0, index],
            netns,
        };
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(node.clone());
        Ok(node)
    }

    /// Plugs `netns` into underlay subnet `subnet` as host `host` (1-253), the way every
    /// underlay host is plugged: a veth whose underlay end `port` joins bridge
    /// `br<subnet>` (created on first use) and whose other end is `eth0` in `netns`, MTU
    /// [`UNDERLAY_MTU`], `192.168.<subnet>.<host>/24`, default route via the subnet's
    /// router. Returns the address and `eth0`'s MAC.
    pub(crate) fn attach_to_underlay(
        &self,
        netns: &Netns,
        port: &str,
        subnet: u8,
        host: u8,
    ) -> Result<(Ipv4Addr, [u8; 6])> {
        if subnet == 255 {
            return Err(LabError::Invalid(
                "underlay subnet 255 is not usable".into(),
            ));
        }
        if !(1..=253).contains(&host) {
            return Err(LabError::Invalid(format!(
                "underlay host number {host}: use 1-253 (254 is the router)"
            )));
        }
        let gateway = Ipv4Addr::new(192, 168, subnet, 254);
        self.ensure_subnet(subnet, gateway)?;

        self.underlay.add_veth_to_eth0(port, netns)?;
        self.underlay
            .ip(&["link", "set", port, "master", &format!("br{subnet}"), "up"])?;
        let ip = Ipv4Addr::new(192, 168, subnet, host);
        netns.ip(&[
            "link",
            "set",
            "eth0",
            "mtu",
            &UNDERLAY_MTU.to_string(),
            "up",
        ])?;
        netns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        netns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
            "dev",
            "eth0",
        ])?;
        let mac = netns.run(|| link::hwaddr("eth0"))?;
        Ok((ip, mac))
    }

    /// Creates `subnet`'s bridge with its router address the first time it is used.
    fn ensure_subnet(&self, subnet: u8, gateway: Ipv4Addr) -> Result<()> {
        let mut subnets = self.subnets.lock().unwrap_or_else(PoisonError::into_inner);
        if !subnets.contains(&subnet) {
            let bridge = format!("br{subnet}");
            let ul = &self.underlay;
            ul.ip(&["link", "add", &bridge, "type", "bridge"])?;
            ul.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
            ul.ip(&["link", "set", &bridge, "up"])?;
            subnets.push(subnet);
        }
        Ok(())
    }

    /// Teaches the lab's router (the underlay namespace) that `dst` lies behind the
    /// underlay address `via` (`ip route replace DST via VIA` there): the route a router
    /// peering with the nodes would learn by BGP. With a node's pod block routed this
    /// way, unencapsulated pod traffic crosses between subnets.
    pub fn route_on_router(&self, dst: Block, via: Ipv4Addr) -> Result<()> {
        self.underlay.ip(&[
            "route",
            "replace",
            &dst.to_string(),
            "via",
            &via.to_string(),
        ])?;
        Ok(())
    }

    /// Every node added so far.
    pub fn nodes(&self) -> Vec<Node> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds a pod on `node`: namespace `<prefix>-<name>`, `eth0` a persistent multi-queue
    /// TAP built by podnet with `ip`/32 and MTU `mtu_bytes` (normally
    /// `pod_mtu(UNDERLAY_MTU, mode.encap())`). The dataplane attaches once control sends
    /// the endpoint.
    pub fn add_pod(&self, node: &Node, name: &str, ip: Ipv4Addr, mtu_bytes: u32) -> Result<Pod> {
        let netns = self.create_netns(name)?;
        let spec = PodInterfaceSpec {
            netns_path: netns.path(),
            ifname: "eth0".into(),
            address: ip,
            mtu_bytes,
        };
        let iface = podnet::create_pod_interface(&spec).map_err(|source| LabError::Podnet {
            pod: name.to_string(),
            source,
        })?;
        Ok(Pod::new(name, node, ip, iface.mac, iface.mtu_bytes, netns))
    }

    /// Records a log file to print if the test fails.
    pub fn add_log(&self, what: impl Into<String>, path: PathBuf) {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Log {
                what: what.into(),
                path,
            });
    }

    /// Starts `tapwire-dataplane` with `workers` workers in `node`'s namespace (stderr
    /// to `<lab dir>/<node>-dataplane.log`), waits for its control socket and connects.
    pub fn start_dataplane(&self, node: &Node, workers: usize) -> Result<Dataplane> {
        let socket = self.dir.join(format!("{}.sock", node.name));
        let log = self.dir.join(format!("{}-dataplane.log", node.name));
        let log_file = File::create(&log)
            .map_err(|source| LabError::io(format!("creating {}", log.display()), source))?;
        self.add_log(format!("tapwire-dataplane on {}", node.name), log.clone());

        let mut cmd = dataplane_command(node, &socket, workers)?;
        let proc = spawn_logging_to(
            self,
            &mut cmd,
            log_file,
            format!("tapwire-dataplane on {}", node.name),
        )?;
        let mut dataplane = Dataplane {
            node: node.clone(),
            proc,
            socket,
            log,
            controller: None,
        };
        dataplane.controller = Some(dataplane.wait_and_connect()?);
        Ok(dataplane)
    }

    /// Prints every recorded log to stderr (the test harness shows it with the failure).
    pub fn print_logs(&self) {
        let logs = self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for log in logs {
            let text = std::fs::read_to_string(&log.path).unwrap_or_else(|e| format!("({e})"));
            note(format_args!(
                "----- {} ({}) -----\n{text}",
                log.what,
                log.path.display()
            ));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            note(format_args!(
                "tapwire lab {}: test failed; logs follow",
                self.prefix
            ));
            self.print_logs();
        }
        lock(&self.shared).kill_all();
        // Let killed processes exit, so their namespaces and TAP queues go with them.
        std::thread::sleep(Duration::from_millis(50));
        let failures = lock(&self.shared).remove_namespaces_and_dirs();
        for failure in failures {
            note(format_args!(
                "tapwire lab {} cleanup: {failure}",
                self.prefix
            ));
        }
        cleanup::unregister(self.registry_id);
    }
}

/// The command that runs `tapwire-dataplane` in `node`'s namespace with its control
/// socket at `socket`, `workers` workers (at least one) and `eth0` as the underlay.
pub(crate) fn dataplane_command(node: &Node, socket: &Path, workers: usize) -> Result<Command> {
    let bin = binary("tapwire-dataplane")?.display().to_string();
    let socket = socket.display().to_string();
    let workers = workers.max(1).to_string();
    Ok(node.netns().command(&[
        &bin,
        "--socket",
        &socket,
        "--workers",
        &workers,
        "--underlay-interface",
        "eth0",
    ]))
}

/// Starts `cmd` with standard error to `log` (plain text, `TAPWIRE_LOG=info` unless set)
/// and the other standard streams closed, registered with `lab` under `label`.
pub(crate) fn spawn_logging_to(
    lab: &Lab,
    cmd: &mut Command,
    log: File,
    label: String,
) -> Result<Proc> {
    if std::env::var_os("TAPWIRE_LOG").is_none() {
        cmd.env("TAPWIRE_LOG", "info");
    }
    // Plain text in the log file.
    cmd.env("NO_COLOR", "1");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    Proc::spawn(lab.shared(), label, cmd)
}

/// Writes a line to stderr, ignoring failures: teardown output must never panic (a
/// closed stderr pipe would turn an unwinding drop into an abort that skips cleanup).
pub(crate) fn note(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{args}");
}

/// Node and pod names become namespace names: keep them short and plain.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LabError::Invalid(format!(
            "name {name:?}: use 1-24 characters from [a-z0-9-]"
        )))
    }
}

/// A running `tapwire-dataplane` and the control connection to it.
#[derive(Debug)]
pub struct Dataplane {
    node: Node,
    proc: Proc,
    socket: PathBuf,
    log: PathBuf,
    controller: Option<Controller>,
}

impl Dataplane {
    /// The node the dataplane runs on.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The dataplane's process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The control socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// The dataplane's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The current control connection.
    pub fn control(&mut self) -> Result<&mut Controller> {
        let node = self.node.name.clone();
        self.controller.as_mut().ok_or(LabError::Control {
            node,
            reason: "not connected".into(),
        })
    }

    /// Opens an additional control connection; the dataplane then treats the newest
    /// connection as control and closes the previous one.
    pub fn connect(&mut self) -> Result<Controller> {
        self.check_running()?;
        Controller::connect(&self.node.name, &self.socket)
    }

    /// Replaces the current control connection with a new one.
    pub fn reconnect(&mut self) -> Result<&mut Controller> {
        let controller = self.connect()?;
        self.controller = Some(controller);
        self.control()
    }

    /// The dataplane's counters, through the current connection.
    pub fn counters(&mut self) -> Result<Counters> {
        self.check_running()?;
        self.control()?.counters(CONTROL_TIMEOUT)
    }

    /// An error with the log tail if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.proc.try_wait()? {
            None => Ok(()),
            Some(status) => Err(LabError::DataplaneExited {
                node: self.node.name.clone(),
                status: status.to_string(),
                log_tail: tail(&self.log(), 40),
            }),
        }
    }

    /// Waits for the control socket to accept a connection.
    fn wait_and_connect(&mut self) -> Result<Controller> {
        let deadline = Instant::now() + DATAPLANE_START_TIMEOUT;
        loop {
            self.check_running()?;
            if self.socket.exists() {
                if let Ok(controller) = Controller::connect(&self.node.name, &self.socket) {
                    return Ok(controller);
                }
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "waiting for tapwire-dataplane on {} to open {}; log:\n{}",
                        self.node.name,
                        self.socket.display(),
                        tail(&self.log(), 40)
                    ),
                    after: DATAPLANE_START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
