//! BIRD's configuration for one node, rendered from cluster state — what Calico's confd
//! renders from its templates. Sans-IO: documents in, `bird.conf` text out; the agent
//! writes the file and tells BIRD to read it.
//!
//! What the configuration does, Calico's way with tapwire's differences:
//!
//! - **Announce this node's blocks**: a `static` protocol with a `blackhole` route per
//!   block affine to the node (and its fixed pod CIDRs), except blocks of pools with
//!   `disableBGPExport`. Export filters send eBGP peers (routers) only these; iBGP peers
//!   also get the pool routes learned from others, which BIRD passes on only where this
//!   node is a route reflector.
//! - **Sessions** ([`sessions`]): the node-to-node mesh (unless the `default`
//!   BGPConfiguration turns it off), then the BGPPeer documents that apply to the node.
//!   Every session is `multihop` (nodes in other subnets peer through routers) with
//!   `gateway recursive`, `add paths`, graceful restart and a short connect retry; a mesh
//!   session to a node with a higher address is passive (that node connects), so a
//!   graceful restart is never cut short by a second connection. A node with
//!   `routeReflectorClusterID` treats iBGP peers outside its cluster as `rr client`s.
//! - **Learned routes** go to a table of their own, `tapwire_learned`, and from there to
//!   the kernel table `[bird] kernel_table` that tapwire-control reads: nothing routes by
//!   that table (no rule points at it), so the node's kernel forwarding is untouched. Its
//!   gateway is the **BGP next hop** (`onlink`, also when a router lies between): the node
//!   that announced the block, which is what tapwire-control needs to pick the
//!   encapsulation. The kernel protocol keeps its routes when BIRD stops (`persist`) and
//!   is in graceful restart, so a restarting BIRD never withdraws what is forwarded.
//! - **The node's main table** is read (`learn`, never written): it resolves next hops
//!   reached through a router (`gateway recursive`).
//!
//! Times are in BIRD's ISO format (`timeformat protocol iso long`) and BIRD runs with
//! `TZ=UTC`, so [`super::status`] reads the SINCE of every session as UTC.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::model::{BgpConfiguration, BgpPeer, BirdConfig, LogSeverity, SecretKeyRef};
use crate::model::{Node, Resource};
use crate::routes::{
    block_owners, usable_nodes, usable_pools, BlockSource, ClusterState, RoutesError,
};

/// The BIRD table learned routes are gathered in before the kernel gets them.
pub const LEARNED_TABLE: &str = "tapwire_learned";
/// The static protocol holding this node's blocks.
pub const BLOCKS_PROTOCOL: &str = "tapwire_blocks";

/// What kind of peering a session is; the prefix of its protocol name, which is how
/// [`super::status`] (as calicoctl) tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerType {
    /// Every node with every other (`Mesh_…`).
    Mesh,
    /// A BGPPeer with `node` or `nodeSelector` (`Node_…`).
    NodeSpecific,
    /// A BGPPeer for every node (`Global_…`).
    Global,
}

impl PeerType {
    /// The protocol name prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            PeerType::Mesh => "Mesh",
            PeerType::NodeSpecific => "Node",
            PeerType::Global => "Global",
        }
    }

    /// calicoctl's PEER TYPE.
    pub fn describe(self) -> &'static str {
        match self {
            PeerType::Mesh => "node-to-node mesh",
            PeerType::NodeSpecific => "node specific",
            PeerType::Global => "global",
        }
    }

    /// The type a protocol name prefix stands for.
    pub fn from_prefix(prefix: &str) -> Option<PeerType> {
        [PeerType::Mesh, PeerType::NodeSpecific, PeerType::Global]
            .into_iter()
            .find(|t| t.prefix() == prefix)
    }
}

/// One BGP session of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub peer_type: PeerType,
    pub peer_ip: Ipv4Addr,
    pub peer_as: u32,
    /// The peer is a node of the cluster (its name); else a router.
    pub peer_node: Option<String>,
    /// This node reflects routes to the peer (`rr client`).
    pub rr_client: bool,
    /// This node waits for the peer to connect.
    pub passive: bool,
    pub password: Option<SecretKeyRef>,
    /// What asked for the session (`node-to-node mesh`, `BGPPeer "rack1-tor"`).
    pub origin: String,
}

impl Session {
    /// The BIRD protocol name: the type's prefix and the address (`Mesh_192_168_0_2`).
    pub fn protocol(&self) -> String {
        protocol_name(self.peer_type, self.peer_ip)
    }
}

/// `Mesh_192_168_0_2`.
pub fn protocol_name(peer_type: PeerType, ip: Ipv4Addr) -> String {
    format!(
        "{}_{}",
        peer_type.prefix(),
        ip.to_string().replace('.', "_")
    )
}

/// What one node's BGP speaker is: its identity and sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    pub address: Ipv4Addr,
    pub as_number: u32,
    pub cluster_id: Option<Ipv4Addr>,
    pub log_severity: LogSeverity,
    pub sessions: Vec<Session>,
    /// Peerings that could not be made, with why (for the log).
    pub skipped: Vec<String>,
}

/// The node's AS number: its own, else the configuration's.
fn as_of(node: &Node, config: &BgpConfiguration) -> u32 {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.as_number)
        .unwrap_or_else(|| config.as_number())
}

fn cluster_id_of(node: &Node) -> Option<Ipv4Addr> {
    node.spec
        .bgp
        .as_ref()
        .and_then(|b| b.route_reflector_cluster_id)
}

/// The `default` BGPConfiguration when it is valid (else Calico's defaults, with why).
fn configuration(cluster: &ClusterState, skipped: &mut Vec<String>) -> BgpConfiguration {
    let mut chosen = BgpConfiguration::new();
    for config in &cluster.bgp_configurations {
        match config.validate() {
            Ok(()) => chosen = config.clone(),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    chosen
}

/// The BGP sessions of node `local`: the mesh, then each BGPPeer that applies to it, one
/// session per peer address (a BGPPeer wins over the mesh, a node-specific one over a
/// global one; the loser is reported in [`Speaker::skipped`]). Errors when `local` has no
/// usable Node document.
pub fn sessions(cluster: &ClusterState, local: &str) -> Result<Speaker, RoutesError> {
    let mut skipped = Vec::new();
    let nodes = usable_nodes(cluster, local, &mut skipped)?;
    let config = configuration(cluster, &mut skipped);
    let Some(&(me, my_underlay)) = nodes.get(local) else {
        return Err(RoutesError::UnknownNode {
            node: local.to_string(),
        });
    };
    let my_ip = my_underlay.addr();
    let my_as = as_of(me, &config);
    let my_cluster = cluster_id_of(me);
    let node_at = |ip: Ipv4Addr| {
        nodes
            .values()
            .find(|(_, u)| u.addr() == ip)
            .map(|(n, _)| *n)
    };

    let mut wanted: Vec<Session> = Vec::new();
    let mut add = |peer_type: PeerType,
                   peer: Ipv4Addr,
                   peer_as: u32,
                   origin: String,
                   password: Option<SecretKeyRef>| {
        if peer == my_ip {
            return;
        }
        let peer_node = node_at(peer);
        let ibgp = peer_as == my_as;
        // Calico's rule: a reflector's iBGP peers outside its cluster are its clients.
        let rr_client =
            ibgp && my_cluster.is_some() && peer_node.and_then(cluster_id_of) != my_cluster;
        wanted.push(Session {
            peer_type,
            peer_ip: peer,
            peer_as,
            peer_node: peer_node.map(|n| n.name().to_string()),
            rr_client,
            passive: peer_node.is_some() && peer > my_ip,
            password,
            origin,
        });
    };

    let mut peers: Vec<&BgpPeer> = Vec::new();
    for peer in &cluster.bgp_peers {
        match peer.validate() {
            Ok(()) => peers.push(peer),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    // Node-specific first, then global, then the mesh: the first session to an address
    // is kept.
    let applies = |peer: &BgpPeer, node: &Node| match (&peer.spec.node, peer.node_selector()) {
        (Some(name), _) => name == node.name(),
        (None, Some(selector)) => selector.matches(&node.metadata.labels),
        (None, None) => true,
    };
    for global in [false, true] {
        for peer in peers.iter().filter(|p| p.is_global() == global) {
            let peer_type = if global {
                PeerType::Global
            } else {
                PeerType::NodeSpecific
            };
            let origin = format!("BGPPeer {:?}", peer.name());
            let password = peer
                .spec
                .password
                .as_ref()
                .map(|p| p.secret_key_ref.clone());
            if let Some(ip) = peer.spec.peer_ip {
                if applies(peer, me) {
                    let asn = peer.spec.as_number.unwrap_or(my_as);
                    add(peer_type, ip, asn, origin.clone(), password.clone());
                }
                continue;
            }
            let Some(selector) = peer.peer_selector() else {
                continue;
            };
            // Both ways, as Calico: this node peers with the nodes the peer selector picks
            // when the peering applies to it, and with the nodes the peering applies to
            // when the peer selector picks it.
            for (name, (node, underlay)) in &nodes {
                if *name == local {
                    continue;
                }
                let forward = applies(peer, me) && selector.matches(&node.metadata.labels);
                let backward = selector.matches(&me.metadata.labels) && applies(peer, node);
                if forward || backward {
                    add(
                        peer_type,
                        underlay.addr(),
                        as_of(node, &config),
                        origin.clone(),
                        password.clone(),
                    );
                }
            }
        }
    }
    if config.mesh_enabled() {
        for (name, (node, underlay)) in &nodes {
            if *name != local {
                add(
                    PeerType::Mesh,
                    underlay.addr(),
                    as_of(node, &config),
                    format!("node-to-node mesh ({name})"),
                    None,
                );
            }
        }
    }
    let mut sessions: Vec<Session> = Vec::new();
    for session in wanted {
        match sessions.iter().find(|s| s.peer_ip == session.peer_ip) {
            Some(kept) if kept.origin != session.origin => skipped.push(format!(
                "{}: a session to {} comes from {} already",
                session.origin, session.peer_ip, kept.origin
            )),
            Some(_) => {}
            None => sessions.push(session),
        }
    }
    Ok(Speaker {
        address: my_ip,
        as_number: my_as,
        cluster_id: my_cluster,
        log_severity: config.log_severity(),
        sessions,
        skipped,
    })
}

/// What the agent knows about this node besides the documents.
#[derive(Debug, Clone, Copy)]
pub struct RenderInputs<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The underlay interface (whose subnet holds directly reachable next hops).
    pub underlay_interface: &'a str,
    pub bird: &'a BirdConfig,
}

/// A rendered configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text of `bird.conf`.
    pub text: String,
    pub speaker: Speaker,
}

/// Renders node `inputs.node`'s BIRD configuration. `password` reads a BGPPeer's secret
/// (the agent reads `<secrets_dir>/<name>/<key>`); a session whose password cannot be
/// read, or cannot be written into BIRD's configuration, is left out and reported in
/// [`Speaker::skipped`] (a session without its password would be refused by the peer
/// anyway).
pub fn render(
    cluster: &ClusterState,
    inputs: RenderInputs<'_>,
    password: &dyn Fn(&SecretKeyRef) -> Result<String, String>,
) -> Result<Rendered, RoutesError> {
    let mut speaker = sessions(cluster, inputs.node)?;
    let mut ignored = Vec::new();
    let pools = usable_pools(cluster, &mut ignored);
    let nodes = usable_nodes(cluster, inputs.node, &mut ignored)?;
    let exported: Vec<Ipv4Net> = block_owners(cluster, &nodes, &mut ignored)
        .into_iter()
        .filter(|(_, (owner, _))| *owner == inputs.node)
        .filter(|(cidr, (_, source))| {
            // Calico announces blocks of pools that allow it; a declared CIDR outside
            // every pool is announced as it is.
            let pool = pools.iter().find(|p| p.spec.cidr.contains(cidr));
            *source == BlockSource::PodCidr && pool.is_none()
                || pool.is_some_and(|p| !p.spec.disable_bgp_export)
        })
        .map(|(cidr, _)| cidr)
        .collect();
    let mut secrets = BTreeMap::new();
    speaker.sessions.retain(|session| {
        let Some(secret) = &session.password else {
            return true;
        };
        match password(secret).and_then(|text| bird_string(&text)) {
            Ok(quoted) => {
                secrets.insert(session.peer_ip, quoted);
                true
            }
            Err(why) => {
                speaker.skipped.push(format!(
                    "{}: session to {} left out: password {}/{}: {why}",
                    session.origin, session.peer_ip, secret.name, secret.key
                ));
                false
            }
        }
    });
    let text = Writer {
        speaker: &speaker,
        inputs,
        blocks: &exported,
        pools: &pools
            .iter()
            .filter(|p| !p.spec.disable_bgp_export)
            .map(|p| p.spec.cidr)
            .collect::<Vec<_>>(),
        passwords: &secrets,
    }
    .to_string();
    Ok(Rendered { text, speaker })
}

/// A password as a BIRD string literal, or why it cannot be one.
fn bird_string(text: &str) -> Result<String, String> {
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err("empty".into());
    }
    if text.len() > 80 {
        return Err("longer than TCP MD5's 80 bytes".into());
    }
    if text
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err("holds a quote, a backslash or a control character".into());
    }
    Ok(format!("\"{text}\""))
}

struct Writer<'a> {
    speaker: &'a Speaker,
    inputs: RenderInputs<'a>,
    blocks: &'a [Ipv4Net],
    pools: &'a [Ipv4Net],
    passwords: &'a BTreeMap<Ipv4Addr, String>,
}

impl fmt::Display for Writer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let speaker = self.speaker;
        let bird = self.inputs.bird;
        let (log, debug) = match speaker.log_severity {
            LogSeverity::Debug => ("all", "all"),
            LogSeverity::Info => (
                "{ info, trace, remote, warning, error, auth, fatal, bug }",
                "{ states }",
            ),
            LogSeverity::Warning => ("{ warning, error, auth, fatal, bug }", "off"),
            LogSeverity::Error => ("{ error, auth, fatal, bug }", "off"),
            LogSeverity::Fatal => ("{ fatal, bug }", "off"),
        };
        writeln!(
            f,
            "# BIRD configuration of node {node}, written by tapwire-control from the datastore\n\
             # on every change (as Calico's confd does): edits are overwritten.\n\
             router id {address};\n\
             timeformat protocol iso long;\n\
             log stderr {log};\n\
             debug protocols {debug};\n\
             graceful restart wait {gr};\n\
             \n\
             ipv4 table {LEARNED_TABLE};\n\
             \n\
             protocol device {{\n\
             \tscan time 10;\n\
             }}\n\
             \n\
             # The underlay's subnet: next hops on it are reached directly.\n\
             protocol direct {{\n\
             \tipv4;\n\
             \tinterface \"{underlay}\";\n\
             }}\n\
             \n\
             # The node's main table, read only: how next hops in other subnets are reached.\n\
             protocol kernel kernel_main {{\n\
             \tipv4 {{\n\
             \t\timport all;\n\
             \t\texport none;\n\
             \t}};\n\
             \tlearn;\n\
             \tscan time 2;\n\
             }}\n\
             \n\
             # This node's blocks (Calico announces each as a blackhole route).\n\
             protocol static {BLOCKS_PROTOCOL} {{\n\
             \tipv4;",
            node = self.inputs.node,
            address = speaker.address,
            gr = bird.graceful_restart_secs,
            underlay = self.inputs.underlay_interface,
        )?;
        for block in self.blocks {
            writeln!(f, "\troute {block} blackhole;")?;
        }
        writeln!(
            f,
            "}}\n\
             \n\
             # What BGP learned, for tapwire-control: kernel table {table}, which nothing routes\n\
             # by. The gateway is the BGP next hop, the node that announced the block (onlink:\n\
             # also when a router lies between); the routes stay while BIRD restarts.\n\
             protocol pipe {LEARNED_TABLE}_pipe {{\n\
             \ttable master4;\n\
             \tpeer table {LEARNED_TABLE};\n\
             \texport where source = RTS_BGP;\n\
             \timport none;\n\
             }}\n\
             \n\
             protocol kernel kernel_learned {{\n\
             \tkernel table {table};\n\
             \tipv4 {{\n\
             \t\ttable {LEARNED_TABLE};\n\
             \t\timport none;\n\
             \t\texport filter {{\n\
             \t\t\tonlink = true;\n\
             \t\t\tgw = bgp_next_hop;\n\
             \t\t\taccept;\n\
             \t\t}};\n\
             \t}};\n\
             \tpersist;\n\
             \tscan time 2;\n\
             \tgraceful restart;\n\
             \tmerge paths on;\n\
             }}\n\
             \n\
             # To routers (eBGP): this node's blocks only.\n\
             filter tapwire_export {{\n\
             \tif proto = \"{BLOCKS_PROTOCOL}\" then accept;\n\
             \treject;\n\
             }}\n\
             \n\
             # To nodes (iBGP): also the pools' routes learned from others, which BIRD passes\n\
             # on only where this node reflects routes.\n\
             filter tapwire_export_ibgp {{\n\
             \tif proto = \"{BLOCKS_PROTOCOL}\" then accept;",
            table = bird.kernel_table,
        )?;
        if !self.pools.is_empty() {
            let pools: Vec<String> = self.pools.iter().map(|p| format!("{p}+")).collect();
            writeln!(
                f,
                "\tif source = RTS_BGP && net ~ [ {} ] then accept;",
                pools.join(", ")
            )?;
        }
        writeln!(
            f,
            "\treject;\n\
             }}\n\
             \n\
             template bgp tapwire_peer {{\n\
             \tlocal {address} as {asn};\n\
             \tmultihop;\n\
             \tgraceful restart on;\n\
             \tgraceful restart time {gr};\n\
             \tconnect delay time 1;\n\
             \tconnect retry time 3;\n\
             \terror wait time 5, 30;\n\
             \tipv4 {{\n\
             \t\timport all;\n\
             \t\tgateway recursive;\n\
             \t\tadd paths on;\n\
             \t}};\n\
             }}",
            address = speaker.address,
            asn = speaker.as_number,
            gr = bird.graceful_restart_secs,
        )?;
        for session in &speaker.sessions {
            let mut body = String::new();
            let _ = writeln!(
                body,
                "\tdescription \"{}\";",
                session.origin.replace('"', "'")
            );
            let _ = writeln!(
                body,
                "\tneighbor {} as {};",
                session.peer_ip, session.peer_as
            );
            if session.passive {
                body.push_str("\tpassive on;\n");
            }
            if session.rr_client {
                if let Some(id) = speaker.cluster_id {
                    let _ = writeln!(body, "\trr client;\n\trr cluster id {id};");
                }
            }
            if let Some(password) = self.passwords.get(&session.peer_ip) {
                let _ = writeln!(body, "\tpassword {password};");
            }
            let filter = if session.peer_as == speaker.as_number {
                "tapwire_export_ibgp"
            } else {
                "tapwire_export"
            };
            let _ = writeln!(body, "\tipv4 {{\n\t\texport filter {filter};\n\t}};");
            writeln!(
                f,
                "\nprotocol bgp {} from tapwire_peer {{\n{body}}}",
                session.protocol()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
