//! What every document has: [`Metadata`], the [`Resource`] trait that names its kind, and
//! the rules for object names.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ModelError;

/// Object names (`metadata.name`) longer than this are rejected, everywhere
/// ([`check_object_name`]). Kubernetes allows 253, but the file store keeps an object in
/// `<name>.json` and writes it through `.<name>.json.tmp`, and a file name has at most 255
/// bytes.
pub const MAX_NAME_BYTES: usize = 240;

/// Kubernetes-style object metadata, as calicoctl prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The datastore's revision of this object; set by the datastore on every read and
    /// write, and the compare-and-swap token of an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Metadata {
        Metadata {
            name: name.into(),
            ..Metadata::default()
        }
    }

    /// `resourceVersion` as a number, when it is one.
    pub fn revision(&self) -> Option<u64> {
        self.resource_version.as_deref()?.parse().ok()
    }
}

/// A typed document kind: how the datastore and the parsers know its `kind` string and
/// where its metadata is.
pub trait Resource: Serialize + DeserializeOwned + Clone + fmt::Debug {
    /// The document's `kind` (and the datastore's key for its collection).
    const KIND: &'static str;
    fn metadata(&self) -> &Metadata;
    fn metadata_mut(&mut self) -> &mut Metadata;
    fn name(&self) -> &str {
        &self.metadata().name
    }
}

/// The rule every stored object's name follows (the datastore's keys, and so also every
/// name [`validate_name`] accepts): not empty, at most [`MAX_NAME_BYTES`], no `/`, NUL or
/// control character, no leading `.` (which also rules out `.` and `..`). The reason when
/// it does not.
pub fn check_object_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err("must not start with '.'".into());
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!("{c:?} is not allowed"));
    }
    Ok(())
}

/// Checks a user-chosen object name: a stored object's name ([`check_object_name`]) that
/// is also a DNS subdomain the way Kubernetes checks one: lower-case letters, digits, `-`
/// and `.`, starting and ending with a letter or digit.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), ModelError> {
    let invalid = |reason: String| ModelError::Invalid {
        kind,
        name: name.to_string(),
        field: "metadata.name",
        reason,
    };
    check_object_name(name).map_err(invalid)?;
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(invalid(format!(
            "{c:?} is not allowed (use lower-case letters, digits, '-' and '.')"
        )));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        return Err(invalid(
            "must start and end with a letter or digit".to_string(),
        ));
    }
    Ok(())
}
