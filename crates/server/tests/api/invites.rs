//! Invitations: mailed to the outbox, accepted once, by new and existing accounts.

use crate::helpers::*;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

async fn invite(app: &TestApp, session: &str, tid: &str, email: &str, role: &str) -> reqwest::Response {
    app.post(&format!("/v1/tenants/{tid}/invites"))
        .bearer_auth(session)
        .json(&json!({"email": email, "role": role}))
        .send()
        .await
        .unwrap()
}

async fn accept(app: &TestApp, body: Value) -> reqwest::Response {
    app.post("/v1/invites/accept").json(&body).send().await.unwrap()
}

#[tokio::test]
async fn an_invite_is_mailed_and_accepted_once_by_a_new_user() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();

    let r = invite(&app, &owner.session, &tid, "  Newbie@Example.com ", "editor").await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["email"], "newbie@example.com");
    assert_eq!(body["role"], "editor");
    assert!(!body.to_string().contains("inv_"), "the token goes only by mail: {body}");
    let expires = OffsetDateTime::parse(body["expires_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert!((expires - (app.clock_now() + Duration::days(7))).abs() <= Duration::seconds(2));

    // The mail: one RFC 5322 message in the outbox, with a link that keeps
    // the token after '#'.
    let tokens = app.tokens_mailed_to("newbie@example.com", "inv_", 1).await;
    let token = &tokens[0];
    let mail = &app.mails_to("newbie@example.com")[0];
    assert!(mail.headers.contains("Subject: You are invited to Acme on WireSocket"), "{}", mail.headers);
    assert!(mail.headers.contains("From: WireSocket <no-reply@localhost>"), "{}", mail.headers);
    assert!(mail.body.contains(&format!("{}/dashboard/accept-invite#token={token}", app.url)), "{}", mail.body);
    assert!(mail.body.contains(&owner.email));
    assert_eq!(token.len(), "inv_".len() + 43);
    // Only the hash is stored.
    let stored = app.state.store.list_invites(domain::ids::TenantId::parse(&tid).unwrap(), None, 10).await.unwrap();
    assert_eq!(stored.items[0].token_hash, auth::token::hash_token(token));

    // Listed while pending.
    let list: Value = app
        .get(&format!("/v1/tenants/{tid}/invites"))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["id"], body["id"]);
    assert_eq!(list["items"][0]["expired"], false);

    // A weak password is refused and leaves the invite usable.
    let weak = accept(&app, json!({"token": token, "password": "short"})).await;
    assert_error(weak, 400, "weak_password").await;
    assert_error(accept(&app, json!({"token": "inv_forged", "password": PASSWORD})).await, 400, "invalid_token").await;

    let r = accept(&app, json!({"token": token, "password": PASSWORD, "name": "New Bie"})).await;
    assert_eq!(r.status(), 201);
    let joined: Value = r.json().await.unwrap();
    let session = joined["session_token"].as_str().unwrap();
    assert!(OffsetDateTime::parse(joined["expires_at"].as_str().unwrap(), &Rfc3339).is_ok());
    let me: Value = app.get("/v1/me").bearer_auth(session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], joined["user_id"]);
    assert_eq!(me["email"], "newbie@example.com");
    assert_eq!(me["tenants"][0]["id"], tid.as_str());
    assert_eq!(me["tenants"][0]["role"], "editor");
    // The name given is kept: on the account and in the member list.
    assert_eq!(me["name"], "New Bie");
    let members: Value = app
        .get(&format!("/v1/tenants/{tid}/members"))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry =
        members["items"].as_array().unwrap().iter().find(|m| m["user_id"] == joined["user_id"]).unwrap().clone();
    assert_eq!(entry["name"], "New Bie");
    // The new account logs in with its password.
    app.login("newbie@example.com", PASSWORD).await;

    // Single use.
    assert_error(accept(&app, json!({"token": token, "password": PASSWORD})).await, 400, "invalid_token").await;
    let list: Value = app
        .get(&format!("/v1/tenants/{tid}/invites"))
        .bearer_auth(&owner.session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    // A member already: no second invite.
    assert_error(invite(&app, &owner.session, &tid, "newbie@example.com", "viewer").await, 409, "already_member").await;

    let actions = app.audit_actions(Some(&tid)).await;
    assert!(actions.contains(&"member.invited".to_owned()), "{actions:?}");
    assert!(actions.contains(&"member.joined".to_owned()), "{actions:?}");
}

#[tokio::test]
async fn an_existing_account_proves_its_password_to_join() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();
    let existing = app.create_user("existing@example.com").await;

    assert_eq!(invite(&app, &owner.session, &tid, "existing@example.com", "viewer").await.status(), 201);
    let token = app.tokens_mailed_to("existing@example.com", "inv_", 1).await.remove(0);
    let wrong = accept(&app, json!({"token": token, "password": "not the password"})).await;
    assert_error(wrong, 401, "invalid_credentials").await;
    let r = accept(&app, json!({"token": token, "password": PASSWORD})).await;
    assert_eq!(r.status(), 201);
    let me: Value = app.get("/v1/me").bearer_auth(&existing).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["tenants"][0]["id"], tid.as_str());
    assert_eq!(me["tenants"][0]["role"], "viewer");
    // The password is unchanged.
    app.login("existing@example.com", PASSWORD).await;
}

#[tokio::test]
async fn invites_are_refused_withdrawn_and_limited_to_what_the_inviter_holds() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();
    let (viewer, _) = add_member(&app, &tid, "viewer@example.com", "viewer").await;
    let (admin, _) = add_member(&app, &tid, "admin@example.com", "admin").await;

    assert_error(invite(&app, &viewer, &tid, "a@example.com", "viewer").await, 403, "forbidden").await;
    assert_error(invite(&app, &admin, &tid, "a@example.com", "super_admin").await, 403, "forbidden").await;
    assert_error(invite(&app, &admin, &tid, "a@example.com", "emperor").await, 400, "invalid_role").await;
    assert_error(invite(&app, &admin, &tid, "not an email", "viewer").await, 400, "invalid_email").await;
    let other_tenant = "00000000-0000-7000-8000-000000000000";
    assert_error(invite(&app, &owner.session, other_tenant, "a@example.com", "viewer").await, 404, "not_found").await;
    // An admin invites admins; a super_admin invites super_admins.
    assert_eq!(invite(&app, &admin, &tid, "a@example.com", "admin").await.status(), 201);
    let r = invite(&app, &owner.session, &tid, "b@example.com", "super_admin").await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Withdrawn: the link dies.
    let token = app.tokens_mailed_to("b@example.com", "inv_", 1).await.remove(0);
    let r = app.delete(&format!("/v1/tenants/{tid}/invites/{id}")).bearer_auth(&viewer).send().await.unwrap();
    assert_error(r, 403, "forbidden").await;
    let r = app.delete(&format!("/v1/tenants/{tid}/invites/{id}")).bearer_auth(&owner.session).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = app.delete(&format!("/v1/tenants/{tid}/invites/{id}")).bearer_auth(&owner.session).send().await.unwrap();
    assert_error(r, 404, "not_found").await;
    assert_error(accept(&app, json!({"token": token, "password": PASSWORD})).await, 400, "invalid_token").await;
    assert!(app.audit_actions(Some(&tid)).await.contains(&"invite.revoked".to_owned()));
    // A viewer may list them.
    let list = app.get(&format!("/v1/tenants/{tid}/invites")).bearer_auth(&viewer).send().await.unwrap();
    assert_eq!(list.json::<Value>().await.unwrap()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_invite_expires_after_seven_days() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    let tid = owner.tenant_id.clone();
    assert_eq!(invite(&app, &owner.session, &tid, "late@example.com", "viewer").await.status(), 201);
    let token = app.tokens_mailed_to("late@example.com", "inv_", 1).await.remove(0);
    app.clock.advance(Duration::days(7) - Duration::seconds(1));
    // The owner's session is long gone by then.
    let session = app.login(&owner.email, PASSWORD).await;
    let list: Value = app
        .get(&format!("/v1/tenants/{tid}/invites"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["expired"], false);
    app.clock.advance(Duration::seconds(1));
    assert_error(accept(&app, json!({"token": token, "password": PASSWORD})).await, 400, "invalid_token").await;
    // Still listed (to be seen and deleted), flagged.
    let list: Value = app
        .get(&format!("/v1/tenants/{tid}/invites"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["expired"], true);
    assert!(app.state.store.get_user_by_email("late@example.com").await.unwrap().is_none());
}

#[tokio::test]
async fn concurrent_accepts_of_one_invite_let_exactly_one_through() {
    let app = spawn_app().await;
    let owner = app.setup().await;
    assert_eq!(invite(&app, &owner.session, &owner.tenant_id, "race@example.com", "viewer").await.status(), 201);
    let token = app.tokens_mailed_to("race@example.com", "inv_", 1).await.remove(0);
    let body = json!({"token": token, "password": PASSWORD});
    let attempts = (0..8).map(|_| app.post("/v1/invites/accept").json(&body).send());
    let mut created = 0;
    for r in futures::future::join_all(attempts).await {
        let r = r.unwrap();
        match r.status().as_u16() {
            201 => created += 1,
            400 => assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_token"),
            // An attempt that arrives once the account exists proves its
            // password, and those attempts are rate-limited per account: on
            // a loaded machine enough of them do to meet the limit.
            429 => assert_eq!(r.json::<Value>().await.unwrap()["error"], "too_many_requests"),
            other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1);
    let members = app.state.store.list_members(domain::ids::TenantId::parse(&owner.tenant_id).unwrap(), None, 10);
    assert_eq!(members.await.unwrap().items.len(), 2);
}

/// Enough of an SMTP server (RFC 5321) to receive one message; answers the
/// transcript once the client quits.
async fn fake_smtp() -> (u16, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let (r, mut w) = sock.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"220 fake ESMTP\r\n").await.unwrap();
        let (mut transcript, mut in_data) = (String::new(), false);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            transcript.push_str(&line);
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    w.write_all(b"250 queued\r\n").await.unwrap();
                }
                continue;
            }
            let cmd = line.to_ascii_uppercase();
            let reply: &[u8] = if cmd.starts_with("EHLO") {
                b"250 fake\r\n"
            } else if cmd.starts_with("DATA") {
                in_data = true;
                b"354 go\r\n"
            } else if cmd.starts_with("QUIT") {
                w.write_all(b"221 bye\r\n").await.unwrap();
                break;
            } else {
                b"250 ok\r\n"
            };
            w.write_all(reply).await.unwrap();
        }
        transcript
    });
    (port, task)
}

#[tokio::test]
async fn with_an_smtp_url_invites_go_over_smtp() {
    let (port, server) = fake_smtp().await;
    let dir = temp_dir();
    let mut config = test_config(&dir);
    config.smtp_url = Some(auth::SecretString::from(format!("smtp://127.0.0.1:{port}")));
    config.mail_from = "Acme Ops <ops@acme.test>".to_owned();
    let app = spawn_with(config).await;
    let owner = app.setup().await;
    assert_eq!(invite(&app, &owner.session, &owner.tenant_id, "smtp@example.com", "viewer").await.status(), 201);
    let transcript = tokio::time::timeout(std::time::Duration::from_secs(20), server).await.unwrap().unwrap();
    assert!(transcript.contains("MAIL FROM:<ops@acme.test>"), "{transcript}");
    assert!(transcript.contains("RCPT TO:<smtp@example.com>"), "{transcript}");
    let token = token_in(&decode_quoted_printable(&transcript), "inv_");
    assert!(!app.outbox().exists() || std::fs::read_dir(app.outbox()).unwrap().next().is_none());
    // The mailed token is the real one.
    let r = accept(&app, json!({"token": token, "password": PASSWORD})).await;
    assert_eq!(r.status(), 201);
    app.stop().await;
}
