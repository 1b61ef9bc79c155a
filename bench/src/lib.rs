//! What the benchmarks share: bringing a fresh WireSocket to the point where
//! a customer's backend holds app credentials.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

/// Setup → login → an enterprise app (no plan limits in the way); answers
/// `(client_id, client_secret)`. `url` is `http://host:port`.
pub async fn enterprise_app(client: &reqwest::Client, url: &str) -> (String, String) {
    let post = |path: &str, body: Value, bearer: Option<&str>| {
        let mut req = client.post(format!("{url}{path}")).json(&body);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let credentials = json!({"email": "bench@example.com", "password": "benchmark password"});
    let mut setup_body = credentials.clone();
    setup_body["tenant_name"] = json!("Bench");
    let setup = post("/v1/setup", setup_body, None).await;
    let login = post("/v1/auth/login", credentials, None).await;
    let app = post(
        &format!("/v1/tenants/{}/apps", setup["tenant_id"].as_str().unwrap()),
        json!({"name": "bench", "region": "eu-central-1", "plan": "enterprise"}),
        login["session_token"].as_str(),
    )
    .await;
    (app["client_id"].as_str().unwrap().to_owned(), app["client_secret"].as_str().unwrap().to_owned())
}
