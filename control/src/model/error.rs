//! [`ModelError`]: what is wrong with a document or a batch of documents, naming the
//! document, the field and the problem.

use super::document::API_VERSION;

/// What is wrong with a document, a batch of documents or the node configuration.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The text is not valid YAML or JSON at all.
    #[error("invalid {format}: {message}")]
    Syntax {
        format: &'static str,
        message: String,
    },
    /// One document of a batch is wrong. `index` counts documents from 1 in the order they
    /// appear; `item` counts the items of a `kind: List` document from 1.
    #[error("document {index}{}{}: {}", item_label(*.item), doc_label(kind, name), error.detail())]
    InDocument {
        index: usize,
        item: Option<usize>,
        kind: Option<String>,
        name: Option<String>,
        error: Box<ModelError>,
    },
    /// A required top-level key is absent.
    #[error("missing {field}")]
    Missing { field: &'static str },
    #[error("apiVersion {found:?} is not supported (expected {API_VERSION:?})")]
    ApiVersion { found: String },
    /// A document's `kind` is not the one being read.
    #[error("kind {found:?} where {expected} was expected")]
    WrongKind {
        found: String,
        expected: &'static str,
    },
    /// `kind` names nothing a user can apply.
    #[error("kind {found:?} cannot be applied (expected one of: IPPool, Node, BGPPeer, BGPConfiguration, or a List of them)")]
    UnknownKind { found: String },
    /// The document does not have the shape of its kind (unknown key, wrong type, …).
    #[error("{kind} {name:?}: {message}")]
    Decode {
        kind: String,
        name: String,
        message: String,
    },
    /// The document has the right shape but a value is not acceptable.
    #[error("{kind} {name:?}: {field}: {reason}")]
    Invalid {
        kind: &'static str,
        name: String,
        field: &'static str,
        reason: String,
    },
}

impl ModelError {
    /// The message without the "kind name:" subject, for when the caller names it.
    pub fn detail(&self) -> String {
        match self {
            ModelError::Decode { message, .. } => message.clone(),
            ModelError::Invalid { field, reason, .. } => format!("{field}: {reason}"),
            other => other.to_string(),
        }
    }
}

fn item_label(item: Option<usize>) -> String {
    item.map(|i| format!(", item {i}")).unwrap_or_default()
}

fn doc_label(kind: &Option<String>, name: &Option<String>) -> String {
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n:?})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(n)) => format!(" ({n:?})"),
        (None, None) => String::new(),
    }
}
