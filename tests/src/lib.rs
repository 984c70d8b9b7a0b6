//! Harness for the end-to-end tests: a fresh Postgres database, a unique RabbitMQ prefix and a
//! unique S3 prefix per stack; the real `pixelfarm-scheduler` and `pixelfarm-worker` binaries as
//! child processes; helpers to scrape, wait and check; a headless browser (`browser`).
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `scripts/test` does it).

pub mod browser;
mod cleanup;
pub mod faults;
mod promtool;
pub mod receiver;
pub mod results;
pub mod tls;

pub use promtool::promtool_check;

use pixelfarm_api::{ApiClient, CaCertificates};
use pixelfarm_blob::{S3Blob, S3Config};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// API key of tenant `a`.
pub const KEY_A: &str = "e2e-key-a";
/// API key of tenant `b`.
pub const KEY_B: &str = "e2e-key-b";
/// Bucket the stacks share (each under its own prefix).
pub const BUCKET: &str = "pixelfarm-e2e";

/// A built binary of this workspace; from `PIXELFARM_E2E_BIN_DIR` when set (to measure another
/// build, e.g. an older commit's).
///
/// # Panics
/// When it has not been built.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("PIXELFARM_E2E_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    // Tests run from target/<profile>/deps, bench binaries from target/<profile>.
    let exe = std::env::current_exe().expect("own exe path");
    let dir = exe.parent().expect("exe has a folder");
    let candidates = [
        dir.join(name),
        dir.parent().map(|p| p.join(name)).unwrap_or_default(),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "{name} is missing next to {}: run `cargo build --workspace --bins` (with --release for benchmarks) first",
            exe.display()
        )
    })
}

/// Peak resident memory (VmHWM) of a process, in MiB; 0 when it cannot be read.
pub fn vm_hwm_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// How many batches and jobs the database `db` holds (a refused request must store none).
pub async fn stored(db: &sqlx::PgPool) -> (i64, i64) {
    let n = |q: &'static str| async move {
        sqlx::query_scalar::<_, i64>(q).fetch_one(db).await.unwrap()
    };
    (
        n("SELECT count(*) FROM batches").await,
        n("SELECT count(*) FROM jobs").await,
    )
}

/// An HTTP client without connection reuse: after a 413 the server closes a connection whose
/// body it did not read, and a pooled client could send its next request on it
/// (`IncompleteMessage`).
pub fn unpooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client without a pool")
}

/// A free local port, drawn below the kernel's range for outgoing connections
/// (`ip_local_port_range`), so that no client socket of a concurrent test can take it between this
/// check and the bind of the process it is for (a port from `bind(0)` could, and a worker then
/// failed to start with "Address already in use").
pub fn free_port() -> u16 {
    const LOWEST: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let span = u128::from(ephemeral.saturating_sub(LOWEST).max(1_000));
    for _ in 0..1_000 {
        let port = LOWEST + (uuid::Uuid::new_v4().as_u128() % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral} after 1,000 tries")
}

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// S3 settings of the test SeaweedFS (`scripts/dev-services` starts it with these credentials).
pub fn s3_config(prefix: &str) -> S3Config {
    pixelfarm_blob::testing::s3_config(BUCKET, prefix)
}

/// A child process whose log goes to a file, killed when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its stderr.
    pub log: PathBuf,
    /// Its ops HTTP address.
    pub http: SocketAddr,
}

impl Proc {
    /// The last lines of its log, for failure messages.
    pub fn tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Send a signal (`libc`-free: via `kill`).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running process has a pid");
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }
}

/// Settings of one stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Workers started with the stack.
    pub workers: usize,
    /// Jobs per worker at once.
    pub concurrency: usize,
    /// Sleep per test-pattern render.
    pub render_delay_ms: u64,
    /// Lease length (short, so a killed worker's jobs come back quickly).
    pub lease_seconds: u64,
    /// Messages per model the dispatcher keeps published.
    pub window: u32,
    /// `worker.renderer`.
    pub renderer: String,
    /// `worker.models`.
    pub models: Vec<String>,
    /// `worker.registry`: the diffusion model registry file.
    pub registry: Option<PathBuf>,
    /// `scheduler.tls`: both listeners serve TLS with these files; the stack's clients and its
    /// readiness checks trust their CA.
    pub tls: Option<tls::ServerFiles>,
    /// `scheduler.retention.seconds`, the leader looking for expired batches every second;
    /// `None`: the default (job rows kept forever).
    pub retention_seconds: Option<u64>,
    /// `blob.kind: local`, in the stack's temp dir, instead of the shared S3 bucket (the pipeline
    /// measured without the object store).
    pub local_blob: bool,
    /// `worker.write_group` as `(max, wait_ms)`; `None`: the worker's default.
    pub write_group: Option<(usize, u64)>,
    /// `worker.provenance_records`; `None`: the worker's default (`always`).
    pub provenance_records: Option<&'static str>,
    /// `scheduler.webhooks`, as a YAML flow mapping; `None`: the defaults.
    pub webhooks: Option<String>,
    /// `blob.signed_urls` (S3 only), as a YAML flow mapping; `None`: no signed URLs.
    pub signed_urls: Option<String>,
    /// `scheduler.models`: models accepted at submit though no worker serves them (their jobs
    /// wait).
    pub unserved_models: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            workers: 2,
            concurrency: 2,
            render_delay_ms: 20,
            lease_seconds: 3,
            window: 64,
            renderer: "test-pattern".into(),
            models: vec!["test".into(), "shapes".into()],
            registry: None,
            tls: None,
            retention_seconds: None,
            local_blob: false,
            write_group: None,
            provenance_records: None,
            webhooks: None,
            signed_urls: None,
            unserved_models: Vec::new(),
        }
    }
}

/// A running scheduler and workers on fresh state.
pub struct Stack {
    /// Temp dir holding config and logs.
    pub dir: tempfile::TempDir,
    /// The fresh database.
    pub db_url: String,
    /// Broker names and S3 key prefix of this stack.
    pub prefix: String,
    /// The scheduler process.
    pub scheduler: Proc,
    /// gRPC API URL.
    pub grpc_url: String,
    /// Worker processes (a killed one stays in the list).
    pub workers: Vec<Proc>,
    /// Logs of schedulers that were killed and replaced.
    retired: Vec<PathBuf>,
    opts: StackOptions,
    /// Removes the database, broker names and objects when the stack is dropped.
    cleanup: cleanup::StackCleanup,
}

impl Stack {
    /// Start a scheduler and `opts.workers` workers, and wait until all are ready.
    pub async fn start(opts: StackOptions) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let db = pixelfarm_store::testing::fresh_postgres_db().await;
        let db_url = db.url().to_string();
        let prefix = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let amqp = env(
            "PIXELFARM_TEST_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        );
        let s3 = s3_config(&prefix);
        let cleanup = cleanup::StackCleanup::new(db, &amqp, &prefix, &opts.models, s3.clone());
        let (grpc, http) = (free_port(), free_port());
        let blob = match opts.local_blob {
            true => format!(
                "{{kind: local, dir: \"{}\"}}",
                dir.path().join("blobs").display()
            ),
            false => format!(
                "{{kind: s3, bucket: {}, endpoint: \"{}\", region: us-east-1, access_key_id: {}, secret_access_key: {}, path_style: true, prefix: \"{prefix}\", create_bucket: true, signed_urls: {}}}",
                s3.bucket,
                s3.endpoint,
                s3.access_key_id,
                s3.secret_access_key,
                opts.signed_urls.as_deref().unwrap_or("{}")
            ),
        };
        let write_group = opts
            .write_group
            .map(|(max, wait_ms)| format!("  write_group: {{max: {max}, wait_ms: {wait_ms}}}\n"))
            .unwrap_or_default();
        let records = opts
            .provenance_records
            .map(|r| format!("  provenance_records: {r}\n"))
            .unwrap_or_default();
        let config = format!(
            "database: {{url: \"{db_url}\", max_connections: 16}}
broker: {{url: \"{amqp}\", prefix: \"{prefix}\", window_per_model: {window}}}
blob: {blob}
scheduler:
  grpc_addr: 127.0.0.1:{grpc}
  http_addr: 127.0.0.1:{http}
{tls}{retention}{webhooks}{unserved}  dispatch_interval_ms: 20
  maintenance_interval_ms: 300
  tenants:
    - {{name: a, api_keys: [{KEY_A}]}}
    - {{name: b, api_keys: [{KEY_B}]}}
worker:
  models: [{models}]
  prefetch: {prefetch}
  concurrency: {concurrency}
  lease_seconds: {lease}
  heartbeat_seconds: 1
  drain_grace_seconds: 10
  test_pattern_delay_ms: {delay}
  renderer: {renderer}
{registry}{write_group}{records}health: {{interval_ms: 500, timeout_ms: 2000}}
",
            window = opts.window,
            prefetch = opts.concurrency * 2,
            concurrency = opts.concurrency,
            lease = opts.lease_seconds,
            delay = opts.render_delay_ms,
            renderer = opts.renderer,
            models = opts.models.join(", "),
            registry = opts
                .registry
                .as_ref()
                .map(|p| format!("  registry: \"{}\"\n", p.display()))
                .unwrap_or_default(),
            tls = opts
                .tls
                .as_ref()
                .map(|t| format!(
                    "  tls: {{cert_file: \"{}\", key_file: \"{}\"}}\n",
                    t.cert_file.display(),
                    t.key_file.display()
                ))
                .unwrap_or_default(),
            webhooks = opts
                .webhooks
                .as_ref()
                .map(|w| format!("  webhooks: {w}\n"))
                .unwrap_or_default(),
            unserved = if opts.unserved_models.is_empty() {
                String::new()
            } else {
                format!("  models: [{}]\n", opts.unserved_models.join(", "))
            },
            retention = opts
                .retention_seconds
                .map(|s| format!("  retention: {{seconds: {s}, interval_seconds: 1}}\n"))
                .unwrap_or_default(),
        );
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(dir.path().join("config/base.yaml"), config).unwrap();
        let scheduler = spawn(
            dir.path(),
            "pixelfarm-scheduler",
            "scheduler",
            &[],
            format!("127.0.0.1:{http}").parse().unwrap(),
        );
        let mut stack = Stack {
            dir,
            db_url,
            prefix,
            scheduler,
            grpc_url: format!(
                "{}://127.0.0.1:{grpc}",
                if opts.tls.is_some() { "https" } else { "http" }
            ),
            workers: Vec::new(),
            retired: Vec::new(),
            opts,
            cleanup,
        };
        let ca = stack.opts.tls.as_ref().map(|t| t.ca_file.clone());
        wait_ready_over(&mut stack.scheduler, ca.as_deref()).await;
        for _ in 0..stack.opts.workers {
            stack.add_worker().await;
        }
        stack
    }

    /// Start one more worker and wait until it consumes; on another port when a concurrent test
    /// took the one it was given.
    pub async fn add_worker(&mut self) -> usize {
        let n = self.workers.len();
        let id = format!("worker-{n}");
        for attempt in 1.. {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut w = spawn(
                self.dir.path(),
                "pixelfarm-worker",
                &id,
                &[
                    ("PIXELFARM__WORKER__ID", id.as_str()),
                    ("PIXELFARM__WORKER__HTTP_ADDR", addr.as_str()),
                ],
                addr.parse().unwrap(),
            );
            match until_ready(&mut w, None).await {
                Ok(()) => {
                    self.workers.push(w);
                    return n;
                }
                Err(e) if attempt < 5 && e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// A client of tenant `key`.
    pub async fn client(&self, key: &str) -> ApiClient {
        let ca = self.opts.tls.as_ref().map(|t| {
            let pem = std::fs::read(&t.ca_file).unwrap();
            CaCertificates::from_pem("the test CA", &pem).unwrap()
        });
        ApiClient::connect_with_ca(&self.grpc_url, key, ca.as_ref())
            .await
            .unwrap()
    }

    /// The stack's view of the bucket.
    pub async fn blob(&self) -> S3Blob {
        S3Blob::connect(&s3_config(&self.prefix)).await.unwrap()
    }

    /// Logs of every process, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!("--- scheduler ---\n{}\n", self.scheduler.tail());
        for (i, w) in self.workers.iter().enumerate() {
            s.push_str(&format!("--- worker-{i} ---\n{}\n", w.tail()));
        }
        s
    }
}

impl Drop for Stack {
    /// Stop the processes, then remove what the stack made in the shared services.
    fn drop(&mut self) {
        let procs = std::iter::once(&mut self.scheduler).chain(self.workers.iter_mut());
        self.cleanup.before_drop(procs.map(|p| &mut p.child));
    }
}

impl Stack {
    /// Run `pixelfarm-scheduler ARGS` on this stack's settings (as an operator runs `tenant …`
    /// beside the scheduler): its standard output, or its standard error when it failed.
    pub async fn scheduler_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = command(self.dir.path(), "pixelfarm-scheduler")
            .args(args)
            .output()
            .await
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "pixelfarm-scheduler {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// A command running `binary` on the settings in `dir/config`, environment `e2e`.
fn command(dir: &Path, binary: &str) -> Command {
    let mut cmd = Command::new(bin(binary));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PIXELFARM_CONFIG_DIR", dir.join("config"))
        .env("PIXELFARM_ENV", "e2e")
        .env("RUST_LOG", "info,sqlx=warn,lapin=warn,aws=warn,h2=warn");
    cmd
}

fn spawn(
    dir: &Path,
    binary: &str,
    name: &str,
    extra_env: &[(&str, &str)],
    http: SocketAddr,
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = command(dir, binary);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .kill_on_drop(true);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Proc {
        child: cmd.spawn().unwrap(),
        log,
        http,
    }
}

async fn wait_ready(p: &mut Proc) {
    wait_ready_over(p, None).await
}

/// Wait until `p`'s `/readyz` answers 200, over HTTPS trusting `ca` when given.
async fn wait_ready_over(p: &mut Proc, ca: Option<&Path>) {
    if let Err(e) = until_ready(p, ca).await {
        panic!("{e}");
    }
}

/// [`wait_ready_over`], saying why the process is not ready instead of panicking.
async fn until_ready(p: &mut Proc, ca: Option<&Path>) -> Result<(), String> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}/readyz", p.http);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ready = match ca {
            Some(ca) => tls::https_get(p.http, ca, "/readyz")
                .await
                .is_ok_and(|(status, _)| status == 200),
            None => reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success()),
        };
        if ready {
            return Ok(());
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            return Err(format!(
                "{url}: the process exited ({status}) before it was ready; log:\n{}",
                p.tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{url} not ready within 60 s; log:\n{}", p.tail()))
}

/// GET a `/metrics` page.
pub async fn scrape(http: SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample in a scrape (`name{labels}` exactly as printed), 0 when absent.
pub fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A manifest of `n` jobs (`n` must be a multiple of 5) for model `test`.
pub fn manifest(name: &str, n: usize, key: Option<&str>) -> String {
    assert!(n.is_multiple_of(5));
    let values: Vec<String> = (0..n / 5).map(|i| i.to_string()).collect();
    let mut m = format!(
        "name: {name}\nmodel: test\ndefaults: {{width: 32, height: 32, steps: 2}}\nprompt: \"job {{n}}\"\nvars:\n  n: [{}]\nseeds: {{base: 11, count: 5}}\n",
        values.join(", ")
    );
    if let Some(k) = key {
        m.push_str(&format!("idempotency_key: {k}\n"));
    }
    m
}
