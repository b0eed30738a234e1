//! `Clients`: typed clients of one credd server, and the calls tests make again
//! and again (a test server's are reached through `TestApp`).

use std::time::Duration;

use credd::pb::{
    ActivateClientSecretRequest, ClientSecret, CreateOrgRequest, DeleteOrgRequest,
    GenerateClientSecretRequest, GenerateClientSecretResponse, GetIntegrationRequest,
    GetIntegrationResponse, GetOrgRequest, ListClientSecretsRequest, ListOrgsRequest, Org,
    RevokeClientSecretRequest, VerifyClientSecretRequest, VerifyClientSecretResponse,
    activate_client_secret_request::Secret, app_registrations_client::AppRegistrationsClient,
    audit_client::AuditClient, client_secrets_client::ClientSecretsClient, get_org_request::Lookup,
    orgs_client::OrgsClient,
};
use tonic::{Code, Status, service::interceptor::InterceptedService, transport::Channel};

use super::{Authed, bearer, wait_until};

/// Typed clients of one server under one token, with the calls tests make again
/// and again. Each call clones its client (a channel handle), so they take `&self`
/// and can run inside [`wait_until`] conditions.
#[derive(Clone)]
pub struct Clients {
    pub orgs: OrgsClient<Authed>,
    pub secrets: ClientSecretsClient<Authed>,
    pub apps: AppRegistrationsClient<Authed>,
    pub audit: AuditClient<Authed>,
}

impl Clients {
    /// Clients of the server behind `channel` that send `token` (or none).
    pub fn new(channel: Channel, token: Option<&str>) -> Self {
        let authed = InterceptedService::new(channel, bearer(token));
        Clients {
            orgs: OrgsClient::new(authed.clone()),
            secrets: ClientSecretsClient::new(authed.clone()),
            apps: AppRegistrationsClient::new(authed.clone()),
            audit: AuditClient::new(authed),
        }
    }

    /// Creates an org for a test that does not care about its fields: "Acme" at
    /// https://acme.example, no custom domain.
    pub async fn create_org(&self) -> Org {
        self.create_org_with("Acme", "https://acme.example", "")
            .await
    }

    /// Creates an org with these fields.
    pub async fn create_org_with(
        &self,
        name: &str,
        main_website: &str,
        custom_domain: &str,
    ) -> Org {
        self.orgs
            .clone()
            .create_org(CreateOrgRequest {
                name: name.into(),
                main_website: main_website.into(),
                custom_domain: custom_domain.into(),
            })
            .await
            .expect("create org")
            .into_inner()
    }

    /// The first page (up to 50) of orgs.
    pub async fn list_orgs(&self) -> Vec<Org> {
        self.orgs
            .clone()
            .list_orgs(ListOrgsRequest::default())
            .await
            .expect("list orgs")
            .into_inner()
            .orgs
    }

    /// Deletes the org `id`.
    pub async fn delete_org(&self, id: &str) {
        self.orgs
            .clone()
            .delete_org(DeleteOrgRequest { id: id.into() })
            .await
            .expect("delete org");
    }

    /// The org's integration view.
    pub async fn integration(&self, org_id: &str) -> GetIntegrationResponse {
        self.orgs
            .clone()
            .get_integration(GetIntegrationRequest {
                org_id: org_id.into(),
            })
            .await
            .expect("get integration")
            .into_inner()
    }

    /// Generates a PENDING secret for `org_id`.
    pub async fn generate_secret(&self, org_id: &str) -> GenerateClientSecretResponse {
        self.secrets
            .clone()
            .generate_client_secret(GenerateClientSecretRequest {
                org_id: org_id.into(),
                description: "test".into(),
                ..Default::default()
            })
            .await
            .expect("generate a client secret")
            .into_inner()
    }

    /// Generates a PENDING secret of `org_id` that ends as `expiration` says (the
    /// org's policy decides when `None`), or the refusal.
    pub async fn generate_secret_with(
        &self,
        org_id: &str,
        expiration: Option<credd::pb::generate_client_secret_request::Expiration>,
    ) -> Result<GenerateClientSecretResponse, Status> {
        self.secrets
            .clone()
            .generate_client_secret(GenerateClientSecretRequest {
                org_id: org_id.into(),
                expiration,
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Activates `secret` of `org_id`, the previous ACTIVE one retiring for
    /// `grace_seconds` (none when zero).
    pub async fn activate(
        &self,
        org_id: &str,
        secret: Secret,
        grace_seconds: i64,
    ) -> Result<ClientSecret, Status> {
        self.secrets
            .clone()
            .activate_client_secret(ActivateClientSecretRequest {
                org_id: org_id.into(),
                secret: Some(secret),
                grace_period: (grace_seconds > 0).then_some(prost_types::Duration {
                    seconds: grace_seconds,
                    nanos: 0,
                }),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Generates a secret for `org_id` and activates it at once: its metadata as
    /// ACTIVE, and its plaintext.
    pub async fn generate_and_activate(&self, org_id: &str) -> (ClientSecret, String) {
        let generated = self.generate_secret(org_id).await;
        let id = generated.secret.expect("secret metadata").id;
        let active = self
            .activate(org_id, Secret::SecretId(id), 0)
            .await
            .expect("activate the generated secret");
        (active, generated.plaintext)
    }

    /// Sets the fields `fields` (names under `credential_policy.`) of `org_id`'s
    /// policy to their values in `policy`; answers the org.
    pub async fn set_policy(
        &self,
        org_id: &str,
        fields: &[&str],
        policy: credd::pb::CredentialPolicy,
    ) -> Result<Org, Status> {
        self.orgs
            .clone()
            .update_org(credd::pb::UpdateOrgRequest {
                org: Some(Org {
                    id: org_id.into(),
                    credential_policy: Some(policy),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: fields
                        .iter()
                        .map(|f| format!("credential_policy.{f}"))
                        .collect(),
                }),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Imports a fresh random secret for `org_id` and activates it at once: its
    /// metadata as ACTIVE, and its plaintext. Imported secrets are stored with
    /// argon2id, so these are what the verdict cache, the throttle and the argon2
    /// queue are about.
    pub async fn import_and_activate(&self, org_id: &str) -> (ClientSecret, String) {
        use base64::Engine as _;
        let plaintext = base64::engine::general_purpose::STANDARD
            .encode(credd::domain::ids::random_bytes::<32>());
        let imported = self
            .secrets
            .clone()
            .import_client_secret(credd::pb::ImportClientSecretRequest {
                org_id: org_id.into(),
                plaintext: plaintext.clone(),
                description: "test".into(),
                ..Default::default()
            })
            .await
            .expect("import a client secret")
            .into_inner();
        let active = self
            .activate(org_id, Secret::SecretId(imported.id), 0)
            .await
            .expect("activate the imported secret");
        (active, plaintext)
    }

    /// Revokes secret `secret_id` of `org_id`.
    pub async fn revoke(&self, org_id: &str, secret_id: &str) -> Result<ClientSecret, Status> {
        self.secrets
            .clone()
            .revoke_client_secret(RevokeClientSecretRequest {
                org_id: org_id.into(),
                secret_id: secret_id.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The first page of `org_id`'s secrets, newest first.
    pub async fn list_secrets(&self, org_id: &str) -> Vec<ClientSecret> {
        self.secrets
            .clone()
            .list_client_secrets(ListClientSecretsRequest {
                org_id: org_id.into(),
                ..Default::default()
            })
            .await
            .expect("list client secrets")
            .into_inner()
            .secrets
    }

    /// VerifyClientSecret's answer, checked: a verdict names the org and secret
    /// exactly when it is valid.
    async fn verdict(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<VerifyClientSecretResponse, Status> {
        let answer = self
            .secrets
            .clone()
            .verify_client_secret(VerifyClientSecretRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
            })
            .await?
            .into_inner();
        if answer.valid {
            assert!(
                !answer.org_id.is_empty() && !answer.secret_id.is_empty(),
                "a valid verdict names its org and secret: {answer:?}"
            );
        } else {
            assert!(
                answer.org_id.is_empty() && answer.secret_id.is_empty(),
                "a refusal carries no ids: {answer:?}"
            );
        }
        Ok(answer)
    }

    /// The verdict on `secret` for `client_id`, or the status that refused to give
    /// one.
    pub async fn verify(&self, client_id: &str, secret: &str) -> Result<bool, Status> {
        Ok(self.verdict(client_id, secret).await?.valid)
    }

    /// Verifies until the server stops refusing with `meanwhile` (UNAVAILABLE
    /// while a store comes back, RESOURCE_EXHAUSTED while a bucket refills) and
    /// answers the verdict; any other status, or `deadline` passing, fails.
    pub async fn verdict_once_past(
        &self,
        meanwhile: Code,
        deadline: Duration,
        client_id: &str,
        secret: &str,
    ) -> bool {
        let mut verdict = None;
        wait_until(
            &format!("a verdict instead of {meanwhile:?}"),
            deadline,
            async || match self.verify(client_id, secret).await {
                Ok(valid) => {
                    verdict = Some(valid);
                    true
                }
                Err(status) => {
                    assert_eq!(status.code(), meanwhile, "{status:?}");
                    false
                }
            },
        )
        .await;
        verdict.unwrap()
    }

    /// Whether `secret` verifies for `client_id` (a verdict is expected); a valid
    /// verdict must name the org that owns `client_id` (looked up with GetOrg).
    pub async fn verifies(&self, client_id: &str, secret: &str) -> bool {
        let answer = self
            .verdict(client_id, secret)
            .await
            .expect("verify answers with a verdict");
        if answer.valid {
            let owner = self
                .orgs
                .clone()
                .get_org(GetOrgRequest {
                    lookup: Some(Lookup::ClientId(client_id.into())),
                })
                .await
                .expect("the org of a verified client")
                .into_inner();
            assert_eq!(
                answer.org_id, owner.id,
                "the verdict names the client's org"
            );
        }
        answer.valid
    }
}
