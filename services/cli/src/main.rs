//! `pixelfarm`: submit and follow batches on a pixelfarm scheduler, or `run` one locally.

use anyhow::Context;
use clap::{Parser, Subcommand};
use pixelfarm_api::{ApiClient, CaCertificates};
use pixelfarm_cli::dataset::{self, SplitRatios, parse_shard_bytes};
use pixelfarm_cli::{embedded, export, progress};
use pixelfarm_core::text::printable;
use pixelfarm_core::{BatchId, ErrorKind};
use pixelfarm_runtime::settings::ContentCredentialsSettings;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(version, about = "pixelfarm: batch image generation")]
struct Cli {
    /// Scheduler gRPC address: http://HOST:PORT, or https://HOST:PORT for a scheduler serving
    /// TLS (verified against the system's root certificates, or --ca-file).
    #[arg(
        long,
        global = true,
        env = "PIXELFARM_API_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    api_url: String,
    /// API key of your tenant.
    #[arg(
        long,
        global = true,
        env = "PIXELFARM_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    api_key: String,
    /// PEM certificate(s) of the CA that signed the scheduler's certificate (a private CA such
    /// as cert-manager's), trusted instead of the system's root certificates for https://.
    #[arg(long, global = true, env = "PIXELFARM_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render a manifest on this machine: no services needed (SQLite, in-process broker, OUT as storage).
    Run {
        /// Manifest file (YAML or JSON).
        manifest: PathBuf,
        /// Output folder: images, results.jsonl, and the job state for resuming.
        #[arg(long, default_value = "out")]
        out: PathBuf,
        /// Jobs rendered at once.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Seconds to wait, once the images are written, for the manifest's webhook to be
        /// delivered (retries included); what is still pending then is retried by the next run in
        /// OUT.
        #[arg(long, default_value_t = 30)]
        webhook_wait: u64,
        /// PEM certificate chain (the signer's certificate first) that signs the images' content
        /// credentials, with --signing-key; without them, the TEST ONLY development key signs.
        #[arg(long, requires = "signing_key")]
        signing_cert: Option<PathBuf>,
        /// PEM PKCS#8 Ed25519 private key of --signing-cert.
        #[arg(long, requires = "signing_cert")]
        signing_key: Option<PathBuf>,
        /// A model registry (YAML: the worker's `diffusion:` section, `file://` sources) whose
        /// models, LoRAs and ControlNets the manifest may name besides the shipped model.
        #[arg(long)]
        registry: Option<PathBuf>,
        /// A dataset format also writes the succeeded jobs as a dataset into OUT/dataset.
        #[command(flatten)]
        export: ExportArgs,
    },
    /// Submit a manifest; prints the batch id.
    Submit {
        /// Manifest file (YAML or JSON).
        manifest: PathBuf,
        /// Follow the batch until it is done.
        #[arg(long)]
        wait: bool,
    },
    /// Print a batch's counts, rate and ETA.
    Status {
        /// Batch id.
        batch: BatchId,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow a batch with a progress bar until it is done.
    Watch {
        /// Batch id.
        batch: BatchId,
    },
    /// Cancel the unfinished jobs of a batch (running ones stop between denoising steps).
    Cancel {
        /// Batch id.
        batch: BatchId,
    },
    /// Upload an init image, mask or control image (PNG, JPEG or WebP); prints the key to name
    /// in a manifest (`init.image.key`, `init.mask.key`, `control[].image.key`).
    Upload {
        /// The image file.
        file: PathBuf,
        /// Name to store it under (A-Z a-z 0-9 . _ -); default: the sha256 of its bytes.
        #[arg(long)]
        name: Option<String>,
    },
    /// The batch's webhook delivery log: each event, its state and its attempts.
    Deliveries {
        /// Batch id.
        batch: BatchId,
        /// Print one JSON object per event (every attempt with its time, status and error).
        #[arg(long)]
        json: bool,
    },
    /// Download a batch's images and write results.jsonl, or write its succeeded jobs as a
    /// dataset (--format).
    Fetch {
        /// Batch id.
        batch: BatchId,
        /// Output folder (new or empty for a dataset format).
        #[arg(long)]
        out: PathBuf,
        /// Only the images a reviewer approved (in the web console); results.jsonl lists only
        /// their jobs.
        #[arg(long)]
        approved: bool,
        #[command(flatten)]
        export: ExportArgs,
    },
}

/// What `fetch` and `run` write.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// Every image under its object key, and results.jsonl with every job.
    Folder,
    /// Hugging Face imagefolder: train/, validation/, test/ with images and metadata.jsonl.
    Imagefolder,
    /// WebDataset tar shards {split}-000000.tar.
    Webdataset,
    /// One Parquet file per split, the images in Hugging Face Image columns.
    Parquet,
}

/// The options of the export.
#[derive(clap::Args)]
struct ExportArgs {
    /// Layout of the output; the dataset formats hold the succeeded jobs only.
    #[arg(long, value_enum, default_value_t = Format::Folder)]
    format: Format,
    /// Dataset formats: fractions of the variants in train, validation and test [default:
    /// 0.8,0.1,0.1]. A variant (a job key without its `#N` seed index) is in one split only.
    #[arg(long, value_name = "TRAIN,VALIDATION,TEST", value_parser = SplitRatios::parse)]
    split: Option<SplitRatios>,
    /// webdataset: the most bytes a shard holds, unless one sample alone is bigger: a number,
    /// optionally with KiB, MiB or GiB [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_shard_bytes)]
    shard_bytes: Option<u64>,
}

impl ExportArgs {
    /// The dataset to write; `None` for the folder layout.
    fn dataset(&self) -> anyhow::Result<Option<dataset::Options>> {
        let format = match self.format {
            Format::Folder => {
                anyhow::ensure!(
                    self.split.is_none() && self.shard_bytes.is_none(),
                    "--split and --shard-bytes apply to a dataset; accepted with --format imagefolder, webdataset or parquet"
                );
                return Ok(None);
            }
            Format::Imagefolder => dataset::Format::ImageFolder,
            Format::Webdataset => dataset::Format::WebDataset,
            Format::Parquet => dataset::Format::Parquet,
        };
        anyhow::ensure!(
            self.shard_bytes.is_none() || format == dataset::Format::WebDataset,
            "--shard-bytes applies to --format webdataset only"
        );
        let mut opts = dataset::Options::new(format);
        opts.split = self.split.unwrap_or_default();
        opts.shard_bytes = self.shard_bytes.unwrap_or(opts.shard_bytes);
        Ok(Some(opts))
    }
}

/// Say what a dataset export wrote (stdout) and left out (stderr).
fn report(s: &dataset::Summary, dir: &std::path::Path) {
    let per_split: Vec<String> = dataset::Split::ALL
        .iter()
        .map(|split| format!("{split} {}", s.samples[split.index()]))
        .collect();
    println!(
        "{} samples ({}) in {}",
        s.total(),
        per_split.join(", "),
        dir.display()
    );
    let skipped = s.skipped.total();
    if skipped > 0 {
        let c = &s.skipped;
        let states: Vec<String> = [
            ("dead", c.dead),
            ("cancelled", c.cancelled),
            ("unfinished", c.pending + c.queued + c.running + c.retryable),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
        eprintln!(
            "skipped {skipped} jobs that did not succeed ({})",
            states.join(", ")
        );
    }
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first statement of `main`: no other thread exists yet.
    #[allow(unsafe_code)]
    unsafe {
        pixelfarm_kernels::threads::settle();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    pixelfarm_runtime::telemetry::init(pixelfarm_runtime::telemetry::CLI_LOG);
    let cli = Cli::parse();
    // What a server says is printed escaped: it may quote a client's text or be malicious.
    let e = |e: pixelfarm_core::Error| anyhow::anyhow!(printable(&e.chain()).into_owned());
    if let Command::Run {
        manifest,
        out,
        workers,
        webhook_wait,
        signing_cert,
        signing_key,
        registry,
        export,
    } = &cli.command
    {
        let signing = ContentCredentialsSettings {
            cert_file: signing_cert.clone().unwrap_or_default(),
            key_file: signing_key.clone().unwrap_or_default(),
        };
        let base = manifest.parent().unwrap_or(std::path::Path::new(""));
        let dataset = export.dataset()?;
        let opts = embedded::RunOptions {
            workers: *workers,
            progress: true,
            dataset: dataset.as_ref(),
            webhook_wait: std::time::Duration::from_secs(*webhook_wait),
            signing: &signing,
            registry: registry.as_deref(),
        };
        let r = embedded::run(read(manifest)?, base, out, opts).await?;
        println!(
            "batch {} done: {}",
            r.batch.status.id,
            progress::describe(&r.batch)
        );
        println!(
            "{} images, results.jsonl and {} in {}",
            r.export.images,
            embedded::CONTACT_SHEET,
            out.display()
        );
        if let Some(d) = &r.dataset {
            report(d, &out.join(embedded::DATASET_DIR));
        }
        let w = r.webhooks;
        if w != embedded::WebhookOutcome::default() {
            println!(
                "webhooks: {} delivered, {} failed, {} pending{}",
                w.delivered,
                w.failed,
                w.pending,
                if w.pending > 0 {
                    " (the next run in this folder retries them)"
                } else {
                    ""
                }
            );
        }
        return Ok(());
    }
    anyhow::ensure!(
        !cli.api_key.is_empty(),
        "no api key: pass --api-key or set PIXELFARM_API_KEY"
    );
    let ca = match &cli.ca_file {
        Some(path) => {
            let origin = format!("--ca-file {}", path.display());
            let pem = std::fs::read(path).with_context(|| format!("cannot read {origin}"))?;
            Some(CaCertificates::from_pem(&origin, &pem).map_err(e)?)
        }
        None => None,
    };
    let client = ApiClient::connect_with_ca(&cli.api_url, &cli.api_key, ca.as_ref())
        .await
        .map_err(|err| match err.kind() {
            ErrorKind::Permanent if ca.is_none() => anyhow::anyhow!(
                "{}; for a scheduler whose certificate a private CA signed, pass the CA's \
                 certificate with --ca-file (or PIXELFARM_CA_FILE)",
                printable(&err.chain())
            ),
            _ => e(err),
        })?;
    match cli.command {
        Command::Run { .. } => unreachable!("handled above"),
        Command::Submit { manifest, wait } => {
            let out = client.submit(read(&manifest)?).await.map_err(e)?;
            let note = if out.created {
                ""
            } else {
                " (existing batch for this idempotency key)"
            };
            println!("{}{note}", out.batch_id);
            eprintln!("{} jobs", out.jobs);
            if wait {
                let v = follow(&client, out.batch_id).await.map_err(e)?;
                eprintln!("done: {}", progress::describe(&v));
            }
        }
        Command::Status { batch, json } => {
            let v = client.batch(batch).await.map_err(e)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let state = if v.done { "done" } else { "in progress" };
                println!(
                    "{} `{}` ({}): {state}, {} jobs: {}",
                    v.status.id,
                    printable(&v.status.name),
                    v.status.model,
                    v.total,
                    progress::describe(&v)
                );
                if progress::waiting_for_worker(&v) {
                    println!("{}", progress::no_worker_note(&v));
                }
                if let Some(at) = v.status.jobs_purged_at {
                    println!(
                        "its jobs were deleted at {} by retention: the batch remains, its jobs and their images are no longer listed",
                        at.format("%Y-%m-%dT%H:%M:%SZ")
                    );
                }
            }
        }
        Command::Watch { batch } => {
            let v = follow(&client, batch).await.map_err(e)?;
            println!("done: {}", progress::describe(&v));
        }
        Command::Cancel { batch } => {
            let n = client.cancel(batch).await.map_err(e)?;
            println!("cancelled {n} jobs");
        }
        Command::Upload { file, name } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let up = client
                .upload(name.as_deref(), bytes.into())
                .await
                .map_err(e)?;
            println!("{}", up.key);
            eprintln!(
                "{}x{} {}, {} bytes, sha256 {}",
                up.width,
                up.height,
                serde_json::to_value(up.format)?
                    .as_str()
                    .unwrap_or_default(),
                up.bytes,
                up.sha256
            );
        }
        Command::Deliveries { batch, json } => {
            let mut after = None;
            loop {
                let (page, next) = client.deliveries(batch, after, 1000).await.map_err(e)?;
                for d in &page {
                    if json {
                        println!("{}", serde_json::to_string(d)?);
                    } else {
                        println!("{}", describe_delivery(d));
                    }
                }
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        Command::Fetch {
            batch,
            out,
            approved,
            export,
        } => {
            let approved_only = export::ApprovedOnly(&client);
            let source: &dyn export::ResultSource = match approved {
                true => &approved_only,
                false => &client,
            };
            fetch(source, batch, &out, &export).await?;
        }
    }
    Ok(())
}

/// `fetch`: the batch's images from `source` as `export` says.
async fn fetch(
    source: &dyn export::ResultSource,
    batch: BatchId,
    out: &Path,
    export: &ExportArgs,
) -> anyhow::Result<()> {
    let e = |e: pixelfarm_core::Error| anyhow::anyhow!(printable(&e.chain()).into_owned());
    match export.dataset()? {
        Some(opts) => {
            let s = dataset::export(source, batch, out, &opts)
                .await
                .map_err(e)?;
            report(&s, out);
        }
        None => {
            let s = export::export(source, batch, out).await.map_err(e)?;
            println!(
                "{} images, {} lines in {}",
                s.images,
                s.jobs,
                out.join("results.jsonl").display()
            );
        }
    }
    Ok(())
}

/// One line of the delivery log: when, what, where, its state and its last attempt.
fn describe_delivery(d: &pixelfarm_core::WebhookDelivery) -> String {
    let last = d.attempts.last().map_or_else(
        || "not attempted yet".to_string(),
        |a| match (&a.error, a.status) {
            (Some(err), _) => format!("attempt {}: {err}", a.attempt),
            (None, Some(status)) => format!("attempt {}: {status}", a.attempt),
            (None, None) => format!("attempt {}", a.attempt),
        },
    );
    let job = d.job_id.map(|j| format!(" job {j}")).unwrap_or_default();
    format!(
        "{} {} {}{job} {} {} ({last})",
        d.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
        d.id,
        d.kind,
        d.url,
        d.state
    )
}

/// Watch `batch` until it is done, drawing progress. A transient failure (the scheduler or its
/// database restarting) is said on stderr and the watch starts again after [`REWATCH`], so a wait
/// outlives a restart; any other failure ends it.
async fn follow(
    client: &ApiClient,
    batch: BatchId,
) -> pixelfarm_core::Result<pixelfarm_api::BatchView> {
    loop {
        let followed = match client.watch(batch).await {
            Ok(views) => progress::follow(views).await,
            Err(err) => Err(err),
        };
        match followed {
            Err(err) if err.kind() == pixelfarm_core::ErrorKind::Transient => {
                eprintln!(
                    "watch interrupted ({}); watching again in {}s",
                    printable(&err.chain()),
                    REWATCH.as_secs()
                );
                tokio::time::sleep(REWATCH).await;
            }
            done => return done,
        }
    }
}

/// Pause before watching again after a transient failure.
const REWATCH: std::time::Duration = std::time::Duration::from_secs(2);
