//! Members (list, role change, removal) and custom roles over HTTP.

use crate::helpers::*;
use serde_json::{Value, json};

async fn put_role(app: &TestApp, session: &str, tid: &str, uid: &str, role: &str) -> reqwest::Response {
    app.client
        .put(format!("{}/v1/tenants/{tid}/members/{uid}", app.url))
        .bearer_auth(session)
        .json(&json!({"role": role}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn members_are_listed_changed_and_removed() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();
    let (viewer, viewer_id) = add_member(&app, &tid, "viewer@example.com", "viewer").await;
    let (admin, admin_id) = add_member(&app, &tid, "admin@example.com", "admin").await;

    // Listed, paged, with the documented fields.
    let list: Value =
        app.get(&format!("/v1/tenants/{tid}/members")).bearer_auth(&viewer).send().await.unwrap().json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(list["next_cursor"], Value::Null);
    let me = items.iter().find(|m| m["user_id"] == owner.user_id.as_str()).unwrap();
    assert_eq!(me["email"], owner.email.as_str());
    assert_eq!(me["role"], "super_admin");
    assert_eq!(me["mfa_enabled"], false);
    assert!(
        time::OffsetDateTime::parse(me["joined_at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    let first: Value = app
        .get(&format!("/v1/tenants/{tid}/members?limit=2"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get(&format!("/v1/tenants/{tid}/members?limit=2&cursor={cursor}"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);

    // A viewer reads but does not change.
    assert_error(put_role(&app, &viewer, &tid, &viewer_id, "admin").await, 403, "forbidden").await;

    // An admin changes ordinary members…
    let r = put_role(&app, &admin, &tid, &viewer_id, "editor").await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["role"], "editor");
    assert_eq!(changed["user_id"], viewer_id.as_str());
    assert_eq!(changed["email"], "viewer@example.com");
    // …takes effect at once: an editor creates apps.
    let new_app = json!({"name": "x", "region": "eu-central-1", "plan": "pro"});
    let r = app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&viewer).json(&new_app).send().await.unwrap();
    assert_eq!(r.status(), 201);
    // …but never grants super_admin nor touches one.
    assert_error(put_role(&app, &admin, &tid, &viewer_id, "super_admin").await, 403, "forbidden").await;
    assert_error(put_role(&app, &admin, &tid, &owner.user_id, "viewer").await, 403, "forbidden").await;
    let r =
        app.delete(&format!("/v1/tenants/{tid}/members/{}", owner.user_id)).bearer_auth(&admin).send().await.unwrap();
    assert_error(r, 403, "forbidden").await;
    assert_error(put_role(&app, &admin, &tid, &viewer_id, "owner").await, 400, "invalid_role").await;
    let bad = app
        .client
        .put(format!("{}/v1/tenants/{tid}/members/{viewer_id}", app.url))
        .bearer_auth(&admin)
        .json(&json!({"rol": "viewer"}))
        .send()
        .await
        .unwrap();
    assert_error(bad, 400, "invalid_request").await;

    // The last super_admin stays.
    assert_error(put_role(&app, &owner.session, &tid, &owner.user_id, "admin").await, 409, "last_super_admin").await;
    let r = app
        .delete(&format!("/v1/tenants/{tid}/members/{}", owner.user_id))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_error(r, 409, "last_super_admin").await;
    // A super_admin grants super_admin; then the first may step down.
    assert_eq!(put_role(&app, &owner.session, &tid, &admin_id, "super_admin").await.status(), 200);
    assert_eq!(put_role(&app, &admin, &tid, &owner.user_id, "admin").await.status(), 200);
    assert_eq!(put_role(&app, &admin, &tid, &owner.user_id, "super_admin").await.status(), 200);

    // Another tenant's member, or no member at all, is 404 here.
    let other: Value = app
        .post("/v1/tenants")
        .bearer_auth(&viewer)
        .json(&json!({"name": "Viewer's own"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other_tid = other["id"].as_str().unwrap();
    let (stranger, stranger_id) = add_member(&app, other_tid, "stranger@example.com", "viewer").await;
    assert_error(put_role(&app, &owner.session, &tid, &stranger_id, "viewer").await, 404, "not_found").await;
    let r = app
        .delete(&format!("/v1/tenants/{tid}/members/{stranger_id}"))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
    assert_error(put_role(&app, &owner.session, &tid, "not-a-uuid", "viewer").await, 404, "not_found").await;
    let r = app.get(&format!("/v1/tenants/{other_tid}/members")).bearer_auth(&owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    assert_eq!(
        app.get(&format!("/v1/tenants/{tid}/members")).bearer_auth(&stranger).send().await.unwrap().status(),
        404
    );

    // Removal ends access to this tenant at once; the session lives on for the others.
    let r = app.delete(&format!("/v1/tenants/{tid}/members/{viewer_id}")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_error(app.get(&format!("/v1/tenants/{tid}")).bearer_auth(&viewer).send().await.unwrap(), 404, "not_found")
        .await;
    assert_eq!(app.get(&format!("/v1/tenants/{other_tid}")).bearer_auth(&viewer).send().await.unwrap().status(), 200);
    let me: Value = app.get("/v1/me").bearer_auth(&viewer).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenants"].as_array().unwrap().len(), 1);
    let r = app.delete(&format!("/v1/tenants/{tid}/members/{viewer_id}")).bearer_auth(&admin).send().await.unwrap();
    assert_error(r, 404, "not_found").await;

    let actions = app.audit_actions(Some(&tid)).await;
    assert!(actions.contains(&"member.role_changed".to_owned()), "{actions:?}");
    assert!(actions.contains(&"member.removed".to_owned()), "{actions:?}");
}

#[tokio::test]
async fn custom_roles_grant_exactly_their_permissions() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();
    let roles = format!("/v1/tenants/{tid}/roles");
    let create = |body: Value| app.post(&roles).bearer_auth(&owner.session).json(&body).send();

    let r =
        create(json!({"name": "apps-reader", "permissions": [{"resource": "apps", "action": "read"}]})).await.unwrap();
    assert_eq!(r.status(), 201);
    let role: Value = r.json().await.unwrap();
    assert_eq!(role["name"], "apps-reader");
    assert_eq!(role["builtin"], false);
    assert_eq!(role["permissions"], json!([{"resource": "apps", "action": "read"}]));

    // Refusals: names, unknown or too-strong permissions, duplicates.
    for (body, status, code) in [
        (json!({"name": "Apps", "permissions": []}), 400, "invalid_role"),
        (json!({"name": "a b", "permissions": []}), 400, "invalid_role"),
        (json!({"name": "x".repeat(65), "permissions": []}), 400, "invalid_role"),
        (json!({"name": "admin", "permissions": []}), 400, "invalid_role"),
        (
            json!({"name": "r1", "permissions": [{"resource": "spaceships", "action": "read"}]}),
            400,
            "invalid_permission",
        ),
        (json!({"name": "r1", "permissions": [{"resource": "apps", "action": "fly"}]}), 400, "invalid_permission"),
        (json!({"name": "r1", "permissions": [{"resource": "keys", "action": "create"}]}), 400, "invalid_permission"),
        (json!({"name": "r1", "permissions": [{"resource": "keys", "action": "delete"}]}), 400, "invalid_permission"),
        (json!({"name": "r1"}), 400, "invalid_request"),
        (json!({"name": "apps-reader", "permissions": []}), 409, "role_exists"),
    ] {
        assert_error(create(body.clone()).await.unwrap(), status, code).await;
    }

    // Listed with the built-in roles and their permissions.
    let list: Value = app.get(&roles).bearer_auth(&owner.session).send().await.unwrap().json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["super_admin", "admin", "editor", "viewer", "apps-reader"]);
    assert!(items[..4].iter().all(|r| r["builtin"] == true));
    let admin_perms = items[1]["permissions"].as_array().unwrap();
    assert_eq!(admin_perms.len(), 41);
    assert!(!admin_perms.contains(&json!({"resource": "keys", "action": "create"})));
    assert_eq!(items[3]["permissions"].as_array().unwrap().len(), 11);
    let one: Value = app
        .get(&format!("{roles}/apps-reader"))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["permissions"], role["permissions"]);
    assert_eq!(app.get(&format!("{roles}/viewer")).bearer_auth(&owner.session).send().await.unwrap().status(), 200);
    assert_error(app.get(&format!("{roles}/nope")).bearer_auth(&owner.session).send().await.unwrap(), 404, "not_found")
        .await;

    // A member holding it may list apps, and nothing else.
    let (reader, reader_id) = add_member(&app, &tid, "reader@example.com", "apps-reader").await;
    let new_app = json!({"name": "x", "region": "eu-central-1", "plan": "pro"});
    assert_eq!(app.get(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&reader).send().await.unwrap().status(), 200);
    let r = app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&reader).json(&new_app).send().await.unwrap();
    assert_error(r, 403, "forbidden").await;
    assert_error(app.get(&format!("/v1/tenants/{tid}")).bearer_auth(&reader).send().await.unwrap(), 403, "forbidden")
        .await;
    assert_error(app.get(&roles).bearer_auth(&reader).send().await.unwrap(), 403, "forbidden").await;

    // Changing the role changes what its holders may do, at once.
    let r = app
        .client
        .put(format!("{}{roles}/apps-reader", app.url))
        .bearer_auth(&owner.session)
        .json(&json!({"permissions": [{"resource": "apps", "action": "read"}, {"resource": "apps", "action": "create"},
            {"resource": "apps", "action": "read"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["permissions"].as_array().unwrap().len(), 2);
    let r = app.post(&format!("/v1/tenants/{tid}/apps")).bearer_auth(&reader).json(&new_app).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let builtin = app
        .client
        .put(format!("{}{roles}/viewer", app.url))
        .bearer_auth(&owner.session)
        .json(&json!({"permissions": []}))
        .send()
        .await
        .unwrap();
    assert_error(builtin, 400, "invalid_role").await;

    // Nobody grants more than they hold: a member manager cannot hand out admin,
    // nor create a role stronger than their own.
    let manager_role = json!({"name": "member-manager", "permissions": [
        {"resource": "members", "action": "read"}, {"resource": "members", "action": "update"},
        {"resource": "roles", "action": "create"}]});
    assert_eq!(create(manager_role).await.unwrap().status(), 201);
    let (manager, _) = add_member(&app, &tid, "manager@example.com", "member-manager").await;
    assert_error(put_role(&app, &manager, &tid, &reader_id, "admin").await, 403, "forbidden").await;
    let stronger = app
        .post(&roles)
        .bearer_auth(&manager)
        .json(&json!({"name": "sneaky", "permissions": [{"resource": "billing", "action": "update"}]}))
        .send()
        .await
        .unwrap();
    assert_error(stronger, 403, "forbidden").await;

    // A role in use cannot be deleted; once free, it can.
    let del = || app.delete(&format!("{roles}/apps-reader")).bearer_auth(&owner.session).send();
    assert_error(del().await.unwrap(), 409, "role_in_use").await;
    assert_eq!(put_role(&app, &owner.session, &tid, &reader_id, "viewer").await.status(), 200);
    assert_eq!(del().await.unwrap().status(), 204);
    assert_error(del().await.unwrap(), 404, "not_found").await;
    assert_error(
        app.delete(&format!("{roles}/admin")).bearer_auth(&owner.session).send().await.unwrap(),
        400,
        "invalid_role",
    )
    .await;

    let actions = app.audit_actions(Some(&tid)).await;
    for a in ["role.created", "role.updated", "role.deleted"] {
        assert!(actions.contains(&a.to_owned()), "{a}: {actions:?}");
    }
}
