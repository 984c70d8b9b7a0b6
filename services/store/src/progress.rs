//! The batch progress counters (migration 0007) as both stores read them: the backlog and the
//! finished totals per model, summed over the batches' rows.

use pixelfarm_core::{BacklogRow, JobState, ModelName, Result, StateCounts};

/// Jobs per model and unfinished state, over the batches with unfinished jobs (a partial index).
pub(crate) const BACKLOG: &str = "SELECT model,
        CAST(sum(pending) AS bigint) AS pending, CAST(sum(queued) AS bigint) AS queued,
        CAST(sum(running) AS bigint) AS running, CAST(sum(retryable) AS bigint) AS retryable
    FROM batch_progress WHERE open GROUP BY model";

/// Jobs per model and final state, over every batch.
pub(crate) const FINISHED: &str = "SELECT model,
        CAST(sum(succeeded) AS bigint) AS succeeded, CAST(sum(dead) AS bigint) AS dead,
        CAST(sum(cancelled) AS bigint) AS cancelled
    FROM batch_progress GROUP BY model";

/// The states [`BACKLOG`] sums, each a column named as the state.
pub(crate) const OPEN_STATES: [JobState; 4] = [
    JobState::Pending,
    JobState::Queued,
    JobState::Running,
    JobState::Retryable,
];

/// The states [`FINISHED`] sums.
pub(crate) const FINAL_STATES: [JobState; 3] =
    [JobState::Succeeded, JobState::Dead, JobState::Cancelled];

/// The rows of one model: one per state of `states` that has jobs (`jobs` reads a state's sum).
pub(crate) fn backlog_rows(
    model: &str,
    states: &[JobState],
    jobs: impl Fn(&str) -> i64,
) -> Result<Vec<BacklogRow>> {
    let model = ModelName::parse(model)?;
    Ok(states
        .iter()
        .filter_map(|&state| {
            let n = jobs(state.as_str());
            (n > 0).then(|| BacklogRow {
                model: model.clone(),
                state,
                jobs: n as u64,
            })
        })
        .collect())
}

/// A batch's counts from the state columns of its `batch_progress` row, each read by `column`.
pub(crate) fn state_counts(column: impl Fn(&str) -> i64) -> StateCounts {
    let n = |state: &str| u64::try_from(column(state)).unwrap_or(0);
    StateCounts {
        pending: n("pending"),
        queued: n("queued"),
        running: n("running"),
        succeeded: n("succeeded"),
        retryable: n("retryable"),
        dead: n("dead"),
        cancelled: n("cancelled"),
    }
}
