//! Write groups: concurrent executions hand their store writes (claims, completions) to one
//! [`GroupWriter`], which sends the items waiting together as one statement, so a worker with many
//! jobs in hand pays one database round trip per group instead of one per job. Each caller awaits
//! its own result; a failed group fails each of its callers with the same kind, and each retries
//! as it would have alone.
//!
//! A group is written once [`GroupConfig::max`] items wait, once every job the worker has in hand
//! ([`InHand`]) is in it (no one else could join), or [`GroupConfig::wait`] after its first item
//! arrived, whichever comes first: a worker with one job in hand (a GPU worker with one slot)
//! never waits, a busy one gathers. Groups are written concurrently, so a slow one does not hold
//! up the next. With `max` 1 there is no grouping: each item is written at once by its caller, one
//! statement per job (`docs/benchmarks.md`, "No-op jobs", measures both).

use pixelfarm_core::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How items are grouped (`worker.write_group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// Most items in one write; 1 writes each item alone, at once.
    pub max: usize,
    /// Longest an item waits for company before its group is written.
    pub wait: Duration,
}

type Write<I, O> =
    Arc<dyn Fn(Vec<I>) -> Pin<Box<dyn Future<Output = Result<Vec<O>>> + Send>> + Send + Sync>;

type Waiting<I, O> = (I, oneshot::Sender<Result<O>>);

/// The jobs a worker has in hand, from delivery to settlement: the writers a worker shares it
/// with wait for company only while some of them are not in the group.
#[derive(Debug, Clone, Default)]
pub struct InHand(Arc<AtomicUsize>);

impl InHand {
    /// One more job in hand, until the returned guard is dropped.
    pub fn enter(&self) -> Held {
        self.0.fetch_add(1, Ordering::AcqRel);
        Held(self.0.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// A job in hand ([`InHand::enter`]); dropping it lets it go.
#[must_use = "the job is in hand only while this is held"]
#[derive(Debug)]
pub struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Groups the items of concurrent callers into writes of several items.
pub struct GroupWriter<I, O> {
    write: Write<I, O>,
    /// `None` when `max` is 1: callers write alone.
    queue: Option<mpsc::UnboundedSender<Waiting<I, O>>>,
}

impl<I: Send + 'static, O: Send + 'static> GroupWriter<I, O> {
    /// A writer calling `write` with each group; `write` returns one result per item, in the
    /// items' order; its groups wait for the jobs `in_hand`. For `max` above 1 it starts the
    /// gathering task, which ends when the writer is dropped (after writing the items then
    /// waiting).
    pub fn start<F, Fut>(cfg: GroupConfig, in_hand: InHand, write: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>>> + Send + 'static,
    {
        let write: Write<I, O> = Arc::new(move |items| Box::pin(write(items)));
        let queue = (cfg.max > 1).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(gather(rx, cfg, in_hand, write.clone()));
            tx
        });
        GroupWriter { write, queue }
    }

    /// Write `item` within a group; its own result.
    ///
    /// # Errors
    /// The group's write error (same kind, the cause as its source), or `Transient` when the
    /// write answered no result for the item.
    pub async fn submit(&self, item: I) -> Result<O> {
        let Some(queue) = &self.queue else {
            let mut out = (self.write)(vec![item]).await?;
            return match (out.pop(), out.is_empty()) {
                (Some(o), true) => Ok(o),
                _ => Err(miscounted()),
            };
        };
        let (reply, answer) = oneshot::channel();
        queue
            .send((item, reply))
            .map_err(|_| Error::new(ErrorKind::Transient, "the worker's write group is closed"))?;
        answer.await.unwrap_or_else(|_| Err(miscounted()))
    }
}

fn miscounted() -> Error {
    Error::new(
        ErrorKind::Transient,
        "the grouped write answered no result for this item",
    )
}

/// Take the first waiting item, gather more until `max`, until every job in hand is in the group
/// or until `wait`, write the group in a task of its own, and start the next.
async fn gather<I: Send + 'static, O: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<Waiting<I, O>>,
    cfg: GroupConfig,
    in_hand: InHand,
    write: Write<I, O>,
) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + cfg.wait;
        while group.len() < cfg.max {
            // What has arrived joins at once; a group that holds every job in hand waits for no
            // one.
            if let Ok(w) = rx.try_recv() {
                group.push(w);
                continue;
            }
            if group.len() >= in_hand.count() {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(w)) => group.push(w),
                Ok(None) | Err(_) => break,
            }
        }
        tokio::spawn(flush(write.clone(), group));
    }
}

/// Write one group and answer each of its callers.
async fn flush<I, O>(write: Write<I, O>, group: Vec<Waiting<I, O>>) {
    let (items, replies): (Vec<I>, Vec<_>) = group.into_iter().unzip();
    let n = items.len();
    match write(items).await {
        Ok(out) if out.len() == n => {
            for (reply, o) in replies.into_iter().zip(out) {
                // A caller that gave up (shutdown) needs no answer.
                let _ = reply.send(Ok(o));
            }
        }
        Ok(_) => {
            for reply in replies {
                let _ = reply.send(Err(miscounted()));
            }
        }
        Err(e) => {
            let (kind, e) = (e.kind(), Arc::new(e));
            for reply in replies {
                let _ = reply.send(Err(Error::with_source(
                    kind,
                    format!("the grouped write of {n} items failed"),
                    e.clone(),
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::task::JoinSet;

    /// The size of each group written, in order.
    type Sizes = Arc<Mutex<Vec<usize>>>;

    /// A writer that records the size of each group and answers ten times each item, or fails
    /// every group of an item above 100; its groups wait for the jobs in `in_hand`.
    fn tens(max: usize, wait: Duration, in_hand: &InHand) -> (Sizes, Arc<GroupWriter<u32, u32>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let s = sizes.clone();
        let cfg = GroupConfig { max, wait };
        let writer = GroupWriter::start(cfg, in_hand.clone(), move |items: Vec<u32>| {
            s.lock().unwrap().push(items.len());
            let failed = items.iter().any(|i| *i > 100);
            async move {
                if failed {
                    return Err(Error::new(ErrorKind::Transient, "database restarting"));
                }
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
        (sizes, Arc::new(writer))
    }

    /// Submits each item from a task of its own, each a job in hand from before any submits
    /// until its answer; the results in the items' order.
    async fn submit_all(
        writer: &Arc<GroupWriter<u32, u32>>,
        in_hand: &InHand,
        items: &[u32],
    ) -> Vec<Result<u32>> {
        let mut set = JoinSet::new();
        for (n, i) in items.iter().enumerate() {
            let (w, i, held) = (writer.clone(), *i, in_hand.enter());
            set.spawn(async move {
                let r = w.submit(i).await;
                drop(held);
                (n, r)
            });
        }
        let mut out: Vec<(usize, Result<u32>)> = set.join_all().await;
        out.sort_by_key(|(n, _)| *n);
        out.into_iter().map(|(_, r)| r).collect()
    }

    #[tokio::test]
    async fn full_groups_are_written_at_once_and_each_caller_gets_its_own_result() {
        // The wait is never reached: 8 items make two full groups.
        let in_hand = InHand::default();
        let (sizes, writer) = tens(4, Duration::from_secs(3600), &in_hand);
        let items: Vec<u32> = (1..=8).collect();
        let got: Vec<u32> = submit_all(&writer, &in_hand, &items)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, items.iter().map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(*sizes.lock().unwrap(), [4, 4]);
    }

    #[tokio::test]
    async fn a_group_short_of_max_is_written_after_the_wait() {
        let in_hand = InHand::default();
        let (sizes, writer) = tens(100, Duration::from_millis(20), &in_hand);
        // One more job in hand that never writes: only the wait ends the group.
        let _rendering = in_hand.enter();
        let got = submit_all(&writer, &in_hand, &[1, 2, 3]).await;
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        assert_eq!(sizes.lock().unwrap().iter().sum::<usize>(), 3);
    }

    #[tokio::test]
    async fn a_group_waits_only_for_jobs_in_hand_that_are_not_in_it() {
        let in_hand = InHand::default();
        let (sizes, writer) = tens(64, Duration::from_secs(3600), &in_hand);
        // The only job in hand: written at once, not after the hour.
        let held = in_hand.enter();
        let alone = tokio::time::timeout(Duration::from_secs(10), writer.submit(1)).await;
        assert_eq!(alone.expect("written without waiting").unwrap(), 10);

        // Another job in hand keeps the group open until it joins.
        let other = in_hand.enter();
        let w = writer.clone();
        let first = tokio::spawn(async move { w.submit(2).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!first.is_finished(), "the group waits for the other job");
        let second = tokio::time::timeout(Duration::from_secs(10), writer.submit(3)).await;
        assert_eq!(second.expect("written once it joined").unwrap(), 30);
        assert_eq!(first.await.unwrap().unwrap(), 20);
        assert_eq!(*sizes.lock().unwrap(), [1, 2]);
        drop((held, other));
    }

    #[tokio::test]
    async fn a_failed_group_fails_each_of_its_callers_with_the_kind() {
        let in_hand = InHand::default();
        let (_, writer) = tens(3, Duration::from_secs(3600), &in_hand);
        for r in submit_all(&writer, &in_hand, &[1, 2, 300]).await {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Transient);
            assert!(
                e.chain().to_string().contains("database restarting"),
                "{}",
                e.chain()
            );
        }
    }

    #[tokio::test]
    async fn max_one_writes_each_item_alone() {
        let in_hand = InHand::default();
        let (sizes, writer) = tens(1, Duration::from_secs(3600), &in_hand);
        let got = submit_all(&writer, &in_hand, &[1, 2, 3, 4]).await;
        assert_eq!(
            got.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
            [10, 20, 30, 40]
        );
        assert_eq!(*sizes.lock().unwrap(), [1, 1, 1, 1]);
        assert!(writer.queue.is_none(), "no gathering task");
    }
}
