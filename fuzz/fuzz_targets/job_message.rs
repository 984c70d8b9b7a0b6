//! The broker message codec on arbitrary bytes (what a worker reads off a queue): decoding never
//! panics, and a message it accepts encodes to bytes that decode to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pixelfarm_proto::{decode_job_message, encode_job_message};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = decode_job_message(data) else {
        return;
    };
    let bytes = encode_job_message(&message);
    assert_eq!(decode_job_message(&bytes).ok(), Some(message));
});
