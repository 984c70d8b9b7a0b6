//! Every Broker implementation passes the same suite; RabbitMQ is the real server.

use pixelfarm_broker::{InProcBroker, RabbitBroker, Topology};
use pixelfarm_core::Broker;
use std::sync::Arc;

async fn rabbit() -> Arc<dyn Broker> {
    let url = std::env::var("PIXELFARM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let prefix = format!("pixelfarm-test-{}", uuid::Uuid::new_v4().simple());
    Arc::new(
        RabbitBroker::connect(&url, Topology::new(prefix))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "rabbitmq at {url} is needed for this test (run .ci/run): {}",
                    e.chain()
                )
            }),
    )
}

async fn inproc() -> Arc<dyn Broker> {
    Arc::new(InProcBroker::new())
}

mod rabbitmq {
    pixelfarm_broker::broker_conformance!(super::rabbit());
}

mod in_process {
    pixelfarm_broker::broker_conformance!(super::inproc());
}
