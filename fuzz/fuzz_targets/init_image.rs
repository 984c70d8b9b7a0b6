//! Untrusted init-image and mask bytes, decoded as the scheduler checks them and the worker
//! reads them: decoding never panics, and a decoded image holds exactly its pixels.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = pixelfarm_render::output::decode_rgb(data) {
        assert_eq!(
            image.rgb.len() as u64,
            u64::from(image.width) * u64::from(image.height) * 3
        );
    }
});
