//! Layered settings. Every field has a default so a partial file works; `config/base.yaml`
//! documents them all.

use pixelfarm_blob::{LocalBlob, S3Blob, S3Config, S3UrlSigner};
use pixelfarm_broker::{InProcBroker, RabbitBroker, Topology};
use pixelfarm_core::{
    BlobStore, Broker, Error, JobStore, ModelName, Result, Retention, UrlSigning,
};
use pixelfarm_store::{PgStore, SqliteStore};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::health::HealthConfig;

mod credentials;
mod webhooks;
mod worker;
pub use credentials::ContentCredentialsSettings;
pub use webhooks::WebhookSettings;
pub use worker::{ProvenanceRecords, WorkerSettings, WriteGroupSettings};

/// All settings of a pixelfarm process (a scheduler reads some sections, a worker others).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where jobs are stored.
    pub database: DatabaseSettings,
    /// Where job messages travel.
    pub broker: BrokerSettings,
    /// Where images go.
    pub blob: BlobSettings,
    /// The scheduler service.
    pub scheduler: SchedulerSettings,
    /// The worker service.
    pub worker: WorkerSettings,
    /// Dependency probes behind `/readyz`, `/healthz` and `pixelfarm_dependency_up`.
    pub health: HealthSettings,
}

/// `health` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// Between probes of the database, broker and blob store, in milliseconds.
    pub interval_ms: u64,
    /// A probe not answered within this many milliseconds counts as failed.
    pub timeout_ms: u64,
    /// A check failing this many seconds without a break fails `/healthz`, so Kubernetes restarts
    /// the process. Processes reconnect by themselves; this is the backstop for a wedged one.
    pub stall_seconds: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        let d = HealthConfig::default();
        HealthSettings {
            interval_ms: d.interval.as_millis() as u64,
            timeout_ms: d.timeout.as_millis() as u64,
            stall_seconds: d.stall.as_secs(),
        }
    }
}

impl HealthSettings {
    /// The probe timing (each value at least 1).
    pub fn config(&self) -> HealthConfig {
        HealthConfig {
            interval: Duration::from_millis(self.interval_ms.max(1)),
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            stall: Duration::from_secs(self.stall_seconds.max(1)),
        }
    }
}

/// `database` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://…` in production; `sqlite://PATH` for a single-process setup.
    pub url: String,
    /// Pool size per process.
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: "postgres://postgres@127.0.0.1:5432/pixelfarm".into(),
            max_connections: 16,
        }
    }
}

impl DatabaseSettings {
    /// Connect (and, for SQLite, migrate).
    ///
    /// # Errors
    /// `Transient` when the database is unreachable, `Invalid` for a bad URL.
    pub async fn connect(&self) -> Result<Arc<dyn JobStore>> {
        match self.url.strip_prefix("sqlite://") {
            Some(path) => Ok(Arc::new(SqliteStore::open(Path::new(path)).await?)),
            None => Ok(Arc::new(
                PgStore::connect(&self.url, self.max_connections).await?,
            )),
        }
    }

    /// Apply the migrations, creating the Postgres database first when the server does not have
    /// it (SQLite creates its file and migrates on open).
    ///
    /// # Errors
    /// When the database is unreachable, cannot be created, or a migration fails.
    pub async fn migrate(&self) -> Result<()> {
        match self.url.strip_prefix("sqlite://") {
            Some(path) => SqliteStore::open(Path::new(path)).await.map(|_| ()),
            None => {
                if PgStore::create_database_if_missing(&self.url).await? {
                    tracing::info!("created the database of database.url");
                }
                PgStore::connect(&self.url, 2).await?.migrate().await
            }
        }
    }
}

/// `broker` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    /// `amqp://user:pass@host:5672/vhost`, or `inproc` for a single-process setup.
    pub url: String,
    /// Prefix of exchange and queue names (`<prefix>.jobs.<model>`).
    pub prefix: String,
    /// Most messages published but not yet claimed per model; Postgres holds the rest, so
    /// priorities and fair share stay decidable until the last moment.
    pub window_per_model: u32,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "pixelfarm".into(),
            window_per_model: 512,
        }
    }
}

impl BrokerSettings {
    /// Connect.
    ///
    /// # Errors
    /// `Transient` when RabbitMQ is unreachable.
    pub async fn connect(&self) -> Result<Arc<dyn Broker>> {
        if self.url == "inproc" {
            return Ok(Arc::new(InProcBroker::new()));
        }
        Ok(Arc::new(
            RabbitBroker::connect(&self.url, Topology::new(self.prefix.clone())).await?,
        ))
    }
}

/// Which blob store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    /// S3-compatible object storage.
    #[default]
    S3,
    /// A local directory (`blob.dir`).
    Local,
}

/// `blob` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobSettings {
    /// `s3` or `local`.
    pub kind: BlobKind,
    /// Directory for `local`.
    pub dir: PathBuf,
    /// Create the bucket at start if it is missing (development).
    pub create_bucket: bool,
    /// Presigned GET URLs of the images, for kind `s3`.
    pub signed_urls: SignedUrlSettings,
    /// S3 settings for `s3`.
    #[serde(flatten)]
    pub s3: S3Config,
}

/// `blob.signed_urls`: presigned GET URLs of each image in the API's job records (and so in
/// `results.jsonl`), which anyone holding one can download until it expires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignedUrlSettings {
    /// How long each URL is valid, in seconds: 0 signs none; at most
    /// [`pixelfarm_blob::MAX_SIGNED_URL_SECONDS`] (7 days, SigV4's limit).
    pub expiry_seconds: u64,
    /// The store's address as the URLs' users reach it (`https://images.example.com`); empty:
    /// `blob.endpoint`. The host is signed, so the store must see this host.
    pub public_endpoint: String,
}

impl Default for BlobSettings {
    fn default() -> Self {
        BlobSettings {
            kind: BlobKind::S3,
            dir: PathBuf::from("out/blobs"),
            create_bucket: false,
            signed_urls: SignedUrlSettings::default(),
            s3: S3Config {
                bucket: "pixelfarm".into(),
                region: "us-east-1".into(),
                ..Default::default()
            },
        }
    }
}

impl BlobSettings {
    /// Build the client.
    ///
    /// # Errors
    /// `Invalid` for incomplete settings; errors creating the bucket when asked to.
    pub async fn connect(&self) -> Result<Arc<dyn BlobStore>> {
        match self.kind {
            BlobKind::Local => Ok(Arc::new(LocalBlob::open(&self.dir).await?)),
            BlobKind::S3 => {
                let s = S3Blob::connect(&self.s3).await?;
                if self.create_bucket {
                    s.ensure_bucket().await?;
                }
                Ok(Arc::new(s))
            }
        }
    }

    /// The signer of the images' URLs with how long each is valid, when `signed_urls` asks
    /// for them (no request is made).
    ///
    /// # Errors
    /// `Invalid` for incomplete settings.
    pub async fn url_signing(&self) -> Result<Option<UrlSigning>> {
        let expiry = self.signed_urls.expiry_seconds;
        if expiry == 0 || self.kind != BlobKind::S3 {
            return Ok(None);
        }
        let signer = S3UrlSigner::connect(&self.s3, &self.signed_urls.public_endpoint).await?;
        Ok(Some(UrlSigning {
            signer: Arc::new(signer),
            expires_in: Duration::from_secs(expiry),
        }))
    }
}

/// A tenant and API keys created at start if missing (bootstrap; keys can also be made with
/// `pixelfarm-scheduler tenant create`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBootstrap {
    /// Tenant name.
    pub name: String,
    /// Fair-share weight.
    #[serde(default = "one")]
    pub weight: u32,
    /// API keys (plain; only their sha256 is stored). A key this list stops naming is revoked
    /// when the scheduler next starts, until it is listed again.
    #[serde(default)]
    pub api_keys: Vec<String>,
}

fn one() -> u32 {
    1
}

/// `scheduler` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// gRPC API listen address.
    pub grpc_addr: String,
    /// HTTP/JSON API + `/metrics` + health listen address.
    pub http_addr: String,
    /// Attempts per job before it is dead.
    pub max_attempts: u32,
    /// Expired leases (its worker was killed or lost the database) after which a job is dead as
    /// the one crashing its workers; an expiry does not spend an attempt.
    pub max_crashes: u32,
    /// How often the leader publishes pending jobs, in milliseconds.
    pub dispatch_interval_ms: u64,
    /// How often the leader runs the rescuer, the retry promoter and the stale-queue check.
    pub maintenance_interval_ms: u64,
    /// A job queued this long without a claim had its message lost: back to pending.
    pub stale_queued_seconds: u64,
    /// Tenants and keys to create at start.
    pub tenants: Vec<TenantBootstrap>,
    /// Models accepted at submit although no worker has served them yet (a pool scaled to zero
    /// or not deployed yet); their jobs wait, visibly, until a worker serves them. A model some
    /// worker ever announced is accepted anyway; any other is refused at submit.
    pub models: Vec<ModelName>,
    /// TLS of the gRPC and HTTP listeners; both files unset: plain TCP.
    pub tls: TlsSettings,
    /// How long the job rows of finished batches are kept (tenants may have their own).
    pub retention: RetentionSettings,
    /// Which receivers webhooks may call and how their deliveries are retried.
    pub webhooks: WebhookSettings,
}

/// `scheduler.retention` section: the leader deletes the job rows of a batch whose jobs are all
/// final once the last finished this long ago, keeping the batch row (name, tags, manifest).
/// A tenant's own retention (`pixelfarm-scheduler tenant set-retention`) wins over `days`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// Days after a finished batch's last job finished; 0 (the default) keeps job rows forever:
    /// deleting is for good, so an upgrade deletes nothing until the operator chooses a value.
    pub days: u32,
    /// The retention in seconds instead of `days`, for tests and demos that cannot wait a day;
    /// unset in production.
    pub seconds: Option<u64>,
    /// Job rows deleted per statement, each statement its own short transaction.
    pub chunk: u32,
    /// Pause between two chunks while rows past their retention remain, in milliseconds: the
    /// purge yields the database to the hot path between statements.
    pub pause_ms: u64,
    /// How often the leader looks for newly expired batches once none is left, in seconds.
    pub interval_seconds: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            days: 0,
            seconds: None,
            chunk: 1000,
            pause_ms: 100,
            interval_seconds: 300,
        }
    }
}

impl RetentionSettings {
    /// The default retention of tenants without their own.
    pub fn retention(&self) -> Retention {
        Retention::from_seconds(
            self.seconds
                .unwrap_or_else(|| u64::from(self.days) * 86_400),
        )
    }
}

/// `scheduler.tls` section: the certificate a listener presents, from PEM files that are read at
/// start and re-read while serving (a rotated certificate is served without a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first (cert-manager's `tls.crt`).
    pub cert_file: PathBuf,
    /// PEM private key of that certificate: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`tls.key`).
    pub key_file: PathBuf,
}

impl TlsSettings {
    /// Whether TLS is asked for (a certificate file is named; `check-config` insists on both).
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty() || !self.key_file.as_os_str().is_empty()
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            grpc_addr: "0.0.0.0:50051".into(),
            http_addr: "0.0.0.0:8080".into(),
            max_attempts: 5,
            max_crashes: 3,
            dispatch_interval_ms: 50,
            maintenance_interval_ms: 1000,
            stale_queued_seconds: 600,
            tenants: Vec::new(),
            models: Vec::new(),
            tls: TlsSettings::default(),
            retention: RetentionSettings::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

impl Settings {
    /// Load `DIR/base.yaml`, then `DIR/{env}.yaml`, then `PIXELFARM__…` environment variables,
    /// where DIR is `PIXELFARM_CONFIG_DIR` (default `config`) and env is `PIXELFARM_ENV`
    /// (default `local`). Missing files are skipped.
    ///
    /// # Errors
    /// `Invalid` naming the key that does not parse.
    pub fn load() -> Result<Self> {
        let dir = std::env::var("PIXELFARM_CONFIG_DIR").unwrap_or_else(|_| "config".into());
        let env = std::env::var("PIXELFARM_ENV").unwrap_or_else(|_| "local".into());
        Self::load_from(Path::new(&dir), &env)
    }

    /// [`Settings::load`] with an explicit directory and environment name.
    ///
    /// # Errors
    /// `Invalid` naming the key that does not parse.
    pub fn load_from(dir: &Path, env: &str) -> Result<Self> {
        let cfg = config::Config::builder()
            .add_source(config::File::from(dir.join("base.yaml")).required(false))
            .add_source(config::File::from(dir.join(format!("{env}.yaml"))).required(false))
            .add_source(
                config::Environment::with_prefix("PIXELFARM")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("worker.models")
                    .with_list_parse_key("scheduler.models")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| Error::invalid(format!("cannot read settings: {e}")))?;
        cfg.try_deserialize()
            .map_err(|e| Error::invalid(format!("settings: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_then_env_override() {
        let dir = std::env::temp_dir().join(format!("pf-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("base.yaml"),
            "broker:\n  window_per_model: 7\nworker:\n  prefetch: 3\n",
        )
        .unwrap();
        std::fs::write(dir.join("ci.yaml"), "worker:\n  prefetch: 4\n").unwrap();
        let s = Settings::load_from(&dir, "ci").unwrap();
        assert_eq!(
            (
                s.broker.window_per_model,
                s.worker.prefetch,
                s.worker.lease_seconds
            ),
            (7, 4, 30)
        );
        std::fs::write(dir.join("ci.yaml"), "worker:\n  prefetchh: 4\n").unwrap();
        let e = Settings::load_from(&dir, "ci").unwrap_err().to_string();
        assert!(e.contains("prefetchh"), "{e}");
    }

    #[test]
    fn model_names_are_validated() {
        let w = WorkerSettings {
            models: vec!["ok".into(), "Not Ok".into()],
            ..Default::default()
        };
        assert!(
            w.model_names()
                .unwrap_err()
                .to_string()
                .contains("worker.models")
        );
    }
}
