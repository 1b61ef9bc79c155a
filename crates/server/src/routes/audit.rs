//! The tenant's audit trail: a filtered, paged read, and a check of its hash
//! chain. Nothing here (or anywhere) changes or deletes an entry.

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, HumanSession};
use crate::routes::{ErrorSchema, Paged, encode_cursor};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use domain::role::{Action, Resource};
use serde::{Deserialize, Serialize};
use store::{AuditFilter, AuditRecord};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this action, e.g. `app.created`.
    pub action: Option<String>,
    /// Only entries by this actor id (a user id, an app's client id…).
    pub actor: Option<String>,
    /// RFC 3339; entries at or after.
    pub since: Option<String>,
    /// RFC 3339; entries at or before.
    pub until: Option<String>,
    /// 1–500, default 50.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn rfc3339(field: &str, v: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    v.map(|s| {
        OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| ApiError::bad_request("invalid_query", format!("{field} must be an RFC 3339 timestamp")))
    })
    .transpose()
}

#[derive(Serialize, ToSchema)]
pub struct Party {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    /// Unique and increasing across the whole trail.
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    pub actor: Party,
    pub action: String,
    pub target: Option<Party>,
    pub ip: Option<String>,
    /// Extra facts (never secrets).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Position in the tenant's chain (1, 2, 3…).
    pub chain_seq: i64,
    pub prev_hash: String,
    /// `hex(SHA-256(prev_hash ‖ "\n" ‖ canonical entry))`.
    pub hash: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.seq.to_string(),
            at: r.at,
            actor: Party { kind: r.actor_type, id: r.actor_id },
            action: r.action,
            target: r.target_type.map(|kind| Party { kind, id: r.target_id }),
            ip: r.ip,
            details: r.details,
            chain_seq: r.chain_seq,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// The tenant's audit trail, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tid}/audit", tag = "audit", security(("session" = [])),
    params(("tid" = String, Path), AuditQuery),
    responses((status = 200, body = Paged<AuditEntry>), (status = 400, body = ErrorSchema),
        (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn list_audit(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Paged<AuditEntry>>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Audit, Action::Read).await?;
    let page = crate::routes::PageQuery { limit: q.limit, cursor: q.cursor.clone() };
    let limit = page.limit()?;
    let before = page
        .after()?
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is not one this server issued"))
        })
        .transpose()?;
    let filter = AuditFilter {
        tenant: Some(tenant.id),
        action: q.action.filter(|s| !s.is_empty()),
        actor_id: q.actor.filter(|s| !s.is_empty()),
        since: rfc3339("since", q.since.as_deref())?,
        until: rfc3339("until", q.until.as_deref())?,
    };
    let found = state.store.list_audit_page(&filter, before, limit).await?;
    Ok(Json(Paged {
        next_cursor: found.next_after.as_deref().map(encode_cursor),
        items: found.items.into_iter().map(AuditEntry::from).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
pub struct ChainReport {
    /// `true` when every entry links to the one before and hashes to what it says.
    pub ok: bool,
    /// Entries checked.
    pub entries: u64,
    /// The chain head (the last entry's hash) that was checked against.
    pub head_hash: Option<String>,
    /// Where the chain breaks: the first bad position…
    pub broken_at: Option<i64>,
    /// …and why: `gap` (an entry is missing), `prev_hash` (an entry does not
    /// link to its predecessor), `hash` (an entry was edited), `head`
    /// (entries at the end are missing).
    pub reason: Option<String>,
}

/// Re-computes the tenant's hash chain.
#[utoipa::path(get, path = "/v1/tenants/{tid}/audit/verify", tag = "audit", security(("session" = [])),
    params(("tid" = String, Path)),
    responses((status = 200, body = ChainReport), (status = 403, body = ErrorSchema), (status = 404, body = ErrorSchema)))]
pub async fn verify_audit(
    State(state): State<AppState>,
    session: HumanSession,
    ApiPath(tid): ApiPath<String>,
) -> Result<Json<ChainReport>, ApiError> {
    let (tenant, _) = state.authorize(&session, &tid, Resource::Audit, Action::Read).await?;
    Ok(Json(chain_report(state.store.as_ref(), Some(tenant.id)).await?))
}

/// Verifies one chain (`None`: the platform's), for the API and the CLI.
pub async fn chain_report(
    store: &dyn store::Store,
    tenant: Option<domain::ids::TenantId>,
) -> store::Result<ChainReport> {
    let head = store.audit_head(tenant).await?;
    let verdict = store::verify_audit_chain(store, tenant, store::AUDIT_VERIFY_PAGE).await?;
    Ok(match verdict {
        Ok(entries) => ChainReport { ok: true, entries, head_hash: head.map(|h| h.1), broken_at: None, reason: None },
        Err(b) => ChainReport {
            ok: false,
            entries: 0,
            head_hash: head.map(|h| h.1),
            broken_at: Some(b.chain_seq),
            reason: Some(b.reason.to_owned()),
        },
    })
}
