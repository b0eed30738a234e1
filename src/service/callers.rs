//! Caller authentication: which token is this, if any.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Error, domain::caller::Caller};

/// Checks caller tokens. Tokens are compared by their SHA-256 digests in constant
/// time, so neither the comparison nor its length reveals anything.
#[derive(Clone)]
pub struct Authenticator {
    bootstrap_digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("bootstrap", &self.bootstrap_digest.is_some())
            .finish()
    }
}

impl Authenticator {
    /// Accepts `bootstrap_token` (when set) as an admin caller.
    pub fn new(bootstrap_token: Option<&str>) -> Self {
        Self {
            bootstrap_digest: bootstrap_token.map(digest),
        }
    }

    /// The caller that `authorization` (the header's value) names.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        let token = authorization
            .and_then(|value| value.strip_prefix(b"Bearer ".as_slice()))
            .map(<[u8]>::trim_ascii)
            .filter(|token| !token.is_empty())
            .ok_or(Error::Unauthenticated)?;
        let presented = digest_bytes(token);
        match &self.bootstrap_digest {
            Some(expected) if bool::from(expected.ct_eq(&presented)) => Ok(Caller::bootstrap()),
            _ => Err(Error::Unauthenticated),
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    digest_bytes(token.as_bytes())
}

fn digest_bytes(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bootstrap_token_as_bearer_is_accepted() {
        let auth = Authenticator::new(Some("s3cret-token"));
        assert!(auth.authenticate(Some(b"Bearer s3cret-token")).is_ok());
        for bad in [
            &b"Bearer s3cret-tokeN"[..],
            b"s3cret-token",
            b"Basic s3cret-token",
            b"Bearer ",
            b"",
        ] {
            assert!(matches!(
                auth.authenticate(Some(bad)),
                Err(Error::Unauthenticated)
            ));
        }
        assert!(matches!(
            auth.authenticate(None),
            Err(Error::Unauthenticated)
        ));
    }

    #[test]
    fn without_a_bootstrap_token_nothing_is_accepted() {
        let auth = Authenticator::new(None);
        assert!(auth.authenticate(Some(b"Bearer anything")).is_err());
    }

    #[test]
    fn debug_output_never_holds_the_token() {
        let auth = Authenticator::new(Some("s3cret-token"));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
