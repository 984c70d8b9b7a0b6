//! [`SqliteStore`]: the embedded-mode [`JobStore`], one file, no server.
//!
//! Same tables and rules as Postgres (`migrations/sqlite`); times are unix milliseconds taken from
//! this process's clock (one process owns the file), ids are uuid text.

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use pixelfarm_core::*;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

use crate::error::db;
use crate::row::{JobRow, failure_columns, progress_columns};

const JOB_COLUMNS: &str = "id, batch_id, key, model, params, state, attempt, max_attempts, \
    object_key, sha256, last_error, error_kind, timings, created_at, started_at, finished_at, steps_done, steps_total";

/// The name of a key in listings and `revoke`: its prefix, or for a key registered without one
/// (by an older scheduler) `sha256:` and 8 digits of its hash, as `core::key_prefix` names such keys.
const KEY_PREFIX: &str = "coalesce(prefix, 'sha256:' || substr(key_sha256, 1, 8))";

const TENANT_COLUMNS: &str = "id, name, weight, max_queued_jobs, max_jobs_per_day, max_watches, \
    submits_per_minute, max_priority";

/// The quotas' day, in milliseconds.
const DAY_MS: i64 = 24 * 3600 * 1000;

/// A key's `last_used_at` is rewritten once it is this old (one write per key and minute).
const LAST_USED_EVERY_MS: i64 = 60_000;

fn tenant_info(r: &SqliteRow) -> Result<TenantInfo> {
    let read = || -> std::result::Result<_, sqlx::Error> {
        Ok((
            uuid(r, "id")?,
            r.try_get::<String, _>("name")?,
            r.try_get::<i64, _>("weight")?,
            r.try_get::<Option<i64>, _>("max_queued_jobs")?,
            r.try_get::<Option<i64>, _>("max_jobs_per_day")?,
            r.try_get::<Option<i64>, _>("max_watches")?,
            r.try_get::<Option<i64>, _>("submits_per_minute")?,
            r.try_get::<Option<i64>, _>("max_priority")?,
        ))
    };
    let (id, name, weight, queued, day, watches, rate, prio) =
        read().map_err(db("cannot read tenant row"))?;
    let small = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(TenantInfo {
        id: TenantId::from_uuid(id),
        name,
        weight: small(weight),
        quota: Quota {
            max_queued_jobs: queued.map(|v| v.max(0) as u64),
            max_jobs_per_day: day.map(|v| v.max(0) as u64),
            max_watches: watches.map(small),
            submits_per_minute: rate.map(small),
            max_priority: prio
                .map(|p| Priority::parse(u8::try_from(p).unwrap_or(0)))
                .transpose()?,
        },
    })
}

/// [`JobStore::usage`] on one connection (the submit's transaction, or a pooled one).
async fn usage_of(conn: &mut sqlx::SqliteConnection, tenant: TenantId) -> Result<Usage> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM jobs WHERE tenant_id = ?1
                   AND state IN ('pending', 'queued', 'running', 'retryable')) AS queued,
                (SELECT coalesce(sum(job_count), 0) FROM batches WHERE tenant_id = ?1
                   AND created_at > ?2) AS day",
    )
    .bind(tenant.to_string())
    .bind(now_ms() - DAY_MS)
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

/// SQLite job store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn time(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

fn uuid(r: &SqliteRow, col: &str) -> std::result::Result<Uuid, sqlx::Error> {
    let s: String = r.try_get(col)?;
    Uuid::parse_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn json(r: &SqliteRow, col: &str) -> std::result::Result<Option<serde_json::Value>, sqlx::Error> {
    let s: Option<String> = r.try_get(col)?;
    s.map(|s| serde_json::from_str(&s).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .transpose()
}

fn job_row(r: &SqliteRow) -> std::result::Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: uuid(r, "id")?,
        batch_id: uuid(r, "batch_id")?,
        key: r.try_get("key")?,
        model: r.try_get("model")?,
        params: json(r, "params")?.unwrap_or_default(),
        state: r.try_get("state")?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        object_key: r.try_get("object_key")?,
        sha256: r.try_get("sha256")?,
        last_error: r.try_get("last_error")?,
        error_kind: r.try_get("error_kind")?,
        timings: json(r, "timings")?,
        created_at: time(r.try_get("created_at")?).unwrap_or_default(),
        started_at: time(r.try_get("started_at")?),
        finished_at: time(r.try_get("finished_at")?),
        steps_done: r.try_get("steps_done")?,
        steps_total: r.try_get("steps_total")?,
    })
}

fn record(r: &SqliteRow) -> Result<JobRecord> {
    job_row(r).map_err(db("cannot read job row"))?.into_record()
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
        Ok(SqliteStore { pool })
    }

    async fn count_by_state(&self, filter: &'static str) -> Result<Vec<BacklogRow>> {
        let sql =
            format!("SELECT model, state, count(*) AS n FROM jobs WHERE {filter} GROUP BY 1, 2");
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
        let id = TenantId::generate();
        sqlx::query("INSERT INTO tenants (id, name, weight, created_at) VALUES (?1, ?2, ?3, ?4)")
            .bind(id.to_string())
            .bind(name)
            .bind(i64::from(weight))
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(db("cannot create tenant"))?;
        Ok(id)
    }

    async fn tenant_by_name(&self, name: &str) -> Result<Option<TenantId>> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM tenants WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot look up tenant"))?;
        id.map(|s| s.parse()).transpose()
    }

    async fn tenant(&self, tenant: TenantId) -> Result<TenantInfo> {
        let row = sqlx::query(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"
        ))
        .bind(tenant.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read tenant"))?
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
        tenant_info(&row)
    }

    async fn set_quota(&self, tenant: TenantId, quota: &Quota) -> Result<()> {
        let n = sqlx::query(
            "UPDATE tenants SET max_queued_jobs = ?2, max_jobs_per_day = ?3, max_watches = ?4,
                    submits_per_minute = ?5, max_priority = ?6
             WHERE id = ?1",
        )
        .bind(tenant.to_string())
        .bind(quota.max_queued_jobs.map(clamp_i64))
        .bind(quota.max_jobs_per_day.map(clamp_i64))
        .bind(quota.max_watches.map(i64::from))
        .bind(quota.submits_per_minute.map(i64::from))
        .bind(quota.max_priority.map(|p| i64::from(p.get())))
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
                    (SELECT coalesce(sum(b.job_count), 0) FROM batches b WHERE b.tenant_id = t.id
                       AND b.created_at > ?1) AS day
             FROM tenants t ORDER BY t.name",
        )
        .bind(now_ms() - DAY_MS)
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
            "INSERT INTO api_keys (key_sha256, tenant_id, created_at, prefix, expires_at, from_config)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (key_sha256) DO UPDATE SET revoked_at = NULL, revoked_by = NULL
             WHERE revoked_by = 'config' AND excluded.from_config = 1
               AND tenant_id = excluded.tenant_id",
        )
        .bind(&key.key_sha256)
        .bind(tenant.to_string())
        .bind(now_ms())
        .bind(&key.prefix)
        .bind(key.expires_at.map(|t| t.timestamp_millis()))
        .bind(key.from_config)
        .execute(&self.pool)
        .await
        .map_err(db("cannot add api key"))?;
        Ok(())
    }

    async fn tenant_by_key(&self, key_sha256: &str) -> Result<Option<TenantId>> {
        let now = now_ms();
        let row = sqlx::query(
            "SELECT tenant_id, coalesce(last_used_at, 0) AS last_used_at FROM api_keys
             WHERE key_sha256 = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .bind(key_sha256)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot look up api key"))?;
        let Some(row) = row else { return Ok(None) };
        if row.get::<i64, _>("last_used_at") < now - LAST_USED_EVERY_MS {
            sqlx::query("UPDATE api_keys SET last_used_at = ?2 WHERE key_sha256 = ?1")
                .bind(key_sha256)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db("cannot record api key use"))?;
        }
        row.get::<String, _>("tenant_id").parse().map(Some)
    }

    async fn api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKeyInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_PREFIX} AS prefix, created_at, last_used_at, expires_at, revoked_at, from_config
             FROM api_keys WHERE tenant_id = ?1 ORDER BY created_at, prefix"
        ))
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot list api keys"))?;
        Ok(rows
            .iter()
            .map(|r| ApiKeyInfo {
                prefix: r.get("prefix"),
                created_at: time(r.get("created_at")).unwrap_or_default(),
                last_used_at: time(r.get("last_used_at")),
                expires_at: time(r.get("expires_at")),
                revoked_at: time(r.get("revoked_at")),
                from_config: r.get("from_config"),
            })
            .collect())
    }

    async fn revoke_api_keys(&self, tenant: TenantId, prefix: &str) -> Result<u64> {
        Ok(sqlx::query(&format!(
            "UPDATE api_keys SET revoked_at = ?3, revoked_by = 'operator'
             WHERE tenant_id = ?1 AND {KEY_PREFIX} = ?2 AND revoked_at IS NULL"
        ))
        .bind(tenant.to_string())
        .bind(prefix)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db("cannot revoke api keys"))?
        .rows_affected())
    }

    async fn revoke_config_keys_except(&self, keep: &[String]) -> Result<u64> {
        let keep = serde_json::to_string(keep).expect("strings serialize");
        Ok(sqlx::query(
            "UPDATE api_keys SET revoked_at = ?2, revoked_by = 'config'
             WHERE from_config = 1 AND revoked_at IS NULL
               AND key_sha256 NOT IN (SELECT value FROM json_each(?1))",
        )
        .bind(keep)
        .bind(now_ms())
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
        // A write first: the transaction holds the database's write lock from here, so the
        // counts below stay true until commit (as the row lock does on Postgres).
        let row = sqlx::query(&format!(
            "UPDATE tenants SET name = name WHERE id = ?1 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(tenant.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot lock tenant"))?
        .ok_or_else(|| Error::not_found(format!("tenant {tenant} not found")))?;
        let quota = tenant_info(&row)?.quota;
        if let Some(existing) = sqlx::query(
            "SELECT id, job_count FROM batches WHERE tenant_id = ?1 AND idempotency_key = ?2",
        )
        .bind(tenant.to_string())
        .bind(&batch.idempotency_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("cannot read existing batch"))?
        {
            return Ok(SubmitOutcome {
                batch_id: existing.get::<String, _>("id").parse()?,
                created: false,
                jobs: existing.get::<i64, _>("job_count") as u64,
            });
        }
        let usage = if quota.counts_usage() {
            usage_of(&mut tx, tenant).await?
        } else {
            Usage::default()
        };
        quota.admit(batch, usage)?;
        let id = BatchId::generate();
        let now = now_ms();
        let tags = serde_json::to_string(&batch.tags).expect("string map serializes");
        let inserted = sqlx::query(
            "INSERT INTO batches (id, tenant_id, name, model, priority, idempotency_key, tags, manifest, job_count, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
        )
        .bind(id.to_string())
        .bind(tenant.to_string())
        .bind(&batch.name)
        .bind(batch.model.as_str())
        .bind(i64::from(batch.priority.get()))
        .bind(&batch.idempotency_key)
        .bind(&tags)
        .bind(&batch.source)
        .bind(batch.jobs.len() as i64)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db("cannot insert batch"))?;
        if inserted.rows_affected() == 0 {
            // Unreachable while this transaction holds the write lock: the key was looked up above.
            return Err(Error::new(
                ErrorKind::Conflict,
                "a batch with this idempotency key was stored meanwhile; submit again",
            ));
        }
        for j in &batch.jobs {
            sqlx::query(
                "INSERT INTO jobs (id, batch_id, tenant_id, model, priority, key, params, max_attempts, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(JobId::generate().to_string())
            .bind(id.to_string())
            .bind(tenant.to_string())
            .bind(batch.model.as_str())
            .bind(i64::from(batch.priority.get()))
            .bind(&j.key)
            .bind(serde_json::to_string(&j.params).expect("params serialize"))
            .bind(i64::from(max_attempts.max(1)))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot insert job"))?;
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
            "SELECT name, model, priority, tags, created_at FROM batches WHERE id = ?1 AND tenant_id = ?2",
        )
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cannot read batch"))?
        .ok_or_else(|| Error::not_found(format!("batch {batch} not found")))?;
        let mut status = BatchStatus {
            id: batch,
            name: row.get("name"),
            model: ModelName::parse(row.get::<String, _>("model"))?,
            priority: Priority::parse(u8::try_from(row.get::<i64, _>("priority")).unwrap_or(0))?,
            tags: serde_json::from_str(&row.get::<String, _>("tags")).unwrap_or_default(),
            created_at: time(row.get("created_at")).unwrap_or_default(),
            counts: StateCounts::default(),
            first_started_at: None,
            last_finished_at: None,
            device_seconds: 0.0,
        };
        let rows = sqlx::query(
            "SELECT state, count(*) AS n, min(started_at) AS s, max(finished_at) AS f, sum(device_seconds) AS d
             FROM jobs WHERE batch_id = ?1 GROUP BY state",
        )
        .bind(batch.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot count jobs"))?;
        for r in rows {
            status.counts.add(
                JobState::parse(r.get("state"))?,
                r.get::<i64, _>("n") as u64,
            );
            status.first_started_at = status
                .first_started_at
                .into_iter()
                .chain(time(r.get("s")))
                .min();
            status.last_finished_at = status
                .last_finished_at
                .into_iter()
                .chain(time(r.get("f")))
                .max();
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
            "SELECT {JOB_COLUMNS} FROM jobs WHERE batch_id = ?1 AND tenant_id = ?2 AND id > ?3 ORDER BY id LIMIT ?4"
        );
        let rows = sqlx::query(&sql)
            .bind(batch.to_string())
            .bind(tenant.to_string())
            .bind(after.map_or_else(String::new, |a| a.to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db("cannot list jobs"))?;
        if rows.is_empty() && after.is_none() {
            self.batch(tenant, batch).await?;
        }
        rows.iter().map(record).collect()
    }

    async fn job(&self, tenant: TenantId, job: JobId) -> Result<JobRecord> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND tenant_id = ?2");
        let row = sqlx::query(&sql)
            .bind(job.to_string())
            .bind(tenant.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot read job"))?
            .ok_or_else(|| Error::not_found(format!("job {job} not found")))?;
        record(&row)
    }

    async fn cancel(&self, tenant: TenantId, batch: BatchId) -> Result<u64> {
        self.batch(tenant, batch).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?3, queued_at = NULL, run_after = NULL,
                 lease_owner = NULL, lease_until = NULL
             WHERE batch_id = ?1 AND tenant_id = ?2 AND state IN ('pending', 'queued', 'retryable', 'running')",
        )
        .bind(batch.to_string())
        .bind(tenant.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(db("cannot cancel batch"))?;
        Ok(r.rows_affected())
    }

    async fn dispatchable(&self, model: &ModelName, limit: u32) -> Result<Vec<JobMessage>> {
        // Same order as Postgres: priority, then n-th job of a tenant at n / weight, then age.
        let rows = sqlx::query(
            "SELECT j.id, j.batch_id, j.priority, j.crashes FROM (
                 SELECT id, batch_id, priority, tenant_id, crashes,
                        row_number() OVER (PARTITION BY tenant_id, priority ORDER BY id) AS rn
                 FROM jobs WHERE state = 'pending' AND model = ?1) j
             JOIN tenants t ON t.id = j.tenant_id
             ORDER BY j.priority DESC, CAST(j.rn AS REAL) / t.weight, j.id
             LIMIT ?2",
        )
        .bind(model.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot select jobs to dispatch"))?;
        rows.iter()
            .map(|r| {
                Ok(JobMessage {
                    job_id: r.get::<String, _>("id").parse()?,
                    batch_id: r.get::<String, _>("batch_id").parse()?,
                    model: model.clone(),
                    priority: Priority::parse(
                        u8::try_from(r.get::<i64, _>("priority")).unwrap_or(0),
                    )?,
                    crashes: u32::try_from(r.get::<i64, _>("crashes")).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn mark_queued(&self, ids: &[JobId]) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db("cannot begin"))?;
        let now = now_ms();
        let mut n = 0;
        for id in ids {
            n += sqlx::query("UPDATE jobs SET state = 'queued', queued_at = ?2 WHERE id = ?1 AND state = 'pending'")
                .bind(id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("cannot mark job queued"))?
                .rows_affected();
        }
        tx.commit().await.map_err(db("cannot commit"))?;
        Ok(n)
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
        let now = now_ms();
        let prune_before = now - ms(crate::postgres::PRESENCE_PRUNE_AFTER);
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot announce worker"))?;
        sqlx::query("DELETE FROM worker_models WHERE worker_id = ?1 OR live_until < ?2")
            .bind(worker)
            .bind(prune_before)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot announce worker"))?;
        for model in models {
            sqlx::query(
                "INSERT INTO served_models (model, first_seen_at, last_seen_at) VALUES (?1, ?2, ?2)
                 ON CONFLICT (model) DO UPDATE SET last_seen_at = excluded.last_seen_at",
            )
            .bind(model.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db("cannot announce worker"))?;
            sqlx::query(
                "INSERT INTO worker_models (worker_id, model, seen_at, live_until)
                 VALUES (?1, ?2, ?3, ?3 + ?4) ON CONFLICT (worker_id, model) DO NOTHING",
            )
            .bind(worker)
            .bind(model.as_str())
            .bind(now)
            .bind(ms(ttl))
            .execute(&mut *tx)
            .await
            .map_err(db("cannot announce worker"))?;
        }
        tx.commit().await.map_err(db("cannot announce worker"))
    }

    async fn set_model_limits(&self, limits: &[(ModelName, ModelLimits)]) -> Result<()> {
        let now = now_ms();
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("cannot record model limits"))?;
        for (model, l) in limits {
            sqlx::query(
                "INSERT INTO served_models (model, first_seen_at, last_seen_at, limits)
                 VALUES (?1, ?2, ?2, ?3)
                 ON CONFLICT (model) DO UPDATE SET limits = excluded.limits",
            )
            .bind(model.as_str())
            .bind(now)
            .bind(sqlx::types::Json(l))
            .execute(&mut *tx)
            .await
            .map_err(db("cannot record model limits"))?;
        }
        tx.commit().await.map_err(db("cannot record model limits"))
    }

    async fn withdraw_worker(&self, worker: &str) -> Result<()> {
        sqlx::query("DELETE FROM worker_models WHERE worker_id = ?1")
            .bind(worker)
            .execute(&self.pool)
            .await
            .map_err(db("cannot withdraw worker"))?;
        Ok(())
    }

    async fn model_presence(&self) -> Result<Vec<ModelPresence>> {
        let rows = sqlx::query(
            "SELECT s.model, s.last_seen_at, s.limits,
                    count(w.worker_id) FILTER (WHERE w.live_until > ?1) AS live
             FROM served_models s LEFT JOIN worker_models w ON w.model = s.model
             GROUP BY s.model, s.last_seen_at, s.limits ORDER BY s.model",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(db("cannot read served models"))?;
        rows.iter()
            .map(|r| {
                let model: String = r
                    .try_get("model")
                    .map_err(db("cannot read served models"))?;
                let live: i64 = r.try_get("live").map_err(db("cannot read served models"))?;
                Ok(ModelPresence {
                    model: ModelName::parse(model)?,
                    live_workers: u64::try_from(live).unwrap_or(0),
                    last_seen_at: time(
                        r.try_get("last_seen_at")
                            .map_err(db("cannot read served models"))?,
                    )
                    .unwrap_or_default(),
                    limits: r
                        .try_get::<Option<sqlx::types::Json<ModelLimits>>, _>("limits")
                        .map_err(db("cannot read served models"))?
                        .map(|j| j.0),
                })
            })
            .collect()
    }

    async fn claim(&self, job: JobId, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>> {
        let now = now_ms();
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?2,
                 lease_until = ?3 + ?4, started_at = ?3, run_after = NULL,
                 steps_done = NULL, steps_total = NULL
             WHERE id = ?1 AND state IN ('pending', 'queued') AND attempt < max_attempts
             RETURNING {JOB_COLUMNS}, tenant_id, queued_at"
        );
        let row = sqlx::query(&sql)
            .bind(job.to_string())
            .bind(worker)
            .bind(now)
            .bind(ms(lease))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("cannot claim job"))?;
        row.map(|r| {
            Ok(ClaimedJob {
                job: record(&r)?,
                tenant: r.get::<String, _>("tenant_id").parse()?,
                queued_at: time(r.get("queued_at")),
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
            "UPDATE jobs SET lease_until = ?4,
                 steps_done = COALESCE(?5, steps_done), steps_total = COALESCE(?6, steps_total)
             WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempt = ?3",
        )
        .bind(job.to_string())
        .bind(worker)
        .bind(i64::from(attempt))
        .bind(now_ms() + ms(lease))
        .bind(done.map(i64::from))
        .bind(total.map(i64::from))
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
        let r = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', finished_at = ?4, lease_owner = NULL, lease_until = NULL,
                 object_key = ?5, sha256 = ?6, timings = ?7, device_seconds = device_seconds + ?8
             WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempt = ?3",
        )
        .bind(job.to_string())
        .bind(worker)
        .bind(i64::from(attempt))
        .bind(now_ms())
        .bind(&done.object_key)
        .bind(&done.sha256)
        .bind(serde_json::to_string(&done.timings).expect("timings serialize"))
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
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE jobs SET
                 state = CASE WHEN ?6 IS NULL THEN 'dead' ELSE 'retryable' END,
                 finished_at = CASE WHEN ?6 IS NULL THEN ?7 END,
                 run_after = ?7 + ?6,
                 lease_owner = NULL, lease_until = NULL, queued_at = NULL,
                 error_kind = ?4, last_error = ?5
             WHERE id = ?1 AND state = 'running' AND lease_owner = ?2 AND attempt = ?3",
        )
        .bind(job.to_string())
        .bind(worker)
        .bind(i64::from(attempt))
        .bind(kind)
        .bind(message)
        .bind(delay.map(|d| (d * 1000.0) as i64))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db("cannot record job failure"))?;
        Ok(r.rows_affected() == 1)
    }

    async fn rescue_expired(&self, limit: u32, max_crashes: u32) -> Result<RescueOutcome> {
        let now = now_ms();
        // SQLite evaluates every right-hand side on the old row, as Postgres does.
        let rows = sqlx::query(
            "UPDATE jobs SET
                 crashes = crashes + 1,
                 attempt = CASE WHEN crashes + 1 >= ?3 THEN attempt ELSE attempt - 1 END,
                 state = CASE WHEN crashes + 1 >= ?3 THEN 'dead' ELSE 'pending' END,
                 finished_at = CASE WHEN crashes + 1 >= ?3 THEN ?1 END,
                 error_kind = CASE WHEN crashes + 1 >= ?3 THEN 'crashed_worker' ELSE 'lease_expired' END,
                 last_error = CASE WHEN crashes + 1 >= ?3
                     THEN 'crashed the worker: its lease expired ' || (crashes + 1)
                          || ' times (last on worker ' || lease_owner || ')'
                     ELSE 'lease of worker ' || lease_owner || ' expired (the worker died or lost the database); '
                          || 'not counted as an attempt, ' || (crashes + 1) || ' of ' || ?3
                          || ' before the job counts as crashing workers' END,
                 lease_owner = NULL, lease_until = NULL, queued_at = NULL
             WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < ?1
                          ORDER BY lease_until LIMIT ?2)
             RETURNING state",
        )
        .bind(now)
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
             WHERE id IN (SELECT id FROM jobs WHERE state = 'retryable' AND run_after <= ?1
                          ORDER BY run_after LIMIT ?2)",
        )
        .bind(now_ms())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("cannot promote retryable jobs"))?;
        Ok(r.rows_affected())
    }

    async fn requeue_stale_queued(&self, older_than: Duration, limit: u32) -> Result<u64> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', queued_at = NULL
             WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND queued_at < ?1
                          ORDER BY queued_at LIMIT ?2)",
        )
        .bind(now_ms() - ms(older_than))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("cannot requeue stale queued jobs"))?;
        Ok(r.rows_affected())
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
