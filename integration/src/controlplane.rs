//! tapwire's own control plane in a lab, run the way an operator runs it: on every node,
//! `tapwire-dataplane` and `tapwire-control --config <node>.toml` in the node's namespace,
//! all controls sharing one file datastore directory (as controls on one host do); pods
//! added and removed by invoking the `tapwire` CNI plugin as a container runtime does
//! ([`crate::cni`]); the cluster read and changed with `tapwirectl` ([`Tapwirectl`]).
//!
//! Unlike [`crate::Cluster`], nothing here pushes desired state by hand: routes, VTEPs and
//! endpoints reach the dataplanes only through `tapwire-control`. Processes are started
//! and stopped by PID (for restart tests); their logs (appended across restarts) are
//! printed when a test fails.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tapwire_control::api::{self, NodeStatusReply, Reply, Request};
use tapwire_control::datastore::{self, Datastore, DatastoreExt};
use tapwire_control::model::{IpamBlock, IpamHandle, NodeConfig, WorkloadEndpoint};
use tapwire_control::podnet;

use crate::cni::{CniArgs, CniCommand, PluginRun, Runtime, CNI_VERSION};
use crate::control::Counters;
use crate::ctl::Tapwirectl;
use crate::error::{LabError, Result};
use crate::lab::{
    bin_dir, binary, dataplane_command, spawn_logging_to, tail, Block, Lab, Node, Pod,
};
use crate::netns::Netns;
use crate::process::{CommandOutput, Proc};

/// The network name in the CNI configuration (Calico's).
pub const NETWORK_NAME: &str = "k8s-pod-network";
/// The Kubernetes namespace of the lab's pods.
pub const POD_NAMESPACE: &str = "default";
/// Where Debian's containernetworking-plugins are installed.
pub const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";
/// How long an agent may take to come up with its dataplane in sync.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an API call of the lab's own (status polling) may take.
const API_TIMEOUT: Duration = Duration::from_secs(5);

/// The two processes of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Control,
    Dataplane,
}

/// One node of a [`ControlPlane`]: its namespace, sockets, config file and processes.
#[derive(Debug)]
struct Member {
    node: Node,
    config: PathBuf,
    api_socket: PathBuf,
    dataplane_socket: PathBuf,
    dataplane_log: PathBuf,
    control_log: PathBuf,
    dataplane: Option<Proc>,
    control: Option<Proc>,
}

/// A pod's network namespace before CNI runs, and the runtime's arguments for it.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The pod name (also its Kubernetes name in `CNI_ARGS`).
    pub name: String,
    pub netns: Netns,
    pub args: CniArgs,
}

/// A pod added through the CNI plugin, with what the runtime keeps about it.
#[derive(Debug, Clone)]
pub struct CniPod {
    pub pod: Pod,
    /// The arguments of its ADD (the same identify it for CHECK and DEL).
    pub args: CniArgs,
    /// The CNI result of its ADD (what a runtime caches).
    pub result: Value,
    /// How long the plugin's ADD took.
    pub add_elapsed: Duration,
}

/// Where a lab control plane keeps its state.
#[derive(Debug, Clone)]
pub enum LabDatastore {
    /// The embedded file store: one directory every node's control shares.
    File(PathBuf),
    /// etcd (see [`crate::EtcdCluster`]): the `[datastore]` section of every node.toml,
    /// and a namespace from which the lab itself reaches the endpoints (for its checks).
    Etcd {
        section: String,
        reach_from: PathBuf,
    },
}

/// A lab cluster run by `tapwire-control`; see the module documentation.
#[derive(Debug)]
pub struct ControlPlane<'lab> {
    lab: &'lab Lab,
    datastore: LabDatastore,
    workers: usize,
    /// With BGP: every node's `networking_backend = "bird"`, with this graceful restart
    /// time (s).
    bird: Option<u16>,
    members: Mutex<Vec<Member>>,
    pods: Mutex<Vec<CniPod>>,
    /// Whether nodes serve metrics ([`ControlPlane::serving_metrics`]).
    metrics: bool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'lab> ControlPlane<'lab> {
    /// An empty control plane in `lab`: the shared datastore directory, and a check that
    /// every binary it runs has been built.
    pub fn new(lab: &'lab Lab) -> Result<ControlPlane<'lab>> {
        let datastore = lab.dir().join("datastore");
        std::fs::create_dir_all(&datastore)
            .map_err(|source| LabError::io(format!("creating {}", datastore.display()), source))?;
        ControlPlane::on(lab, LabDatastore::File(datastore))
    }

    /// An empty control plane in `lab` whose nodes keep their state in `etcd`.
    pub fn on_etcd(lab: &'lab Lab, etcd: &crate::EtcdCluster<'_>) -> Result<ControlPlane<'lab>> {
        ControlPlane::on(
            lab,
            LabDatastore::Etcd {
                section: etcd.datastore_toml(),
                reach_from: etcd.member_netns(0)?.path(),
            },
        )
    }

    fn on(lab: &'lab Lab, datastore: LabDatastore) -> Result<ControlPlane<'lab>> {
        for name in [
            "tapwire-dataplane",
            "tapwire-control",
            "tapwire",
            "tapwirectl",
        ] {
            binary(name)?;
        }
        Ok(ControlPlane {
            lab,
            datastore,
            workers: 2,
            bird: None,
            members: Mutex::new(Vec::new()),
            pods: Mutex::new(Vec::new()),
            metrics: false,
        })
    }

    /// Nodes added from now on serve Prometheus metrics on their namespace's loopback:
    /// the dataplane at [`crate::scrape::DATAPLANE_METRICS_ADDR`] (`--metrics-addr`), the
    /// control at [`crate::scrape::CONTROL_METRICS_ADDR`] (`metrics_addr` in node.toml).
    pub fn serving_metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Scrapes node `name`'s metrics of `daemon` (see [`crate::scrape::scrape`]).
    pub fn scrape(&self, name: &str, daemon: Daemon) -> Result<crate::scrape::Exposition> {
        let addr = match daemon {
            Daemon::Control => crate::scrape::CONTROL_METRICS_ADDR,
            Daemon::Dataplane => crate::scrape::DATAPLANE_METRICS_ADDR,
        };
        crate::scrape::scrape(self.node(name)?.netns(), addr)
    }

    /// A control plane in `lab` running nodes `names` (underlay subnet 0, added and
    /// started in order).
    pub fn with_nodes(lab: &'lab Lab, names: &[&str]) -> Result<ControlPlane<'lab>> {
        ControlPlane::new(lab)?.started(&in_subnet_0(names), None)
    }

    /// [`ControlPlane::with_nodes`], then `pool` (an IPPool document, e.g. from
    /// [`ippool_yaml`]) applied with `tapwirectl` on the first node.
    pub fn with_pool(lab: &'lab Lab, names: &[&str], pool: &str) -> Result<ControlPlane<'lab>> {
        ControlPlane::new(lab)?.started(&in_subnet_0(names), Some(pool))
    }

    /// [`ControlPlane::with_pool`] with each node `(name, subnet)` in its own underlay
    /// subnet: nodes of different subnets reach each other through the lab's router.
    pub fn with_pool_in_subnets(
        lab: &'lab Lab,
        nodes: &[(&str, u8)],
        pool: &str,
    ) -> Result<ControlPlane<'lab>> {
        ControlPlane::new(lab)?.started(nodes, Some(pool))
    }

    /// [`ControlPlane::with_pool`] with the nodes' state in `etcd`.
    pub fn with_pool_on_etcd(
        lab: &'lab Lab,
        etcd: &crate::EtcdCluster<'_>,
        names: &[&str],
        pool: &str,
    ) -> Result<ControlPlane<'lab>> {
        ControlPlane::on_etcd(lab, etcd)?.started(&in_subnet_0(names), Some(pool))
    }

    /// Makes the nodes added from now on route by BGP: `networking_backend = "bird"`,
    /// BIRD's files in `<lab dir>/<node>-bird/` (its log among the lab's), and peers
    /// keeping a node's routes for `graceful_restart_secs` while its BIRD is down.
    pub fn with_bird(mut self, graceful_restart_secs: u16) -> Result<ControlPlane<'lab>> {
        crate::bird::require_bird()?;
        self.bird = Some(graceful_restart_secs);
        Ok(self)
    }

    /// Adds and starts nodes `(name, subnet)`, then applies `pool` (if any) on the first.
    pub fn started(self, nodes: &[(&str, u8)], pool: Option<&str>) -> Result<ControlPlane<'lab>> {
        for (name, subnet) in nodes {
            self.add_node_in_subnet(name, *subnet)?;
        }
        if let Some(pool) = pool {
            let (first, _) = nodes.first().ok_or_else(|| {
                LabError::Invalid("a control plane with a pool needs at least one node".into())
            })?;
            self.apply(first, pool)?;
        }
        Ok(self)
    }

    /// The small cluster most tests start from: node1 and node2 with the default IPIP
    /// pool, pod `pod-a` on node1 and `pod-c` on node2, each reaching the other.
    pub fn two_nodes_two_pods(lab: &'lab Lab) -> Result<(ControlPlane<'lab>, [Pod; 2])> {
        ControlPlane::with_pool(lab, &["node1", "node2"], &default_ipip_pool())?.with_two_pods()
    }

    /// [`ControlPlane::two_nodes_two_pods`] with the nodes' state in `etcd`.
    pub fn two_nodes_two_pods_on_etcd(
        lab: &'lab Lab,
        etcd: &crate::EtcdCluster<'_>,
    ) -> Result<(ControlPlane<'lab>, [Pod; 2])> {
        ControlPlane::with_pool_on_etcd(lab, etcd, &["node1", "node2"], &default_ipip_pool())?
            .with_two_pods()
    }

    fn with_two_pods(self) -> Result<(ControlPlane<'lab>, [Pod; 2])> {
        let cp = self;
        let pods = cp.add_pods([("node1", "pod-a"), ("node2", "pod-c")])?;
        let [a, c] = &pods;
        crate::traffic::wait_reachable(a, c.ip, crate::check::REACHABLE_WITHIN)?;
        crate::traffic::wait_reachable(c, a.ip, crate::check::REACHABLE_WITHIN)?;
        Ok((cp, pods))
    }

    /// `tapwirectl apply -f -` of `documents` on node `name`; a non-zero exit is an error
    /// carrying what it printed. Returns its standard output.
    pub fn apply(&self, name: &str, documents: &str) -> Result<String> {
        self.ctl(name)?.apply(documents)?.success()
    }

    /// The lab this runs in.
    pub fn lab(&self) -> &'lab Lab {
        self.lab
    }

    /// The shared datastore directory (`[datastore] path` of every node) of a control
    /// plane on the file store.
    pub fn datastore_dir(&self) -> Result<&Path> {
        match &self.datastore {
            LabDatastore::File(dir) => Ok(dir),
            LabDatastore::Etcd { .. } => Err(LabError::Invalid(
                "this control plane keeps its state in etcd, not in a directory".into(),
            )),
        }
    }

    /// Adds a node in underlay subnet 0 and starts its dataplane and control; returns
    /// once its control reports the dataplane in sync.
    pub fn add_node(&self, name: &str) -> Result<Node> {
        self.add_node_in_subnet(name, 0)
    }

    /// Adds a node in underlay subnet `subnet` (see [`Lab::add_node_in_subnet`]) and
    /// starts it.
    pub fn add_node_in_subnet(&self, name: &str, subnet: u8) -> Result<Node> {
        let node = self.add_node_without_control(name, subnet)?;
        self.start_control(name)?;
        Ok(node)
    }

    /// Adds a node in underlay subnet `subnet` and starts only its dataplane: its
    /// configuration is written, and [`ControlPlane::start_control`] (or
    /// [`ControlPlane::spawn_control`], to time the start) starts its agent.
    pub fn add_node_without_control(&self, name: &str, subnet: u8) -> Result<Node> {
        let node = self.lab.add_node_in_subnet(name, subnet)?;
        let dir = self.lab.dir();
        let member = Member {
            config: dir.join(format!("{name}.toml")),
            api_socket: dir.join(format!("{name}-api.sock")),
            dataplane_socket: dir.join(format!("{name}-dataplane.sock")),
            dataplane_log: dir.join(format!("{name}-dataplane.log")),
            control_log: dir.join(format!("{name}-control.log")),
            node: node.clone(),
            dataplane: None,
            control: None,
        };
        std::fs::write(&member.config, self.node_config(&member)).map_err(|source| {
            LabError::io(format!("writing {}", member.config.display()), source)
        })?;
        self.lab.add_log(
            format!("tapwire-dataplane on {name}"),
            member.dataplane_log.clone(),
        );
        self.lab.add_log(
            format!("tapwire-control on {name}"),
            member.control_log.clone(),
        );
        if self.bird.is_some() {
            self.lab.add_log(
                format!("BIRD on {name}"),
                self.bird_dir(name).join("bird.log"),
            );
        }
        locked(&self.members).push(member);
        self.start_dataplane(name)?;
        Ok(node)
    }

    /// The node configuration `tapwire-control --config` reads for `member`.
    fn node_config(&self, member: &Member) -> String {
        let metrics = if self.metrics {
            format!(
                "metrics_addr = \"{}\"\n",
                crate::scrape::CONTROL_METRICS_ADDR
            )
        } else {
            String::new()
        };
        let (backend, bird) = match self.bird {
            None => (String::new(), String::new()),
            Some(graceful_restart_secs) => (
                "networking_backend = \"bird\"\n".to_string(),
                format!(
                    "\n[bird]\nrun_dir = \"{}\"\ngraceful_restart_secs = {graceful_restart_secs}\n\
                     secrets_dir = \"{}\"\n",
                    self.bird_dir(&member.node.name).display(),
                    self.lab.dir().join("bgp-secrets").display(),
                ),
            ),
        };
        format!(
            "# tapwire-control configuration of lab node {node}\n\
             node = \"{node}\"\n\
             underlay_interface = \"eth0\"\n\
             dataplane_socket = \"{dataplane}\"\n\
             api_socket = \"{api}\"\n\
             {metrics}\
             {backend}\
             \n\
             {datastore}{bird}",
            node = member.node.name,
            dataplane = member.dataplane_socket.display(),
            api = member.api_socket.display(),
            datastore = self.datastore_section(),
        )
    }

    /// Node `name`'s BIRD directory (`[bird] run_dir`): configuration, control socket,
    /// log, PID file.
    pub fn bird_dir(&self, name: &str) -> PathBuf {
        self.lab.dir().join(format!("{name}-bird"))
    }

    /// Node `name`'s BIRD control socket.
    pub fn bird_socket(&self, name: &str) -> PathBuf {
        self.bird_dir(name).join("bird.ctl")
    }

    /// The PID of the BIRD `tapwire-control` runs on node `name`, when one runs (read from
    /// its PID file and checked to be that BIRD).
    pub fn bird_pid(&self, name: &str) -> Result<Option<u32>> {
        let dir = self.bird_dir(name);
        let Ok(text) = std::fs::read_to_string(dir.join("bird.pid")) else {
            return Ok(None);
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            return Ok(None);
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
        Ok(ours.then_some(pid))
    }

    /// The `[datastore]` section of every node's configuration.
    fn datastore_section(&self) -> String {
        match &self.datastore {
            LabDatastore::File(dir) => format!(
                "[datastore]\nkind = \"file\"\npath = \"{}\"\n",
                dir.display()
            ),
            LabDatastore::Etcd { section, .. } => section.clone(),
        }
    }

    fn with_member<T>(&self, name: &str, f: impl FnOnce(&mut Member) -> Result<T>) -> Result<T> {
        let mut members = locked(&self.members);
        let member = members
            .iter_mut()
            .find(|m| m.node.name == name)
            .ok_or_else(|| LabError::Invalid(format!("no control-plane node {name}")))?;
        f(member)
    }

    /// Every node, in the order they were added.
    pub fn nodes(&self) -> Vec<Node> {
        locked(&self.members)
            .iter()
            .map(|m| m.node.clone())
            .collect()
    }

    /// Node `name`.
    pub fn node(&self, name: &str) -> Result<Node> {
        self.with_member(name, |m| Ok(m.node.clone()))
    }

    /// The API socket of node `name`'s agent.
    pub fn api_socket(&self, name: &str) -> Result<PathBuf> {
        self.with_member(name, |m| Ok(m.api_socket.clone()))
    }

    /// The configuration file of node `name`'s agent.
    pub fn config_path(&self, name: &str) -> Result<PathBuf> {
        self.with_member(name, |m| Ok(m.config.clone()))
    }

    /// `tapwirectl` talking to node `name`'s agent.
    pub fn ctl(&self, name: &str) -> Result<Tapwirectl<'lab>> {
        Tapwirectl::new(self.lab, &self.api_socket(name)?)
    }

    /// One API request to node `name`'s agent (for the lab's own polling; tests act
    /// through `tapwirectl` and the CNI plugin).
    pub fn api(&self, name: &str, request: &Request) -> Result<Reply> {
        let socket = self.api_socket(name)?;
        api::call(&socket, request, API_TIMEOUT).map_err(|err| LabError::Agent {
            node: name.to_string(),
            reason: err.to_string(),
        })
    }

    /// Node `name`'s `node status`.
    pub fn node_status(&self, name: &str) -> Result<NodeStatusReply> {
        match self.api(name, &Request::NodeStatus)? {
            Reply::NodeStatus(status) => Ok(status),
            other => Err(LabError::Agent {
                node: name.to_string(),
                reason: format!("unexpected answer to node status: {other:?}"),
            }),
        }
    }

    /// Node `name`'s dataplane counters, through its agent (what `tapwirectl stats`
    /// shows).
    pub fn counters(&self, name: &str) -> Result<Counters> {
        match self.api(name, &Request::Stats)? {
            Reply::Stats { counters } => Ok(Counters {
                values: counters.into_iter().collect(),
            }),
            other => Err(LabError::Agent {
                node: name.to_string(),
                reason: format!("unexpected answer to stats: {other:?}"),
            }),
        }
    }

    /// The PID of node `name`'s `tapwire-control`, if running.
    pub fn control_pid(&self, name: &str) -> Result<Option<u32>> {
        self.with_member(name, |m| Ok(m.control.as_ref().map(Proc::pid)))
    }

    /// The PID of node `name`'s `tapwire-dataplane`, if running.
    pub fn dataplane_pid(&self, name: &str) -> Result<Option<u32>> {
        self.with_member(name, |m| Ok(m.dataplane.as_ref().map(Proc::pid)))
    }

    /// Node `name`'s control log so far.
    pub fn control_log(&self, name: &str) -> Result<String> {
        self.with_member(name, |m| {
            Ok(std::fs::read_to_string(&m.control_log).unwrap_or_default())
        })
    }

    /// Node `name`'s dataplane log so far.
    pub fn dataplane_log(&self, name: &str) -> Result<String> {
        self.with_member(name, |m| {
            Ok(std::fs::read_to_string(&m.dataplane_log).unwrap_or_default())
        })
    }

    /// Runs the `tapwire` plugin's CHECK for `pod` on node `node` with the result its ADD
    /// returned, as a runtime does.
    pub fn cni_check(&self, node: &str, pod: &str) -> Result<PluginRun> {
        let added = self.cni_pod(pod)?;
        let mut conf = self.network_conf(node)?;
        if let Some(map) = conf.as_object_mut() {
            map.insert("prevResult".into(), added.result.clone());
        }
        self.runtime(node)?
            .exec(CniCommand::Check, &conf, &added.args)
    }

    /// Starts `tapwire-dataplane` on node `name` and waits for its control socket. Does
    /// not connect to it: that is the agent's job (the dataplane takes the newest
    /// connection as its control).
    pub fn start_dataplane(&self, name: &str) -> Result<()> {
        self.with_member(name, |m| {
            if m.dataplane.is_some() {
                return Err(LabError::Invalid(format!(
                    "the dataplane on {name} runs already"
                )));
            }
            remove_stale(&m.dataplane_socket)?;
            let mut cmd = dataplane_command(&m.node, &m.dataplane_socket, self.workers)?;
            if self.metrics {
                cmd.args(["--metrics-addr", crate::scrape::DATAPLANE_METRICS_ADDR]);
            }
            let proc = spawn_logged(
                self.lab,
                &mut cmd,
                &m.dataplane_log,
                format!("tapwire-dataplane on {name}"),
            )?;
            m.dataplane = Some(proc);
            let deadline = Instant::now() + AGENT_READY_TIMEOUT;
            while !m.dataplane_socket.exists() {
                if let Some(proc) = &mut m.dataplane {
                    if let Some(status) = proc.try_wait()? {
                        m.dataplane = None;
                        return Err(LabError::DataplaneExited {
                            node: name.to_string(),
                            status: status.to_string(),
                            log_tail: tail(&read(&m.dataplane_log), 40),
                        });
                    }
                }
                if Instant::now() >= deadline {
                    return Err(LabError::Timeout {
                        what: format!(
                            "waiting for tapwire-dataplane on {name} to open {}",
                            m.dataplane_socket.display()
                        ),
                        after: AGENT_READY_TIMEOUT,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })
    }

    /// Stops node `name`'s dataplane (SIGTERM, then SIGKILL after 2 s).
    pub fn stop_dataplane(&self, name: &str) -> Result<()> {
        self.with_member(name, |m| {
            if let Some(mut proc) = m.dataplane.take() {
                proc.stop(Duration::from_secs(2))?;
            }
            Ok(())
        })
    }

    /// Kills node `name`'s dataplane with SIGKILL (a crash).
    pub fn kill_dataplane(&self, name: &str) -> Result<()> {
        self.with_member(name, |m| {
            if let Some(mut proc) = m.dataplane.take() {
                proc.kill()?;
            }
            Ok(())
        })
    }

    /// Stops and starts node `name`'s dataplane, then waits until its agent has
    /// reconnected and the dataplane applied the full state again.
    pub fn restart_dataplane(&self, name: &str) -> Result<()> {
        self.stop_dataplane(name)?;
        self.start_dataplane(name)?;
        self.wait_ready(name, AGENT_READY_TIMEOUT)
    }

    /// Starts `tapwire-control --config <node>.toml` on node `name` and waits until it
    /// answers and reports its dataplane in sync.
    pub fn start_control(&self, name: &str) -> Result<()> {
        self.spawn_control(name)?;
        self.wait_ready(name, AGENT_READY_TIMEOUT)
    }

    /// Starts `tapwire-control --config <node>.toml` on node `name` and returns at once
    /// (see [`ControlPlane::wait_ready`]).
    pub fn spawn_control(&self, name: &str) -> Result<()> {
        let bin = binary("tapwire-control")?.display().to_string();
        self.with_member(name, |m| {
            if m.control.is_some() {
                return Err(LabError::Invalid(format!(
                    "tapwire-control on {name} runs already"
                )));
            }
            remove_stale(&m.api_socket)?;
            let config = m.config.display().to_string();
            let mut cmd = m.node.netns().command(&[&bin, "--config", &config]);
            let proc = spawn_logged(
                self.lab,
                &mut cmd,
                &m.control_log,
                format!("tapwire-control on {name}"),
            )?;
            m.control = Some(proc);
            Ok(())
        })
    }

    /// Stops node `name`'s `tapwire-control` (SIGTERM by PID, SIGKILL after 2 s). The
    /// dataplane keeps forwarding on what it holds.
    pub fn stop_control(&self, name: &str) -> Result<()> {
        self.with_member(name, |m| {
            if let Some(mut proc) = m.control.take() {
                proc.stop(Duration::from_secs(2))?;
            }
            Ok(())
        })
    }

    /// Kills node `name`'s `tapwire-control` with SIGKILL (a crash: nothing it was doing
    /// is finished or undone).
    pub fn kill_control(&self, name: &str) -> Result<()> {
        self.with_member(name, |m| {
            if let Some(mut proc) = m.control.take() {
                proc.kill()?;
            }
            Ok(())
        })
    }

    /// Stops and starts node `name`'s `tapwire-control`.
    pub fn restart_control(&self, name: &str) -> Result<()> {
        self.stop_control(name)?;
        self.start_control(name)
    }

    /// Runs a second instance of one of node `name`'s daemons with the running one's
    /// configuration, as a careless operator might, and returns how it ended (killed,
    /// and an error, if it still runs after `timeout`).
    pub fn run_second_instance(
        &self,
        name: &str,
        daemon: Daemon,
        timeout: Duration,
    ) -> Result<CommandOutput> {
        let cmd = self.with_member(name, |m| match daemon {
            Daemon::Control => {
                let bin = binary("tapwire-control")?.display().to_string();
                let config = m.config.display().to_string();
                Ok(m.node.netns().command(&[&bin, "--config", &config]))
            }
            Daemon::Dataplane => dataplane_command(&m.node, &m.dataplane_socket, self.workers),
        })?;
        crate::process::run(self.lab.shared(), cmd, timeout)
    }

    /// Fails if node `name`'s control has exited (with its log tail).
    pub fn check_control(&self, name: &str) -> Result<()> {
        self.with_member(name, |m| {
            let Some(proc) = &mut m.control else {
                return Err(LabError::Agent {
                    node: name.to_string(),
                    reason: "not started".into(),
                });
            };
            match proc.try_wait()? {
                None => Ok(()),
                Some(status) => {
                    m.control = None;
                    Err(LabError::Agent {
                        node: name.to_string(),
                        reason: format!(
                            "exited ({status}); its log ends with:\n{}",
                            tail(&read(&m.control_log), 40)
                        ),
                    })
                }
            }
        })
    }

    /// Fails if any node's control or dataplane has exited.
    pub fn check_running(&self) -> Result<()> {
        for node in self.nodes() {
            self.check_control(&node.name)?;
            self.with_member(&node.name, |m| match &mut m.dataplane {
                Some(proc) => match proc.try_wait()? {
                    None => Ok(()),
                    Some(status) => Err(LabError::DataplaneExited {
                        node: node.name.clone(),
                        status: status.to_string(),
                        log_tail: tail(&read(&m.dataplane_log), 40),
                    }),
                },
                None => Err(LabError::Invalid(format!(
                    "no dataplane runs on {}",
                    node.name
                ))),
            })?;
        }
        Ok(())
    }

    /// Waits until node `name`'s agent answers `node status` with its dataplane
    /// connected and in sync.
    pub fn wait_ready(&self, name: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_control(name)?;
            let last = match self.node_status(name) {
                Ok(s) if s.dataplane_connected && s.dataplane_in_sync => return Ok(()),
                Ok(s) => format!(
                    "dataplane connected: {}, in sync: {}",
                    s.dataplane_connected, s.dataplane_in_sync
                ),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("waiting for tapwire-control on {name} to be in sync ({last})"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `tapwire` network configuration a runtime on node `name` would use.
    pub fn network_conf(&self, name: &str) -> Result<Value> {
        let api = self.api_socket(name)?;
        Ok(json!({
            "cniVersion": CNI_VERSION,
            "name": NETWORK_NAME,
            "type": "tapwire",
            "api_socket": api.display().to_string(),
        }))
    }

    /// A configuration list: `tapwire` first, then `chained` plugins.
    pub fn network_list(&self, name: &str, chained: Vec<Value>) -> Result<Value> {
        let api = self.api_socket(name)?;
        let mut plugins = vec![json!({
            "type": "tapwire",
            "api_socket": api.display().to_string(),
        })];
        plugins.extend(chained);
        Ok(json!({
            "cniVersion": CNI_VERSION,
            "name": NETWORK_NAME,
            "plugins": plugins,
        }))
    }

    /// A runtime on node `name`: plugins run in the node's namespace, found in the
    /// workspace's binary directory (`tapwire`) and then Debian's CNI directory.
    pub fn runtime(&self, name: &str) -> Result<Runtime> {
        let node = self.node(name)?;
        Ok(Runtime::new(
            node.netns(),
            vec![bin_dir()?, PathBuf::from(DEBIAN_CNI_DIR)],
        ))
    }

    /// The container id the lab gives pod `pod` (unique per lab).
    pub fn container_id(&self, pod: &str) -> String {
        format!("{}-{pod}", self.lab.prefix())
    }

    /// Creates pod `pod`'s network namespace, as a runtime does before calling CNI, with
    /// the arguments for its CNI calls.
    pub fn sandbox(&self, pod: &str) -> Result<Sandbox> {
        let netns = self.lab.create_netns(pod)?;
        let args = CniArgs::for_pod(&self.container_id(pod), &netns, POD_NAMESPACE, pod);
        Ok(Sandbox {
            name: pod.to_string(),
            netns,
            args,
        })
    }

    /// Adds pod `pod` on node `node`: creates its namespace and runs the `tapwire`
    /// plugin's ADD as a runtime does. Fails with the plugin's CNI error if it fails.
    pub fn add_pod(&self, node: &str, pod: &str) -> Result<Pod> {
        let sandbox = self.sandbox(pod)?;
        Ok(self.cni_add(node, &sandbox)?.pod)
    }

    /// Adds every `(node, pod)` of `pods`, in order (see [`ControlPlane::add_pod`]).
    pub fn add_pods<const N: usize>(&self, pods: [(&str, &str); N]) -> Result<[Pod; N]> {
        let added = pods
            .iter()
            .map(|(node, pod)| self.add_pod(node, pod))
            .collect::<Result<Vec<Pod>>>()?;
        added.try_into().map_err(|added: Vec<Pod>| {
            LabError::Invalid(format!("asked for {N} pods, added {}", added.len()))
        })
    }

    /// Runs the `tapwire` plugin's ADD for `sandbox` on node `node` and records the pod.
    pub fn cni_add(&self, node: &str, sandbox: &Sandbox) -> Result<CniPod> {
        let conf = self.network_conf(node)?;
        let run = self
            .runtime(node)?
            .exec(CniCommand::Add, &conf, &sandbox.args)?;
        let add_elapsed = run.elapsed;
        let result = run.into_result()?;
        self.record_pod(node, sandbox, result, add_elapsed)
    }

    /// Records the pod of `sandbox` on `node`, whose ADD (one plugin or a list) returned
    /// `result`; reads its interface back from its namespace.
    pub fn record_pod(
        &self,
        node: &str,
        sandbox: &Sandbox,
        result: Value,
        add_elapsed: Duration,
    ) -> Result<CniPod> {
        let node = self.node(node)?;
        let ip = result_ipv4(&result)?;
        let iface = podnet::pod_interface(&sandbox.netns.path(), &sandbox.args.ifname).map_err(
            |source| LabError::Podnet {
                pod: sandbox.name.clone(),
                source,
            },
        )?;
        let added = CniPod {
            pod: Pod::new(
                &sandbox.name,
                &node,
                ip,
                iface.mac,
                iface.mtu_bytes,
                sandbox.netns.clone(),
            ),
            args: sandbox.args.clone(),
            result,
            add_elapsed,
        };
        locked(&self.pods).push(added.clone());
        Ok(added)
    }

    /// The recorded pod `pod`.
    pub fn cni_pod(&self, pod: &str) -> Result<CniPod> {
        locked(&self.pods)
            .iter()
            .find(|p| p.pod.name == pod)
            .cloned()
            .ok_or_else(|| LabError::Invalid(format!("no pod {pod} was added")))
    }

    /// The recorded pod `pod`'s [`Pod`].
    pub fn pod(&self, pod: &str) -> Result<Pod> {
        Ok(self.cni_pod(pod)?.pod)
    }

    /// Every pod added and not deleted.
    pub fn pods(&self) -> Vec<CniPod> {
        locked(&self.pods).clone()
    }

    /// Runs the `tapwire` plugin's DEL for pod `pod` (with its cached result) and
    /// forgets it. The namespace stays (a runtime deletes it after DEL).
    pub fn del_pod(&self, pod: &str) -> Result<PluginRun> {
        let added = self.cni_pod(pod)?;
        let run = self.cni_del(&added.pod.node, &added.args, Some(&added.result))?;
        if run.succeeded() {
            locked(&self.pods).retain(|p| p.pod.name != pod);
        }
        Ok(run)
    }

    /// Runs the `tapwire` plugin's DEL for `args` on node `node`, whatever the outcome.
    pub fn cni_del(&self, node: &str, args: &CniArgs, cached: Option<&Value>) -> Result<PluginRun> {
        let mut conf = self.network_conf(node)?;
        if let (Some(prev), Some(map)) = (cached, conf.as_object_mut()) {
            map.insert("prevResult".into(), prev.clone());
        }
        self.runtime(node)?.exec(CniCommand::Del, &conf, args)
    }

    /// Runs `f` on the shared datastore, opened as the controls open it (for the lab's
    /// checks); etcd is reached from a namespace on the underlay.
    pub fn with_store<T: Send>(
        &self,
        f: impl FnOnce(&dyn Datastore) -> Result<T> + Send,
    ) -> Result<T> {
        let text = format!(
            "node = \"lab\"\nunderlay_interface = \"eth0\"\n{}",
            self.datastore_section()
        );
        let config = NodeConfig::parse(&text, Path::new("lab datastore"))
            .map_err(|e| LabError::Invalid(format!("the lab's datastore section: {e}")))?;
        let open = move || {
            let store = datastore::open(&config.datastore)
                .map_err(|e| LabError::Invalid(format!("opening the datastore: {e}")))?;
            f(store.as_ref())
        };
        match &self.datastore {
            LabDatastore::File(_) => open(),
            LabDatastore::Etcd { reach_from, .. } => {
                tapwire_sys::netns::run_in_netns(reach_from, || Ok(open()))
                    .map_err(|source| LabError::io("entering the etcd namespace", source))?
            }
        }
    }

    /// Every IPAM block in the datastore: `(cidr, node, allocated addresses)`.
    pub fn ipam_blocks(&self) -> Result<Vec<(String, String, usize)>> {
        let blocks = self.with_store(|store| {
            store
                .list_as::<IpamBlock>()
                .map(|listing| listing.items)
                .map_err(|e| LabError::Invalid(format!("reading IPAM blocks: {e}")))
        })?;
        Ok(blocks
            .iter()
            .map(|b| {
                (
                    b.spec.cidr.to_string(),
                    b.node().unwrap_or_default().to_string(),
                    b.spec.allocations.len(),
                )
            })
            .collect())
    }

    /// Every IPAM handle id in the datastore (one per pod interface holding an address).
    pub fn ipam_handles(&self) -> Result<Vec<String>> {
        let handles = self.with_store(|store| {
            store
                .list_as::<IpamHandle>()
                .map(|listing| listing.items)
                .map_err(|e| LabError::Invalid(format!("reading IPAM handles: {e}")))
        })?;
        Ok(handles.iter().map(|h| h.metadata.name.clone()).collect())
    }

    /// Every workload endpoint in the datastore.
    pub fn workload_endpoints(&self) -> Result<Vec<WorkloadEndpoint>> {
        self.with_store(|store| {
            store
                .list_as::<WorkloadEndpoint>()
                .map(|listing| listing.items)
                .map_err(|e| LabError::Invalid(format!("reading workload endpoints: {e}")))
        })
    }

    /// Every IPAM block and the node it is affine to.
    pub fn blocks(&self) -> Result<Vec<(Block, String)>> {
        self.ipam_blocks()?
            .into_iter()
            .map(|(cidr, node, _)| {
                let block = Block::parse(&cidr).ok_or_else(|| {
                    LabError::Invalid(format!("IPAM block {cidr:?} is not a CIDR"))
                })?;
                Ok((block, node))
            })
            .collect()
    }

    /// Routes every IPAM block on the lab's router to the underlay address of the node
    /// it is affine to ([`Lab::route_on_router`]), as a router peering with the nodes by
    /// BGP would learn them. Returns the routes as `(block, node)`; call again after new
    /// blocks.
    pub fn route_blocks_on_router(&self) -> Result<Vec<(Block, String)>> {
        let blocks = self.blocks()?;
        for (block, node) in &blocks {
            self.lab
                .route_on_router(*block, self.node(node)?.underlay_ip)?;
        }
        Ok(blocks)
    }

    /// The IPAM block holding `ip` and the node it is affine to.
    pub fn block_of(&self, ip: Ipv4Addr) -> Result<(Block, String)> {
        self.blocks()?
            .into_iter()
            .find(|(block, _)| block.contains(ip))
            .ok_or_else(|| LabError::Invalid(format!("no IPAM block holds {ip}")))
    }
}

/// `names`, each in underlay subnet 0.
fn in_subnet_0<'n>(names: &[&'n str]) -> Vec<(&'n str, u8)> {
    names.iter().map(|name| (*name, 0)).collect()
}

/// The first IPv4 address of a CNI result (`ips[].address`, `10.65.0.2/32`).
pub fn result_ipv4(result: &Value) -> Result<Ipv4Addr> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .find_map(|a| a.split('/').next().and_then(|a| a.parse().ok()))
        .ok_or_else(|| LabError::Parse {
            what: "a CNI result".into(),
            reason: "no IPv4 address in ips[]".into(),
            output: result.to_string(),
        })
}

/// Removes a socket file left by an earlier process, so its appearance means a new one.
fn remove_stale(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::io(format!("removing {}", path.display()), e)),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts `cmd` with standard error appended to `log` (logs go on across restarts; see
/// [`spawn_logging_to`]), registered with the lab under `label`.
pub(crate) fn spawn_logged(
    lab: &Lab,
    cmd: &mut std::process::Command,
    log: &Path,
    label: String,
) -> Result<Proc> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| LabError::io(format!("opening {}", log.display()), source))?;
    spawn_logging_to(lab, cmd, file, label)
}

/// A calicoctl IPPool document: `cidr` cut into `/block_size` blocks, with `ipip_mode` and
/// `vxlan_mode` (`Always`, `CrossSubnet` or `Never`).
pub fn ippool_yaml(
    name: &str,
    cidr: &str,
    block_size: u8,
    ipip_mode: &str,
    vxlan_mode: &str,
) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\n\
         kind: IPPool\n\
         metadata:\n  name: {name}\n\
         spec:\n  cidr: {cidr}\n  blockSize: {block_size}\n  ipipMode: {ipip_mode}\n  \
         vxlanMode: {vxlan_mode}\n  natOutgoing: true\n"
    )
}

/// The name of Calico's default pool.
pub const DEFAULT_POOL_NAME: &str = "default-ipv4-ippool";

/// Calico's default pool as the lab uses it: [`DEFAULT_POOL_NAME`], `10.65.0.0/16` in /26
/// blocks, `ipipMode: Always`, `vxlanMode: Never`.
pub fn default_ipip_pool() -> String {
    ippool_yaml(DEFAULT_POOL_NAME, "10.65.0.0/16", 26, "Always", "Never")
}

/// When a change applied with `tapwirectl` showed on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwitchTiming {
    /// How long `tapwirectl apply` itself took.
    pub apply: Duration,
    /// From the start of the apply to the first request (`from` → `to`) in the new form.
    pub request_on_wire: Duration,
    /// From the start of the apply to the first reply (`to` → `from`) in the new form.
    pub reply_on_wire: Duration,
    /// Echo requests sent during the measurement, and replies that came back.
    pub pings_sent: u32,
    pub pings_received: u32,
}

impl SwitchTiming {
    /// Until both directions used the new form.
    pub fn both_ways(&self) -> Duration {
        self.request_on_wire.max(self.reply_on_wire)
    }
}

/// Applies `documents` with `ctl` while pod `from` pings pod `to` every 10 ms, and
/// measures when packets of that ping matching `filter` (the new encapsulation, e.g.
/// `udp port 4789`, or `icmp and host FROM` for unencapsulated) first appear on
/// `capture_on`'s underlay `eth0`, each way. Times come from tcpdump's packet stamps,
/// measured from just before `tapwirectl apply` starts.
pub fn time_switch(
    ctl: &Tapwirectl<'_>,
    documents: &str,
    capture_on: &Node,
    filter: &str,
    from: &Pod,
    to: &Pod,
) -> Result<SwitchTiming> {
    use crate::capture::{self, Timestamps};
    use std::time::SystemTime;

    let cap = capture::start_with(capture_on.netns(), "eth0", filter, 40, Timestamps::Epoch)?;
    let pings = crate::traffic::ping_start(from, to.ip, 300, Duration::from_millis(10))?;
    // Let the ping run in the old form first.
    std::thread::sleep(Duration::from_millis(200));
    let t0 = SystemTime::now();
    let applied = Instant::now();
    let out = ctl.apply(documents)?;
    let apply = applied.elapsed();
    out.success()?;
    let packets = cap.finish(Duration::from_secs(5))?;
    let stats = pings.finish()?;
    let request = format!("{} > {}: ICMP echo request", from.ip, to.ip);
    let reply = format!("{} > {}: ICMP echo reply", to.ip, from.ip);
    let first = |needle: &str| {
        packets
            .iter()
            .filter(|p| p.contains(needle))
            .filter_map(|p| capture::packet_time(p))
            .min()
            .map(|t| t.duration_since(t0).unwrap_or(Duration::ZERO))
    };
    let missing = |what: &str| LabError::Parse {
        what: format!("tcpdump '{filter}' on {} after the apply", capture_on.name),
        reason: format!("no {what} appeared within 5 s"),
        output: packets.join("\n"),
    };
    Ok(SwitchTiming {
        apply,
        request_on_wire: first(&request).ok_or_else(|| missing(&request))?,
        reply_on_wire: first(&reply).ok_or_else(|| missing(&reply))?,
        pings_sent: stats.transmitted,
        pings_received: stats.received,
    })
}
