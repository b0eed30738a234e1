//! TLS from CREDD_TLS_CERT, CREDD_TLS_KEY and CREDD_TLS_CLIENT_CA.

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::StartError;
use crate::config::Settings;

/// The TLS configuration from CREDD_TLS_CERT, CREDD_TLS_KEY and CREDD_TLS_CLIENT_CA,
/// checked now so that a bad file fails start-up with a line naming its variable.
pub(super) fn tls_config(settings: &Settings) -> Result<Option<ServerTlsConfig>, StartError> {
    let read = |variable: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|err| {
            StartError::Config(format!("{variable}: cannot read {}: {err}", path.display()))
        })
    };
    let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => (read("CREDD_TLS_CERT", cert)?, read("CREDD_TLS_KEY", key)?),
        (None, None) if settings.tls_client_ca.is_some() => {
            return Err(StartError::Config(
                "CREDD_TLS_CLIENT_CA needs CREDD_TLS_CERT and CREDD_TLS_KEY (mTLS runs over TLS)"
                    .into(),
            ));
        }
        (None, None) => return Ok(None),
        _ => {
            return Err(StartError::Config(
                "CREDD_TLS_CERT and CREDD_TLS_KEY must be set together".into(),
            ));
        }
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &settings.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read("CREDD_TLS_CLIENT_CA", ca)?));
    }
    tonic::transport::Server::builder().tls_config(tls.clone()).map_err(|err| {
        StartError::Config(format!(
            "CREDD_TLS_CERT / CREDD_TLS_KEY / CREDD_TLS_CLIENT_CA: not a usable certificate, key or CA: {err}"
        ))
    })?;
    Ok(Some(tls))
}
