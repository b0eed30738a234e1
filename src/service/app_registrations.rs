//! App registration use cases, the gateway's redirect check and the association
//! files for App Links / Universal Links.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use serde_json::json;

use crate::{
    Error,
    domain::{
        Violation,
        app::{self, AppInput, AppKind, AppRegistration, Platform},
        caller::{Actor, OrgAccess, ReachedOrg},
        ids::{AppRegistrationId, ClientId, OrgId},
        org::OrgScope,
        paging::{Page, PageRequest},
    },
    service::{Clock, directory::Directory},
    store::{Store, audit::NewEvent},
};

/// Fields an update mask may name.
const UPDATABLE: &[&str] = &[
    "name",
    "bundle_id",
    "package_name",
    "app_link",
    "callback_url",
    "apple_team_id",
    "sha256_cert_fingerprints",
    "require_pkce",
];
/// Fields that never change once registered.
const IMMUTABLE: &[&str] = &["id", "org_id", "platform", "create_time", "update_time"];

/// The gateway's answer for a redirect URI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectCheck {
    /// The matching app, if the URI is registered.
    pub app_id: Option<AppRegistrationId>,
    /// Whether the login must use PKCE.
    pub pkce_required: bool,
}

/// One file a host must serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationFile {
    /// The host (an App Link's host).
    pub host: String,
    /// The path, under `/.well-known/`.
    pub path: String,
    /// The exact JSON content.
    pub content: String,
}

/// The rendered files, and the apps that could not be rendered with why.
#[derive(Debug, Clone, Default)]
pub struct AssociationFiles {
    /// Files to serve.
    pub files: Vec<AssociationFile>,
    /// "app … (name): apple_team_id is missing …".
    pub problems: Vec<String>,
}

/// App registration use cases.
#[derive(Debug, Clone)]
pub struct AppService {
    store: Store,
    directory: Arc<Directory>,
    clock: Arc<dyn Clock>,
    /// Refused redirect checks per org not yet logged (the first of an
    /// interval is logged at once): bounded by the orgs that exist.
    refused_redirects: Arc<std::sync::Mutex<HashMap<OrgId, (ClientId, u64)>>>,
}

impl AppService {
    /// The service over `store`, checking redirects against `directory`.
    pub fn new(store: Store, directory: Arc<Directory>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            directory,
            clock,
            refused_redirects: Arc::default(),
        }
    }

    /// Logs one line per org with the redirect checks refused since the last
    /// flush beyond the first (which was logged at once), and starts a new
    /// interval: a flood of unregistered redirect URIs is a line per org per
    /// interval, not a line per request.
    pub fn flush_refusal_log(&self) {
        let refused = match self.refused_redirects.lock() {
            Ok(mut refused) => std::mem::take(&mut *refused),
            Err(_) => return,
        };
        for (org_id, (client_id, count)) in refused {
            if count > 0 {
                tracing::info!(%org_id, %client_id, count, "redirect URIs refused: not registered");
            }
        }
    }

    /// Notes one refused redirect check of `org_id`: logged at once when it is
    /// the first of the interval, counted otherwise.
    fn log_refused_redirect(&self, org_id: &OrgId, client_id: &ClientId) {
        let first = self.refused_redirects.lock().is_ok_and(|mut refused| {
            match refused.entry(org_id.clone()) {
                std::collections::hash_map::Entry::Occupied(mut seen) => {
                    seen.get_mut().1 += 1;
                    false
                }
                std::collections::hash_map::Entry::Vacant(new) => {
                    new.insert((client_id.clone(), 0));
                    true
                }
            }
        });
        if first {
            tracing::info!(%org_id, %client_id, count = 1, "redirect URIs refused: not registered");
        }
    }

    /// Registers an app for the org `org_id`.
    pub async fn create(
        &self,
        actor: &Actor,
        org_id: &ReachedOrg,
        platform: Platform,
        input: AppInput,
    ) -> Result<AppRegistration, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        let org = self.store.live_org(org_id).await?;
        let valid = app::validate(platform, &input, &org.main_website).map_err(Error::Invalid)?;
        let id = AppRegistrationId::generate();
        let created = self
            .store
            .insert_app(
                id.clone(),
                org_id,
                valid,
                self.clock.now(),
                NewEvent::new(actor, "app.create", Some(org_id), &id)
                    .details(serde_json::json!({ "platform": platform.as_str() })),
            )
            .await?;
        self.directory.reload_after_write(org_id, None).await;
        tracing::info!(%org_id, app_id = %created.id, platform = platform.as_str(), "app registered");
        Ok(created)
    }

    /// The app registration `id`, if `access` reaches its org.
    pub async fn get(
        &self,
        id: &AppRegistrationId,
        access: &OrgAccess,
    ) -> Result<AppRegistration, Error> {
        match self.store.find_app(OrgScope::Any, id).await? {
            Some(app) => {
                super::reach(access, app.org_id.clone())?;
                Ok(app)
            }
            None => Err(super::missing_for(
                access,
                Error::NotFound("app registration"),
            )),
        }
    }

    /// A page of the org's apps.
    pub async fn list(
        &self,
        org_id: &ReachedOrg,
        page: PageRequest,
    ) -> Result<Page<AppRegistration>, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        let page = self.store.list_apps(org_id, &page).await?;
        if page.items.is_empty() && self.store.find_org(org_id).await?.is_none() {
            return Err(Error::NotFound("org"));
        }
        Ok(page)
    }

    /// Changes the fields named in `paths` to the values in `input`; the platform
    /// never changes, and the result must pass every rule of a new registration.
    pub async fn update(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: &AppRegistrationId,
        paths: &[String],
        input: AppInput,
    ) -> Result<AppRegistration, Error> {
        // The org first: outside the caller's orgs nothing else is said.
        let current = self.get(id, access).await?;
        if paths.is_empty() {
            return Err(Error::invalid(
                "update_mask",
                format!("must name at least one of: {}", UPDATABLE.join(", ")),
            ));
        }
        super::record_org(&current.org_id);
        let org = self.store.live_org(&current.org_id).await?;
        let mut merged = current.kind.to_input(&current.name);
        let mut violations = Vec::new();
        for path in paths {
            match path.as_str() {
                "name" => merged.name = input.name.clone(),
                "bundle_id" => merged.bundle_id = input.bundle_id.clone(),
                "package_name" => merged.package_name = input.package_name.clone(),
                "app_link" => merged.app_link = input.app_link.clone(),
                "callback_url" => merged.callback_url = input.callback_url.clone(),
                "apple_team_id" => merged.apple_team_id = input.apple_team_id.clone(),
                "sha256_cert_fingerprints" => {
                    merged.sha256_cert_fingerprints = input.sha256_cert_fingerprints.clone()
                }
                "require_pkce" => merged.require_pkce = Some(input.require_pkce.unwrap_or(true)),
                other if IMMUTABLE.contains(&other) => {
                    violations.push(Violation::new(
                        "update_mask",
                        format!("`{other}` can never change"),
                    ));
                }
                other => violations.push(Violation::new(
                    "update_mask",
                    format!(
                        "unknown field `{other}`; updatable fields are {}",
                        UPDATABLE.join(", ")
                    ),
                )),
            }
        }
        if !violations.is_empty() {
            return Err(Error::Invalid(violations));
        }
        let valid = app::validate(current.platform(), &merged, &org.main_website).map_err(
            |violations| {
                Error::Invalid(
                    violations
                        .into_iter()
                        .map(|v| Violation::new(format!("app_registration.{}", v.field), v.reason))
                        .collect(),
                )
            },
        )?;
        let updated = self
            .store
            .update_app(
                &current.org_id,
                id,
                valid,
                self.clock.now(),
                NewEvent::new(actor, "app.update", Some(&current.org_id), id)
                    .details(serde_json::json!({ "fields": paths })),
            )
            .await?;
        self.directory
            .reload_after_write(&current.org_id, None)
            .await;
        tracing::info!(app_id = %id, "app registration updated");
        Ok(updated)
    }

    /// Deletes the app registration `id`.
    pub async fn delete(
        &self,
        actor: &Actor,
        access: &OrgAccess,
        id: &AppRegistrationId,
    ) -> Result<(), Error> {
        let app = self.get(id, access).await?;
        super::record_org(&app.org_id);
        let event = NewEvent::new(actor, "app.delete", Some(&app.org_id), id);
        self.store
            .delete_app(&app.org_id, id, self.clock.now(), event)
            .await?;
        self.directory.reload_after_write(&app.org_id, None).await;
        tracing::info!(app_id = %id, "app registration deleted");
        Ok(())
    }

    /// Whether `redirect_uri` is registered for `client_id` (`None`: what was
    /// presented cannot be a client ID). Unknown clients, deleted orgs and
    /// malformed input are simply not allowed.
    pub async fn check_redirect(
        &self,
        client_id: Option<&ClientId>,
        redirect_uri: &str,
        access: &OrgAccess,
    ) -> Result<RedirectCheck, Error> {
        let Some(client_id) = client_id else {
            return Ok(RedirectCheck::default());
        };
        if redirect_uri.is_empty() || redirect_uri.len() > crate::domain::org::MAX_URL_LEN {
            return Ok(RedirectCheck::default());
        }
        // A client of an org the caller does not reach is not allowed, like an
        // unknown one.
        let Some(entry) = self.directory.by_client_id(client_id, access)? else {
            return Ok(RedirectCheck::default());
        };
        let found = entry
            .redirects
            .iter()
            .find(|app| app::redirect_matches(&app.redirect_uri, redirect_uri));
        if found.is_none() {
            // It may be registered meanwhile while the change feed is unreadable.
            self.directory.absence_is_an_answer()?;
            self.log_refused_redirect(&entry.org.id, client_id);
        }
        Ok(
            found.map_or_else(RedirectCheck::default, |app| RedirectCheck {
                pkce_required: app.require_pkce,
                app_id: Some(app.app_id.clone()),
            }),
        )
    }

    /// The `apple-app-site-association` and `assetlinks.json` files each App Link
    /// host of the org must serve.
    pub async fn association_files(&self, org_id: &ReachedOrg) -> Result<AssociationFiles, Error> {
        let org_id = org_id.id();
        super::record_org(org_id);
        self.store.live_org(org_id).await?;
        let apps = self.store.apps_of_org(org_id).await?;
        Ok(render_association_files(&apps))
    }
}

/// Renders the association files of `apps`, one per host and kind, in a stable order.
pub fn render_association_files(apps: &[AppRegistration]) -> AssociationFiles {
    let mut apple: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut android: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let mut problems = Vec::new();
    for app in apps {
        let Ok(link) = url::Url::parse(app.redirect_uri()) else {
            continue;
        };
        let Some(host) = link.host_str().map(crate::domain::host::canonical_host) else {
            continue;
        };
        match &app.kind {
            AppKind::Ios {
                apple_team_id: None,
                ..
            } => problems.push(format!(
                "app {} ({}): apple_team_id is missing, needed to render apple-app-site-association",
                app.id, app.name
            )),
            AppKind::Ios {
                bundle_id,
                apple_team_id: Some(team_id),
                ..
            } => apple.entry(host).or_default().push(json!({
                "appIDs": [format!("{team_id}.{bundle_id}")],
                "components": [{ "/": link.path() }],
            })),
            AppKind::Android {
                sha256_cert_fingerprints,
                ..
            } if sha256_cert_fingerprints.is_empty() => problems.push(format!(
                "app {} ({}): sha256_cert_fingerprints is missing, needed to render assetlinks.json",
                app.id, app.name
            )),
            AppKind::Android {
                package_name,
                sha256_cert_fingerprints,
                ..
            } => android.entry(host).or_default().push(json!({
                "relation": ["delegate_permission/common.handle_all_urls"],
                "target": {
                    "namespace": "android_app",
                    "package_name": package_name,
                    "sha256_cert_fingerprints": sha256_cert_fingerprints,
                },
            })),
            AppKind::Web { .. } => {}
        }
    }
    let pretty =
        |value: serde_json::Value| serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut files = Vec::new();
    for (host, details) in apple {
        files.push(AssociationFile {
            host,
            path: "/.well-known/apple-app-site-association".into(),
            content: pretty(json!({ "applinks": { "details": details } })),
        });
    }
    for (host, statements) in android {
        files.push(AssociationFile {
            host,
            path: "/.well-known/assetlinks.json".into(),
            content: pretty(serde_json::Value::Array(statements)),
        });
    }
    AssociationFiles { files, problems }
}
