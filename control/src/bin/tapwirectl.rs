//! `tapwirectl`: tapwire's command-line tool, modelled on calicoctl. It talks to the node
//! agent (`tapwire-control`) over its API socket and prints what it answers; the layouts
//! are [`tapwire_control::cli`]'s.
//!
//! Exit status: 0 on success, 1 when the command failed (the reason on stderr), 2 for
//! bad arguments (with usage).

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Parser, Subcommand};
use tapwire_control::api::{self, codes, ApiError, Reply, Request, ResourceKind};
use tapwire_control::cli::{self, CliError, GetView, OutputFormat};
use tapwire_control::model;

/// The environment variable naming the agent's API socket (`--api` wins over it).
const API_ENV: &str = "TAPWIRE_API";

/// Manage a tapwire cluster: IP pools, nodes, workload endpoints, and this node's routes
/// and counters.
#[derive(Debug, Parser)]
#[command(name = "tapwirectl", version)]
struct Cli {
    /// The node agent's API socket [env: TAPWIRE_API] [default: /run/tapwire/api.sock].
    #[arg(long, global = true, value_name = "PATH")]
    api: Option<PathBuf>,
    /// How long to wait for the agent's answer.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Node commands.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Display resources: ippools, nodes or workloadendpoints.
    Get(GetArgs),
    /// Create or replace the resources of a YAML or JSON file ("-" for standard input).
    Apply(ApplyArgs),
    /// Delete a resource by type and name, or the resources of a file.
    Delete(DeleteArgs),
    /// This node's routes: remote blocks with their encapsulation, local pods, blackholes.
    Routes {
        /// Only the route used for this address (the longest prefix holding it, as `ip
        /// route get`).
        address: Option<std::net::Ipv4Addr>,
    },
    /// The dataplane's counters.
    Stats {
        /// Also list counters that are zero.
        #[arg(long)]
        all: bool,
    },
    /// The versions of tapwirectl, the node's agent and its dataplane.
    Version,
    /// Trace the next packets through this node's dataplane, as VPP's packet trace does:
    /// for each, the worker, where it was received, what it parsed as, the route looked
    /// up, the action and the counters touched. Ends after COUNT packets, or when the
    /// global --timeout (how long to wait for them, 30 s by default) runs out.
    Trace {
        /// Only packets from or to this pod of the node: its name, namespace/name, or
        /// its endpoint (k8s/default/pod-a/eth0).
        #[arg(long, value_name = "NAME")]
        pod: Option<String>,
        /// How many packets to trace.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 10,
            value_parser = clap::value_parser!(u32).range(1..=i64::from(tapwire_proto::MAX_TRACE_PACKETS))
        )]
        count: u32,
    },
    /// IP address management: usage, consistency, releasing a leaked address.
    Ipam {
        #[command(subcommand)]
        command: IpamCommand,
    },
}

#[derive(Debug, Subcommand)]
enum IpamCommand {
    /// How many addresses each pool has, in use and free.
    Show {
        /// Also each block, with its node.
        #[arg(long)]
        show_blocks: bool,
    },
    /// Whether blocks, handles and workload endpoints agree: leaked addresses, addresses
    /// claimed twice, orphaned handles. Exits 1 when it finds a problem.
    Check,
    /// Release an address no workload endpoint uses (a leak `ipam check` found).
    Release {
        /// The address to release.
        #[arg(long = "ip", value_name = "ADDRESS")]
        address: std::net::Ipv4Addr,
    },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Whether the agent runs, its dataplane, and the state of its peers.
    Status,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// ippool(s), node(s), workloadendpoint(s) or an alias (ipp, pool, no, wep).
    #[arg(value_name = "KIND", value_parser = cli::parse_kind)]
    kind: ResourceKind,
    /// One resource's name (all of them when absent).
    name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Ps)]
    output: OutputFormat,
    /// Workload endpoints of this namespace only.
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Workload endpoints of every namespace, with a NAMESPACE column.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    all_namespaces: bool,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// The file with the documents, or "-" for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    filename: PathBuf,
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("target").required(true).args(["kind", "filename"])))]
struct DeleteArgs {
    /// ippool(s) or node(s) (or an alias).
    #[arg(value_name = "KIND", value_parser = cli::parse_kind, requires = "name")]
    kind: Option<ResourceKind>,
    /// The resource's name.
    #[arg(requires = "kind")]
    name: Option<String>,
    /// Delete the resources of this file ("-" for standard input).
    #[arg(short = 'f', long = "filename", value_name = "FILE", conflicts_with_all = ["kind", "name"])]
    filename: Option<PathBuf>,
}

/// Where and how long to ask.
struct Agent {
    socket: PathBuf,
    timeout: Duration,
}

impl Agent {
    fn call(&self, request: &Request, action: &str) -> Result<Reply, CliError> {
        api::call(&self.socket, request, self.timeout).map_err(|error| CliError::Api {
            action: action.to_string(),
            error,
        })
    }
}

/// What a command prints: its output, and notes for stderr.
#[derive(Default)]
struct Output {
    stdout: String,
    notes: String,
}

fn main() -> ExitCode {
    let args = match Cli::try_parse() {
        Ok(args) => args,
        // Usage errors exit 2, --help and --version 0.
        Err(err) => err.exit(),
    };
    let agent = Agent {
        socket: api_socket(args.api, std::env::var_os(API_ENV)),
        timeout: Duration::from_secs(args.timeout),
    };
    let mut output = Output::default();
    let result = run(&agent, args.command, &mut output);
    let mut code = ExitCode::SUCCESS;
    if let Err(err) = write_out(io::stdout().lock(), &output.stdout) {
        eprintln!("tapwirectl: writing the output failed: {err}");
        code = ExitCode::FAILURE;
    }
    let mut stderr = String::new();
    stderr.push_str(&output.notes);
    if let Err(err) = &result {
        stderr.push_str(&format!("{err}\n"));
        code = ExitCode::FAILURE;
    }
    // Nothing useful is left to do if stderr is gone.
    let _ = write_out(io::stderr().lock(), &stderr);
    code
}

/// `--api`, else `$TAPWIRE_API` (when set and not empty), else the default.
fn api_socket(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(api::DEFAULT_API_SOCKET))
}

/// Writes everything; a reader that went away (`tapwirectl get … | head`) is not an
/// error.
fn write_out(mut stream: impl Write, text: &str) -> io::Result<()> {
    match stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.flush())
    {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn run(agent: &Agent, command: Command, out: &mut Output) -> Result<(), CliError> {
    match command {
        Command::Node {
            command: NodeCommand::Status,
        } => node_status(agent, out),
        Command::Get(args) => get(agent, args, out),
        Command::Apply(args) => apply(agent, &args.filename, out),
        Command::Delete(args) => match (args.filename, args.kind, args.name) {
            (Some(file), _, _) => delete_file(agent, &file, out),
            (None, Some(kind), Some(name)) => delete_one(agent, kind, &name, out),
            // clap's group and `requires` make this unreachable; say so rather than panic.
            _ => Err(CliError::Api {
                action: "delete".into(),
                error: ApiError::new(
                    codes::BAD_REQUEST,
                    "nothing to delete",
                    "give KIND NAME or -f FILE",
                ),
            }),
        },
        Command::Routes { address } => routes(agent, address, out),
        Command::Stats { all } => stats(agent, all, out),
        Command::Ipam { command } => ipam(agent, command, out),
        Command::Version => version(agent, out),
        Command::Trace { pod, count } => trace(agent, pod, count, out),
    }
}

fn unexpected(action: &str, expected: &'static str, reply: &Reply) -> CliError {
    CliError::UnexpectedReply {
        action: action.to_string(),
        expected,
        got: reply.describe(),
    }
}

/// Whether a failed call means nothing is listening (no socket, or a stale one).
fn not_running(error: &ApiError) -> bool {
    error.code == codes::UNREACHABLE
        && [libc::ENOENT, libc::ECONNREFUSED]
            .iter()
            .any(|&errno| error.details == io::Error::from_raw_os_error(errno).to_string())
}

fn node_status(agent: &Agent, out: &mut Output) -> Result<(), CliError> {
    let action = "get node status";
    match api::call(&agent.socket, &Request::NodeStatus, agent.timeout) {
        Ok(Reply::NodeStatus(status)) => {
            // BIRD's sessions, on a node that runs BGP (an agent that does not know the
            // request has no BGP either).
            let bgp = match api::call(&agent.socket, &Request::BgpStatus, agent.timeout) {
                Ok(Reply::BgpStatus { bgp }) => bgp,
                _ => None,
            };
            out.stdout.push_str(&cli::format_node_status(
                &status,
                bgp.as_ref(),
                SystemTime::now(),
            ));
            Ok(())
        }
        Ok(other) => Err(unexpected(action, "a node status", &other)),
        Err(error) => {
            if not_running(&error) {
                out.stdout.push_str("tapwire process is not running.\n");
            }
            Err(CliError::Api {
                action: action.into(),
                error,
            })
        }
    }
}

fn get(agent: &Agent, args: GetArgs, out: &mut Output) -> Result<(), CliError> {
    let kind_name = cli::kind_name(args.kind);
    let action = match &args.name {
        Some(name) => format!("get {kind_name} {name:?}"),
        None => format!("get {kind_name} resources"),
    };
    let request = Request::Get {
        kind: args.kind,
        name: args.name.clone(),
    };
    let mut items = match agent.call(&request, &action)? {
        Reply::Documents { items, damaged } => {
            out.notes.push_str(&cli::format_damaged(&damaged));
            items
        }
        other => return Err(unexpected(&action, "documents", &other)),
    };
    let endpoints = args.kind == ResourceKind::Workloadendpoints;
    if let (true, Some(namespace)) = (endpoints, &args.namespace) {
        items = cli::filter_namespace(items, namespace);
        if let (Some(name), true) = (&args.name, items.is_empty()) {
            return Err(CliError::NotInNamespace {
                kind: kind_name,
                name: name.clone(),
                namespace: namespace.clone(),
            });
        }
    }
    let view = GetView {
        format: args.output,
        named: args.name.is_some(),
        namespace_column: endpoints && args.all_namespaces,
    };
    out.stdout
        .push_str(&cli::format_documents(args.kind, &items, view)?);
    Ok(())
}

/// How messages name FILE.
fn source_label(file: &Path) -> String {
    if file == Path::new("-") {
        "standard input".into()
    } else {
        file.display().to_string()
    }
}

/// The text of FILE, or of standard input for `-`.
fn read_documents(file: &Path, action: &str) -> Result<String, CliError> {
    let error = |source| CliError::Read {
        action: action.into(),
        path: source_label(file),
        source,
    };
    // Never more than one request can carry: a larger input (`-f /dev/zero`) is refused
    // after reading just past the limit, not held in memory.
    let limit = api::MAX_MESSAGE_BYTES as u64;
    let mut bytes = Vec::new();
    if file == Path::new("-") {
        io::stdin().take(limit + 1).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
    }
    .map_err(error)?;
    if bytes.len() as u64 > limit {
        return Err(error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "larger than the {} MiB a request to tapwire-control can carry",
                limit >> 20
            ),
        )));
    }
    String::from_utf8(bytes).map_err(|e| error(io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn apply(agent: &Agent, file: &Path, out: &mut Output) -> Result<(), CliError> {
    let action = format!("apply resources from {}", source_label(file));
    let documents = read_documents(file, &action)?;
    match agent.call(&Request::Apply { documents }, &action)? {
        Reply::Changed { results, .. } => {
            out.stdout.push_str(&cli::success_line("applied", &results));
            Ok(())
        }
        other => Err(unexpected(&action, "a change report", &other)),
    }
}

fn delete_one(
    agent: &Agent,
    kind: ResourceKind,
    name: &str,
    out: &mut Output,
) -> Result<(), CliError> {
    let action = format!("delete {} {name:?}", cli::kind_name(kind));
    let request = Request::Delete {
        kind,
        name: name.to_string(),
    };
    match agent.call(&request, &action)? {
        Reply::Changed { results, notes } => {
            out.stdout.push_str(&cli::success_line("deleted", &results));
            for note in notes {
                out.notes.push_str(&format!("{note}\n"));
            }
            Ok(())
        }
        other => Err(unexpected(&action, "a change report", &other)),
    }
}

fn delete_file(agent: &Agent, file: &Path, out: &mut Output) -> Result<(), CliError> {
    let action = format!("delete resources from {}", source_label(file));
    let label = source_label(file);
    let text = read_documents(file, &action)?;
    let docs = model::parse_documents(&text).map_err(|source| CliError::Documents {
        action: action.clone(),
        path: label.clone(),
        source: Box::new(source),
    })?;
    if docs.is_empty() {
        return Err(CliError::NoDocuments {
            action,
            path: label,
        });
    }
    let batch_kind = cli::single_kind(docs.iter().map(|d| d.kind()));
    let mut results = Vec::new();
    for doc in &docs {
        let (kind, name) = (doc.kind(), doc.name());
        let action = format!("delete {kind} {name:?}");
        let Some(resource) = cli::kind_of_document(kind) else {
            return Err(CliError::Api {
                action,
                error: ApiError::new(
                    codes::BAD_REQUEST,
                    format!("{kind} resources cannot be deleted"),
                    "",
                ),
            });
        };
        let request = Request::Delete {
            kind: resource,
            name: name.to_string(),
        };
        match agent.call(&request, &action) {
            Ok(Reply::Changed { results: done, .. }) => results.extend(done),
            Ok(other) => return Err(unexpected(&action, "a change report", &other)),
            Err(err) => {
                if !results.is_empty() {
                    out.stdout.push_str(&cli::partial_line(
                        "deleted",
                        results.len(),
                        docs.len(),
                        batch_kind,
                    ));
                }
                return Err(err);
            }
        }
    }
    out.stdout.push_str(&cli::success_line("deleted", &results));
    Ok(())
}

fn routes(
    agent: &Agent,
    address: Option<std::net::Ipv4Addr>,
    out: &mut Output,
) -> Result<(), CliError> {
    let action = "get routes";
    let request = match address {
        Some(address) => Request::RouteTo { address },
        None => Request::Routes,
    };
    match agent.call(&request, action)? {
        Reply::Routes { routes } => {
            if let (Some(address), true) = (address, routes.is_empty()) {
                out.notes.push_str(&format!(
                    "No route to {address}: no IP pool's block holds it on any node.\n"
                ));
            } else if routes.is_empty() {
                out.notes.push_str(
                    "No routes: tapwire-control has not computed this node's routes yet, \
                     or there is no IP pool.\n",
                );
            }
            out.stdout.push_str(&cli::format_routes(&routes));
            Ok(())
        }
        other => Err(unexpected(action, "routes", &other)),
    }
}

/// Prints the client's version first, so that it shows also when the agent is down.
fn version(agent: &Agent, out: &mut Output) -> Result<(), CliError> {
    out.stdout.push_str(&format!(
        "Client Version:    v{}\n",
        env!("CARGO_PKG_VERSION")
    ));
    let action = "get the agent's version";
    match agent.call(&Request::Version, action)? {
        Reply::Version { agent, dataplane } => {
            out.stdout
                .push_str(&format!("Agent Version:     v{agent}\n"));
            out.stdout.push_str(&match dataplane {
                Some(dataplane) => format!("Dataplane Version: v{dataplane}\n"),
                None => "Dataplane Version: unknown (the dataplane is not connected)\n".into(),
            });
            Ok(())
        }
        other => Err(unexpected(action, "versions", &other)),
    }
}

fn ipam(agent: &Agent, command: IpamCommand, out: &mut Output) -> Result<(), CliError> {
    match command {
        IpamCommand::Show { show_blocks } => {
            let action = "show IPAM usage";
            match agent.call(&Request::IpamShow, action)? {
                Reply::IpamShow(usage) => {
                    out.stdout
                        .push_str(&cli::format_ipam_usage(&usage, show_blocks));
                    out.notes.push_str(&cli::format_damaged(&usage.damaged));
                    Ok(())
                }
                other => Err(unexpected(action, "IPAM usage", &other)),
            }
        }
        IpamCommand::Check => {
            let action = "check IPAM";
            match agent.call(&Request::IpamCheck, action)? {
                Reply::IpamCheck(report) => {
                    out.stdout.push_str(&cli::format_ipam_check(&report));
                    if report.is_clean() {
                        Ok(())
                    } else {
                        Err(CliError::Findings)
                    }
                }
                other => Err(unexpected(action, "an IPAM check report", &other)),
            }
        }
        IpamCommand::Release { address } => {
            let action = "release an address";
            match agent.call(&Request::IpamRelease { address }, action)? {
                Reply::Changed { results, .. } => {
                    for released in results {
                        out.stdout
                            .push_str(&format!("Successfully released IP {released}\n"));
                    }
                    Ok(())
                }
                other => Err(unexpected(action, "a change report", &other)),
            }
        }
    }
}

/// How much longer than the trace itself tapwirectl waits for the agent's answer.
const TRACE_ANSWER_GRACE: Duration = Duration::from_secs(5);

fn trace(agent: &Agent, pod: Option<String>, count: u32, out: &mut Output) -> Result<(), CliError> {
    let action = "trace packets";
    let request = Request::Trace {
        count,
        pod,
        timeout_ms: u64::try_from(agent.timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let waiting = Agent {
        socket: agent.socket.clone(),
        timeout: agent.timeout + TRACE_ANSWER_GRACE,
    };
    match waiting.call(&request, action)? {
        Reply::Trace(report) => {
            out.stdout.push_str(&cli::format_trace(&report));
            Ok(())
        }
        other => Err(unexpected(action, "a packet trace", &other)),
    }
}

fn stats(agent: &Agent, all: bool, out: &mut Output) -> Result<(), CliError> {
    let action = "get counters";
    match agent.call(&Request::Stats, action)? {
        Reply::Stats { counters } => {
            let (table, hidden) = cli::format_stats(&counters, all);
            out.stdout.push_str(&table);
            if hidden > 0 && hidden == counters.len() {
                out.notes.push_str(&format!(
                    "All {hidden} counters are zero (--all lists them).\n"
                ));
            }
            Ok(())
        }
        other => Err(unexpected(action, "counters", &other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_socket_comes_from_the_flag_then_the_environment() {
        let flag = Some(PathBuf::from("/a.sock"));
        let env = Some(OsString::from("/b.sock"));
        assert_eq!(api_socket(flag, env.clone()), Path::new("/a.sock"));
        assert_eq!(api_socket(None, env), Path::new("/b.sock"));
        assert_eq!(
            api_socket(None, Some(OsString::new())),
            Path::new(api::DEFAULT_API_SOCKET)
        );
        assert_eq!(api_socket(None, None), Path::new(api::DEFAULT_API_SOCKET));
    }
}
