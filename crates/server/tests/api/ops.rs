//! Health, readiness, metrics, OpenAPI, unknown paths.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").send().await.unwrap().status(), 200);
    let ready: Value = app.get("/readyz").send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    app.client_credentials(&creds).await;
    let r = app.get("/metrics").send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    assert!(
        text.contains("wiresocket_http_requests_total{route=\"/v1/setup\",method=\"POST\",status=\"201\"}"),
        "{text}"
    );
    assert!(text.contains("wiresocket_http_request_duration_seconds_bucket"));
    assert!(text.contains("wiresocket_oauth_token_requests_total{grant=\"client_credentials\",outcome=\"issued\"}"));
    assert!(text.contains("wiresocket_tokens_issued_total"));
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_json() {
    let app = spawn_app().await;
    assert_error(app.get("/nope").send().await.unwrap(), 404, "not_found").await;
    assert_error(app.get("/v1/tenants/a/b/c/d/e").send().await.unwrap(), 404, "not_found").await;
    assert_error(app.delete("/v1/setup").send().await.unwrap(), 405, "method_not_allowed").await;
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    // The route table is `routes::policy::POLICIES` (one entry per route,
    // with who may call it); the document must list exactly those routes.
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let undocumented = ["/openapi.json", "/v1/sync/{*doc}"];
    let expected: Vec<(&str, String)> = server::routes::policy::POLICIES
        .iter()
        .filter(|(_, p, _)| !undocumented.contains(p))
        .map(|(m, p, _)| (*p, m.to_lowercase()))
        .collect();
    for (path, method) in &expected {
        assert!(
            paths.get(*path).and_then(|p| p.get(method.as_str())).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        paths.values().map(|p| p.as_object().unwrap().len()).sum::<usize>(),
        expected.len(),
        "undocumented extras?"
    );
    assert!(expected.len() > 60, "{}", expected.len());
}

#[tokio::test]
async fn catalogs_are_bare_arrays() {
    let app = spawn_app().await;
    let regions: Value = app.get("/v1/regions").send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = regions.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["aws-us-east-1", "eu-central-1"]);
    let plans: Value = app.get("/v1/plans").send().await.unwrap().json().await.unwrap();
    let plans = plans.as_array().unwrap();
    let free = plans.iter().find(|p| p["id"] == "free").unwrap();
    assert_eq!(
        (free["max_connections"].as_u64(), free["max_documents"].as_u64(), free["ops_per_minute"].as_u64()),
        (Some(20), Some(100), Some(1000))
    );
    let ent = plans.iter().find(|p| p["id"] == "enterprise").unwrap();
    assert!(ent["max_connections"].is_null() && ent["max_documents"].is_null() && ent["ops_per_minute"].is_null());
    assert_eq!(plans.len(), 4);
}
