//! The `credd.v1.ClientSecrets` service.

use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};

use super::{auth, convert};
use crate::{
    Error,
    domain::{paging::PageRequest, secret},
    pb::{self, activate_client_secret_request::Secret, client_secrets_server::ClientSecrets},
    service::{
        SecretService,
        client_secrets::{ActivationTarget, Verdict},
    },
};

/// Adapter from `credd.v1.ClientSecrets` to [`SecretService`].
#[derive(Debug, Clone)]
pub struct ClientSecretsGrpc {
    secrets: SecretService,
}

impl ClientSecretsGrpc {
    /// The adapter over `secrets`.
    pub fn new(secrets: SecretService) -> Self {
        Self { secrets }
    }
}

#[tonic::async_trait]
impl ClientSecrets for ClientSecretsGrpc {
    async fn generate_client_secret(
        &self,
        request: Request<pb::GenerateClientSecretRequest>,
    ) -> Result<Response<pb::GenerateClientSecretResponse>, Status> {
        let actor = auth::actor(&request);
        let req = request.into_inner();
        let generated = self
            .secrets
            .generate(&actor, &req.org_id, &req.description)
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
        let req = request.into_inner();
        let plaintext = SecretString::from(req.plaintext);
        let secret = self
            .secrets
            .import(&actor, &req.org_id, plaintext, &req.description)
            .await?;
        Ok(Response::new(convert::client_secret(secret)))
    }

    async fn activate_client_secret(
        &self,
        request: Request<pb::ActivateClientSecretRequest>,
    ) -> Result<Response<pb::ClientSecret>, Status> {
        let actor = auth::actor(&request);
        let req = request.into_inner();
        let target = match req.secret {
            Some(Secret::SecretId(id)) => ActivationTarget::SecretId(id),
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
            .activate(&actor, &req.org_id, target, grace)
            .await?;
        Ok(Response::new(convert::client_secret(secret)))
    }

    async fn list_client_secrets(
        &self,
        request: Request<pb::ListClientSecretsRequest>,
    ) -> Result<Response<pb::ListClientSecretsResponse>, Status> {
        let req = request.into_inner();
        let page = PageRequest::parse(req.page_size, &req.page_token).map_err(Error::from)?;
        let page = self.secrets.list(&req.org_id, page).await?;
        Ok(Response::new(pb::ListClientSecretsResponse {
            secrets: page
                .secrets
                .into_iter()
                .map(convert::client_secret)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_client_secret(
        &self,
        request: Request<pb::RevokeClientSecretRequest>,
    ) -> Result<Response<pb::ClientSecret>, Status> {
        let actor = auth::actor(&request);
        let req = request.into_inner();
        let secret = self
            .secrets
            .revoke(&actor, &req.org_id, &req.secret_id)
            .await?;
        Ok(Response::new(convert::client_secret(secret)))
    }

    async fn verify_client_secret(
        &self,
        request: Request<pb::VerifyClientSecretRequest>,
    ) -> Result<Response<pb::VerifyClientSecretResponse>, Status> {
        let req = request.into_inner();
        let verdict = self
            .secrets
            .verify(&req.client_id, req.client_secret.into())
            .await?;
        Ok(Response::new(match verdict {
            Verdict::Valid { org_id, secret_id } => pb::VerifyClientSecretResponse {
                valid: true,
                org_id,
                secret_id,
            },
            Verdict::Invalid(_) => pb::VerifyClientSecretResponse::default(),
        }))
    }
}
