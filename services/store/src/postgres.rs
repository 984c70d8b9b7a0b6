//! [`PgStore`]: the production [`JobStore`] on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pixelfarm_core::*;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

use crate::error::db;
use crate::row::{JobRow, failure_columns, progress_columns};

/// Rows per INSERT statement when writing a batch's jobs (bind arrays, one round trip each).
const INSERT_CHUNK: usize = 10_000;

/// Rows of workers whose announcement expired this long ago are deleted (pod names change with
/// every rollout); the models they served stay in `served_models`.
pub(crate) const PRESENCE_PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The database every Postgres server has, where a missing database is created from.
const MAINTENANCE_DB: &str = "postgres";

/// Lock id of the single scheduler leader (`pg_try_advisory_lock`).
const LEADER_LOCK: i64 = 0x7069_7865_6c66_6172; // "pixelfar"

const JOB_COLUMNS: &str = "id, batch_id, key, model, params, state::text AS state, attempt, max_attempts, \
    object_key, sha256, last_error, error_kind, timings, created_at, started_at, finished_at, steps_done, steps_total";

/// Postgres job store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
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
        Ok(PgStore { pool })
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

fn job_row(r: &PgRow) -> std::result::Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: r.try_get("id")?,
        batch_id: r.try_get("batch_id")?,
        key: r.try_get("key")?,
        model: r.try_get("model")?,
        params: r.try_get("params")?,
        state: r.try_get("state")?,
        attempt: i64::from(r.try_get::<i32, _>("attempt")?),
        max_attempts: i64::from(r.try_get::<i32, _>("max_attempts")?),
        object_key: r.try_get("object_key")?,
        sha256: r.try_get("sha256")?,
        last_error: r.try_get("last_error")?,
        error_kind: r.try_get("error_kind")?,
        timings: r.try_get("timings")?,
        created_at: r.try_get("created_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        steps_done: r.try_get::<Option<i32>, _>("steps_done")?.map(i64::from),
        steps_total: r.try_get::<Option<i32>, _>("steps_total")?.map(i64::from),
    })
}

fn record(r: &PgRow) -> Result<JobRecord> {
    job_row(r).map_err(db("cannot read job row"))?.into_record()
}

/// The name of a key in listings and `revoke`: its prefix, or for a key registered without one
/// (by an older scheduler) `sha256:` and 8 digits of its hash, as `core::key_prefix` names such keys.
const KEY_PREFIX: &str = "coalesce(prefix, 'sha256:' || left(key_sha256, 8))";

const TENANT_COLUMNS: &str = "id, name, weight, max_queued_jobs, max_jobs_per_day, max_watches, \
    submits_per_minute, max_priority";

fn tenant_info(r: &PgRow) -> Result<TenantInfo> {
    let read = || -> std::result::Result<_, sqlx::Error> {
        Ok((
            r.try_get::<Uuid, _>("id")?,
            r.try_get::<String, _>("name")?,
            r.try_get::<i32, _>("weight")?,
            r.try_get::<Option<i64>, _>("max_queued_jobs")?,
            r.try_get::<Option<i64>, _>("max_jobs_per_day")?,
            r.try_get::<Option<i32>, _>("max_watches")?,
            r.try_get::<Option<i32>, _>("submits_per_minute")?,
            r.try_get::<Option<i16>, _>("max_priority")?,
        ))
    };
    let (id, name, weight, queued, day, watches, rate, prio) =
        read().map_err(db("cannot read tenant row"))?;
    Ok(TenantInfo {
        id: TenantId::from_uuid(id),
        name,
        weight: weight.max(0) as u32,
        quota: Quota {
            max_queued_jobs: queued.map(|v| v.max(0) as u64),
            max_jobs_per_day: day.map(|v| v.max(0) as u64),
            max_watches: watches.map(|v| v.max(0) as u32),
            submits_per_minute: rate.map(|v| v.max(0) as u32),
            max_priority: prio
                .map(|p| Priority::parse(u8::try_from(p).unwrap_or(0)))
                .transpose()?,
        },
    })
}

/// [`JobStore::usage`] on one connection (the submit's transaction, or a pooled one).
async fn usage_of(conn: &mut PgConnection, tenant: TenantId) -> Result<Usage> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM jobs WHERE tenant_id = $1
                   AND state IN ('pending', 'queued', 'running', 'retryable')) AS queued,
                (SELECT coalesce(sum(job_count), 0)::bigint FROM batches WHERE tenant_id = $1
                   AND created_at > now() - interval '1 day') AS day",
    )
    .bind(tenant.as_uuid())
    .fetch_one(conn)
    .await
    .map_err(db("cannot read usage"))?;
    Ok(Usage {
        queued_jobs: row.get::<i64, _>("queued") as u64,
        jobs_last_day: row.get::<i64, _>("day") as u64,
    })
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn clamp_i32<T: TryInto<i32>>(v: T) -> i32 {
    v.try_into().unwrap_or(i32::MAX)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

struct PgLeader {
    conn: Option<PgConnection>,
}

#[async_trait]
impl Leadership for PgLeader {
    async fn still_leader(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let alive = tokio::time::timeout(Duration::from_secs(5), conn.ping()).await;
        if !matches!(alive, Ok(Ok(()))) {
            // The session is gone, and with it the advisory lock.
            self.conn = None;
            return false;
        }
        true
    }
}

#[async_trait]
impl JobStore for PgStore {
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<TenantId> {
        let id = TenantId::generate();
        sqlx::query("INSERT INTO tenants (id, name, weight) VALUES ($1, $2, $3)")
            .bind(id.as_uuid())
            .bind(name)
            .bind(i32::try_from(weight).unwrap_or(i32::MAX))
            .execute(&self.pool)
            .await
            .map_err(db("cannot create tenant"))?;
        Ok(id)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantId>> {
        let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot look up tenant"))?;
        Ok(id.map(TenantId::from_uuid))
    }

    async fn tenant(&self, tenant: TenantId) -> Result<TenantInfo> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"
        ))
        .bind(tenant.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read tenant"))?
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
        tenant_info(&row)
    }

    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()> {
        let n = sqlx::query(
            "UPDATE tenants SET max_queued_jobs = $2, max_jobs_per_day = $3, max_watches = $4,
                    submits_per_minute = $5, max_priority = $6
             WHERE id = $1",
        )
        .bind(tenant.as_uuid())
        .bind(quota.max_queued_jobs.map(clamp_i64))
        .bind(quota.max_jobs_per_day.map(clamp_i64))
        .bind(quota.max_watches.map(clamp_i32))
        .bind(quota.submits_per_minute.map(clamp_i32))
        .bind(quota.max_priority.map(|p| i16::from(p.get())))
        .execute(&self.pool)
        .await
        .map_err(db("cannot set quota"))?
        .rows_affected();
        if n == 0 {
            return Err(Error::not_found(format!("tenant {tenant} not found")));
        }
        Ok(())
    }

    async fn usage(&self, tenant: TenantId) -> Result<Usage> {
        usage_of(
            &mut *self.pool.acquire().await.map_err(db("cannot read usage"))?,
            tenant,
        )
        .await
    }

    async fn usage_by_tenant(&self) -> Result<Vec<(String, Usage)>> {
        let rows = sqlx::query(
            "SELECT t.name,
                    (SELECT count(*) FROM jobs j WHERE j.tenant_id = t.id
                       AND j.state IN ('pending', 'queued', 'running', 'retryable')) AS queued,
                    (SELECT coalesce(sum(b.job_count), 0)::bigint FROM batches b WHERE b.tenant_id = t.id
                       AND b.created_at > now() - interval '1 day') AS day
             FROM tenants t ORDER BY t.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot read usage"))?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("name"),
                    Usage {
                        queued_jobs: r.get::<i64, _>("queued") as u64,
                        jobs_last_day: r.get::<i64, _>("day") as u64,
                    },
                )
            })
            .collect())
    }

    async fn add_api_key(&self, tenant: TenantId, key: &NewApiKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (key_sha256, tenant_id, prefix, expires_at, from_config)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (key_sha256) DO UPDATE SET revoked_at = NULL, revoked_by = NULL
             WHERE api_keys.revoked_by = 'config' AND EXCLUDED.from_config
               AND api_keys.tenant_id = EXCLUDED.tenant_id",
        )
        .bind(&key.key_sha256)
        .bind(tenant.as_uuid())
        .bind(&key.prefix)
        .bind(key.expires_at)
        .bind(key.from_config)
        .execute(&self.pool)
        .await
        .map_err(db("cannot add api key"))?;
        Ok(())
    }

    async fn tenant_by_key(&self, key_sha256: &str) -> Result<Option<TenantId>> {
        let row = sqlx::query(
            "SELECT tenant_id,
                    (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') AS stale
             FROM api_keys
             WHERE key_sha256 = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(key_sha256)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot look up api key"))?;
        let Some(row) = row else { return Ok(None) };
        if row.get::<bool, _>("stale") {
            sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE key_sha256 = $1")
                .bind(key_sha256)
                .execute(&self.pool)
                .await
                .map_err(db("cannot record api key use"))?;
        }
        Ok(Some(TenantId::from_uuid(row.get("tenant_id"))))
    }

    async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_PREFIX} AS prefix, created_at, last_used_at, expires_at, revoked_at, from_config
             FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, prefix"
        ))
        .bind(tenant.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list api keys"))?;
        Ok(rows
            .iter()
            .map(|r| ApiKeyInfo {
                prefix: r.get("prefix"),
                created_at: r.get("created_at"),
                last_used_at: r.get("last_used_at"),
                expires_at: r.get("expires_at"),
                revoked_at: r.get("revoked_at"),
                from_config: r.get("from_config"),
            })
            .collect())
    }

    async fn revoke_api_keys(&self, tenant: TenantId, prefix: &str) -> Result<u64> {
        Ok(sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = now(), revoked_by = 'operator'
             WHERE tenant_id = $1 AND {KEY_PREFIX} = $2 AND revoked_at IS NULL"
        ))
        .bind(tenant.as_uuid())
        .bind(prefix)
        .execute(&self.pool)
        .await
        .map_err(db("cannot revoke api keys"))?
        .rows_affected())
    }

    async fn revoke_config_keys_except(&self, keep: &[String]) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE api_keys SET revoked_at = now(), revoked_by = 'config'
             WHERE from_config AND revoked_at IS NULL AND NOT (key_sha256 = ANY($1))",
        )
        .bind(keep)
        .execute(&self.pool)
        .await
        .map_err(db("cannot revoke api keys"))?
        .rows_affected())
    }

    async fn submit(
        &self,
        tenant: TenantId,
        batch: &BatchSpec,
        max_attempts: u32,
    ) -> Result<SubmitOutcome> {
        let mut tx = self.pool.begin().await.map_err(db("cannot begin submit"))?;
        // The tenant's row locked until commit: its submits count and write one at a time.
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE"
        ))
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot lock tenant"))?
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
        let quota = tenant_info(&row)?.quota;
        if let Some(existing) = sqlx::query(
            "SELECT id, job_count FROM batches WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant.as_uuid())
        .bind(&batch.idempotency_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot read existing batch"))?
        {
            return Ok(SubmitOutcome {
                batch_id: BatchId::from_uuid(existing.get("id")),
                created: false,
                jobs: existing.get::<i32, _>("job_count") as u64,
            });
        }
        let usage = if quota.counts_usage() {
            usage_of(&mut tx, tenant).await?
        } else {
            Usage::default()
        };
        quota.admit(batch, usage)?;
        let id = BatchId::generate();
        let tags = serde_json::to_value(&batch.tags).expect("string map serializes");
        let inserted: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO batches (id, tenant_id, name, model, priority, idempotency_key, tags, manifest, job_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
             RETURNING id",
        )
        .bind(id.as_uuid())
        .bind(tenant.as_uuid())
        .bind(&batch.name)
        .bind(batch.model.as_str())
        .bind(i16::from(batch.priority.get()))
        .bind(&batch.idempotency_key)
        .bind(&tags)
        .bind(&batch.source)
        .bind(i32::try_from(batch.jobs.len()).unwrap_or(i32::MAX))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot insert batch"))?;
        if inserted.is_none() {
            // Unreachable while the tenant's row is locked: the key was looked up above.
            return Err(Error::new(
                ErrorKind::Conflict,
                "a batch with this idempotency key was stored meanwhile; submit again",
            ));
        }
        for chunk in batch.jobs.chunks(INSERT_CHUNK) {
            let ids: Vec<Uuid> = chunk.iter().map(|_| JobId::generate().as_uuid()).collect();
            let keys: Vec<&str> = chunk.iter().map(|j| j.key.as_str()).collect();
            let params: Vec<String> = chunk
                .iter()
                .map(|j| serde_json::to_string(&j.params).expect("params serialize"))
                .collect();
            sqlx::query(
                "INSERT INTO jobs (id, batch_id, tenant_id, model, priority, key, params, max_attempts)
                 SELECT u.id, $1, $2, $3, $4, u.key, u.params::jsonb, $5
                 FROM UNNEST($6::uuid[], $7::text[], $8::text[]) AS u (id, key, params)",
            )
            .bind(id.as_uuid())
            .bind(tenant.as_uuid())
            .bind(batch.model.as_str())
            .bind(i16::from(batch.priority.get()))
            .bind(i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX))
            .bind(&ids)
            .bind(&keys)
            .bind(&params)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot insert jobs"))?;
        }
        tx.commit().await.map_err(db("cannot commit submit"))?;
        Ok(SubmitOutcome {
            batch_id: id,
            created: true,
            jobs: batch.jobs.len() as u64,
        })
    }

    async fn batch(&self, tenant: TenantId, batch: BatchId) -> Result<BatchStatus> {
        let row = sqlx::query(
            "SELECT id, name, model, priority, tags, created_at FROM batches WHERE id = $1 AND tenant_id = $2",
        )
        .bind(batch.as_uuid())
        .bind(tenant.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read batch"))?
        .ok_or_else(|| Error::not_found(format!("batch {batch} not found")))?;
        let tags: serde_json::Value = row.get("tags");
        let mut status = BatchStatus {
            id: batch,
            name: row.get("name"),
            model: ModelName::parse(row.get::<String, _>("model"))?,
            priority: Priority::parse(u8::try_from(row.get::<i16, _>("priority")).unwrap_or(0))?,
            tags: serde_json::from_value::<BTreeMap<String, String>>(tags).unwrap_or_default(),
            created_at: row.get("created_at"),
            counts: StateCounts::default(),
            first_started_at: None,
            last_finished_at: None,
            device_seconds: 0.0,
        };
        let rows = sqlx::query(
            "SELECT state::text AS state, count(*) AS n, min(started_at) AS s, max(finished_at) AS f,
                    sum(device_seconds) AS d
             FROM jobs WHERE batch_id = $1 GROUP BY state",
        )
        .bind(batch.as_uuid())
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot count jobs"))?;
        for r in rows {
            status.counts.add(
                JobState::parse(r.get("state"))?,
                r.get::<i64, _>("n") as u64,
            );
            let s: Option<DateTime<Utc>> = r.get("s");
            let f: Option<DateTime<Utc>> = r.get("f");
            status.first_started_at = status.first_started_at.into_iter().chain(s).min();
            status.last_finished_at = status.last_finished_at.into_iter().chain(f).max();
            status.device_seconds += r.get::<Option<f64>, _>("d").unwrap_or(0.0);
        }
        Ok(status)
    }

    async fn jobs(
        &self,
        tenant: TenantId,
        batch: BatchId,
        after: Option<JobId>,
        limit: u32,
    ) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = $1 AND tenant_id = $2 AND id > $3 ORDER BY id LIMIT $4"
        );
        let rows = sqlx::query(&sql)
            .bind(batch.as_uuid())
            .bind(tenant.as_uuid())
            .bind(after.map_or(Uuid::nil(), JobId::as_uuid))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list jobs"))?;
        if rows.is_empty() && after.is_none() {
            // Distinguish "no such batch" (or another tenant's) from an empty page.
            self.batch(tenant, batch).await?;
        }
        rows.iter().map(record).collect()
    }

    async fn job(&self, tenant: TenantId, job: JobId) -> Result<JobRecord> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND tenant_id = $2");
        let row = sqlx::query(&sql)
            .bind(job.as_uuid())
            .bind(tenant.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot read job"))?
            .ok_or_else(|| Error::not_found(format!("job {job} not found")))?;
        record(&row)
    }

    async fn cancel(&self, tenant: TenantId, batch: BatchId) -> Result<u64> {
        self.batch(tenant, batch).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = now(), queued_at = NULL, run_after = NULL,
                 lease_owner = NULL, lease_until = NULL
             WHERE batch_id = $1 AND tenant_id = $2 AND state IN ('pending', 'queued', 'retryable', 'running')",
        )
        .bind(batch.as_uuid())
        .bind(tenant.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(db("cannot cancel batch"))?;
        Ok(r.rows_affected())
    }

    async fn dispatchable(&self, model: &ModelName, limit: u32) -> Result<Vec<JobMessage>> {
        // Priority first; within a priority, tenants interleave by weight (the n-th job of a tenant
        // with weight w ranks at n / w); then age. Each tenant contributes at most `limit` rows,
        // read from the partial index, so the cost does not grow with the backlog.
        let rows = sqlx::query(
            "SELECT c.id, c.batch_id, c.priority, c.crashes
             FROM tenants t
             CROSS JOIN LATERAL (
                 SELECT j.id, j.batch_id, j.priority, j.crashes,
                        row_number() OVER (PARTITION BY j.priority ORDER BY j.id) AS rn
                 FROM (SELECT id, batch_id, priority, crashes FROM jobs
                       WHERE state = 'pending' AND model = $1 AND tenant_id = t.id
                       ORDER BY priority DESC, id LIMIT $2) j
             ) c
             ORDER BY c.priority DESC, c.rn::float8 / t.weight, c.id
             LIMIT $2",
        )
        .bind(model.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot select jobs to dispatch"))?;
        rows.iter()
            .map(|r| {
                Ok(JobMessage {
                    job_id: JobId::from_uuid(r.get("id")),
                    batch_id: BatchId::from_uuid(r.get("batch_id")),
                    model: model.clone(),
                    priority: Priority::parse(
                        u8::try_from(r.get::<i16, _>("priority")).unwrap_or(0),
                    )?,
                    crashes: u32::try_from(r.get::<i32, _>("crashes")).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn mark_queued(&self, ids: &[JobId]) -> Result<u64> {
        let ids: Vec<Uuid> = ids.iter().map(|i| i.as_uuid()).collect();
        let r = sqlx::query(
            "UPDATE jobs SET state = 'queued', queued_at = now() WHERE id = ANY($1) AND state = 'pending'",
        )
        .bind(&ids)
        .execute(&self.pool)
        .await
        .map_err(db("cannot mark jobs queued"))?;
        Ok(r.rows_affected())
    }

    async fn backlog(&self) -> Result<Vec<BacklogRow>> {
        self.count_by_state("state IN ('pending', 'queued', 'running', 'retryable')")
            .await
    }

    async fn finished(&self) -> Result<Vec<BacklogRow>> {
        self.count_by_state("state IN ('succeeded', 'dead', 'cancelled')")
            .await
    }

    async fn announce_worker(
        &self,
        worker: &str,
        models: &[ModelName],
        ttl: Duration,
    ) -> Result<()> {
        // Sorted, so concurrent announcements lock the model rows in one order.
        let mut names: Vec<&str> = models.iter().map(ModelName::as_str).collect();
        names.sort_unstable();
        names.dedup();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot announce worker"))?;
        sqlx::query(
            "INSERT INTO served_models (model) SELECT unnest($1::text[])
             ON CONFLICT (model) DO UPDATE SET last_seen_at = now()",
        )
        .bind(&names)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot announce worker"))?;
        sqlx::query(
            "DELETE FROM worker_models
             WHERE worker_id = $1 OR live_until < now() - make_interval(secs => $2)",
        )
        .bind(worker)
        .bind(secs(PRESENCE_PRUNE_AFTER))
        .execute(&mut *tx)
        .await
        .map_err(db("cannot announce worker"))?;
        sqlx::query(
            "INSERT INTO worker_models (worker_id, model, seen_at, live_until)
             SELECT $1, unnest($2::text[]), now(), now() + make_interval(secs => $3)",
        )
        .bind(worker)
        .bind(&names)
        .bind(secs(ttl))
        .execute(&mut *tx)
        .await
        .map_err(db("cannot announce worker"))?;
        tx.commit().await.map_err(db("cannot announce worker"))
    }

    async fn set_model_limits(&self, limits: &[(ModelName, ModelLimits)]) -> Result<()> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot record model limits"))?;
        for (model, l) in limits {
            sqlx::query(
                "INSERT INTO served_models (model, limits) VALUES ($1, $2)
                 ON CONFLICT (model) DO UPDATE SET limits = EXCLUDED.limits",
            )
            .bind(model.as_str())
            .bind(sqlx::types::Json(l))
            .execute(&mut *tx)
            .await
            .map_err(db("cannot record model limits"))?;
        }
        tx.commit().await.map_err(db("cannot record model limits"))
    }

    async fn withdraw_worker(&self, worker: &str) -> Result<()> {
        sqlx::query("DELETE FROM worker_models WHERE worker_id = $1")
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(db("cannot withdraw worker"))?;
        Ok(())
    }

    async fn model_presence(&self) -> Result<Vec<ModelPresence>> {
        let rows = sqlx::query(
            "SELECT s.model, s.last_seen_at, s.limits,
                    count(w.worker_id) FILTER (WHERE w.live_until > now()) AS live
             FROM served_models s LEFT JOIN worker_models w ON w.model = s.model
             GROUP BY s.model, s.last_seen_at, s.limits ORDER BY s.model",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot read served models"))?;
        rows.iter()
            .map(|r| {
                let model: String = r
                    .try_get("model")
                    .map_err(db("cannot read served models"))?;
                Ok(ModelPresence {
                    model: ModelName::parse(model)?,
                    live_workers: u64::try_from(
                        r.try_get::<i64, _>("live")
                            .map_err(db("cannot read served models"))?,
                    )
                    .unwrap_or(0),
                    last_seen_at: r
                        .try_get("last_seen_at")
                        .map_err(db("cannot read served models"))?,
                    limits: r
                        .try_get::<Option<sqlx::types::Json<ModelLimits>>, _>("limits")
                        .map_err(db("cannot read served models"))?
                        .map(|j| j.0),
                })
            })
            .collect()
    }

    async fn claim(&self, job: JobId, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = $2,
                 lease_until = now() + make_interval(secs => $3), started_at = now(), run_after = NULL,
                 steps_done = NULL, steps_total = NULL
             WHERE id = $1 AND state IN ('pending', 'queued') AND attempt < max_attempts
             RETURNING {JOB_COLUMNS}, tenant_id, queued_at"
        );
        let row = sqlx::query(&sql)
            .bind(job.as_uuid())
            .bind(worker)
            .bind(secs(lease))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot claim job"))?;
        row.map(|r| {
            Ok(ClaimedJob {
                job: record(&r)?,
                tenant: TenantId::from_uuid(r.get("tenant_id")),
                queued_at: r.get("queued_at"),
            })
        })
        .transpose()
    }

    async fn heartbeat(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        lease: Duration,
        progress: Option<StepProgress>,
    ) -> Result<bool> {
        let (done, total) = progress_columns(progress);
        let r = sqlx::query(
            "UPDATE jobs SET lease_until = now() + make_interval(secs => $4),
                 steps_done = COALESCE($5, steps_done), steps_total = COALESCE($6, steps_total)
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3",
        )
        .bind(job.as_uuid())
        .bind(worker)
        .bind(attempt as i32)
        .bind(secs(lease))
        .bind(done.map(|d| d as i32))
        .bind(total.map(|t| t as i32))
        .execute(&self.pool)
        .await
        .map_err(db("cannot renew lease"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn complete(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        done: &Completion,
    ) -> Result<bool> {
        let timings = serde_json::to_value(&done.timings).expect("timings serialize");
        let r = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', finished_at = now(), lease_owner = NULL, lease_until = NULL,
                 object_key = $4, sha256 = $5, timings = $6, device_seconds = device_seconds + $7
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3",
        )
        .bind(job.as_uuid())
        .bind(worker)
        .bind(attempt as i32)
        .bind(&done.object_key)
        .bind(&done.sha256)
        .bind(&timings)
        .bind(done.device_seconds)
        .execute(&self.pool)
        .await
        .map_err(db("cannot complete job"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn fail(
        &self,
        job: JobId,
        worker: &str,
        attempt: u32,
        failure: &Failure,
    ) -> Result<bool> {
        let (kind, message, delay) = failure_columns(failure);
        let r = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN $6::float8 IS NULL THEN 'dead'::job_state ELSE 'retryable'::job_state END,
                 finished_at = CASE WHEN $6::float8 IS NULL THEN now() END,
                 run_after = now() + make_interval(secs => $6::float8),
                 lease_owner = NULL, lease_until = NULL, queued_at = NULL,
                 error_kind = $4, last_error = $5
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempt = $3",
        )
        .bind(job.as_uuid())
        .bind(worker)
        .bind(attempt as i32)
        .bind(kind)
        .bind(message)
        .bind(delay)
        .execute(&self.pool)
        .await
        .map_err(db("cannot record job failure"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn rescue_expired(&self, limit: u32, max_crashes: u32) -> Result<RescueOutcome> {
        let rows = sqlx::query(
            "WITH expired AS (
                 SELECT id, crashes + 1 >= $2 AS crashing FROM jobs
                 WHERE state = 'running' AND lease_until < now()
                 ORDER BY lease_until LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE jobs j SET
                 crashes = j.crashes + 1,
                 attempt = CASE WHEN e.crashing THEN j.attempt ELSE j.attempt - 1 END,
                 state = CASE WHEN e.crashing THEN 'dead'::job_state ELSE 'pending'::job_state END,
                 finished_at = CASE WHEN e.crashing THEN now() END,
                 error_kind = CASE WHEN e.crashing THEN 'crashed_worker' ELSE 'lease_expired' END,
                 last_error = CASE WHEN e.crashing
                     THEN format('crashed the worker: its lease expired %s times (last on worker %s)',
                                 j.crashes + 1, j.lease_owner)
                     ELSE format('lease of worker %s expired (the worker died or lost the database); '
                                 'not counted as an attempt, %s of %s before the job counts as crashing workers',
                                 j.lease_owner, j.crashes + 1, $2) END,
                 lease_owner = NULL, lease_until = NULL, queued_at = NULL
             FROM expired e WHERE j.id = e.id
             RETURNING j.state::text AS state",
        )
        .bind(i64::from(limit))
        .bind(i64::from(max_crashes.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot rescue expired leases"))?;
        let dead = rows
            .iter()
            .filter(|r| r.get::<String, _>("state") == "dead")
            .count() as u64;
        Ok(RescueOutcome {
            to_pending: rows.len() as u64 - dead,
            to_dead: dead,
        })
    }

    async fn promote_retryable(&self, limit: u32) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', run_after = NULL
             WHERE id IN (SELECT id FROM jobs WHERE state = 'retryable' AND run_after <= now()
                          ORDER BY run_after LIMIT $1 FOR UPDATE SKIP LOCKED)",
        )
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("cannot promote retryable jobs"))?;
        Ok(r.rows_affected())
    }

    async fn requeue_stale_queued(&self, older_than: Duration, limit: u32) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', queued_at = NULL
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'
                              AND queued_at < now() - make_interval(secs => $1)
                          ORDER BY queued_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(secs(older_than))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("cannot requeue stale queued jobs"))?;
        Ok(r.rows_affected())
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn Leadership>>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("cannot get a connection"))?
            .detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .fetch_one(&mut conn)
            .await
            .map_err(db("cannot try the leader lock"))?;
        Ok(got.then(|| Box::new(PgLeader { conn: Some(conn) }) as Box<dyn Leadership>))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db("cannot reach postgres"))?;
        Ok(())
    }
}

impl PgStore {
    async fn count_by_state(&self, filter: &'static str) -> Result<Vec<BacklogRow>> {
        let sql = format!(
            "SELECT model, state::text AS state, count(*) AS n FROM jobs WHERE {filter} GROUP BY 1, 2"
        );
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot count jobs"))?;
        rows.iter()
            .map(|r| {
                Ok(BacklogRow {
                    model: ModelName::parse(r.get::<String, _>("model"))?,
                    state: JobState::parse(r.get("state"))?,
                    jobs: r.get::<i64, _>("n") as u64,
                })
            })
            .collect()
    }
}
