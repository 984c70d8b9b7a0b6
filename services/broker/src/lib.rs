//! Job message transport behind [`pixelfarm_core::Broker`].
//!
//! # Layout
//! - [`amqp`]: [`RabbitBroker`], RabbitMQ via lapin: durable direct exchange, one durable queue per
//!   model, persistent messages, publisher confirms, a dead-letter exchange and queue.
//! - [`inproc`]: [`InProcBroker`], the embedded mode's broker with the same semantics in memory.
//! - [`testsuite`]: the conformance suite both pass.
//! - [`testing`]: [`testing::TestTopology`], a test's RabbitMQ names, deleted when it ends.

pub mod amqp;
pub mod inproc;
pub mod testing;
pub mod testsuite;

pub use amqp::{RabbitBroker, Topology};
pub use inproc::InProcBroker;
