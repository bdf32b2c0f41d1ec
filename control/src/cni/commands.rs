//! The verbs: after the environment and the configuration are checked, one agent call
//! per command (several for `GC`), and what each prints.

use std::io;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::config::{LATEST_VERSION, MAX_CONFIG_BYTES, SUPPORTED_VERSIONS};
use super::env::{interface_name_problem, is_cni_name, parse_cni_args};
use super::result::{build_result, Attached, PrevResult, VersionObject};
use super::{to_json, Attachment, Command, Environment, NetworkConfig, PluginError};
use crate::api::{codes, ApiError, CniRequest, Reply, Request, ResourceKind};

pub(super) fn dispatch(
    env: &Environment,
    stdin: io::Result<Vec<u8>>,
    version_hint: Option<String>,
    agent: &mut dyn FnMut(&Path, &Request, Duration) -> Result<Reply, ApiError>,
) -> Result<Option<String>, PluginError> {
    let not_unicode = |variable: &'static str| PluginError::InvalidEnvironment {
        variable,
        reason: "not valid UTF-8".into(),
        value: String::new(),
    };
    if env.not_unicode.contains(&"CNI_COMMAND") {
        return Err(not_unicode("CNI_COMMAND"));
    }
    let Some(command_text) = env.command.as_deref() else {
        return Err(PluginError::MissingEnvironment {
            variables: vec!["CNI_COMMAND"],
            command: None,
        });
    };
    let command = Command::parse(command_text)
        .ok_or_else(|| PluginError::UnknownCommand(command_text.to_string()))?;
    if command == Command::Version {
        // Probing must work whatever stdin holds: the answer only echoes its cniVersion.
        let version = VersionObject {
            cni_version: version_hint
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| LATEST_VERSION.to_string()),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        };
        return Ok(Some(to_json(&version)));
    }
    if let Some(&variable) = env.not_unicode.first() {
        return Err(not_unicode(variable));
    }
    let bytes = stdin.map_err(PluginError::ReadConfig)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(PluginError::ConfigTooLarge);
    }
    let missing: Vec<&'static str> = command
        .required_variables()
        .iter()
        .copied()
        .filter(|name| env.get(name).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(PluginError::MissingEnvironment {
            variables: missing,
            command: Some(command),
        });
    }
    let config = NetworkConfig::parse(&bytes, command)?;
    let call = Call {
        config: &config,
        command,
    };
    match command {
        Command::Add => {
            let request = attachment_request(env, &config)?;
            call.add(env, request, agent).map(Some)
        }
        Command::Del => {
            let request = attachment_request(env, &config)?;
            call.expect_done(Request::CniDel(request), agent)
                .map(|()| None)
        }
        Command::Check => {
            let request = attachment_request(env, &config)?;
            call.check(request, agent).map(|()| None)
        }
        Command::Status => call.expect_done(Request::CniStatus, agent).map(|()| None),
        Command::Gc => call.gc(agent).map(|()| None),
        // Answered above, before stdin was needed.
        Command::Version => Ok(None),
    }
}

/// The agent request for an attachment verb, after the spec's checks of its variables.
fn attachment_request(
    env: &Environment,
    config: &NetworkConfig,
) -> Result<CniRequest, PluginError> {
    let container_id = env.container_id.clone().unwrap_or_default();
    if !is_cni_name(&container_id) {
        return Err(PluginError::InvalidEnvironment {
            variable: "CNI_CONTAINERID",
            reason: "invalid characters in container id".into(),
            value: container_id,
        });
    }
    let ifname = env.ifname.clone().unwrap_or_default();
    if let Some(reason) = interface_name_problem(&ifname) {
        return Err(PluginError::InvalidEnvironment {
            variable: "CNI_IFNAME",
            reason,
            value: ifname,
        });
    }
    let args = parse_cni_args(env.args.as_deref().unwrap_or(""))?;
    Ok(CniRequest {
        container_id,
        netns: env.netns.clone().unwrap_or_default(),
        ifname,
        pod_namespace: args.pod_namespace,
        pod_name: args.pod_name,
        network: config.name.clone(),
        mtu: config.mtu,
    })
}

/// One validated call: the configuration and the verb.
struct Call<'a> {
    config: &'a NetworkConfig,
    command: Command,
}

type AgentFn<'a> = &'a mut dyn FnMut(&Path, &Request, Duration) -> Result<Reply, ApiError>;

impl Call<'_> {
    fn call(&self, request: &Request, agent: AgentFn<'_>) -> Result<Reply, PluginError> {
        agent(&self.config.api_socket, request, self.config.timeout)
            .map_err(|e| PluginError::from_agent(self.command, e))
    }

    /// DEL, CHECK and STATUS: the agent answers `done` or an error.
    fn expect_done(&self, request: Request, agent: AgentFn<'_>) -> Result<(), PluginError> {
        match self.call(&request, agent)? {
            Reply::Done => Ok(()),
            other => Err(PluginError::UnexpectedReply(format!(
                "{} was answered with {}",
                self.command.name(),
                other.describe()
            ))),
        }
    }

    fn add(
        &self,
        env: &Environment,
        request: CniRequest,
        agent: AgentFn<'_>,
    ) -> Result<String, PluginError> {
        let prev = match &self.config.prev_result {
            Some(prev) => Some(PrevResult::parse(prev)?),
            None => None,
        };
        if let Some(prev) = &prev {
            let netns = env.netns.as_deref().unwrap_or("");
            if prev.has_interface(&request.ifname, netns) {
                return Err(PluginError::InvalidConfig {
                    msg: format!(
                        "interface {} already exists in the container",
                        request.ifname
                    ),
                    details: format!(
                        "prevResult lists {} in sandbox {netns}; an earlier plugin of the \
                         chain created it",
                        request.ifname
                    ),
                });
            }
        }
        let reply = match self.call(&Request::CniAdd(request), agent)? {
            Reply::CniAdd(reply) => reply,
            other => {
                return Err(PluginError::UnexpectedReply(format!(
                    "ADD was answered with {}",
                    other.describe()
                )))
            }
        };
        let ours = Attached::from_reply(&reply)?;
        let result = build_result(
            &self.config.cni_version,
            &ours,
            prev.as_ref(),
            self.config.dns.as_ref(),
        );
        Ok(to_json(&result))
    }

    /// CHECK: `prevResult` must list tapwire's interface with an address; the agent then
    /// checks the interface and address against what ADD recorded.
    fn check(&self, request: CniRequest, agent: AgentFn<'_>) -> Result<(), PluginError> {
        let Some(prev) = &self.config.prev_result else {
            return Err(PluginError::InvalidConfig {
                msg: "CHECK needs prevResult".into(),
                details: "the runtime must pass the result of the ADD as prevResult".into(),
            });
        };
        let prev = PrevResult::parse(prev)?;
        let Some(index) = prev.interface_index(&request.ifname, &request.netns) else {
            return Err(PluginError::InvalidConfig {
                msg: format!("prevResult does not list interface {}", request.ifname),
                details: format!(
                    "expected {} in sandbox {} among prevResult.interfaces",
                    request.ifname, request.netns
                ),
            });
        };
        if !prev.has_address_on(index) {
            return Err(PluginError::InvalidConfig {
                msg: format!("prevResult lists no address on {}", request.ifname),
                details: format!("no entry of prevResult.ips has \"interface\": {index}"),
            });
        }
        self.expect_done(Request::CniCheck(request), agent)
    }

    /// GC: delete this node's endpoints that are not in the valid list.
    fn gc(&self, agent: AgentFn<'_>) -> Result<(), PluginError> {
        let Some(valid) = &self.config.valid_attachments else {
            return Err(PluginError::InvalidConfig {
                msg: "GC needs cni.dev/valid-attachments".into(),
                details: "without the list every endpoint would look stale; nothing deleted".into(),
            });
        };
        let node = match self.call(&Request::NodeStatus, agent)? {
            Reply::NodeStatus(status) => status.node,
            other => {
                return Err(PluginError::UnexpectedReply(format!(
                    "node status was answered with {}",
                    other.describe()
                )))
            }
        };
        let items = match self.call(
            &Request::Get {
                kind: ResourceKind::Workloadendpoints,
                name: None,
            },
            agent,
        )? {
            Reply::Documents { items, .. } => items,
            other => {
                return Err(PluginError::UnexpectedReply(format!(
                    "get workloadendpoints was answered with {}",
                    other.describe()
                )))
            }
        };
        let stale = stale_attachments(&items, &node, valid);
        let mut failures = Vec::new();
        let mut code = None;
        let total = stale.len();
        for (done, attachment) in stale.iter().enumerate() {
            let request = Request::CniDel(CniRequest {
                container_id: attachment.container_id.clone(),
                netns: String::new(),
                ifname: attachment.ifname.clone(),
                pod_namespace: None,
                pod_name: None,
                network: self.config.name.clone(),
                mtu: None,
            });
            let outcome = match self.call(&request, agent) {
                Ok(Reply::Done) => Ok(()),
                Ok(other) => Err(PluginError::UnexpectedReply(format!(
                    "DEL was answered with {}",
                    other.describe()
                ))),
                Err(e) => Err(e),
            };
            let Err(err) = outcome else { continue };
            failures.push(format!(
                "{}/{}: {err}",
                attachment.container_id, attachment.ifname
            ));
            if matches!(err, PluginError::AgentUnreachable { .. }) {
                // The agent is gone: the rest would fail the same way (each after a
                // timeout, perhaps). The runtime's next GC retries them.
                code = Some(codes::TRY_AGAIN_LATER);
                let left = total - done - 1;
                if left > 0 {
                    failures.push(format!("{left} more not attempted"));
                }
                break;
            }
            code.get_or_insert(err.code());
        }
        // Addresses whose endpoint never got written (an ADD cut short by a crash) have
        // nothing for the DELs above to find: the agent releases them once they are older
        // than any ADD in flight could be.
        if code != Some(codes::TRY_AGAIN_LATER) {
            if let Err(err) = self.call(&Request::ReleaseOrphans, agent) {
                failures.push(format!("releasing addresses without an endpoint: {err}"));
                code.get_or_insert(err.code());
            }
        }
        match code {
            None => Ok(()),
            Some(code) => Err(PluginError::GcIncomplete { code, failures }),
        }
    }
}

/// The endpoints in `items` (workload endpoint documents) that belong to `node`, carry a
/// container id, and are not in `valid`. Documents without a container id were not made
/// by CNI and are never touched.
pub fn stale_attachments(items: &[Value], node: &str, valid: &[Attachment]) -> Vec<Attachment> {
    items
        .iter()
        .filter_map(|doc| {
            let spec = doc.get("spec")?;
            if spec.get("node")?.as_str()? != node {
                return None;
            }
            let container_id = spec.get("containerID")?.as_str()?;
            let ifname = spec.get("endpoint")?.as_str()?;
            let still_valid = valid
                .iter()
                .any(|a| a.container_id == container_id && a.ifname == ifname);
            (!still_valid && !container_id.is_empty()).then(|| Attachment {
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            })
        })
        .collect()
}
