//! What `tapwirectl` prints: calicoctl-shaped tables, YAML and JSON for documents, the
//! `node status` report, the `routes` and `stats` listings, the success lines of `apply`
//! and `delete`, and the CLI's errors.
//!
//! Pure functions from API replies ([`crate::api`]) to text: no sockets, no files, no
//! exit codes. The binary (`src/bin/tapwirectl.rs`) parses arguments, talks to the agent
//! and writes what these functions return.
//!
//! # Formats
//!
//! - **`get` tables** (`-o ps`, the default, and `-o wide`) are laid out the way
//!   calicoctl's tabwriter does: every column as wide as its widest cell plus three
//!   spaces (at least five), a header line of upper-case column names, then one line per
//!   document and an empty line after the table. Unlike calicoctl, lines carry no trailing
//!   spaces. Columns:
//!   - IPPool: `NAME CIDR SELECTOR`; wide `NAME CIDR NAT IPIPMODE VXLANMODE DISABLED
//!     DISABLEBGPEXPORT SELECTOR` (calicoctl's). A pool without `nodeSelector` shows
//!     `all()`, which is what tapwire applies.
//!   - Node: `NAME`; wide `NAME ASN IPV4 IPV6 VTEPMAC`: calicoctl's columns plus the VXLAN
//!     tunnel MAC peers use (the configured one, else the one derived from the name). ASN
//!     is empty unless the document sets `spec.bgp.asNumber` (the `default`
//!     BGPConfiguration's applies otherwise); IPV6 is always empty (tapwire is IPv4-only).
//!   - BGPPeer: `NAME PEERIP NODE ASN` (calicoctl's): NODE is the node, else the node
//!     selector, else `(global)`; a peering with selected nodes shows its peer selector
//!     as PEERIP.
//!   - BGPConfiguration: `NAME LOGSEVERITY MESHENABLED ASNUMBER`, an unset field showing
//!     the default it means (Info, true, 64512).
//!   - WorkloadEndpoint: `WORKLOAD NODE NETWORKS INTERFACE`; wide `NAME WORKLOAD NODE
//!     NETWORKS INTERFACE PROFILES MAC` (calicoctl's, with tapwire's MAC in place of NATS,
//!     which tapwire does not have). With `-A` a `NAMESPACE` column comes first.
//! - **`get -o yaml` / `-o json`**: a named document prints as itself; a listing prints a
//!   calicoctl list, `{apiVersion: projectcalico.org/v3, items: [...], kind: IPPoolList,
//!   metadata: {}}`. Keys are sorted, as calicoctl's YAML has them. Both parse back with
//!   [`crate::model::parse_documents`], so the output can be edited and re-applied with
//!   `tapwirectl apply -f` (`resourceVersion` and the other metadata are accepted).
//! - **`node status`** ([`format_node_status`]): `tapwire process is running.`, the node
//!   and its dataplane (`Dataplane: connected, in sync, last heartbeat 2s ago`), then an
//!   `IPv4 peer status` table boxed like calicoctl's `IPv4 BGP status` (`PEER ADDRESS |
//!   PEER TYPE | STATE | SINCE | INFO`, headers centred). SINCE is shown as BIRD shows it:
//!   the time of day (UTC) for a change today, else the date. On a BGP node the peers are
//!   BIRD's sessions and the layout is calicoctl's: `BIRD: <state>`, `IPv4 BGP status`
//!   and its table (or `No IPv4 peers found.`), then `IPv6 BGP status` / `No IPv6 peers
//!   found.`
//! - **`routes`** ([`format_routes`]), one route per line, in `ip route`'s word order; a
//!   `/32` prints as a bare address:
//!   - `10.65.2.0/26 via 192.168.0.2 encap vxlan node node-b mtu 1450`: a remote block,
//!     its node's underlay address, the encapsulation (`none`, `ipip` or `vxlan`) and the
//!     pod MTU that encapsulation leaves;
//!   - `10.65.1.2 workload k8s/default/pod-a dev eth0 mtu 1450`: a local pod, its
//!     workload (`orchestrator/[namespace/]name`) and its interface inside its namespace;
//!   - `blackhole 10.65.1.0/26`: a block of this node (addresses without a pod are
//!     dropped).
//! - **`stats`** ([`format_stats`]): a `NAME VALUE` table of the dataplane's counters in
//!   groups separated by an empty line: drops by reason (`drop.*`), per encapsulation
//!   (`encap.*`), per endpoint (`endpoint.*`, sorted by endpoint), then the rest. Zeros are
//!   left out unless `--all`.
//! - **`trace`** ([`format_trace`]): one block per traced packet (received, parsed,
//!   route, action, counters), as VPP's `show trace`, then how the trace ended.
//! - **`apply` / `delete`** ([`success_line`], [`partial_line`]): calicoctl's
//!   `Successfully applied 1 'IPPool' resource(s)` (or `... 2 resource(s)` when the kinds
//!   differ).
//! - **Errors** ([`CliError`]) say what failed and why: `Failed to get IPPool "x": IPPool
//!   "x" not found`.

mod trace;

use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::api::{
    codes, ApiError, BgpStatusReply, NodeStatusReply, PeerRow, ResourceKind, RouteRow,
};
use crate::datastore::Damaged;
use crate::ipam::{CheckReport, IpamUsage};
use crate::model::{
    self, from_document_value, BgpConfiguration, BgpPeer, IpPool, ModelError, Node, Resource,
    WorkloadEndpoint, API_VERSION,
};
pub use trace::{format_record, format_trace};

/// `get -o …`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// calicoctl's default table.
    #[default]
    Ps,
    /// The table with more columns.
    Wide,
    /// calicoctl-style YAML documents.
    Yaml,
    /// The same as JSON.
    Json,
}

/// Why a `tapwirectl` command failed. The messages are what the user sees on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent answered with an error, or could not be reached.
    #[error("Failed to {action}: {error}{}", unreachable_hint(.error))]
    Api { action: String, error: ApiError },
    /// The agent answered with a reply of another request.
    #[error(
        "Failed to {action}: tapwire-control answered with {got} where {expected} was expected"
    )]
    UnexpectedReply {
        action: String,
        expected: &'static str,
        got: &'static str,
    },
    /// A file (or standard input) could not be read.
    #[error("Failed to {action}: reading {path}: {source}")]
    Read {
        action: String,
        path: String,
        source: std::io::Error,
    },
    /// `delete -f`: the file does not hold documents.
    #[error("Failed to {action}: {path}: {source}")]
    Documents {
        action: String,
        path: String,
        source: Box<ModelError>,
    },
    /// `delete -f`: the file holds no document at all.
    #[error("Failed to {action}: {path} holds no documents")]
    NoDocuments { action: String, path: String },
    /// A document from the agent does not have its kind's shape.
    #[error("cannot decode {kind} {name:?} from tapwire-control: {message}")]
    Decode {
        kind: &'static str,
        name: String,
        message: String,
    },
    /// `ipam check` found problems (listed on standard output).
    #[error("IPAM check found problems (listed above)")]
    Findings,
    /// `get wep NAME -n NS`: the endpoint exists, in another namespace.
    #[error("Failed to get {kind} {name:?}: not found in namespace {namespace:?}")]
    NotInNamespace {
        kind: &'static str,
        name: String,
        namespace: String,
    },
    /// The output could not be encoded (never expected for plain data).
    #[error("cannot write the output as {format}: {message}")]
    Encode {
        format: &'static str,
        message: String,
    },
}

fn unreachable_hint(error: &ApiError) -> &'static str {
    if error.code == codes::UNREACHABLE {
        "\nIs tapwire-control running? Name its API socket with --api PATH or TAPWIRE_API."
    } else {
        ""
    }
}

// ---------------------------------------------------------------------------------------
// Kinds.

/// Parses a resource type as calicoctl spells it, in any case: `ippool`, `ippools`,
/// `ipp`, `ipps`, `pool`, `pools`; `node`, `nodes`, `no`, `nos`; `workloadendpoint`,
/// `workloadendpoints`, `wep`, `weps`; `bgppeer`, `bgppeers`, `bgpp`, `bgpps`, `bp`, `bps`;
/// `bgpconfiguration`, `bgpconfigurations`, `bgpconfig`, `bgpconfigs`.
pub fn parse_kind(s: &str) -> Result<ResourceKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "ippool" | "ippools" | "ipp" | "ipps" | "pool" | "pools" => Ok(ResourceKind::Ippools),
        "node" | "nodes" | "no" | "nos" => Ok(ResourceKind::Nodes),
        "workloadendpoint" | "workloadendpoints" | "wep" | "weps" => {
            Ok(ResourceKind::Workloadendpoints)
        }
        "bgppeer" | "bgppeers" | "bgpp" | "bgpps" | "bp" | "bps" => Ok(ResourceKind::Bgppeers),
        "bgpconfiguration" | "bgpconfigurations" | "bgpconfig" | "bgpconfigs" => {
            Ok(ResourceKind::Bgpconfigurations)
        }
        _ => Err(format!(
            "unknown resource type {s:?} (expected ippools, nodes, workloadendpoints, \
             bgppeers or bgpconfigurations, or an alias: ippool, ipp, pool, node, no, \
             workloadendpoint, wep, bgppeer, bp, bgpconfig)"
        )),
    }
}

/// The document `kind` of a resource type (`IPPool`, `Node`, `WorkloadEndpoint`).
pub fn kind_name(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::Ippools => IpPool::KIND,
        ResourceKind::Nodes => Node::KIND,
        ResourceKind::Workloadendpoints => WorkloadEndpoint::KIND,
        ResourceKind::Bgppeers => BgpPeer::KIND,
        ResourceKind::Bgpconfigurations => BgpConfiguration::KIND,
    }
}

/// The resource type of a document `kind`, for the kinds the CLI can delete.
pub fn kind_of_document(kind: &str) -> Option<ResourceKind> {
    match kind {
        IpPool::KIND => Some(ResourceKind::Ippools),
        Node::KIND => Some(ResourceKind::Nodes),
        WorkloadEndpoint::KIND => Some(ResourceKind::Workloadendpoints),
        BgpPeer::KIND => Some(ResourceKind::Bgppeers),
        BgpConfiguration::KIND => Some(ResourceKind::Bgpconfigurations),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Tables.

/// Lays `rows` out under `headings` as calicoctl's tabwriter does (each column its widest
/// cell plus three spaces, at least five), without trailing spaces. A row without cells
/// prints as an empty line (a group separator that does not break the alignment).
pub fn format_columns(headings: &[&str], rows: &[Vec<String>]) -> String {
    const MIN_WIDTH: usize = 5;
    const PADDING: usize = 3;
    let columns = rows.iter().map(Vec::len).fold(headings.len(), usize::max);
    let mut widths = vec![0usize; columns];
    let all_lines = std::iter::once(headings.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    let lines: Vec<Vec<String>> = all_lines.collect();
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let mut text = String::new();
        for (cell, width) in line.iter().zip(&widths) {
            text.push_str(cell);
            let width = (width + PADDING).max(MIN_WIDTH);
            let pad = width.saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A table boxed like calicoctl's `node status` (olekukonko/tablewriter's default):
/// `+---+` borders, headers centred (the extra space on the right), cells left-aligned.
pub fn format_boxed(headings: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headings.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let border: String = widths.iter().fold(String::from("+"), |mut s, w| {
        s.extend(std::iter::repeat_n('-', w + 2));
        s.push('+');
        s
    });
    let mut out = String::new();
    out.push_str(&border);
    out.push('\n');
    out.push('|');
    for (heading, width) in headings.iter().zip(&widths) {
        let gap = width.saturating_sub(heading.chars().count());
        let left = gap / 2;
        out.push(' ');
        out.extend(std::iter::repeat_n(' ', left));
        out.push_str(heading);
        out.extend(std::iter::repeat_n(' ', gap - left));
        out.push_str(" |");
    }
    out.push('\n');
    out.push_str(&border);
    out.push('\n');
    for row in rows {
        out.push('|');
        for (i, width) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            out.push(' ');
            out.push_str(cell);
            out.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
            out.push_str(" |");
        }
        out.push('\n');
    }
    out.push_str(&border);
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------------------
// IPAM.

/// `ipam show` as calicoctl lays it out: each pool's addresses, in use and free, and with
/// `blocks` each block's under its pool.
pub fn format_ipam_usage(usage: &IpamUsage, blocks: bool) -> String {
    let share = |part: u64, total: u64| {
        // Rounded down, as calicoctl does, so a nearly full pool does not read 100%.
        let percent = (u128::from(part) * 100)
            .checked_div(u128::from(total))
            .unwrap_or(0);
        format!("{part} ({percent}%)")
    };
    let row = |grouping: &str, cidr: String, total: u64, in_use: u64| {
        vec![
            grouping.to_string(),
            cidr,
            total.to_string(),
            share(in_use, total),
            share(total.saturating_sub(in_use), total),
        ]
    };
    let mut rows = Vec::new();
    for pool in &usage.pools {
        let grouping = if pool.disabled {
            "IP Pool (disabled)"
        } else {
            "IP Pool"
        };
        rows.push(row(
            grouping,
            pool.cidr.to_string(),
            pool.total,
            pool.in_use,
        ));
        if blocks {
            for block in usage.blocks.iter().filter(|b| pool.cidr.contains(&b.cidr)) {
                let node = block.node.as_deref().unwrap_or("no node");
                let cidr = format!("{} ({node})", block.cidr);
                rows.push(row("Block", cidr, block.total, block.in_use));
            }
        }
    }
    if blocks {
        // Blocks of a pool that is gone keep their addresses until released.
        for block in usage
            .blocks
            .iter()
            .filter(|b| !usage.pools.iter().any(|p| p.cidr.contains(&b.cidr)))
        {
            let node = block.node.as_deref().unwrap_or("no node");
            let cidr = format!("{} ({node}, in no pool)", block.cidr);
            rows.push(row("Block", cidr, block.total, block.in_use));
        }
    }
    format_boxed(
        &["GROUPING", "CIDR", "IPS TOTAL", "IPS IN USE", "IPS FREE"],
        &rows,
    )
}

/// `ipam check`'s report: the counts, then each finding, then a verdict line.
pub fn format_ipam_check(report: &CheckReport) -> String {
    let mut out = format!(
        "Checked {} allocations against {} workload endpoints.\n",
        report.allocations, report.endpoints
    );
    let mut section = |title: &str, lines: Vec<String>| {
        out.push_str(&format!("{title}: {}\n", lines.len()));
        for line in lines {
            out.push_str(&format!("  {line}\n"));
        }
    };
    section(
        "Allocations no workload endpoint holds (leaked, unless an ADD is in flight)",
        report
            .leaked
            .iter()
            .map(|l| {
                let node = l.node.as_deref().unwrap_or("no node");
                let since = l
                    .since
                    .as_deref()
                    .map(|s| format!(", since {s}"))
                    .unwrap_or_default();
                format!("{} handle {} on {node}{since}", l.address, l.handle)
            })
            .collect(),
    );
    section("Addresses claimed twice", report.duplicates.clone());
    section(
        "Handles whose address no block allocates",
        report.orphaned_handles.clone(),
    );
    section(
        "Endpoint addresses no block allocates",
        report.unallocated.clone(),
    );
    section(
        "Documents that could not be read",
        report.damaged.iter().map(Damaged::to_string).collect(),
    );
    out.push_str(if report.is_clean() {
        "No problems found.\n"
    } else {
        "Problems found. A leaked address goes with `tapwirectl ipam release --ip ADDRESS` \
         (or by itself: each control releases its node's leaks after 5 minutes).\n"
    });
    out
}

// ---------------------------------------------------------------------------------------
// Documents.

/// How a user repairs a document that is damaged in the datastore.
pub fn repair_hint(kind: &str, name: &str) -> String {
    let delete = format!("tapwirectl delete {} {name}", kind.to_lowercase());
    if kind == WorkloadEndpoint::KIND {
        // Endpoints are not applied by hand; CNI ADD writes them again.
        format!("repair it with `{delete}`")
    } else {
        format!("repair it with `{delete}`, or apply a good {kind} named {name:?} over it")
    }
}

/// One warning line per document `get` skipped because it is damaged, with how to repair
/// it.
pub fn format_damaged(damaged: &[Damaged]) -> String {
    damaged
        .iter()
        .map(|d| {
            format!(
                "warning: {} {:?} is damaged in the datastore and was skipped: {}; {}\n",
                d.kind,
                d.name,
                d.reason,
                repair_hint(&d.kind, &d.name)
            )
        })
        .collect()
}

/// Keeps the workload endpoints of `namespace` (those without a namespace count as
/// namespace `""`).
pub fn filter_namespace(items: Vec<Value>, namespace: &str) -> Vec<Value> {
    items
        .into_iter()
        .filter(|item| {
            item.get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("")
                == namespace
        })
        .collect()
}

/// How `get` prints documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetView {
    pub format: OutputFormat,
    /// A name was asked for: YAML/JSON print the document itself rather than a list.
    pub named: bool,
    /// Prepend a NAMESPACE column (`get wep -A`); only workload endpoints have one.
    pub namespace_column: bool,
}

/// Prints the documents of `get` (see the module docs for the layouts).
pub fn format_documents(
    kind: ResourceKind,
    items: &[Value],
    view: GetView,
) -> Result<String, CliError> {
    match view.format {
        OutputFormat::Ps | OutputFormat::Wide => {
            let wide = view.format == OutputFormat::Wide;
            let (mut headings, mut rows) = match kind {
                ResourceKind::Ippools => table_of(items, wide, pool_headings, pool_row)?,
                ResourceKind::Nodes => table_of(items, wide, node_headings, node_row)?,
                ResourceKind::Workloadendpoints => {
                    table_of(items, wide, endpoint_headings, endpoint_row)?
                }
                ResourceKind::Bgppeers => table_of(items, wide, peer_headings, peer_row)?,
                ResourceKind::Bgpconfigurations => {
                    table_of(items, wide, bgp_config_headings, bgp_config_row)?
                }
            };
            if view.namespace_column && kind == ResourceKind::Workloadendpoints {
                headings.insert(0, "NAMESPACE");
                for (row, item) in rows.iter_mut().zip(items) {
                    let namespace = item
                        .get("metadata")
                        .and_then(|m| m.get("namespace"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    row.insert(0, namespace.to_string());
                }
            }
            let mut out = format_columns(&headings, &rows);
            out.push('\n');
            Ok(out)
        }
        OutputFormat::Yaml => {
            let value = output_value(kind, items, view.named);
            serde_norway::to_string(&value).map_err(|e| CliError::Encode {
                format: "YAML",
                message: e.to_string(),
            })
        }
        OutputFormat::Json => {
            let value = output_value(kind, items, view.named);
            let mut text = serde_json::to_string_pretty(&value).map_err(|e| CliError::Encode {
                format: "JSON",
                message: e.to_string(),
            })?;
            text.push('\n');
            Ok(text)
        }
    }
}

/// The one document of a named `get`, else a calicoctl list (`kind: IPPoolList`); keys
/// sorted.
fn output_value(kind: ResourceKind, items: &[Value], named: bool) -> Value {
    let mut value = match items {
        [one] if named => one.clone(),
        _ => {
            let mut list = Map::new();
            list.insert("apiVersion".into(), Value::String(API_VERSION.into()));
            list.insert("items".into(), Value::Array(items.to_vec()));
            list.insert(
                "kind".into(),
                Value::String(format!("{}List", kind_name(kind))),
            );
            list.insert("metadata".into(), Value::Object(Map::new()));
            Value::Object(list)
        }
    };
    value.sort_all_objects();
    value
}

type Headings = fn(bool) -> Vec<&'static str>;

fn table_of<T: Resource>(
    items: &[Value],
    wide: bool,
    headings: Headings,
    row: fn(&T, bool) -> Vec<String>,
) -> Result<(Vec<&'static str>, Vec<Vec<String>>), CliError> {
    let rows = items
        .iter()
        .map(|item| decode::<T>(item).map(|doc| row(&doc, wide)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((headings(wide), rows))
}

fn decode<T: Resource>(item: &Value) -> Result<T, CliError> {
    from_document_value::<T>(item.clone()).map_err(|e| CliError::Decode {
        kind: T::KIND,
        name: item
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        message: e.detail(),
    })
}

fn pool_headings(wide: bool) -> Vec<&'static str> {
    if wide {
        vec![
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
        ]
    } else {
        vec!["NAME", "CIDR", "SELECTOR"]
    }
}

fn pool_row(pool: &IpPool, wide: bool) -> Vec<String> {
    let selector = match pool.spec.node_selector.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "all()".to_string(),
    };
    let name = pool.metadata.name.clone();
    let cidr = pool.spec.cidr.to_string();
    if wide {
        vec![
            name,
            cidr,
            pool.spec.nat_outgoing.to_string(),
            pool.spec.ipip_mode.to_string(),
            pool.spec.vxlan_mode.to_string(),
            pool.spec.disabled.to_string(),
            pool.spec.disable_bgp_export.to_string(),
            selector,
        ]
    } else {
        vec![name, cidr, selector]
    }
}

fn node_headings(wide: bool) -> Vec<&'static str> {
    if wide {
        vec!["NAME", "ASN", "IPV4", "IPV6", "VTEPMAC"]
    } else {
        vec!["NAME"]
    }
}

fn node_row(node: &Node, wide: bool) -> Vec<String> {
    let name = node.metadata.name.clone();
    if !wide {
        return vec![name];
    }
    let bgp = node.spec.bgp.as_ref();
    vec![
        name,
        bgp.and_then(|b| b.as_number)
            .map(|asn| asn.to_string())
            .unwrap_or_default(),
        bgp.map(|b| b.ipv4_address.to_string()).unwrap_or_default(),
        String::new(),
        node.vtep_mac().to_string(),
    ]
}

fn peer_headings(_wide: bool) -> Vec<&'static str> {
    vec!["NAME", "PEERIP", "NODE", "ASN"]
}

/// calicoctl's BGPPeer row: NODE is the node, else the node selector, else `(global)`;
/// a peer of selected nodes shows its peer selector as PEERIP.
fn peer_row(peer: &BgpPeer, _wide: bool) -> Vec<String> {
    let spec = &peer.spec;
    let node = match (&spec.node, &spec.node_selector) {
        (Some(node), _) => node.clone(),
        (None, Some(selector)) if !selector.trim().is_empty() => selector.clone(),
        _ => "(global)".to_string(),
    };
    let peer_ip = match (spec.peer_ip, &spec.peer_selector) {
        (Some(ip), _) => ip.to_string(),
        (None, Some(selector)) => selector.clone(),
        (None, None) => String::new(),
    };
    vec![
        peer.metadata.name.clone(),
        peer_ip,
        node,
        spec.as_number.map(|n| n.to_string()).unwrap_or_default(),
    ]
}

fn bgp_config_headings(_wide: bool) -> Vec<&'static str> {
    vec!["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"]
}

/// calicoctl's BGPConfiguration row, with the defaults a field left unset means.
fn bgp_config_row(config: &BgpConfiguration, _wide: bool) -> Vec<String> {
    vec![
        config.metadata.name.clone(),
        config.log_severity().as_str().to_string(),
        config.mesh_enabled().to_string(),
        config.as_number().to_string(),
    ]
}

fn endpoint_headings(wide: bool) -> Vec<&'static str> {
    if wide {
        vec![
            "NAME",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "MAC",
        ]
    } else {
        vec!["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"]
    }
}

fn endpoint_row(ep: &WorkloadEndpoint, wide: bool) -> Vec<String> {
    let networks = ep
        .spec
        .ip_networks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let workload = ep.spec.workload.clone();
    let node = ep.spec.node.clone();
    let interface = ep.spec.interface_name.clone();
    if wide {
        vec![
            ep.metadata.name.clone(),
            workload,
            node,
            networks,
            interface,
            ep.spec.profiles.join(","),
            ep.spec.mac.map(|m| m.to_string()).unwrap_or_default(),
        ]
    } else {
        vec![workload, node, networks, interface]
    }
}

// ---------------------------------------------------------------------------------------
// node status, routes, stats.

/// The `node status` report (see the module docs), with BIRD's sessions in place of the
/// datastore's peers when `bgp` is given; `now` decides whether a peer's SINCE is today.
pub fn format_node_status(
    status: &NodeStatusReply,
    bgp: Option<&BgpStatusReply>,
    now: SystemTime,
) -> String {
    let mut out = String::from("tapwire process is running.\n\n");
    out.push_str(&format!(
        "Node {}, underlay address {}\n",
        status.node, status.underlay_address
    ));
    let mut dataplane = vec![if status.dataplane_connected {
        "connected"
    } else {
        "not connected"
    }
    .to_string()];
    if status.dataplane_connected {
        dataplane.push(
            if status.dataplane_in_sync {
                "in sync"
            } else {
                "not in sync"
            }
            .to_string(),
        );
    }
    dataplane.push(match status.last_heartbeat_secs {
        Some(secs) => format!("last heartbeat {secs}s ago"),
        None => "no heartbeat yet".to_string(),
    });
    out.push_str(&format!("Dataplane: {}\n", dataplane.join(", ")));
    match bgp {
        None => {
            out.push_str("\nIPv4 peer status\n");
            out.push_str(&peer_table(&status.peers, now));
        }
        Some(bgp) => {
            out.push_str(&format!("BIRD: {}\n\nIPv4 BGP status\n", bgp.daemon));
            out.push_str(&peer_table(&bgp.peers, now));
            out.push_str("\nIPv6 BGP status\nNo IPv6 peers found.\n");
        }
    }
    out.push('\n');
    out
}

/// calicoctl's boxed peer table, or `No IPv4 peers found.`.
fn peer_table(peers: &[PeerRow], now: SystemTime) -> String {
    if peers.is_empty() {
        return "No IPv4 peers found.\n".to_string();
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.address.clone(),
                p.peer_type.clone(),
                p.state.clone(),
                since_cell(&p.since, now),
                p.info.clone(),
            ]
        })
        .collect();
    format_boxed(
        &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
        &rows,
    )
}

/// BIRD's (and so calicoctl's) SINCE: `13:02:03` for a time today (UTC), else the date.
/// Text that is not an RFC 3339 time prints as it is.
fn since_cell(since: &str, now: SystemTime) -> String {
    let Some(time) = model::parse_rfc3339(since) else {
        return since.to_string();
    };
    let stamp = model::format_rfc3339(time);
    let today = model::format_rfc3339(now);
    match (stamp.split_once('T'), today.split_once('T')) {
        (Some((date, clock)), Some((today, _))) if date == today => {
            clock.trim_end_matches('Z').to_string()
        }
        (Some((date, _)), _) => date.to_string(),
        _ => stamp,
    }
}

/// `routes`, one per line (see the module docs).
pub fn format_routes(routes: &[RouteRow]) -> String {
    let mut out = String::new();
    for route in routes {
        let dst = route.dst.strip_suffix("/32").unwrap_or(&route.dst);
        let mut words: Vec<String> = Vec::new();
        match route.kind.as_str() {
            "blackhole" => {
                words.push("blackhole".into());
                words.push(dst.into());
            }
            "local" => {
                words.push(dst.into());
                push_field(&mut words, "workload", route.node.as_deref());
                push_field(&mut words, "dev", route.encap.as_deref());
            }
            "remote" => {
                words.push(dst.into());
                push_field(&mut words, "via", route.via.as_deref());
                push_field(&mut words, "encap", route.encap.as_deref());
                push_field(&mut words, "node", route.node.as_deref());
            }
            other => {
                // A kind this CLI does not know yet: everything it has, nothing dropped.
                words.push(dst.into());
                words.push(other.into());
                push_field(&mut words, "via", route.via.as_deref());
                push_field(&mut words, "encap", route.encap.as_deref());
                push_field(&mut words, "node", route.node.as_deref());
            }
        }
        if let Some(mtu) = route.mtu {
            words.push("mtu".into());
            words.push(mtu.to_string());
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

fn push_field(words: &mut Vec<String>, key: &str, value: Option<&str>) {
    if let Some(value) = value.filter(|v| !v.is_empty()) {
        words.push(key.to_string());
        words.push(value.to_string());
    }
}

/// `stats`: the counters as a `NAME VALUE` table in groups (see the module docs), and how
/// many zero counters were left out (always 0 with `all`).
pub fn format_stats(counters: &[(String, u64)], all: bool) -> (String, usize) {
    let mut groups: [Vec<&(String, u64)>; 4] = Default::default();
    let mut hidden = 0;
    for counter in counters {
        if counter.1 == 0 && !all {
            hidden += 1;
            continue;
        }
        let group = if counter.0.starts_with("drop.") {
            0
        } else if counter.0.starts_with("encap.") {
            1
        } else if counter.0.starts_with("endpoint.") {
            2
        } else {
            3
        };
        groups[group].push(counter);
    }
    // Per-endpoint counters arrive in the dataplane's map order; keep each endpoint's
    // metrics in their order, endpoints sorted.
    groups[2].sort_by(|a, b| endpoint_of(&a.0).cmp(endpoint_of(&b.0)));
    let mut rows: Vec<Vec<String>> = Vec::new();
    for group in groups.iter().filter(|g| !g.is_empty()) {
        if !rows.is_empty() {
            rows.push(Vec::new());
        }
        rows.extend(
            group
                .iter()
                .map(|(name, value)| vec![name.clone(), value.to_string()]),
        );
    }
    (format_columns(&["NAME", "VALUE"], &rows), hidden)
}

/// `endpoint.k8s/default/pod-a/eth0.rx_packets` → `endpoint.k8s/default/pod-a/eth0`.
fn endpoint_of(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(endpoint, _)| endpoint)
}

// ---------------------------------------------------------------------------------------
// apply / delete.

/// The kind all of `kinds` share, if they share one (calicoctl's "single kind").
pub fn single_kind<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut kinds = kinds.into_iter();
    let first = kinds.next().filter(|k| !k.is_empty())?;
    kinds.all(|k| k == first).then_some(first)
}

/// The kind of an `apply`/`delete` result line (`IPPool default-ipv4-ippool`).
pub fn result_kind(result: &str) -> &str {
    result.split_whitespace().next().unwrap_or("")
}

/// calicoctl's `Successfully applied 1 'IPPool' resource(s)` for the agent's result
/// lines; `past` is `applied` or `deleted`.
pub fn success_line(past: &str, results: &[String]) -> String {
    let n = results.len();
    match single_kind(results.iter().map(|r| result_kind(r))) {
        Some(kind) => format!("Successfully {past} {n} '{kind}' resource(s)\n"),
        None => format!("Successfully {past} {n} resource(s)\n"),
    }
}

/// calicoctl's `Partial success: deleted the first 1 out of 2 'IPPool' resources:` when
/// a batch stopped at an error; `kind` is the batch's single kind, if it has one.
pub fn partial_line(past: &str, done: usize, total: usize, kind: Option<&str>) -> String {
    match kind {
        Some(kind) => {
            format!("Partial success: {past} the first {done} out of {total} '{kind}' resources:\n")
        }
        None => format!("Partial success: {past} the first {done} out of {total} resources:\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PeerRow;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn columns_are_laid_out_like_calicoctls_tabwriter() {
        let rows = vec![
            vec![
                "default-ipv4-ippool".into(),
                "10.65.0.0/16".into(),
                "all()".into(),
            ],
            vec!["b".into(), "10.66.0.0/16".into(), "all()".into()],
        ];
        assert_eq!(
            format_columns(&["NAME", "CIDR", "SELECTOR"], &rows),
            "NAME                  CIDR           SELECTOR\n\
             default-ipv4-ippool   10.65.0.0/16   all()\n\
             b                     10.66.0.0/16   all()\n"
        );
        // Narrow columns are at least five wide; empty rows are separators.
        let rows = vec![
            vec!["a".into(), "1".into()],
            vec![],
            vec!["b".into(), "2".into()],
        ];
        assert_eq!(
            format_columns(&["N", "V"], &rows),
            "N    V\na    1\n\nb    2\n"
        );
        // Empty cells keep their column.
        let rows = vec![vec!["n1".into(), "".into(), "192.168.0.1/24".into()]];
        assert_eq!(
            format_columns(&["NAME", "ASN", "IPV4"], &rows),
            "NAME   ASN   IPV4\nn1           192.168.0.1/24\n"
        );
    }

    #[test]
    fn boxed_tables_centre_headers_like_calicoctl() {
        let rows = vec![vec![
            "172.17.8.102".into(),
            "node-to-node mesh".into(),
            "up".into(),
            "23:30:04".into(),
            "Established".into(),
        ]];
        let table = format_boxed(
            &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
            &rows,
        );
        assert_eq!(
            table,
            "+--------------+-------------------+-------+----------+-------------+\n\
             | PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |    INFO     |\n\
             +--------------+-------------------+-------+----------+-------------+\n\
             | 172.17.8.102 | node-to-node mesh | up    | 23:30:04 | Established |\n\
             +--------------+-------------------+-------+----------+-------------+\n"
        );
    }

    #[test]
    fn since_is_a_time_today_else_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_714_564_800 + 3_723); // 2024-05-01T13:02:03Z
        assert_eq!(since_cell("2024-05-01T01:00:00Z", now), "01:00:00");
        assert_eq!(since_cell("2024-04-30T23:59:59Z", now), "2024-04-30");
        assert_eq!(since_cell("", now), "");
        assert_eq!(since_cell("a while ago", now), "a while ago");
        let status = NodeStatusReply {
            node: "node-a".into(),
            underlay_address: "192.168.0.1".into(),
            dataplane_connected: false,
            dataplane_in_sync: true,
            last_heartbeat_secs: Some(40),
            peers: vec![PeerRow {
                address: "192.168.0.2".into(),
                peer_type: "declared host".into(),
                state: "down".into(),
                since: String::new(),
                info: "Dataplane not connected".into(),
            }],
        };
        let text = format_node_status(&status, None, now);
        assert!(
            text.contains("Dataplane: not connected, last heartbeat 40s ago\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "| 192.168.0.2  | declared host | down  |       | Dataplane not connected |"
            ),
            "{text}"
        );
    }

    #[test]
    fn kinds_accept_calicoctls_aliases() {
        for alias in ["ippool", "IPPools", "ipp", "ipps", "pool", "Pools"] {
            assert_eq!(parse_kind(alias), Ok(ResourceKind::Ippools), "{alias}");
        }
        for alias in ["node", "nodes", "no", "NOS"] {
            assert_eq!(parse_kind(alias), Ok(ResourceKind::Nodes), "{alias}");
        }
        for alias in ["workloadendpoint", "WorkloadEndpoints", "wep", "weps"] {
            assert_eq!(
                parse_kind(alias),
                Ok(ResourceKind::Workloadendpoints),
                "{alias}"
            );
        }
        let err = parse_kind("policy").unwrap_err();
        assert!(err.contains("unknown resource type \"policy\""), "{err}");
    }

    #[test]
    fn summaries_name_a_single_kind_only() {
        let one = vec!["IPPool a".to_string(), "IPPool b".to_string()];
        assert_eq!(
            success_line("applied", &one),
            "Successfully applied 2 'IPPool' resource(s)\n"
        );
        let mixed = vec!["IPPool a".to_string(), "Node n".to_string()];
        assert_eq!(
            success_line("applied", &mixed),
            "Successfully applied 2 resource(s)\n"
        );
        assert_eq!(
            partial_line("deleted", 1, 2, Some("Node")),
            "Partial success: deleted the first 1 out of 2 'Node' resources:\n"
        );
        assert_eq!(single_kind([]), None);
    }

    #[test]
    fn unknown_route_kinds_print_everything_they_have() {
        let routes = [RouteRow {
            dst: "10.9.0.0/24".into(),
            kind: "anycast".into(),
            node: None,
            via: Some("192.168.0.9".into()),
            encap: None,
            mtu: None,
        }];
        assert_eq!(
            format_routes(&routes),
            "10.9.0.0/24 anycast via 192.168.0.9\n"
        );
    }
}
