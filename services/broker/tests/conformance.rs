//! Every Broker implementation passes the same suite; RabbitMQ is the real server.

use pixelfarm_broker::testing::{TestTopology, test_amqp_url};
use pixelfarm_broker::{InProcBroker, RabbitBroker, testsuite};
use pixelfarm_core::Broker;
use std::sync::Arc;

/// A broker on names of its own, deleted when the case ends.
async fn rabbit() -> (Arc<dyn Broker>, TestTopology) {
    let url = test_amqp_url();
    let prefix = format!("pixelfarm-test-{}", uuid::Uuid::new_v4().simple());
    let names = TestTopology::new(&url, &prefix, testsuite::MODELS);
    let broker = RabbitBroker::connect(&url, names.topology())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "rabbitmq at {url} is needed for this test (run .ci/run): {}",
                e.chain()
            )
        });
    (Arc::new(broker), names)
}

async fn inproc() -> (Arc<dyn Broker>, ()) {
    (Arc::new(InProcBroker::new()), ())
}

mod rabbitmq {
    pixelfarm_broker::broker_conformance!(super::rabbit());
}

mod in_process {
    pixelfarm_broker::broker_conformance!(super::inproc());
}
