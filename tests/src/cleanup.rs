//! What a [`Stack`](crate::Stack) made in the shared services -- its database, its RabbitMQ
//! exchanges and queues, its objects under the bucket prefix -- removed when the stack is
//! dropped (at the end of the test, also when it fails), after its processes are gone.
//! `PIXELFARM_TEST_KEEP=1` keeps everything for a post-mortem.

use pixelfarm_blob::S3Config;
use pixelfarm_blob::testing::TestPrefix;
use pixelfarm_broker::testing::TestTopology;
use pixelfarm_store::testing::{TestDatabase, block_on_own_runtime};
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Fields drop in order: the broker names, the objects, then the database.
pub(crate) struct StackCleanup {
    names: TestTopology,
    _objects: TestPrefix,
    db: TestDatabase,
}

impl StackCleanup {
    /// Guards for a stack's names under `prefix` (queues of `models` and of every model its
    /// jobs name), its objects (`s3`, configured with the same prefix) and its database.
    pub(crate) fn new(
        db: TestDatabase,
        amqp_url: &str,
        prefix: &str,
        models: &[String],
        s3: S3Config,
    ) -> Self {
        let models: Vec<&str> = models.iter().map(String::as_str).collect();
        StackCleanup {
            names: TestTopology::new(amqp_url, prefix, &models),
            _objects: TestPrefix::new(s3),
            db,
        }
    }

    /// Stop the stack's processes (SIGKILL, then wait up to 5 s each, so nothing re-declares a
    /// queue behind the cleanup) and note the models the stack's jobs named: the dispatcher made
    /// a queue for each.
    pub(crate) fn before_drop<'a>(&mut self, children: impl Iterator<Item = &'a mut Child>) {
        for child in children {
            let _ = child.start_kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let url = self.db.url().to_string();
        match block_on_own_runtime(async move {
            let pool = sqlx::PgPool::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let models: Vec<String> =
                sqlx::query_scalar("SELECT model FROM batches UNION SELECT model FROM jobs")
                    .fetch_all(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
            pool.close().await;
            Ok(models)
        }) {
            Ok(models) => self.names.add_models(models),
            Err(e) => eprintln!("warning: cannot read the stack's models: {e}"),
        }
    }
}
