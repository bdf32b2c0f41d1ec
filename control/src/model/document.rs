//! Documents as users apply them: parsing calicoctl-shaped YAML or JSON into typed
//! documents (strictly, errors naming the document and the key) and checking a batch.

use serde::Deserialize;
use serde_json::Value;

use super::{BgpConfiguration, BgpPeer, IpPool, ModelError, Node, Resource};

/// The `apiVersion` of every tapwire document, calicoctl's.
pub const API_VERSION: &str = "projectcalico.org/v3";

/// A document a user can apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    IpPool(IpPool),
    Node(Node),
    BgpPeer(BgpPeer),
    BgpConfiguration(BgpConfiguration),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::IpPool(_) => IpPool::KIND,
            Document::Node(_) => Node::KIND,
            Document::BgpPeer(_) => BgpPeer::KIND,
            Document::BgpConfiguration(_) => BgpConfiguration::KIND,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Document::IpPool(p) => p.name(),
            Document::Node(n) => n.name(),
            Document::BgpPeer(p) => p.name(),
            Document::BgpConfiguration(c) => c.name(),
        }
    }

    /// Checks the document on its own (see [`IpPool::validate`], [`Node::validate`]).
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            Document::IpPool(p) => p.validate(),
            Document::Node(n) => n.validate(),
            Document::BgpPeer(p) => p.validate(),
            Document::BgpConfiguration(c) => c.validate(),
        }
    }

    /// The calicoctl-shaped value (`apiVersion`, `kind`, `metadata`, `spec`, …).
    pub fn to_value(&self) -> Value {
        match self {
            Document::IpPool(p) => to_document_value(p),
            Document::Node(n) => to_document_value(n),
            Document::BgpPeer(p) => to_document_value(p),
            Document::BgpConfiguration(c) => to_document_value(c),
        }
    }
}

/// Checks a batch about to be applied, before anything is written: every document on its
/// own, no two documents with the same kind and name, no pool overlapping another pool of
/// the batch or an `existing` one (pools of the same name are replaced, not overlapped),
/// and no pool changing the CIDR or block size of its stored version. Errors name the
/// document by position.
pub fn check_batch(docs: &[Document], existing_pools: &[IpPool]) -> Result<(), ModelError> {
    let at = |index: usize, doc: &Document, error: ModelError| ModelError::InDocument {
        index: index + 1,
        item: None,
        kind: Some(doc.kind().to_string()),
        name: Some(doc.name().to_string()),
        error: Box::new(error),
    };
    let batch_pools: Vec<&IpPool> = docs
        .iter()
        .filter_map(|d| match d {
            Document::IpPool(p) => Some(p),
            _ => None,
        })
        .collect();
    for (i, doc) in docs.iter().enumerate() {
        doc.validate().map_err(|e| at(i, doc, e))?;
        if let Some(first) = docs[..i]
            .iter()
            .position(|d| d.kind() == doc.kind() && d.name() == doc.name())
        {
            return Err(at(
                i,
                doc,
                ModelError::Invalid {
                    kind: doc.kind(),
                    name: doc.name().to_string(),
                    field: "metadata.name",
                    reason: format!("also defined by document {}", first + 1),
                },
            ));
        }
        if let Document::IpPool(pool) = doc {
            // Stored pools that the batch replaces do not count as existing.
            let kept = existing_pools
                .iter()
                .filter(|e| !batch_pools.iter().any(|b| b.name() == e.name()));
            pool.check_overlap(kept.chain(batch_pools.iter().copied()))
                .map_err(|e| at(i, doc, e))?;
            if let Some(old) = existing_pools.iter().find(|e| e.name() == pool.name()) {
                pool.check_update(old).map_err(|e| at(i, doc, e))?;
            }
        }
    }
    Ok(())
}

/// Parses documents a user applies: YAML (one document, several separated by `---`, or a
/// `kind: List` / `kind: IPPoolList`… with `items`) or JSON (one object, an array of
/// objects, or a List). Empty YAML documents are skipped. Each document is decoded
/// strictly: unknown keys are errors naming the key, and errors name the document by
/// position, kind and name. Documents are not validated here (see [`check_batch`]).
pub fn parse_documents(text: &str) -> Result<Vec<Document>, ModelError> {
    let values = parse_values(text)?;
    let mut docs = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let index = i + 1;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(ModelError::InDocument {
                        index,
                        item: None,
                        kind: Some(kind.to_string()),
                        name: None,
                        error: Box::new(ModelError::Decode {
                            kind: kind.to_string(),
                            name: String::new(),
                            message: "items must be a list of documents".into(),
                        }),
                    })
                }
            };
            for (j, item) in items.into_iter().enumerate() {
                docs.push(parse_document(item, index, Some(j + 1))?);
            }
        } else {
            docs.push(parse_document(value, index, None)?);
        }
    }
    Ok(docs)
}

/// Splits text into untyped documents: JSON when it starts with `{` or `[`, else YAML.
fn parse_values(text: &str) -> Result<Vec<Value>, ModelError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match serde_json::from_str(text) {
            Ok(Value::Array(items)) => return Ok(items),
            Ok(other) => return Ok(vec![other]),
            // YAML flow style (`[{kind: IPPool, …}]`) also starts like this.
            Err(e) => {
                return parse_yaml(text).map_err(|_| ModelError::Syntax {
                    format: "JSON",
                    message: e.to_string(),
                })
            }
        }
    }
    parse_yaml(text)
}

fn parse_yaml(text: &str) -> Result<Vec<Value>, ModelError> {
    let mut values = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ModelError::Syntax {
            format: "YAML",
            message: format!("document {}: {e}", i + 1),
        })?;
        match value {
            // A top-level sequence of documents, as JSON arrays are read.
            Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    }
    Ok(values)
}

fn parse_document(value: Value, index: usize, item: Option<usize>) -> Result<Document, ModelError> {
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .map(str::to_string);
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let wrap = |error: ModelError| ModelError::InDocument {
        index,
        item,
        kind: kind.clone(),
        name: name.clone(),
        error: Box::new(error),
    };
    match kind.as_deref() {
        Some(IpPool::KIND) => from_document_value(value).map(Document::IpPool),
        Some(Node::KIND) => from_document_value(value).map(Document::Node),
        Some(BgpPeer::KIND) => from_document_value(value).map(Document::BgpPeer),
        Some(BgpConfiguration::KIND) => from_document_value(value).map(Document::BgpConfiguration),
        Some(other) => Err(ModelError::UnknownKind {
            found: other.to_string(),
        }),
        None if !value.is_object() => Err(ModelError::Decode {
            kind: String::new(),
            name: String::new(),
            message: format!(
                "expected a document (a mapping), found {}",
                json_type(&value)
            ),
        }),
        None => Err(ModelError::Missing { field: "kind" }),
    }
    .map_err(wrap)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Decodes one calicoctl-shaped document of kind `T`: checks `apiVersion` and `kind`,
/// then decodes the rest strictly.
pub fn from_document_value<T: Resource>(value: Value) -> Result<T, ModelError> {
    let Value::Object(mut map) = value else {
        return Err(ModelError::Decode {
            kind: T::KIND.to_string(),
            name: String::new(),
            message: format!("expected a mapping, found {}", json_type(&value)),
        });
    };
    match map.remove("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(other) => {
            return Err(ModelError::ApiVersion {
                found: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
            })
        }
        None => {
            return Err(ModelError::Missing {
                field: "apiVersion",
            })
        }
    }
    match map.remove("kind") {
        Some(Value::String(k)) if k == T::KIND => {}
        Some(other) => {
            return Err(ModelError::WrongKind {
                found: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string),
                expected: T::KIND,
            })
        }
        None => return Err(ModelError::Missing { field: "kind" }),
    }
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ModelError::Decode {
            kind: T::KIND.to_string(),
            name,
            message,
        }
    })
}

/// The calicoctl-shaped value of a document: `apiVersion`, `kind`, then its fields.
pub fn to_document_value<T: Resource>(doc: &T) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    map.insert("kind".into(), Value::String(T::KIND.into()));
    // Serializing plain data with string keys cannot fail; an empty object would be the
    // only (unreachable) fallback.
    if let Ok(Value::Object(fields)) = serde_json::to_value(doc) {
        map.extend(fields);
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests;
