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
    pb::{
        self, activate_client_secret_request::Secret, client_secrets_server::ClientSecrets,
        generate_client_secret_request, import_client_secret_request, rotate_client_secret_request,
    },
    service::{SecretService, VerifyService, client_secrets::ActivationTarget, verify::Verdict},
    store::client_secrets::SecretFilter,
};

/// A grace period the caller sent (unset: zero).
fn grace(grace: Option<prost_types::Duration>) -> Result<chrono::Duration, Error> {
    let grace = grace.unwrap_or_default();
    secret::parse_grace("grace_period", grace.seconds, grace.nanos).map_err(Error::from)
}

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
        let expiration = match req.expiration {
            Some(generate_client_secret_request::Expiration::ExpireTime(at)) => {
                convert::expiration(Some(at), None)?
            }
            Some(generate_client_secret_request::Expiration::Ttl(ttl)) => {
                convert::expiration(None, Some(ttl))?
            }
            None => None,
        };
        let generated = self
            .secrets
            .generate(&actor, &org_id, &req.description, expiration)
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
        let expiration = match req.expiration {
            Some(import_client_secret_request::Expiration::ExpireTime(at)) => {
                convert::expiration(Some(at), None)?
            }
            Some(import_client_secret_request::Expiration::Ttl(ttl)) => {
                convert::expiration(None, Some(ttl))?
            }
            None => None,
        };
        let activate = if req.activate {
            Some(grace(req.grace_period)?)
        } else if req.grace_period.is_some() {
            return Err(Error::invalid("grace_period", "is only for `activate: true`").into());
        } else {
            None
        };
        let secret = self
            .secrets
            .import(
                &actor,
                &org_id,
                plaintext,
                &req.description,
                expiration,
                activate,
            )
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
        let grace = grace(req.grace_period)?;
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
        // `-`: across every org the caller reaches (AIP-159).
        let org_id = (req.org_id != "-")
            .then(|| convert::org_in_reach(&caller, "org_id", &req.org_id))
            .transpose()?;
        let states = req
            .states
            .iter()
            .map(|&state| convert::state_filter("states", state))
            .collect::<Result<Vec<_>, _>>()?;
        let expire_before = req
            .expire_before
            .map(|t| convert::time("expire_before", t))
            .transpose()?;
        let state_names = states
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let before = expire_before.map(|t| t.to_rfc3339()).unwrap_or_default();
        let page = convert::page_request(
            req.page_size,
            &req.page_token,
            &["client_secrets", &req.org_id, &state_names, &before],
        )?;
        let filter = SecretFilter {
            states,
            expire_before,
        };
        let (secrets, next_page_token) = convert::page(
            self.secrets
                .list(org_id.as_ref(), &caller.orgs, filter, page)
                .await?,
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

    async fn rotate_client_secret(
        &self,
        request: Request<pb::RotateClientSecretRequest>,
    ) -> Result<Response<pb::GenerateClientSecretResponse>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let org_id = convert::org_in_reach(&caller, "org_id", &req.org_id)?;
        let grace = grace(req.grace_period)?;
        let expiration = match req.expiration {
            Some(rotate_client_secret_request::Expiration::ExpireTime(at)) => {
                convert::expiration(Some(at), None)?
            }
            Some(rotate_client_secret_request::Expiration::Ttl(ttl)) => {
                convert::expiration(None, Some(ttl))?
            }
            None => None,
        };
        let rotated = self
            .secrets
            .rotate(&actor, &org_id, &req.description, expiration, grace)
            .await?;
        Ok(Response::new(pb::GenerateClientSecretResponse {
            secret: Some(convert::client_secret(rotated.secret)),
            plaintext: rotated.plaintext.expose_secret().to_owned(),
        }))
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
