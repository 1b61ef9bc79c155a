//! The dashboard's files (embedded `web/dist`): the shell for every path
//! under `/dashboard`, hashed assets with their types and a year of cache,
//! the CSP, and JSON 404s everywhere else. Plus the plan-change preview the
//! dashboard shows before a change, and the per-app documents and
//! playground tokens of its Documents page.

use crate::helpers::*;
use crate::tenants::decode_with_jwks;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use serde_json::{Value, json};

/// The `src`/`href` of every `/dashboard/assets/…` file the shell names.
fn asset_urls(html: &str) -> Vec<String> {
    html.split('"').filter(|s| s.starts_with("/dashboard/assets/")).map(str::to_owned).collect()
}

#[tokio::test]
async fn the_shell_answers_every_dashboard_path_under_the_csp() {
    let app = spawn_app().await;
    let shell = app.get("/dashboard").send().await.unwrap();
    assert_eq!(shell.status(), 200);
    assert_eq!(shell.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(shell.headers()[CACHE_CONTROL], "no-cache");
    let csp = shell.headers()[CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
    assert_eq!(csp, server::headers::DASHBOARD_CSP);
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = shell.text().await.unwrap();
    assert!(html.contains("<div id=\"app\">"), "{html}");
    // No inline script, style or handler: each would be blocked by the CSP.
    for tag in html.split("<script").skip(1) {
        let head = tag.split('>').next().unwrap();
        assert!(head.contains("src=\"/dashboard/assets/"), "inline script in the shell: <script{head}>");
    }
    assert!(!html.contains("<style") && !html.contains(" style=") && !html.contains(" onclick="), "{html}");

    // The app's own routes and the mailed links get the same shell.
    for path in [
        "/dashboard/",
        "/dashboard/apps",
        "/dashboard/apps/app_123/settings",
        "/dashboard/accept-invite",
        "/dashboard/reset-password",
    ] {
        let r = app.get(path).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8", "{path}");
        assert!(r.headers().contains_key(CONTENT_SECURITY_POLICY), "{path}");
        assert_eq!(r.text().await.unwrap(), html, "{path}");
    }
    assert_eq!(app.client.head(format!("{}/dashboard/members", app.url)).send().await.unwrap().status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn hashed_assets_have_their_types_and_are_immutable() {
    let app = spawn_app().await;
    let html = app.get("/dashboard").send().await.unwrap().text().await.unwrap();
    let urls = asset_urls(&html);
    assert!(urls.iter().any(|u| u.ends_with(".js")) && urls.iter().any(|u| u.ends_with(".css")), "{urls:?}");
    for url in &urls {
        let r = app.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let want = if url.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
        assert_eq!(r.headers()[CONTENT_TYPE], want, "{url}");
        assert_eq!(r.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable", "{url}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    let icon = app.get("/dashboard/favicon.svg").send().await.unwrap();
    assert_eq!(icon.headers()[CONTENT_TYPE], "image/svg+xml");
    assert_eq!(icon.headers()[CACHE_CONTROL], "no-cache");
    app.stop().await;
}

#[tokio::test]
async fn missing_assets_and_other_paths_are_json_404s() {
    let app = spawn_app().await;
    // A missing hashed file is a 404, never the HTML shell parsed as script.
    assert_error(app.get("/dashboard/assets/index-gone.js").send().await.unwrap(), 404, "not_found").await;
    for path in ["/dashboards", "/dashboardx/apps", "/nope", "/v1/dashboard"] {
        assert_error(app.get(path).send().await.unwrap(), 404, "not_found").await;
    }
    // Outside `/dashboard`, no dashboard CSP.
    let r = app.get("/nope").send().await.unwrap();
    assert!(!r.headers().contains_key(CONTENT_SECURITY_POLICY));
    // Only reads: a POST is the JSON 405.
    assert_error(app.post("/dashboard/apps").send().await.unwrap(), 405, "method_not_allowed").await;
    // Traversal (encoded, so no client normalises it away) stays inside
    // the build: a refused asset, or the shell; never a file of the repo.
    assert_error(app.get("/dashboard/assets/..%2F..%2F..%2FCargo.toml").send().await.unwrap(), 404, "not_found").await;
    let r = app.get("/dashboard/x%2F..%2F..%2F..%2FCargo.toml").send().await.unwrap();
    assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(r.text().await.unwrap().contains("<div id=\"app\">"));
    app.stop().await;
}

#[tokio::test]
async fn a_plan_change_preview_matches_the_change_and_changes_nothing() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "free", &[]).await;
    let (tid, aid) = (owner.tenant_id.clone(), creds.id.clone());
    let preview_path = format!("/v1/tenants/{tid}/apps/{aid}/plan/preview");
    // Ten days into the period (a fresh session: the first one has expired).
    app.clock.advance(time::Duration::days(10));
    let session = app.login(&owner.email, PASSWORD).await;
    let owner = Owner { session, ..owner };
    let r = app.post(&preview_path).bearer_auth(&owner.session).json(&json!({"plan": "pro"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let preview: Value = r.json().await.unwrap();
    assert_eq!(preview["from"], "free");
    assert_eq!(preview["plan"], "pro");
    assert!(preview["total_cents"].as_i64().unwrap() > 0, "{preview}");
    // Nothing changed: same plan, no invoice of a change.
    let got: Value = app
        .get(&format!("/v1/tenants/{tid}/apps/{aid}"))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["plan"], "free");
    let invoices = || async {
        let r = app
            .get(&format!("/v1/tenants/{tid}/apps/{aid}/invoices"))
            .bearer_auth(&owner.session)
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["items"].as_array().unwrap().len()
    };
    let before = invoices().await;

    // The change at the same instant invoices exactly the preview.
    let change: Value = app
        .post(&format!("/v1/tenants/{tid}/apps/{aid}/plan"))
        .bearer_auth(&owner.session)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(change["lines"], preview["lines"]);
    assert_eq!(change["total_cents"], preview["total_cents"]);
    assert_eq!(invoices().await, before + 1);

    // Refusals: the same plan, an unknown plan, bad JSON, no session, a viewer
    // may look (billing: read), another tenant's app is not there.
    let post = |body: Value, session: &str| app.post(&preview_path).bearer_auth(session).json(&body).send();
    assert_error(post(json!({"plan": "pro"}), &owner.session).await.unwrap(), 409, "plan_unchanged").await;
    assert_eq!(post(json!({"plan": "gold"}), &owner.session).await.unwrap().status(), 400);
    assert_error(post(json!({"plan": 3}), &owner.session).await.unwrap(), 400, "invalid_request").await;
    assert_eq!(app.post(&preview_path).json(&json!({"plan": "free"})).send().await.unwrap().status(), 401);
    let (viewer, _) = add_member(&app, &tid, "viewer@example.com", "viewer").await;
    assert_eq!(post(json!({"plan": "starter"}), &viewer).await.unwrap().status(), 200);
    // A role without billing: read may not preview.
    let role = json!({"name": "docs-only", "permissions": [{"resource": "documents", "action": "read"}]});
    let r = app.post(&format!("/v1/tenants/{tid}/roles")).bearer_auth(&owner.session).json(&role).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let (docs_only, _) = add_member(&app, &tid, "docs@example.com", "docs-only").await;
    assert_error(post(json!({"plan": "starter"}), &docs_only).await.unwrap(), 403, "forbidden").await;
    let other = app.create_user("other@example.com").await;
    let r = app.post("/v1/tenants").bearer_auth(&other).json(&json!({"name": "Other"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert_error(post(json!({"plan": "starter"}), &other).await.unwrap(), 404, "not_found").await;
    app.stop().await;
}

fn an_update(text: &str) -> Vec<u8> {
    use yrs::{Text, Transact};
    let doc = yrs::Doc::new();
    let t = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

#[tokio::test]
async fn members_list_and_delete_documents_and_mint_playground_tokens() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let (tid, aid) = (&owner.tenant_id, &creds.id);
    for doc in ["notes", "team%2Fplan"] {
        let r = app
            .post(&format!("/v1/docs/{doc}/update"))
            .bearer_auth(&m2m)
            .header("content-type", "application/octet-stream")
            .body(an_update("hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let docs_path = format!("/v1/tenants/{tid}/apps/{aid}/docs");
    let list = |session: &str| app.get(&docs_path).bearer_auth(session).send();
    let body: Value = list(&owner.session).await.unwrap().json().await.unwrap();
    let names: Vec<&str> = body["items"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{body}");
    assert!(names.contains(&"notes") && names.contains(&"team/plan"), "{body}");
    assert!(body["items"][0]["size_bytes"].as_i64().unwrap() > 0);
    assert!(body["items"][0]["updated_at"].is_string() && body["items"][0]["connections"].is_number());

    // A playground token: a client token of the app, for the member.
    let mint_path = format!("/v1/tenants/{tid}/apps/{aid}/client-tokens");
    let r = app.post(&mint_path).bearer_auth(&owner.session).json(&json!({"docs": ["notes"]})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let minted: Value = r.json().await.unwrap();
    assert!(minted["expires_in"].as_i64().unwrap() <= 900);
    let token = minted["token"].as_str().unwrap();
    let discovery = app.get("/v1/discovery/notes").bearer_auth(token).send().await.unwrap();
    assert_eq!(discovery.status(), 200, "the minted token works on the data plane");
    let other_doc = app.get("/v1/discovery/secret").bearer_auth(token).send().await.unwrap();
    assert_eq!(other_doc.status(), 403, "and only for the documents it names");
    // Signed with the tenant's key like any other token of the app.
    let claims = decode_with_jwks(&app, tid, token).await.unwrap();
    assert_eq!(claims["sub"], format!("dashboard:{}", owner.user_id));
    assert_eq!(claims["name"], owner.email);
    assert_eq!(claims["app"], aid.as_str());
    assert_eq!(claims["origins"], json!([]), "an app open to any origin stays open");
    // An app with allowed domains: the token may also connect from the
    // dashboard's own origin (the playground), and nothing else new.
    let fenced = app.create_app(&owner, "starter", &["localhost:3000"]).await;
    let r = app
        .post(&format!("/v1/tenants/{tid}/apps/{}/client-tokens", fenced.id))
        .bearer_auth(&owner.session)
        .json(&json!({"docs": ["notes"]}))
        .send()
        .await
        .unwrap();
    let fenced_token: Value = r.json().await.unwrap();
    let claims = decode_with_jwks(&app, tid, fenced_token["token"].as_str().unwrap()).await.unwrap();
    let own = app.url.trim_start_matches("http://");
    assert_eq!(claims["origins"], json!(["localhost:3000", own]));
    assert_error(
        app.post(&mint_path).bearer_auth(&owner.session).json(&json!({"docs": []})).send().await.unwrap(),
        400,
        "invalid_docs",
    )
    .await;

    // A viewer reads the list but may neither mint nor delete.
    let (viewer, _) = add_member(&app, tid, "viewer@example.com", "viewer").await;
    assert_eq!(list(&viewer).await.unwrap().status(), 200);
    let r = app.post(&mint_path).bearer_auth(&viewer).json(&json!({"docs": ["notes"]})).send().await.unwrap();
    assert_error(r, 403, "forbidden").await;
    let one = format!("{docs_path}/team%2Fplan");
    assert_error(app.delete(&one).bearer_auth(&viewer).send().await.unwrap(), 403, "forbidden").await;

    // Another tenant's member does not see it; an app token is not a session.
    let other = app.create_user("other@example.com").await;
    assert_error(list(&other).await.unwrap(), 404, "not_found").await;
    assert_error(app.get(&docs_path).bearer_auth(&m2m).send().await.unwrap(), 403, "forbidden").await;

    // Delete: gone from the list and from REST; twice is a 404.
    assert_eq!(app.delete(&one).bearer_auth(&owner.session).send().await.unwrap().status(), 204);
    let body: Value = list(&owner.session).await.unwrap().json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(app.get("/v1/docs/team%2Fplan").bearer_auth(&m2m).send().await.unwrap().status(), 404);
    assert_error(app.delete(&one).bearer_auth(&owner.session).send().await.unwrap(), 404, "not_found").await;
    assert_eq!(
        app.delete(&format!("{docs_path}/%01bad")).bearer_auth(&owner.session).send().await.unwrap().status(),
        400
    );
    app.stop().await;
}

/// The dashboard shows only the buttons the role allows: `/v1/me` says
/// what each tenant's role grants, custom roles included.
#[tokio::test]
async fn me_lists_what_each_role_grants() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let me: Value = app.get("/v1/me").bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenants"][0]["permissions"].as_array().unwrap().len(), 44, "{me}");

    let tid = &owner.tenant_id;
    let role = json!({"name": "support", "permissions": [
        {"resource": "documents", "action": "update"}, {"resource": "apps", "action": "read"}]});
    let r = app.post(&format!("/v1/tenants/{tid}/roles")).bearer_auth(&owner.session).json(&role).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let (support, _) = add_member(&app, tid, "support@example.com", "support").await;
    let me: Value = app.get("/v1/me").bearer_auth(&support).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenants"][0]["role"], "support");
    // In the canonical order, whatever order they were given in.
    assert_eq!(
        me["tenants"][0]["permissions"],
        json!([{"resource": "apps", "action": "read"}, {"resource": "documents", "action": "update"}])
    );

    let (viewer, _) = add_member(&app, tid, "viewer@example.com", "viewer").await;
    let me: Value = app.get("/v1/me").bearer_auth(&viewer).send().await.unwrap().json().await.unwrap();
    let perms = me["tenants"][0]["permissions"].as_array().unwrap();
    assert_eq!(perms.len(), 11);
    assert!(perms.iter().all(|p| p["action"] == "read"), "{me}");
    app.stop().await;
}
