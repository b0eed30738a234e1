//! The clients and messages generated from credd's protos.

#![allow(clippy::all, missing_docs)]

/// `credd.v1`: messages and clients.
pub mod credd {
    /// Version 1 of the API.
    pub mod v1 {
        tonic::include_proto!("credd.v1");
    }
}

pub use credd::v1::*;

/// A redacting `Debug` for messages that carry a plaintext secret.
macro_rules! redacted_debug {
    ($type:ty { $($field:ident),* } hides $secret:ident) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($type))
                    $(.field(stringify!($field), &self.$field))*
                    .field(stringify!($secret), &"[REDACTED]")
                    .finish()
            }
        }
    };
}

redacted_debug!(GenerateClientSecretResponse { secret } hides plaintext);
redacted_debug!(ImportClientSecretRequest { org_id, description, activate } hides plaintext);
redacted_debug!(ActivateClientSecretRequest { org_id, secret, grace_period } hides plaintext);
redacted_debug!(VerifyClientSecretRequest { client_id } hides client_secret);
redacted_debug!(CreateCallerTokenResponse { caller_token } hides plaintext);

impl std::fmt::Debug for activate_client_secret_request::Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SecretId(id) => f.debug_tuple("SecretId").field(id).finish(),
            Self::Plaintext(_) => f.write_str("Plaintext([REDACTED])"),
        }
    }
}
