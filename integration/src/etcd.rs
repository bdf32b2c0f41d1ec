//! An etcd cluster in the lab, for tapwire-control's etcd datastore: Debian's `etcd`
//! (3.4, package etcd-server) run as an N-member cluster with mutual TLS for clients and
//! peers, and `etcdctl` (package etcd-client) to drive and inspect it.
//!
//! Member *k* (1-based, `etcd<k>`) is namespace `<prefix>-etcd<k>` plugged into the
//! underlay the way a node is, in the subnet kept for etcd,
//! [`ETCD_SUBNET`]: address `192.168.254.<k>`, default route via the underlay router, so
//! every node subnet reaches every member. It listens for clients on
//! `https://192.168.254.<k>:2379` (and `https://127.0.0.1:2379` inside its namespace)
//! and for peers on `https://192.168.254.<k>:2380`, with lab-sized raft timings
//! (heartbeat 100 ms, election 1 s); its data directory and log (appended across
//! restarts, printed when a test fails) are in `<lab dir>/etcd/`.
//!
//! The certificates are made with the `openssl` CLI in `<lab dir>/etcd/` (mode 0700; keys
//! 0600): a CA, a server-and-peer certificate per member (IP SANs: its underlay address
//! and 127.0.0.1) and one client certificate, for tapwire-control ([`EtcdCluster::tls`],
//! [`EtcdCluster::datastore_toml`]) and etcdctl.
//!
//! Members are started and stopped by PID; a restarted member keeps its data directory
//! and rejoins. The lab's own etcdctl calls run in the underlay namespace, which routes to
//! every member. Every wait is bounded.
//!
//! Nothing here touches the host's etcd: no system service, no `/var/lib/etcd`, nothing
//! listening in the host namespace.
//!
//! ```no_run
//! use tapwire_integration::{EtcdCluster, Lab};
//!
//! let lab = Lab::new()?;
//! let etcd = EtcdCluster::start(&lab, 3)?;
//! let node = lab.add_node("node1")?;
//! etcd.etcdctl_from(node.netns(), &["put", "k", "v"])?.success()?;
//! let node_toml = format!("node = \"node1\"\n{}", etcd.datastore_toml());
//! # Ok::<(), tapwire_integration::LabError>(())
//! ```

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::controlplane::spawn_logged;
use crate::error::{LabError, Result};
use crate::lab::{require_tool, tail, Lab, ETCD_SUBNET};
use crate::netns::{Netns, COMMAND_TIMEOUT};
use crate::process::{CommandOutput, Proc};

/// The port members serve clients on.
pub const CLIENT_PORT: u16 = 2379;
/// The port members serve peers on.
pub const PEER_PORT: u16 = 2380;
/// The raft heartbeat interval of every member (etcd's default is 100 ms too).
pub const HEARTBEAT_INTERVAL_MS: u32 = 100;
/// The raft election timeout of every member (etcd's default is 1000 ms too); a killed
/// leader is replaced within about this long plus an election round.
pub const ELECTION_TIMEOUT_MS: u32 = 1000;
/// How long a cluster (or a restarted member) may take to become healthy.
pub const ETCD_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a member stopped with SIGTERM may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// etcdctl's own bounds: connecting, and each request once connected.
const ETCDCTL_DIAL_TIMEOUT: &str = "1s";
const ETCDCTL_COMMAND_TIMEOUT: &str = "3s";
/// The request bound of the lab's own polling (health, leader): a member that is not
/// listening yet costs a poll this long, not [`ETCDCTL_COMMAND_TIMEOUT`].
const POLL_COMMAND_TIMEOUT: &str = "1s";
/// The bound on a whole etcdctl run (a few dials and requests).
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the lab's certificates are valid; a lab lives minutes.
const CERT_DAYS: &str = "2";
/// Members per cluster: raft wants few, and each one is an address in [`ETCD_SUBNET`].
const MAX_MEMBERS: usize = 9;

/// The client side of the cluster's mutual TLS: the CA that signed the members'
/// certificates and a client certificate with its key (PEM files). These are what
/// tapwire-control's `[datastore]` `ca_file`, `cert_file` and `key_file` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// One member: its namespace, address, credentials, data and process.
#[derive(Debug)]
struct Member {
    /// `etcd<k>`, its `--name` and the suffix of its namespace.
    name: String,
    netns: Netns,
    ip: Ipv4Addr,
    cert_file: PathBuf,
    key_file: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    /// Its raft member ID, learned once the cluster first became healthy.
    id: Option<u64>,
    starts: u32,
    proc: Option<Proc>,
}

impl Member {
    fn client_url(&self) -> String {
        client_url(self.ip)
    }

    fn peer_url(&self) -> String {
        format!("https://{}:{PEER_PORT}", self.ip)
    }

    fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }
}

/// An etcd cluster in a lab; see the module documentation. Members are numbered from 0
/// in the API (member `i` is `etcd<i+1>` at `192.168.254.<i+1>`). Dropping it kills the
/// members; the lab removes their namespaces and files.
#[derive(Debug)]
pub struct EtcdCluster<'lab> {
    lab: &'lab Lab,
    tls: EtcdTls,
    dir: PathBuf,
    /// `--initial-cluster`: every member's name and peer URL.
    initial_cluster: String,
    members: Mutex<Vec<Member>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn client_url(ip: Ipv4Addr) -> String {
    format!("https://{ip}:{CLIENT_PORT}")
}

impl<'lab> EtcdCluster<'lab> {
    /// Makes the certificates, creates `members` (1-9) member namespaces on the underlay,
    /// starts etcd in each and waits (at most [`ETCD_START_TIMEOUT`]) until every member
    /// is healthy and they agree on a leader.
    pub fn start(lab: &'lab Lab, members: usize) -> Result<EtcdCluster<'lab>> {
        if !(1..=MAX_MEMBERS).contains(&members) {
            return Err(LabError::Invalid(format!(
                "an etcd cluster of {members} members: use 1-{MAX_MEMBERS}"
            )));
        }
        require_tool("etcd", "etcd-server")?;
        require_tool("etcdctl", "etcd-client")?;
        require_tool("openssl", "openssl")?;

        let dir = lab.dir().join("etcd");
        private_dir(&dir)?;
        let ca = CertAuthority::new(lab, &dir, "ca", "tapwire lab etcd CA")?;
        let (cert_file, key_file) =
            ca.issue(lab, &dir, "client", "tapwire-control", CLIENT_EXTENSIONS)?;
        let tls = EtcdTls {
            ca_file: ca.cert.clone(),
            cert_file,
            key_file,
        };

        let mut list = Vec::with_capacity(members);
        for k in 1..=members {
            let name = format!("etcd{k}");
            let host = u8::try_from(k)
                .map_err(|_| LabError::Invalid(format!("etcd member number {k}")))?;
            let ip = Ipv4Addr::new(192, 168, ETCD_SUBNET, host);
            let extensions = format!("{MEMBER_EXTENSIONS}subjectAltName = IP:{ip}, IP:127.0.0.1\n");
            let (cert_file, key_file) = ca.issue(lab, &dir, &name, &name, &extensions)?;
            let netns = lab.create_netns(&name)?;
            lab.attach_to_underlay(&netns, &name, ETCD_SUBNET, host)?;
            let log = dir.join(format!("{name}.log"));
            lab.add_log(format!("etcd member {name} ({ip})"), log.clone());
            list.push(Member {
                data_dir: dir.join(format!("{name}.data")),
                name,
                netns,
                ip,
                cert_file,
                key_file,
                log,
                id: None,
                starts: 0,
                proc: None,
            });
        }
        let initial_cluster = list
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = EtcdCluster {
            lab,
            tls,
            dir,
            initial_cluster,
            members: Mutex::new(list),
        };
        cluster.start_all()?;
        cluster.learn_member_ids()?;
        Ok(cluster)
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        locked(&self.members).len()
    }

    /// Whether the cluster has no members (never: [`EtcdCluster::start`] wants one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every member's client URL (`https://192.168.254.<k>:2379`), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        locked(&self.members)
            .iter()
            .map(Member::client_url)
            .collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> Result<String> {
        self.with_member(i, |m| Ok(m.client_url()))
    }

    /// Member `i`'s underlay address.
    pub fn member_ip(&self, i: usize) -> Result<Ipv4Addr> {
        self.with_member(i, |m| Ok(m.ip))
    }

    /// Member `i`'s name (`etcd<i+1>`, its `--name`).
    pub fn member_name(&self, i: usize) -> Result<String> {
        self.with_member(i, |m| Ok(m.name.clone()))
    }

    /// Member `i`'s namespace.
    pub fn member_netns(&self, i: usize) -> Result<Netns> {
        self.with_member(i, |m| Ok(m.netns.clone()))
    }

    /// Member `i`'s process id while it runs.
    pub fn pid(&self, i: usize) -> Result<Option<u32>> {
        self.with_member(i, |m| {
            Ok(if m.is_running() {
                m.proc.as_ref().map(Proc::pid)
            } else {
                None
            })
        })
    }

    /// Whether member `i`'s process runs.
    pub fn is_running(&self, i: usize) -> Result<bool> {
        self.with_member(i, |m| Ok(m.is_running()))
    }

    /// Member `i`'s log so far (every run of it, each headed by a `=====` line).
    pub fn member_log(&self, i: usize) -> Result<String> {
        self.with_member(i, |m| {
            std::fs::read_to_string(&m.log)
                .map_err(|source| LabError::io(format!("reading {}", m.log.display()), source))
        })
    }

    /// The CA, client certificate and client key (PEM files).
    pub fn tls(&self) -> &EtcdTls {
        &self.tls
    }

    /// The directory holding the certificates, data directories and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `[datastore]` section of a tapwire-control node configuration that uses this
    /// cluster: `kind = "etcd"`, every endpoint, and the client side of the mutual TLS.
    pub fn datastore_toml(&self) -> String {
        let endpoints = self
            .endpoints()
            .iter()
            .map(|e| toml_string(e))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "[datastore]\n\
             kind = \"etcd\"\n\
             endpoints = [{endpoints}]\n\
             ca_file = {}\n\
             cert_file = {}\n\
             key_file = {}\n",
            toml_string(&self.tls.ca_file.display().to_string()),
            toml_string(&self.tls.cert_file.display().to_string()),
            toml_string(&self.tls.key_file.display().to_string()),
        )
    }

    /// A client certificate and key from a second CA the members do not trust, with the
    /// cluster's CA to verify the members: what a client the cluster must refuse holds.
    pub fn untrusted_client(&self) -> Result<EtcdTls> {
        let ca = CertAuthority::new(self.lab, &self.dir, "rogue-ca", "not the lab etcd CA")?;
        let (cert_file, key_file) = ca.issue(
            self.lab,
            &self.dir,
            "rogue-client",
            "tapwire-control",
            CLIENT_EXTENSIONS,
        )?;
        Ok(EtcdTls {
            ca_file: self.tls.ca_file.clone(),
            cert_file,
            key_file,
        })
    }

    /// Stops member `i` with SIGTERM (etcd hands leadership over first), killing it if it
    /// has not exited after a few seconds. Its data directory stays.
    pub fn stop_member(&self, i: usize) -> Result<()> {
        self.with_member(i, |m| {
            if let Some(mut proc) = m.proc.take() {
                proc.stop(STOP_GRACE)?;
            }
            Ok(())
        })
    }

    /// Kills member `i` with SIGKILL, as a crash would. Its data directory stays.
    pub fn kill_member(&self, i: usize) -> Result<()> {
        self.with_member(i, |m| {
            if let Some(mut proc) = m.proc.take() {
                proc.kill()?;
            }
            Ok(())
        })
    }

    /// Starts member `i` again (same data directory: it rejoins as itself) and waits, at
    /// most [`ETCD_START_TIMEOUT`], until it is healthy, which needs a quorum of members
    /// running. Does nothing to a member that runs.
    pub fn start_member(&self, i: usize) -> Result<()> {
        self.with_member(i, |m| self.spawn(m))?;
        self.wait_healthy(&[i], ETCD_START_TIMEOUT)
    }

    /// Stops every member (SIGTERM to all, then each waited for; killed after a few
    /// seconds). Their data directories stay.
    pub fn stop_all(&self) -> Result<()> {
        let mut members = locked(&self.members);
        for m in members.iter_mut() {
            if let Some(proc) = m.proc.as_mut() {
                proc.signal(libc::SIGTERM);
            }
        }
        for m in members.iter_mut() {
            if let Some(mut proc) = m.proc.take() {
                proc.stop(STOP_GRACE)?;
            }
        }
        Ok(())
    }

    /// Starts every member that is not running and waits, at most
    /// [`ETCD_START_TIMEOUT`] for each, until all are healthy and agree on a leader.
    pub fn start_all(&self) -> Result<()> {
        let all: Vec<usize> = {
            let mut members = locked(&self.members);
            for m in members.iter_mut() {
                self.spawn(m)?;
            }
            (0..members.len()).collect()
        };
        self.wait_healthy(&all, ETCD_START_TIMEOUT)?;
        // Health needs a leader already; this only maps it to a member, quickly.
        self.wait_for_leader(ETCD_START_TIMEOUT).map(|_| ())
    }

    /// The member the running members take for their leader: `Some(i)` when at least
    /// one running member answers, none of them names another leader, and member `i`
    /// runs. `None` while there is no leader, an election is under way or the members
    /// still name a leader that is gone.
    pub fn leader(&self) -> Result<Option<usize>> {
        let running = self.running();
        if running.is_empty() {
            return Ok(None);
        }
        let statuses = self.statuses(&running)?;
        let mut leaders = statuses.iter().map(|s| s.leader).filter(|l| *l != 0);
        let Some(leader) = leaders.next() else {
            return Ok(None);
        };
        if leaders.any(|l| l != leader) {
            return Ok(None);
        }
        let members = locked(&self.members);
        let index = members
            .iter()
            .position(|m| m.id == Some(leader))
            .or_else(|| {
                // IDs not learned yet (during start): the leader answers for itself.
                statuses
                    .iter()
                    .find(|s| s.member_id == leader)
                    .map(|s| s.index)
            });
        Ok(index.filter(|i| running.contains(i)))
    }

    /// Waits at most `timeout` for [`EtcdCluster::leader`] to name a running member.
    pub fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader()? {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "waiting for the etcd members to agree on a running leader; {}",
                        self.log_tails()
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits at most `timeout` until members `indices` are running and healthy (a
    /// linearizable read through each succeeds, so each has a leader and has caught up).
    pub fn wait_healthy(&self, indices: &[usize], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let endpoints = indices
            .iter()
            .map(|i| self.endpoint(*i))
            .collect::<Result<Vec<_>>>()?;
        loop {
            for i in indices {
                self.check_running(*i)?;
            }
            let out = self.run_etcdctl(
                self.lab.underlay(),
                &endpoints,
                Some(&self.tls),
                POLL_COMMAND_TIMEOUT,
                &["endpoint", "health"],
            )?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "waiting for etcd at {} to be healthy; etcdctl said:\n{}\n{}",
                        endpoints.join(","),
                        out.stderr.trim(),
                        self.log_tails()
                    ),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `etcdctl ARGS…` (API v3, the client certificate, every endpoint) in the
    /// underlay namespace and returns its standard output; failure is an error.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        self.etcdctl_from(self.lab.underlay(), args)?.success()
    }

    /// Runs `etcdctl ARGS…` against member `i` alone, from the underlay namespace;
    /// failure is an error.
    pub fn etcdctl_at(&self, i: usize, args: &[&str]) -> Result<String> {
        let endpoint = self.endpoint(i)?;
        self.run_etcdctl(
            self.lab.underlay(),
            &[endpoint],
            Some(&self.tls),
            ETCDCTL_COMMAND_TIMEOUT,
            args,
        )?
        .success()
    }

    /// Runs `etcdctl ARGS…` (API v3, the client certificate, every endpoint) in `netns`
    /// (a node's, say), within [`ETCDCTL_TIMEOUT`]; returns what it printed, whatever its
    /// exit status.
    pub fn etcdctl_from(&self, netns: &Netns, args: &[&str]) -> Result<CommandOutput> {
        self.run_etcdctl(
            netns,
            &self.endpoints(),
            Some(&self.tls),
            ETCDCTL_COMMAND_TIMEOUT,
            args,
        )
    }

    /// Runs `etcdctl ARGS…` in `netns` against every endpoint with client credentials
    /// `tls` (`None`: no client certificate, the CA only), within [`ETCDCTL_TIMEOUT`];
    /// returns what it printed, whatever its exit status.
    pub fn etcdctl_with(
        &self,
        netns: &Netns,
        tls: Option<&EtcdTls>,
        args: &[&str],
    ) -> Result<CommandOutput> {
        match tls {
            Some(tls) => self.run_etcdctl(
                netns,
                &self.endpoints(),
                Some(tls),
                ETCDCTL_COMMAND_TIMEOUT,
                args,
            ),
            None => {
                let ca = self.tls.ca_file.display().to_string();
                let mut with_ca = vec!["--cacert", &ca];
                with_ca.extend_from_slice(args);
                self.run_etcdctl(
                    netns,
                    &self.endpoints(),
                    None,
                    ETCDCTL_COMMAND_TIMEOUT,
                    &with_ca,
                )
            }
        }
    }

    /// Runs etcdctl in `netns` against `endpoints` with client credentials `tls`, each
    /// request bounded by `request_timeout` (an etcdctl duration).
    fn run_etcdctl(
        &self,
        netns: &Netns,
        endpoints: &[String],
        tls: Option<&EtcdTls>,
        request_timeout: &str,
        args: &[&str],
    ) -> Result<CommandOutput> {
        let endpoints = endpoints.join(",");
        let files = tls.map(|t| {
            [
                t.ca_file.display().to_string(),
                t.cert_file.display().to_string(),
                t.key_file.display().to_string(),
            ]
        });
        let mut argv = vec![
            "etcdctl",
            "--endpoints",
            &endpoints,
            "--dial-timeout",
            ETCDCTL_DIAL_TIMEOUT,
            "--command-timeout",
            request_timeout,
        ];
        if let Some([ca, cert, key]) = &files {
            argv.extend(["--cacert", ca, "--cert", cert, "--key", key]);
        }
        argv.extend_from_slice(args);
        let mut cmd = netns.command(&argv);
        without_env_prefix(&mut cmd, "ETCDCTL_");
        cmd.env("ETCDCTL_API", "3");
        self.lab.run(cmd, None, ETCDCTL_TIMEOUT)
    }

    /// Starts member `m` unless it runs, with its log appended to.
    fn spawn(&self, m: &mut Member) -> Result<()> {
        if m.is_running() {
            return Ok(());
        }
        m.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|source| LabError::io(format!("opening {}", m.log.display()), source))?;
        // Which run the lines below belong to, in the printed log.
        let _ = writeln!(
            log,
            "===== tapwire lab: {} start {} =====",
            m.name, m.starts
        );
        drop(log);

        let data_dir = m.data_dir.display().to_string();
        let client_urls = format!("{},https://127.0.0.1:{CLIENT_PORT}", m.client_url());
        let advertise = m.client_url();
        let peer_url = m.peer_url();
        let token = format!("{}-etcd", self.lab.prefix());
        let ca = self.tls.ca_file.display().to_string();
        let cert = m.cert_file.display().to_string();
        let key = m.key_file.display().to_string();
        let heartbeat = HEARTBEAT_INTERVAL_MS.to_string();
        let election = ELECTION_TIMEOUT_MS.to_string();
        let mut cmd = m.netns.command(&[
            "etcd",
            "--name",
            &m.name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client_urls,
            "--advertise-client-urls",
            &advertise,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &self.initial_cluster,
            // Ignored once the data directory exists: a restart rejoins from it.
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &token,
            "--client-cert-auth",
            "--trusted-ca-file",
            &ca,
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--peer-client-cert-auth",
            "--peer-trusted-ca-file",
            &ca,
            "--peer-cert-file",
            &cert,
            "--peer-key-file",
            &key,
            "--heartbeat-interval",
            &heartbeat,
            "--election-timeout",
            &election,
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]);
        // etcd reads ETCD_* variables as flags; only ours count.
        without_env_prefix(&mut cmd, "ETCD_");
        let label = format!("etcd member {} ({})", m.name, m.ip);
        m.proc = Some(spawn_logged(self.lab, &mut cmd, &m.log, label)?);
        Ok(())
    }

    /// The members whose processes run.
    fn running(&self) -> Vec<usize> {
        locked(&self.members)
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| m.is_running().then_some(i))
            .collect()
    }

    /// An error with the log's tail if member `i` is not running.
    fn check_running(&self, i: usize) -> Result<()> {
        self.with_member(i, |m| {
            if m.proc.is_none() {
                return Err(LabError::Etcd {
                    member: m.name.clone(),
                    reason: "is stopped".into(),
                });
            }
            if let Some(status) = m.proc.as_mut().map(Proc::try_wait).transpose()?.flatten() {
                return Err(LabError::Etcd {
                    member: m.name.clone(),
                    reason: format!(
                        "exited ({status}); its log ends with:\n{}",
                        tail(&std::fs::read_to_string(&m.log).unwrap_or_default(), 30)
                    ),
                });
            }
            Ok(())
        })
    }

    /// `etcdctl endpoint status` of members `indices`: those that answered.
    fn statuses(&self, indices: &[usize]) -> Result<Vec<EndpointStatus>> {
        let endpoints = indices
            .iter()
            .map(|i| self.endpoint(*i))
            .collect::<Result<Vec<_>>>()?;
        let out = self.run_etcdctl(
            self.lab.underlay(),
            &endpoints,
            Some(&self.tls),
            POLL_COMMAND_TIMEOUT,
            &["endpoint", "status", "-w", "json"],
        )?;
        // Members that did not answer are left out of the list, and the exit status is
        // then non-zero; an empty output means none answered.
        if out.stdout.trim().is_empty() {
            return Ok(Vec::new());
        }
        parse_statuses(&out.stdout, &endpoints, indices)
    }

    /// Records every member's raft ID from `etcdctl member list`.
    fn learn_member_ids(&self) -> Result<()> {
        let text = self.etcdctl(&["member", "list", "-w", "json"])?;
        let ids = parse_member_ids(&text)?;
        let mut members = locked(&self.members);
        for m in members.iter_mut() {
            m.id = ids
                .iter()
                .find(|(name, _)| *name == m.name)
                .map(|(_, id)| *id);
            if m.id.is_none() {
                return Err(LabError::Etcd {
                    member: m.name.clone(),
                    reason: format!("missing from `etcdctl member list`:\n{text}"),
                });
            }
        }
        Ok(())
    }

    /// The last lines of every member's log, for timeout messages.
    fn log_tails(&self) -> String {
        locked(&self.members)
            .iter()
            .map(|m| {
                format!(
                    "{} log ends with:\n{}",
                    m.name,
                    tail(&std::fs::read_to_string(&m.log).unwrap_or_default(), 8)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn with_member<T>(&self, i: usize, f: impl FnOnce(&mut Member) -> Result<T>) -> Result<T> {
        let mut members = locked(&self.members);
        let count = members.len();
        let member = members.get_mut(i).ok_or_else(|| {
            LabError::Invalid(format!("no etcd member {i} (the cluster has {count})"))
        })?;
        f(member)
    }
}

/// What `etcdctl endpoint status` says about one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EndpointStatus {
    /// The member it came from.
    index: usize,
    member_id: u64,
    /// The leader's ID as this member sees it; 0 for none.
    leader: u64,
}

/// Reads `etcdctl endpoint status -w json` of `endpoints` (member `indices[k]` at
/// `endpoints[k]`).
fn parse_statuses(
    text: &str,
    endpoints: &[String],
    indices: &[usize],
) -> Result<Vec<EndpointStatus>> {
    let bad = |reason: &str| LabError::Parse {
        what: "etcdctl endpoint status -w json".into(),
        reason: reason.into(),
        output: text.to_string(),
    };
    let list: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let list = list.as_array().ok_or_else(|| bad("not a JSON array"))?;
    list.iter()
        .map(|entry| {
            let endpoint = entry["Endpoint"]
                .as_str()
                .ok_or_else(|| bad("no Endpoint"))?;
            let index = endpoints
                .iter()
                .position(|e| e == endpoint)
                .and_then(|k| indices.get(k).copied())
                .ok_or_else(|| bad(&format!("unknown endpoint {endpoint}")))?;
            let status = &entry["Status"];
            Ok(EndpointStatus {
                index,
                member_id: status["header"]["member_id"]
                    .as_u64()
                    .ok_or_else(|| bad("no Status.header.member_id"))?,
                leader: status["leader"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// Reads `etcdctl member list -w json`: every member's name and ID.
fn parse_member_ids(text: &str) -> Result<Vec<(String, u64)>> {
    let bad = |reason: &str| LabError::Parse {
        what: "etcdctl member list -w json".into(),
        reason: reason.into(),
        output: text.to_string(),
    };
    let list: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    list["members"]
        .as_array()
        .ok_or_else(|| bad("no members array"))?
        .iter()
        .map(|m| {
            let name = m["name"]
                .as_str()
                .ok_or_else(|| bad("a member without a name"))?;
            let id = m["ID"]
                .as_u64()
                .ok_or_else(|| bad("a member without an ID"))?;
            Ok((name.to_string(), id))
        })
        .collect()
}

/// Removes every inherited environment variable whose name starts with `prefix`.
fn without_env_prefix(cmd: &mut Command, prefix: &str) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(name);
        }
    }
}

/// A TOML basic string holding `text`.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Extensions of a member's certificate (its `subjectAltName` is added per member): it
/// serves clients and peers, and is a peer's client certificate too.
const MEMBER_EXTENSIONS: &str = "basicConstraints = critical, CA:FALSE\n\
     keyUsage = critical, digitalSignature\n\
     extendedKeyUsage = serverAuth, clientAuth\n";

/// Extensions of a client certificate.
const CLIENT_EXTENSIONS: &str = "basicConstraints = critical, CA:FALSE\n\
     keyUsage = critical, digitalSignature\n\
     extendedKeyUsage = clientAuth\n";

/// A CA made with `openssl` (P-256 key), issuing certificates in a directory.
#[derive(Debug)]
struct CertAuthority {
    cert: PathBuf,
    key: PathBuf,
    serial: PathBuf,
}

impl CertAuthority {
    /// A self-signed CA `<dir>/<name>.crt` with key `<dir>/<name>.key` (0600).
    fn new(lab: &Lab, dir: &Path, name: &str, common_name: &str) -> Result<CertAuthority> {
        let ca = CertAuthority {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            serial: dir.join(format!("{name}.srl")),
        };
        openssl(
            lab,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &path_arg(&ca.key),
                "-out",
                &path_arg(&ca.cert),
                "-days",
                CERT_DAYS,
                "-subj",
                &format!("/CN={common_name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        set_mode(&ca.key, 0o600)?;
        set_mode(&ca.cert, 0o644)?;
        Ok(ca)
    }

    /// Issues `<dir>/<name>.crt` (key `<dir>/<name>.key`, 0600) for `common_name` with
    /// the X.509v3 `extensions` (an openssl extension file's lines); returns both paths.
    fn issue(
        &self,
        lab: &Lab,
        dir: &Path,
        name: &str,
        common_name: &str,
        extensions: &str,
    ) -> Result<(PathBuf, PathBuf)> {
        let key = dir.join(format!("{name}.key"));
        let csr = dir.join(format!("{name}.csr"));
        let cert = dir.join(format!("{name}.crt"));
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions)
            .map_err(|source| LabError::io(format!("writing {}", ext.display()), source))?;
        openssl(
            lab,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &path_arg(&key),
                "-out",
                &path_arg(&csr),
                "-subj",
                &format!("/CN={common_name}"),
            ],
        )?;
        set_mode(&key, 0o600)?;
        openssl(
            lab,
            &[
                "x509",
                "-req",
                "-in",
                &path_arg(&csr),
                "-CA",
                &path_arg(&self.cert),
                "-CAkey",
                &path_arg(&self.key),
                "-CAserial",
                &path_arg(&self.serial),
                "-CAcreateserial",
                "-days",
                CERT_DAYS,
                "-extfile",
                &path_arg(&ext),
                "-out",
                &path_arg(&cert),
            ],
        )?;
        set_mode(&cert, 0o644)?;
        Ok((cert, key))
    }
}

/// Runs `openssl ARGS…` in the host namespace (it only writes files).
fn openssl(lab: &Lab, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    lab.run(cmd, None, COMMAND_TIMEOUT)?.success()?;
    Ok(())
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| LabError::io(format!("setting the mode of {}", path.display()), source))
}

/// Creates `dir` with mode 0700 (keys and data directories live in it).
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|source| LabError::io(format!("creating {}", dir.display()), source))?;
    set_mode(dir, 0o700)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(
            toml_string("/tmp/tw1x0/etcd/ca.crt"),
            "\"/tmp/tw1x0/etcd/ca.crt\""
        );
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    /// Captured from Debian's etcdctl 3.4.23 (`endpoint status -w json` of three members
    /// with the third just killed: it exits 1 and lists those that answered).
    #[test]
    fn endpoint_status_names_members_and_their_leader() {
        let text = r#"[{"Endpoint":"https://192.168.254.1:2379","Status":{"header":{"cluster_id":590934500209334086,"member_id":4614680028301116813,"revision":2,"raft_term":3},"version":"3.4.23","dbSize":24576,"leader":5148148949964743034,"raftIndex":10,"raftTerm":3,"raftAppliedIndex":10,"dbSizeInUse":16384}},{"Endpoint":"https://192.168.254.2:2379","Status":{"header":{"cluster_id":590934500209334086,"member_id":5148148949964743034,"revision":2,"raft_term":3},"version":"3.4.23","dbSize":20480,"leader":5148148949964743034,"raftIndex":10,"raftTerm":3,"raftAppliedIndex":10,"dbSizeInUse":16384}}]"#;
        let endpoints = vec![
            "https://192.168.254.1:2379".to_string(),
            "https://192.168.254.2:2379".to_string(),
        ];
        let statuses = parse_statuses(text, &endpoints, &[0, 1]).unwrap();
        assert_eq!(
            statuses,
            vec![
                EndpointStatus {
                    index: 0,
                    member_id: 4614680028301116813,
                    leader: 5148148949964743034
                },
                EndpointStatus {
                    index: 1,
                    member_id: 5148148949964743034,
                    leader: 5148148949964743034
                },
            ]
        );
        assert!(parse_statuses("[{}]", &endpoints, &[0, 1]).is_err());
    }

    /// Captured from Debian's etcdctl 3.4.23 (`member list -w json`).
    #[test]
    fn member_list_gives_names_and_ids() {
        let text = r#"{"header":{"cluster_id":590934500209334086,"member_id":5148148949964743034,"raft_term":3},"members":[{"ID":4614680028301116813,"name":"etcd1","peerURLs":["https://192.168.254.1:2380"],"clientURLs":["https://192.168.254.1:2379"]},{"ID":5148148949964743034,"name":"etcd2","peerURLs":["https://192.168.254.2:2380"],"clientURLs":["https://192.168.254.2:2379"]},{"ID":15954106351875289693,"name":"etcd3","peerURLs":["https://192.168.254.3:2380"],"clientURLs":["https://192.168.254.3:2379"]}]}"#;
        assert_eq!(
            parse_member_ids(text).unwrap(),
            vec![
                ("etcd1".to_string(), 4614680028301116813),
                ("etcd2".to_string(), 5148148949964743034),
                ("etcd3".to_string(), 15954106351875289693),
            ]
        );
    }
}
