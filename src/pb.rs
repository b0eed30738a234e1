//! The code generated from proto/credd/v1 and the file descriptor set that
//! reflection serves.

#![allow(clippy::all, missing_docs)]

/// `credd.v1`: messages, clients and servers.
pub mod credd {
    /// Version 1 of the API.
    pub mod v1 {
        tonic::include_proto!("credd.v1");
    }
}

pub use credd::v1::*;

/// The encoded descriptors of credd's protos and their imports (well-known types).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("credd_descriptor");

/// Writes a redacting `Debug` for messages that carry a plaintext secret: every
/// listed field as usual, the secret as `[REDACTED]`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_with_secrets_never_print_them() {
        let printed = [
            format!(
                "{:?}",
                GenerateClientSecretResponse {
                    secret: None,
                    plaintext: "s3cr3t-value".into()
                }
            ),
            format!(
                "{:?}",
                ImportClientSecretRequest {
                    org_id: "o".into(),
                    plaintext: "s3cr3t-value".into(),
                    description: String::new(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                ActivateClientSecretRequest {
                    org_id: "o".into(),
                    secret: Some(activate_client_secret_request::Secret::Plaintext(
                        "s3cr3t-value".into()
                    )),
                    grace_period: None,
                }
            ),
            format!(
                "{:?}",
                VerifyClientSecretRequest {
                    client_id: "c".into(),
                    client_secret: "s3cr3t-value".into()
                }
            ),
            format!(
                "{:?}",
                CreateCallerTokenResponse {
                    caller_token: None,
                    plaintext: "s3cr3t-value".into()
                }
            ),
        ];
        for text in printed {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("REDACTED"), "{text}");
        }
    }
}
