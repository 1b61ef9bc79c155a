//! Rows to records, written once for both engines over the small [`Cols`]
//! interface. A stored value the records cannot hold (an unknown key state,
//! a malformed id or JSON, a column of the wrong type) is
//! [`StoreError::Corrupt`], never a panic.

use crate::{
    AppRecord, AuditRecord, CustomRoleRecord, DeliveryRecord, DocRecord, DocState, InviteRecord, InvoiceRecord,
    JobStatus, MemberRecord, MfaRecord, NodeRecord, OutboxEvent, RefreshKind, RefreshTokenRecord, Result,
    SessionRecord, SigningKeyRecord, StoreError, TenantRecord, UserRecord, WebhookJobRecord, WebhookRecord,
};
use domain::ids::{AppId, FamilyId, InvoiceId, TenantId, UserId};
use domain::keys::KeyState;
use domain::plan::PlanId;
use serde::de::DeserializeOwned;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

/// Typed column access by name; implemented for each engine's row type.
pub(super) trait Cols {
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn blob(&self, col: &str) -> Result<Vec<u8>>;
    fn flag(&self, col: &str) -> Result<bool>;

    fn time(&self, col: &str) -> Result<OffsetDateTime> {
        to_time(col, self.int(col)?)
    }
    fn opt_time(&self, col: &str) -> Result<Option<OffsetDateTime>> {
        self.opt_int(col)?.map(|s| to_time(col, s)).transpose()
    }
    fn uuid(&self, col: &str) -> Result<Uuid> {
        let s = self.text(col)?;
        Uuid::parse_str(&s).map_err(|_| corrupt(col, &format!("not a uuid: {s:?}")))
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>> {
        self.opt_text(col)?
            .map(|s| Uuid::parse_str(&s).map_err(|_| corrupt(col, &format!("not a uuid: {s:?}"))))
            .transpose()
    }
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T> {
        serde_json::from_str(&self.text(col)?).map_err(|e| corrupt(col, &format!("bad JSON: {e}")))
    }
}

macro_rules! impl_cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, col: &str) -> Result<String> {
                self.try_get(col).map_err(|e| corrupt(col, &e.to_string()))
            }
            fn opt_text(&self, col: &str) -> Result<Option<String>> {
                self.try_get(col).map_err(|e| corrupt(col, &e.to_string()))
            }
            fn int(&self, col: &str) -> Result<i64> {
                self.try_get(col).map_err(|e| corrupt(col, &e.to_string()))
            }
            fn opt_int(&self, col: &str) -> Result<Option<i64>> {
                self.try_get(col).map_err(|e| corrupt(col, &e.to_string()))
            }
            fn blob(&self, col: &str) -> Result<Vec<u8>> {
                self.try_get(col).map_err(|e| corrupt(col, &e.to_string()))
            }
            fn flag(&self, col: &str) -> Result<bool> {
                self.try_get(col).map_err(|e| corrupt(col, &e.to_string()))
            }
        }
    };
}

impl_cols!(sqlx::sqlite::SqliteRow);
impl_cols!(sqlx::postgres::PgRow);

fn corrupt(col: &str, why: &str) -> StoreError {
    StoreError::Corrupt(format!("column {col}: {why}"))
}

fn to_time(col: &str, secs: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|_| corrupt(col, &format!("time out of range: {secs}")))
}

pub(super) fn count(r: &impl Cols) -> Result<i64> {
    r.int("n")
}

pub(super) fn user(r: &impl Cols) -> Result<UserRecord> {
    Ok(UserRecord {
        id: UserId::from_uuid(r.uuid("id")?),
        email: r.text("email")?,
        password_hash: r.text("password_hash")?,
        is_operator: r.flag("is_operator")?,
        name: r.opt_text("name")?,
        created_at: r.time("created_at")?,
    })
}

pub(super) fn session(r: &impl Cols) -> Result<SessionRecord> {
    Ok(SessionRecord {
        token_hash: r.text("token_hash")?,
        user_id: UserId::from_uuid(r.uuid("user_id")?),
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        family_id: r.opt_uuid("family_id")?.map(FamilyId::from_uuid),
    })
}

pub(super) fn tenant(r: &impl Cols) -> Result<TenantRecord> {
    Ok(TenantRecord {
        id: TenantId::from_uuid(r.uuid("id")?),
        name: r.text("name")?,
        created_at: r.time("created_at")?,
    })
}

pub(super) fn role(r: &impl Cols) -> Result<String> {
    r.text("role")
}

pub(super) fn key(r: &impl Cols) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.text("kid")?,
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        state: key_state(r)?,
        public_n: r.text("public_n")?,
        public_e: r.text("public_e")?,
        private_key_enc: r.blob("private_key_enc")?,
        master_key_version: key_version(r)?,
        created_at: r.time("created_at")?,
        retires_at: r.opt_time("retires_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

pub(super) fn key_state(r: &impl Cols) -> Result<KeyState> {
    let state = r.text("state")?;
    KeyState::parse(&state).ok_or_else(|| corrupt("state", &format!("unknown key state {state:?}")))
}

pub(super) fn app(r: &impl Cols) -> Result<AppRecord> {
    let plan = r.text("plan")?;
    Ok(AppRecord {
        id: AppId::from_uuid(r.uuid("id")?),
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        name: r.text("name")?,
        client_id: r.text("client_id")?,
        client_secret_hash: r.text("client_secret_hash")?,
        region: r.text("region")?,
        plan: PlanId::parse(&plan).map_err(|_| corrupt("plan", &format!("unknown plan {plan:?}")))?,
        allowed_domains: r.json("allowed_domains")?,
        environment: r.text("environment")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        secret_rotated_at: r.opt_time("secret_rotated_at")?,
    })
}

pub(super) fn node(r: &impl Cols) -> Result<NodeRecord> {
    Ok(NodeRecord {
        id: r.text("id")?,
        region: r.text("region")?,
        url: r.text("url")?,
        draining: r.flag("draining")?,
        instance: r.text("instance")?,
        started_at: r.time("started_at")?,
        last_heartbeat_at: r.time("last_heartbeat_at")?,
        connections: r.int("connections")?,
        documents: r.int("documents")?,
    })
}

pub(super) fn invoice(r: &impl Cols) -> Result<InvoiceRecord> {
    Ok(InvoiceRecord {
        id: InvoiceId::from_uuid(r.uuid("id")?),
        app_id: AppId::from_uuid(r.uuid("app_id")?),
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        lines: r.json("lines")?,
        total_cents: r.int("total_cents")?,
        created_at: r.time("created_at")?,
    })
}

pub(super) fn refresh(r: &impl Cols) -> Result<RefreshTokenRecord> {
    let kind = r.text("kind")?;
    Ok(RefreshTokenRecord {
        token_hash: r.text("token_hash")?,
        family_id: FamilyId::from_uuid(r.uuid("family_id")?),
        kind: RefreshKind::parse(&kind).ok_or_else(|| corrupt("kind", &format!("unknown token kind {kind:?}")))?,
        subject: r.text("subject")?,
        client_id: r.text("client_id")?,
        scope: r.text("scope")?,
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        used_at: r.opt_time("used_at")?,
        revoked_at: r.opt_time("revoked_at")?,
    })
}

pub(super) fn audit(r: &impl Cols) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.int("seq")?,
        tenant_id: r.opt_uuid("tenant_id")?.map(TenantId::from_uuid),
        at: r.time("at")?,
        actor_type: r.text("actor_type")?,
        actor_id: r.opt_text("actor_id")?,
        action: r.text("action")?,
        target_type: r.opt_text("target_type")?,
        target_id: r.opt_text("target_id")?,
        ip: r.opt_text("ip")?,
        details: r.json("details")?,
        // NULL only for rows not chained yet (see `backfill_audit_chain`).
        chain_seq: r.opt_int("chain_seq")?.unwrap_or(0),
        prev_hash: r.opt_text("prev_hash")?.unwrap_or_default(),
        hash: r.opt_text("hash")?.unwrap_or_default(),
    })
}

/// `(last_seq, last_hash)` of an audit chain head (`RESERVE_AUDIT_SEQS`, `AUDIT_HEAD`).
pub(super) fn audit_head(r: &impl Cols) -> Result<(i64, String)> {
    Ok((r.int("last_seq")?, r.text("last_hash")?))
}

/// An `audit_heads.chain`: '' for the platform chain, else a tenant id.
pub(super) fn audit_chain(r: &impl Cols) -> Result<Option<TenantId>> {
    let chain = r.text("chain")?;
    if chain.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(&chain)
        .map(|u| Some(TenantId::from_uuid(u)))
        .map_err(|_| corrupt("chain", &format!("not a tenant id: {chain:?}")))
}

pub(super) fn member(r: &impl Cols) -> Result<MemberRecord> {
    Ok(MemberRecord {
        user_id: UserId::from_uuid(r.uuid("user_id")?),
        email: r.text("email")?,
        name: r.opt_text("name")?,
        role: r.text("role")?,
        mfa_enabled: r.opt_int("mfa_enabled_at")?.is_some(),
        joined_at: r.time("created_at")?,
    })
}

pub(super) fn custom_role(r: &impl Cols) -> Result<CustomRoleRecord> {
    let permissions: Vec<super::Permission> = r.json("permissions")?;
    Ok(CustomRoleRecord {
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        name: r.text("name")?,
        permissions: permissions.into_iter().map(|p| (p.resource, p.action)).collect(),
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(super) fn invite(r: &impl Cols) -> Result<InviteRecord> {
    Ok(InviteRecord {
        id: r.text("id")?,
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        email: r.text("email")?,
        role: r.text("role")?,
        token_hash: r.text("token_hash")?,
        invited_by: UserId::from_uuid(r.uuid("invited_by")?),
        created_at: r.time("created_at")?,
        expires_at: r.time("expires_at")?,
        accepted_at: r.opt_time("accepted_at")?,
        accepted_by: r.opt_uuid("accepted_by")?.map(UserId::from_uuid),
    })
}

pub(super) fn user_id(r: &impl Cols) -> Result<UserId> {
    Ok(UserId::from_uuid(r.uuid("user_id")?))
}

fn key_version(r: &impl Cols) -> Result<u32> {
    let version = r.int("master_key_version")?;
    u32::try_from(version).map_err(|_| corrupt("master_key_version", &format!("out of range: {version}")))
}

pub(super) fn mfa(r: &impl Cols) -> Result<MfaRecord> {
    Ok(MfaRecord {
        user_id: UserId::from_uuid(r.uuid("user_id")?),
        secret_enc: r.blob("secret_enc")?,
        master_key_version: key_version(r)?,
        created_at: r.time("created_at")?,
        enabled_at: r.opt_time("enabled_at")?,
        last_step: r.opt_int("last_step")?,
    })
}

pub(super) fn webhook(r: &impl Cols) -> Result<WebhookRecord> {
    Ok(WebhookRecord {
        id: r.text("id")?,
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        app_id: AppId::from_uuid(r.uuid("app_id")?),
        url: r.text("url")?,
        events: r.json("events")?,
        secret_enc: r.blob("secret_enc")?,
        master_key_version: key_version(r)?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(super) fn job(r: &impl Cols) -> Result<WebhookJobRecord> {
    let status = r.text("status")?;
    Ok(WebhookJobRecord {
        id: r.text("id")?,
        event_id: r.text("event_id")?,
        webhook_id: r.text("webhook_id")?,
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        event_type: r.text("event_type")?,
        payload: r.text("payload")?,
        attempt: r.int("attempt")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| corrupt("status", &format!("unknown job status {status:?}")))?,
        next_attempt_at: r.time("next_attempt_at")?,
        locked_until: r.opt_time("locked_until")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

pub(super) fn outbox_event(r: &impl Cols) -> Result<OutboxEvent> {
    Ok(OutboxEvent {
        id: r.text("id")?,
        tenant_id: TenantId::from_uuid(r.uuid("tenant_id")?),
        app_id: r.opt_uuid("app_id")?.map(AppId::from_uuid),
        event_type: r.text("event_type")?,
        payload: r.text("payload")?,
        created_at: r.time("created_at")?,
    })
}

/// The job fields `FINISH_JOB` returns, for the delivery row.
pub(super) fn finished_job(r: &impl Cols) -> Result<(String, String, String, i64)> {
    Ok((r.text("webhook_id")?, r.text("event_id")?, r.text("event_type")?, r.int("attempt")?))
}

pub(super) fn delivery(r: &impl Cols) -> Result<DeliveryRecord> {
    let status_code = r
        .opt_int("status_code")?
        .map(|c| u16::try_from(c).map_err(|_| corrupt("status_code", &format!("out of range: {c}"))))
        .transpose()?;
    Ok(DeliveryRecord {
        seq: r.int("seq")?,
        webhook_id: r.text("webhook_id")?,
        job_id: r.text("job_id")?,
        event_id: r.text("event_id")?,
        event_type: r.text("event_type")?,
        attempt: r.int("attempt")?,
        at: r.time("at")?,
        status_code,
        latency_ms: r.int("latency_ms")?,
        error: r.opt_text("error")?,
    })
}

pub(super) fn doc(r: &impl Cols) -> Result<DocRecord> {
    Ok(DocRecord {
        app_id: AppId::from_uuid(r.uuid("app_id")?),
        name: r.text("name")?,
        size_bytes: r.int("size_bytes")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
    })
}

/// The rows of `LOAD_DOC`: the doc row (`part` 0) first, then the log in
/// seq order. No rows: the doc does not exist.
pub(super) fn doc_state(rows: &[impl Cols]) -> Result<Option<DocState>> {
    let Some((head, rest)) = rows.split_first() else {
        return Ok(None);
    };
    if head.int("part")? != 0 {
        return Err(corrupt("part", "log entries without their document"));
    }
    let last_seq = head.opt_int("last_seq")?.ok_or_else(|| corrupt("last_seq", "NULL"))?;
    let mut snapshot: Option<Vec<u8>> = None;
    let mut updates = Vec::new();
    for r in rest {
        match r.int("part")? {
            1 => snapshot.get_or_insert_with(Vec::new).extend_from_slice(&r.blob("data")?),
            2 => updates.push(r.blob("data")?),
            _ => return Err(corrupt("part", "a second document row")),
        }
    }
    Ok(Some(DocState { snapshot, updates, last_seq }))
}

pub(super) fn snapshot_gen(r: &impl Cols) -> Result<i64> {
    r.int("snapshot_gen")
}

/// (number of parts, their total length).
pub(super) fn part_totals(r: &impl Cols) -> Result<(i64, i64)> {
    Ok((r.int("n")?, r.int("bytes")?))
}

pub(super) fn generation(r: &impl Cols) -> Result<i64> {
    r.int("gen")
}

pub(super) fn last_seq(r: &impl Cols) -> Result<i64> {
    r.int("last_seq")
}

pub(super) fn snapshot_seq(r: &impl Cols) -> Result<i64> {
    r.int("snapshot_seq")
}

pub(super) fn doc_log_stats(r: &impl Cols) -> Result<(i64, i64)> {
    Ok((r.int("n")?, r.int("bytes")?))
}

pub(super) fn denied_jti(r: &impl Cols) -> Result<(String, OffsetDateTime)> {
    Ok((r.text("jti")?, to_time("expires_at", r.int("expires_at")?)?))
}
