//! The dispatcher: moves pending jobs to the broker, leader only.
//!
//! Each pass, for every model with pending jobs, it publishes up to `window - queued` of them
//! (queued = published but not yet claimed), chosen by the store in priority, then weighted
//! fair-share order. Postgres keeps the rest of the backlog, so a high-priority batch submitted
//! behind a million low-priority jobs is published next, not after them.
//!
//! Models no live worker serves (see [`JobStore::model_presence`]) are skipped unless
//! `scheduler.models` lists them: their jobs stay `pending`, so they neither pile up as messages
//! nobody consumes nor expire from `queued` and get published again and again, and no queue is
//! declared for a model only a client named. They wait, visibly (`pixelfarm_model_live_workers`,
//! the batch view's `live_workers`), until a worker serving the model announces itself. Listed
//! models are published anyway: a pool scaled to zero wakes up on its queue's length.
//!
//! Publish first, then mark: a crash between the two leaves jobs `pending`, and they are
//! published again (a duplicate message is dropped by the claim). Marking first could strand
//! jobs as `queued` with no message until the stale-queue check.

use pixelfarm_core::{Broker, JobId, JobState, JobStore, ModelName, Result};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::SchedulerMetrics;

/// Most jobs read and published in one round trip.
pub const DEFAULT_CHUNK: u32 = 1000;

/// How long a reading of the models with live workers is reused: passes run every few
/// milliseconds, and workers announce themselves every few seconds.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Messages published.
    pub published: u64,
    /// True when some model still had pending jobs and window room: run again at once.
    pub more: bool,
}

/// The dispatcher.
pub struct Dispatcher {
    store: Arc<dyn JobStore>,
    broker: Arc<dyn Broker>,
    window: u32,
    metrics: Arc<SchedulerMetrics>,
    /// The models with live workers, and when they were read.
    served: Mutex<Option<(Instant, HashSet<ModelName>)>>,
    /// `scheduler.models`: published with no live worker too.
    listed: HashSet<ModelName>,
}

impl Dispatcher {
    /// A dispatcher keeping at most `window` unclaimed messages per model.
    pub fn new(
        store: Arc<dyn JobStore>,
        broker: Arc<dyn Broker>,
        window: u32,
        metrics: Arc<SchedulerMetrics>,
    ) -> Self {
        Dispatcher {
            store,
            broker,
            window: window.max(1),
            metrics,
            served: Mutex::new(None),
            listed: HashSet::new(),
        }
    }

    /// Also publish the jobs of `models` while no live worker serves them (`scheduler.models`:
    /// pools that scale from zero on their queue's length).
    pub fn publishing_unserved(mut self, models: &[ModelName]) -> Self {
        self.listed = models.iter().cloned().collect();
        self
    }

    /// The models some live worker serves, read at most every [`PRESENCE_REFRESH`].
    async fn served_models(&self) -> Result<HashSet<ModelName>> {
        if let Some((at, served)) = &*self.served.lock().expect("dispatcher lock")
            && at.elapsed() < PRESENCE_REFRESH
        {
            return Ok(served.clone());
        }
        let served: HashSet<ModelName> = self
            .store
            .model_presence()
            .await?
            .into_iter()
            .filter(|p| p.live_workers > 0)
            .map(|p| p.model)
            .collect();
        *self.served.lock().expect("dispatcher lock") = Some((Instant::now(), served.clone()));
        Ok(served)
    }

    /// One pass over every model with pending jobs and a live worker (or listed).
    ///
    /// # Errors
    /// Store or broker errors; nothing is marked queued unless its publish was confirmed.
    pub async fn run_once(&self) -> Result<Outcome> {
        let mut per_model: BTreeMap<ModelName, (u64, u64)> = BTreeMap::new();
        for row in self.store.backlog().await? {
            let e = per_model.entry(row.model).or_default();
            match row.state {
                JobState::Pending => e.0 += row.jobs,
                JobState::Queued => e.1 += row.jobs,
                _ => {}
            }
        }
        let mut out = Outcome::default();
        if per_model.values().all(|(pending, _)| *pending == 0) {
            return Ok(out);
        }
        let served = self.served_models().await?;
        for (model, (pending, queued)) in per_model {
            let room = u64::from(self.window).saturating_sub(queued);
            if pending == 0
                || room == 0
                || !(served.contains(&model) || self.listed.contains(&model))
            {
                continue;
            }
            let take = room.min(pending).min(u64::from(DEFAULT_CHUNK)) as u32;
            let msgs = self.store.dispatchable(&model, take).await?;
            if msgs.is_empty() {
                continue;
            }
            self.broker.publish(&msgs).await?;
            let ids: Vec<JobId> = msgs.iter().map(|m| m.job_id).collect();
            self.store.mark_queued(&ids).await?;
            self.metrics
                .jobs_dispatched
                .with_label_values(&[model.as_str()])
                .inc_by(msgs.len() as u64);
            out.published += msgs.len() as u64;
            // A full chunk with pending jobs and window room left: another pass right away.
            out.more |=
                msgs.len() as u32 == take && pending > u64::from(take) && room > u64::from(take);
        }
        Ok(out)
    }
}
