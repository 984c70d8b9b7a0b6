//! [`InProcBroker`]: queues in memory with AMQP-like settlement, for the embedded mode.

use async_trait::async_trait;
use bytes::Bytes;
use pixelfarm_core::*;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Default)]
struct State {
    queues: HashMap<String, VecDeque<Bytes>>,
    dead: Vec<Bytes>,
}

/// In-memory broker: per-model FIFO queues, prefetch limits, redelivery of unsettled messages
/// when their consumer goes away, and a dead-letter list. Messages are encoded exactly as on
/// RabbitMQ, so decoding and dead-lettering follow the same code path.
#[derive(Clone, Default)]
pub struct InProcBroker {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl InProcBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, model: &str, body: Bytes, front: bool) {
        let mut s = self.state.lock().expect("broker lock");
        let q = s.queues.entry(model.to_string()).or_default();
        if front {
            q.push_front(body);
        } else {
            q.push_back(body);
        }
        drop(s);
        self.notify.notify_waiters();
    }
}

#[async_trait]
impl Broker for InProcBroker {
    async fn publish(&self, messages: &[JobMessage]) -> Result<()> {
        for m in messages {
            self.push(
                m.model.as_str(),
                Bytes::from(pixelfarm_proto::encode_job_message(m)),
                false,
            );
        }
        Ok(())
    }

    async fn consume(&self, models: &[ModelName], prefetch: u16) -> Result<Box<dyn Consumer>> {
        Ok(Box::new(InProcConsumer {
            broker: self.clone(),
            models: models.iter().map(|m| m.as_str().to_string()).collect(),
            next_queue: 0,
            prefetch: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            unsettled: Arc::new(Mutex::new(HashMap::new())),
            next_tag: 0,
        }))
    }

    async fn depth(&self, model: &ModelName) -> Result<u64> {
        let s = self.state.lock().expect("broker lock");
        Ok(s.queues.get(model.as_str()).map_or(0, |q| q.len() as u64))
    }

    async fn dead_letter_depth(&self) -> Result<u64> {
        Ok(self.state.lock().expect("broker lock").dead.len() as u64)
    }

    async fn publish_raw(&self, model: &ModelName, body: Bytes) -> Result<()> {
        self.push(model.as_str(), body, false);
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

type Unsettled = Arc<Mutex<HashMap<u64, (String, Bytes)>>>;

struct InProcConsumer {
    broker: InProcBroker,
    models: Vec<String>,
    next_queue: usize,
    prefetch: Arc<Semaphore>,
    unsettled: Unsettled,
    next_tag: u64,
}

impl InProcConsumer {
    /// Pop the next message, visiting the queues round-robin so no model starves.
    fn pop(&mut self) -> Option<(String, Bytes)> {
        let mut s = self.broker.state.lock().expect("broker lock");
        for i in 0..self.models.len() {
            let model = &self.models[(self.next_queue + i) % self.models.len()];
            if let Some(body) = s.queues.get_mut(model).and_then(VecDeque::pop_front) {
                self.next_queue = (self.next_queue + i + 1) % self.models.len();
                return Some((model.clone(), body));
            }
        }
        None
    }
}

#[async_trait]
impl Consumer for InProcConsumer {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let permit = self.prefetch.clone().acquire_owned().await.ok()?;
        let notify = self.broker.notify.clone();
        loop {
            let notified = notify.notified();
            if let Some((model, body)) = self.pop() {
                let tag = self.next_tag;
                self.next_tag += 1;
                self.unsettled
                    .lock()
                    .expect("lock")
                    .insert(tag, (model, body.clone()));
                let acker = InProcAcker {
                    broker: self.broker.clone(),
                    unsettled: self.unsettled.clone(),
                    tag,
                    permit: Mutex::new(Some(permit)),
                };
                return Some(Ok(Delivery {
                    message: pixelfarm_proto::decode_job_message(&body),
                    acker: Box::new(acker),
                }));
            }
            notified.await;
        }
    }
}

impl Drop for InProcConsumer {
    fn drop(&mut self) {
        // Like a closed AMQP channel: whatever was delivered but not settled goes back, in order.
        let mut pending: Vec<(u64, (String, Bytes))> =
            self.unsettled.lock().expect("lock").drain().collect();
        pending.sort_by_key(|(tag, _)| std::cmp::Reverse(*tag));
        for (_, (model, body)) in pending {
            self.broker.push(&model, body, true);
        }
    }
}

struct InProcAcker {
    broker: InProcBroker,
    unsettled: Unsettled,
    tag: u64,
    /// Prefetch slot, released by the first settlement (or by dropping the delivery).
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl InProcAcker {
    fn take(&self) -> Option<(String, Bytes)> {
        self.permit.lock().expect("lock").take();
        self.unsettled.lock().expect("lock").remove(&self.tag)
    }
}

#[async_trait]
impl Acker for InProcAcker {
    async fn ack(&self) -> Result<()> {
        self.take();
        Ok(())
    }

    async fn dead_letter(&self) -> Result<()> {
        if let Some((_, body)) = self.take() {
            self.broker
                .state
                .lock()
                .expect("broker lock")
                .dead
                .push(body);
        }
        Ok(())
    }

    async fn requeue(&self) -> Result<()> {
        if let Some((model, body)) = self.take() {
            self.broker.push(&model, body, true);
        }
        Ok(())
    }
}
