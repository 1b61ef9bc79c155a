//! Built-in roles over HTTP: a member without the permission gets 403.

use crate::helpers::*;
use serde_json::json;

/// A tenant in which `email` (a fresh user) holds `role`; answers (session, tenant id).
async fn member(app: &TestApp, email: &str, role: &str) -> (String, String) {
    let session = app.create_user(email).await;
    let user = app.state.store.get_user_by_email(email).await.unwrap().unwrap();
    let tenant = store::TenantRecord {
        id: domain::ids::TenantId::new(),
        name: format!("{role} tenant"),
        created_at: app.clock_now(),
    };
    let (key, _) = app.state.keys.new_key(tenant.id, app.clock_now()).await.unwrap();
    app.state.store.create_tenant(&tenant, user.id, role, &key).await.unwrap();
    (session, tenant.id.to_string())
}

#[tokio::test]
async fn roles_are_enforced_on_management_routes() {
    let app = spawn_app().await;
    app.setup().await;
    let new_app = json!({"name": "x", "region": "eu-central-1", "plan": "pro"});

    let (viewer, tid) = member(&app, "viewer@example.com", "viewer").await;
    assert_eq!(app.get(&format!("/v1/tenants/{tid}")).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    assert_eq!(app.get(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    assert_eq!(app.get(&format!("/v1/tenants/{tid}/keys")).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    assert_error(
        app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&viewer).json(&new_app).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    assert_error(
        app.post(&format!("/v1/tenants/{tid}/keys/rotate")).bearer_auth(&viewer).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;

    let (editor, tid) = member(&app, "editor@example.com", "editor").await;
    let r = app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&editor).json(&new_app).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let aid = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert_error(
        app.delete(&format!("/v1/tenants/{tid}/apps/{aid}")).bearer_auth(&editor).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
    let plan = app
        .post(&format!("/v1/tenants/{tid}/apps/{aid}/plan"))
        .bearer_auth(&editor)
        .json(&json!({"plan": "starter"}))
        .send()
        .await
        .unwrap();
    assert_error(plan, 403, "forbidden").await;

    // An admin manages everything but only reads keys.
    let (admin, tid) = member(&app, "admin@example.com", "admin").await;
    assert_eq!(
        app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&admin).json(&new_app).send().await.unwrap().status(),
        201
    );
    assert_eq!(app.get(&format!("/v1/tenants/{tid}/keys")).bearer_auth(&admin).send().await.unwrap().status(), 200);
    assert_error(
        app.post(&format!("/v1/tenants/{tid}/keys/rotate")).bearer_auth(&admin).send().await.unwrap(),
        403,
        "forbidden",
    )
    .await;
}
