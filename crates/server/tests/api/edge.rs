//! The HTTP edge: document names that are not UTF-8, the security headers
//! on every answer, and CORS for the configured origins only.

use crate::helpers::*;
use crate::yclient::sync_url;
use reqwest::Response;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

#[tokio::test]
async fn a_document_name_that_is_not_utf8_is_an_invalid_document_name() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    for (method, path) in [
        ("GET", "/v1/docs/%FF%FE"),
        ("POST", "/v1/docs/%FF%FE/update"),
        ("DELETE", "/v1/docs/%FF%FE"),
        ("GET", "/v1/discovery/%FF%FE"),
        ("GET", "/v1/docs/ok%C3"),
    ] {
        let r = app
            .client
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{path}", app.url))
            .bearer_auth(&m2m)
            .header("content-type", "application/octet-stream")
            .body(vec![0u8, 0])
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "invalid_document_name").await;
    }
    // The sync route, as a real upgrade (single segment and the rest of the path).
    for doc in ["%FF%FE", "a/%FF/b"] {
        // Percent-escapes as written: `sync_url` would escape the `%`.
        let url = sync_url(&app.url, "x", &m2m).replacen("/v1/sync/x?", &format!("/v1/sync/{doc}?"), 1);
        let err = tokio_tungstenite::connect_async(url).await.unwrap_err();
        let tokio_tungstenite::tungstenite::Error::Http(resp) = err else { panic!("{err:?}") };
        assert_eq!(resp.status(), 400);
        let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
        assert_eq!(body["error"], "invalid_document_name", "{body}");
    }
    // Other path parameters keep `invalid_path`.
    let r = app.get(&format!("/v1/tenants/{}/apps/%FF", owner.tenant_id)).bearer_auth(&owner.session).send();
    assert!(matches!(r.await.unwrap().status().as_u16(), 400 | 404));
}

#[tokio::test]
async fn a_tenant_segment_that_is_not_utf8_is_a_404_like_any_bad_id() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    for path in ["/v1/tenants/%FF%FE/apps", "/v1/tenants/%FF%FE", "/v1/tenants/%FF/apps/x/webhooks"] {
        let r = app.get(path).bearer_auth(&owner.session).send().await.unwrap();
        assert_error(r, 404, "not_found").await;
        // Authentication still comes first.
        assert_eq!(app.get(path).send().await.unwrap().status(), 401);
    }
    let path = format!("/v1/tenants/{}/apps/%FF%FE", owner.tenant_id);
    let r = app.get(&path).bearer_auth(&owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
}

fn assert_base_headers(h: &HeaderMap, what: &str) {
    assert_eq!(h.get("x-content-type-options").map(|v| v.to_str().unwrap()), Some("nosniff"), "{what}");
    assert_eq!(h.get("referrer-policy").map(|v| v.to_str().unwrap()), Some("no-referrer"), "{what}");
    assert!(h.get("strict-transport-security").is_none(), "{what}: HSTS without TLS");
}

fn assert_no_store(r: &Response, what: &str) {
    assert!(r.status().is_success(), "{what}: {}", r.status());
    assert_base_headers(r.headers(), what);
    assert_eq!(r.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{what}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let big = vec![b' '; 2 * 1024 * 1024];
    let requests = [
        app.get("/healthz"),
        app.get("/metrics"),
        app.get("/openapi.json"),
        app.get("/v1/plans"),
        app.get("/no/such/path"),
        app.delete("/v1/plans"),
        app.get("/v1/me"),
        app.get(&format!("/{}/.well-known/jwks", owner.tenant_id)),
        // On a connection of its own: the server answers 413 before reading
        // it all and closes, which would break a pooled connection.
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
            .post(format!("{}/v1/tenants", app.url))
            .bearer_auth(&owner.session)
            .header("content-type", "application/json")
            .body(big),
        app.post("/oauth/token").form(&[("grant_type", "nope")]),
    ];
    for req in requests {
        let r = req.send().await.unwrap();
        let what = format!("{} {}", r.url(), r.status());
        assert_base_headers(r.headers(), &what);
        assert!(r.headers().get("content-security-policy").is_none(), "{what}");
    }
    // A cacheable public document keeps its own Cache-Control.
    let r = app.get(&format!("/{}/.well-known/jwks", owner.tenant_id)).send().await.unwrap();
    assert_eq!(r.headers()["cache-control"], "public, max-age=300");
    let r = app.get(&format!("/.well-known/oauth-authorization-server/{}", owner.tenant_id)).send().await.unwrap();
    assert_ne!(r.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn the_dashboard_gets_a_csp_without_inline_scripts_that_forbids_framing() {
    let app = spawn_app().await;
    for path in ["/dashboard", "/dashboard/", "/dashboard/apps/x"] {
        let r = app.get(path).send().await.unwrap();
        assert_base_headers(r.headers(), path);
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    }
    let r = app.get("/dashboards").send().await.unwrap();
    assert!(r.headers().get("content-security-policy").is_none());
}

#[tokio::test]
async fn every_answer_with_a_secret_or_a_token_is_no_store() {
    let app = spawn_app().await;
    let email = "nostore@example.com";
    let r = app.post("/v1/setup").json(&json!({"email": email, "password": PASSWORD, "tenant_name": "T"})).send();
    let r = r.await.unwrap();
    assert_no_store(&r, "setup");
    let tid = r.json::<Value>().await.unwrap()["tenant_id"].as_str().unwrap().to_owned();
    let r = app.post("/v1/auth/login").json(&json!({"email": email, "password": PASSWORD})).send().await.unwrap();
    assert_no_store(&r, "login");
    let s = r.json::<Value>().await.unwrap()["session_token"].as_str().unwrap().to_owned();
    let body = json!({"name": "a", "region": "eu-central-1", "plan": "starter"});
    let r = app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&s).json(&body).send().await.unwrap();
    assert_no_store(&r, "app create");
    let created: Value = r.json().await.unwrap();
    let aid = created["id"].as_str().unwrap();
    let r = app.post(&format!("/v1/tenants/{tid}/apps/{aid}/secret/rotate")).bearer_auth(&s).send().await.unwrap();
    assert_no_store(&r, "secret rotate");
    let secret = r.json::<Value>().await.unwrap()["client_secret"].as_str().unwrap().to_owned();
    let client_id = created["client_id"].as_str().unwrap();
    let r = app
        .post("/oauth/token")
        .basic_auth(client_id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_no_store(&r, "token");
    let token: Value = r.json().await.unwrap();
    let r = app
        .post("/oauth/token")
        .basic_auth(client_id, Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", token["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_no_store(&r, "refresh");
    let r = app.post("/oauth/token").form(&[("grant_type", "password"), ("username", email), ("password", PASSWORD)]);
    assert_no_store(&r.send().await.unwrap(), "password grant");
    let m2m = token["access_token"].as_str().unwrap();
    let r = app.post("/v1/client-tokens").bearer_auth(m2m).json(&json!({"docs": ["d"]})).send().await.unwrap();
    assert_no_store(&r, "client token");
    let r = app
        .post(&format!("/v1/tenants/{tid}/apps/{aid}/webhooks"))
        .bearer_auth(&s)
        .json(&json!({"url": "https://93.184.216.34/hook", "events": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_no_store(&r, "webhook create");
    let wid = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tenants/{tid}/apps/{aid}/webhooks/{wid}/secret/rotate");
    assert_no_store(&app.post(&path).bearer_auth(&s).send().await.unwrap(), "webhook secret rotate");
    let body = json!({"email": "invitee@example.com", "role": "viewer"});
    let r = app.post(&format!("/v1/tenants/{tid}/invites")).bearer_auth(&s).json(&body).send().await.unwrap();
    assert_no_store(&r, "invite create");
    let invite = app.tokens_mailed_to("invitee@example.com", "inv_", 1).await.remove(0);
    let r = app.post("/v1/invites/accept").json(&json!({"token": invite, "password": PASSWORD})).send().await.unwrap();
    assert_no_store(&r, "invite accept");
    let r = app.post("/v1/me/mfa/setup").bearer_auth(&s).send().await.unwrap();
    assert_no_store(&r, "mfa setup");
    let seed = r.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    let r = app.post("/v1/me/mfa/verify").bearer_auth(&s).json(&json!({"code": totp_now(&app, &seed)})).send();
    assert_no_store(&r.await.unwrap(), "mfa verify");
    assert_no_store(&app.get("/v1/me").bearer_auth(&s).send().await.unwrap(), "me");
}

async fn cors_app() -> TestApp {
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.cors_origins = vec!["https://app.example".into(), "http://localhost:3000".into()];
    let mut app = spawn_with(config).await;
    app.owned_dir = Some(dir);
    app
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys().map(|k| k.as_str().to_owned()).filter(|k| k.starts_with("access-control-")).collect()
}

#[tokio::test]
async fn cors_answers_a_listed_origin_on_the_api_and_discovery() {
    let app = cors_app().await;
    let owner = app.setup().await;
    let discovery = format!("/.well-known/oauth-authorization-server/{}", owner.tenant_id);
    let alias = format!("/{}/.well-known/oauth-authorization-server", owner.tenant_id);
    for origin in ["https://app.example", "http://localhost:3000"] {
        for req in [
            app.get("/v1/plans"),
            app.get("/v1/me").bearer_auth(&owner.session),
            app.get("/v1/me"),
            app.post("/oauth/token").form(&[("grant_type", "client_credentials")]),
            app.get(&discovery),
            app.get(&alias),
        ] {
            let r = req.header("origin", origin).send().await.unwrap();
            let what = format!("{origin} {}", r.url());
            let h = r.headers();
            assert_eq!(h["access-control-allow-origin"], origin, "{what}");
            assert!(h.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("origin")), "{what}");
            assert_eq!(
                h["access-control-expose-headers"].to_str().unwrap().to_lowercase(),
                "retry-after,www-authenticate"
            );
            // Bearer tokens, not cookies: no credentials mode.
            assert!(h.get("access-control-allow-credentials").is_none(), "{what}");
            assert_base_headers(h, &what);
        }
    }
    // Outside the API (operations, JWKS): none, even for a listed origin.
    for path in ["/healthz".to_owned(), "/openapi.json".to_owned(), format!("/{}/.well-known/jwks", owner.tenant_id)] {
        let r = app.get(&path).header("origin", "https://app.example").send().await.unwrap();
        assert_eq!(cors_headers(r.headers()), Vec::<String>::new(), "{path}");
    }
}

#[tokio::test]
async fn cors_preflight_from_a_listed_origin_is_204_with_methods_and_headers() {
    let app = cors_app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/tenants", app.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    let methods = h["access-control-allow-methods"].to_str().unwrap().to_owned();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.split(',').any(|x| x.trim() == m), "{methods}");
    }
    let headers = h["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for name in ["authorization", "content-type"] {
        assert!(headers.split(',').any(|x| x.trim() == name), "{headers}");
    }
    assert!(h.get("access-control-max-age").is_some());
    assert!(h.get("access-control-allow-credentials").is_none());
    assert_base_headers(h, "preflight");
}

#[tokio::test]
async fn cors_gives_another_origin_no_cors_headers_at_all() {
    let app = cors_app().await;
    let owner = app.setup().await;
    for origin in
        ["https://evil.example", "https://app.example:8443", "http://app.example", "null", "https://app.example.evil"]
    {
        let r = app.get("/v1/me").bearer_auth(&owner.session).header("origin", origin).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(cors_headers(r.headers()), Vec::<String>::new(), "{origin}");
        // The answer still says it depends on Origin, for caches.
        assert!(r.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("origin")), "{origin}");
        let r = app
            .client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/tenants", app.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 204, "{origin}");
        assert_eq!(cors_headers(r.headers()), Vec::<String>::new(), "{origin}");
    }
}

#[tokio::test]
async fn without_cors_origins_nobody_gets_cors_headers() {
    let app = spawn_app().await;
    let r = app.get("/v1/plans").header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(cors_headers(r.headers()), Vec::<String>::new());
    assert!(r.headers().get("vary").is_none_or(|v| !v.to_str().unwrap().contains("origin")));
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/v1/plans", app.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(cors_headers(r.headers()), Vec::<String>::new());
}
