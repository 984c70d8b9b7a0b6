//! Submitting a manifest: parsed and expanded off the async runtime within a bounded number of
//! slots, its model and inputs checked, then stored in one transaction.

use pixelfarm_core::*;
use std::collections::HashMap;
use std::time::Instant;

use super::{BatchApi, MAX_CONCURRENT_SUBMITS, SUBMIT_QUEUE_WAIT};

/// Refuse a batch with a job over its model's limits, naming the first such job, the parameter
/// and the limit, and how many jobs are over: no worker of the model would render them.
fn within_limits(spec: &BatchSpec, limits: &ModelLimits) -> Result<()> {
    let mut over = spec
        .jobs
        .iter()
        .filter_map(|j| limits.check(&spec.model, &j.params).err().map(|e| (j, e)));
    let Some((job, e)) = over.next() else {
        return Ok(());
    };
    let more = over.count();
    let more = if more == 0 {
        String::new()
    } else {
        format!(" ({more} more jobs are over the limits too)")
    };
    Err(Error::invalid(format!(
        "manifest job `{}`: {e}{more}",
        job.key
    )))
}

impl BatchApi {
    /// Parse, expand and store a manifest in one transaction. Jobs whose `output` does not say
    /// `content_credentials` get the tenant's setting.
    ///
    /// # Errors
    /// `RateLimited` over the tenant's `submits_per_minute` (counted before any parsing);
    /// `Invalid` naming the manifest field (a model no worker serves is refused here, before a
    /// job or a broker queue exists for it; text the policy refuses, [`text::check_batch`]);
    /// `QuotaExceeded` over the tenant's `max_priority`, `max_queued_jobs` or `max_jobs_per_day`
    /// (checked by the store as it writes the batch); `Transient` when
    /// [`MAX_CONCURRENT_SUBMITS`] submits stayed in progress for [`SUBMIT_QUEUE_WAIT`]; store
    /// errors.
    pub async fn submit(&self, tenant: TenantId, manifest: String) -> Result<SubmitOutcome> {
        self.submit_renaming_inputs(tenant, manifest, &HashMap::new())
            .await
    }

    /// [`BatchApi::submit`], with the input keys of the manifest found in `renamed` replaced by
    /// their value first: the embedded mode's manifests name local files, which it uploads
    /// ([`BatchApi::upload`]) before submitting. Every input is then checked as in `submit`.
    ///
    /// # Errors
    /// As [`BatchApi::submit`].
    pub async fn submit_renaming_inputs(
        &self,
        tenant: TenantId,
        manifest: String,
        renamed: &HashMap<String, String>,
    ) -> Result<SubmitOutcome> {
        let t0 = Instant::now();
        let owner = self.store.tenant(tenant).await?;
        let refused = |e: &Error| self.metrics.refused(&owner.name, e);
        self.submit_rate
            .admit(tenant, owner.quota.submits_per_minute)
            .inspect_err(refused)?;
        let mut spec = self.checked(manifest).await?;
        for output in spec.jobs.outputs_mut() {
            output.resolve_content_credentials(owner.content_credentials);
        }
        for img in spec.jobs.input_images_mut() {
            if let Some(key) = renamed.get(&img.key) {
                img.key.clone_from(key);
            }
        }
        self.pin_inputs(tenant, &mut spec).await?;
        let out = self
            .store
            .submit(tenant, &spec, self.max_attempts)
            .await
            .inspect_err(refused)?;
        if out.created {
            self.metrics.batches_submitted.inc();
            self.metrics
                .jobs_submitted
                .with_label_values(&[spec.model.as_str()])
                .inc_by(out.jobs);
        }
        self.metrics
            .submit_seconds
            .observe(t0.elapsed().as_secs_f64());
        Ok(out)
    }

    /// Parse and check a manifest as a submit does before it stores anything (text policy,
    /// model, the model's limits, the webhook's receiver), without storing it: the web console's
    /// check before a submit. Inputs are checked by the submit only.
    ///
    /// # Errors
    /// As [`BatchApi::submit`], but for quotas and inputs.
    pub async fn preview(&self, manifest: String) -> Result<BatchSpec> {
        self.checked(manifest).await
    }

    /// The parse and the checks of a manifest that [`BatchApi::submit`] and
    /// [`BatchApi::preview`] share.
    async fn checked(&self, manifest: String) -> Result<BatchSpec> {
        // A slot before any work: parsing and expanding are what the slots bound. The parse
        // holds it too, so a client that hangs up does not free it while its parse still runs.
        let slot = self.slot().await?;
        // Expanding a big manifest is CPU work: keep it off the async runtime.
        let (parsed, _slot) = tokio::task::spawn_blocking(move || {
            let parsed = parse_manifest(&manifest)
                .and_then(|spec| text::check_batch(&manifest, &spec).map(|()| spec));
            (parsed, slot)
        })
        .await
        .map_err(|e| Error::with_source(ErrorKind::Permanent, "manifest parser crashed", e))?;
        let spec = parsed?;
        if let Some(limits) = self.check_model(&spec.model, &spec.source).await? {
            within_limits(&spec, &limits)?;
        }
        if let Some(hook) = &spec.webhook {
            self.webhook_policy
                .check(&hook.url)
                .map_err(|e| field_error_in(&spec.source, "webhook.url", &e.to_string()))?;
        }
        Ok(spec)
    }

    /// One of the [`MAX_CONCURRENT_SUBMITS`] slots, waiting at most [`SUBMIT_QUEUE_WAIT`].
    pub(super) async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(SUBMIT_QUEUE_WAIT, self.submits.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Transient,
                    format!(
                        "the scheduler is busy: {MAX_CONCURRENT_SUBMITS} submits or uploads stayed in progress for {} s; accepted: retry later",
                        SUBMIT_QUEUE_WAIT.as_secs()
                    ),
                )
            })?
            .map_err(|e| Error::with_source(ErrorKind::Permanent, "submit slots closed", e))
    }

    /// Refuse a model that no worker ever announced and that `scheduler.models` does not list,
    /// naming the ones accepted: its jobs could never run. The model's limits, when a worker set
    /// some.
    async fn check_model(&self, model: &ModelName, manifest: &str) -> Result<Option<ModelLimits>> {
        let presence = self.store.model_presence().await?;
        if let Some(p) = presence.iter().find(|p| &p.model == model) {
            return Ok(p.limits.clone());
        }
        if self.allowed_models.contains(model) {
            return Ok(None);
        }
        let accepted: std::collections::BTreeSet<&str> = presence
            .iter()
            .map(|p| p.model.as_str())
            .chain(self.allowed_models.iter().map(ModelName::as_str))
            .collect();
        let accepted = if accepted.is_empty() {
            "none yet: start a worker serving it (worker.models) or list it in scheduler.models"
                .to_string()
        } else {
            format!(
                "{} (served by workers, or listed in scheduler.models)",
                accepted.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        Err(field_error_in(
            manifest,
            "model",
            &format!("`{model}` is served by no worker; accepted: {accepted}"),
        ))
    }
}
