//! Generated protobuf types and the broker message codec.
//!
//! # Layout
//! - [`v1`]: everything generated from `proto/pixelfarm/v1/*.proto` (gRPC client and server too).
//! - [`encode_job_message`] / [`decode_job_message`]: the bytes that travel on the broker.

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("pixelfarm.v1");
}

use pixelfarm_core::{Error, JobMessage, ModelName, Priority, Result};
use prost::Message;

/// Protobuf bytes of a job message.
pub fn encode_job_message(m: &JobMessage) -> Vec<u8> {
    v1::JobMessage {
        job_id: m.job_id.to_string(),
        batch_id: m.batch_id.to_string(),
        model: m.model.as_str().to_string(),
        priority: u32::from(m.priority.get()),
        crashes: m.crashes,
    }
    .encode_to_vec()
}

/// Decode and validate a job message.
///
/// # Errors
/// `Invalid` when the bytes are not a valid job message (dead-letter it).
pub fn decode_job_message(bytes: &[u8]) -> Result<JobMessage> {
    let m = v1::JobMessage::decode(bytes).map_err(|e| {
        Error::with_source(pixelfarm_core::ErrorKind::Invalid, "not a job message", e)
    })?;
    Ok(JobMessage {
        job_id: m.job_id.parse()?,
        batch_id: m.batch_id.parse()?,
        model: ModelName::parse(m.model)
            .map_err(|e| Error::invalid(format!("job message model {e}")))?,
        priority: Priority::parse(u8::try_from(m.priority).unwrap_or(u8::MAX))?,
        crashes: m.crashes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelfarm_core::{BatchId, JobId};

    #[test]
    fn job_messages_round_trip_and_garbage_is_invalid() {
        let m = JobMessage {
            job_id: JobId::generate(),
            batch_id: BatchId::generate(),
            model: ModelName::parse("sd15").unwrap(),
            priority: Priority::parse(4).unwrap(),
            crashes: 2,
        };
        assert_eq!(decode_job_message(&encode_job_message(&m)).unwrap(), m);
        for junk in [&b"\xff\xff\xff"[..], b"", b"{\"job_id\":1}"] {
            assert_eq!(
                decode_job_message(junk).unwrap_err().kind(),
                pixelfarm_core::ErrorKind::Invalid
            );
        }
    }
}
