//! [`RabbitBroker`]: RabbitMQ through lapin.

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::SelectAll;
use lapin::options::*;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use pixelfarm_core::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Names of the exchanges and queues, derived from one prefix (`pixelfarm` in production; tests
/// use a unique prefix each so they never see each other's messages).
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology {
            prefix: prefix.into(),
        }
    }

    /// Direct exchange jobs are published to, routed by model.
    pub fn exchange(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Durable queue of one model.
    pub fn queue(&self, model: &str) -> String {
        format!("{}.jobs.{model}", self.prefix)
    }

    /// Dead-letter exchange and its queue (same name).
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new("pixelfarm")
    }
}

fn amqp_err(what: &'static str) -> impl FnOnce(lapin::Error) -> Error {
    move |e| Error::transient(what, e)
}

/// Tries at opening a channel while the connection hands out one that is still closing.
const CHANNEL_TRIES: u32 = 5;

/// A new channel on `conn`. lapin can give a new channel the id of one that is still closing (a
/// consumer dropped a moment ago: a worker's slot ending), and the open then fails with
/// `InvalidChannelState(Closing)`; that is retried a few times, a moment apart.
async fn open_channel(conn: &Connection) -> Result<Channel> {
    let mut tries = 1;
    loop {
        match conn.create_channel().await {
            Err(lapin::Error::InvalidChannelState(_)) if tries < CHANNEL_TRIES => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r.map_err(amqp_err("cannot open channel")),
        }
    }
}

/// First pause after a failed connection attempt; each further failure doubles it up to
/// [`RECONNECT_CAP`]. The pause is drawn uniformly from its upper half (jitter), so a fleet of
/// workers that lost the broker together does not reconnect in lockstep.
const RECONNECT_BASE: Duration = Duration::from_millis(200);
/// Longest pause between connection attempts: a restarted broker is found within this.
const RECONNECT_CAP: Duration = Duration::from_secs(5);
/// A connection attempt that has not completed by then counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the confirms of one publish; past it the connection is presumed dead, the
/// messages unconfirmed (the dispatcher leaves their jobs pending) and the link re-opened.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause before connection attempt number `failures + 1`, jittered by `unit` in `[0, 1)`.
fn reconnect_pause(failures: u32, unit: f64) -> Duration {
    let full = RECONNECT_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RECONNECT_CAP);
    full.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

/// One open connection with its confirm-mode publishing channel, the exchanges and the
/// dead-letter queue declared on it, and the model queues declared so far.
struct Link {
    conn: Connection,
    publisher: Channel,
    declared: Mutex<HashSet<String>>,
}

impl Link {
    async fn open(url: &str, topology: &Topology) -> Result<Link> {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(amqp_err("cannot connect to rabbitmq"))?;
        let publisher = open_channel(&conn).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp_err("cannot enable confirms"))?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        publisher
            .exchange_declare(
                &topology.exchange(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err("cannot declare jobs exchange"))?;
        publisher
            .exchange_declare(
                &topology.dead(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err("cannot declare dead-letter exchange"))?;
        publisher
            .queue_declare(
                &topology.dead(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err("cannot declare dead-letter queue"))?;
        publisher
            .queue_bind(
                &topology.dead(),
                &topology.dead(),
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err("cannot bind dead-letter queue"))?;
        Ok(Link {
            conn,
            publisher,
            declared: Mutex::new(HashSet::new()),
        })
    }

    /// lapin never reopens a connection or channel: once either is closed or in error, this
    /// link is dead for good and a new one must be opened.
    fn is_alive(&self) -> bool {
        self.conn.status().connected() && self.publisher.status().connected()
    }
}

/// Whether the broker is connected, and when to try again after failures.
#[derive(Default)]
struct LinkState {
    link: Option<Arc<Link>>,
    /// Connection attempts failed in a row.
    failures: u32,
    /// No attempt before this instant (the backoff of the last failure).
    retry_at: Option<Instant>,
    /// Why the last attempt failed, repeated to callers while the backoff runs.
    last_error: String,
    /// A link was open once: the next successful attempt is a reconnection.
    was_connected: bool,
}

/// RabbitMQ broker. One connection, re-opened by itself when it dies (capped exponential backoff
/// with jitter, exchanges, dead-letter queue and confirms set up again on the new one); one
/// confirm-mode channel for publishing; one channel per consumer. A consumer whose connection
/// died ends with an error, and [`Broker::consume`] on the new connection re-declares and
/// re-subscribes its queues.
pub struct RabbitBroker {
    url: String,
    topology: Topology,
    state: Mutex<LinkState>,
}

impl RabbitBroker {
    /// Connect and declare the exchange and the dead-letter exchange/queue.
    ///
    /// # Errors
    /// `Transient` when RabbitMQ is unreachable or refuses the declarations.
    pub async fn connect(url: &str, topology: Topology) -> Result<Self> {
        let broker = RabbitBroker {
            url: url.to_string(),
            topology,
            state: Mutex::new(LinkState::default()),
        };
        broker.link().await?;
        Ok(broker)
    }

    /// The open link, or a new one when the last died and the backoff allows an attempt.
    async fn link(&self) -> Result<Arc<Link>> {
        let mut st = self.state.lock().await;
        if let Some(l) = &st.link {
            if l.is_alive() {
                return Ok(l.clone());
            }
            tracing::warn!("rabbitmq connection lost; reconnecting");
            st.link = None;
        }
        if let Some(at) = st.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(Error::new(
                    ErrorKind::Transient,
                    format!(
                        "rabbitmq unreachable, next attempt in {} ms: {}",
                        (at - now).as_millis(),
                        st.last_error
                    ),
                ));
            }
        }
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, Link::open(&self.url, &self.topology))
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Transient,
                    "cannot connect to rabbitmq: timed out",
                ))
            });
        match opened {
            Ok(l) => {
                let l = Arc::new(l);
                if st.was_connected {
                    tracing::info!(failed_attempts = st.failures, "reconnected to rabbitmq");
                }
                *st = LinkState {
                    link: Some(l.clone()),
                    was_connected: true,
                    ..LinkState::default()
                };
                Ok(l)
            }
            Err(e) => {
                st.failures += 1;
                let pause = reconnect_pause(st.failures, rand::random::<f64>());
                st.retry_at = Some(Instant::now() + pause);
                st.last_error = e.chain();
                tracing::warn!(failures = st.failures, retry_in_ms = pause.as_millis() as u64, error = %st.last_error, "cannot connect to rabbitmq");
                Err(e)
            }
        }
    }

    /// Forget `link` (when it is still the current one) so the next call opens a new one. A link
    /// given up while its connection still looks open (a confirm timeout) is closed, so the
    /// broker hands its unsettled messages to someone else and no socket is left behind.
    async fn drop_link(&self, link: &Arc<Link>) {
        let mut st = self.state.lock().await;
        if st.link.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            st.link = None;
        }
        if link.conn.status().connected() {
            let link = link.clone();
            tokio::spawn(async move {
                let _ = link.conn.close(200, "pixelfarm: link given up").await;
            });
        }
    }

    /// Declare (idempotently) the durable queue of `model`, dead-lettering to the DLX, and return
    /// its ready-message count.
    async fn declare_queue(&self, channel: &Channel, model: &str) -> Result<u32> {
        let mut args = FieldTable::default();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.topology.dead().into()),
        );
        let q = channel
            .queue_declare(
                &self.topology.queue(model),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .map_err(amqp_err("cannot declare model queue"))?;
        channel
            .queue_bind(
                &self.topology.queue(model),
                &self.topology.exchange(),
                model,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_err("cannot bind model queue"))?;
        Ok(q.message_count())
    }

    async fn ensure_queue(&self, link: &Link, model: &str) -> Result<()> {
        let mut declared = link.declared.lock().await;
        if !declared.contains(model) {
            self.declare_queue(&link.publisher, model).await?;
            declared.insert(model.to_string());
        }
        Ok(())
    }

    /// Publish on the current link; a failure or a confirm timeout drops the link, so the next
    /// call reconnects. Either every message is confirmed (`Ok`) or the call fails.
    async fn publish_bytes(&self, routing: &[(&str, Vec<u8>)]) -> Result<()> {
        let link = self.link().await?;
        let Ok(r) = tokio::time::timeout(CONFIRM_TIMEOUT, self.publish_on(&link, routing)).await
        else {
            self.drop_link(&link).await;
            return Err(Error::new(
                ErrorKind::Transient,
                "publish not confirmed: timed out",
            ));
        };
        if r.is_err() && !link.is_alive() {
            self.drop_link(&link).await;
        }
        r
    }

    async fn publish_on(&self, link: &Link, routing: &[(&str, Vec<u8>)]) -> Result<()> {
        let mut confirms = Vec::with_capacity(routing.len());
        for (model, body) in routing {
            self.ensure_queue(link, model).await?;
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/x-protobuf".into());
            let c = link
                .publisher
                .basic_publish(
                    &self.topology.exchange(),
                    model,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    props,
                )
                .await
                .map_err(amqp_err("cannot publish"))?;
            confirms.push(c);
        }
        for c in futures::future::join_all(confirms).await {
            match c.map_err(amqp_err("publish not confirmed"))? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(Error::new(
                        ErrorKind::Transient,
                        "message returned unroutable",
                    ));
                }
                Confirmation::Nack(_) => {
                    return Err(Error::new(
                        ErrorKind::Transient,
                        "broker refused a message (nack)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Run `f` on the current link, dropping the link if it died meanwhile.
    async fn on_link<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Link>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let link = self.link().await?;
        let r = f(link.clone()).await;
        if r.is_err() && !link.is_alive() {
            self.drop_link(&link).await;
        }
        r
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn publish(&self, messages: &[JobMessage]) -> Result<()> {
        let bodies: Vec<(&str, Vec<u8>)> = messages
            .iter()
            .map(|m| (m.model.as_str(), pixelfarm_proto::encode_job_message(m)))
            .collect();
        self.publish_bytes(&bodies).await
    }

    async fn consume(&self, models: &[ModelName], prefetch: u16) -> Result<Box<dyn Consumer>> {
        let subscribed = self
            .on_link(|link| async move {
                let channel = open_channel(&link.conn).await?;
                // Global = false: the limit applies per consumer; with one consumer per queue on this
                // channel, set it per channel instead so the whole worker holds at most `prefetch`.
                channel
                    .basic_qos(prefetch.max(1), BasicQosOptions { global: true })
                    .await
                    .map_err(amqp_err("cannot set prefetch"))?;
                let mut streams = SelectAll::new();
                for m in models {
                    self.declare_queue(&channel, m.as_str()).await?;
                    let tag = format!("pixelfarm-{}-{}", m.as_str(), uuid::Uuid::new_v4().simple());
                    let c = channel
                        .basic_consume(
                            &self.topology.queue(m.as_str()),
                            &tag,
                            BasicConsumeOptions::default(),
                            FieldTable::default(),
                        )
                        .await
                        .map_err(amqp_err("cannot start consumer"))?;
                    streams.push(c);
                }
                Ok(RabbitConsumer { channel, streams })
            })
            .await?;
        Ok(Box::new(subscribed))
    }

    async fn depth(&self, model: &ModelName) -> Result<u64> {
        self.on_link(|l| async move {
            Ok(u64::from(
                self.declare_queue(&l.publisher, model.as_str()).await?,
            ))
        })
        .await
    }

    async fn dead_letter_depth(&self) -> Result<u64> {
        self.on_link(|l| async move {
            let q = l
                .publisher
                .queue_declare(
                    &self.topology.dead(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(amqp_err("cannot inspect dead-letter queue"))?;
            Ok(u64::from(q.message_count()))
        })
        .await
    }

    async fn publish_raw(&self, model: &ModelName, body: Bytes) -> Result<()> {
        self.publish_bytes(&[(model.as_str(), body.to_vec())]).await
    }

    async fn ping(&self) -> Result<()> {
        self.link().await.map(|_| ())
    }
}

struct RabbitConsumer {
    channel: Channel,
    streams: SelectAll<lapin::Consumer>,
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let d = match self.streams.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(Error::transient("consumer failed", e))),
        };
        let message = pixelfarm_proto::decode_job_message(&d.data);
        Some(Ok(Delivery {
            message,
            acker: Box::new(RabbitAcker(Arc::new(d.acker))),
        }))
    }
}

impl Drop for RabbitConsumer {
    fn drop(&mut self) {
        // Closing the channel hands every unsettled delivery back to the queue.
        let ch = self.channel.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = ch.close(200, "consumer closed").await;
            });
        }
    }
}

struct RabbitAcker(Arc<lapin::acker::Acker>);

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self) -> Result<()> {
        self.0
            .ack(BasicAckOptions::default())
            .await
            .map_err(amqp_err("cannot ack"))
    }

    async fn dead_letter(&self) -> Result<()> {
        self.0
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map_err(amqp_err("cannot reject"))
    }

    async fn requeue(&self) -> Result<()> {
        self.0
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .map_err(amqp_err("cannot requeue"))
    }
}
