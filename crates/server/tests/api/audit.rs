//! The audit trail over HTTP: filters, paging, the hash chain and its
//! verification (API and `wiresocket audit verify`), and tamper detection.

use crate::helpers::*;
use serde_json::{Value, json};
use sqlx::Connection;

async fn trail(app: &TestApp, owner: &Owner, query: &str) -> Value {
    let r = app
        .get(&format!("/v1/tenants/{}/audit{query}", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn trail_lists_newest_first_with_filters_paging_and_chain_fields() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    for plan in ["starter", "starter", "pro"] {
        app.create_app(&owner, plan, &[]).await;
    }
    // A failed login of a known user shows in that user's tenant.
    let r = app
        .post("/v1/auth/login")
        .json(&json!({"email": owner.email, "password": "wrong password!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let all = trail(&app, &owner, "").await;
    let items = all["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"tenant.created") || actions.contains(&"setup.completed"), "{actions:?}");
    assert_eq!(actions.iter().filter(|a| **a == "app.created").count(), 3);
    assert!(actions.contains(&"auth.login_failed"));
    // Newest first, ids increasing with time, and the chain links up.
    let seqs: Vec<i64> = items.iter().map(|e| e["chain_seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "{seqs:?}");
    for w in items.windows(2) {
        assert_eq!(w[0]["prev_hash"], w[1]["hash"]);
    }
    assert_eq!(items.last().unwrap()["chain_seq"], 1);
    assert_eq!(items.last().unwrap()["prev_hash"], "0".repeat(64));
    let first = &items[actions.iter().position(|a| *a == "app.created").unwrap()];
    assert_eq!(first["actor"]["type"], "user");
    assert_eq!(first["actor"]["id"], owner.user_id);
    assert_eq!(first["target"]["type"], "app");

    // Filters.
    let created = trail(&app, &owner, "?action=app.created").await;
    assert_eq!(created["items"].as_array().unwrap().len(), 3);
    let by_actor = trail(&app, &owner, &format!("?actor={}", owner.user_id)).await;
    assert!(by_actor["items"].as_array().unwrap().iter().all(|e| e["actor"]["id"] == owner.user_id.as_str()));
    let future = trail(&app, &owner, "?since=2999-01-01T00:00:00Z").await;
    assert!(future["items"].as_array().unwrap().is_empty());
    let past = trail(&app, &owner, "?until=2000-01-01T00:00:00Z").await;
    assert!(past["items"].as_array().unwrap().is_empty());

    // Cursor paging walks the same entries, without overlap.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_owned(),
        };
        let page = trail(&app, &owner, &q).await;
        for e in page["items"].as_array().unwrap() {
            seen.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = items.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(seen, expected);

    // Bad input is a 400, not a 500.
    let r = app
        .get(&format!("/v1/tenants/{}/audit?since=yesterday", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_query").await;
    let r = app
        .get(&format!("/v1/tenants/{}/audit?cursor=!!", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_cursor").await;
    app.stop().await;
}

#[tokio::test]
async fn another_tenant_gets_404_and_viewers_may_read() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let other = app.create_user("other-tenant@example.com").await;
    let r = app.post("/v1/tenants").bearer_auth(&other).json(&json!({"name": "Other"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = app.get(&format!("/v1/tenants/{}/audit", owner.tenant_id)).bearer_auth(&other).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app.get(&format!("/v1/tenants/{}/audit/verify", owner.tenant_id)).bearer_auth(&other).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    let r = app.get(&format!("/v1/tenants/{}/audit", owner.tenant_id)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

async fn verify(app: &TestApp, owner: &Owner) -> Value {
    let r = app
        .get(&format!("/v1/tenants/{}/audit/verify", owner.tenant_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn cli_verify(data_dir: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(crate::crash::binary())
        .args(["audit", "verify", "--data-dir"])
        .arg(data_dir)
        .env("WIRESOCKET_LOG", "error")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn edited_or_deleted_entries_are_detected_by_the_api_and_the_cli() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    for _ in 0..4 {
        app.create_app(&owner, "starter", &[]).await;
    }
    let report = verify(&app, &owner).await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["entries"].as_u64().unwrap() >= 5);
    let (ok, out) = cli_verify(&app.data_dir);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("ok      tenant {}", owner.tenant_id)), "{out}");

    // Someone with database access rewrites history…
    let db = app.data_dir.join("wiresocket.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let edited = sqlx::query("UPDATE audit_events SET action = 'app.updated' WHERE tenant_id = $1 AND chain_seq = 3")
        .bind(&owner.tenant_id)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    let report = verify(&app, &owner).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["broken_at"], 3);
    assert_eq!(report["reason"], "hash");
    let (ok, out) = cli_verify(&app.data_dir);
    assert!(!ok);
    assert!(out.contains("BROKEN"), "{out}");

    // …or deletes an entry instead.
    sqlx::query("UPDATE audit_events SET action = 'app.created' WHERE tenant_id = $1 AND chain_seq = 3")
        .bind(&owner.tenant_id)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(verify(&app, &owner).await["ok"], true);
    sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND chain_seq = 2")
        .bind(&owner.tenant_id)
        .execute(&mut conn)
        .await
        .unwrap();
    let report = verify(&app, &owner).await;
    assert_eq!(report["ok"], false);
    assert_eq!(report["broken_at"], 2);
    assert_eq!(report["reason"], "gap");
    conn.close().await.unwrap();
    app.stop().await;
}
