//! BIRD in the lab: a router of the fabric running its own stock BIRD ([`RouterBird`],
//! Debian's `bird2`), which peers with the nodes over eBGP and installs what it learns
//! in its kernel's main table, as a top-of-rack router would; and reading any BIRD's
//! control socket ([`birdc`], [`show_route`]).
//!
//! A router's BIRD runs in the foreground as the lab's child, with its configuration,
//! control socket and log in the lab's directory (never the system's `/etc/bird` or
//! `/run/bird`), and is killed by PID with the lab.

use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tapwire_control::bgp::birdc::{Birdc, Line};
use tapwire_control::bgp::status::{parse_protocols, Protocol};

use crate::error::{LabError, Result};
use crate::lab::{require_tool, spawn_logging_to, Lab};
use crate::netns::Netns;
use crate::process::Proc;

/// Debian's BIRD 2 binary.
pub const BIRD: &str = "/usr/sbin/bird";
/// How long a BIRD control-socket command may take.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a router's BIRD has to open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails with [`LabError::ToolMissing`] unless Debian's `bird2` is installed.
pub fn require_bird() -> Result<()> {
    require_tool("bird", "bird2")
}

/// Runs `command` on the BIRD serving `socket`; its reply's lines.
pub fn birdc(socket: &Path, command: &str) -> Result<Vec<Line>> {
    let failed = |e: tapwire_control::bgp::birdc::BirdcError| LabError::Invalid(e.to_string());
    Birdc::connect(socket, BIRDC_TIMEOUT)
        .and_then(|mut c| c.command(command))
        .map_err(failed)
}

/// One route of `show route`: destination and the protocol it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirdRoute {
    pub dst: String,
    pub protocol: String,
}

/// `show route` of the BIRD serving `socket` (its `master4` table): each destination
/// with the protocol of each of its routes.
pub fn show_route(socket: &Path) -> Result<Vec<BirdRoute>> {
    let lines = birdc(socket, "show route")?;
    Ok(lines
        .iter()
        .filter_map(|line| {
            // `10.65.1.0/26  unicast [node1 2026-12-02 02:17:22] * (100) [AS64512i]`
            let mut words = line.text.split_whitespace();
            let dst = words.next().filter(|w| w.contains('/'))?;
            let protocol = words
                .find_map(|w| w.strip_prefix('['))
                .filter(|p| !p.is_empty())?;
            Some(BirdRoute {
                dst: dst.to_string(),
                protocol: protocol.to_string(),
            })
        })
        .collect())
}

/// A fabric router's BIRD (see the module docs).
#[derive(Debug)]
pub struct RouterBird {
    socket: PathBuf,
    _proc: Proc,
}

impl RouterBird {
    /// Starts BIRD in `netns` as router `name` with `router_id`, in AS `asn`, with an
    /// eBGP session to each `(address, AS)` of `neighbors` (directly connected); what it
    /// learns goes into the namespace's main table. Waits for its control socket.
    pub fn start(
        lab: &Lab,
        netns: &Netns,
        name: &str,
        router_id: Ipv4Addr,
        asn: u32,
        neighbors: &[(Ipv4Addr, u32)],
    ) -> Result<RouterBird> {
        require_bird()?;
        let dir = lab.dir().join(format!("{name}-bird"));
        std::fs::create_dir_all(&dir)
            .map_err(|source| LabError::io(format!("creating {}", dir.display()), source))?;
        let config = dir.join("bird.conf");
        let socket = dir.join("bird.ctl");
        let log = dir.join("bird.log");
        let mut text = format!(
            "router id {router_id};\n\
             timeformat protocol iso long;\n\
             log stderr all;\n\
             protocol device {{ scan time 10; }}\n\
             protocol direct {{ ipv4; }}\n\
             # What BGP learned goes to the router's main table: it forwards by it.\n\
             protocol kernel {{ ipv4 {{ import none; export where source = RTS_BGP; }}; }}\n\
             template bgp node {{\n\
             \tlocal as {asn};\n\
             \tipv4 {{ import all; export none; }};\n\
             }}\n"
        );
        for (i, (address, peer_as)) in neighbors.iter().enumerate() {
            text.push_str(&format!(
                "protocol bgp node{} from node {{ neighbor {address} as {peer_as}; }}\n",
                i + 1
            ));
        }
        std::fs::write(&config, text)
            .map_err(|source| LabError::io(format!("writing {}", config.display()), source))?;
        lab.add_log(format!("BIRD of router {name}"), log.clone());
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| LabError::io(format!("opening {}", log.display()), source))?;
        let (config_arg, socket_arg) = (config.display().to_string(), socket.display().to_string());
        let mut cmd = netns.command(&[BIRD, "-f", "-c", &config_arg, "-s", &socket_arg]);
        cmd.env("TZ", "UTC");
        let mut proc = spawn_logging_to(lab, &mut cmd, file, format!("BIRD of router {name}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while birdc(&socket, "show status").is_err() {
            if let Some(status) = proc.try_wait()? {
                return Err(LabError::Invalid(format!(
                    "BIRD of router {name} exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("BIRD of router {name} opening {}", socket.display()),
                    after: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RouterBird {
            socket,
            _proc: proc,
        })
    }

    /// The router's control socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `show route`.
    pub fn routes(&self) -> Result<Vec<BirdRoute>> {
        show_route(&self.socket)
    }

    /// `show protocols`.
    pub fn protocols(&self) -> Result<Vec<Protocol>> {
        Ok(parse_protocols(&birdc(&self.socket, "show protocols")?))
    }
}
