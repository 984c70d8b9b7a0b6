//! Wiring: settings → store, broker, blob → API servers + leader loops + metrics refresh.

use anyhow::Context;
use pixelfarm_api::{ApiMetrics, BatchApi};
use pixelfarm_core::{BlobStore, Broker, ChainResult, JobStore, UrlSigning};
use pixelfarm_runtime::health::{Beat, Health, ping, store_probe};
use pixelfarm_runtime::tls::{ALPN_GRPC, ALPN_HTTP1, ServerTls, TlsListener};
use pixelfarm_runtime::{Settings, ops};
use prometheus::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpIncoming};

use crate::SchedulerMetrics;
use crate::dispatcher::Dispatcher;
use crate::leader::{self, Duties, Intervals};
use crate::maintenance::Maintenance;
use crate::retention::{self, Purger};
use crate::webhooks::{self, Relay};

/// How often backlog gauges and completion counters are re-read.
const METRICS_REFRESH: Duration = Duration::from_secs(1);
/// A leader pass longer than this is stuck (a pass publishes at most a chunk, bounded by the
/// broker's confirm timeout, and runs a few bounded queries).
const LEADER_PASS_STALL: Duration = Duration::from_secs(60);

/// The scheduler's moving parts, for the binary and for the embedded mode.
pub struct Core {
    /// The API implementation.
    pub api: Arc<BatchApi>,
    /// Job storage.
    pub store: Arc<dyn JobStore>,
    /// Scheduler metrics.
    pub metrics: Arc<SchedulerMetrics>,
    /// Beats after every pass of the leader loop (a health condition of the scheduler).
    pub leader_beat: Beat,
}

impl Core {
    /// Register metrics on `registry` and build the API over the seams; `urls` signs the
    /// images' URLs in job pages.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn JobStore>,
        blob: Arc<dyn BlobStore>,
        urls: Option<UrlSigning>,
        registry: &Registry,
    ) -> Self {
        let api_metrics = ApiMetrics::register(registry);
        let api = Arc::new(
            BatchApi::new(
                store.clone(),
                blob,
                settings.scheduler.max_attempts,
                settings.scheduler.models.clone(),
                api_metrics,
            )
            .with_webhook_policy(settings.scheduler.webhooks.policy())
            .with_signed_urls(urls),
        );
        Core {
            api,
            store,
            metrics: Arc::new(SchedulerMetrics::register(registry)),
            leader_beat: Beat::default(),
        }
    }

    /// Spawn the leader loop and the metrics refresher on `tasks`; both stop with `stop`.
    pub fn spawn_loops(
        &self,
        settings: &Settings,
        broker: Arc<dyn Broker>,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        stop: &CancellationToken,
    ) {
        let s = &settings.scheduler;
        let dispatcher = Dispatcher::new(
            self.store.clone(),
            broker,
            settings.broker.window_per_model,
            self.metrics.clone(),
        )
        .publishing_unserved(&s.models);
        let maintenance = Maintenance::new(
            self.store.clone(),
            self.metrics.clone(),
            Duration::from_secs(s.stale_queued_seconds),
            s.max_crashes,
        );
        let purger = Arc::new(Purger::new(
            self.store.clone(),
            self.metrics.clone(),
            retention::Config::from_settings(&s.retention),
        ));
        let every = Intervals {
            dispatch: Duration::from_millis(s.dispatch_interval_ms.max(1)),
            maintenance: Duration::from_millis(s.maintenance_interval_ms.max(10)),
        };
        let duties = Duties {
            dispatcher,
            maintenance,
            purger,
        };
        tasks.spawn(leader_task(
            self.store.clone(),
            duties,
            self.metrics.clone(),
            every,
            self.leader_beat.clone(),
            stop.clone(),
        ));
        match Relay::new(
            self.store.clone(),
            webhooks::Config::from_settings(&s.webhooks),
            self.api.url_signing().cloned(),
            self.metrics.clone(),
        ) {
            Ok(relay) => {
                let stop = stop.clone();
                tasks.spawn(async move {
                    relay.run(stop).await;
                    Ok(())
                });
            }
            Err(e) => tracing::error!(error = %e.chain(), "webhooks are not delivered"),
        }
        let (store, metrics, stop) = (self.store.clone(), self.metrics.clone(), stop.clone());
        tasks.spawn(async move {
            loop {
                if let Err(e) = metrics.refresh(store.as_ref()).await {
                    tracing::warn!(error = %e.chain(), "cannot refresh backlog metrics");
                }
                tokio::select! { _ = stop.cancelled() => return Ok(()), _ = tokio::time::sleep(METRICS_REFRESH) => {} }
            }
        });
    }
}

async fn leader_task(
    store: Arc<dyn JobStore>,
    duties: Duties,
    metrics: Arc<SchedulerMetrics>,
    every: Intervals,
    beat: Beat,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    leader::run(store, duties, metrics, every, beat, stop).await;
    Ok(())
}

/// A started scheduler.
pub struct Running {
    /// Where the gRPC API listens.
    pub grpc_addr: SocketAddr,
    /// Where the HTTP API, `/metrics` and health listen.
    pub http_addr: SocketAddr,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Wait until every task ended (after `stop`), returning the first failure.
    ///
    /// # Errors
    /// The first task error.
    pub async fn wait(self) -> anyhow::Result<()> {
        pixelfarm_runtime::tasks::wait_all(self.tasks, "scheduler").await
    }
}

/// Connect, bootstrap tenants, and start servers and loops until `stop`.
///
/// # Errors
/// When a dependency is unreachable, an address cannot be bound or the TLS files cannot be
/// served.
pub async fn start(settings: Settings, stop: CancellationToken) -> anyhow::Result<Running> {
    // The certificate first: a bad file stops the start before anything connects.
    let tls = if settings.scheduler.tls.enabled() {
        let tls = ServerTls::load("scheduler.tls", &settings.scheduler.tls);
        Some(tls.chained()?)
    } else {
        None
    };
    let store = settings.database.connect().await.chained()?;
    let broker = settings.broker.connect().await.chained()?;
    let blob = settings.blob.connect().await.chained()?;
    crate::tenants::bootstrap(store.as_ref(), &settings.scheduler.tenants)
        .await
        .chained()?;

    let urls = settings.blob.url_signing().await.chained()?;
    let registry = Registry::new();
    let core = Core::new(&settings, store.clone(), blob, urls, &registry);
    let mut tasks = JoinSet::new();
    core.spawn_loops(&settings, broker.clone(), &mut tasks, &stop);

    let mut health = Health::new(settings.health.config(), &registry);
    let is_leader = core.metrics.is_leader.clone();
    health
        .dependency("database", store_probe(store))
        // Only the leader publishes; a follower needs no broker to serve the API.
        .dependency(
            "broker",
            ping(move || {
                let (b, leading) = (broker.clone(), is_leader.get() == 1);
                Box::pin(async move { if leading { b.ping().await } else { Ok(()) } })
            }),
        )
        .condition("leader loop", core.leader_beat.probe(LEADER_PASS_STALL));
    let health = Arc::new(health);
    health.spawn(&mut tasks, stop.clone());
    let http = pixelfarm_api::http::router(core.api.clone())
        .merge(pixelfarm_api::console::router(core.api.clone()))
        .merge(ops::router(registry, health));
    let grpc = pixelfarm_api::grpc::GrpcApi(core.api.clone()).into_server();
    let (http_listener, http_addr) = ops::bind(&settings.scheduler.http_addr).await?;
    let (grpc_listener, grpc_addr) = ops::bind(&settings.scheduler.grpc_addr).await?;
    let grpc = tonic::transport::Server::builder().add_service(grpc);
    let tls_on = tls.is_some();
    match tls {
        Some(tls) => {
            let acceptor = |alpn| tls.acceptor(alpn).chained();
            let http_tls = TlsListener::new(http_listener, acceptor(ALPN_HTTP1)?);
            let grpc_tls = TlsListener::new(grpc_listener, acceptor(ALPN_GRPC)?);
            tasks.spawn(pixelfarm_runtime::tls::serve_http(
                http_tls,
                http,
                stop.clone(),
            ));
            tasks.spawn(grpc_task(grpc, grpc_tls.into_stream(), stop.clone()));
            tls.spawn_reload(&mut tasks, stop.clone());
        }
        None => {
            tasks.spawn(ops_task(http_listener, http, stop.clone()));
            // No Nagle: a streamed answer's last frames (an image's data, then its trailers) would
            // wait for the client's delayed ACK, 40 ms a call (the TLS listener sets it too).
            let incoming = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
            tasks.spawn(grpc_task(grpc, incoming, stop.clone()));
        }
    }
    tracing::info!(%grpc_addr, %http_addr, tls = tls_on, "scheduler listening");
    Ok(Running {
        grpc_addr,
        http_addr,
        tasks,
    })
}

async fn ops_task(
    l: tokio::net::TcpListener,
    app: axum::Router,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    ops::serve(l, app, stop).await.context("http server failed")
}

async fn grpc_task<IO>(
    server: tonic::transport::server::Router,
    incoming: impl futures::Stream<Item = std::io::Result<IO>>,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    server
        .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
        .await
        .context("grpc server failed")
}
