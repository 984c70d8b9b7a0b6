//! Test support: the RabbitMQ exchanges and queues a test declares under its own prefix,
//! deleted when the test ends ([`TestTopology`]'s drop, also when the test fails), so the
//! suites leave nothing durable behind in the shared broker. `PIXELFARM_TEST_KEEP=1` keeps them
//! for a post-mortem.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

use crate::Topology;

/// The AMQP URL tests use (`PIXELFARM_TEST_AMQP_URL`, default the local RabbitMQ of
/// `scripts/dev-services`).
pub fn test_amqp_url() -> String {
    std::env::var("PIXELFARM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The names declared under `prefix` for a test that used `models`: deleted on drop.
pub struct TestTopology {
    url: String,
    prefix: String,
    models: Vec<String>,
}

impl TestTopology {
    /// A guard for the names under `prefix` on the broker at `url`, including the queues of
    /// `models` (add more with [`TestTopology::add_models`]).
    pub fn new(url: &str, prefix: &str, models: &[&str]) -> Self {
        TestTopology {
            url: url.to_string(),
            prefix: prefix.to_string(),
            models: models.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// The topology (names) under this prefix.
    pub fn topology(&self) -> Topology {
        Topology::new(self.prefix.clone())
    }

    /// Also delete the queues of these models.
    pub fn add_models(&mut self, models: impl IntoIterator<Item = String>) {
        for m in models {
            if !self.models.contains(&m) {
                self.models.push(m);
            }
        }
    }
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        if std::env::var("PIXELFARM_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0") {
            eprintln!(
                "PIXELFARM_TEST_KEEP: keeping rabbitmq names {}.*",
                self.prefix
            );
            return;
        }
        let t = self.topology();
        let mut queues: Vec<String> = self.models.iter().map(|m| t.queue(m)).collect();
        queues.push(t.dead());
        let exchanges = vec![t.exchange(), t.dead()];
        let url = self.url.clone();
        // A runtime of its own on a thread of its own: drop may run inside a runtime (or while
        // a test panics), where blocking on this one is not allowed.
        let r = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(delete_names(&url, &queues, &exchanges))
        })
        .join()
        .unwrap_or_else(|_| Err("cleanup thread panicked".into()));
        if let Err(e) = r {
            eprintln!(
                "warning: cannot delete rabbitmq names {}.*: {e}",
                self.prefix
            );
        }
    }
}

/// Delete `queues` (with their messages) and `exchanges`. Names that do not exist are fine.
///
/// # Errors
/// When RabbitMQ is unreachable or refuses a deletion.
pub async fn delete_names(
    url: &str,
    queues: &[String],
    exchanges: &[String],
) -> Result<(), String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    // A channel per deletion: a refused one closes its channel, not the others.
    for q in queues {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.queue_delete(q, QueueDeleteOptions::default())
            .await
            .map_err(|e| format!("queue {q}: {e}"))?;
        let _ = ch.close(200, "ok").await;
    }
    for x in exchanges {
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        ch.exchange_delete(x, ExchangeDeleteOptions::default())
            .await
            .map_err(|e| format!("exchange {x}: {e}"))?;
        let _ = ch.close(200, "ok").await;
    }
    let _ = conn.close(200, "ok").await;
    Ok(())
}
