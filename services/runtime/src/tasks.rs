//! Waiting for a process's tasks.

use anyhow::Context;
use tokio::task::JoinSet;

/// Wait until every task ended, returning the first failure (a panic counts as one).
///
/// # Errors
/// The first task error, with `what` naming the process.
pub async fn wait_all(mut tasks: JoinSet<anyhow::Result<()>>, what: &str) -> anyhow::Result<()> {
    let mut first = Ok(());
    while let Some(r) = tasks.join_next().await {
        let r = r
            .with_context(|| format!("{what} task panicked"))
            .and_then(|r| r);
        if first.is_ok() {
            first = r;
        }
    }
    first
}
