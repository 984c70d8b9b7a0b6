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
use tokio::sync::Mutex;

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

/// RabbitMQ broker. One connection; one confirm-mode channel for publishing; one channel per consumer.
pub struct RabbitBroker {
    conn: Connection,
    publisher: Channel,
    topology: Topology,
    declared: Mutex<HashSet<String>>,
}

impl RabbitBroker {
    /// Connect and declare the exchange and the dead-letter exchange/queue.
    ///
    /// # Errors
    /// `Transient` when RabbitMQ is unreachable or refuses the declarations.
    pub async fn connect(url: &str, topology: Topology) -> Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(amqp_err("cannot connect to rabbitmq"))?;
        let publisher = conn
            .create_channel()
            .await
            .map_err(amqp_err("cannot open channel"))?;
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
        Ok(RabbitBroker {
            conn,
            publisher,
            topology,
            declared: Mutex::new(HashSet::new()),
        })
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

    async fn ensure_queue(&self, model: &str) -> Result<()> {
        let mut declared = self.declared.lock().await;
        if !declared.contains(model) {
            self.declare_queue(&self.publisher, model).await?;
            declared.insert(model.to_string());
        }
        Ok(())
    }

    async fn publish_bytes(&self, routing: &[(&str, Vec<u8>)]) -> Result<()> {
        let mut confirms = Vec::with_capacity(routing.len());
        for (model, body) in routing {
            self.ensure_queue(model).await?;
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/x-protobuf".into());
            let c = self
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
        let channel = self
            .conn
            .create_channel()
            .await
            .map_err(amqp_err("cannot open channel"))?;
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
        Ok(Box::new(RabbitConsumer { channel, streams }))
    }

    async fn depth(&self, model: &ModelName) -> Result<u64> {
        Ok(u64::from(
            self.declare_queue(&self.publisher, model.as_str()).await?,
        ))
    }

    async fn dead_letter_depth(&self) -> Result<u64> {
        let q = self
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
    }

    async fn publish_raw(&self, model: &ModelName, body: Bytes) -> Result<()> {
        self.publish_bytes(&[(model.as_str(), body.to_vec())]).await
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
