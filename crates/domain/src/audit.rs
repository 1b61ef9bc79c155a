//! The audit vocabulary: who did what to what.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    User,
    App,
    System,
    Anonymous,
}

impl ActorType {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User => "user",
            Self::App => "app",
            Self::System => "system",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Every security action WireSocket records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    #[serde(rename = "setup.completed")]
    SetupCompleted,
    #[serde(rename = "auth.login")]
    Login,
    #[serde(rename = "auth.logout")]
    Logout,
    #[serde(rename = "auth.login_failed")]
    LoginFailed,
    #[serde(rename = "auth.token_failed")]
    TokenFailed,
    #[serde(rename = "auth.refresh_reuse")]
    RefreshReuse,
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    #[serde(rename = "tenant.created")]
    TenantCreated,
    #[serde(rename = "app.created")]
    AppCreated,
    #[serde(rename = "app.updated")]
    AppUpdated,
    #[serde(rename = "app.deleted")]
    AppDeleted,
    #[serde(rename = "app.secret_rotated")]
    AppSecretRotated,
    #[serde(rename = "plan.changed")]
    PlanChanged,
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "master_key.rotated")]
    MasterKeyRotated,
    #[serde(rename = "member.invited")]
    MemberInvited,
    #[serde(rename = "invite.revoked")]
    InviteRevoked,
    #[serde(rename = "member.joined")]
    MemberJoined,
    #[serde(rename = "member.role_changed")]
    MemberRoleChanged,
    #[serde(rename = "member.removed")]
    MemberRemoved,
    #[serde(rename = "role.created")]
    RoleCreated,
    #[serde(rename = "role.updated")]
    RoleUpdated,
    #[serde(rename = "role.deleted")]
    RoleDeleted,
    #[serde(rename = "mfa.enabled")]
    MfaEnabled,
    #[serde(rename = "mfa.disabled")]
    MfaDisabled,
    #[serde(rename = "auth.mfa_failed")]
    MfaFailed,
    #[serde(rename = "mfa.recovery_code_used")]
    RecoveryCodeUsed,
    #[serde(rename = "password.reset_requested")]
    PasswordResetRequested,
    #[serde(rename = "password.reset")]
    PasswordReset,
    #[serde(rename = "webhook.created")]
    WebhookCreated,
    #[serde(rename = "webhook.updated")]
    WebhookUpdated,
    #[serde(rename = "webhook.deleted")]
    WebhookDeleted,
    #[serde(rename = "webhook.secret_rotated")]
    WebhookSecretRotated,
    #[serde(rename = "auth.rate_limited")]
    RateLimited,
    #[serde(rename = "node.drained")]
    NodeDrained,
    #[serde(rename = "node.undrained")]
    NodeUndrained,
}

impl AuditAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::SetupCompleted => "setup.completed",
            Self::Login => "auth.login",
            Self::Logout => "auth.logout",
            Self::LoginFailed => "auth.login_failed",
            Self::TokenFailed => "auth.token_failed",
            Self::RefreshReuse => "auth.refresh_reuse",
            Self::TokenRevoked => "token.revoked",
            Self::TenantCreated => "tenant.created",
            Self::AppCreated => "app.created",
            Self::AppUpdated => "app.updated",
            Self::AppDeleted => "app.deleted",
            Self::AppSecretRotated => "app.secret_rotated",
            Self::PlanChanged => "plan.changed",
            Self::KeyCreated => "key.created",
            Self::KeyRotated => "key.rotated",
            Self::KeyRevoked => "key.revoked",
            Self::MasterKeyRotated => "master_key.rotated",
            Self::MemberInvited => "member.invited",
            Self::InviteRevoked => "invite.revoked",
            Self::MemberJoined => "member.joined",
            Self::MemberRoleChanged => "member.role_changed",
            Self::MemberRemoved => "member.removed",
            Self::RoleCreated => "role.created",
            Self::RoleUpdated => "role.updated",
            Self::RoleDeleted => "role.deleted",
            Self::MfaEnabled => "mfa.enabled",
            Self::MfaDisabled => "mfa.disabled",
            Self::MfaFailed => "auth.mfa_failed",
            Self::RecoveryCodeUsed => "mfa.recovery_code_used",
            Self::PasswordResetRequested => "password.reset_requested",
            Self::PasswordReset => "password.reset",
            Self::WebhookCreated => "webhook.created",
            Self::WebhookUpdated => "webhook.updated",
            Self::WebhookDeleted => "webhook.deleted",
            Self::WebhookSecretRotated => "webhook.secret_rotated",
            Self::RateLimited => "auth.rate_limited",
            Self::NodeDrained => "node.drained",
            Self::NodeUndrained => "node.undrained",
        }
    }
}

/// The hash that starts every chain (the `prev_hash` of a chain's first entry).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields of an audit entry that its hash covers, in a fixed order.
/// Each tenant has its own chain; platform-level entries (no tenant) form one
/// more chain. `chain_seq` counts 1, 2, 3… within a chain, so a deleted row
/// shows as a gap even before its hash is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEntry<'a> {
    /// The tenant id, or `None` for the platform chain.
    pub tenant_id: Option<&'a str>,
    pub chain_seq: i64,
    /// Unix seconds.
    pub at: i64,
    pub actor_type: &'a str,
    pub actor_id: Option<&'a str>,
    pub action: &'a str,
    pub target_type: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub details: &'a serde_json::Value,
}

impl ChainEntry<'_> {
    /// The canonical bytes: a JSON array in a fixed field order, prefixed by
    /// a format version. `serde_json` maps are sorted by key (no
    /// `preserve_order`), so `details` serialises the same way every time.
    pub fn canonical(&self) -> Vec<u8> {
        let value = serde_json::json!([
            1,
            self.tenant_id,
            self.chain_seq,
            self.at,
            self.actor_type,
            self.actor_id,
            self.action,
            self.target_type,
            self.target_id,
            self.ip,
            self.details,
        ]);
        value.to_string().into_bytes()
    }

    /// `hex(SHA-256(prev_hash ‖ "\n" ‖ canonical))`: the entry's hash, chained to
    /// the previous entry's.
    pub fn hash(&self, prev_hash: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        h.update(self.canonical());
        hex::encode(h.finalize())
    }
}

/// Where a chain stops being trustworthy, found by [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The `chain_seq` at which the chain broke.
    pub chain_seq: i64,
    /// `gap` (a row is missing), `prev_hash` (a row does not point at its
    /// predecessor), `hash` (a row's content was edited), `head` (rows at the
    /// end were removed, or the head was moved).
    pub reason: &'static str,
}

/// Incremental verifier: feed it a chain's rows in `chain_seq` order (in as
/// many pages as you like), then [`ChainVerifier::finish`] with the chain
/// head the store keeps (its last `chain_seq` and hash).
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS_HASH.to_owned(), checked: 0 }
    }
}

impl ChainVerifier {
    /// Checks one row: its position, its link to the previous row and its own hash.
    pub fn push(&mut self, entry: &ChainEntry<'_>, prev_hash: &str, hash: &str) -> Result<(), ChainBreak> {
        if entry.chain_seq != self.expected_seq {
            return Err(ChainBreak { chain_seq: self.expected_seq, reason: "gap" });
        }
        if prev_hash != self.prev_hash {
            return Err(ChainBreak { chain_seq: entry.chain_seq, reason: "prev_hash" });
        }
        if entry.hash(prev_hash) != hash {
            return Err(ChainBreak { chain_seq: entry.chain_seq, reason: "hash" });
        }
        self.prev_hash = hash.to_owned();
        self.expected_seq += 1;
        self.checked += 1;
        Ok(())
    }

    /// Compares the end of the rows with the head; answers how many rows were checked.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<u64, ChainBreak> {
        if head_seq != self.expected_seq - 1 || (head_seq > 0 && head_hash != self.prev_hash) {
            return Err(ChainBreak { chain_seq: self.expected_seq, reason: "head" });
        }
        Ok(self.checked)
    }
}

#[cfg(test)]
mod chain_tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(seq: i64, details: &serde_json::Value) -> ChainEntry<'_> {
        ChainEntry {
            tenant_id: Some("t1"),
            chain_seq: seq,
            at: 1_700_000_000 + seq,
            actor_type: "user",
            actor_id: Some("u1"),
            action: "app.created",
            target_type: Some("app"),
            target_id: Some("a1"),
            ip: Some("127.0.0.1"),
            details,
        }
    }

    fn build(n: i64, details: &serde_json::Value) -> Vec<(ChainEntry<'_>, String, String)> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = entry(seq, details);
                let h = e.hash(&prev);
                let row = (e, prev.clone(), h.clone());
                prev = h;
                row
            })
            .collect()
    }

    fn verify(rows: &[(ChainEntry<'_>, String, String)], head: (i64, &str)) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::default();
        for (e, p, h) in rows {
            v.push(e, p, h)?;
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn intact_chain_verifies() {
        let d = serde_json::json!({"b": 1, "a": [1, 2]});
        let rows = build(5, &d);
        let head = rows[4].2.clone();
        assert_eq!(verify(&rows, (5, &head)), Ok(5));
        assert_eq!(verify(&[], (0, GENESIS_HASH)), Ok(0));
    }

    #[test]
    fn canonical_form_is_key_order_independent_and_hash_is_pinned() {
        let a: serde_json::Value = serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str(r#"{"y":2,"x":1}"#).unwrap();
        assert_eq!(entry(1, &a).hash(GENESIS_HASH), entry(1, &b).hash(GENESIS_HASH));
        // Pinned so a change of the canonical form cannot slip in unnoticed
        // (it would make every stored chain fail verification).
        assert_eq!(
            String::from_utf8(entry(1, &a).canonical()).unwrap(),
            r#"[1,"t1",1,1700000001,"user","u1","app.created","app","a1","127.0.0.1",{"x":1,"y":2}]"#
        );
    }

    #[test]
    fn edits_deletions_and_truncation_are_detected() {
        let d = serde_json::json!({});
        let rows = build(4, &d);
        let head = rows[3].2.clone();

        let mut edited = rows.clone();
        edited[1].0.action = "app.deleted";
        assert_eq!(verify(&edited, (4, &head)), Err(ChainBreak { chain_seq: 2, reason: "hash" }));

        let mut deleted = rows.clone();
        deleted.remove(2);
        assert_eq!(verify(&deleted, (4, &head)), Err(ChainBreak { chain_seq: 3, reason: "gap" }));

        let truncated = rows[..3].to_vec();
        assert_eq!(verify(&truncated, (4, &head)), Err(ChainBreak { chain_seq: 4, reason: "head" }));

        // A row re-hashed after an edit no longer matches its successor's link.
        let mut rehashed = rows.clone();
        rehashed[1].0.ip = Some("10.0.0.1");
        rehashed[1].2 = rehashed[1].0.hash(&rehashed[1].1);
        assert_eq!(verify(&rehashed, (4, &head)), Err(ChainBreak { chain_seq: 3, reason: "prev_hash" }));
    }
}
