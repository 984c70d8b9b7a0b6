//! Untrusted init-image and mask bytes, checked and decoded as the scheduler checks uploads and
//! the worker reads inputs (`pixelfarm_image::input::decode_input`: the header's size first, then
//! the pixels under the decoder's limits): it never panics, a decoded image holds exactly its
//! pixels at the size its header gave, and no side is over the limit.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pixelfarm_core::ImageSize;

fuzz_target!(|data: &[u8]| {
    if let Ok((info, image)) = pixelfarm_image::input::decode_input(data) {
        assert_eq!((image.width, image.height), (info.width, info.height));
        assert!(info.width <= ImageSize::MAX_SIDE && info.height <= ImageSize::MAX_SIDE);
        assert_eq!(
            image.rgb.len() as u64,
            u64::from(image.width) * u64::from(image.height) * 3
        );
    }
});
