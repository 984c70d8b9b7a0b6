//! The [`JobStore`](pixelfarm_core::JobStore) conformance suite. Every implementation runs every
//! case through [`store_conformance!`](crate::store_conformance), each case on a fresh store.
//!
//! The cases are grouped as the stores' queries are, by concern of the store: `tenants`,
//! `batches`, `console`, `dispatch`, `workers`, `leases`, `maintenance` and `retention`, and `progress` for
//! the batch progress counters and their change feed; `fixtures` holds what they share.

mod batches;
mod console;
mod dispatch;
mod fixtures;
mod leases;
mod maintenance;
mod progress;
mod retention;
mod tenants;
mod webhooks;
mod workers;

pub use batches::{cancel_stops_unfinished, idempotent_submit, submit_and_read, tenant_isolation};
pub use console::{
    batches_are_listed_newest_first, reviews_decide_all_or_none, sessions_end_with_their_key,
};
pub use dispatch::{backlog_and_finished_counts, priority_then_fair_share};
pub use leases::{
    claim_lifecycle, failures_retry_and_die, grouped_claims_and_completions,
    heartbeat_records_progress, lease_guards,
};
pub use maintenance::{leadership, rescue_expired_leases, stale_queued_requeued};
pub use progress::{
    batch_changes_announce_a_completion, concurrent_writes_across_batches,
    progress_matches_the_job_rows,
};
pub use retention::{
    retention_chunks_span_batches, retention_follows_each_tenants_setting,
    retention_purges_finished_batches_past_it,
};
pub use tenants::{
    concurrent_submits_share_the_quota, key_lifecycle, quotas_refuse_submits, tenants_and_keys,
};
pub use webhooks::{
    webhook_attempts_settle_and_log, webhook_events_follow_their_changes, webhook_secrets_rotate,
};
pub use workers::worker_presence;

/// Expand to one `#[tokio::test]` per case, each on a store made by `$make` (an async expression
/// giving a [`TestStore`](crate::testing::TestStore), which removes the store when the case
/// ends, also when it fails).
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            tenants_and_keys, submit_and_read, idempotent_submit, tenant_isolation, claim_lifecycle,
            lease_guards, grouped_claims_and_completions, failures_retry_and_die, rescue_expired_leases, stale_queued_requeued,
            cancel_stops_unfinished, heartbeat_records_progress, priority_then_fair_share, backlog_and_finished_counts, leadership,
            worker_presence, quotas_refuse_submits, concurrent_submits_share_the_quota,
            key_lifecycle, progress_matches_the_job_rows, concurrent_writes_across_batches,
            batch_changes_announce_a_completion, retention_purges_finished_batches_past_it,
            retention_follows_each_tenants_setting, retention_chunks_span_batches,
            webhook_events_follow_their_changes, webhook_attempts_settle_and_log,
            webhook_secrets_rotate, batches_are_listed_newest_first, reviews_decide_all_or_none,
            sessions_end_with_their_key);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fresh: $crate::testing::TestStore = $make.await;
                $crate::testsuite::$case(fresh.store.clone()).await;
            }
        )*
    };
}
