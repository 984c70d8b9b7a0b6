//! Input images (init images and masks) from outside: their format and size are read from the
//! header before any pixel is decoded, and decoding runs under [`image::Limits`], so a small file
//! that declares huge dimensions (a "PNG bomb") is refused after reading a few bytes.

use image::{ImageDecoder, ImageReader, Limits};
use pixelfarm_core::{Error, ImageFormat, ImageSize, Result, RgbImage};
use std::io::Cursor;

/// Most bytes one input's decoder may allocate: the largest accepted image
/// ([`ImageSize::MAX_SIDE`]² pixels) at the widest pixel the decoders produce (RGBA, 16 bits a
/// channel: 8 bytes).
pub const MAX_DECODE_ALLOC: u64 = (ImageSize::MAX_SIDE as u64) * (ImageSize::MAX_SIDE as u64) * 8;

/// What an input's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputInfo {
    /// The encoding, sniffed from the magic bytes.
    pub format: ImageFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

const ACCEPTED: &str = "accepted: PNG, JPEG or WebP";

/// The decoder's limits: with `pixels`, those of [`decode_input`]; without, only the allocation
/// bound (the PNG decoder checks the size limits while reading the header, which would hide the
/// size from [`probe`]'s message).
fn limits(pixels: bool) -> Limits {
    let mut l = Limits::default();
    if pixels {
        l.max_image_width = Some(ImageSize::MAX_SIDE);
        l.max_image_height = Some(ImageSize::MAX_SIDE);
    }
    l.max_alloc = Some(MAX_DECODE_ALLOC);
    l
}

fn reader(bytes: &[u8], format: ImageFormat, pixels: bool) -> ImageReader<Cursor<&[u8]>> {
    let f = match format {
        ImageFormat::Png => image::ImageFormat::Png,
        ImageFormat::Jpeg => image::ImageFormat::Jpeg,
        ImageFormat::Webp => image::ImageFormat::WebP,
    };
    let mut r = ImageReader::with_format(Cursor::new(bytes), f);
    r.limits(limits(pixels));
    r
}

/// The format and size of `bytes`, from the magic bytes and the header only.
///
/// # Errors
/// `Invalid`, worded to follow the input's name (`` `key` is not an image; accepted: … ``), for
/// bytes that are not PNG, JPEG or WebP, a header that does not parse, a PNG palette that is not
/// whole RGB entries, or a size of 0 or over [`ImageSize::MAX_SIDE`] a side.
pub fn probe(bytes: &[u8]) -> Result<InputInfo> {
    let format = ImageFormat::sniff(bytes)
        .ok_or_else(|| Error::invalid(format!("is not an image; {ACCEPTED}")))?;
    let name = format.extension().to_uppercase();
    if format == ImageFormat::Png {
        check_png_palette(bytes)?;
    }
    // A decoder reads the header only; the size is checked here, by hand.
    let (width, height) = reader(bytes, format, false)
        .into_decoder()
        .map(|d| d.dimensions())
        .map_err(|e| {
            Error::invalid(format!(
                "has a {name} header that does not parse ({e}); {ACCEPTED}"
            ))
        })?;
    let max = ImageSize::MAX_SIDE;
    if width == 0 || height == 0 || width > max || height > max {
        return Err(Error::invalid(format!(
            "is a {name} of {width}x{height} pixels (from its header); accepted: 1 to {max} pixels a side"
        )));
    }
    Ok(InputInfo {
        format,
        width,
        height,
    })
}

/// Refuses a palette (PLTE chunk) that is not 1 to 256 RGB entries of 3 bytes, as the PNG
/// specification requires: png 0.18.1's decoder panics on one whose length is not a multiple of 3
/// (image-rs/image-png#694). Walks the chunk headers only, skipping their data; a chunk that runs
/// past the end is left for the decoder to refuse.
fn check_png_palette(bytes: &[u8]) -> Result<()> {
    let mut rest = bytes.get(8..).unwrap_or_default();
    while let Some((header, data)) = rest.split_first_chunk::<8>() {
        let [l0, l1, l2, l3, kind @ ..] = *header;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        if &kind == b"PLTE" && (len % 3 != 0 || !(3..=768).contains(&len)) {
            return Err(Error::invalid(format!(
                "has a PNG palette (PLTE chunk) of {len} bytes; accepted: 1 to 256 entries of 3 bytes (3 to 768 bytes, a multiple of 3)"
            )));
        }
        // The data and the 4-byte CRC.
        let skip = usize::try_from(len).map_or(usize::MAX, |l| l.saturating_add(4));
        rest = data.get(skip..).unwrap_or_default();
    }
    Ok(())
}

/// [`probe`], then the pixels as RGB8, decoded under the limits ([`MAX_DECODE_ALLOC`]).
///
/// # Errors
/// As [`probe`], and `Invalid` for pixel data that does not decode.
pub fn decode_input(bytes: &[u8]) -> Result<(InputInfo, RgbImage)> {
    let info = probe(bytes)?;
    let img = reader(bytes, info.format, true)
        .decode()
        .map_err(|e| {
            Error::invalid(format!(
                "does not decode as {} ({e}); {ACCEPTED}",
                info.format.extension().to_uppercase()
            ))
        })?
        .into_rgb8();
    Ok((
        info,
        RgbImage {
            width: img.width(),
            height: img.height(),
            rgb: img.into_raw(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{png, png_bomb, png_declaring, png_with_palette};

    #[test]
    fn inputs_within_the_limits_decode() {
        let (info, img) = decode_input(&png(40, 24, |_, _| [90; 3])).unwrap();
        assert_eq!(
            info,
            InputInfo {
                format: ImageFormat::Png,
                width: 40,
                height: 24
            }
        );
        assert_eq!(
            (img.width, img.height, img.rgb.len()),
            (40, 24, 40 * 24 * 3)
        );
    }

    #[test]
    fn huge_headers_are_refused_before_decoding() {
        for bytes in [png_declaring(13_000, 13_000), png_bomb(13_000)] {
            let e = probe(&bytes).unwrap_err();
            assert_eq!(
                e.to_string(),
                "is a PNG of 13000x13000 pixels (from its header); accepted: 1 to 4096 pixels a side"
            );
        }
        assert!(decode_input(&png_declaring(4097, 8)).is_err());
        assert!(decode_input(&png_declaring(0, 8)).is_err());
        // Within the limits but the pixel data is that of a 1x1 image: refused by the decoder.
        let e = decode_input(&png_declaring(64, 64))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("does not decode as PNG"), "{e}");
    }

    #[test]
    fn palettes_that_are_not_whole_rgb_entries_are_refused_before_decoding() {
        for ok in [3, 48, 768] {
            let (_, img) = decode_input(&png_with_palette(ok)).unwrap();
            assert_eq!(img.rgb, [0x40; 3]);
        }
        for bad in [1, 2, 4, 28, 767, 771] {
            let e = decode_input(&png_with_palette(bad))
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!(
                    "has a PNG palette (PLTE chunk) of {bad} bytes; accepted: 1 to 256 entries of 3 bytes (3 to 768 bytes, a multiple of 3)"
                )
            );
        }
    }

    #[test]
    fn garbage_is_refused_naming_the_accepted_formats() {
        for bytes in [
            &b""[..],
            b"GIF89a",
            b"\x89PNG\r\n\x1a\n",
            b"\xFF\xD8\xFF\xE1",
            b"RIFF0000WEBP",
        ] {
            let e = decode_input(bytes).unwrap_err().to_string();
            assert!(e.ends_with(ACCEPTED), "{e}");
        }
    }
}
