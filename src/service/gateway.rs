//! The gateway's /authorize step in one call: the login host, the client and the
//! redirect URI, answered from the in-memory directory.

use std::sync::Arc;

use crate::{
    Error,
    domain::{
        app,
        caller::OrgAccess,
        host,
        ids::{AppRegistrationId, ClientId},
        org::Org,
    },
    service::directory::Directory,
};

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// The host is neither the default login domain nor an org's custom domain.
    HostUnknown,
    /// No org (that the caller reaches) has this client ID.
    ClientUnknown,
    /// The host is another org's custom domain.
    ClientNotOnHost,
    /// The redirect URI is not registered for the client's org.
    RedirectNotRegistered,
}

/// The answer for a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The gateway may go on.
    Allowed {
        /// The client's org (boxed: a refusal is a byte).
        org: Box<Org>,
        /// The app the redirect URI belongs to.
        app_id: AppRegistrationId,
        /// Whether the login must use PKCE.
        pkce_required: bool,
    },
    /// Refused, and why.
    Refused(LoginRefusal),
}

/// ResolveLogin.
#[derive(Debug, Clone)]
pub struct GatewayService {
    directory: Arc<Directory>,
    default_login_domain: String,
}

impl GatewayService {
    /// The service over `directory`; `default_login_domain` resolves any org.
    pub fn new(directory: Arc<Directory>, default_login_domain: String) -> Self {
        Self {
            directory,
            default_login_domain,
        }
    }

    /// Resolves a login: `host` as the browser sent it (case, a trailing dot and
    /// a port ignored), `client_id` (`None`: cannot be one credd issued) and
    /// `redirect_uri`. Orgs `access` does not reach are answered as unknown.
    pub fn resolve(
        &self,
        host: &str,
        client_id: Option<&ClientId>,
        redirect_uri: &str,
        access: &OrgAccess,
    ) -> Result<Login, Error> {
        use LoginRefusal::*;
        let Some(host) = login_host(host) else {
            return Ok(Login::Refused(HostUnknown));
        };
        let host_org = if host == self.default_login_domain {
            None
        } else {
            match self.directory.by_custom_domain(&host, access)? {
                Some(entry) => Some(entry),
                None => return Ok(Login::Refused(HostUnknown)),
            }
        };
        let client = match client_id {
            Some(client_id) => self.directory.by_client_id(client_id, access)?,
            None => None,
        };
        let Some(client) = client else {
            return Ok(Login::Refused(ClientUnknown));
        };
        super::record_org(&client.org.id);
        if host_org.is_some_and(|entry| entry.org.id != client.org.id) {
            return Ok(Login::Refused(ClientNotOnHost));
        }
        let registered = (!redirect_uri.is_empty()
            && redirect_uri.len() <= crate::domain::org::MAX_URL_LEN)
            .then(|| {
                client
                    .redirects
                    .iter()
                    .find(|r| app::redirect_matches(&r.redirect_uri, redirect_uri))
            })
            .flatten();
        let Some(registered) = registered else {
            // It may have been registered meanwhile while the change feed is
            // unreadable: no "no" that may be wrong.
            self.directory.absence_is_an_answer()?;
            return Ok(Login::Refused(RedirectNotRegistered));
        };
        Ok(Login::Allowed {
            org: Box::new(client.org.clone()),
            app_id: registered.app_id.clone(),
            pkce_required: registered.require_pkce,
        })
    }
}

/// The host of a login request in the form the directory keys it: lower case, no
/// trailing dot, no port; `None` when it cannot be a DNS host name.
pub fn login_host(host: &str) -> Option<String> {
    let without_port = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    host::parse_dns_host("host", without_port).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_hosts_ignore_case_a_trailing_dot_and_a_port() {
        for sent in [
            "login.acme.example",
            "LOGIN.Acme.Example",
            "login.acme.example.",
            "login.acme.example:443",
            "Login.acme.example.:8443",
        ] {
            assert_eq!(
                login_host(sent).as_deref(),
                Some("login.acme.example"),
                "{sent}"
            );
        }
        for bad in ["", ":443", "localhost", "login acme", "127.0.0.1", "a..b"] {
            assert_eq!(login_host(bad), None, "{bad}");
        }
    }
}
