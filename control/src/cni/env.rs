//! What the runtime passes in the environment: the verb (`CNI_COMMAND`), the `CNI_*`
//! variables, `CNI_ARGS`, and the spec's rules for names in them.

use std::ffi::OsString;

use super::PluginError;

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_IFNAME_BYTES: usize = 15;

/// The CNI verb in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    /// The verb as the runtime spells it (`ADD`); commands are case-sensitive.
    pub fn parse(text: &str) -> Option<Command> {
        match text {
            "ADD" => Some(Command::Add),
            "DEL" => Some(Command::Del),
            "CHECK" => Some(Command::Check),
            "STATUS" => Some(Command::Status),
            "GC" => Some(Command::Gc),
            "VERSION" => Some(Command::Version),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The variables the spec requires besides `CNI_COMMAND`, in libcni's order.
    pub(super) fn required_variables(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Status | Command::Gc | Command::Version => &[],
        }
    }

    /// The oldest configuration version that has this verb.
    pub(super) fn minimum_version(self) -> Option<&'static str> {
        match self {
            Command::Check => Some("0.4.0"),
            Command::Status | Command::Gc => Some("1.1.0"),
            Command::Add | Command::Del | Command::Version => None,
        }
    }
}

/// The `CNI_*` variables. Unset and empty are the same (as in libcni).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
    /// Variables that are set but are not UTF-8 (reported as invalid, code 4).
    pub not_unicode: Vec<&'static str>,
}

impl Environment {
    /// Reads the variables through `lookup` (the process environment in the binary).
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<OsString>) -> Environment {
        let mut env = Environment::default();
        let mut read = |name: &'static str, env: &mut Environment| -> Option<String> {
            let value = lookup(name)?;
            match value.into_string() {
                Ok(s) if s.is_empty() => None,
                Ok(s) => Some(s),
                Err(_) => {
                    env.not_unicode.push(name);
                    None
                }
            }
        };
        env.command = read("CNI_COMMAND", &mut env);
        env.container_id = read("CNI_CONTAINERID", &mut env);
        env.netns = read("CNI_NETNS", &mut env);
        env.ifname = read("CNI_IFNAME", &mut env);
        env.args = read("CNI_ARGS", &mut env);
        env.path = read("CNI_PATH", &mut env);
        env
    }

    /// The process environment.
    pub fn from_process() -> Environment {
        Environment::from_lookup(|name| std::env::var_os(name))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        match name {
            "CNI_COMMAND" => self.command.as_deref(),
            "CNI_CONTAINERID" => self.container_id.as_deref(),
            "CNI_NETNS" => self.netns.as_deref(),
            "CNI_IFNAME" => self.ifname.as_deref(),
            "CNI_ARGS" => self.args.as_deref(),
            "CNI_PATH" => self.path.as_deref(),
            _ => None,
        }
    }
}

/// What `CNI_ARGS` carries that tapwire reads (Kubernetes runtimes pass these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_infra_container_id: Option<String>,
    pub pod_uid: Option<String>,
}

/// Parses `K=V;K2=V2` (see the module doc for the rules).
pub fn parse_cni_args(text: &str) -> Result<CniArgs, PluginError> {
    let invalid = |reason: String| PluginError::InvalidEnvironment {
        variable: "CNI_ARGS",
        reason,
        value: text.to_string(),
    };
    let mut args = CniArgs::default();
    let mut ignore_unknown = false;
    let mut unknown = Vec::new();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(invalid(format!("{pair:?} is not KEY=VALUE")));
        };
        let slot = match key {
            "K8S_POD_NAMESPACE" => &mut args.pod_namespace,
            "K8S_POD_NAME" => &mut args.pod_name,
            "K8S_POD_INFRA_CONTAINER_ID" => &mut args.pod_infra_container_id,
            "K8S_POD_UID" => &mut args.pod_uid,
            "IgnoreUnknown" => {
                ignore_unknown = match value.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(invalid(format!(
                            "IgnoreUnknown={value} is not 1, true, 0 or false"
                        )))
                    }
                };
                continue;
            }
            "" => return Err(invalid(format!("{pair:?} has an empty key"))),
            _ => {
                unknown.push(pair);
                continue;
            }
        };
        *slot = (!value.is_empty()).then(|| value.to_string());
    }
    if !unknown.is_empty() && !ignore_unknown {
        return Err(invalid(format!(
            "unknown keys [{}] (add IgnoreUnknown=1 to have them ignored)",
            unknown.join(";")
        )));
    }
    Ok(args)
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`: the spec's rule for container ids and network names.
pub(super) fn is_cni_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Why `name` cannot be a Linux interface name, if it cannot.
pub(super) fn interface_name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_IFNAME_BYTES {
        return Some(format!(
            "interface name is too long (at most {MAX_IFNAME_BYTES} bytes)"
        ));
    }
    if name == "." || name == ".." {
        return Some("interface name is . or ..".into());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Some("interface name contains / or : or whitespace".into());
    }
    None
}
