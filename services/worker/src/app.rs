//! Wiring: settings → seams + renderer → a running worker with its ops server.

use anyhow::Context;
use pixelfarm_blob::{S3Blob, S3Config};
use pixelfarm_core::{Backoff, BlobStore, ChainResult, Renderer};
use pixelfarm_diffusion::{DiffusionEngine, RegistryConfig, RemoteFile, registry::sha256_file};
use pixelfarm_image::ContentSigner;
use pixelfarm_runtime::health::{Health, blob_probe, broker_probe, store_probe};
use pixelfarm_runtime::settings::ContentCredentialsSettings;
use pixelfarm_runtime::{Settings, ops};
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::group::GroupConfig;
use crate::{Worker, WorkerConfig, WorkerMetrics};

/// The key that signs content credentials: `worker.content_credentials`, or the shipped TEST
/// ONLY development key when neither file is named.
///
/// # Errors
/// One file named without the other, an unreadable file, or a chain and key that do not make a
/// signer (the field and what is wrong named).
pub fn content_signer(c: &ContentCredentialsSettings) -> anyhow::Result<ContentSigner> {
    if !c.configured() {
        return Ok(ContentSigner::development());
    }
    let read = |field: &str, path: &std::path::Path| {
        anyhow::ensure!(
            !path.as_os_str().is_empty(),
            "worker.content_credentials.{field}: is empty while the other file is set; accepted: both files, or neither (the TEST ONLY development key)"
        );
        std::fs::read_to_string(path).with_context(|| {
            format!(
                "worker.content_credentials.{field}: cannot read {}",
                path.display()
            )
        })
    };
    let chain = read("cert_file", &c.cert_file)?;
    let key = read("key_file", &c.key_file)?;
    ContentSigner::from_pem(&chain, &key)
        .map_err(|e| anyhow::anyhow!("worker.content_credentials: {e}"))
}

/// The renderers `worker.renderer` accepts.
pub const RENDERERS: &[&str] = &["diffusion", "test-pattern"];

/// The model registry of the `diffusion` renderer, parsed and validated as
/// [`crate::app::renderer`] does -- the `worker.registry` file, or the shipped models when it is
/// not set -- and where it came from; `None` for `test-pattern`.
///
/// # Errors
/// An unknown renderer, an unreadable file, unknown keys or invalid entries (the file and the
/// entry named).
pub fn registry(settings: &Settings) -> anyhow::Result<Option<(RegistryConfig, String)>> {
    match settings.worker.renderer.as_str() {
        "test-pattern" => Ok(None),
        "diffusion" => {
            let Some(path) = settings.worker.registry.as_ref() else {
                let dir = pixelfarm_shapes::models_dir();
                let cfg = pixelfarm_shapes::shipped_registry(&dir).map_err(|e| {
                    anyhow::anyhow!(
                        "worker.registry: is not set, and the shipped models: {}",
                        e.chain()
                    )
                })?;
                return Ok(Some((
                    cfg,
                    format!("the shipped models in {} (unset)", dir.display()),
                )));
            };
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("worker.registry: cannot read {}", path.display()))?;
            let cfg: RegistryConfig = serde_yaml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("model registry {}: {e}", path.display()))?;
            cfg.validate()
                .map_err(|e| anyhow::anyhow!("model registry {}: {}", path.display(), e.chain()))?;
            Ok(Some((cfg, path.display().to_string())))
        }
        other => anyhow::bail!(
            "worker.renderer: is `{other}`; accepted: {}",
            RENDERERS.join(", ")
        ),
    }
}

/// The renderer named by `worker.renderer`. For `diffusion`, the models of the `worker.registry`
/// file, or the shipped models (`models/`, see [`pixelfarm_shapes::models_dir`]) when it is not
/// set; `s3://` models are downloaded into the cache first (the engine verifies every file's
/// sha256 when it loads the model, and a mismatch fails those jobs permanently with the file named).
///
/// # Errors
/// For an unknown renderer name, an unreadable or invalid registry, or an unreachable store.
pub async fn renderer(settings: &Settings) -> anyhow::Result<Arc<dyn Renderer>> {
    // The same choice and validation as `check-config` makes.
    match registry(settings)? {
        None => Ok(Arc::new(pixelfarm_render::TestPattern::with_delay(
            Duration::from_millis(settings.worker.test_pattern_delay_ms),
        ))),
        Some((cfg, source)) => {
            tracing::info!(%source, models = cfg.models.len(), "model registry");
            fetch_models(&cfg, &settings.blob.s3).await?;
            Ok(Arc::new(DiffusionEngine::new(cfg).chained()?))
        }
    }
}

/// Download the files of `s3://` models, LoRAs and ControlNets that are missing from the cache or differ from
/// their recorded sha256, with the blob store's endpoint and credentials.
async fn fetch_models(cfg: &RegistryConfig, s3: &S3Config) -> anyhow::Result<()> {
    for model in cfg.models.keys() {
        for f in cfg.remote_files(model).chained()? {
            download(&format!("model `{model}`"), &f, s3).await?;
        }
    }
    for (kind, name, f) in cfg.remote_adapter_files() {
        download(&format!("{} `{name}`", kind.as_str()), &f, s3).await?;
    }
    Ok(())
}

/// Download `f` into the cache unless it is there with its sha256 (the loader checks it again).
async fn download(what: &str, f: &RemoteFile, s3: &S3Config) -> anyhow::Result<()> {
    if sha256_file(&f.local_path).is_ok_and(|h| h == f.sha256) {
        return Ok(());
    }
    let store = S3Blob::connect(&S3Config {
        bucket: f.bucket.clone(),
        prefix: String::new(),
        ..s3.clone()
    })
    .await
    .chained()?;
    let bytes = store.get(&f.key).await.map_err(|e| {
        anyhow::anyhow!(
            "{what}: cannot download s3://{}/{}: {}",
            f.bucket,
            f.key,
            e.chain()
        )
    })?;
    let dir = f.local_path.parent().context("cache paths have a folder")?;
    tokio::fs::create_dir_all(dir).await?;
    let tmp = f.local_path.with_extension("download");
    tokio::fs::write(&tmp, &bytes).await?;
    tokio::fs::rename(&tmp, &f.local_path).await?;
    tracing::info!(what, key = %f.key, bytes = bytes.len(), "model file downloaded");
    Ok(())
}

/// Announcement periods a worker stays live without a new announcement: a missed beat or two (a
/// slow database) does not make its models look unserved.
pub const PRESENCE_PERIODS: u32 = 3;

/// How long one announcement of a worker that announces every `every` keeps it live.
pub fn presence_ttl(every: Duration) -> Duration {
    every * PRESENCE_PERIODS
}

/// Announce every `every` that worker `id` serves `models`, until `stop`; then withdraw it. The
/// scheduler dispatches only the jobs of models with a live worker and refuses at submit a model
/// no worker ever served (docs/models.md). A failed announcement is logged and made again at the
/// next beat. The first announcement is the caller's ([`announce`]), before the worker consumes.
pub async fn advertise(
    store: Arc<dyn pixelfarm_core::JobStore>,
    id: String,
    models: Vec<pixelfarm_core::ModelName>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = store
            .announce_worker(&id, &models, presence_ttl(every))
            .await
        {
            tracing::warn!(error = %e.chain(), "cannot announce the worker's models");
        }
    }
    match store.withdraw_worker(&id).await {
        Ok(()) => tracing::info!("worker withdrawn: it serves no model any more"),
        Err(e) => {
            tracing::warn!(error = %e.chain(), "cannot withdraw the worker; its announcement expires")
        }
    }
}

/// Largest `worker.write_group.max`: a group is one statement whose arrays hold every job of it.
pub const MAX_WRITE_GROUP: usize = 1000;

/// Longest `worker.write_group.wait_ms`: every claim and completion may wait this long, which a
/// job's lease and its queue wait should not notice.
pub const MAX_WRITE_GROUP_WAIT_MS: u64 = 1000;

/// The worker tunables from settings.
///
/// # Errors
/// `Invalid` settings.
pub fn config(settings: &Settings) -> anyhow::Result<WorkerConfig> {
    let w = &settings.worker;
    anyhow::ensure!(
        w.heartbeat_seconds < w.lease_seconds,
        "worker.heartbeat_seconds must be below worker.lease_seconds"
    );
    anyhow::ensure!(
        w.render_timeout_seconds > 0,
        "worker.render_timeout_seconds: is 0; accepted: 1 or more"
    );
    let g = &w.write_group;
    anyhow::ensure!(
        (1..=MAX_WRITE_GROUP).contains(&g.max),
        "worker.write_group.max: is {}; accepted: 1 (no grouping) to {MAX_WRITE_GROUP}",
        g.max
    );
    anyhow::ensure!(
        g.wait_ms <= MAX_WRITE_GROUP_WAIT_MS,
        "worker.write_group.wait_ms: is {}; accepted: 0 to {MAX_WRITE_GROUP_WAIT_MS}",
        g.wait_ms
    );
    Ok(WorkerConfig {
        id: w.worker_id(),
        models: w.model_names().chained()?,
        prefetch: w.prefetch.max(1),
        concurrency: w.concurrency.max(1),
        lease: Duration::from_secs(w.lease_seconds),
        heartbeat: Duration::from_secs(w.heartbeat_seconds.max(1)),
        drain_grace: Duration::from_secs(w.drain_grace_seconds),
        backoff: Backoff::default(),
        batch_linger: Duration::from_millis(w.batch_linger_ms),
        render_timeout: Duration::from_secs(w.render_timeout_seconds),
        write_group: GroupConfig {
            max: g.max,
            wait: Duration::from_millis(g.wait_ms),
        },
        signer: Arc::new(content_signer(&w.content_credentials)?),
        provenance_records: w.provenance_records,
    })
}

/// A started worker.
pub struct Running {
    /// Where `/metrics` and health listen.
    pub http_addr: SocketAddr,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Wait for the worker to drain and the ops server to stop.
    ///
    /// # Errors
    /// The first task error.
    pub async fn wait(self) -> anyhow::Result<()> {
        pixelfarm_runtime::tasks::wait_all(self.tasks, "worker").await
    }
}

/// The first announcement of a worker, before it consumes: its models, and the limits its
/// renderer sets on them, which submit then checks every job against (so a job no worker of
/// its model would render is refused at once, not dead later).
///
/// # Errors
/// The store's.
pub async fn announce(
    store: &dyn pixelfarm_core::JobStore,
    cfg: &WorkerConfig,
    renderer: &dyn pixelfarm_core::Renderer,
) -> pixelfarm_core::Result<()> {
    store
        .announce_worker(&cfg.id, &cfg.models, presence_ttl(cfg.heartbeat))
        .await?;
    let limits: Vec<_> = cfg
        .models
        .iter()
        .filter_map(|m| renderer.limits(m).map(|l| (m.clone(), l)))
        .collect();
    store.set_model_limits(&limits).await
}

/// Connect, and run the worker and its ops server until `stop` (then drain).
///
/// # Errors
/// When settings are invalid or a dependency is unreachable at start.
pub async fn start(settings: Settings, stop: CancellationToken) -> anyhow::Result<Running> {
    let cfg = config(&settings)?;
    let renderer = renderer(&settings).await?;
    // Announce only models this worker can render: jobs of the others could never finish here.
    for m in &cfg.models {
        renderer.identity(m).map_err(|e| {
            anyhow::anyhow!(
                "worker.models lists `{m}`, which worker.renderer `{}` cannot serve: {}",
                settings.worker.renderer,
                e.chain()
            )
        })?;
    }
    let store = settings.database.connect().await.chained()?;
    // Announced before consuming, so a ready worker's models are accepted at submit and dispatched.
    announce(store.as_ref(), &cfg, renderer.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("cannot announce the worker's models: {}", e.chain()))?;
    let presence = (
        store.clone(),
        cfg.id.clone(),
        cfg.models.clone(),
        cfg.heartbeat,
        stop.clone(),
    );
    let broker = settings.broker.connect().await.chained()?;
    let blob = settings.blob.connect().await.chained()?;
    let registry = Registry::new();
    let metrics = Arc::new(WorkerMetrics::register(&registry));
    tracing::info!(id = %cfg.id, "worker starting");
    if cfg.signer.is_development() {
        tracing::warn!(
            "content credentials are signed with the TEST ONLY development key, which no verifier trusts; set worker.content_credentials.cert_file and key_file"
        );
    }
    let worker = Arc::new(Worker::new(
        cfg,
        store.clone(),
        broker.clone(),
        blob.clone(),
        renderer,
        metrics,
    ));

    let mut tasks = JoinSet::new();
    // The ops server and the probes outlive the drain, so probes and scrapes see it finish.
    let ops_stop = CancellationToken::new();
    let mut health = Health::new(settings.health.config(), &registry);
    health
        .dependency("database", store_probe(store))
        .dependency("broker", broker_probe(broker))
        .dependency("blob", blob_probe(blob));
    let w = worker.clone();
    health.condition(
        "consumer",
        Arc::new(move || {
            let consuming = w.is_consuming();
            Box::pin(async move {
                if consuming {
                    Ok(())
                } else {
                    Err("not consuming from the broker".to_string())
                }
            })
        }),
    );
    let health = Arc::new(health);
    health.spawn(&mut tasks, ops_stop.clone());
    let (listener, http_addr) = ops::bind(&settings.worker.http_addr).await?;
    let app = ops::router(registry, health);
    let server_stop = ops_stop.clone();
    tasks.spawn(async move {
        ops::serve(listener, app, server_stop)
            .await
            .context("ops server failed")
    });
    tasks.spawn(async move {
        let r = worker.run(stop).await.chained();
        ops_stop.cancel();
        Ok(r?)
    });
    let (store, id, models, every, presence_stop) = presence;
    tasks.spawn(async move {
        advertise(store, id, models, every, presence_stop).await;
        Ok(())
    });
    tracing::info!(%http_addr, "worker ops listening");
    Ok(Running { http_addr, tasks })
}
