//! The `credd.v1.ClientSecrets` service.

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use super::{auth, convert};
use crate::{
    Error,
    domain::{
        ids::{ClientId, SecretId},
        secret,
    },
    pb::{self, activate_client_secret_request::Secret, client_secrets_server::ClientSecrets},
    service::{SecretService, VerifyService, client_secrets::ActivationTarget, verify::Verdict},
};

/// Adapter from `credd.v1.ClientSecrets` to [`SecretService`] and, for
/// VerifyClientSecret, [`VerifyService`].
#[derive(Debug, Clone)]
pub struct ClientSecretsGrpc {
    secrets: SecretService,
    verifier: VerifyService,
}

impl ClientSecretsGrpc {
    /// The adapter over `secrets` and `verifier`.
    pub fn new(secrets: SecretService, verifier: VerifyService) -> Self {
        Self { secrets, verifier }
    }
}

#[tonic::async_trait]
impl ClientSecrets for ClientSecretsGrpc {
    async fn generate_client_secret(
        &self,
        request: Request<pb::GenerateClientSecretRequest>,
    ) -> Result<Response<pb::GenerateClientSecretResponse>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let generated = self
            .secrets
            .generate(&actor, &org_id, &req.description)
            .await?;
        Ok(Response::new(pb::GenerateClientSecretResponse {
            secret: Some(convert::client_secret(generated.secret)),
            plaintext: generated.plaintext.expose_secret().to_owned(),
        }))
    }

    async fn import_client_secret(
        &self,
        request: Request<pb::ImportClientSecretRequest>,
    ) -> Result<Response<pb::ClientSecret>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let plaintext = SecretString::from(req.plaintext);
        let secret = self
            .secrets
            .import(&actor, &org_id, plaintext, &req.description)
            .await?;
        Ok(Response::new(convert::client_secret(secret)))
    }

    async fn activate_client_secret(
        &self,
        request: Request<pb::ActivateClientSecretRequest>,
    ) -> Result<Response<pb::ClientSecret>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let target = match req.secret {
            Some(Secret::SecretId(id)) => {
                ActivationTarget::SecretId(convert::id(SecretId::parse, "secret_id", &id)?)
            }
            Some(Secret::Plaintext(plaintext)) => ActivationTarget::Plaintext(plaintext.into()),
            None => {
                return Err(Error::invalid(
                    "secret",
                    "set secret_id (activate now) or plaintext (activate later)",
                )
                .into());
            }
        };
        let grace = req.grace_period.unwrap_or_default();
        let grace =
            secret::parse_grace("grace_period", grace.seconds, grace.nanos).map_err(Error::from)?;
        let secret = self
            .secrets
            .activate(&actor, &org_id, target, grace)
            .await?;
        Ok(Response::new(convert::client_secret(secret)))
    }

    async fn list_client_secrets(
        &self,
        request: Request<pb::ListClientSecretsRequest>,
    ) -> Result<Response<pb::ListClientSecretsResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let page = convert::page_request(
            req.page_size,
            &req.page_token,
            &["client_secrets", org_id.as_str()],
        )?;
        let (secrets, next_page_token) = convert::page(
            self.secrets.list(&org_id, page).await?,
            convert::client_secret,
        );
        Ok(Response::new(pb::ListClientSecretsResponse {
            secrets,
            next_page_token,
        }))
    }

    async fn revoke_client_secret(
        &self,
        request: Request<pb::RevokeClientSecretRequest>,
    ) -> Result<Response<pb::ClientSecret>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let secret_id = convert::id(SecretId::parse, "secret_id", &req.secret_id)?;
        let secret = self.secrets.revoke(&actor, &org_id, &secret_id).await?;
        Ok(Response::new(convert::client_secret(secret)))
    }

    async fn verify_client_secret(
        &self,
        request: Request<pb::VerifyClientSecretRequest>,
    ) -> Result<Response<pb::VerifyClientSecretResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let client_id = ClientId::parse(&req.client_id);
        let verdict = self
            .verifier
            .verify(client_id.as_ref(), req.client_secret.into(), &caller.orgs)
            .await?;
        Ok(Response::new(match verdict {
            Verdict::Valid { org_id, secret_id } => pb::VerifyClientSecretResponse {
                valid: true,
                org_id: org_id.into_string(),
                secret_id: secret_id.into_string(),
            },
            Verdict::Invalid(_) => pb::VerifyClientSecretResponse::default(),
        }))
    }
}
