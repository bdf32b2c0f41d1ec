//! BGP on a node whose networking backend is BIRD (`networking_backend = "bird"`):
//! `tapwire-control` runs BIRD, keeps its configuration current and reads what it learns.
//!
//! - **Running BIRD** (the `tapwire-bird` thread): BIRD is a child of this thread,
//!   `bird -f -c <run_dir>/bird.conf -s <run_dir>/bird.ctl -P <run_dir>/bird.pid` (in
//!   the foreground, `TZ=UTC`, its log appended to `<run_dir>/bird.log`; with `-R`,
//!   graceful restart recovery, when the kernel table holds routes an earlier BIRD
//!   learned: BIRD then keeps them until its peers have sent theirs again), and
//!   the kernel kills it when the thread ends ([`tapwire_sys::process::die_with_parent`]):
//!   a BIRD never outlives the control that configures it. When the control stops or
//!   crashes, its peers see the session drop without a withdrawal and keep this node's
//!   routes for `[bird] graceful_restart_secs` (BGP graceful restart), this node's kernel
//!   table keeps what BIRD learned (`persist`), and the dataplane keeps forwarding; the
//!   next control starts BIRD again, which takes its sessions back up and refreshes the
//!   routes. A node that stays down is withdrawn by its peers when that time is up. A
//!   BIRD that exits is started again after 1 s, then after twice as long each time up
//!   to 30 s, with the end of its log in the control's; a missing BIRD binary is said
//!   once and looked for again on the same schedule.
//! - **Configuration**: every recompute renders `bird.conf` ([`crate::bgp::config`]); when
//!   the text changes, it is written (mode 0600: it may hold passwords) and BIRD told to
//!   read it (`configure` on its control socket).
//! - **Learned routes** (the `tapwire-learned` thread): BIRD writes them to the kernel
//!   table `[bird] kernel_table`; this thread dumps the table whenever the kernel announces
//!   a route change ([`tapwire_sys::netlink::RouteWatch`]), and at least every 10 s, and
//!   wakes the watch loop with the new list (a route that leaves the table is withdrawn
//!   after a 2 s hold). The first dump is made before the first recompute, so a
//!   restarted control sends its dataplane the routes the previous BIRD learned.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tapwire_sys::netlink::{Netlink, RouteWatch};
use tapwire_sys::process::die_with_parent;

use super::{lock, AgentError, Wake};
use crate::bgp::birdc::{Birdc, BirdcError};
use crate::bgp::config::{render, RenderInputs};
use crate::bgp::model::{BirdConfig, SecretKeyRef};
use crate::bgp::status::{bgp_peers, parse_protocols, parse_status, BgpPeerStatus};
use crate::model::NodeConfig;
use crate::routes::{ClusterState, LearnedRoute};

/// How long a command on BIRD's control socket may take.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a starting BIRD has to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause before BIRD is started again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A BIRD that ran this long is healthy again: its next restart waits [`FIRST_BACKOFF`].
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often the supervisor looks at BIRD when nothing wakes it.
const TICK: Duration = Duration::from_secs(1);
/// The learned-route table is dumped at least this often.
const RESYNC: Duration = Duration::from_secs(10);

/// The BGP side of the agent, shared by the watch loop, the API and its two threads.
#[derive(Debug)]
pub struct Bgp {
    pub config: BirdConfig,
    /// What BIRD learned, as last read from the kernel table, sorted.
    learned: Mutex<Arc<Vec<LearnedRoute>>>,
    /// New configurations for the supervisor.
    configs: Mutex<Sender<String>>,
    state: Mutex<BirdState>,
    /// The last configuration rendered and what it skipped (logged when it changes).
    rendered: Mutex<(String, Vec<String>)>,
}

/// What the supervisor knows of BIRD.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BirdState {
    /// BIRD's PID while it runs.
    pub pid: Option<u32>,
    /// Why BIRD does not run, or what went wrong last.
    pub problem: Option<String>,
}

/// What `node status` shows of BGP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpStatus {
    /// `BIRD 2.0.12 is running (pid 4242, router id 192.168.0.1)`, or why not.
    pub daemon: String,
    pub peers: Vec<BgpPeerStatus>,
}

impl Bgp {
    /// Prepares BGP for `config`'s node: its run directory, the learned-route watch and a
    /// first read of the table, and the supervisor thread (which starts BIRD with the
    /// first configuration it is given). `wake` wakes the watch loop.
    pub fn start(config: &NodeConfig, wake: Sender<Wake>) -> Result<Arc<Bgp>, AgentError> {
        let bird = config.bird.clone();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&bird.run_dir)
            .and_then(|()| fs::set_permissions(&bird.run_dir, fs::Permissions::from_mode(0o700)))
            .map_err(|source| AgentError::Bgp {
                reason: format!("creating {}: {source}", bird.run_dir.display()),
            })?;
        // Watch first, then read: no change between the two is missed.
        let watch = RouteWatch::open().map_err(|source| AgentError::Bgp {
            reason: format!("watching the kernel's routes: {source}"),
        })?;
        let learned =
            read_learned(bird.kernel_table).map_err(|reason| AgentError::Bgp { reason })?;
        tracing::info!(
            table = bird.kernel_table,
            routes = learned.len(),
            "read the routes BGP learned"
        );
        let (tx, configs) = mpsc::channel();
        let bgp = Arc::new(Bgp {
            config: bird,
            learned: Mutex::new(Arc::new(learned)),
            configs: Mutex::new(tx),
            state: Mutex::new(BirdState::default()),
            rendered: Mutex::new((String::new(), Vec::new())),
        });
        {
            let bgp = Arc::clone(&bgp);
            std::thread::Builder::new()
                .name("tapwire-learned".into())
                .spawn(move || bgp.follow_learned(watch, &wake))
                .map_err(AgentError::Thread)?;
        }
        {
            let bgp = Arc::clone(&bgp);
            std::thread::Builder::new()
                .name("tapwire-bird".into())
                .spawn(move || Supervisor::new(&bgp).run(&configs))
                .map_err(AgentError::Thread)?;
        }
        Ok(bgp)
    }

    /// What BIRD learned, as last read.
    pub fn learned(&self) -> Arc<Vec<LearnedRoute>> {
        Arc::clone(&lock(&self.learned))
    }

    /// The supervisor's view of BIRD.
    pub fn state(&self) -> BirdState {
        lock(&self.state).clone()
    }

    /// Renders BIRD's configuration from `cluster` and hands it to the supervisor when it
    /// changed; logs what was left out of it when that changed.
    pub fn configure(&self, cluster: &ClusterState, node: &NodeConfig) {
        let secrets_dir = self.config.secrets_dir.clone();
        let password = move |secret: &SecretKeyRef| read_secret(&secrets_dir, secret);
        let inputs = RenderInputs {
            node: &node.node,
            underlay_interface: &node.underlay_interface,
            bird: &self.config,
        };
        let rendered = match render(cluster, inputs, &password) {
            Ok(rendered) => rendered,
            Err(err) => {
                tracing::error!(%err, "rendering BIRD's configuration failed; keeping the last one");
                return;
            }
        };
        let mut last = lock(&self.rendered);
        if last.1 != rendered.speaker.skipped {
            for skipped in &rendered.speaker.skipped {
                tracing::warn!(%skipped, "BGP peering left out of BIRD's configuration");
            }
        }
        if last.0 != rendered.text {
            let _ = lock(&self.configs).send(rendered.text.clone());
        }
        *last = (rendered.text, rendered.speaker.skipped);
    }

    /// BIRD's own account of itself and its sessions (asked on its control socket).
    pub fn status(&self) -> BgpStatus {
        let state = self.state();
        let Some(pid) = state.pid else {
            return BgpStatus {
                daemon: format!(
                    "BIRD is not running: {}",
                    state.problem.as_deref().unwrap_or("not started yet")
                ),
                peers: Vec::new(),
            };
        };
        let asked =
            Birdc::connect(&self.config.control_socket(), BIRDC_TIMEOUT).and_then(|mut birdc| {
                let status = parse_status(&birdc.command("show status")?);
                let protocols = parse_protocols(&birdc.command("show protocols")?);
                Ok((status, protocols))
            });
        match asked {
            Ok((status, protocols)) => {
                let router_id = status
                    .router_id
                    .map(|id| format!(", router id {id}"))
                    .unwrap_or_default();
                BgpStatus {
                    daemon: format!(
                        "{} is running (pid {pid}{router_id}): {}",
                        status.version, status.state
                    ),
                    peers: bgp_peers(&protocols),
                }
            }
            Err(err) => BgpStatus {
                daemon: format!("BIRD runs (pid {pid}) but does not answer: {err}"),
                peers: Vec::new(),
            },
        }
    }

    /// The learned-route thread (see the module docs); ends when the watch loop is gone.
    fn follow_learned(&self, mut watch: RouteWatch, wake: &Sender<Wake>) {
        let table = self.config.kernel_table;
        let mut last_error: Option<String> = None;
        let mut held = Held::default();
        let mut look_again: Option<Instant> = None;
        loop {
            let timeout = look_again.map_or(RESYNC, |at| {
                at.saturating_duration_since(Instant::now()).min(RESYNC)
            });
            // A change (of any table, an address or a link: the watch does not say), lost
            // notifications, the end of a hold, or the periodic read: read the table.
            match watch.wait(timeout) {
                Ok(_) => {}
                Err(err) => {
                    let err = err.to_string();
                    if last_error.as_ref() != Some(&err) {
                        tracing::error!(%err, "watching the kernel's routes failed; reading the table every second");
                        last_error = Some(err);
                    }
                    std::thread::sleep(TICK);
                }
            }
            match read_learned(table) {
                Ok(routes) => {
                    last_error = None;
                    let mut learned = lock(&self.learned);
                    let in_table = routes.len();
                    let (routes, next) = held.apply(&learned, &routes, Instant::now());
                    tracing::debug!(in_table, published = routes.len(), held = ?next, "read the routes BGP learned");
                    look_again = next;
                    if **learned != routes {
                        tracing::debug!(routes = routes.len(), "the routes BGP learned changed");
                        *learned = Arc::new(routes);
                        drop(learned);
                        if wake.send(Wake::Learned).is_err() {
                            return;
                        }
                    }
                }
                Err(err) => {
                    if last_error.as_ref() != Some(&err) {
                        tracing::error!(%err, "reading the routes BGP learned failed; keeping the last ones");
                        last_error = Some(err);
                    }
                }
            }
        }
    }
}

/// How long a route must be gone from the kernel table before it is withdrawn from the
/// dataplane. A BIRD that ends its graceful restart recovery with a peer that is itself
/// recovering (both restarted within moments of each other) prunes the table before the
/// peer sends its routes again, which it does milliseconds later; the hold rides over that
/// instead of cutting forwarding. A new or changed route is taken at once.
const WITHDRAW_HOLD: Duration = Duration::from_secs(2);

/// Routes published to the dataplane that the kernel table no longer has, since when.
#[derive(Debug, Default)]
struct Held {
    missing_since: std::collections::BTreeMap<Ipv4Net, Instant>,
}

impl Held {
    /// What to publish when the table holds `table` at `now` and `published` was
    /// published: every route of the table, and each published one that has been missing
    /// from it for less than [`WITHDRAW_HOLD`]; and when to look again (the end of the
    /// earliest hold), if a route is held.
    fn apply(
        &mut self,
        published: &[LearnedRoute],
        table: &[LearnedRoute],
        now: Instant,
    ) -> (Vec<LearnedRoute>, Option<Instant>) {
        let present = |dst: &Ipv4Net| table.iter().any(|r| r.dst == *dst);
        self.missing_since.retain(|dst, _| !present(dst));
        let mut routes = table.to_vec();
        let mut look_again: Option<Instant> = None;
        for route in published.iter().filter(|r| !present(&r.dst)) {
            let since = *self.missing_since.entry(route.dst).or_insert(now);
            let until = since + WITHDRAW_HOLD;
            if now < until {
                routes.push(*route);
                look_again = Some(look_again.map_or(until, |at| at.min(until)));
            } else {
                self.missing_since.remove(&route.dst);
            }
        }
        routes.sort();
        (routes, look_again)
    }
}

/// The learned routes of kernel table `table`: each destination with its first gateway
/// (the BGP next hop).
fn read_learned(table: u32) -> Result<Vec<LearnedRoute>, String> {
    let routes = Netlink::open()
        .and_then(|mut netlink| netlink.dump_ipv4_table(table))
        .map_err(|e| format!("reading kernel table {table}: {e}"))?;
    let mut learned: Vec<LearnedRoute> = routes
        .into_iter()
        .filter_map(|route| {
            let dst = Ipv4Net::new(route.dst, route.prefix_len).ok()?.trunc();
            Some(LearnedRoute {
                dst,
                next_hop: *route.gateways.first()?,
            })
        })
        .collect();
    learned.sort();
    learned.dedup_by_key(|r| r.dst);
    Ok(learned)
}

/// A BGPPeer password: the file `<dir>/<name>/<key>`.
fn read_secret(dir: &Path, secret: &SecretKeyRef) -> Result<String, String> {
    let path = dir.join(&secret.name).join(&secret.key);
    fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The supervisor thread's state (see the module docs).
struct Supervisor<'b> {
    bgp: &'b Bgp,
    child: Option<(Child, Instant)>,
    /// The configuration to run, once the watch loop has rendered one.
    wanted: Option<String>,
    /// The configuration BIRD has read.
    loaded: Option<String>,
    next_start: Instant,
    backoff: Duration,
    /// The last problem logged, so a lasting one is logged once.
    logged: Option<String>,
}

impl<'b> Supervisor<'b> {
    fn new(bgp: &'b Bgp) -> Self {
        Supervisor {
            bgp,
            child: None,
            wanted: None,
            loaded: None,
            next_start: Instant::now(),
            backoff: FIRST_BACKOFF,
            logged: None,
        }
    }

    fn run(mut self, configs: &Receiver<String>) {
        loop {
            match configs.recv_timeout(TICK) {
                Ok(text) => self.wanted = Some(text),
                Err(RecvTimeoutError::Timeout) => {}
                // The agent is going away; BIRD goes with this thread.
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Some(text) = configs.try_iter().last() {
                self.wanted = Some(text);
            }
            self.check_child();
            let Some(wanted) = self.wanted.clone() else {
                continue;
            };
            if self.child.is_none() {
                if Instant::now() >= self.next_start {
                    self.start(&wanted);
                }
            } else if self.loaded.as_ref() != Some(&wanted) {
                self.reconfigure(&wanted);
            }
        }
    }

    /// Notices a BIRD that exited, and schedules its restart.
    fn check_child(&mut self) {
        let Some((child, started)) = &mut self.child else {
            return;
        };
        let status = match child.try_wait() {
            Ok(None) => {
                if started.elapsed() >= STABLE_AFTER {
                    self.backoff = FIRST_BACKOFF;
                }
                return;
            }
            Ok(Some(status)) => status.to_string(),
            Err(err) => format!("cannot be waited for: {err}"),
        };
        self.child = None;
        self.loaded = None;
        let log = fs::read_to_string(self.bgp.config.log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        self.problem(format!(
            "BIRD exited ({status}); starting it again in {} s. The end of {}:\n{}",
            self.backoff.as_secs(),
            self.bgp.config.log_file().display(),
            tail.join("\n")
        ));
        self.schedule_retry();
    }

    fn schedule_retry(&mut self) {
        self.next_start = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Records (and logs, once while it lasts) why BIRD does not run as it should.
    fn problem(&mut self, problem: String) {
        if self.logged.as_ref() != Some(&problem) {
            tracing::error!(%problem, "BGP");
            self.logged = Some(problem.clone());
        }
        let mut state = lock(&self.bgp.state);
        state.pid = self.child.as_ref().map(|(c, _)| c.id());
        state.problem = Some(problem);
    }

    fn start(&mut self, wanted: &str) {
        let config = &self.bgp.config;
        if !config.binary.is_file() {
            self.problem(format!(
                "BIRD is not installed: {} not found (Debian's package bird2: apt-get install bird2)",
                config.binary.display()
            ));
            self.schedule_retry();
            return;
        }
        // A BIRD already serving our socket (one a crashed control left, or started by
        // hand) would lose the socket to ours and run on unconfigured: it is asked to
        // stop first, for a graceful restart, so its peers keep the routes.
        if let Ok(mut stray) = Birdc::connect(&config.control_socket(), BIRDC_TIMEOUT) {
            tracing::warn!(socket = %config.control_socket().display(), "a BIRD already serves this node's control socket; asking it to stop for a graceful restart");
            let _ = stray.command("graceful restart");
            self.schedule_retry();
            return;
        }
        if let Err(err) = write_private(&config.config_file(), wanted) {
            self.problem(err);
            self.schedule_retry();
            return;
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(config.log_file());
        let log = match log {
            Ok(log) => log,
            Err(err) => {
                self.problem(format!("opening {}: {err}", config.log_file().display()));
                self.schedule_retry();
                return;
            }
        };
        // Graceful restart recovery when there is forwarding state to keep: routes an
        // earlier BIRD learned (it restarted, or the control did). A first start has none,
        // and recovery would only hold new routes back until every peer has answered.
        let recover = read_learned(config.kernel_table).is_ok_and(|routes| !routes.is_empty());
        let mut command = Command::new(&config.binary);
        command.arg("-f");
        if recover {
            command.arg("-R");
        }
        command
            .arg("-c")
            .arg(config.config_file())
            .arg("-s")
            .arg(config.control_socket())
            .arg("-P")
            .arg(config.pid_file())
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = match die_with_parent(&mut command).spawn() {
            Ok(child) => child,
            Err(err) => {
                self.problem(format!("starting {}: {err}", config.binary.display()));
                self.schedule_retry();
                return;
            }
        };
        let pid = child.id();
        self.child = Some((child, Instant::now()));
        // Ready once its control socket answers.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if Birdc::connect(&config.control_socket(), BIRDC_TIMEOUT).is_ok() {
                break;
            }
            if let Some((child, _)) = &mut self.child {
                if !matches!(child.try_wait(), Ok(None)) {
                    // Exited: check_child reports it with its log.
                    self.check_child();
                    return;
                }
            }
            if Instant::now() >= deadline {
                self.problem(format!(
                    "BIRD (pid {pid}) did not open {} within {} s",
                    config.control_socket().display(),
                    START_TIMEOUT.as_secs()
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(pid, socket = %config.control_socket().display(), graceful_restart_recovery = recover, "BIRD started");
        self.loaded = Some(wanted.to_string());
        self.logged = None;
        *lock(&self.bgp.state) = BirdState {
            pid: Some(pid),
            problem: None,
        };
    }

    /// Writes the new configuration and has BIRD read it.
    fn reconfigure(&mut self, wanted: &str) {
        let config = &self.bgp.config;
        if let Err(err) = write_private(&config.config_file(), wanted) {
            self.problem(err);
            return;
        }
        let result = Birdc::connect(&config.control_socket(), BIRDC_TIMEOUT)
            .and_then(|mut birdc| birdc.command("configure"));
        match result {
            Ok(lines) => {
                let said = lines.last().map(|l| l.text.clone()).unwrap_or_default();
                tracing::info!(%said, "BIRD read its new configuration");
                self.loaded = Some(wanted.to_string());
                self.logged = None;
                lock(&self.bgp.state).problem = None;
            }
            // Tried again on the next tick.
            Err(err @ BirdcError::Refused { .. }) => {
                self.problem(format!("BIRD did not take its new configuration: {err}"))
            }
            Err(err) => self.problem(format!("reconfiguring BIRD: {err}")),
        }
    }
}

/// Writes `text` to `path` (mode 0600) through a temporary file renamed over it.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("conf.tmp");
    let written = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
        })
        .and_then(|()| fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, next_hop: &str) -> LearnedRoute {
        LearnedRoute {
            dst: dst.parse().unwrap(),
            next_hop: next_hop.parse().unwrap(),
        }
    }

    #[test]
    fn a_missing_bird_is_said_plainly_and_looked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::parse(
            "node = \"node-a\"\nunderlay_interface = \"eth0\"\nnetworking_backend = \"bird\"\n",
            Path::new("node.toml"),
        )
        .unwrap();
        config.bird.binary = dir.path().join("no-bird");
        config.bird.run_dir = dir.path().join("run");
        // A table no test writes to.
        config.bird.kernel_table = 30999;
        let (wake, _woken) = mpsc::channel();
        let bgp = Bgp::start(&config, wake).unwrap();
        let mode = fs::metadata(&config.bird.run_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the run directory is the control's own"
        );
        let cluster = ClusterState {
            nodes: vec![crate::model::Node::new(
                "node-a",
                "192.168.0.1/24".parse().unwrap(),
            )],
            ..ClusterState::default()
        };
        bgp.configure(&cluster, &config);
        let deadline = Instant::now() + Duration::from_secs(5);
        while bgp.state().problem.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let expected = format!(
            "BIRD is not running: BIRD is not installed: {} not found (Debian's package bird2: apt-get install bird2)",
            config.bird.binary.display()
        );
        assert_eq!(bgp.status().daemon, expected);
        assert!(bgp.status().peers.is_empty());
        assert!(bgp.learned().is_empty());
    }

    #[test]
    fn a_withdrawal_waits_out_the_hold_and_a_return_cancels_it() {
        let mut held = Held::default();
        let start = Instant::now();
        let b = route("10.65.0.64/26", "192.168.0.2");
        let c = route("10.65.0.128/26", "192.168.0.3");
        // New routes are taken at once.
        let (published, next) = held.apply(&[], &[b, c], start);
        assert_eq!((published.clone(), next), (vec![b, c], None));
        // The table loses both: held, looked at again when the hold ends.
        let (published, next) = held.apply(&published, &[], start);
        assert_eq!(published, [b, c]);
        assert_eq!(next, Some(start + WITHDRAW_HOLD));
        // b comes back (the pruned table refilled); c stays missing.
        let later = start + WITHDRAW_HOLD / 2;
        let (published, next) = held.apply(&published, &[b], later);
        assert_eq!(published, [b, c]);
        assert_eq!(next, Some(start + WITHDRAW_HOLD));
        // c's hold ends: withdrawn. b, missing again, starts a hold of its own.
        let end = start + WITHDRAW_HOLD;
        let (published, next) = held.apply(&published, &[], end);
        assert_eq!(published, [b]);
        assert_eq!(next, Some(end + WITHDRAW_HOLD));
        // A changed next hop is taken at once.
        let moved = route("10.65.0.64/26", "192.168.0.9");
        let (published, next) = held.apply(&published, &[moved], end);
        assert_eq!((published, next), (vec![moved], None));
    }
}
