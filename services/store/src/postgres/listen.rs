//! The Postgres side of [`JobStore::batch_changes`]: the triggers of migration 0007 notify
//! [`CHANNEL`] with the id of each changed batch at commit; one `LISTEN` connection per store,
//! opened by the first subscriber, forwards them to the store's [`Feed`], reconnecting when it
//! loses the server.

use pixelfarm_core::*;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::error::db;
use crate::feed::Feed;

/// The channel the progress triggers notify.
const CHANNEL: &str = "pixelfarm_batch_progress";

/// Pause between attempts to get the `LISTEN` connection back.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// The store's feed and the task that fills it; dropping it (with the last clone of the store)
/// stops the task and closes its connection.
#[derive(Debug)]
pub(super) struct Listener {
    feed: Feed,
    task: OnceCell<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }
}

impl Listener {
    pub(super) fn new() -> Self {
        Listener {
            feed: Feed::new(),
            task: OnceCell::new(),
        }
    }

    /// A subscription; the first one opens the `LISTEN` connection before it returns, so every
    /// change committed afterwards reaches it.
    ///
    /// # Errors
    /// `Transient` when the first subscriber cannot connect or listen.
    pub(super) async fn subscribe(&self, pool: &PgPool) -> Result<BatchChanges> {
        let changes = self.feed.subscribe();
        self.task
            .get_or_try_init(|| async {
                let listener = listen(pool).await?;
                Ok::<_, Error>(tokio::spawn(forward(
                    listener,
                    pool.clone(),
                    self.feed.clone(),
                )))
            })
            .await?;
        Ok(changes)
    }
}

/// A `LISTEN` on a connection of its own (a pool of one, out of the store's pool, which it would
/// hold forever).
async fn listen(pool: &PgPool) -> Result<PgListener> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = PgListener::connect_with(&own)
        .await
        .map_err(db("cannot connect to follow batch changes"))?;
    listener
        .listen(CHANNEL)
        .await
        .map_err(db("cannot listen for batch changes"))?;
    Ok(listener)
}

async fn forward(mut listener: PgListener, pool: PgPool, feed: Feed) {
    loop {
        let lost = match listener.try_recv().await {
            Ok(Some(n)) => {
                match n.payload().parse::<BatchId>() {
                    Ok(batch) => feed.announce(BatchChange::Batch(batch)),
                    // Not from our triggers: say something changed rather than nothing.
                    Err(_) => feed.announce(BatchChange::Missed),
                }
                continue;
            }
            Ok(None) => "the connection closed".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %lost, "lost the batch change feed; reconnecting");
        listener = loop {
            match listen(&pool).await {
                Ok(l) => break l,
                Err(e) => {
                    tracing::warn!(error = %e.chain(), "cannot follow batch changes yet");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        };
        // Whatever was notified meanwhile is lost: the subscribers re-read.
        feed.announce(BatchChange::Missed);
    }
}
