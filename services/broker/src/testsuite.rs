//! The [`Broker`] conformance suite, run against every implementation via
//! [`broker_conformance!`](crate::broker_conformance), each case on a fresh broker (RabbitMQ: a
//! fresh, unique set of exchanges and queues).

use bytes::Bytes;
use pixelfarm_core::*;
use std::sync::Arc;
use std::time::Duration;

/// One `#[tokio::test]` per case, each on a broker made by `$make` (async, giving
/// `(Arc<dyn Broker>, cleanup)`; the cleanup guard, e.g. a
/// [`TestTopology`](crate::testing::TestTopology) of the case's names, is dropped when the case
/// ends, also when it fails).
#[macro_export]
macro_rules! broker_conformance {
    ($make:expr) => {
        $crate::broker_conformance!(@cases $make;
            publish_then_consume_in_order, routed_by_model, unsettled_redelivered_when_consumer_goes,
            dead_letter_is_not_redelivered, requeue_redelivers, malformed_message_decodes_to_invalid,
            prefetch_bounds_unsettled, depth_counts_ready_messages);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (broker, _cleanup) = $make.await;
                $crate::testsuite::$case(broker).await;
            }
        )*
    };
}

type B = Arc<dyn Broker>;

fn msg(model: &str) -> JobMessage {
    JobMessage {
        job_id: JobId::generate(),
        batch_id: BatchId::generate(),
        model: ModelName::parse(model).unwrap(),
        priority: Priority::parse(1).unwrap(),
        crashes: 0,
    }
}

/// Every model name the cases use: a RabbitMQ case's cleanup deletes these queues.
pub const MODELS: &[&str] = &["m1", "m2", "m3"];

fn models(names: &[&str]) -> Vec<ModelName> {
    names
        .iter()
        .map(|n| ModelName::parse(*n).unwrap())
        .collect()
}

async fn next(c: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a delivery within 10 s")
        .expect("consumer open")
        .expect("delivery ok")
}

async fn nothing_within(c: &mut Box<dyn Consumer>, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), c.next())
        .await
        .is_err()
}

#[allow(missing_docs)]
pub async fn publish_then_consume_in_order(b: B) {
    let sent: Vec<_> = (0..3).map(|_| msg("m1")).collect();
    b.publish(&sent).await.unwrap();
    let mut c = b.consume(&models(&["m1"]), 10).await.unwrap();
    for want in &sent {
        let d = next(&mut c).await;
        assert_eq!(d.message.as_ref().unwrap(), want);
        d.acker.ack().await.unwrap();
    }
    assert!(nothing_within(&mut c, 300).await);
}

#[allow(missing_docs)]
pub async fn routed_by_model(b: B) {
    b.publish(&[msg("m1"), msg("m2"), msg("m1")]).await.unwrap();
    let mut c2 = b.consume(&models(&["m2"]), 10).await.unwrap();
    let d = next(&mut c2).await;
    assert_eq!(d.message.as_ref().unwrap().model.as_str(), "m2");
    d.acker.ack().await.unwrap();
    assert!(
        nothing_within(&mut c2, 300).await,
        "m1 messages never reach an m2 consumer"
    );
    let mut both = b.consume(&models(&["m1", "m3"]), 10).await.unwrap();
    for _ in 0..2 {
        let d = next(&mut both).await;
        assert_eq!(d.message.as_ref().unwrap().model.as_str(), "m1");
        d.acker.ack().await.unwrap();
    }
}

#[allow(missing_docs)]
pub async fn unsettled_redelivered_when_consumer_goes(b: B) {
    let m = msg("m1");
    b.publish(std::slice::from_ref(&m)).await.unwrap();
    let mut c = b.consume(&models(&["m1"]), 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.as_ref().unwrap(), &m);
    drop(c); // a worker dies with the message in hand
    let mut again = b.consume(&models(&["m1"]), 1).await.unwrap();
    let d2 = next(&mut again).await;
    assert_eq!(d2.message.as_ref().unwrap(), &m);
    d2.acker.ack().await.unwrap();
    drop(d);
}

#[allow(missing_docs)]
pub async fn dead_letter_is_not_redelivered(b: B) {
    b.publish(&[msg("m1")]).await.unwrap();
    let mut c = b.consume(&models(&["m1"]), 1).await.unwrap();
    let d = next(&mut c).await;
    d.acker.dead_letter().await.unwrap();
    assert!(nothing_within(&mut c, 300).await);
    let mut dead = 0;
    for _ in 0..50 {
        dead = b.dead_letter_depth().await.unwrap();
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead, 1);
}

#[allow(missing_docs)]
pub async fn requeue_redelivers(b: B) {
    let m = msg("m1");
    b.publish(std::slice::from_ref(&m)).await.unwrap();
    let mut c = b.consume(&models(&["m1"]), 1).await.unwrap();
    next(&mut c).await.acker.requeue().await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.as_ref().unwrap(), &m);
    d.acker.ack().await.unwrap();
}

#[allow(missing_docs)]
pub async fn malformed_message_decodes_to_invalid(b: B) {
    b.publish_raw(
        &ModelName::parse("m1").unwrap(),
        Bytes::from_static(b"\xffnot protobuf"),
    )
    .await
    .unwrap();
    let mut c = b.consume(&models(&["m1"]), 1).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.as_ref().unwrap_err().kind(), ErrorKind::Invalid);
    d.acker.dead_letter().await.unwrap();
}

#[allow(missing_docs)]
pub async fn prefetch_bounds_unsettled(b: B) {
    b.publish(&(0..5).map(|_| msg("m1")).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut c = b.consume(&models(&["m1"]), 2).await.unwrap();
    let d1 = next(&mut c).await;
    let _d2 = next(&mut c).await;
    assert!(
        nothing_within(&mut c, 300).await,
        "a third delivery must wait for a settlement"
    );
    d1.acker.ack().await.unwrap();
    let _d3 = next(&mut c).await;
}

#[allow(missing_docs)]
pub async fn depth_counts_ready_messages(b: B) {
    let m1 = ModelName::parse("m1").unwrap();
    assert_eq!(b.depth(&m1).await.unwrap(), 0);
    b.publish(&(0..4).map(|_| msg("m1")).collect::<Vec<_>>())
        .await
        .unwrap();
    let mut depth = 0;
    for _ in 0..50 {
        depth = b.depth(&m1).await.unwrap();
        if depth == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(depth, 4);
}
