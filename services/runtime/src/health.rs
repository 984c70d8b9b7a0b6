//! What `/readyz`, `/healthz` and `pixelfarm_dependency_up` say, and why.
//!
//! A process registers **checks**, each probed every [`HealthConfig::interval`] (bounded by
//! [`HealthConfig::timeout`]) by one monitor task:
//! - a *dependency* (database, broker, blob store) is probed over the network; its state is
//!   exported as `pixelfarm_dependency_up{dependency}`;
//! - a *condition* is local (the worker consumes, the leader loop turns).
//!
//! **Ready** while every check passes: a process whose database, broker or bucket is
//! unreachable takes no traffic, and the body names each failing check with its reason.
//! **Live** unless some check has failed without a break for [`HealthConfig::stall`]: the
//! process reconnects by itself, so a failure that long means it is wedged (or its dependency is
//! gone for good) and a restart is the next thing to try. Liveness never flaps on a blip.

use futures::future::BoxFuture;
use pixelfarm_core::{BlobStore, Broker, JobStore};
use prometheus::{IntGaugeVec, Opts, Registry};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A probe: `Ok` when the checked thing works now, else why not (shown in `/readyz`).
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Default period of the probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// Default bound on one probe: a dependency that does not answer within it counts as down.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time a check may fail without a break before liveness fails.
pub const DEFAULT_STALL: Duration = Duration::from_secs(120);

/// Probe timing.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    /// Between probe rounds.
    pub interval: Duration,
    /// Bound on one probe.
    pub timeout: Duration,
    /// Failing this long without a break fails liveness.
    pub stall: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            stall: DEFAULT_STALL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dependency,
    Condition,
}

struct Check {
    name: &'static str,
    kind: Kind,
    probe: Probe,
    state: Mutex<CheckState>,
}

struct CheckState {
    /// `None` until the first probe answered.
    ok: Option<bool>,
    /// When the check last changed between passing and failing (or was registered).
    since: Instant,
    /// The last failure's reason.
    error: String,
}

/// The checks of one process and their last results.
pub struct Health {
    cfg: HealthConfig,
    checks: Vec<Check>,
    up: IntGaugeVec,
}

/// A verdict with a body listing every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Ready (for `/readyz`) or live (for `/healthz`).
    pub ok: bool,
    /// One line per check: `name: ok` or `name: failing for Ns: reason`.
    pub body: String,
}

impl Health {
    /// No checks yet; registers `pixelfarm_dependency_up` on `registry`.
    ///
    /// # Panics
    /// If the metric is already registered on `registry`.
    pub fn new(cfg: HealthConfig, registry: &Registry) -> Self {
        let up = IntGaugeVec::new(
            Opts::new(
                "pixelfarm_dependency_up",
                "1 while the last probe of a dependency (database, broker, blob) succeeded.",
            ),
            &["dependency"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(up.clone()))
            .expect("pixelfarm_dependency_up registered once");
        Health {
            cfg,
            checks: Vec::new(),
            up,
        }
    }

    /// Add a dependency probed over the network (exported as `pixelfarm_dependency_up`).
    pub fn dependency(&mut self, name: &'static str, probe: Probe) -> &mut Self {
        self.up.with_label_values(&[name]).set(0);
        self.add(name, Kind::Dependency, probe)
    }

    /// Add a local condition.
    pub fn condition(&mut self, name: &'static str, probe: Probe) -> &mut Self {
        self.add(name, Kind::Condition, probe)
    }

    fn add(&mut self, name: &'static str, kind: Kind, probe: Probe) -> &mut Self {
        self.checks.push(Check {
            name,
            kind,
            probe,
            state: Mutex::new(CheckState {
                ok: None,
                since: Instant::now(),
                error: "not probed yet".into(),
            }),
        });
        self
    }

    /// Probe every check now, concurrently, each bounded by the timeout.
    pub async fn probe_all(&self) {
        let rounds = self.checks.iter().map(|c| async move {
            let r = match tokio::time::timeout(self.cfg.timeout, (c.probe)()).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer within {} ms",
                    self.cfg.timeout.as_millis()
                )),
            };
            self.record(c, r);
        });
        futures::future::join_all(rounds).await;
    }

    fn record(&self, c: &Check, r: Result<(), String>) {
        let mut st = c.state.lock().expect("health state lock");
        let ok = r.is_ok();
        if st.ok != Some(ok) {
            match (&r, st.ok) {
                (Ok(()), Some(false)) => tracing::info!(
                    check = c.name,
                    after_s = st.since.elapsed().as_secs_f64(),
                    "healthy again"
                ),
                (Err(e), _) => tracing::warn!(check = c.name, error = %e, "unhealthy"),
                _ => {}
            }
            st.ok = Some(ok);
            st.since = Instant::now();
        }
        if let Err(e) = r {
            st.error = e;
        }
        if c.kind == Kind::Dependency {
            self.up.with_label_values(&[c.name]).set(i64::from(ok));
        }
    }

    /// Probe every [`HealthConfig::interval`] on `tasks` until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        tasks: &mut JoinSet<anyhow::Result<()>>,
        stop: CancellationToken,
    ) {
        let me = self.clone();
        tasks.spawn(async move {
            me.run(stop).await;
            Ok(())
        });
    }

    /// Probe every [`HealthConfig::interval`] until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.probe_all().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.interval) => {}
            }
        }
    }

    /// Ready when every check passed its last probe.
    pub fn readiness(&self) -> Verdict {
        self.verdict(|st| st.ok == Some(true))
    }

    /// Live unless a check has been failing for longer than the stall time.
    pub fn liveness(&self) -> Verdict {
        let stall = self.cfg.stall;
        self.verdict(|st| st.ok != Some(false) || st.since.elapsed() < stall)
    }

    fn verdict(&self, passes: impl Fn(&CheckState) -> bool) -> Verdict {
        let mut ok = true;
        let mut body = String::new();
        for c in &self.checks {
            let st = c.state.lock().expect("health state lock");
            ok &= passes(&st);
            let _ = match st.ok {
                Some(true) => writeln!(body, "{}: ok", c.name),
                Some(false) => writeln!(
                    body,
                    "{}: failing for {:.0}s: {}",
                    c.name,
                    st.since.elapsed().as_secs_f64(),
                    st.error
                ),
                None => writeln!(body, "{}: {}", c.name, st.error),
            };
        }
        Verdict { ok, body }
    }
}

/// A loop's heartbeat: the loop calls [`Beat::beat`] after each pass, and the condition from
/// [`Beat::probe`] fails once no pass ended within `within` — the loop is stuck in one pass.
#[derive(Clone)]
pub struct Beat {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Beat {
    fn default() -> Self {
        Beat {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Beat {
    /// A pass ended now.
    pub fn beat(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last pass ended (or since creation).
    pub fn age(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    /// A condition failing while the last pass ended more than `within` ago.
    pub fn probe(&self, within: Duration) -> Probe {
        let me = self.clone();
        Arc::new(move || {
            let age = me.age();
            Box::pin(async move {
                if age <= within {
                    Ok(())
                } else {
                    Err(format!("no pass ended for {:.0}s", age.as_secs_f64()))
                }
            })
        })
    }
}

/// A probe from a seam's `ping`.
pub fn ping<F>(f: F) -> Probe
where
    F: Fn() -> BoxFuture<'static, pixelfarm_core::Result<()>> + Send + Sync + 'static,
{
    Arc::new(move || {
        let fut = f();
        Box::pin(async move { fut.await.map_err(|e| e.chain()) })
    })
}

/// The database's probe.
pub fn store_probe(store: Arc<dyn JobStore>) -> Probe {
    ping(move || {
        let s = store.clone();
        Box::pin(async move { s.ping().await })
    })
}

/// The broker's probe.
pub fn broker_probe(broker: Arc<dyn Broker>) -> Probe {
    ping(move || {
        let b = broker.clone();
        Box::pin(async move { b.ping().await })
    })
}

/// The blob store's probe.
pub fn blob_probe(blob: Arc<dyn BlobStore>) -> Probe {
    ping(move || {
        let b = blob.clone();
        Box::pin(async move { b.ping().await })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn switch(on: &Arc<AtomicBool>) -> Probe {
        let on = on.clone();
        Arc::new(move || {
            let v = on.load(Ordering::SeqCst);
            Box::pin(async move { if v { Ok(()) } else { Err("refused".into()) } })
        })
    }

    #[tokio::test]
    async fn ready_follows_the_last_probe_and_live_waits_for_the_stall() {
        let registry = Registry::new();
        let db = Arc::new(AtomicBool::new(true));
        let mut h = Health::new(
            HealthConfig {
                stall: Duration::from_millis(300),
                ..HealthConfig::default()
            },
            &registry,
        );
        h.dependency("database", switch(&db));
        assert!(!h.readiness().ok, "not ready before the first probe");
        h.probe_all().await;
        assert!(h.readiness().ok && h.liveness().ok);

        db.store(false, Ordering::SeqCst);
        h.probe_all().await;
        let r = h.readiness();
        assert!(!r.ok);
        assert!(
            r.body.contains("database: failing for 0s: refused"),
            "{}",
            r.body
        );
        assert!(h.liveness().ok, "a fresh failure keeps the process live");
        let gauge = registry.gather();
        assert_eq!(gauge[0].get_metric()[0].get_gauge().get_value(), 0.0);

        tokio::time::sleep(Duration::from_millis(350)).await;
        h.probe_all().await;
        assert!(!h.liveness().ok, "failing past the stall fails liveness");

        db.store(true, Ordering::SeqCst);
        h.probe_all().await;
        assert!(h.readiness().ok && h.liveness().ok);
        let gauge = registry.gather();
        assert_eq!(gauge[0].get_metric()[0].get_gauge().get_value(), 1.0);
    }

    #[tokio::test]
    async fn a_probe_that_hangs_counts_as_failing() {
        let mut h = Health::new(
            HealthConfig {
                timeout: Duration::from_millis(50),
                ..HealthConfig::default()
            },
            &Registry::new(),
        );
        h.dependency(
            "blob",
            Arc::new(|| Box::pin(futures::future::pending::<Result<(), String>>())),
        );
        h.probe_all().await;
        let r = h.readiness();
        assert!(
            !r.ok && r.body.contains("no answer within 50 ms"),
            "{}",
            r.body
        );
    }

    #[tokio::test]
    async fn a_loop_stuck_in_one_pass_fails_its_condition() {
        let beat = Beat::default();
        let mut h = Health::new(HealthConfig::default(), &Registry::new());
        h.condition("leader loop", beat.probe(Duration::from_millis(100)));
        beat.beat();
        h.probe_all().await;
        assert!(h.readiness().ok);
        tokio::time::sleep(Duration::from_millis(150)).await;
        h.probe_all().await;
        let r = h.readiness();
        assert!(
            !r.ok && r.body.contains("leader loop: failing"),
            "{}",
            r.body
        );
    }
}
