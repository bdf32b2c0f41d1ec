//! The results the plugin prints: `VERSION`'s, and `ADD`'s in the version the
//! configuration asks for, merged into a chained plugin's `prevResult`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::config::version_key;
use super::{Dns, PluginError};
use crate::api::CniAddReply;

/// The `VERSION` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionObject {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// A `prevResult`, checked for the shape tapwire relies on; entries stay as given.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PrevResult {
    interfaces: Vec<Value>,
    ips: Vec<Value>,
    routes: Vec<Value>,
    dns: Option<Value>,
    /// Other top-level fields (without `cniVersion`, which the output sets).
    extra: Map<String, Value>,
}

impl PrevResult {
    pub(super) fn parse(prev: &Map<String, Value>) -> Result<PrevResult, PluginError> {
        let list = |key: &str| -> Result<Vec<Value>, PluginError> {
            match prev.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => {
                    if let Some(i) = items.iter().position(|v| !v.is_object()) {
                        return Err(PluginError::DecodePrevResult(format!(
                            "prevResult.{key}[{i}] is not an object"
                        )));
                    }
                    Ok(items.clone())
                }
                Some(_) => Err(PluginError::DecodePrevResult(format!(
                    "prevResult.{key} is not a list"
                ))),
            }
        };
        let interfaces = list("interfaces")?;
        let ips = list("ips")?;
        let routes = list("routes")?;
        for (i, ip) in ips.iter().enumerate() {
            match ip.get("interface") {
                None | Some(Value::Null) => {}
                Some(Value::Number(n))
                    if n.as_u64().is_some_and(|n| n < interfaces.len() as u64) => {}
                Some(other) => {
                    return Err(PluginError::DecodePrevResult(format!(
                        "prevResult.ips[{i}].interface is {other}, not an index into the {} \
                         interfaces",
                        interfaces.len()
                    )))
                }
            }
        }
        let dns = match prev.get("dns") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => {
                return Err(PluginError::DecodePrevResult(
                    "prevResult.dns is not an object".into(),
                ))
            }
        };
        let extra = prev
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "cniVersion" | "interfaces" | "ips" | "routes" | "dns"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(PrevResult {
            interfaces,
            ips,
            routes,
            dns,
            extra,
        })
    }

    /// The index of interface `name` in sandbox `netns` (an entry without a sandbox is on
    /// the host and never matches).
    pub(super) fn interface_index(&self, name: &str, netns: &str) -> Option<usize> {
        self.interfaces.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(name)
                && i.get("sandbox").and_then(Value::as_str) == Some(netns)
        })
    }

    pub(super) fn has_interface(&self, name: &str, netns: &str) -> bool {
        self.interface_index(name, netns).is_some()
    }

    pub(super) fn has_address_on(&self, index: usize) -> bool {
        self.ips.iter().any(|ip| {
            ip.get("interface").and_then(Value::as_u64) == Some(index as u64)
                && ip.get("address").and_then(Value::as_str).is_some()
        })
    }
}

/// The agent's answer to ADD, checked to be well-formed CIDRs and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attached {
    interface: String,
    mac: String,
    sandbox: String,
    mtu: u32,
    address: IpNet,
    gateway: Option<IpAddr>,
    routes: Vec<(IpNet, Option<IpAddr>)>,
}

impl Attached {
    pub(super) fn from_reply(reply: &CniAddReply) -> Result<Attached, PluginError> {
        let bad = |what: &str, value: &str| {
            PluginError::UnexpectedReply(format!("ADD answered {what} {value:?}"))
        };
        let address: IpNet = reply
            .address
            .parse()
            .map_err(|_| bad("an address that is not a CIDR:", &reply.address))?;
        let gateway = if reply.gateway.is_empty() {
            None
        } else {
            Some(
                reply
                    .gateway
                    .parse()
                    .map_err(|_| bad("a gateway that is not an address:", &reply.gateway))?,
            )
        };
        let mut routes = Vec::with_capacity(reply.routes.len());
        for route in &reply.routes {
            let dst: IpNet = route
                .dst
                .parse()
                .map_err(|_| bad("a route destination that is not a CIDR:", &route.dst))?;
            let gw = match &route.gw {
                Some(gw) => Some(
                    gw.parse()
                        .map_err(|_| bad("a route gateway that is not an address:", gw))?,
                ),
                None => None,
            };
            routes.push((dst, gw));
        }
        if reply.interface.is_empty() {
            return Err(bad("an empty interface name", ""));
        }
        Ok(Attached {
            interface: reply.interface.clone(),
            mac: reply.mac.clone(),
            sandbox: reply.sandbox.clone(),
            mtu: reply.mtu,
            address,
            gateway,
            routes,
        })
    }
}

/// An interface entry of the result.
#[derive(Debug, Serialize)]
struct InterfaceOut {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    mac: String,
    /// 1.1.0 results carry the interface MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    sandbox: String,
}

/// An `ips` entry; `version` exists in 0.3.x/0.4.0 results only.
#[derive(Debug, Serialize)]
struct IpOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    interface: usize,
}

#[derive(Debug, Serialize)]
struct RouteOut {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
}

/// A result entry: tapwire's own (fields in spec order) or one kept from `prevResult`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Entry<T> {
    Ours(T),
    Kept(Value),
}

/// The ADD result (1.1.0, 1.0.0, 0.4.0 and 0.3.x share this shape).
#[derive(Debug, Serialize)]
pub(super) struct ResultOut {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    interfaces: Vec<Entry<InterfaceOut>>,
    ips: Vec<Entry<IpOut>>,
    routes: Vec<Entry<RouteOut>>,
    dns: Entry<Dns>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// The ADD result in `version`: `prev`'s entries first, then tapwire's.
pub(super) fn build_result(
    version: &str,
    ours: &Attached,
    prev: Option<&PrevResult>,
    config_dns: Option<&Dns>,
) -> ResultOut {
    let pre_1_0 = version_key(version) < (1, 0, 0);
    let with_mtu = version_key(version) >= (1, 1, 0);
    let kept = |items: Option<&Vec<Value>>| -> Vec<Value> { items.cloned().unwrap_or_default() };
    let mut interfaces: Vec<Entry<InterfaceOut>> = kept(prev.map(|p| &p.interfaces))
        .into_iter()
        .map(Entry::Kept)
        .collect();
    let index = interfaces.len();
    interfaces.push(Entry::Ours(InterfaceOut {
        name: ours.interface.clone(),
        mac: ours.mac.clone(),
        mtu: (with_mtu && ours.mtu > 0).then_some(ours.mtu),
        sandbox: ours.sandbox.clone(),
    }));
    let mut ips: Vec<Entry<IpOut>> = kept(prev.map(|p| &p.ips))
        .into_iter()
        .map(Entry::Kept)
        .collect();
    ips.push(Entry::Ours(IpOut {
        version: pre_1_0.then_some(match ours.address {
            IpNet::V4(_) => "4",
            IpNet::V6(_) => "6",
        }),
        address: ours.address.to_string(),
        gateway: ours.gateway.map(|g| g.to_string()),
        interface: index,
    }));
    let mut routes: Vec<Entry<RouteOut>> = kept(prev.map(|p| &p.routes))
        .into_iter()
        .map(Entry::Kept)
        .collect();
    routes.extend(ours.routes.iter().map(|(dst, gw)| {
        Entry::Ours(RouteOut {
            dst: dst.to_string(),
            gw: gw.map(|g| g.to_string()),
        })
    }));
    let dns = match prev.and_then(|p| p.dns.clone()) {
        Some(kept) => Entry::Kept(kept),
        None => Entry::Ours(config_dns.cloned().unwrap_or_default()),
    };
    ResultOut {
        cni_version: version.to_string(),
        interfaces,
        ips,
        routes,
        dns,
        extra: prev.map(|p| p.extra.clone()).unwrap_or_default(),
    }
}
