//! Who is calling: the caller token's name and scopes.

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller token's name, recorded in the audit trail.
    pub name: String,
}

impl Caller {
    /// The caller that presents `CREDD_BOOTSTRAP_TOKEN`.
    pub fn bootstrap() -> Self {
        Self {
            name: "bootstrap".to_owned(),
        }
    }
}
