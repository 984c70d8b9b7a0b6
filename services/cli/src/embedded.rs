//! `pixelfarm run`: the whole pipeline in one process — the scheduler's API, dispatcher and
//! maintenance over SQLite, an in-process broker, a worker, and the output folder as the blob
//! store. Same code paths as the distributed stack; only the seams differ.

use anyhow::Context;
use bytes::Bytes;
use pixelfarm_api::BatchView;
use pixelfarm_blob::LocalBlob;
use pixelfarm_broker::InProcBroker;
use pixelfarm_core::{
    BatchId, BatchSpec, BlobStore, Broker, ChainResult, ControlSpec, JobState, JobStore,
    MAX_INPUT_BYTES, ModelName, Preprocess, Renderer, RgbImage, TenantId, parse_manifest,
};
use pixelfarm_diffusion::{DiffusionEngine, RegistryConfig, Source};
use pixelfarm_runtime::Settings;
use pixelfarm_runtime::settings::ContentCredentialsSettings;
use pixelfarm_scheduler::app::Core;
use pixelfarm_store::SqliteStore;
use pixelfarm_worker::{Worker, WorkerMetrics};
use prometheus::Registry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::dataset;
use crate::export::{self, Local};

/// State kept in the output folder: the job database (so a re-run with the same idempotency key
/// resumes the same batch).
pub const STATE_DIR: &str = ".pixelfarm";

/// How a run goes, besides its manifest and output folder.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Jobs rendered at once.
    pub workers: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Also write the succeeded jobs as a dataset into `out/`[`DATASET_DIR`].
    pub dataset: Option<&'a dataset::Options>,
    /// How long the run waits, once its images are written, for the batch's webhooks to be
    /// delivered (retries included); what is still pending then stays in the output folder's
    /// state, and the next run in that folder delivers it.
    pub webhook_wait: Duration,
    /// The key that signs the images' content credentials; none configured: the TEST ONLY
    /// development key.
    pub signing: &'a ContentCredentialsSettings,
    /// A model registry (the worker's `diffusion:` section as YAML, `file://` sources) whose
    /// models, LoRAs and ControlNets the run may name besides the shipped model.
    pub registry: Option<&'a Path>,
}

/// What a run produced.
pub struct RunReport {
    /// The final view of the batch.
    pub batch: BatchView,
    /// What the export wrote.
    pub export: export::Summary,
    /// What the dataset export wrote into [`DATASET_DIR`], when one was asked for.
    pub dataset: Option<dataset::Summary>,
    /// What became of the batch's webhook events.
    pub webhooks: WebhookOutcome,
}

/// The batch's webhook events by state when the run ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WebhookOutcome {
    /// Answered 2xx.
    pub delivered: u64,
    /// Given up.
    pub failed: u64,
    /// Still to be retried.
    pub pending: u64,
}

/// The folder of `out` a dataset export is written to (again at every run).
pub const DATASET_DIR: &str = "dataset";

/// The model name the embedded mode renders with the test-pattern renderer (no model).
pub const TEST_PATTERN_MODEL: &str = "test-pattern";

/// Where the shipped models are: `PIXELFARM_MODELS_DIR`, else `./models` when it exists, else the
/// source checkout's `models/` (for `cargo run`).
pub fn models_dir() -> PathBuf {
    pixelfarm_shapes::models_dir()
}

/// The renderer for `model`: a model of `registry` (a registry file, see
/// [`RunOptions::registry`]) or the shipped model through the production diffusion engine, or
/// the test pattern for [`TEST_PATTERN_MODEL`].
///
/// # Errors
/// A registry file that does not load or names `s3://` sources; `Invalid` for any other model,
/// naming the ones served.
pub fn renderer_for(
    model: &ModelName,
    registry: Option<&Path>,
) -> anyhow::Result<Arc<dyn Renderer>> {
    if model.as_str() == TEST_PATTERN_MODEL {
        return Ok(Arc::new(pixelfarm_render::TestPattern::default()));
    }
    let mut served = Vec::new();
    if let Some(path) = registry {
        let cfg = local_registry(path)?;
        if cfg.models.contains_key(model) {
            return Ok(Arc::new(DiffusionEngine::new(cfg).chained()?));
        }
        served.extend(cfg.models.keys().map(|m| m.to_string()));
    }
    let shipped = pixelfarm_shapes::shipped_registry(&models_dir()).chained()?;
    if !shipped.models.contains_key(model) {
        served.extend(shipped.models.keys().map(|m| m.to_string()));
        served.push(TEST_PATTERN_MODEL.to_string());
        anyhow::bail!(
            "manifest field `model`: `{model}` is not served by the embedded mode; accepted: {}",
            served.join(", ")
        );
    }
    Ok(Arc::new(DiffusionEngine::new(shipped).chained()?))
}

/// The registry file at `path`, checked to name local files only: the embedded mode has no
/// object store to download from.
fn local_registry(path: &Path) -> anyhow::Result<RegistryConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--registry: cannot read {}", path.display()))?;
    let cfg: RegistryConfig =
        serde_yaml::from_str(&text).with_context(|| format!("--registry {}", path.display()))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--registry {}: {}", path.display(), e.chain()))?;
    let remote = cfg
        .models
        .iter()
        .map(|(n, e)| (n, &e.source))
        .chain(cfg.loras.iter().map(|(n, e)| (n, &e.source)))
        .chain(cfg.controlnets.iter().map(|(n, e)| (n, &e.source)))
        .find(|(_, source)| matches!(source, Source::S3 { .. }));
    if let Some((name, source)) = remote {
        anyhow::bail!(
            "--registry {}: `{name}` is at {source}; accepted in `pixelfarm run`: file:// sources (a distributed worker downloads s3:// ones)",
            path.display()
        );
    }
    Ok(cfg)
}

/// Render `manifest` into `out` and write `contact-sheet.png` and, with `opts.dataset`, a dataset
/// of the succeeded jobs into `out/`[`DATASET_DIR`] (replacing the one there). Init images and
/// masks name local files, relative to `base` (the manifest's folder); each is uploaded into
/// `out` as the distributed stack's upload API would, then the manifest names it. A manifest's
/// `webhook:` is delivered as the scheduler does (signed, retried), to any address: the user
/// running this is the operator, so private networks are not refused.
///
/// # Errors
/// A bad manifest, an unknown model or a missing input file (before anything is written), or I/O
/// and rendering failures.
pub async fn run(
    manifest: String,
    base: &Path,
    out: &Path,
    opts: RunOptions<'_>,
) -> anyhow::Result<RunReport> {
    let RunOptions {
        workers,
        progress,
        dataset,
        webhook_wait,
        signing,
        registry: models_file,
    } = opts;
    // Refuse a bad manifest or a model we cannot serve before creating anything.
    let spec = parse_manifest(&manifest).chained()?;
    let model = spec.model.clone();
    let renderer = renderer_for(&model, models_file)?;
    let inputs = read_inputs(&spec, base)?;
    if signing.configured() {
        pixelfarm_worker::app::content_signer(signing).context("--signing-cert / --signing-key")?;
    }

    let mut settings = Settings::default();
    settings.scheduler.dispatch_interval_ms = 10;
    settings.scheduler.maintenance_interval_ms = 500;
    settings.broker.window_per_model = (workers as u32 * 4).max(8);
    settings.worker.models = vec![model.to_string()];
    settings.worker.id = "embedded".into();
    settings.worker.concurrency = workers.max(1);
    settings.worker.prefetch = (workers.max(1) * 2).min(u16::MAX as usize) as u16;
    settings.worker.content_credentials = signing.clone();
    settings.scheduler.webhooks.allow_private_networks = true;
    settings.scheduler.webhooks.poll_ms = 100;

    std::fs::create_dir_all(out.join(STATE_DIR))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let store: Arc<dyn JobStore> = Arc::new(
        SqliteStore::open(&out.join(STATE_DIR).join("jobs.sqlite"))
            .await
            .chained()?,
    );
    let broker: Arc<dyn Broker> = Arc::new(InProcBroker::new());
    let blob: Arc<dyn BlobStore> = Arc::new(LocalBlob::open(out).await.chained()?);
    let tenant = pixelfarm_scheduler::tenants::ensure(store.as_ref(), "local", 1)
        .await
        .chained()?;

    let registry = Registry::new();
    // The output folder is the blob store: its images have no URLs to sign.
    let core = Core::new(&settings, store.clone(), blob.clone(), None, &registry);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    core.spawn_loops(&settings, broker.clone(), &mut tasks, &stop);
    let worker_cfg = pixelfarm_worker::app::config(&settings)?;
    // The worker announces its model as a distributed one does: the dispatcher publishes only
    // the jobs of models with a live worker.
    pixelfarm_worker::app::announce(store.as_ref(), &worker_cfg, renderer.as_ref())
        .await
        .chained()?;
    let advertise = pixelfarm_worker::app::advertise(
        store.clone(),
        worker_cfg.id.clone(),
        worker_cfg.models.clone(),
        worker_cfg.heartbeat,
        stop.clone(),
    );
    tasks.spawn(async move {
        advertise.await;
        Ok(())
    });
    let worker = Arc::new(Worker::new(
        worker_cfg,
        store,
        broker,
        blob.clone(),
        renderer,
        Arc::new(WorkerMetrics::register(&registry)),
    ));
    let worker_stop = stop.clone();
    tasks.spawn(async move { Ok(worker.run(worker_stop).await.chained()?) });

    let result = async {
        let mut renamed = HashMap::new();
        for (path, bytes) in inputs {
            let up = core
                .api
                .upload(tenant, None, bytes)
                .await
                .map_err(|e| anyhow::anyhow!("input {path}: {}", e.chain()))?;
            renamed.insert(path, up.key);
        }
        let submitted = core
            .api
            .submit_renaming_inputs(tenant, manifest, &renamed)
            .await
            .chained()?;
        let views = core
            .api
            .clone()
            .watch(tenant, submitted.batch_id)
            .await
            .chained()?;
        let batch = if progress {
            crate::progress::follow(views).await
        } else {
            crate::progress::follow_quietly(views).await
        }
        .chained()?;
        let source = Local {
            api: core.api.clone(),
            tenant,
        };
        let export = export::export(&source, submitted.batch_id, out)
            .await
            .chained()?;
        write_contact_sheet(&source, submitted.batch_id, out).await?;
        let dataset = match dataset {
            Some(opts) => {
                let dir = out.join(DATASET_DIR);
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("cannot replace {}", dir.display()))?;
                }
                Some(
                    dataset::export(&source, submitted.batch_id, &dir, opts)
                        .await
                        .chained()?,
                )
            }
            None => None,
        };
        let webhooks = settle_webhooks(
            core.store.as_ref(),
            tenant,
            submitted.batch_id,
            webhook_wait,
        )
        .await
        .chained()?;
        Ok(RunReport {
            batch,
            export,
            dataset,
            webhooks,
        })
    }
    .await;
    stop.cancel();
    while let Some(r) = tasks.join_next().await {
        r.context("embedded task panicked")??;
    }
    result
}

/// Wait until none of `batch`'s webhook events is pending, or `wait` passed; count them by state.
async fn settle_webhooks(
    store: &dyn JobStore,
    tenant: TenantId,
    batch: BatchId,
    wait: Duration,
) -> pixelfarm_core::Result<WebhookOutcome> {
    const PAGE: u32 = 1000;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let mut outcome = WebhookOutcome::default();
        let mut after = None;
        loop {
            let page = store.webhook_deliveries(tenant, batch, after, PAGE).await?;
            for d in &page {
                match d.state.as_str() {
                    "delivered" => outcome.delivered += 1,
                    "pending" => outcome.pending += 1,
                    _ => outcome.failed += 1,
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => after = Some(last.id),
                _ => break,
            }
        }
        if outcome.pending == 0 || tokio::time::Instant::now() >= deadline {
            return Ok(outcome);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The bytes of every distinct local file the manifest's init images, masks and control images
/// name, relative to `base`, keyed by the manifest's text for it.
fn read_inputs(spec: &BatchSpec, base: &Path) -> anyhow::Result<BTreeMap<String, Bytes>> {
    let mut inputs = BTreeMap::new();
    for (field, img) in spec.jobs.input_images() {
        if inputs.contains_key(&img.key) {
            continue;
        }
        let path = base.join(&img.key);
        let meta = std::fs::metadata(&path).with_context(|| {
            format!(
                "manifest field `{field}`: input `{}` is not a file ({}); accepted: a path relative to the manifest's folder",
                img.key,
                path.display()
            )
        })?;
        // The limit before reading: the upload refuses bigger files anyway.
        anyhow::ensure!(
            meta.len() <= MAX_INPUT_BYTES,
            "manifest field `{field}`: input `{}` is {} bytes; accepted: at most {MAX_INPUT_BYTES} bytes",
            img.key,
            meta.len()
        );
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        inputs.insert(img.key.clone(), Bytes::from(bytes));
    }
    Ok(inputs)
}

/// Name of the grid of every image, captioned with its prompt.
pub const CONTACT_SHEET: &str = "contact-sheet.png";

/// Write `out/contact-sheet.png`: every succeeded image of the batch in a captioned grid, each
/// control image (as its ControlNet read it) in the cell before the first image it steered.
async fn write_contact_sheet(source: &Local, batch: BatchId, out: &Path) -> anyhow::Result<()> {
    let mut cells = Vec::new();
    let mut shown = std::collections::HashSet::new();
    let mut after = None;
    loop {
        let (jobs, next) = export::ResultSource::page(source, batch, after)
            .await
            .chained()?;
        for j in jobs.iter().filter(|j| j.state == JobState::Succeeded) {
            for c in j.params.control.iter() {
                if shown.insert((c.image.key.clone(), c.preprocess)) {
                    cells.push(control_cell(out, c)?);
                }
            }
            let key = j
                .object_key
                .as_deref()
                .context("succeeded jobs have an object key")?;
            let bytes =
                std::fs::read(out.join(key)).with_context(|| format!("cannot read {key}"))?;
            cells.push((
                pixelfarm_image::output::decode_rgb(&bytes).chained()?,
                j.params.prompt.as_str().to_string(),
            ));
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let sheet = pixelfarm_shapes::sheet_png(&pixelfarm_shapes::contact_sheet(&cells))
        .context("cannot encode the contact sheet")?;
    std::fs::write(out.join(CONTACT_SHEET), sheet).context("cannot write the contact sheet")
}

/// The contact sheet's cell of a control image: the upload in `out`, preprocessed as the worker
/// did, captioned with its ControlNet and preprocessor.
fn control_cell(out: &Path, c: &ControlSpec) -> anyhow::Result<(RgbImage, String)> {
    let key = &c.image.key;
    let bytes = std::fs::read(out.join(key)).with_context(|| format!("cannot read {key}"))?;
    let image = pixelfarm_image::output::decode_rgb(&bytes).chained()?;
    let image = match c.preprocess {
        Preprocess::None => image,
        Preprocess::Canny => pixelfarm_image::canny::canny(&image, Default::default()),
    };
    let caption = format!("control {} {}", c.model, c.preprocess.as_str());
    Ok((image, caption))
}
