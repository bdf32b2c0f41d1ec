//! What BIRD says about itself and its sessions, read the way calicoctl reads it: `show
//! protocols` rows ([`parse_protocols`]), the BGP ones turned into `node status` peers by
//! their names (`Mesh_192_168_0_2` is the node-to-node mesh session to 192.168.0.2, see
//! [`super::config`]), and `show status` ([`parse_status`]). Sans-IO.

use std::net::Ipv4Addr;

use super::birdc::Line;
use super::config::PeerType;

/// One row of `show protocols`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    /// `BGP`, `Kernel`, `Static`, …
    pub proto: String,
    pub table: String,
    /// BIRD's protocol state: `up`, `start`, `stop`, `down`, `flush`.
    pub state: String,
    /// When the state last changed, as BIRD prints it (`2026-12-02 02:43:35` with the
    /// ISO time format tapwire configures).
    pub since: String,
    /// For BGP, the session state and the last error (`Established`, `Active Socket:
    /// Connection refused`), spaces collapsed.
    pub info: String,
}

/// `show protocols` reply code of a protocol row.
const PROTOCOL_ROW: u16 = 1002;

/// The rows of a `show protocols` reply (the header, code 2002, is not one).
pub fn parse_protocols(lines: &[Line]) -> Vec<Protocol> {
    lines
        .iter()
        .filter(|l| l.code == PROTOCOL_ROW)
        .filter_map(|l| parse_row(&l.text))
        .collect()
}

fn parse_row(text: &str) -> Option<Protocol> {
    let mut words = text.split_whitespace().peekable();
    let name = words.next()?.to_string();
    let proto = words.next()?.to_string();
    let table = words.next()?.to_string();
    let state = words.next()?.to_string();
    let mut since = words.next()?.to_string();
    // `iso long` and `iso short` times are a date and a time of day.
    if is_date(&since) && words.peek().is_some_and(|w| is_time(w)) {
        since.push(' ');
        since.push_str(words.next().unwrap_or_default());
    }
    let info = words.collect::<Vec<_>>().join(" ");
    Some(Protocol {
        name,
        proto,
        table,
        state,
        since,
        info,
    })
}

/// `2026-12-02`.
fn is_date(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `02:43:35`, optionally with a fraction.
fn is_time(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 8
        && b[2] == b':'
        && b[5] == b':'
        && b[..8]
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || i == 5 || c.is_ascii_digit())
}

/// A BGP session of `node status`, in calicoctl's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeerStatus {
    pub address: Ipv4Addr,
    pub peer_type: PeerType,
    /// The session is established (calicoctl's STATE `up`); any other state (BIRD's
    /// `start`, `stop`, `down`, `flush`) is a session that is down.
    pub up: bool,
    /// When the state last changed: RFC 3339 when BIRD printed a full date and time
    /// (tapwire runs BIRD in UTC), else as BIRD printed it.
    pub since: String,
    pub info: String,
}

/// The BGP sessions of tapwire's configuration among `protocols` (named `<Type>_<a_b_c_d>`);
/// other protocols, and BGP protocols named otherwise, are not peers.
pub fn bgp_peers(protocols: &[Protocol]) -> Vec<BgpPeerStatus> {
    protocols
        .iter()
        .filter(|p| p.proto == "BGP")
        .filter_map(|p| {
            let (prefix, address) = p.name.split_once('_')?;
            let peer_type = PeerType::from_prefix(prefix)?;
            let address: Ipv4Addr = address.replace('_', ".").parse().ok()?;
            Some(BgpPeerStatus {
                address,
                peer_type,
                up: p.state == "up",
                since: rfc3339(&p.since).unwrap_or_else(|| p.since.clone()),
                info: p.info.clone(),
            })
        })
        .collect()
}

/// `2026-12-02 02:43:35` (UTC) → `2026-12-02T02:43:35Z`.
fn rfc3339(since: &str) -> Option<String> {
    let (date, time) = since.split_once(' ')?;
    (is_date(date) && is_time(time)).then(|| format!("{date}T{}Z", &time[..8]))
}

/// What `show status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    /// `BIRD 2.0.12`.
    pub version: String,
    pub router_id: Option<Ipv4Addr>,
    /// `Daemon is up and running` (or why not: `Shutdown in progress`, …).
    pub state: String,
}

/// The lines of a `show status` reply.
pub fn parse_status(lines: &[Line]) -> DaemonStatus {
    let version = lines
        .iter()
        .find(|l| l.code == 1000)
        .map(|l| l.text.clone())
        .unwrap_or_default();
    let router_id = lines
        .iter()
        .find_map(|l| l.text.strip_prefix("Router ID is "))
        .and_then(|id| id.trim().parse().ok());
    let state = lines
        .last()
        .filter(|l| l.code < 1000)
        .map(|l| l.text.clone())
        .unwrap_or_default();
    DaemonStatus {
        version,
        router_id,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::super::birdc::{Fed, ReplyParser};
    use super::*;

    fn lines(reply: &str) -> Vec<Line> {
        let mut parser = ReplyParser::default();
        for line in reply.lines() {
            if parser.feed(line).unwrap() == Fed::Done {
                return parser.finish("show").unwrap();
            }
        }
        panic!("unterminated")
    }

    /// `show protocols` of a node with BIRD 2.0.12 as tapwire configures it: one session
    /// established, one whose peer shut down, one whose peer is unreachable.
    const PROTOCOLS: &str = "2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     2026-12-02 02:43:34  
 direct1    Direct     ---        up     2026-12-02 02:43:34  
 kernel_main Kernel     master4    up     2026-12-02 02:43:34  
 tapwire_blocks Static     master4    up     2026-12-02 02:43:34  
 tapwire_learned_pipe Pipe       ---        up     2026-12-02 02:43:34  master4 <=> tapwire_learned
 kernel_learned Kernel     tapwire_learned up     2026-12-02 02:43:34  
 Mesh_192_168_1_3 BGP        ---        up     2026-12-02 02:43:35  Established   
 Mesh_192_168_0_2 BGP        ---        start  2026-12-02 02:46:46  Passive       Received: Administrative shutdown
 Node_192_168_0_254 BGP        ---        start  2026-12-02 02:28:57  Active        Socket: Connection refused
0000 
";

    #[test]
    fn show_protocols_reads_as_calicoctls_peers() {
        let protocols = parse_protocols(&lines(PROTOCOLS));
        assert_eq!(protocols.len(), 9);
        assert_eq!(
            protocols[4],
            Protocol {
                name: "tapwire_learned_pipe".into(),
                proto: "Pipe".into(),
                table: "---".into(),
                state: "up".into(),
                since: "2026-12-02 02:43:34".into(),
                info: "master4 <=> tapwire_learned".into(),
            }
        );
        let peers = bgp_peers(&protocols);
        assert_eq!(
            peers,
            [
                BgpPeerStatus {
                    address: Ipv4Addr::new(192, 168, 1, 3),
                    peer_type: PeerType::Mesh,
                    up: true,
                    since: "2026-12-02T02:43:35Z".into(),
                    info: "Established".into(),
                },
                BgpPeerStatus {
                    address: Ipv4Addr::new(192, 168, 0, 2),
                    peer_type: PeerType::Mesh,
                    up: false,
                    since: "2026-12-02T02:46:46Z".into(),
                    info: "Passive Received: Administrative shutdown".into(),
                },
                BgpPeerStatus {
                    address: Ipv4Addr::new(192, 168, 0, 254),
                    peer_type: PeerType::NodeSpecific,
                    up: false,
                    since: "2026-12-02T02:28:57Z".into(),
                    info: "Active Socket: Connection refused".into(),
                },
            ]
        );
    }

    #[test]
    fn birds_default_time_format_and_foreign_protocols() {
        // BIRD's default format (as calicoctl sees it) and a protocol someone else named.
        let protocols = parse_protocols(&lines(
            "2002-Name       Proto      Table      State  Since         Info\n1002-mesh       BGP        ---        start  02:28:57.888  Active        Socket: Connection refused\n Global_10_0_0_1 BGP        ---        up     02:29:06.495  Established   \n0000 \n",
        ));
        assert_eq!(protocols[0].since, "02:28:57.888");
        let peers = bgp_peers(&protocols);
        assert_eq!(peers.len(), 1, "only tapwire's names are peers");
        assert_eq!(peers[0].peer_type, PeerType::Global);
        assert_eq!(peers[0].since, "02:29:06.495");
        // A row too short to be one is skipped.
        assert!(parse_protocols(&[Line {
            code: 1002,
            text: "x BGP".into()
        }])
        .is_empty());
    }

    #[test]
    fn show_status_gives_version_router_id_and_state() {
        let status = parse_status(&lines(
            "1000-BIRD 2.0.12\n1011-Router ID is 192.168.0.1\n Hostname is vm\n Current server time is 2026-12-02 02:46:46.766\n Last reboot on 2026-12-02 02:43:34.660\n Last reconfiguration on 2026-12-02 02:43:34.660\n0013 Daemon is up and running\n",
        ));
        assert_eq!(
            status,
            DaemonStatus {
                version: "BIRD 2.0.12".into(),
                router_id: Some(Ipv4Addr::new(192, 168, 0, 1)),
                state: "Daemon is up and running".into(),
            }
        );
    }
}
