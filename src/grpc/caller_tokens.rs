//! The `credd.v1.CallerTokens` service.

use secrecy::ExposeSecret as _;
use tonic::{Request, Response, Status};

use super::{auth, convert};
use crate::{
    Error,
    domain::{
        caller::{Scope, Scopes},
        ids::{CallerTokenId, OrgId},
    },
    pb::{self, caller_tokens_server::CallerTokens, create_caller_token_request::Expiration},
    service::callers::{Authenticator, TokenService},
};
use std::sync::Arc;

/// Adapter from `credd.v1.CallerTokens` to [`TokenService`].
#[derive(Debug, Clone)]
pub struct CallerTokensGrpc {
    tokens: TokenService,
    authenticator: Arc<Authenticator>,
}

impl CallerTokensGrpc {
    /// The adapter over `tokens`; `authenticator` learns of this process's
    /// creations and revocations at once.
    pub fn new(tokens: TokenService, authenticator: Arc<Authenticator>) -> Self {
        Self {
            tokens,
            authenticator,
        }
    }
}

#[tonic::async_trait]
impl CallerTokens for CallerTokensGrpc {
    async fn create_caller_token(
        &self,
        request: Request<pb::CreateCallerTokenRequest>,
    ) -> Result<Response<pb::CreateCallerTokenResponse>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let scopes = req
            .scopes
            .iter()
            .map(|name| Scope::parse(name).map_err(|v| Error::invalid("scopes", v.reason)))
            .collect::<Result<Vec<_>, _>>()?;
        let org_ids = req
            .org_ids
            .iter()
            .map(|id| convert::id(OrgId::parse, "org_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let expire_time = match req.expiration {
            None => None,
            Some(Expiration::ExpireTime(time)) => Some(convert::time("expire_time", time)?),
            Some(Expiration::Ttl(ttl)) => {
                Some(chrono::Utc::now() + convert::positive_duration("ttl", ttl)?)
            }
        };
        let (token, plaintext) = self
            .tokens
            .create_for(
                &actor,
                &caller,
                &req.name,
                Scopes::of(scopes),
                org_ids,
                expire_time,
            )
            .await?;
        // Known here before the answer: its first call needs no on-demand reload.
        self.authenticator.reload_now().await;
        Ok(Response::new(pb::CreateCallerTokenResponse {
            caller_token: Some(convert::caller_token(token)),
            plaintext: plaintext.token.expose_secret().to_owned(),
        }))
    }

    async fn get_caller_token(
        &self,
        request: Request<pb::GetCallerTokenRequest>,
    ) -> Result<Response<pb::CallerToken>, Status> {
        let caller = auth::caller(&request);
        let id = convert::id(CallerTokenId::parse, "id", &request.into_inner().id)?;
        let token = self.tokens.get(&caller, &id).await?;
        Ok(Response::new(convert::caller_token(token)))
    }

    async fn list_caller_tokens(
        &self,
        request: Request<pb::ListCallerTokensRequest>,
    ) -> Result<Response<pb::ListCallerTokensResponse>, Status> {
        let caller = auth::caller(&request);
        let req = request.into_inner();
        let reach = caller.orgs.to_stored();
        let page =
            convert::page_request(req.page_size, &req.page_token, &["caller_tokens", &reach])?;
        let (caller_tokens, next_page_token) = convert::page(
            self.tokens.page(&caller, page).await?,
            convert::caller_token,
        );
        Ok(Response::new(pb::ListCallerTokensResponse {
            caller_tokens,
            next_page_token,
        }))
    }

    async fn revoke_caller_token(
        &self,
        request: Request<pb::RevokeCallerTokenRequest>,
    ) -> Result<Response<pb::CallerToken>, Status> {
        let actor = auth::actor(&request);
        let caller = auth::caller(&request);
        let id = convert::id(CallerTokenId::parse, "id", &request.into_inner().id)?;
        let token = self.tokens.revoke_by_id(&actor, &caller, &id).await?;
        self.authenticator.reload_now().await;
        Ok(Response::new(convert::caller_token(token)))
    }
}
