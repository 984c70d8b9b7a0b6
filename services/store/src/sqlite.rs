//! [`SqliteStore`]: the embedded-mode [`JobStore`], one file, no server.
//!
//! Same tables and rules as Postgres (`migrations/sqlite`); times are unix milliseconds taken from
//! this process's clock (one process owns the file), ids are uuid text.
//!
//! The queries are grouped as in the Postgres store, by concern of [`JobStore`]: `tenants`,
//! `batches`, `dispatch`, `workers`, `leases`, `maintenance`, `console` and `retention`, with the column lists
//! and row decoding they share in `columns`. Batch progress is kept by triggers (migration 0007);
//! SQLite has no notifications, so the store announces the batches its writes changed after each
//! commit (one process owns the file: its writes are all the changes there are).

mod batches;
mod columns;
mod console;
mod dispatch;
mod leases;
mod maintenance;
mod retention;
mod tenants;
mod webhooks;
mod workers;

use async_trait::async_trait;
use pixelfarm_core::*;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::error::db;
use crate::feed::Feed;

/// SQLite job store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The batch change feed, shared by the clones of the store.
    feed: Feed,
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` and apply the migrations.
    ///
    /// # Errors
    /// `Permanent` when the file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .expect("static url")
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(db("cannot open sqlite database"))?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| Error::with_source(ErrorKind::Permanent, "sqlite migrations failed", e))?;
        Ok(SqliteStore {
            pool,
            feed: Feed::new(),
        })
    }
}

/// The embedded mode has one process: it is always the leader.
struct SoleLeader;

#[async_trait]
impl Leadership for SoleLeader {
    async fn still_leader(&mut self) -> bool {
        true
    }
}

#[async_trait]
impl JobStore for SqliteStore {
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
        let out = batches::submit(&self.pool, tenant, batch, max_attempts).await?;
        if out.created {
            self.feed.announce_batches([out.batch_id]);
        }
        Ok(out)
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
        let n = batches::cancel(&self.pool, tenant, batch).await?;
        if n > 0 {
            self.feed.announce_batches([batch]);
        }
        Ok(n)
    }

    async fn dispatchable(&self, model: &ModelName, limit: u32) -> Result<Vec<JobMessage>> {
        dispatch::dispatchable(&self.pool, model, limit).await
    }

    async fn mark_queued(&self, ids: &[JobId]) -> Result<u64> {
        let moved = dispatch::mark_queued(&self.pool, ids).await?;
        self.feed.announce_batches(moved.iter().copied());
        Ok(moved.len() as u64)
    }

    async fn backlog(&self) -> Result<Vec<BacklogRow>> {
        dispatch::backlog(&self.pool).await
    }

    async fn finished(&self) -> Result<Vec<BacklogRow>> {
        dispatch::finished(&self.pool).await
    }

    async fn batch_changes(&self) -> Result<BatchChanges> {
        Ok(self.feed.subscribe())
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
        Ok(self.claim_many(&[job], worker, lease).await?.pop())
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
        Ok(self.complete_many(worker, &one).await? == [true])
    }

    async fn claim_many(
        &self,
        jobs: &[JobId],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedJob>> {
        let claimed = leases::claim_many(&self.pool, jobs, worker, lease).await?;
        self.feed
            .announce_batches(claimed.iter().map(|c| c.job.batch_id));
        Ok(claimed)
    }

    async fn complete_many(
        &self,
        worker: &str,
        jobs: &[(JobId, u32, Completion)],
    ) -> Result<Vec<bool>> {
        let batches = leases::complete_many(&self.pool, worker, jobs).await?;
        self.feed
            .announce_batches(batches.iter().flatten().copied());
        Ok(batches.iter().map(Option::is_some).collect())
    }

    async fn fail(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        failure: &Failure,
    ) -> Result<bool> {
        let batch = leases::fail(&self.pool, job, worker, attempt, failure).await?;
        self.feed.announce_batches(batch);
        Ok(batch.is_some())
    }

    async fn rescue_expired(&self, limit: u32, max_crashes: u32) -> Result<RescueOutcome> {
        let (outcome, moved) = maintenance::rescue_expired(&self.pool, limit, max_crashes).await?;
        self.feed.announce_batches(moved);
        Ok(outcome)
    }

    async fn promote_retryable(&self, limit: u32) -> Result<u64> {
        let moved = maintenance::promote_retryable(&self.pool, limit).await?;
        self.feed.announce_batches(moved.iter().copied());
        Ok(moved.len() as u64)
    }

    async fn requeue_stale_queued(&self, older_than: Duration, limit: u32) -> Result<u64> {
        let moved = maintenance::requeue_stale_queued(&self.pool, older_than, limit).await?;
        self.feed.announce_batches(moved.iter().copied());
        Ok(moved.len() as u64)
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
        Ok(Some(Box::new(SoleLeader)))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db("cannot reach sqlite"))?;
        Ok(())
    }
}
