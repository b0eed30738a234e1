//! The one error type of credd's use cases and its single mapping to `tonic::Status`.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Violation;

/// Everything a use case can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input broke a rule; each violation names the field and the rule.
    #[error("invalid argument: {}", describe(.0))]
    Invalid(Vec<Violation>),
    /// The thing named does not exist (or no longer does).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique thing the caller asked for is taken.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What is taken, for the caller.
        what: &'static str,
        /// The request field that names it.
        field: &'static str,
    },
    /// The thing is in a state that does not allow the action.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// No caller token, or one that is unknown, expired or revoked.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The caller's token lacks the scope the RPC needs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The store cannot be reached; the caller may retry.
    #[error("store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A concurrent write won a race; retrying may succeed.
    #[error("aborted: {0}")]
    Aborted(&'static str),
    /// Too much work is queued; the caller may retry later.
    #[error("overloaded: {0}")]
    Overloaded(&'static str),
    /// A fault of credd's own. Logged whole; the caller sees only "internal error".
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// One violation of one field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid(vec![Violation::new(field, reason)])
    }
}

impl From<Violation> for Error {
    fn from(violation: Violation) -> Self {
        Error::Invalid(vec![violation])
    }
}

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match &error {
            Error::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field.clone(), v.reason.clone());
                }
                Status::with_error_details(Code::InvalidArgument, error.to_string(), details)
            }
            Error::NotFound(_) => Status::not_found(error.to_string()),
            Error::AlreadyExists { field, .. } => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(*field, "already taken");
                Status::with_error_details(Code::AlreadyExists, error.to_string(), details)
            }
            Error::FailedPrecondition(_) => Status::failed_precondition(error.to_string()),
            Error::Unauthenticated => Status::unauthenticated(
                "missing or invalid caller token: send `authorization: Bearer <token>`",
            ),
            Error::PermissionDenied(_) => Status::permission_denied(error.to_string()),
            Error::Unavailable(source) => {
                tracing::warn!(error = %error_chain(source.as_ref()), "store unavailable");
                Status::unavailable("store unavailable, retry later")
            }
            Error::Overloaded(_) => Status::resource_exhausted(error.to_string()),
            Error::Aborted(_) => Status::aborted(error.to_string()),
            Error::Internal(source) => {
                tracing::error!(error = %error_chain(source.as_ref()), "internal error");
                Status::internal("internal error")
            }
        }
    }
}

/// An error and its causes on one line, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
