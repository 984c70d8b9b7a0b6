//! The pixel-space enlargement of the hires fix (`upscaler: lanczos`).

use image::imageops::{self, FilterType};

/// RGB8 `rgb` of `width x height` resampled to `to_width x to_height` with a Lanczos-3 filter:
/// what the hires fix refines for `upscaler: lanczos`, public so tests can build the same input
/// for an img2img.
///
/// # Panics
/// When `rgb` does not hold `width x height` RGB8 pixels (the engine's own decoder makes it).
pub fn enlarge(rgb: &[u8], width: u32, height: u32, to_width: u32, to_height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_raw(width, height, rgb.to_vec())
        .expect("the decoder's pixels fill the image");
    imageops::resize(&img, to_width, to_height, FilterType::Lanczos3).into_raw()
}
