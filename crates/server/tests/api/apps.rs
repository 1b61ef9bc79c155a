//! Apps: credentials, validation, the one-free rule, secret rotation, plan changes.

use crate::helpers::*;
use crate::tenants::accepted;
use serde_json::{Value, json};
use time::macros::datetime;

#[tokio::test]
async fn create_read_update_delete() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &["MyApp.com", "localhost:3000", "*.Example.org"]).await;
    let b = &creds.body;
    assert_eq!(b["name"], "My app");
    assert_eq!(b["region"], "eu-central-1");
    assert_eq!(b["plan"], "starter");
    assert_eq!(b["environment"], "production");
    assert_eq!(b["allowed_domains"], json!(["myapp.com", "localhost:3000", "*.example.org"]));
    assert!(creds.client_id.starts_with("wsc_"));
    // ≥ 256 bits of URL-safe randomness after the prefix.
    let secret = creds.client_secret.strip_prefix("wscs_").unwrap();
    assert!(secret.len() >= 43 && secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));

    let path = format!("/v1/tenants/{}/apps/{}", owner.tenant_id, creds.id);
    let got: Value = app.get(&path).bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["client_id"], creds.client_id.as_str());
    assert!(got.get("client_secret").is_none(), "the secret is shown only once");

    let r = app
        .patch(&path)
        .bearer_auth(&owner.session)
        .json(&json!({"name": "Renamed", "allowed_domains": ["A.com"], "environment": "staging", "ignored": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched: Value = r.json().await.unwrap();
    assert_eq!((patched["name"].as_str(), patched["environment"].as_str()), (Some("Renamed"), Some("staging")));
    assert_eq!(patched["allowed_domains"], json!(["a.com"]));
    // The token's `origins` claim follows the stored domains.
    let token = app.m2m_token(&creds).await;
    let claims = crate::tenants::decode_with_jwks(&app, &owner.tenant_id, &token).await.unwrap();
    assert_eq!(claims["origins"], json!(["a.com"]));

    assert_eq!(app.delete(&path).bearer_auth(&owner.session).send().await.unwrap().status(), 204);
    assert_error(app.get(&path).bearer_auth(&owner.session).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.delete(&path).bearer_auth(&owner.session).send().await.unwrap(), 404, "not_found").await;
    // A deleted app's credentials and tokens stop working.
    assert!(!accepted(&app, &token).await);
    assert_eq!(app.token_request(&creds, &[("grant_type", "client_credentials")]).await.status(), 401);
    let actions = app.audit_actions(Some(&owner.tenant_id)).await;
    for a in ["app.created", "app.updated", "app.deleted"] {
        assert!(actions.contains(&a.to_owned()), "{a} missing from {actions:?}");
    }
}

#[tokio::test]
async fn create_refuses_bad_input() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let path = format!("/v1/tenants/{}/apps", owner.tenant_id);
    let base = json!({"name": "x", "region": "eu-central-1", "plan": "pro"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("region", json!("mars-1")), "invalid_region"),
        (with("plan", json!("gold")), "invalid_plan"),
        (with("name", json!("")), "invalid_name"),
        (with("allowed_domains", json!(["a.com", "b.com", "c.com", "d.com"])), "too_many_domains"),
        (with("allowed_domains", json!(["https://a.com"])), "invalid_domain"),
        (with("allowed_domains", json!(["a.com/path"])), "invalid_domain"),
        (with("allowed_domains", json!(["a.com:99999"])), "invalid_domain"),
        (with("environment", json!("Prod Env!")), "invalid_environment"),
        (with("allowed_domains", json!("a.com")), "invalid_request"),
    ];
    for (body, code) in cases {
        assert_error(app.post(&path).bearer_auth(&owner.session).json(&body).send().await.unwrap(), 400, code).await;
    }
    let patch = format!("{path}/{}", uuid::Uuid::now_v7());
    assert_error(
        app.patch(&patch).bearer_auth(&owner.session).json(&json!({"name": "y"})).send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    let created = app.create_app(&owner, "pro", &[]).await;
    let patch = format!("{path}/{}", created.id);
    assert_error(
        app.patch(&patch)
            .bearer_auth(&owner.session)
            .json(&json!({"allowed_domains": ["bad domain"]}))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_domain",
    )
    .await;
}

#[tokio::test]
async fn one_free_app_per_tenant_even_under_concurrency() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let path = format!("/v1/tenants/{}/apps", owner.tenant_id);
    let attempts = (0..8).map(|i| {
        app.post(&path)
            .bearer_auth(&owner.session)
            .json(&json!({"name": format!("free {i}"), "region": "aws-us-east-1", "plan": "free"}))
            .send()
    });
    let mut created = 0;
    for r in futures::future::join_all(attempts).await {
        let r = r.unwrap();
        match r.status().as_u16() {
            201 => created += 1,
            409 => assert_eq!(r.json::<Value>().await.unwrap()["error"], "free_plan_limit"),
            s => panic!("unexpected {s}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1);
    // A paid app can move to free only while no other free app exists.
    let paid = app.create_app(&owner, "starter", &[]).await;
    let r = app
        .post(&format!("{path}/{}/plan", paid.id))
        .bearer_auth(&owner.session)
        .json(&json!({"plan": "free"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "free_plan_limit").await;
}

#[tokio::test]
async fn listing_pages_with_cursors_and_stays_in_the_tenant() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_app(&owner, "pro", &[]).await.id);
    }
    let path = format!("/v1/tenants/{}/apps", owner.tenant_id);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=2&cursor={c}"),
            None => format!("{path}?limit=2"),
        };
        let page: Value = app.get(&url).bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    for bad in ["?limit=0", "?limit=abc", "?cursor=!!!"] {
        let r = app.get(&format!("{path}{bad}")).bearer_auth(&owner.session).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let other = app.create_user("other@example.com").await;
    assert_error(app.get(&path).bearer_auth(&other).send().await.unwrap(), 404, "not_found").await;
    let one = format!("{path}/{}", ids[0]);
    assert_error(app.get(&one).bearer_auth(&other).send().await.unwrap(), 404, "not_found").await;
    assert_error(app.delete(&one).bearer_auth(&other).send().await.unwrap(), 404, "not_found").await;
    // The app is still there.
    assert_eq!(app.get(&one).bearer_auth(&owner.session).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn secret_rotation_kills_the_old_secret_and_its_tokens() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let old_token = app.m2m_token(&creds).await;
    app.clock.advance(time::Duration::seconds(1));
    let r = app
        .post(&format!("/v1/tenants/{}/apps/{}/secret/rotate", owner.tenant_id, creds.id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let new_secret = body["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, creds.client_secret);
    let r = app.token_request(&creds, &[("grant_type", "client_credentials")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    assert!(!accepted(&app, &old_token).await, "tokens minted before the rotation die with the old secret");
    let rotated = TestAppCreds { client_secret: new_secret, ..creds };
    app.clock.advance(time::Duration::seconds(1));
    let new_token = app.m2m_token(&rotated).await;
    assert!(accepted(&app, &new_token).await);
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"app.secret_rotated".to_owned()));
}

#[tokio::test]
async fn plan_change_answers_a_prorated_invoice() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    app.clock.set(datetime!(2026-01-10 00:00:00 UTC));
    let creds = app.create_app(&owner, "starter", &[]).await;
    // Ten days into a 31-day period (Jan 10 → Feb 10): 21 of 31 days remain.
    app.clock.set(datetime!(2026-01-20 00:00:00 UTC));
    let path = format!("/v1/tenants/{}/apps/{}", owner.tenant_id, creds.id);
    let r = app
        .post(&format!("{path}/plan"))
        .bearer_auth(&owner.session)
        .json(&json!({"plan": "pro"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inv: Value = r.json().await.unwrap();
    let lines = inv["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    // Starter 2900 ¢, Pro 29900 ¢ a month; remaining fraction 1814400/2678400 s.
    // Credit -1964.516… → -1965; charge 20254.838… → 20255.
    assert_eq!(lines[0]["plan"], "starter");
    assert_eq!(lines[0]["amount_cents"], -1965);
    assert_eq!(lines[1]["plan"], "pro");
    assert_eq!(lines[1]["amount_cents"], 20255);
    assert_eq!(inv["total_cents"], 18290);
    assert_eq!(lines[1]["period_start"], "2026-01-20T00:00:00Z");
    assert_eq!(lines[1]["period_end"], "2026-02-10T00:00:00Z");
    assert_eq!(inv["app_id"], creds.id.as_str());

    let got: Value = app.get(&path).bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["plan"], "pro");

    // Downgrade later in the period: a net credit.
    app.clock.set(datetime!(2026-02-09 00:00:00 UTC));
    let r = app
        .post(&format!("{path}/plan"))
        .bearer_auth(&owner.session)
        .json(&json!({"plan": "starter"}))
        .send()
        .await
        .unwrap();
    let down: Value = r.json().await.unwrap();
    assert!(down["total_cents"].as_i64().unwrap() < 0, "{down}");

    let same = app
        .post(&format!("{path}/plan"))
        .bearer_auth(&owner.session)
        .json(&json!({"plan": "starter"}))
        .send()
        .await
        .unwrap();
    assert_error(same, 409, "plan_unchanged").await;
    let bad = app
        .post(&format!("{path}/plan"))
        .bearer_auth(&owner.session)
        .json(&json!({"plan": "platinum"}))
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalid_plan").await;

    let list: Value =
        app.get(&format!("{path}/invoices")).bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    // The first-period charge at creation, then the two changes.
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["total_cents"], 2900);
    assert_eq!(items[0]["lines"][0]["period_start"], "2026-01-10T00:00:00Z");
    assert_eq!(items[0]["lines"][0]["period_end"], "2026-02-10T00:00:00Z");
    assert_eq!(items[1]["id"], inv["id"]);
    assert_eq!(items[1]["total_cents"], 18290);
    assert!(list["next_cursor"].is_null());
    assert!(app.audit_actions(Some(&owner.tenant_id)).await.contains(&"plan.changed".to_owned()));
}
