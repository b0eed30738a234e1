//! credd.v1.AppRegistrations end to end, every rule with a passing and a failing case.

use credd::pb::{
    AppRegistration, CheckRedirectUriRequest, CheckRedirectUriResponse,
    CreateAppRegistrationRequest, DeleteAppRegistrationRequest, GetAppRegistrationRequest,
    ListAppRegistrationsRequest, Org, Platform, RenderAssociationFilesRequest,
    UpdateAppRegistrationRequest,
};
use prost_types::FieldMask;
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_code, assert_invalid, collect_pages, spawn_app};
use credd::pb::{CreateOrgRequest, UpdateOrgRequest};

const TEAM: &str = "ABCDE12345";

fn fingerprint(byte: &str) -> String {
    vec![byte; 32].join(":")
}

/// An org on https://example.com: the app-link rules below depend on its host.
async fn org(app: &TestApp) -> Org {
    app.create_org_with("Example", "https://example.com", "")
        .await
}

fn ios(org: &Org, bundle_id: &str, app_link: &str) -> CreateAppRegistrationRequest {
    CreateAppRegistrationRequest {
        org_id: org.id.clone(),
        name: "iOS app".into(),
        platform: Platform::Ios.into(),
        bundle_id: bundle_id.into(),
        app_link: app_link.into(),
        apple_team_id: TEAM.into(),
        ..Default::default()
    }
}

fn android(org: &Org, package_name: &str, app_link: &str) -> CreateAppRegistrationRequest {
    CreateAppRegistrationRequest {
        org_id: org.id.clone(),
        name: "Android app".into(),
        platform: Platform::Android.into(),
        package_name: package_name.into(),
        app_link: app_link.into(),
        sha256_cert_fingerprints: vec![fingerprint("ab")],
        ..Default::default()
    }
}

fn web(org: &Org, callback_url: &str) -> CreateAppRegistrationRequest {
    CreateAppRegistrationRequest {
        org_id: org.id.clone(),
        name: "Web app".into(),
        platform: Platform::Web.into(),
        callback_url: callback_url.into(),
        ..Default::default()
    }
}

async fn create(
    app: &mut TestApp,
    request: CreateAppRegistrationRequest,
) -> Result<AppRegistration, tonic::Status> {
    app.apps
        .create_app_registration(request)
        .await
        .map(tonic::Response::into_inner)
}

async fn check(app: &mut TestApp, client_id: &str, redirect_uri: &str) -> CheckRedirectUriResponse {
    app.apps
        .check_redirect_uri(CheckRedirectUriRequest {
            client_id: client_id.into(),
            redirect_uri: redirect_uri.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn native_apps_need_an_https_link_off_the_main_website_host(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    // The documents' pair: website https://example.com.
    let registered = create(
        &mut app,
        ios(&org, "com.example.app", "https://app.example.com"),
    )
    .await
    .unwrap();
    assert_eq!(registered.platform(), Platform::Ios);
    assert!(registered.require_pkce, "native apps always use PKCE");
    assert_eq!(registered.apple_team_id, TEAM);
    assert_invalid(
        create(
            &mut app,
            ios(&org, "com.example.two", "https://example.com/app"),
        )
        .await,
        "app_link",
    );
    assert_invalid(
        create(
            &mut app,
            ios(&org, "com.example.two", "https://EXAMPLE.COM./app"),
        )
        .await,
        "app_link",
    );

    for custom in ["myapp://callback", "com.example.app:/cb"] {
        let status = app
            .apps
            .create_app_registration(ios(&org, "com.example.three", custom))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("custom URL schemes"),
            "the error says why: {}",
            status.message()
        );
        assert_invalid(
            create(&mut app, android(&org, "com.example.three", custom)).await,
            "app_link",
        );
    }
    for bad in [
        "http://app.example.com/cb",
        "https://app.example.com/cb#fragment",
        "https://user@app.example.com/cb",
        "https://192.0.2.1/cb",
        "app.example.com/cb",
        "",
    ] {
        assert_invalid(
            create(&mut app, ios(&org, "com.example.four", bad)).await,
            "app_link",
        );
    }
    let valid = ios(&org, "com.x.y", "https://a.example.net/cb");
    let cases = [
        (ios(&org, "app", "https://a.example.net/cb"), "bundle_id"),
        (
            ios(&org, "com..app", "https://a.example.net/cb"),
            "bundle_id",
        ),
        (
            CreateAppRegistrationRequest {
                apple_team_id: "abc".into(),
                ..valid.clone()
            },
            "apple_team_id",
        ),
        (
            CreateAppRegistrationRequest {
                callback_url: "https://a.example.net".into(),
                ..valid.clone()
            },
            "callback_url",
        ),
        (
            CreateAppRegistrationRequest {
                name: String::new(),
                ..valid.clone()
            },
            "name",
        ),
        (
            CreateAppRegistrationRequest {
                platform: 0,
                ..valid
            },
            "platform",
        ),
    ];
    for (request, field) in cases {
        assert_invalid(create(&mut app, request).await, field);
    }

    let droid = create(
        &mut app,
        android(&org, "com.example.app_2", "https://links.example.net/open"),
    )
    .await
    .unwrap();
    assert_eq!(
        droid.sha256_cert_fingerprints,
        vec![fingerprint("AB")],
        "fingerprints are stored upper-case"
    );
    for bad in ["app", "com.1example", "com.exa-mple"] {
        assert_invalid(
            create(&mut app, android(&org, bad, "https://links.example.net/x")).await,
            "package_name",
        );
    }
    assert_invalid(
        create(
            &mut app,
            CreateAppRegistrationRequest {
                sha256_cert_fingerprints: vec!["AB:CD".into()],
                ..android(&org, "com.x.y", "https://l.example.net/x")
            },
        )
        .await,
        "sha256_cert_fingerprints[0]",
    );
}

async fn web_apps_register_one_https_or_loopback_callback(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    let registered = create(&mut app, web(&org, "https://app.example.com/callback"))
        .await
        .unwrap();
    assert!(
        registered.require_pkce,
        "PKCE defaults to required for web apps"
    );
    let relaxed = create(
        &mut app,
        CreateAppRegistrationRequest {
            require_pkce: Some(false),
            ..web(&org, "https://legacy.example.com/cb")
        },
    )
    .await
    .unwrap();
    assert!(!relaxed.require_pkce);
    for loopback in [
        "http://127.0.0.1:8080/cb",
        "http://[::1]/cb",
        "http://localhost:3000/cb",
    ] {
        create(&mut app, web(&org, loopback)).await.unwrap();
    }
    for bad in [
        "http://app.example.com/cb",
        "https://app.example.com/cb#frag",
        "https://*.example.com/cb",
        "https://app.example.com/*",
        "myapp://cb",
        "",
    ] {
        assert_invalid(create(&mut app, web(&org, bad)).await, "callback_url");
    }
    assert_invalid(
        create(
            &mut app,
            CreateAppRegistrationRequest {
                bundle_id: "com.x.y".into(),
                ..web(&org, "https://z.example.com/cb")
            },
        )
        .await,
        "bundle_id",
    );
}

/// RFC 8252 §8.3: `localhost` may resolve elsewhere, so it is matched exactly,
/// port included; only loopback IP literals get the port wildcard of §7.3. And a
/// loopback app is a public client: it must use PKCE (RFC 9700).
async fn localhost_callbacks_match_exactly_and_loopback_callbacks_require_pkce(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    let local = create(&mut app, web(&org, "http://localhost:8080/cb"))
        .await
        .unwrap();
    create(&mut app, web(&org, "http://127.0.0.1:8080/cb"))
        .await
        .unwrap();
    assert_eq!(
        check(&mut app, &org.client_id, "http://localhost:8080/cb")
            .await
            .app_registration_id,
        local.id
    );
    assert!(
        !check(&mut app, &org.client_id, "http://localhost:9090/cb")
            .await
            .allowed,
        "localhost gets no port wildcard"
    );
    assert!(
        check(&mut app, &org.client_id, "http://127.0.0.1:9090/cb")
            .await
            .allowed,
        "a loopback IP literal does"
    );
    for loopback in ["http://[::1]:8080/cb", "http://localhost:4000/cb"] {
        assert_invalid(
            create(
                &mut app,
                CreateAppRegistrationRequest {
                    require_pkce: Some(false),
                    ..web(&org, loopback)
                },
            )
            .await,
            "require_pkce",
        );
    }
    // Nor can an update turn PKCE off on a loopback callback.
    let mut patch = local.clone();
    patch.require_pkce = false;
    assert_invalid(
        app.apps
            .update_app_registration(UpdateAppRegistrationRequest {
                app_registration: Some(patch),
                update_mask: Some(FieldMask {
                    paths: vec!["require_pkce".into()],
                }),
            })
            .await,
        "app_registration.require_pkce",
    );
}

/// Control characters, spaces and dot-segments in any URL a gateway may copy
/// into a Location header are refused naming the field, never stored.
async fn urls_with_control_characters_spaces_or_dot_segments_are_refused(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let bad_tails = [
        "/a\r\nSet-Cookie: x=1",
        "/a\tb",
        "/a\0",
        "/a b",
        "/a/../cb",
        "/./cb",
    ];
    for tail in bad_tails {
        assert_invalid(
            app.orgs
                .create_org(CreateOrgRequest {
                    name: "Acme".into(),
                    main_website: format!("https://acme.example{tail}"),
                    custom_domain: String::new(),
                })
                .await,
            "main_website",
        );
    }
    let org = org(&app).await;
    for tail in bad_tails {
        assert_invalid(
            create(
                &mut app,
                web(&org, &format!("https://app.example.com{tail}")),
            )
            .await,
            "callback_url",
        );
        assert_invalid(
            create(
                &mut app,
                ios(
                    &org,
                    "com.example.app",
                    &format!("https://links.example.net{tail}"),
                ),
            )
            .await,
            "app_link",
        );
        let mut patch = org.clone();
        patch.main_website = format!("https://acme.example{tail}");
        assert_invalid(
            app.orgs
                .update_org(UpdateOrgRequest {
                    org: Some(patch),
                    update_mask: Some(FieldMask {
                        paths: vec!["main_website".into()],
                    }),
                })
                .await,
            "org.main_website",
        );
    }
    assert!(
        app.apps
            .list_app_registrations(ListAppRegistrationsRequest {
                org_id: org.id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .app_registrations
            .is_empty(),
        "nothing was stored"
    );
    let web_app = create(&mut app, web(&org, "https://app.example.com/cb"))
        .await
        .unwrap();
    assert!(
        !check(&mut app, &org.client_id, "https://app.example.com/cb\r\n")
            .await
            .allowed
    );
    // Updates are held to the same rules: the callback, and the name.
    let mask = |path: &str| {
        Some(FieldMask {
            paths: vec![path.into()],
        })
    };
    for tail in bad_tails {
        assert_invalid(
            app.apps
                .update_app_registration(UpdateAppRegistrationRequest {
                    app_registration: Some(AppRegistration {
                        id: web_app.id.clone(),
                        callback_url: format!("https://app.example.com{tail}"),
                        ..Default::default()
                    }),
                    update_mask: mask("callback_url"),
                })
                .await,
            "app_registration.callback_url",
        );
    }
    for name in ["Web\r\napp", "Web\0app", "Web\u{7}app"] {
        assert_invalid(
            app.apps
                .update_app_registration(UpdateAppRegistrationRequest {
                    app_registration: Some(AppRegistration {
                        id: web_app.id.clone(),
                        name: name.into(),
                        ..Default::default()
                    }),
                    update_mask: mask("name"),
                })
                .await,
            "app_registration.name",
        );
    }
    // A login domain is a header value too: control characters are refused on
    // create and on update, naming the field.
    for domain in [
        "login.acme.example\r\n",
        "login\0.acme.example",
        "login.acme\t.example",
    ] {
        assert_invalid(
            app.orgs
                .create_org(CreateOrgRequest {
                    name: "Acme".into(),
                    main_website: "https://acme.example".into(),
                    custom_domain: domain.into(),
                })
                .await,
            "custom_domain",
        );
        let mut patch = org.clone();
        patch.custom_domain = domain.into();
        assert_invalid(
            app.orgs
                .update_org(UpdateOrgRequest {
                    org: Some(patch),
                    update_mask: mask("custom_domain"),
                })
                .await,
            "org.custom_domain",
        );
    }
    let stored = app
        .apps
        .get_app_registration(credd::pb::GetAppRegistrationRequest {
            id: web_app.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.callback_url, "https://app.example.com/cb");
    assert_eq!(stored.name, web_app.name, "nothing was stored");
}

async fn duplicates_within_an_org_already_exist(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    // Each first registration goes through; the same app again, under another
    // link, is refused.
    let pairs = [
        (
            ios(&org, "com.example.app", "https://app.example.net/a"),
            ios(&org, "com.example.app", "https://app.example.net/b"),
        ),
        // The same identifier on another platform is another app.
        (
            android(&org, "com.example.app", "https://app.example.net/a"),
            android(&org, "com.example.app", "https://app.example.net/c"),
        ),
        (
            web(&org, "https://app.example.com/cb"),
            web(&org, "https://app.example.com/cb"),
        ),
    ];
    for (first, again) in pairs {
        create(&mut app, first).await.unwrap();
        assert_code(create(&mut app, again).await, Code::AlreadyExists);
    }
    // Another org may register the same.
    let other = self::org(&app).await;
    create(
        &mut app,
        ios(&other, "com.example.app", "https://app.example.net/a"),
    )
    .await
    .unwrap();
}

async fn the_gateway_redirect_check_is_exact(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    let site = create(
        &mut app,
        web(&org, "https://app.example.com/cb?tenant=a&x=1"),
    )
    .await
    .unwrap();
    let phone = create(
        &mut app,
        ios(&org, "com.example.app", "https://links.example.net/auth"),
    )
    .await
    .unwrap();
    let dev = create(&mut app, web(&org, "http://127.0.0.1:8080/cb"))
        .await
        .unwrap();

    let ok = check(
        &mut app,
        &org.client_id,
        "https://app.example.com/cb?tenant=a&x=1",
    )
    .await;
    assert!(ok.allowed);
    assert_eq!(ok.app_registration_id, site.id);
    assert!(ok.pkce_required);
    let ok = check(&mut app, &org.client_id, "https://links.example.net/auth").await;
    assert_eq!(
        (
            ok.allowed,
            ok.app_registration_id.as_str(),
            ok.pkce_required
        ),
        (true, phone.id.as_str(), true)
    );
    // Loopback: any port (RFC 8252 7.3), nothing else relaxed.
    let ok = check(&mut app, &org.client_id, "http://127.0.0.1:53211/cb").await;
    assert_eq!(
        (
            ok.allowed,
            ok.app_registration_id.as_str(),
            ok.pkce_required
        ),
        (true, dev.id.as_str(), true)
    );

    for refused in [
        "https://app.example.com/cb",
        "https://app.example.com/cb?tenant=a&x=1&evil=1",
        "https://app.example.com/cb?x=1&tenant=a",
        "https://APP.example.com/cb?tenant=a&x=1",
        "https://app.example.com/cb?tenant=a&x=1#f",
        "https://links.example.net/auth/more",
        "https://links.example.net/aut",
        "https://links.example.net/auth/",
        "http://127.0.0.1:53211/cb/extra",
        "http://localhost:8080/cb",
        "",
    ] {
        let answer = check(&mut app, &org.client_id, refused).await;
        assert!(!answer.allowed, "{refused} must be refused");
        assert!(answer.app_registration_id.is_empty());
    }
    assert!(
        !check(
            &mut app,
            &"0".repeat(32),
            "https://app.example.com/cb?tenant=a&x=1"
        )
        .await
        .allowed
    );
    assert!(
        !check(
            &mut app,
            "nonsense",
            "https://app.example.com/cb?tenant=a&x=1"
        )
        .await
        .allowed
    );
    let other = self::org(&app).await;
    assert!(
        !check(&mut app, &other.client_id, "https://links.example.net/auth")
            .await
            .allowed,
        "another org's app"
    );

    // Deleting the org removes its registrations; its client is refused.
    app.delete_org(&org.id).await;
    assert!(
        !check(&mut app, &org.client_id, "https://links.example.net/auth")
            .await
            .allowed
    );
    assert_code(
        app.apps
            .get_app_registration(GetAppRegistrationRequest { id: phone.id })
            .await,
        Code::NotFound,
    );
}

async fn registrations_are_read_listed_updated_and_deleted(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            create(
                &mut app,
                web(&org, &format!("https://app{i}.example.com/cb")),
            )
            .await
            .unwrap()
            .id,
        );
    }
    let (seen, pages) = collect_pages(async |page_token| {
        let page = app
            .apps
            .clone()
            .list_app_registrations(ListAppRegistrationsRequest {
                org_id: org.id.clone(),
                page_size: 3,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        let ids = page.app_registrations.into_iter().map(|a| a.id).collect();
        (ids, page.next_page_token)
    })
    .await;
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    assert_invalid(
        app.apps
            .list_app_registrations(ListAppRegistrationsRequest {
                org_id: org.id.clone(),
                page_size: 3,
                page_token: "bogus".into(),
            })
            .await,
        "page_token",
    );

    let phone = create(
        &mut app,
        ios(&org, "com.example.app", "https://links.example.net/auth"),
    )
    .await
    .unwrap();
    let got = app
        .apps
        .get_app_registration(GetAppRegistrationRequest {
            id: phone.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, phone);

    let mask = |paths: &[&str]| {
        Some(FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        })
    };
    let renamed = app
        .apps
        .update_app_registration(UpdateAppRegistrationRequest {
            app_registration: Some(AppRegistration {
                id: phone.id.clone(),
                name: "Renamed".into(),
                app_link: "https://links.example.net/v2".into(),
                bundle_id: "ignored.because.not.masked".into(),
                ..Default::default()
            }),
            update_mask: mask(&["name", "app_link"]),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.name, "Renamed");
    assert_eq!(renamed.app_link, "https://links.example.net/v2");
    assert_eq!(renamed.bundle_id, "com.example.app");
    assert!(
        check(&mut app, &org.client_id, "https://links.example.net/v2")
            .await
            .allowed
    );
    assert!(
        !check(&mut app, &org.client_id, "https://links.example.net/auth")
            .await
            .allowed
    );

    let update = |paths: &[&str], patch: AppRegistration| UpdateAppRegistrationRequest {
        app_registration: Some(AppRegistration {
            id: phone.id.clone(),
            ..patch
        }),
        update_mask: mask(paths),
    };
    assert_invalid(
        app.apps
            .update_app_registration(update(
                &["platform"],
                AppRegistration {
                    platform: Platform::Web.into(),
                    ..Default::default()
                },
            ))
            .await,
        "update_mask",
    );
    assert_invalid(
        app.apps
            .update_app_registration(update(
                &["app_link"],
                AppRegistration {
                    app_link: "https://example.com/app".into(),
                    ..Default::default()
                },
            ))
            .await,
        "app_registration.app_link",
    );
    assert_invalid(
        app.apps
            .update_app_registration(update(
                &["callback_url"],
                AppRegistration {
                    callback_url: "https://x.example.com/cb".into(),
                    ..Default::default()
                },
            ))
            .await,
        "app_registration.callback_url",
    );
    assert_invalid(
        app.apps
            .update_app_registration(update(&[], AppRegistration::default()))
            .await,
        "update_mask",
    );

    app.apps
        .delete_app_registration(DeleteAppRegistrationRequest {
            id: phone.id.clone(),
        })
        .await
        .unwrap();
    assert_code(
        app.apps
            .get_app_registration(GetAppRegistrationRequest {
                id: phone.id.clone(),
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        app.apps
            .delete_app_registration(DeleteAppRegistrationRequest { id: phone.id })
            .await,
        Code::NotFound,
    );
    assert!(
        !check(&mut app, &org.client_id, "https://links.example.net/v2")
            .await
            .allowed
    );
}

async fn association_files_are_rendered_for_each_link_host(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let org = org(&app).await;
    create(
        &mut app,
        ios(&org, "com.example.app", "https://links.example.net/auth"),
    )
    .await
    .unwrap();
    create(
        &mut app,
        ios(&org, "com.example.pro", "https://links.example.net/pro"),
    )
    .await
    .unwrap();
    create(
        &mut app,
        android(&org, "com.example.app", "https://links.example.net/auth"),
    )
    .await
    .unwrap();
    let lacking = create(
        &mut app,
        CreateAppRegistrationRequest {
            apple_team_id: String::new(),
            ..ios(&org, "com.example.lite", "https://lite.example.net/a")
        },
    )
    .await
    .unwrap();
    create(&mut app, web(&org, "https://app.example.com/cb"))
        .await
        .unwrap();

    let rendered = app
        .apps
        .render_association_files(RenderAssociationFilesRequest {
            org_id: org.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rendered.files.len(), 2, "{:?}", rendered.files);
    assert_eq!(rendered.problems.len(), 1);
    assert!(
        rendered.problems[0].contains(&lacking.id)
            && rendered.problems[0].contains("apple_team_id")
    );

    let aasa = rendered
        .files
        .iter()
        .find(|f| f.path == "/.well-known/apple-app-site-association")
        .unwrap();
    assert_eq!(aasa.host, "links.example.net");
    let json: serde_json::Value = serde_json::from_str(&aasa.content).unwrap();
    let details = json["applinks"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0]["appIDs"][0], "ABCDE12345.com.example.app");
    assert_eq!(details[0]["components"][0]["/"], "/auth");
    assert_eq!(details[1]["appIDs"][0], "ABCDE12345.com.example.pro");

    let links = rendered
        .files
        .iter()
        .find(|f| f.path == "/.well-known/assetlinks.json")
        .unwrap();
    assert_eq!(links.host, "links.example.net");
    let json: serde_json::Value = serde_json::from_str(&links.content).unwrap();
    let statement = &json.as_array().unwrap()[0];
    assert_eq!(
        statement["relation"][0],
        "delegate_permission/common.handle_all_urls"
    );
    assert_eq!(statement["target"]["namespace"], "android_app");
    assert_eq!(statement["target"]["package_name"], "com.example.app");
    assert_eq!(
        statement["target"]["sha256_cert_fingerprints"][0],
        fingerprint("AB")
    );

    assert_code(
        app.apps
            .render_association_files(RenderAssociationFilesRequest {
                org_id: uuid::Uuid::now_v7().to_string(),
            })
            .await,
        Code::NotFound,
    );
}

both_backends!(
    localhost_callbacks_match_exactly_and_loopback_callbacks_require_pkce,
    urls_with_control_characters_spaces_or_dot_segments_are_refused,
    native_apps_need_an_https_link_off_the_main_website_host,
    web_apps_register_one_https_or_loopback_callback,
    duplicates_within_an_org_already_exist,
    the_gateway_redirect_check_is_exact,
    registrations_are_read_listed_updated_and_deleted,
    association_files_are_rendered_for_each_link_host,
);

through_pgbouncer!(
    registrations_are_read_listed_updated_and_deleted: false,
);
