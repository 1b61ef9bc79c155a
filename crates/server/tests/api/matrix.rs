//! The permission matrix: every route of `/openapi.json` (the list the
//! router serves, so a new route cannot be left out) × every principal —
//! each built-in role, a custom role, a member of another tenant, an app's
//! M2M token, a human session on the data plane, and no credential — against
//! the status the declared policy (`routes::policy::POLICIES`) and the role
//! table (`Role::permits`) say it must get.

use crate::helpers::*;
use domain::ids::{TenantId, UserId};
use domain::role::{Action, Resource, Role};
use serde_json::{Value, json};
use server::routes::policy::{POLICIES, Policy};

#[derive(Debug)]
enum Who {
    Role(Role),
    Custom,
    OtherTenant,
    M2m,
    Anonymous,
}

const CUSTOM: &[(Resource, Action)] = &[(Resource::Apps, Action::Read), (Resource::Audit, Action::Read)];

fn fill(path: &str, tid: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e + 1);
        let name = &rest[start + 1..end - 1];
        out.push_str(match name {
            "tid" => tid,
            "doc" | "*doc" => "matrix-doc",
            "kid" => "no-such-kid",
            // Any other id: a well-formed one that names nothing.
            _ => "0196f0e0-0000-7000-8000-00000000abcd",
        });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_route_times_every_principal() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = TenantId::parse(&owner.tenant_id).unwrap();
    let now = app.clock_now();

    let mut principals: Vec<(Who, Option<String>)> = vec![(Who::Role(Role::SuperAdmin), Some(owner.session.clone()))];
    for role in [Role::Admin, Role::Editor, Role::Viewer] {
        let email = format!("{}@matrix.test", role.as_str());
        let session = app.create_user(&email).await;
        let user = app.state.store.get_user_by_email(&email).await.unwrap().unwrap();
        app.state.store.add_membership(tid, user.id, role.as_str(), now).await.unwrap();
        principals.push((Who::Role(role), Some(session)));
    }
    app.state
        .store
        .create_role(&store::CustomRoleRecord {
            tenant_id: tid,
            name: "auditor".into(),
            permissions: CUSTOM.to_vec(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    let session = app.create_user("custom@matrix.test").await;
    let user = app.state.store.get_user_by_email("custom@matrix.test").await.unwrap().unwrap();
    app.state.store.add_membership(tid, user.id, "auditor", now).await.unwrap();
    principals.push((Who::Custom, Some(session)));
    let other = app.create_user("other@matrix.test").await;
    let r = app.post("/v1/tenants").bearer_auth(&other).json(&json!({"name": "Elsewhere"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    principals.push((Who::OtherTenant, Some(other)));
    let creds = app.create_app(&owner, "pro", &[]).await;
    principals.push((Who::M2m, Some(app.m2m_token(&creds).await)));
    principals.push((Who::Anonymous, None));
    let _ = UserId::new();

    let doc: Value = app.get("/openapi.json").send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let upper = method.to_uppercase();
            let policy = POLICIES
                .iter()
                .find(|(m, p, _)| *m == upper && p == path)
                .map(|(_, _, policy)| *policy)
                .unwrap_or_else(|| panic!("{upper} {path} declares no policy"));
            // Logging out would end the principal's session mid-matrix; it has its own tests.
            if policy == Policy::Public || path == "/v1/auth/logout" {
                continue;
            }
            let url = fill(path, &owner.tenant_id);
            for (who, credential) in &principals {
                let mut req = app
                    .client
                    .request(reqwest::Method::from_bytes(upper.as_bytes()).unwrap(), format!("{}{url}", app.url));
                if let Some(c) = credential {
                    req = req.bearer_auth(c);
                }
                if method != "get" && method != "delete" {
                    req = req.json(&json!({}));
                }
                let status = req.send().await.unwrap().status().as_u16();
                checked += 1;
                let denied = [401, 403].contains(&status);
                let ok = status < 500
                    && match (policy, who) {
                        (Policy::Public, _) => true,
                        (_, Who::Anonymous) => status == 401,
                        (Policy::AppToken, Who::M2m) => !denied,
                        (Policy::AppToken, _) => status == 401,
                        (_, Who::M2m) => status == 403,
                        (Policy::Session, _) => !denied,
                        // The owner (the first user) is the one super_admin
                        // here, and the platform operator; no one else is.
                        (Policy::Operator, Who::Role(Role::SuperAdmin)) => !denied,
                        (Policy::Operator, _) => status == 403,
                        (Policy::Tenant(..), Who::OtherTenant) => status == 404,
                        (Policy::Tenant(r, a), Who::Role(role)) => {
                            if role.permits(r, a) {
                                !denied
                            } else {
                                status == 403
                            }
                        }
                        (Policy::Tenant(r, a), Who::Custom) => {
                            if CUSTOM.contains(&(r, a)) {
                                !denied
                            } else {
                                status == 403
                            }
                        }
                    };
                if !ok {
                    failures.push(format!("{upper} {path} as {who:?} ({policy:?}) -> {status}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} wrong answers:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 200, "only {checked} requests: the route table was not walked");
    app.stop().await;
}
