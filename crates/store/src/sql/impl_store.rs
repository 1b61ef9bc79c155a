//! `impl_store!`: the one body of [`Store`](crate::Store) for every SQL
//! engine. It expands to `impl Store for $store` where `$store` has a
//! `pool: sqlx::Pool<$db>` field; the statements come from `super::queries`
//! and the row decoders from `super::decode`, both engine-agnostic.
//!
//! `begin_write` is how a write transaction starts. SQLite needs
//! `BEGIN IMMEDIATE`: a deferred transaction that reads and then writes can
//! fail at once with SQLITE_BUSY when another writer got in between,
//! without waiting on `busy_timeout`. PostgreSQL takes row locks as it goes,
//! so a plain `BEGIN` is right.
//!
//! `$store` also has `fn doc_writer(&self) -> Option<&DocWriter>`: where
//! document log appends go instead of the pool, if anywhere, and
//! `fn ordered_appender(&self)`: the same writer as a `DocAppender`;
//! `fn doc_log_refusal(&self) -> Result<()>`: an error if this store may not
//! write documents (a SQLite file opened beside its server).
//!
//! `locks` names the module of `super::queries` holding the statements that
//! read rows a write transaction then decides on (a signing key's state, a
//! tenant, due webhook jobs): `locking`, with `FOR UPDATE` on PostgreSQL, so
//! the decision holds until commit; `plain` on SQLite, where
//! `BEGIN IMMEDIATE` already keeps every other writer out (and `FOR UPDATE`
//! is not SQL it knows).
//!
//! Where a method stores a record "for" an argument (a key for a tenant, an
//! invoice for an app), the argument wins over the record's own field, so a
//! row can never land under another tenant or app than the one the caller
//! authorised.

macro_rules! impl_store {
    ($store:ty, $db:ty, begin_write = $begin:literal, locks = $locks:ident) => {
        // An anonymous const scopes the imports to this expansion.
        const _: () = {
            use domain::audit::GENESIS_HASH;
            use domain::ids::{AppId, FamilyId, TenantId, UserId};
            use domain::keys::KeyState;
            use domain::plan::PlanId;
            use domain::role::{Action, Resource, Role};
            use time::OffsetDateTime;
            use $crate::sql::decode;
            use $crate::sql::queries as q;
            use $crate::sql::{
                chain_name, clamp_limit, db_err, group_by_chain, group_by_doc, opt_secs, page, permissions_json, secs,
                to_json,
            };
            use $crate::{
                AppRecord, AuditFilter, AuditRecord, CustomRoleRecord, DeliveryRecord, DocKey, DocRecord, DocState,
                InviteAcceptor, InviteRecord, InvoiceRecord, JobNext, MemberRecord, MfaRecord, NodeHeartbeat,
                NodeRecord, OutboxEvent, Page, PasswordResetRecord, PurgeReport, RefreshKind, RefreshTokenRecord,
                Result, RotateOutcome, SessionRecord, SigningKeyRecord, Store, StoreError, TenantRecord, UserRecord,
                WebhookJobRecord, WebhookRecord,
            };

            impl $store {
                /// Replaces one row's sealed secret and its master key version
                /// (`$1` id, `$2` blob, `$3` version); `NotFound` if no row matched.
                async fn rewrap_row(
                    &self,
                    sql: &'static str,
                    id: &str,
                    enc: &[u8],
                    master_key_version: u32,
                ) -> Result<()> {
                    let done = sqlx::query(sql)
                        .bind(id)
                        .bind(enc)
                        .bind(i64::from(master_key_version))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn write_tx(&self) -> Result<sqlx::Transaction<'static, $db>> {
                    self.pool.begin_with($begin).await.map_err(db_err)
                }

                /// Deletes the parts of every generation of the doc but `current`
                /// (what a crash mid-compaction, or after a switch, left behind).
                async fn delete_stale_parts(&self, app_id: &str, name: &str, current: i64) -> Result<()> {
                    let gens = sqlx::query(q::STALE_SNAPSHOT_GENS)
                        .bind(app_id)
                        .bind(name)
                        .bind(current)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    for row in gens {
                        self.delete_parts(app_id, name, decode::generation(&row)?).await?;
                    }
                    Ok(())
                }

                /// Deletes generation `generation` of the doc's snapshot parts, a few
                /// parts per transaction.
                async fn delete_parts(&self, app_id: &str, name: &str, generation: i64) -> Result<()> {
                    loop {
                        let mut tx = self.write_tx().await?;
                        let deleted = sqlx::query(q::DELETE_SNAPSHOT_PARTS)
                            .bind(app_id)
                            .bind(name)
                            .bind(generation)
                            .bind($crate::sql::PARTS_PER_DELETE)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?
                            .rows_affected();
                        tx.commit().await.map_err(db_err)?;
                        if deleted == 0 {
                            return Ok(());
                        }
                    }
                }

                /// Writes `events` into the outbox on `conn` (inside the
                /// transaction of the change they report).
                async fn insert_outbox(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    for event in events {
                        sqlx::query(q::INSERT_OUTBOX_EVENT)
                            .bind(&event.id)
                            .bind(event.tenant_id.to_string())
                            .bind(event.app_id.map(|a| a.to_string()))
                            .bind(&event.event_type)
                            .bind(&event.payload)
                            .bind(secs(event.created_at))
                            .execute(&mut *conn)
                            .await
                            .map_err(db_err)?;
                    }
                    Ok(())
                }

                /// Enqueues jobs on `conn` in key order, so two batches holding
                /// some of the same (event, webhook) pairs cannot deadlock on
                /// PostgreSQL (each waits on the other's uncommitted insert).
                async fn insert_jobs(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    jobs: &[WebhookJobRecord],
                ) -> Result<u64> {
                    let mut ordered: Vec<&WebhookJobRecord> = jobs.iter().collect();
                    ordered.sort_by(|a, b| (&a.event_id, &a.webhook_id).cmp(&(&b.event_id, &b.webhook_id)));
                    let mut added = 0;
                    for job in ordered {
                        added += sqlx::query(q::ENQUEUE_JOB)
                            .bind(&job.id)
                            .bind(&job.event_id)
                            .bind(&job.webhook_id)
                            .bind(&job.event_type)
                            .bind(&job.payload)
                            .bind(secs(job.next_attempt_at))
                            .bind(secs(job.created_at))
                            .execute(&mut *conn)
                            .await
                            .map_err(db_err)?
                            .rows_affected();
                    }
                    Ok(added)
                }

                async fn insert_user(conn: &mut <$db as sqlx::Database>::Connection, user: &UserRecord) -> Result<()> {
                    sqlx::query(q::INSERT_USER)
                        .bind(user.id.to_string())
                        .bind(&user.email)
                        .bind(&user.password_hash)
                        .bind(user.is_operator)
                        .bind(secs(user.created_at))
                        .bind(user.name.as_deref())
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                /// Inserts the tenant and its first member.
                async fn insert_tenant(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    tenant: &TenantRecord,
                    owner: UserId,
                    role: &str,
                ) -> Result<()> {
                    sqlx::query(q::INSERT_TENANT)
                        .bind(tenant.id.to_string())
                        .bind(&tenant.name)
                        .bind(secs(tenant.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    sqlx::query(q::INSERT_MEMBERSHIP)
                        .bind(tenant.id.to_string())
                        .bind(owner.to_string())
                        .bind(role)
                        .bind(secs(tenant.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                /// Stores `key` under `tenant` in `state`.
                async fn insert_key(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    tenant: TenantId,
                    key: &SigningKeyRecord,
                    state: KeyState,
                ) -> Result<()> {
                    sqlx::query(q::INSERT_KEY)
                        .bind(&key.kid)
                        .bind(tenant.to_string())
                        .bind(state.as_str())
                        .bind(&key.public_n)
                        .bind(&key.public_e)
                        .bind(&key.private_key_enc)
                        .bind(i64::from(key.master_key_version))
                        .bind(secs(key.created_at))
                        .bind(opt_secs(key.retires_at))
                        .bind(opt_secs(key.revoked_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                /// Stores `invoice` for `app` (under the app's tenant, whatever
                /// the record says). `NotFound` if the app does not exist.
                async fn insert_invoice(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    app: AppId,
                    invoice: &InvoiceRecord,
                ) -> Result<()> {
                    let done = sqlx::query(q::INSERT_INVOICE)
                        .bind(invoice.id.to_string())
                        .bind(app.to_string())
                        .bind(to_json(&invoice.lines)?)
                        .bind(invoice.total_cents)
                        .bind(secs(invoice.created_at))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                /// Stores `token` in `family` (app tokens also get `app_id`, so
                /// deleting the app deletes them).
                async fn insert_refresh(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    token: &RefreshTokenRecord,
                    family: FamilyId,
                ) -> Result<()> {
                    let app_id = match token.kind {
                        RefreshKind::App => Some(token.subject.as_str()),
                        RefreshKind::User => None,
                    };
                    sqlx::query(q::INSERT_REFRESH)
                        .bind(&token.token_hash)
                        .bind(family.to_string())
                        .bind(token.kind.as_str())
                        .bind(&token.subject)
                        .bind(&token.client_id)
                        .bind(&token.scope)
                        .bind(secs(token.created_at))
                        .bind(secs(token.expires_at))
                        .bind(opt_secs(token.used_at))
                        .bind(opt_secs(token.revoked_at))
                        .bind(app_id)
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                /// Locks the tenant (PostgreSQL: its row, until commit), so
                /// rules over several of its rows hold. `NotFound` if absent.
                async fn lock_tenant(conn: &mut <$db as sqlx::Database>::Connection, tenant: TenantId) -> Result<()> {
                    sqlx::query(q::$locks::LOCK_TENANT)
                        .bind(tenant.to_string())
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(db_err)?
                        .map(|_| ())
                        .ok_or(StoreError::NotFound)
                }

                /// `Conflict("unknown_role")` unless `role` is built in or one
                /// of the tenant's custom roles (call with the tenant locked).
                async fn check_role(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    tenant: TenantId,
                    role: &str,
                ) -> Result<()> {
                    if Role::parse(role).is_ok() {
                        return Ok(());
                    }
                    let row = sqlx::query(q::COUNT_CUSTOM_ROLE)
                        .bind(tenant.to_string())
                        .bind(role)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    if decode::count(&row)? == 0 {
                        return Err(StoreError::Conflict("unknown_role"));
                    }
                    Ok(())
                }

                /// `Conflict("last_super_admin")` if the tenant has no
                /// `super_admin` left (call with the tenant locked, after the change).
                async fn ensure_super_admin(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    tenant: TenantId,
                ) -> Result<()> {
                    let row = sqlx::query(q::COUNT_SUPER_ADMINS)
                        .bind(tenant.to_string())
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    if decode::count(&row)? == 0 {
                        return Err(StoreError::Conflict("last_super_admin"));
                    }
                    Ok(())
                }

                /// Reserves each event's place at the end of its chain (heads
                /// locked in chain order), computes the links and stores the
                /// new head hashes. Answers `(chain_seq, prev_hash, hash)` per
                /// event, in `events` order.
                async fn chain_events(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    events: &[AuditRecord],
                ) -> Result<Vec<(i64, String, String)>> {
                    let mut links = vec![(0, String::new(), String::new()); events.len()];
                    for (chain, entries) in group_by_chain(events) {
                        let n = i64::try_from(entries.len()).unwrap_or(i64::MAX);
                        let row = sqlx::query(q::RESERVE_AUDIT_SEQS)
                            .bind(&chain)
                            .bind(n)
                            .bind(GENESIS_HASH)
                            .fetch_one(&mut *conn)
                            .await
                            .map_err(db_err)?;
                        let (last_seq, mut prev) = decode::audit_head(&row)?;
                        for (chain_seq, i) in (last_seq - n + 1..).zip(entries) {
                            let hash = events[i].chain_hash(chain_seq, &prev);
                            links[i] = (chain_seq, std::mem::replace(&mut prev, hash.clone()), hash);
                        }
                        sqlx::query(q::SET_AUDIT_HEAD_HASH)
                            .bind(&chain)
                            .bind(&prev)
                            .execute(&mut *conn)
                            .await
                            .map_err(db_err)?;
                    }
                    Ok(links)
                }

                async fn insert_audit(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    events: &[AuditRecord],
                ) -> Result<()> {
                    let links = Self::chain_events(conn, events).await?;
                    for (event, (chain_seq, prev_hash, hash)) in events.iter().zip(links) {
                        sqlx::query(q::INSERT_AUDIT)
                            .bind(event.tenant_id.map(|t| t.to_string()))
                            .bind(secs(event.at))
                            .bind(&event.actor_type)
                            .bind(event.actor_id.as_deref())
                            .bind(&event.action)
                            .bind(event.target_type.as_deref())
                            .bind(event.target_id.as_deref())
                            .bind(event.ip.as_deref())
                            .bind(to_json(&event.details)?)
                            .bind(chain_seq)
                            .bind(prev_hash)
                            .bind(hash)
                            .execute(&mut *conn)
                            .await
                            .map_err(db_err)?;
                    }
                    Ok(())
                }

                async fn insert_membership(
                    conn: &mut <$db as sqlx::Database>::Connection,
                    tenant: TenantId,
                    user: UserId,
                    role: &str,
                    now: OffsetDateTime,
                ) -> Result<()> {
                    sqlx::query(q::INSERT_MEMBERSHIP)
                        .bind(tenant.to_string())
                        .bind(user.to_string())
                        .bind(role)
                        .bind(secs(now))
                        .execute(&mut *conn)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }
            }

            #[async_trait::async_trait]
            impl Store for $store {
                async fn ping(&self) -> Result<()> {
                    sqlx::query(q::PING).execute(&self.pool).await.map_err(db_err)?;
                    Ok(())
                }

                // ---- users and sessions -----------------------------------
                async fn setup_first_user(
                    &self,
                    user: &UserRecord,
                    tenant: &TenantRecord,
                    key: &SigningKeyRecord,
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    // The singleton row first: concurrent setups serialise on
                    // its primary key and all but one get `setup_disabled`.
                    sqlx::query(q::INSERT_SETUP_STATE)
                        .bind(secs(user.created_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let users = sqlx::query(q::COUNT_USERS).fetch_one(&mut *tx).await.map_err(db_err)?;
                    if decode::count(&users)? > 0 {
                        return Err(StoreError::Conflict("setup_disabled"));
                    }
                    Self::insert_user(&mut tx, user).await?;
                    Self::insert_tenant(&mut tx, tenant, user.id, Role::SuperAdmin.as_str()).await?;
                    Self::insert_key(&mut tx, tenant.id, key, key.state).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn create_user(&self, user: &UserRecord) -> Result<()> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    Self::insert_user(&mut conn, user).await
                }

                async fn get_user(&self, id: UserId) -> Result<Option<UserRecord>> {
                    sqlx::query(q::GET_USER)
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::user(&r))
                        .transpose()
                }

                async fn get_user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
                    sqlx::query(q::GET_USER_BY_EMAIL)
                        .bind(email)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::user(&r))
                        .transpose()
                }

                async fn count_users(&self) -> Result<i64> {
                    let row = sqlx::query(q::COUNT_USERS).fetch_one(&self.pool).await.map_err(db_err)?;
                    decode::count(&row)
                }

                async fn create_session(&self, session: &SessionRecord) -> Result<()> {
                    sqlx::query(q::INSERT_SESSION)
                        .bind(&session.token_hash)
                        .bind(session.user_id.to_string())
                        .bind(secs(session.created_at))
                        .bind(secs(session.expires_at))
                        .bind(session.family_id.map(|f| f.to_string()))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                async fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>> {
                    sqlx::query(q::GET_SESSION)
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::session(&r))
                        .transpose()
                }

                async fn delete_session(&self, token_hash: &str) -> Result<bool> {
                    let done =
                        sqlx::query(q::DELETE_SESSION).bind(token_hash).execute(&self.pool).await.map_err(db_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn delete_user_sessions(&self, user_id: UserId) -> Result<u64> {
                    let done = sqlx::query(q::DELETE_USER_SESSIONS)
                        .bind(user_id.to_string())
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected())
                }

                async fn delete_family_sessions(&self, family: FamilyId) -> Result<u64> {
                    let done = sqlx::query(q::DELETE_FAMILY_SESSIONS)
                        .bind(family.to_string())
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected())
                }

                async fn delete_expired_sessions(&self, now: OffsetDateTime) -> Result<u64> {
                    let done = sqlx::query(q::DELETE_EXPIRED_SESSIONS)
                        .bind(secs(now))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected())
                }

                // ---- tenants and memberships ------------------------------
                async fn create_tenant(
                    &self,
                    tenant: &TenantRecord,
                    owner: UserId,
                    owner_role: &str,
                    key: &SigningKeyRecord,
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    Self::insert_tenant(&mut tx, tenant, owner, owner_role).await?;
                    Self::insert_key(&mut tx, tenant.id, key, key.state).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn get_tenant(&self, id: TenantId) -> Result<Option<TenantRecord>> {
                    sqlx::query(q::GET_TENANT)
                        .bind(id.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::tenant(&r))
                        .transpose()
                }

                async fn get_membership(&self, tenant: TenantId, user: UserId) -> Result<Option<String>> {
                    sqlx::query(q::GET_MEMBERSHIP)
                        .bind(tenant.to_string())
                        .bind(user.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::role(&r))
                        .transpose()
                }

                async fn list_user_tenants(&self, user: UserId) -> Result<Vec<(TenantRecord, String)>> {
                    sqlx::query(q::LIST_USER_TENANTS)
                        .bind(user.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(|r| Ok((decode::tenant(r)?, decode::role(r)?)))
                        .collect()
                }

                // ---- signing keys -----------------------------------------
                async fn list_signing_keys(&self, tenant: TenantId) -> Result<Vec<SigningKeyRecord>> {
                    sqlx::query(q::LIST_TENANT_KEYS)
                        .bind(tenant.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::key)
                        .collect()
                }

                async fn get_signing_key(&self, kid: &str) -> Result<Option<SigningKeyRecord>> {
                    sqlx::query(q::GET_KEY)
                        .bind(kid)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::key(&r))
                        .transpose()
                }

                async fn rotate_signing_key(
                    &self,
                    tenant: TenantId,
                    new_key: &SigningKeyRecord,
                    retires_at: OffsetDateTime,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    // Retire first, then insert: within the transaction the
                    // old key has left the one-active-key index before the
                    // new one enters it. A rotation that raced this one and
                    // committed its key after our UPDATE looked makes the
                    // insert fail with `key_conflict` (via `db_err`).
                    sqlx::query(q::RETIRE_ACTIVE_KEYS)
                        .bind(tenant.to_string())
                        .bind(secs(retires_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    Self::insert_key(&mut tx, tenant, new_key, KeyState::Active).await?;
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn revoke_signing_key(
                    &self,
                    tenant: TenantId,
                    kid: &str,
                    now: OffsetDateTime,
                    replacement: Option<&SigningKeyRecord>,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    // The state as of now, held until commit: the caller's
                    // earlier read may predate a rotation.
                    let state = match sqlx::query(q::$locks::KEY_STATE)
                        .bind(tenant.to_string())
                        .bind(kid)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                    {
                        None => return Err(StoreError::NotFound),
                        Some(row) => decode::key_state(&row)?,
                    };
                    if state == KeyState::Revoked {
                        // A no-op, also for the replacement: whoever revoked
                        // it brought their own.
                        return Ok(());
                    }
                    sqlx::query(q::REVOKE_KEY)
                        .bind(tenant.to_string())
                        .bind(kid)
                        .bind(secs(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    // Only the active key is replaced: a retiring one was
                    // rotated out, and the rotation's key is active already.
                    if let (KeyState::Active, Some(key)) = (state, replacement) {
                        Self::insert_key(&mut tx, tenant, key, KeyState::Active).await?;
                    }
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn list_all_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
                    sqlx::query(q::LIST_ALL_KEYS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::key)
                        .collect()
                }

                async fn rewrap_signing_key(
                    &self,
                    kid: &str,
                    private_key_enc: &[u8],
                    master_key_version: u32,
                ) -> Result<()> {
                    self.rewrap_row(q::REWRAP_KEY, kid, private_key_enc, master_key_version).await
                }

                // ---- apps, plans, invoices --------------------------------
                async fn create_app(
                    &self,
                    app: &AppRecord,
                    initial_invoice: Option<&InvoiceRecord>,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(q::INSERT_APP)
                        .bind(app.id.to_string())
                        .bind(app.tenant_id.to_string())
                        .bind(&app.name)
                        .bind(&app.client_id)
                        .bind(&app.client_secret_hash)
                        .bind(&app.region)
                        .bind(app.plan.as_str())
                        .bind(to_json(&app.allowed_domains)?)
                        .bind(&app.environment)
                        .bind(secs(app.created_at))
                        .bind(secs(app.updated_at))
                        .bind(opt_secs(app.secret_rotated_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if let Some(invoice) = initial_invoice {
                        Self::insert_invoice(&mut tx, app.id, invoice).await?;
                    }
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn get_app(&self, tenant: TenantId, app: AppId) -> Result<Option<AppRecord>> {
                    sqlx::query(q::GET_TENANT_APP)
                        .bind(tenant.to_string())
                        .bind(app.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::app(&r))
                        .transpose()
                }

                async fn get_app_by_id(&self, app: AppId) -> Result<Option<AppRecord>> {
                    sqlx::query(q::GET_APP)
                        .bind(app.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::app(&r))
                        .transpose()
                }

                async fn get_app_by_client_id(&self, client_id: &str) -> Result<Option<AppRecord>> {
                    sqlx::query(q::GET_APP_BY_CLIENT_ID)
                        .bind(client_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::app(&r))
                        .transpose()
                }

                async fn list_apps(
                    &self,
                    tenant: TenantId,
                    after: Option<&str>,
                    limit: u32,
                ) -> Result<Page<AppRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_APPS)
                        .bind(tenant.to_string())
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::app)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |a| a.id.to_string()))
                }

                async fn update_app(&self, app: &AppRecord, events: &[OutboxEvent]) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(q::UPDATE_APP)
                        .bind(app.tenant_id.to_string())
                        .bind(app.id.to_string())
                        .bind(&app.name)
                        .bind(to_json(&app.allowed_domains)?)
                        .bind(&app.environment)
                        .bind(secs(app.updated_at))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn delete_app(&self, tenant: TenantId, app: AppId, events: &[OutboxEvent]) -> Result<()> {
                    // Refresh tokens and invoices go by ON DELETE CASCADE.
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(q::DELETE_APP)
                        .bind(tenant.to_string())
                        .bind(app.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    // Its documents went by cascade; what the journal still
                    // holds of them is dropped by the fold, and new appends
                    // to them check the app again (and fail).
                    if let Some(writer) = self.doc_writer() {
                        writer.forget_app(app);
                    }
                    Ok(())
                }

                async fn set_app_secret(
                    &self,
                    app: AppId,
                    client_secret_hash: &str,
                    now: OffsetDateTime,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(q::SET_APP_SECRET)
                        .bind(app.to_string())
                        .bind(client_secret_hash)
                        .bind(secs(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn change_app_plan(
                    &self,
                    app: AppId,
                    from: PlanId,
                    to: PlanId,
                    invoice: &InvoiceRecord,
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    // Compare-and-set on the plan; the partial unique index
                    // refuses a second free app here.
                    let done = sqlx::query(q::SET_APP_PLAN)
                        .bind(app.to_string())
                        .bind(to.as_str())
                        .bind(secs(invoice.created_at))
                        .bind(from.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        // Dropping `tx` rolls back: no invoice either way.
                        let found = sqlx::query(q::APP_EXISTS)
                            .bind(app.to_string())
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        return Err(if decode::count(&found)? > 0 {
                            StoreError::Conflict("plan_changed")
                        } else {
                            StoreError::NotFound
                        });
                    }
                    Self::insert_invoice(&mut tx, app, invoice).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn list_invoices(
                    &self,
                    app: AppId,
                    after: Option<&str>,
                    limit: u32,
                ) -> Result<Page<InvoiceRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_INVOICES)
                        .bind(app.to_string())
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::invoice)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |i| i.id.to_string()))
                }

                // ---- refresh tokens and the deny-list ---------------------
                async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<()> {
                    let mut conn = self.pool.acquire().await.map_err(db_err)?;
                    Self::insert_refresh(&mut conn, token, token.family_id).await
                }

                async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshTokenRecord>> {
                    sqlx::query(q::GET_REFRESH)
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::refresh(&r))
                        .transpose()
                }

                async fn rotate_refresh_token(
                    &self,
                    old_hash: &str,
                    new_token: &RefreshTokenRecord,
                    now: OffsetDateTime,
                ) -> Result<RotateOutcome> {
                    let mut tx = self.write_tx().await?;
                    let marked = sqlx::query(q::MARK_REFRESH_USED)
                        .bind(old_hash)
                        .bind(secs(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    let Some(mut old) = sqlx::query(q::GET_REFRESH)
                        .bind(old_hash)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::refresh(&r))
                        .transpose()?
                    else {
                        return Ok(RotateOutcome::Invalid);
                    };
                    if marked == 1 {
                        // The successor always joins the presented token's
                        // family, so a later reuse revokes it too.
                        Self::insert_refresh(&mut tx, new_token, old.family_id).await?;
                        tx.commit().await.map_err(db_err)?;
                        return Ok(RotateOutcome::Rotated(old));
                    }
                    // Not ours to use. Revoked beats everything (the family is
                    // already dead); a used token is reuse even once expired,
                    // since its successors may still be live.
                    if old.revoked_at.is_some() || old.used_at.is_none() {
                        return Ok(RotateOutcome::Invalid);
                    }
                    sqlx::query(q::REVOKE_FAMILY)
                        .bind(old.family_id.to_string())
                        .bind(secs(now))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    old.revoked_at = Some(now);
                    Ok(RotateOutcome::Reused(old))
                }

                async fn revoke_refresh_family(&self, family: FamilyId, now: OffsetDateTime) -> Result<u64> {
                    let done = sqlx::query(q::REVOKE_FAMILY)
                        .bind(family.to_string())
                        .bind(secs(now))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected())
                }

                async fn deny_jti(&self, jti: &str, expires_at: OffsetDateTime) -> Result<()> {
                    sqlx::query(q::DENY_JTI)
                        .bind(jti)
                        .bind(secs(expires_at))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                async fn is_jti_denied(&self, jti: &str, now: OffsetDateTime) -> Result<bool> {
                    let row = sqlx::query(q::IS_JTI_DENIED)
                        .bind(jti)
                        .bind(secs(now))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(decode::count(&row)? > 0)
                }

                async fn list_denied_jtis(&self, now: OffsetDateTime) -> Result<Vec<(String, OffsetDateTime)>> {
                    let rows =
                        sqlx::query(q::LIST_DENIED_JTIS).bind(secs(now)).fetch_all(&self.pool).await.map_err(db_err)?;
                    rows.iter().map(decode::denied_jti).collect()
                }

                async fn purge_expired(&self, now: OffsetDateTime, retention: time::Duration) -> Result<PurgeReport> {
                    let mut tx = self.write_tx().await?;
                    let mut report = PurgeReport::default();
                    // Each statement takes one cutoff: `now` for what expired,
                    // `now - retention` for what is kept a while to be shown.
                    let before = now - retention;
                    for (sql, cutoff, count) in [
                        (q::DELETE_EXPIRED_JTIS, now, &mut report.denied_jtis),
                        (q::DELETE_EXPIRED_REFRESH, now, &mut report.refresh_tokens),
                        (q::DELETE_EXPIRED_SESSIONS, now, &mut report.sessions),
                        (q::DELETE_DEAD_RESETS, now, &mut report.password_resets),
                        (q::DELETE_OLD_INVITES, before, &mut report.invites),
                        (q::DELETE_OLD_JOBS, before, &mut report.webhook_jobs),
                        (q::DELETE_OLD_DELIVERIES, before, &mut report.webhook_deliveries),
                    ] {
                        *count = sqlx::query(sql)
                            .bind(secs(cutoff))
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?
                            .rows_affected();
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(report)
                }

                // ---- documents --------------------------------------------
                fn doc_appender(&self) -> Option<std::sync::Arc<dyn crate::DocAppender>> {
                    self.ordered_appender()
                }

                async fn append_doc_updates(
                    &self,
                    batch: &[(DocKey, Vec<u8>)],
                    now: OffsetDateTime,
                ) -> Result<Vec<i64>> {
                    if batch.is_empty() {
                        return Ok(Vec::new());
                    }
                    self.doc_log_refusal()?;
                    // A file-backed SQLite store's dedicated writer runs the
                    // same statements (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        return writer.append(batch, now).await;
                    }
                    let docs = group_by_doc(batch);
                    let mut seqs = vec![0; batch.len()];
                    let mut tx = self.write_tx().await?;
                    // One statement per doc reserves its seqs (and, for a doc
                    // of an unknown app, fails the batch on the foreign key)…
                    for doc in &docs {
                        let row = sqlx::query(q::RESERVE_DOC_SEQS)
                            .bind(&doc.app_id)
                            .bind(doc.name)
                            .bind(doc.count)
                            .bind(doc.bytes)
                            .bind(secs(now))
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        let first = decode::last_seq(&row)? - doc.count + 1;
                        for (seq, &i) in (first..).zip(&doc.entries) {
                            seqs[i] = seq;
                        }
                    }
                    // …then the entries go in a few multi-row inserts.
                    let rows: Vec<(&str, &str, i64, &[u8])> = docs
                        .iter()
                        .flat_map(|d| {
                            d.entries.iter().map(|&i| (d.app_id.as_str(), d.name, seqs[i], batch[i].1.as_slice()))
                        })
                        .collect();
                    let mut rest = rows.as_slice();
                    while !rest.is_empty() {
                        let (n, sql) = q::insert_doc_updates(rest.len());
                        let (chunk, tail) = rest.split_at(n);
                        let mut insert = sqlx::query(sql);
                        for &(app_id, name, seq, data) in chunk {
                            insert = insert.bind(app_id).bind(name).bind(seq).bind(data);
                        }
                        insert.execute(&mut *tx).await.map_err(db_err)?;
                        rest = tail;
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(seqs)
                }

                async fn load_doc(&self, key: &DocKey) -> Result<Option<DocState>> {
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    let rows = sqlx::query(q::LOAD_DOC)
                        .bind(key.app_id.to_string())
                        .bind(&key.name)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?;
                    decode::doc_state(&rows)
                }

                /// Writes the snapshot as a new generation of parts, one short
                /// transaction each, then switches to it (see migration 0009):
                /// no transaction holds the write lock for longer than one part.
                /// One compaction of a document at a time (the caller's duty);
                /// even so, the switch checks that every part is there.
                async fn compact_doc(
                    &self,
                    key: &DocKey,
                    snapshot: &[u8],
                    upto_seq: i64,
                    now: OffsetDateTime,
                ) -> Result<()> {
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    self.doc_log_refusal()?;
                    let app_id = key.app_id.to_string();
                    let snapshot_bytes =
                        i64::try_from(snapshot.len()).map_err(|_| StoreError::Conflict("snapshot_too_large"))?;
                    // Refuse what the switch would refuse before writing any part.
                    let seqs = sqlx::query(q::GET_DOC_SEQS)
                        .bind(&app_id)
                        .bind(&key.name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .ok_or(StoreError::NotFound)?;
                    let current = decode::snapshot_gen(&seqs)?;
                    $crate::sql::compaction_refusal(decode::snapshot_seq(&seqs)?, decode::last_seq(&seqs)?, upto_seq)?;
                    self.delete_stale_parts(&app_id, &key.name, current).await?;
                    let generation = current + 1;
                    let parts = $crate::sql::snapshot_parts(snapshot);
                    for (i, part) in parts.iter().enumerate() {
                        let mut tx = self.write_tx().await?;
                        sqlx::query(q::PUT_SNAPSHOT_PART)
                            .bind(&app_id)
                            .bind(&key.name)
                            .bind(generation)
                            .bind(i as i64)
                            .bind(*part)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        tx.commit().await.map_err(db_err)?;
                        #[cfg(test)]
                        $crate::sql::part_written(&key.name).await;
                    }
                    let mut tx = self.write_tx().await?;
                    let totals = sqlx::query(q::SNAPSHOT_PART_TOTALS)
                        .bind(&app_id)
                        .bind(&key.name)
                        .bind(generation)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if decode::part_totals(&totals)? != (parts.len() as i64, snapshot_bytes) {
                        return Err(StoreError::Conflict("concurrent_compaction"));
                    }
                    let stored = sqlx::query(q::SET_DOC_SNAPSHOT)
                        .bind(&app_id)
                        .bind(&key.name)
                        .bind(snapshot_bytes)
                        .bind(upto_seq)
                        .bind(secs(now))
                        .bind(generation)
                        .bind(current)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if stored == 0 {
                        let seqs = sqlx::query(q::GET_DOC_SEQS)
                            .bind(&app_id)
                            .bind(&key.name)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(db_err)?
                            .ok_or(StoreError::NotFound)?;
                        $crate::sql::compaction_refusal(
                            decode::snapshot_seq(&seqs)?,
                            decode::last_seq(&seqs)?,
                            upto_seq,
                        )?;
                        // Another compaction switched generations meanwhile.
                        return Err(StoreError::Conflict("stale_compaction"));
                    }
                    sqlx::query(q::DELETE_DOC_UPDATES_UPTO)
                        .bind(&app_id)
                        .bind(&key.name)
                        .bind(upto_seq)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    sqlx::query(q::RECOUNT_DOC_SIZE)
                        .bind(&app_id)
                        .bind(&key.name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    // The replaced generation goes in short transactions too. If
                    // that fails, the compaction still stands: loads read only the
                    // current generation, and the next compaction deletes the rest.
                    if let Err(e) = self.delete_parts(&app_id, &key.name, current).await {
                        tracing::warn!(error = %e, "deleting a replaced snapshot failed; the next compaction will");
                    }
                    Ok(())
                }

                async fn get_doc(&self, key: &DocKey) -> Result<Option<DocRecord>> {
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    sqlx::query(q::GET_DOC)
                        .bind(key.app_id.to_string())
                        .bind(&key.name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::doc(&r))
                        .transpose()
                }

                async fn list_docs(&self, app: AppId, after: Option<&str>, limit: u32) -> Result<Page<DocRecord>> {
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_DOCS)
                        .bind(app.to_string())
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::doc)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |d| d.name.clone()))
                }

                async fn delete_doc(&self, key: &DocKey, events: &[OutboxEvent]) -> Result<bool> {
                    self.doc_log_refusal()?;
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(q::DELETE_DOC)
                        .bind(key.app_id.to_string())
                        .bind(&key.name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    // Nothing was deleted, so nothing is reported.
                    if done.rows_affected() == 0 {
                        return Ok(false);
                    }
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(true)
                }

                async fn count_docs(&self, app: AppId) -> Result<i64> {
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    let row =
                        sqlx::query(q::COUNT_DOCS).bind(app.to_string()).fetch_one(&self.pool).await.map_err(db_err)?;
                    decode::count(&row)
                }

                async fn doc_log_stats(&self, key: &DocKey) -> Result<(i64, i64)> {
                    // The journal of a SQLite file folded first (see `super::doclog`).
                    if let Some(writer) = self.doc_writer() {
                        writer.flush().await?;
                    }
                    let row = sqlx::query(q::DOC_LOG_STATS)
                        .bind(key.app_id.to_string())
                        .bind(&key.name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?;
                    row.map_or(Ok((0, 0)), |r| decode::doc_log_stats(&r))
                }

                // ---- audit ------------------------------------------------
                async fn append_audit(&self, event: &AuditRecord) -> Result<()> {
                    self.append_audit_many(std::slice::from_ref(event)).await
                }

                async fn append_audit_many(&self, events: &[AuditRecord]) -> Result<()> {
                    if events.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.write_tx().await?;
                    Self::insert_audit(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn backfill_audit_chain(&self) -> Result<u64> {
                    let mut tx = self.write_tx().await?;
                    let rows = sqlx::query(q::$locks::UNCHAINED_AUDIT)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::audit)
                        .collect::<Result<Vec<_>>>()?;
                    if rows.is_empty() {
                        return Ok(0);
                    }
                    let links = Self::chain_events(&mut tx, &rows).await?;
                    for (row, (chain_seq, prev_hash, hash)) in rows.iter().zip(links) {
                        sqlx::query(q::SET_AUDIT_CHAIN)
                            .bind(row.seq)
                            .bind(chain_seq)
                            .bind(prev_hash)
                            .bind(hash)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(u64::try_from(rows.len()).unwrap_or(u64::MAX))
                }

                async fn list_audit(&self, tenant: Option<TenantId>, limit: u32) -> Result<Vec<AuditRecord>> {
                    let limit = i64::from(clamp_limit(limit));
                    let query = match tenant {
                        Some(t) => sqlx::query(q::LIST_TENANT_AUDIT).bind(t.to_string()).bind(limit),
                        None => sqlx::query(q::LIST_PLATFORM_AUDIT).bind(limit),
                    };
                    query.fetch_all(&self.pool).await.map_err(db_err)?.iter().map(decode::audit).collect()
                }

                async fn list_audit_page(
                    &self,
                    filter: &AuditFilter,
                    before_seq: Option<i64>,
                    limit: u32,
                ) -> Result<Page<AuditRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_AUDIT_PAGE)
                        .bind(chain_name(filter.tenant))
                        .bind(before_seq.unwrap_or(i64::MAX))
                        .bind(filter.action.as_deref())
                        .bind(filter.actor_id.as_deref())
                        .bind(opt_secs(filter.since))
                        .bind(opt_secs(filter.until))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::audit)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |e| e.seq.to_string()))
                }

                async fn audit_chain_rows(
                    &self,
                    tenant: Option<TenantId>,
                    after_chain_seq: i64,
                    limit: u32,
                ) -> Result<Vec<AuditRecord>> {
                    sqlx::query(q::AUDIT_CHAIN_ROWS)
                        .bind(chain_name(tenant))
                        .bind(after_chain_seq)
                        .bind(i64::from(clamp_limit(limit)))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::audit)
                        .collect()
                }

                async fn audit_head(&self, tenant: Option<TenantId>) -> Result<Option<(i64, String)>> {
                    sqlx::query(q::AUDIT_HEAD)
                        .bind(chain_name(tenant))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::audit_head(&r))
                        .transpose()
                }

                async fn audit_chains(&self) -> Result<Vec<Option<TenantId>>> {
                    sqlx::query(q::AUDIT_CHAINS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::audit_chain)
                        .collect()
                }

                // ---- members ----------------------------------------------
                async fn add_membership(
                    &self,
                    tenant: TenantId,
                    user: UserId,
                    role: &str,
                    now: OffsetDateTime,
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_tenant(&mut tx, tenant).await?;
                    Self::check_role(&mut tx, tenant, role).await?;
                    Self::insert_membership(&mut tx, tenant, user, role, now).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn list_members(
                    &self,
                    tenant: TenantId,
                    after: Option<&str>,
                    limit: u32,
                ) -> Result<Page<MemberRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_MEMBERS)
                        .bind(tenant.to_string())
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::member)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |m| m.user_id.to_string()))
                }

                async fn get_member(&self, tenant: TenantId, user: UserId) -> Result<Option<MemberRecord>> {
                    sqlx::query(q::GET_MEMBER)
                        .bind(tenant.to_string())
                        .bind(user.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::member(&r))
                        .transpose()
                }

                async fn set_member_role(
                    &self,
                    tenant: TenantId,
                    user: UserId,
                    role: &str,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_tenant(&mut tx, tenant).await?;
                    Self::check_role(&mut tx, tenant, role).await?;
                    let changed = sqlx::query(q::SET_MEMBER_ROLE)
                        .bind(tenant.to_string())
                        .bind(user.to_string())
                        .bind(role)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if changed == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Self::ensure_super_admin(&mut tx, tenant).await?;
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn remove_membership(
                    &self,
                    tenant: TenantId,
                    user: UserId,
                    events: &[OutboxEvent],
                ) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_tenant(&mut tx, tenant).await?;
                    let removed = sqlx::query(q::DELETE_MEMBERSHIP)
                        .bind(tenant.to_string())
                        .bind(user.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if removed == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Self::ensure_super_admin(&mut tx, tenant).await?;
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                // ---- custom roles -----------------------------------------
                async fn create_role(&self, role: &CustomRoleRecord) -> Result<()> {
                    if Role::parse(&role.name).is_ok() {
                        return Err(StoreError::Conflict("role_exists"));
                    }
                    sqlx::query(q::INSERT_ROLE)
                        .bind(role.tenant_id.to_string())
                        .bind(&role.name)
                        .bind(permissions_json(&role.permissions)?)
                        .bind(secs(role.created_at))
                        .bind(secs(role.updated_at))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                async fn get_role(&self, tenant: TenantId, name: &str) -> Result<Option<CustomRoleRecord>> {
                    sqlx::query(q::GET_ROLE)
                        .bind(tenant.to_string())
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::custom_role(&r))
                        .transpose()
                }

                async fn list_roles(&self, tenant: TenantId) -> Result<Vec<CustomRoleRecord>> {
                    sqlx::query(q::LIST_ROLES)
                        .bind(tenant.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::custom_role)
                        .collect()
                }

                async fn update_role_permissions(
                    &self,
                    tenant: TenantId,
                    name: &str,
                    permissions: &[(Resource, Action)],
                    now: OffsetDateTime,
                ) -> Result<()> {
                    let done = sqlx::query(q::UPDATE_ROLE)
                        .bind(tenant.to_string())
                        .bind(name)
                        .bind(permissions_json(permissions)?)
                        .bind(secs(now))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn delete_role(&self, tenant: TenantId, name: &str, now: OffsetDateTime) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_tenant(&mut tx, tenant).await?;
                    let deleted = sqlx::query(q::DELETE_ROLE)
                        .bind(tenant.to_string())
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if deleted == 0 {
                        return Err(StoreError::NotFound);
                    }
                    let uses = sqlx::query(q::COUNT_ROLE_USES)
                        .bind(tenant.to_string())
                        .bind(name)
                        .bind(secs(now))
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if decode::count(&uses)? > 0 {
                        return Err(StoreError::Conflict("role_in_use"));
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                // ---- invites ----------------------------------------------
                async fn create_invite(&self, invite: &InviteRecord) -> Result<()> {
                    let mut tx = self.write_tx().await?;
                    Self::lock_tenant(&mut tx, invite.tenant_id).await?;
                    Self::check_role(&mut tx, invite.tenant_id, &invite.role).await?;
                    sqlx::query(q::INSERT_INVITE)
                        .bind(&invite.id)
                        .bind(invite.tenant_id.to_string())
                        .bind(&invite.email)
                        .bind(&invite.role)
                        .bind(&invite.token_hash)
                        .bind(invite.invited_by.to_string())
                        .bind(secs(invite.created_at))
                        .bind(secs(invite.expires_at))
                        .bind(opt_secs(invite.accepted_at))
                        .bind(invite.accepted_by.map(|u| u.to_string()))
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn list_invites(
                    &self,
                    tenant: TenantId,
                    after: Option<&str>,
                    limit: u32,
                ) -> Result<Page<InviteRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_PENDING_INVITES)
                        .bind(tenant.to_string())
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::invite)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |i| i.id.clone()))
                }

                async fn delete_invite(&self, tenant: TenantId, id: &str) -> Result<bool> {
                    let done = sqlx::query(q::DELETE_INVITE)
                        .bind(tenant.to_string())
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn get_invite_by_token(&self, token_hash: &str) -> Result<Option<InviteRecord>> {
                    sqlx::query(q::GET_INVITE_BY_TOKEN)
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::invite(&r))
                        .transpose()
                }

                async fn accept_invite(
                    &self,
                    token_hash: &str,
                    acceptor: InviteAcceptor<'_>,
                    name: Option<&str>,
                    now: OffsetDateTime,
                    events: &[OutboxEvent],
                ) -> Result<InviteRecord> {
                    let user = acceptor.user_id();
                    let mut tx = self.write_tx().await?;
                    let invite = sqlx::query(q::ACCEPT_INVITE)
                        .bind(token_hash)
                        .bind(secs(now))
                        .bind(user.to_string())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::invite(&r))
                        .transpose()?
                        .ok_or(StoreError::Conflict("invalid_token"))?;
                    Self::lock_tenant(&mut tx, invite.tenant_id).await?;
                    Self::check_role(&mut tx, invite.tenant_id, &invite.role).await?;
                    match acceptor {
                        InviteAcceptor::NewUser(record) => {
                            let named = UserRecord {
                                name: name.map(str::to_owned).or_else(|| record.name.clone()),
                                ..record.clone()
                            };
                            Self::insert_user(&mut tx, &named).await?;
                        }
                        InviteAcceptor::Existing(id) => {
                            if let Some(name) = name {
                                sqlx::query(q::NAME_USER_IF_UNNAMED)
                                    .bind(id.to_string())
                                    .bind(name)
                                    .execute(&mut *tx)
                                    .await
                                    .map_err(db_err)?;
                            }
                        }
                    }
                    Self::insert_membership(&mut tx, invite.tenant_id, user, &invite.role, now).await?;
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(invite)
                }

                // ---- password resets --------------------------------------
                async fn create_password_reset(&self, reset: &PasswordResetRecord) -> Result<()> {
                    sqlx::query(q::INSERT_RESET)
                        .bind(&reset.token_hash)
                        .bind(reset.user_id.to_string())
                        .bind(secs(reset.created_at))
                        .bind(secs(reset.expires_at))
                        .bind(opt_secs(reset.used_at))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(())
                }

                async fn consume_password_reset(
                    &self,
                    token_hash: &str,
                    new_password_hash: &str,
                    now: OffsetDateTime,
                ) -> Result<UserId> {
                    let mut tx = self.write_tx().await?;
                    // The user first, then the token: the user's row lock
                    // (PostgreSQL) orders every reset of one user, whereas
                    // locking two of their tokens first could deadlock.
                    let user = sqlx::query(q::RESET_USER)
                        .bind(token_hash)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::user_id(&r))
                        .transpose()?
                        .ok_or(StoreError::Conflict("invalid_token"))?;
                    let id = user.to_string();
                    sqlx::query(q::$locks::LOCK_USER).bind(&id).fetch_optional(&mut *tx).await.map_err(db_err)?;
                    let consumed = sqlx::query(q::CONSUME_RESET)
                        .bind(token_hash)
                        .bind(secs(now))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    if consumed.is_none() {
                        return Err(StoreError::Conflict("invalid_token"));
                    }
                    sqlx::query(q::SET_USER_PASSWORD)
                        .bind(&id)
                        .bind(new_password_hash)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    sqlx::query(q::DELETE_USER_SESSIONS).bind(&id).execute(&mut *tx).await.map_err(db_err)?;
                    for sql in [q::REVOKE_USER_REFRESH, q::USE_USER_RESETS] {
                        sqlx::query(sql).bind(&id).bind(secs(now)).execute(&mut *tx).await.map_err(db_err)?;
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(user)
                }

                async fn set_user_password(&self, user: UserId, password_hash: &str) -> Result<()> {
                    let done = sqlx::query(q::SET_USER_PASSWORD)
                        .bind(user.to_string())
                        .bind(password_hash)
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                // ---- MFA --------------------------------------------------
                async fn put_pending_mfa(
                    &self,
                    user: UserId,
                    secret_enc: &[u8],
                    master_key_version: u32,
                    now: OffsetDateTime,
                ) -> Result<()> {
                    let done = sqlx::query(q::PUT_PENDING_MFA)
                        .bind(user.to_string())
                        .bind(secret_enc)
                        .bind(i64::from(master_key_version))
                        .bind(secs(now))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::Conflict("mfa_already_enabled"));
                    }
                    Ok(())
                }

                async fn get_mfa(&self, user: UserId) -> Result<Option<MfaRecord>> {
                    sqlx::query(q::GET_MFA)
                        .bind(user.to_string())
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::mfa(&r))
                        .transpose()
                }

                async fn enable_mfa(
                    &self,
                    user: UserId,
                    step: i64,
                    recovery_code_hashes: &[String],
                    now: OffsetDateTime,
                ) -> Result<()> {
                    let id = user.to_string();
                    let mut tx = self.write_tx().await?;
                    let enabled = sqlx::query(q::ENABLE_MFA)
                        .bind(&id)
                        .bind(secs(now))
                        .bind(step)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?
                        .rows_affected();
                    if enabled == 0 {
                        return Err(StoreError::Conflict("mfa_not_pending"));
                    }
                    sqlx::query(q::DELETE_RECOVERY_CODES).bind(&id).execute(&mut *tx).await.map_err(db_err)?;
                    for code in recovery_code_hashes {
                        sqlx::query(q::INSERT_RECOVERY_CODE)
                            .bind(&id)
                            .bind(code)
                            .execute(&mut *tx)
                            .await
                            .map_err(db_err)?;
                    }
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn consume_totp_step(&self, user: UserId, step: i64) -> Result<bool> {
                    let done = sqlx::query(q::CONSUME_TOTP_STEP)
                        .bind(user.to_string())
                        .bind(step)
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn consume_recovery_code(
                    &self,
                    user: UserId,
                    code_hash: &str,
                    now: OffsetDateTime,
                ) -> Result<bool> {
                    let done = sqlx::query(q::CONSUME_RECOVERY_CODE)
                        .bind(user.to_string())
                        .bind(code_hash)
                        .bind(secs(now))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn disable_mfa(&self, user: UserId) -> Result<bool> {
                    let done =
                        sqlx::query(q::DELETE_MFA).bind(user.to_string()).execute(&self.pool).await.map_err(db_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn unused_recovery_codes(&self, user: UserId) -> Result<i64> {
                    let row = sqlx::query(q::COUNT_UNUSED_CODES)
                        .bind(user.to_string())
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    decode::count(&row)
                }

                async fn list_all_mfa_secrets(&self) -> Result<Vec<MfaRecord>> {
                    sqlx::query(q::LIST_ALL_MFA)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::mfa)
                        .collect()
                }

                async fn rewrap_mfa_secret(
                    &self,
                    user: UserId,
                    secret_enc: &[u8],
                    master_key_version: u32,
                ) -> Result<()> {
                    self.rewrap_row(q::REWRAP_MFA, &user.to_string(), secret_enc, master_key_version).await
                }

                // ---- webhooks ---------------------------------------------
                async fn create_webhook(&self, webhook: &WebhookRecord) -> Result<()> {
                    let done = sqlx::query(q::INSERT_WEBHOOK)
                        .bind(&webhook.id)
                        .bind(webhook.tenant_id.to_string())
                        .bind(webhook.app_id.to_string())
                        .bind(&webhook.url)
                        .bind(to_json(&webhook.events)?)
                        .bind(&webhook.secret_enc)
                        .bind(i64::from(webhook.master_key_version))
                        .bind(secs(webhook.created_at))
                        .bind(secs(webhook.updated_at))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn get_webhook(&self, tenant: TenantId, app: AppId, id: &str) -> Result<Option<WebhookRecord>> {
                    sqlx::query(q::GET_WEBHOOK)
                        .bind(tenant.to_string())
                        .bind(app.to_string())
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::webhook(&r))
                        .transpose()
                }

                async fn list_webhooks(
                    &self,
                    app: AppId,
                    after: Option<&str>,
                    limit: u32,
                ) -> Result<Page<WebhookRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_WEBHOOKS)
                        .bind(app.to_string())
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::webhook)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |w| w.id.clone()))
                }

                async fn update_webhook(&self, webhook: &WebhookRecord) -> Result<()> {
                    let done = sqlx::query(q::UPDATE_WEBHOOK)
                        .bind(webhook.tenant_id.to_string())
                        .bind(webhook.app_id.to_string())
                        .bind(&webhook.id)
                        .bind(&webhook.url)
                        .bind(to_json(&webhook.events)?)
                        .bind(secs(webhook.updated_at))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn set_webhook_secret(
                    &self,
                    id: &str,
                    secret_enc: &[u8],
                    master_key_version: u32,
                    now: OffsetDateTime,
                ) -> Result<()> {
                    let done = sqlx::query(q::SET_WEBHOOK_SECRET)
                        .bind(id)
                        .bind(secret_enc)
                        .bind(i64::from(master_key_version))
                        .bind(secs(now))
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound);
                    }
                    Ok(())
                }

                async fn delete_webhook(&self, tenant: TenantId, app: AppId, id: &str) -> Result<bool> {
                    let done = sqlx::query(q::DELETE_WEBHOOK)
                        .bind(tenant.to_string())
                        .bind(app.to_string())
                        .bind(id)
                        .execute(&self.pool)
                        .await
                        .map_err(db_err)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn webhooks_for_tenant(&self, tenant: TenantId) -> Result<Vec<WebhookRecord>> {
                    sqlx::query(q::TENANT_WEBHOOKS)
                        .bind(tenant.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::webhook)
                        .collect()
                }

                async fn list_all_webhook_secrets(&self) -> Result<Vec<WebhookRecord>> {
                    sqlx::query(q::LIST_ALL_WEBHOOKS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::webhook)
                        .collect()
                }

                async fn rewrap_webhook_secret(
                    &self,
                    id: &str,
                    secret_enc: &[u8],
                    master_key_version: u32,
                ) -> Result<()> {
                    self.rewrap_row(q::REWRAP_WEBHOOK, id, secret_enc, master_key_version).await
                }

                // ---- webhook outbox ---------------------------------------
                async fn enqueue_webhook_jobs(&self, jobs: &[WebhookJobRecord]) -> Result<u64> {
                    if jobs.is_empty() {
                        return Ok(0);
                    }
                    let mut tx = self.write_tx().await?;
                    let added = Self::insert_jobs(&mut tx, jobs).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(added)
                }

                async fn insert_events(&self, events: &[OutboxEvent]) -> Result<()> {
                    if events.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.write_tx().await?;
                    Self::insert_outbox(&mut tx, events).await?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn pending_events(&self, limit: u32) -> Result<Vec<OutboxEvent>> {
                    sqlx::query(q::PENDING_OUTBOX_EVENTS)
                        .bind(i64::from(clamp_limit(limit)))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::outbox_event)
                        .collect()
                }

                async fn fan_out_event(&self, event_id: &str, jobs: &[WebhookJobRecord]) -> Result<u64> {
                    let mut tx = self.write_tx().await?;
                    let added = Self::insert_jobs(&mut tx, jobs).await?;
                    sqlx::query(q::DELETE_OUTBOX_EVENT).bind(event_id).execute(&mut *tx).await.map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(added)
                }

                async fn claim_webhook_jobs(
                    &self,
                    now: OffsetDateTime,
                    lease_until: OffsetDateTime,
                    limit: u32,
                ) -> Result<Vec<WebhookJobRecord>> {
                    let mut jobs = sqlx::query(q::$locks::CLAIM_JOBS)
                        .bind(secs(now))
                        .bind(secs(lease_until))
                        .bind(i64::from(clamp_limit(limit)))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::job)
                        .collect::<Result<Vec<_>>>()?;
                    // RETURNING keeps no order.
                    jobs.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
                    Ok(jobs)
                }

                async fn finish_webhook_attempt(
                    &self,
                    job_id: &str,
                    delivery: &DeliveryRecord,
                    next: JobNext,
                ) -> Result<()> {
                    let (status, next_attempt_at) = match next {
                        JobNext::Delivered => ("delivered", None),
                        JobNext::Retry { at } => ("pending", Some(secs(at))),
                        JobNext::Failed => ("failed", None),
                    };
                    let mut tx = self.write_tx().await?;
                    let finished = sqlx::query(q::FINISH_JOB)
                        .bind(job_id)
                        .bind(status)
                        .bind(next_attempt_at)
                        .bind(secs(delivery.at))
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    let Some(row) = finished else {
                        let found = sqlx::query(q::COUNT_JOB).bind(job_id).fetch_one(&mut *tx).await.map_err(db_err)?;
                        return Err(if decode::count(&found)? > 0 {
                            StoreError::Conflict("job_not_pending")
                        } else {
                            StoreError::NotFound
                        });
                    };
                    let (webhook_id, event_id, event_type, attempt) = decode::finished_job(&row)?;
                    sqlx::query(q::INSERT_DELIVERY)
                        .bind(webhook_id)
                        .bind(job_id)
                        .bind(event_id)
                        .bind(event_type)
                        .bind(attempt)
                        .bind(secs(delivery.at))
                        .bind(delivery.status_code.map(i64::from))
                        .bind(delivery.latency_ms)
                        .bind(delivery.error.as_deref())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                    tx.commit().await.map_err(db_err)?;
                    Ok(())
                }

                async fn list_webhook_deliveries(
                    &self,
                    webhook: &str,
                    before_seq: Option<i64>,
                    limit: u32,
                ) -> Result<Page<DeliveryRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_DELIVERIES)
                        .bind(webhook)
                        .bind(before_seq.unwrap_or(i64::MAX))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::delivery)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |d| d.seq.to_string()))
                }

                async fn get_webhook_job(&self, id: &str) -> Result<Option<WebhookJobRecord>> {
                    sqlx::query(q::GET_JOB)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::job(&r))
                        .transpose()
                }

                // ---- node registry ----------------------------------------
                async fn node_heartbeat(&self, beat: &NodeHeartbeat, now: OffsetDateTime) -> Result<NodeRecord> {
                    let row = sqlx::query(q::NODE_HEARTBEAT)
                        .bind(&beat.id)
                        .bind(&beat.region)
                        .bind(&beat.url)
                        .bind(&beat.instance)
                        .bind(secs(beat.started_at))
                        .bind(secs(now))
                        .bind(beat.connections)
                        .bind(beat.documents)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(db_err)?;
                    decode::node(&row)
                }

                async fn get_node(&self, id: &str) -> Result<Option<NodeRecord>> {
                    sqlx::query(q::GET_NODE)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::node(&r))
                        .transpose()
                }

                async fn list_nodes(&self, after: Option<&str>, limit: u32) -> Result<Page<NodeRecord>> {
                    let limit = clamp_limit(limit);
                    let items = sqlx::query(q::LIST_NODES)
                        .bind(after.unwrap_or_default())
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_err)?
                        .iter()
                        .map(decode::node)
                        .collect::<Result<Vec<_>>>()?;
                    Ok(page(items, limit, |n| n.id.clone()))
                }

                async fn set_node_draining(&self, id: &str, draining: bool) -> Result<Option<NodeRecord>> {
                    sqlx::query(q::SET_NODE_DRAINING)
                        .bind(id)
                        .bind(draining)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db_err)?
                        .map(|r| decode::node(&r))
                        .transpose()
                }
            }
        };
    };
}
