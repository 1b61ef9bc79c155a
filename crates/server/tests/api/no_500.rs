//! No bad input gets a 500: every route of the OpenAPI document, every
//! method it declares, with hostile path values, bodies and credentials.

use crate::helpers::*;
use serde_json::Value;

#[tokio::test]
async fn hostile_input_never_gets_a_5xx() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let creds = app.create_app(&owner, "starter", &[]).await;
    let m2m = app.m2m_token(&creds).await;
    let doc: Value = app.get("/openapi.json").send().await.unwrap().json().await.unwrap();

    let long = "x".repeat(5000);
    let path_values = [
        owner.tenant_id.as_str(),
        creds.id.as_str(),
        "not-a-uuid",
        "%00",
        "%2F..%2F",
        "💥",
        long.as_str(),
        "00000000-0000-0000-0000-000000000000",
    ];
    let bodies: [(&str, &[u8]); 9] = [
        ("application/json", b"{}"),
        ("application/json", b"[]"),
        ("application/json", b"null"),
        ("application/json", b"{\"name\": 1e999, \"plan\": {}, \"docs\": \"*\"}"),
        ("application/json", b"{\"grace_seconds\": 9223372036854775807, \"ttl_seconds\": -9223372036854775808}"),
        ("application/json", b"\xff\xfe\x00garbage"),
        ("application/x-www-form-urlencoded", b"grant_type=%ZZ&token=%00&&=="),
        ("text/plain", b"hello"),
        ("application/json", b""),
    ];
    let auths = [None, Some(owner.session.as_str()), Some(m2m.as_str()), Some("a.b.c")];

    let mut requests = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            for value in path_values {
                let path = ["{tid}", "{aid}", "{kid}", "{uid}", "{name}", "{id}"]
                    .iter()
                    .fold(template.clone(), |path, param| path.replace(param, value));
                for (ctype, body) in bodies {
                    for auth in auths {
                        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                        let mut req = app
                            .client
                            .request(m, format!("{}{path}", app.url))
                            .header("content-type", ctype)
                            .body(body.to_vec());
                        if let Some(a) = auth {
                            req = req.bearer_auth(a);
                        }
                        let r = req.send().await.unwrap();
                        let status = r.status();
                        assert!(
                            !status.is_server_error(),
                            "{method} {path} ({ctype}, {body:?}, auth {auth:?}) → {status}: {}",
                            r.text().await.unwrap()
                        );
                        requests += 1;
                    }
                }
            }
        }
    }
    assert!(requests > 5000, "{requests}");
}
