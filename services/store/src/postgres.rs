//! [`PgStore`]: the production [`JobStore`] on Postgres.
//!
//! The queries are grouped by concern of [`JobStore`], a module each: `tenants` (tenants, quotas,
//! usage, API keys), `batches` (submit, read, cancel), `dispatch` (what to publish next, the
//! backlog), `workers` (presence, model limits), `leases` (claim, heartbeat, complete, fail) and
//! `maintenance` (rescue, retry, requeue, leadership), `console` (batch listing, reviews,
//! console sessions) and `retention` (the statements of the purge of
//! finished batches' job rows); `columns` holds the column lists and the row decoding they share.
//! Batch progress is kept by triggers (migration 0007), and `listen` follows their notifications
//! for [`JobStore::batch_changes`].

mod batches;
mod columns;
mod console;
mod dispatch;
mod leases;
mod listen;
mod maintenance;
mod retention;
mod tenants;
mod webhooks;
mod workers;

pub(crate) use workers::PRESENCE_PRUNE_AFTER;

use async_trait::async_trait;
use pixelfarm_core::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::db;

/// The database every Postgres server has, where a missing database is created from.
const MAINTENANCE_DB: &str = "postgres";

/// Postgres job store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The batch change feed, shared by the clones of the store.
    listener: Arc<listen::Listener>,
}

impl PgStore {
    /// Connect with up to `max_connections` pooled connections.
    ///
    /// # Errors
    /// `Invalid` for a malformed URL, `Transient` when the server is unreachable.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| {
            Error::with_source(ErrorKind::Invalid, "database.url is not a postgres url", e)
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(db("cannot connect to postgres"))?;
        Ok(PgStore {
            pool,
            listener: Arc::new(listen::Listener::new()),
        })
    }

    /// Create the database `url` names when the server says it does not exist, connecting to the
    /// `postgres` maintenance database of the same server as the same user; returns whether it
    /// created it. A fresh server then needs only `pixelfarm-scheduler migrate`.
    ///
    /// # Errors
    /// `Invalid` for a malformed URL; `Transient` when the server is unreachable; the server's
    /// error when the user may not create databases.
    pub async fn create_database_if_missing(url: &str) -> Result<bool> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| {
            Error::with_source(ErrorKind::Invalid, "database.url is not a postgres url", e)
        })?;
        let Some(name) = opts.get_database().map(str::to_owned) else {
            // No database in the URL: the server's default (the user's own) is used.
            return Ok(false);
        };
        match PgConnection::connect_with(&opts).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(false);
            }
            // invalid_catalog_name: the database does not exist
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
            Err(e) => return Err(db("cannot connect to postgres")(e)),
        }
        let mut admin = PgConnection::connect_with(&opts.clone().database(MAINTENANCE_DB))
            .await
            .map_err(db(
                "cannot connect to the `postgres` database to create the missing database",
            ))?;
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        let created = match sqlx::query(&create).execute(&mut admin).await {
            Ok(_) => true,
            // duplicate_database: another process created it meanwhile
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => false,
            Err(e) => return Err(db("cannot create the database")(e)),
        };
        let _ = admin.close().await;
        Ok(created)
    }

    /// Apply the migrations in `migrations/postgres` (idempotent; sqlx takes its own lock).
    ///
    /// # Errors
    /// `Transient`/`Permanent` from the database.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("../../migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| Error::with_source(ErrorKind::Permanent, "postgres migrations failed", e))
    }

    /// The underlying pool (for tests and tools).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<TenantId> {
        tenants::create_tenant(&self.pool, name, weight).await
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantId>> {
        tenants::tenant_by_name(&self.pool, name).await
    }

    async fn tenant(&self, tenant: TenantId) -> Result<TenantInfo> {
        tenants::tenant(&self.pool, tenant).await
    }

    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()> {
        tenants::set_quota(&self.pool, tenant, quota).await
    }

    async fn set_retention(&self, tenant: TenantId, retention: Option<Retention>) -> Result<()> {
        tenants::set_retention(&self.pool, tenant, retention).await
    }

    async fn set_content_credentials(&self, tenant: TenantId, on: bool) -> Result<()> {
        tenants::set_content_credentials(&self.pool, tenant, on).await
    }

    async fn usage(&self, tenant: TenantId) -> Result<Usage> {
        tenants::usage(&self.pool, tenant).await
    }

    async fn usage_by_tenant(&self) -> Result<Vec<(String, Usage)>> {
        tenants::usage_by_tenant(&self.pool).await
    }

    async fn add_api_key(&self, tenant: TenantId, key: &NewApiKey) -> Result<()> {
        tenants::add_api_key(&self.pool, tenant, key).await
    }

    async fn tenant_by_key(&self, key_sha256: &str) -> Result<Option<TenantId>> {
        tenants::tenant_by_key(&self.pool, key_sha256).await
    }

    async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyInfo>> {
        tenants::api_keys(&self.pool, tenant).await
    }

    async fn revoke_api_keys(&self, tenant: TenantId, prefix: &str) -> Result<u64> {
        tenants::revoke_api_keys(&self.pool, tenant, prefix).await
    }

    async fn revoke_config_keys_except(&self, keep: &[String]) -> Result<u64> {
        tenants::revoke_config_keys_except(&self.pool, keep).await
    }

    async fn submit(
        &self,
        tenant: TenantId,
        batch: &BatchSpec,
        max_attempts: u32,
    ) -> Result<SubmitOutcome> {
        batches::submit(&self.pool, tenant, batch, max_attempts).await
    }

    async fn batch(&self, tenant: TenantId, batch: BatchId) -> Result<BatchStatus> {
        batches::batch(&self.pool, tenant, batch).await
    }

    async fn jobs(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        batches::jobs(&self.pool, tenant, batch, after, limit).await
    }

    async fn job(&self, tenant: TenantId, job: JobId) -> Result<JobRecord> {
        batches::job(&self.pool, tenant, job).await
    }

    async fn batches(
        &self,
        tenant: TenantId,
        before: Option<BatchId>,
        limit: u32,
    ) -> Result<Vec<BatchStatus>> {
        console::batches(&self.pool, tenant, before, limit).await
    }

    async fn batch_manifest(&self, tenant: TenantId, batch: BatchId) -> Result<String> {
        console::batch_manifest(&self.pool, tenant, batch).await
    }

    async fn review(
        &self,
        tenant: TenantId,
        jobs: &[JobId],
        verdict: Option<Verdict>,
        by: &str,
    ) -> Result<u64> {
        console::review(&self.pool, tenant, jobs, verdict, by).await
    }

    async fn cancel(&self, tenant: TenantId, batch: BatchId) -> Result<u64> {
        batches::cancel(&self.pool, tenant, batch).await
    }

    async fn dispatchable(&self, model: &ModelName, limit: u32) -> Result<Vec<JobMessage>> {
        dispatch::dispatchable(&self.pool, model, limit).await
    }

    async fn mark_queued(&self, ids: &[JobId]) -> Result<u64> {
        dispatch::mark_queued(&self.pool, ids).await
    }

    async fn backlog(&self) -> Result<Vec<BacklogRow>> {
        dispatch::backlog(&self.pool).await
    }

    async fn finished(&self) -> Result<Vec<BacklogRow>> {
        dispatch::finished(&self.pool).await
    }

    async fn batch_changes(&self) -> Result<BatchChanges> {
        self.listener.subscribe(&self.pool).await
    }

    async fn announce_worker(
        &self,
        worker: &str,
        models: &[ModelName],
        ttl: Duration,
    ) -> Result<()> {
        workers::announce_worker(&self.pool, worker, models, ttl).await
    }

    async fn set_model_limits(&self, limits: &[(ModelName, ModelLimits)]) -> Result<()> {
        workers::set_model_limits(&self.pool, limits).await
    }

    async fn withdraw_worker(&self, worker: &str) -> Result<()> {
        workers::withdraw_worker(&self.pool, worker).await
    }

    async fn model_presence(&self) -> Result<Vec<ModelPresence>> {
        workers::model_presence(&self.pool).await
    }

    async fn claim(&self, job: JobId, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        Ok(leases::claim_many(&self.pool, &[job], worker, lease)
            .await?
            .pop())
    }

    async fn heartbeat(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        lease: Duration,
        progress: Option<StepProgress>,
    ) -> Result<bool> {
        leases::heartbeat(&self.pool, job, worker, attempt, lease, progress).await
    }

    async fn complete(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        done: &Completion,
    ) -> Result<bool> {
        let one = [(job, attempt, done.clone())];
        Ok(leases::complete_many(&self.pool, worker, &one).await? == [true])
    }

    async fn claim_many(
        &self,
        jobs: &[JobId],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        leases::claim_many(&self.pool, jobs, worker, lease).await
    }

    async fn complete_many(
        &self,
        worker: &str,
        jobs: &[(JobId, u32, Completion)],
    ) -> Result<Vec<bool>> {
        leases::complete_many(&self.pool, worker, jobs).await
    }

    async fn fail(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        failure: &Failure,
    ) -> Result<bool> {
        leases::fail(&self.pool, job, worker, attempt, failure).await
    }

    async fn rescue_expired(&self, limit: u32, max_crashes: u32) -> Result<RescueOutcome> {
        maintenance::rescue_expired(&self.pool, limit, max_crashes).await
    }

    async fn promote_retryable(&self, limit: u32) -> Result<u64> {
        maintenance::promote_retryable(&self.pool, limit).await
    }

    async fn requeue_stale_queued(&self, older_than: Duration, limit: u32) -> Result<u64> {
        maintenance::requeue_stale_queued(&self.pool, older_than, limit).await
    }

    async fn purge_expired(&self, default: Retention, limit: u32) -> Result<PurgeOutcome> {
        crate::purge::purge_expired(&self.pool, default, limit).await
    }

    async fn add_webhook(&self, tenant: TenantId, spec: &WebhookSpec) -> Result<Webhook> {
        webhooks::add(&self.pool, tenant, spec).await
    }

    async fn list_webhooks(&self, tenant: TenantId) -> Result<Vec<Webhook>> {
        webhooks::list(&self.pool, tenant).await
    }

    async fn remove_webhook(&self, tenant: TenantId, webhook: WebhookId) -> Result<bool> {
        webhooks::remove(&self.pool, tenant, webhook).await
    }

    async fn webhook_secret(&self, tenant: TenantId, rotate: bool) -> Result<WebhookSecret> {
        webhooks::secret(&self.pool, tenant, rotate).await
    }

    async fn claim_webhook_events(&self, limit: u32, lease: Duration) -> Result<Vec<DueEvent>> {
        webhooks::claim(&self.pool, limit, lease).await
    }

    async fn record_webhook_attempt(
        &self,
        event: EventId,
        attempt: u32,
        body: &str,
        outcome: &AttemptOutcome,
        took: Duration,
    ) -> Result<()> {
        webhooks::record(&self.pool, event, attempt, body, outcome, took).await
    }

    async fn webhook_deliveries(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>> {
        webhooks::deliveries(&self.pool, tenant, batch, after, limit).await
    }

    async fn pending_webhook_events(&self) -> Result<u64> {
        webhooks::pending(&self.pool).await
    }

    async fn open_session(&self, new: &NewSession) -> Result<Option<Session>> {
        console::open_session(&self.pool, new).await
    }

    async fn session(&self, token_sha256: &str) -> Result<Option<Session>> {
        console::session(&self.pool, token_sha256).await
    }

    async fn close_session(&self, token_sha256: &str) -> Result<()> {
        console::close_session(&self.pool, token_sha256).await
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn Leadership>>> {
        maintenance::try_lead(&self.pool).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db("cannot reach postgres"))?;
        Ok(())
    }
}
