//! API metrics.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Counters and histograms of the API.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Jobs written by submits, per model.
    pub jobs_submitted: IntCounterVec,
    /// Batches created (idempotent resubmits not counted).
    pub batches_submitted: IntCounter,
    /// Time to parse, expand and store a manifest.
    pub submit_seconds: Histogram,
    /// Requests by API (grpc/http), method and outcome code.
    pub requests: IntCounterVec,
    /// Requests refused by a tenant's quota, by tenant name and the quota field (`reason`).
    /// Tenants are made by the operator, so the label stays bounded.
    pub tenant_refusals: IntCounterVec,
    /// Watch streams open on this replica, by tenant name.
    pub tenant_watches: IntGaugeVec,
    /// Failed authentications, by outcome: `unauthenticated` (a lookup found no valid key) or
    /// `rate_limited` (refused before any lookup, the address having failed too often).
    pub auth_failures: IntCounterVec,
}

impl ApiMetrics {
    /// Create and register on `r`.
    ///
    /// # Panics
    /// If the names are already registered on `r` (a wiring bug).
    pub fn register(r: &Registry) -> Self {
        let m = ApiMetrics {
            jobs_submitted: IntCounterVec::new(
                Opts::new(
                    "pixelfarm_jobs_submitted_total",
                    "Jobs written by batch submits.",
                ),
                &["model"],
            )
            .expect("valid metric"),
            batches_submitted: IntCounter::new(
                "pixelfarm_batches_submitted_total",
                "Batches created by submits.",
            )
            .expect("valid metric"),
            submit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "pixelfarm_submit_seconds",
                    "Time to parse, expand and store a batch manifest.",
                )
                .buckets(vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )
            .expect("valid metric"),
            requests: IntCounterVec::new(
                Opts::new(
                    "pixelfarm_api_requests_total",
                    "API requests by api, method and outcome code.",
                ),
                &["api", "method", "code"],
            )
            .expect("valid metric"),
            tenant_refusals: IntCounterVec::new(
                Opts::new(
                    "pixelfarm_tenant_refusals_total",
                    "Requests refused by a tenant quota, by tenant and quota field.",
                ),
                &["tenant", "reason"],
            )
            .expect("valid metric"),
            tenant_watches: IntGaugeVec::new(
                Opts::new(
                    "pixelfarm_tenant_watches",
                    "Watch streams open on this scheduler, by tenant.",
                ),
                &["tenant"],
            )
            .expect("valid metric"),
            auth_failures: IntCounterVec::new(
                Opts::new(
                    "pixelfarm_auth_failures_total",
                    "Failed authentications: unauthenticated (no valid key) or rate_limited (refused before the lookup).",
                ),
                &["outcome"],
            )
            .expect("valid metric"),
        };
        r.register(Box::new(m.jobs_submitted.clone()))
            .expect("register");
        r.register(Box::new(m.batches_submitted.clone()))
            .expect("register");
        r.register(Box::new(m.submit_seconds.clone()))
            .expect("register");
        r.register(Box::new(m.requests.clone())).expect("register");
        r.register(Box::new(m.tenant_refusals.clone()))
            .expect("register");
        r.register(Box::new(m.tenant_watches.clone()))
            .expect("register");
        r.register(Box::new(m.auth_failures.clone()))
            .expect("register");
        m
    }

    /// Count `e` in [`ApiMetrics::tenant_refusals`] when a tenant quota refused it.
    pub fn refused(&self, tenant: &str, e: &pixelfarm_core::Error) {
        if let Some(limit) = pixelfarm_core::Limit::of(e) {
            self.tenant_refusals
                .with_label_values(&[tenant, limit.as_str()])
                .inc();
        }
    }

    /// Count one request with its outcome.
    pub fn observe<T>(&self, api: &str, method: &str, r: &pixelfarm_core::Result<T>) {
        let code = match r {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        self.requests.with_label_values(&[api, method, code]).inc();
    }
}
