//! Invoking CNI plugins the way a container runtime does (what libcni does for containerd
//! or CRI-O): the plugin named by a network configuration's `type` is looked up in
//! `CNI_PATH`, executed with the CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`,
//! `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`) and the configuration on its standard
//! input, and its standard output is read as a result or as a CNI error object.
//!
//! A configuration list ([`Runtime::add_list`]) runs its plugins in order; each gets the
//! list's `name` and `cniVersion` and the previous plugin's result as `prevResult`. DEL and
//! CHECK run with the cached result of ADD as `prevResult`, DEL in reverse order. That is
//! the contract a plugin must keep to work as the first plugin of a chain.
//!
//! Plugins run inside a given namespace (a node's: the runtime's host side), each run
//! bounded in time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{CniFailure, LabError, Result};
use crate::netns::Netns;
use crate::process::CommandOutput;

/// The CNI spec version the lab's configurations use.
pub const CNI_VERSION: &str = "1.0.0";
/// The longest a plugin may run.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The CNI operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CniCommand {
    Add,
    Del,
    Check,
    Version,
    Status,
}

impl CniCommand {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
            CniCommand::Version => "VERSION",
            CniCommand::Status => "STATUS",
        }
    }
}

/// What the runtime passes about the container being wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniArgs {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the path of the container's network namespace.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// Kubernetes namespace and pod name, passed in `CNI_ARGS` as kubelet's runtimes do.
    pub pod: Option<(String, String)>,
}

impl CniArgs {
    /// The arguments for Kubernetes pod `namespace/name` in `netns`, interface `eth0`.
    pub fn for_pod(container_id: &str, netns: &Netns, namespace: &str, name: &str) -> CniArgs {
        CniArgs {
            container_id: container_id.to_string(),
            netns: netns.path().display().to_string(),
            ifname: "eth0".into(),
            pod: Some((namespace.to_string(), name.to_string())),
        }
    }

    /// `CNI_ARGS` as CRI runtimes build it: `IgnoreUnknown=1` first, so plugins that do
    /// not know the Kubernetes keys accept them.
    pub fn cni_args(&self) -> String {
        match &self.pod {
            Some((namespace, name)) => format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
                 K8S_POD_INFRA_CONTAINER_ID={}",
                self.container_id
            ),
            None => "IgnoreUnknown=1".into(),
        }
    }
}

/// A CNI error object (`code`, `msg`, `details`), as a failed plugin prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniErrorObject {
    pub cni_version: String,
    pub code: u64,
    pub msg: String,
    pub details: String,
}

impl CniErrorObject {
    /// Reads an error object; `None` if `value` is not one.
    pub fn from_value(value: &Value) -> Option<CniErrorObject> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some(CniErrorObject {
            code: value.get("code")?.as_u64()?,
            msg: text("msg"),
            details: text("details"),
            cni_version: text("cniVersion"),
        })
    }
}

/// One execution of a plugin: what it printed and how it ended.
#[derive(Debug, Clone)]
pub struct PluginRun {
    /// The plugin's `type`.
    pub plugin: String,
    pub command: CniCommand,
    pub container: String,
    pub output: CommandOutput,
    /// From exec to exit.
    pub elapsed: Duration,
}

impl PluginRun {
    /// Whether the plugin exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.output.status.success()
    }

    /// Standard output as JSON (`None` if empty or not JSON).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.output.stdout.trim()).ok()
    }

    /// The CNI error object a failed plugin printed.
    pub fn error_object(&self) -> Option<CniErrorObject> {
        self.json().as_ref().and_then(CniErrorObject::from_value)
    }

    /// The result (JSON, `Null` when the plugin printed nothing) if the plugin succeeded,
    /// else a [`LabError::Cni`] carrying its error object.
    pub fn into_result(self) -> Result<Value> {
        if self.succeeded() {
            let stdout = self.output.stdout.trim();
            if stdout.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(stdout).map_err(|e| LabError::Parse {
                what: format!(
                    "the {} result of CNI plugin {}",
                    self.command.as_str(),
                    self.plugin
                ),
                reason: e.to_string(),
                output: self.output.stdout.clone(),
            });
        }
        let error = self.error_object().unwrap_or(CniErrorObject {
            cni_version: String::new(),
            code: 0,
            msg: "no CNI error object on stdout".into(),
            details: self.output.stdout.trim().to_string(),
        });
        Err(LabError::Cni(Box::new(CniFailure {
            plugin: self.plugin,
            command: self.command.as_str().into(),
            container: self.container,
            exit: self.output.status.to_string(),
            code: error.code,
            msg: error.msg,
            details: error.details,
            stderr: self.output.stderr,
        })))
    }
}

/// A container runtime's plugin invoker: where plugins are found (`CNI_PATH`) and the
/// namespace they run in.
#[derive(Debug, Clone)]
pub struct Runtime {
    cni_path: Vec<PathBuf>,
    host: Netns,
}

impl Runtime {
    /// A runtime running plugins inside `host` (a node's namespace), finding them in
    /// `cni_path` (searched in order, like `CNI_PATH`).
    pub fn new(host: &Netns, cni_path: Vec<PathBuf>) -> Runtime {
        Runtime {
            cni_path,
            host: host.clone(),
        }
    }

    /// `CNI_PATH` as passed to plugins.
    pub fn cni_path(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The executable of plugin `plugin_type`, searched in `CNI_PATH` order.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf> {
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(LabError::Invalid(format!(
                "CNI plugin type {plugin_type:?} is not a plain executable name"
            )));
        }
        self.cni_path
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                LabError::Invalid(format!(
                    "CNI plugin {plugin_type:?} not found in CNI_PATH {}",
                    self.cni_path()
                ))
            })
    }

    /// Executes the plugin `conf["type"]` for `command` with `conf` on its standard input.
    /// Any exit status is returned; see [`PluginRun::into_result`].
    pub fn exec(&self, command: CniCommand, conf: &Value, args: &CniArgs) -> Result<PluginRun> {
        let plugin = conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                LabError::Invalid(format!("network configuration without a type: {conf}"))
            })?
            .to_string();
        let bin = self.find_plugin(&plugin)?;
        let bin = bin.display().to_string();
        let env = plugin_env(command, &self.cni_path(), args);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stdin = serde_json::to_vec(conf).map_err(|e| LabError::Invalid(e.to_string()))?;
        let started = Instant::now();
        let output = self
            .host
            .exec_with(&[&bin], &env, Some(&stdin), PLUGIN_TIMEOUT)?;
        Ok(PluginRun {
            plugin,
            command,
            container: args.container_id.clone(),
            output,
            elapsed: started.elapsed(),
        })
    }

    /// `VERSION`: the versions the plugin supports (its `supportedVersions`).
    pub fn versions(&self, plugin_type: &str) -> Result<Vec<String>> {
        let conf = json!({ "cniVersion": CNI_VERSION, "type": plugin_type });
        let args = CniArgs {
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            pod: None,
        };
        let result = self
            .exec(CniCommand::Version, &conf, &args)?
            .into_result()?;
        Ok(result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Runs a configuration list's ADD: every plugin in order, each given the previous
    /// plugin's result as `prevResult`. Returns the last result (what a runtime caches).
    /// If a plugin fails, the list is deleted again (as libcni's callers do) and the
    /// failure returned.
    pub fn add_list(&self, list: &Value, args: &CniArgs) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for i in 0..plugins(list)?.len() {
            let conf = plugin_conf(list, i, prev.as_ref())?;
            match self.exec(CniCommand::Add, &conf, args)?.into_result() {
                Ok(result) => prev = Some(result),
                Err(err) => {
                    // Best effort, as a runtime does; the ADD failure is what matters.
                    let _ = self.del_list(list, args, prev.as_ref());
                    return Err(err);
                }
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// Runs a configuration list's CHECK: every plugin in order with the cached ADD result.
    pub fn check_list(&self, list: &Value, args: &CniArgs, cached: &Value) -> Result<()> {
        for i in 0..plugins(list)?.len() {
            let conf = plugin_conf(list, i, Some(cached))?;
            self.exec(CniCommand::Check, &conf, args)?.into_result()?;
        }
        Ok(())
    }

    /// Runs a configuration list's DEL: every plugin in reverse order, with the cached
    /// ADD result (if any) as `prevResult`. Stops at the first failure, as libcni does.
    pub fn del_list(&self, list: &Value, args: &CniArgs, cached: Option<&Value>) -> Result<()> {
        for i in (0..plugins(list)?.len()).rev() {
            let conf = plugin_conf(list, i, cached)?;
            self.exec(CniCommand::Del, &conf, args)?.into_result()?;
        }
        Ok(())
    }
}

/// The CNI environment of one plugin execution for `command`: `CNI_COMMAND` and
/// `CNI_PATH`, and for the commands about a container `CNI_CONTAINERID`, `CNI_NETNS`,
/// `CNI_IFNAME` and `CNI_ARGS` from `args`.
pub fn plugin_env(
    command: CniCommand,
    cni_path: &str,
    args: &CniArgs,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("CNI_COMMAND", command.as_str().to_string()),
        ("CNI_PATH", cni_path.to_string()),
    ];
    if !matches!(command, CniCommand::Version | CniCommand::Status) {
        env.extend([
            ("CNI_CONTAINERID", args.container_id.clone()),
            ("CNI_NETNS", args.netns.clone()),
            ("CNI_IFNAME", args.ifname.clone()),
            ("CNI_ARGS", args.cni_args()),
        ]);
    }
    env
}

/// A configuration list's `plugins`.
fn plugins(list: &Value) -> Result<&Vec<Value>> {
    list.get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| LabError::Invalid(format!("a CNI configuration list needs plugins: {list}")))
}

/// Plugin `i` of `list` as libcni hands it over: the plugin's own keys plus the list's
/// `name` and `cniVersion`, and `prevResult` when there is one.
pub fn plugin_conf(list: &Value, i: usize, prev: Option<&Value>) -> Result<Value> {
    let plugin = plugins(list)?
        .get(i)
        .ok_or_else(|| LabError::Invalid(format!("no plugin {i} in the list")))?;
    let mut conf = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| LabError::Invalid(format!("plugin {i} is not an object: {plugin}")))?;
    for key in ["name", "cniVersion"] {
        if let Some(value) = list.get(key) {
            conf.insert(key.into(), value.clone());
        }
    }
    match prev {
        Some(prev) if !prev.is_null() => {
            conf.insert("prevResult".into(), prev.clone());
        }
        _ => {
            conf.remove("prevResult");
        }
    }
    Ok(Value::Object(conf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_plugins_get_name_version_and_prev_result() {
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "k8s-pod-network",
            "plugins": [
                { "type": "tapwire", "api_socket": "/run/tapwire/api.sock" },
                { "type": "tuning", "mtu": 1400 }
            ]
        });
        let first = plugin_conf(&list, 0, None).unwrap();
        assert_eq!(
            first,
            json!({ "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tapwire",
                    "api_socket": "/run/tapwire/api.sock" })
        );
        let prev = json!({ "cniVersion": "1.0.0", "ips": [{ "address": "10.65.0.2/32" }] });
        let second = plugin_conf(&list, 1, Some(&prev)).unwrap();
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["mtu"], 1400);
        assert_eq!(second["name"], "k8s-pod-network");
        assert!(plugin_conf(&list, 2, None).is_err());
    }

    #[test]
    fn cni_args_lead_with_ignore_unknown() {
        let args = CniArgs {
            container_id: "c1".into(),
            netns: "/var/run/netns/x".into(),
            ifname: "eth0".into(),
            pod: Some(("default".into(), "web-1".into())),
        };
        assert_eq!(
            args.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;\
             K8S_POD_INFRA_CONTAINER_ID=c1"
        );
    }

    #[test]
    fn plugin_env_names_the_container_except_for_version_and_status() {
        let args = CniArgs {
            container_id: "c1".into(),
            netns: "/var/run/netns/x".into(),
            ifname: "eth0".into(),
            pod: None,
        };
        let keys = |command| -> Vec<&str> {
            plugin_env(command, "/opt/cni/bin", &args)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(
            keys(CniCommand::Add),
            [
                "CNI_COMMAND",
                "CNI_PATH",
                "CNI_CONTAINERID",
                "CNI_NETNS",
                "CNI_IFNAME",
                "CNI_ARGS"
            ]
        );
        assert_eq!(keys(CniCommand::Version), ["CNI_COMMAND", "CNI_PATH"]);
        let env = plugin_env(CniCommand::Del, "/opt/cni/bin", &args);
        assert!(env.contains(&("CNI_COMMAND", "DEL".to_string())));
        assert!(env.contains(&("CNI_NETNS", "/var/run/netns/x".to_string())));
    }

    #[test]
    fn error_objects_are_read() {
        let value = json!({ "cniVersion": "1.0.0", "code": 3, "msg": "no netns", "details": "x" });
        let err = CniErrorObject::from_value(&value).unwrap();
        assert_eq!(
            (err.code, err.msg.as_str(), err.details.as_str()),
            (3, "no netns", "x")
        );
        assert!(CniErrorObject::from_value(&json!({ "ips": [] })).is_none());
    }
}
