//! credd's types and rules. Nothing here knows about tonic or the database, so every
//! rule is unit-tested without a server.

pub mod app;
pub mod audit;
pub mod caller;
pub mod host;
pub mod ids;
pub mod link;
pub mod org;
pub mod paging;
pub mod policy;
pub mod secret;

/// One broken rule: the request field and, in plain words, the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request field, as named in the proto (`main_website`, `org.name`).
    pub field: String,
    /// The rule, for a human: "must be an absolute https URL".
    pub reason: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
