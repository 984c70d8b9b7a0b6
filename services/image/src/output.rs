//! What happens to rendered pixels before they are stored, per the job's [`OutputSpec`]:
//! resize/crop to the delivered size or upscale, colour adjustments, sharpening (in that order), then the
//! file format — PNG with text chunks, JPEG with the parameters in EXIF `UserComment` (where
//! AUTOMATIC1111-compatible tools look), or WebP. Every step is deterministic, so a job gives the
//! same bytes on every CPU worker.

use image::Rgb;
use image::imageops::{self, FilterType};
use pixelfarm_core::{Error, ErrorKind, Fit, ImageFormat, OutputSpec, Resize, Result, RgbImage};

use crate::encode::{PngMetadata, check_buffer, encode_png};

/// Radius (Gaussian sigma, pixels) of the unsharp mask.
const SHARPEN_SIGMA: f32 = 1.0;

/// Apply the resize or upscale, colour and sharpening of `spec` to `image` (a no-op for the
/// default spec).
///
/// # Errors
/// `Invalid` if the pixel buffer does not match the image size, or the upscale would pass the
/// largest delivered side.
pub fn postprocess(image: RgbImage, spec: &OutputSpec) -> Result<RgbImage> {
    let RgbImage { width, height, rgb } = image;
    let mut img = image::RgbImage::from_raw(width, height, rgb).ok_or_else(|| {
        Error::invalid(format!("pixel buffer does not hold {width}x{height} rgb"))
    })?;
    if let Some(r) = spec.resize {
        img = resize(&img, r);
    } else if spec.upscale.is_some() {
        let (w, h) = spec.delivered(width, height)?;
        img = imageops::resize(&img, w, h, FilterType::Lanczos3);
    }
    let (b, c, s) = (
        spec.brightness.get() as f32,
        spec.contrast.get() as f32,
        spec.saturation.get() as f32,
    );
    if (b, c, s) != (1.0, 1.0, 1.0) {
        for p in img.pixels_mut() {
            *p = adjust(*p, b, c, s);
        }
    }
    let amount = spec.sharpen.get() as f32;
    if amount > 0.0 {
        img = sharpen(&img, amount);
    }
    Ok(RgbImage {
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
    })
}

fn resize(img: &image::RgbImage, r: Resize) -> image::RgbImage {
    let (tw, th) = (r.width.get(), r.height.get());
    if (img.width(), img.height()) == (tw, th) {
        return img.clone();
    }
    match r.fit {
        Fit::Stretch => imageops::resize(img, tw, th, FilterType::Lanczos3),
        Fit::Cover => {
            let scale = f64::max(
                f64::from(tw) / f64::from(img.width()),
                f64::from(th) / f64::from(img.height()),
            );
            let sw = ((f64::from(img.width()) * scale).round() as u32).max(tw);
            let sh = ((f64::from(img.height()) * scale).round() as u32).max(th);
            let scaled = imageops::resize(img, sw, sh, FilterType::Lanczos3);
            imageops::crop_imm(&scaled, (sw - tw) / 2, (sh - th) / 2, tw, th).to_image()
        }
    }
}

/// Brightness (a factor), contrast around mid-grey, saturation around the pixel's luma (BT.601).
fn adjust(p: Rgb<u8>, brightness: f32, contrast: f32, saturation: f32) -> Rgb<u8> {
    let c =
        p.0.map(|v| (f32::from(v) * brightness - 127.5) * contrast + 127.5);
    let luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    Rgb(c.map(|v| to_u8(luma + (v - luma) * saturation)))
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Unsharp mask: the image plus `amount` times its difference from a Gaussian blur.
fn sharpen(img: &image::RgbImage, amount: f32) -> image::RgbImage {
    let blurred = imageops::blur(img, SHARPEN_SIGMA);
    let mut out = img.clone();
    for (o, b) in out.pixels_mut().zip(blurred.pixels()) {
        for (v, bv) in o.0.iter_mut().zip(b.0) {
            let x = f32::from(*v);
            *v = to_u8(x + amount * (x - f32::from(bv)));
        }
    }
    out
}

/// Encode `image` in the format of `spec`. PNG carries `meta` as text chunks; JPEG carries
/// `meta.parameters` in EXIF `UserComment`; WebP carries no metadata (the provenance record
/// stored beside every image has all of it).
///
/// # Errors
/// `Invalid` if the pixel buffer does not match the size or the encoder refuses it.
pub fn encode(image: &RgbImage, spec: &OutputSpec, meta: &PngMetadata) -> Result<Vec<u8>> {
    check_buffer(image)?;
    let expected = image.rgb.len();
    let refused = |what: &str, e: String| {
        Error::new(ErrorKind::Invalid, format!("cannot encode {what}: {e}"))
    };
    match spec.format {
        ImageFormat::Png => encode_png(image, meta),
        ImageFormat::Jpeg => {
            let quality = spec
                .quality
                .map_or(OutputSpec::DEFAULT_JPEG_QUALITY, |q| q.get());
            let (w, h) = (
                u16::try_from(image.width).map_err(|e| refused("jpeg", e.to_string()))?,
                u16::try_from(image.height).map_err(|e| refused("jpeg", e.to_string()))?,
            );
            let mut buf = Vec::with_capacity(expected / 8 + 1024);
            let mut enc = jpeg_encoder::Encoder::new(&mut buf, quality);
            enc.add_app_segment(1, &exif_user_comment(&meta.parameters))
                .map_err(|e| refused("jpeg metadata", e.to_string()))?;
            enc.encode(&image.rgb, w, h, jpeg_encoder::ColorType::Rgb)
                .map_err(|e| refused("jpeg", e.to_string()))?;
            Ok(buf)
        }
        ImageFormat::Webp => {
            let enc = webp::Encoder::from_rgb(&image.rgb, image.width, image.height);
            let mem = match spec.quality {
                Some(q) => enc.encode_simple(false, f32::from(q.get())),
                None => enc.encode_simple(true, 75.0),
            }
            .map_err(|e| refused("webp", format!("{e:?}")))?;
            Ok(mem.to_vec())
        }
    }
}

/// The longest side of a thumbnail, in pixels (a gallery tile shows it at up to 164 CSS pixels,
/// so a 2× screen gets its pixels).
pub const THUMBNAIL_SIDE: u32 = 256;

/// WebP quality of thumbnails: small files that still show what a review needs.
const THUMBNAIL_QUALITY: f32 = 80.0;

/// Whether an image of `width x height` gets a [`thumbnail`]: one no larger than
/// [`THUMBNAIL_SIDE`] is its own preview (no second object to store for small renders).
pub fn has_thumbnail(width: u32, height: u32) -> bool {
    width.max(height) > THUMBNAIL_SIDE
}

/// A lossy WebP preview of `image`, at most [`THUMBNAIL_SIDE`] pixels a side with its aspect kept;
/// `None` when it [has none](has_thumbnail). Deterministic, like the image it previews.
///
/// # Errors
/// `Invalid` if the pixel buffer does not match the size or the encoder refuses it.
pub fn thumbnail(image: &RgbImage) -> Result<Option<Vec<u8>>> {
    check_buffer(image)?;
    let (w, h) = (image.width, image.height);
    if !has_thumbnail(w, h) {
        return Ok(None);
    }
    let scale = f64::from(THUMBNAIL_SIDE) / f64::from(w.max(h));
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    let (tw, th) = (side(w), side(h));
    let full = image::ImageBuffer::<Rgb<u8>, &[u8]>::from_raw(w, h, &image.rgb[..])
        .ok_or_else(|| Error::invalid(format!("pixel buffer does not hold {w}x{h} rgb")))?;
    let small = imageops::thumbnail(&full, tw, th).into_raw();
    let mem = webp::Encoder::from_rgb(&small, tw, th)
        .encode_simple(false, THUMBNAIL_QUALITY)
        .map_err(|e| Error::invalid(format!("cannot encode the thumbnail: {e:?}")))?;
    Ok(Some(mem.to_vec()))
}

/// An EXIF APP1 payload holding `text` as `UserComment` (`UNICODE` prefix, UTF-16BE, as
/// AUTOMATIC1111 writes and reads it through piexif). Text that would not fit a JPEG segment is
/// cut at a character boundary.
fn exif_user_comment(text: &str) -> Vec<u8> {
    // Little-endian TIFF: header, IFD0 with one entry (pointer to the Exif IFD), the Exif IFD
    // with one entry (UserComment), then the comment's bytes.
    const IFD0: u32 = 8;
    const EXIF_IFD: u32 = IFD0 + 2 + 12 + 4;
    const COMMENT: u32 = EXIF_IFD + 2 + 12 + 4;
    const MAX_COMMENT: usize = 65533 - 6 - COMMENT as usize - 8;
    let mut comment = b"UNICODE\0".to_vec();
    for unit in text.encode_utf16() {
        if comment.len() + 2 > MAX_COMMENT + 8 {
            break;
        }
        comment.extend_from_slice(&unit.to_be_bytes());
    }
    let entry = |out: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32| {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    };
    let mut out = b"Exif\0\0II\x2a\x00".to_vec();
    out.extend_from_slice(&IFD0.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut out, 0x8769, 4, 1, EXIF_IFD); // ExifIFDPointer, LONG
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    entry(&mut out, 0x9286, 7, comment.len() as u32, COMMENT); // UserComment, UNDEFINED
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&comment);
    out
}

/// Decode a PNG, JPEG or WebP to RGB8 (contact sheets, tests, tools).
///
/// # Errors
/// `Invalid` for bytes that are none of those or do not decode.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    let format = match ImageFormat::sniff(bytes) {
        Some(ImageFormat::Png) => image::ImageFormat::Png,
        Some(ImageFormat::Jpeg) => image::ImageFormat::Jpeg,
        Some(ImageFormat::Webp) => image::ImageFormat::WebP,
        None => return Err(Error::invalid("not a PNG, JPEG or WebP image")),
    };
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| Error::with_source(ErrorKind::Invalid, "cannot decode image", e))?
        .into_rgb8();
    Ok(RgbImage {
        width: img.width(),
        height: img.height(),
        rgb: img.into_raw(),
    })
}

/// The `UserComment` text of a JPEG written by [`encode`], for tests and tools.
///
/// # Errors
/// `Invalid` when the JPEG has no such comment.
pub fn jpeg_user_comment(bytes: &[u8]) -> Result<String> {
    let marker = b"UNICODE\0";
    let start = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .ok_or_else(|| Error::invalid("the JPEG has no UNICODE UserComment"))?
        + marker.len();
    // The APP1 segment's length (big-endian, after the FF E1 marker) bounds the comment.
    let no_app1 = || Error::invalid("the JPEG has no APP1 segment");
    let app1 = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xE1])
        .ok_or_else(no_app1)?;
    let len = bytes.get(app1 + 2..app1 + 4).ok_or_else(no_app1)?;
    let end = (app1 + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]))).min(bytes.len());
    let units: Vec<u16> = bytes
        .get(start..end)
        .ok_or_else(|| Error::invalid("the UserComment is outside the APP1 segment"))?
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).map_err(|e| Error::with_source(ErrorKind::Invalid, "bad UTF-16", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixelfarm_core::{Level, OutputSide, Quality};

    /// Left half red, right half blue, `w x h`.
    fn halves(w: u32, h: u32) -> RgbImage {
        let mut rgb = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                rgb.extend(if x < w / 2 {
                    [200, 30, 30]
                } else {
                    [30, 30, 200]
                });
            }
        }
        RgbImage {
            width: w,
            height: h,
            rgb,
        }
    }

    fn meta() -> PngMetadata {
        PngMetadata {
            parameters: "a red circle — ünïcode\nSteps: 20, Sampler: Euler, Seed: 7".into(),
            provenance_json: "{}".into(),
        }
    }

    fn pixel(img: &RgbImage, x: u32, y: u32) -> [u8; 3] {
        img.pixel(x, y).expect("inside the image")
    }

    fn resize(w: u32, h: u32, fit: Fit) -> OutputSpec {
        OutputSpec {
            resize: Some(Resize {
                width: OutputSide::parse(w).unwrap(),
                height: OutputSide::parse(h).unwrap(),
                fit,
            }),
            ..OutputSpec::default()
        }
    }

    #[test]
    fn the_default_spec_leaves_the_pixels_alone() {
        let img = halves(16, 8);
        let out = postprocess(img.clone(), &OutputSpec::default()).unwrap();
        assert_eq!((out.width, out.height, &out.rgb), (16, 8, &img.rgb));
    }

    #[test]
    fn upscale_multiplies_each_side_with_the_resize_filter() {
        let spec = OutputSpec {
            upscale: Some(pixelfarm_core::ScaleFactor::parse(2.5).unwrap()),
            ..OutputSpec::default()
        };
        let out = postprocess(halves(64, 40), &spec).unwrap();
        assert_eq!((out.width, out.height), (160, 100));
        // The same pixels as a stretch to that size: one Lanczos filter for both.
        let stretched = postprocess(halves(64, 40), &resize(160, 100, Fit::Stretch)).unwrap();
        assert_eq!(out.rgb, stretched.rgb);
        assert_eq!(pixel(&out, 5, 50), [200, 30, 30]);
        assert_eq!(pixel(&out, 155, 50), [30, 30, 200]);
    }

    #[test]
    fn cover_crops_the_centre_and_stretch_keeps_everything() {
        // 64x64 to a wide banner: cover scales to 300x300 and crops rows, so both halves stay.
        let out = postprocess(halves(64, 64), &resize(300, 100, Fit::Cover)).unwrap();
        assert_eq!((out.width, out.height), (300, 100));
        assert_eq!(pixel(&out, 10, 50), [200, 30, 30]);
        assert_eq!(pixel(&out, 290, 50), [30, 30, 200]);
        // To a tall one: cover crops columns, so the middle (the edge) is all that is left.
        let out = postprocess(halves(64, 64), &resize(20, 100, Fit::Cover)).unwrap();
        assert_eq!((out.width, out.height), (20, 100));
        assert_eq!(pixel(&out, 0, 50), [200, 30, 30]);
        assert_eq!(pixel(&out, 19, 50), [30, 30, 200]);
        let out = postprocess(halves(64, 64), &resize(333, 17, Fit::Stretch)).unwrap();
        assert_eq!((out.width, out.height), (333, 17));
        assert_eq!(pixel(&out, 0, 8), [200, 30, 30]);
        assert_eq!(pixel(&out, 332, 8), [30, 30, 200]);
    }

    #[test]
    fn colour_factors_do_what_they_say() {
        let spec = |b: f64, c: f64, s: f64| OutputSpec {
            brightness: Level::parse(b).unwrap(),
            contrast: Level::parse(c).unwrap(),
            saturation: Level::parse(s).unwrap(),
            ..OutputSpec::default()
        };
        let img = halves(4, 1);
        let grey = postprocess(img.clone(), &spec(1.0, 1.0, 0.0)).unwrap();
        let [r, g, b] = pixel(&grey, 0, 0);
        assert!(r == g && g == b, "{r} {g} {b}");
        let flat = postprocess(img.clone(), &spec(1.0, 0.0, 1.0)).unwrap();
        assert!(flat.rgb.iter().all(|&v| v == 128), "{:?}", flat.rgb);
        let bright = postprocess(img.clone(), &spec(1.2, 1.0, 1.0)).unwrap();
        assert_eq!(pixel(&bright, 0, 0), [240, 36, 36]);
        let vivid = postprocess(img, &spec(1.0, 1.0, 1.5)).unwrap();
        let [r, g, _] = pixel(&vivid, 0, 0);
        assert!(r > 200 && g < 30, "{r} {g}");
    }

    #[test]
    fn sharpening_steepens_edges_and_leaves_flat_areas() {
        let spec = OutputSpec {
            sharpen: Level::parse(1.0).unwrap(),
            ..OutputSpec::default()
        };
        let out = postprocess(halves(32, 8), &spec).unwrap();
        // Next to the edge the red side gets redder and the blue side bluer; far away nothing moves.
        assert!(pixel(&out, 15, 4)[0] > 200, "{:?}", pixel(&out, 15, 4));
        assert!(pixel(&out, 16, 4)[2] > 200, "{:?}", pixel(&out, 16, 4));
        assert_eq!(pixel(&out, 2, 4), [200, 30, 30]);
    }

    #[test]
    fn jpeg_carries_the_parameters_where_a1111_reads_them() {
        let img = halves(64, 48);
        let spec = |q: u32| OutputSpec {
            format: ImageFormat::Jpeg,
            quality: Some(Quality::parse(q).unwrap()),
            ..OutputSpec::default()
        };
        let bytes = encode(&img, &spec(90), &meta()).unwrap();
        assert_eq!(ImageFormat::sniff(&bytes), Some(ImageFormat::Jpeg));
        assert_eq!(jpeg_user_comment(&bytes).unwrap(), meta().parameters);
        let back = decode_rgb(&bytes).unwrap();
        assert_eq!((back.width, back.height), (64, 48));
        let [r, _, b] = pixel(&back, 5, 20);
        assert!(r > 180 && b < 60, "{r} {b}");
        assert_eq!(
            bytes,
            encode(&img, &spec(90), &meta()).unwrap(),
            "deterministic"
        );
        let small = encode(&img, &spec(10), &meta()).unwrap();
        assert!(
            small.len() < bytes.len(),
            "{} vs {}",
            small.len(),
            bytes.len()
        );
    }

    #[test]
    fn webp_is_lossless_without_quality_and_lossy_with_it() {
        let img = halves(40, 24);
        let lossless = OutputSpec {
            format: ImageFormat::Webp,
            ..OutputSpec::default()
        };
        let bytes = encode(&img, &lossless, &meta()).unwrap();
        assert_eq!(ImageFormat::sniff(&bytes), Some(ImageFormat::Webp));
        assert_eq!(decode_rgb(&bytes).unwrap().rgb, img.rgb);
        let lossy = OutputSpec {
            quality: Some(Quality::parse(50).unwrap()),
            ..lossless
        };
        let bytes = encode(&img, &lossy, &meta()).unwrap();
        let back = decode_rgb(&bytes).unwrap();
        assert_eq!((back.width, back.height), (40, 24));
        let [r, _, b] = pixel(&back, 3, 12);
        assert!(r > 150 && b < 80, "{r} {b}");
        assert_eq!(
            bytes,
            encode(&img, &lossy, &meta()).unwrap(),
            "deterministic"
        );
    }

    #[test]
    fn thumbnails_are_small_webp_with_the_aspect_kept() {
        let wide = halves(1024, 512);
        let bytes = thumbnail(&wide).unwrap().unwrap();
        assert_eq!(ImageFormat::sniff(&bytes), Some(ImageFormat::Webp));
        let back = decode_rgb(&bytes).unwrap();
        assert_eq!(
            (back.width, back.height),
            (THUMBNAIL_SIDE, THUMBNAIL_SIDE / 2)
        );
        let [r, _, b] = pixel(&back, 10, 100);
        assert!(r > 150 && b < 80, "the left half stays red: {r} {b}");
        assert_eq!(Some(bytes), thumbnail(&wide).unwrap(), "deterministic");
        let tall = thumbnail(&halves(40, 600)).unwrap().unwrap();
        let tall = decode_rgb(&tall).unwrap();
        assert_eq!((tall.width, tall.height), (17, THUMBNAIL_SIDE));
        assert_eq!(
            thumbnail(&halves(256, 24)).unwrap(),
            None,
            "its own preview"
        );
    }

    #[test]
    fn garbage_does_not_decode_or_panic() {
        for bytes in [
            &b""[..],
            b"\x89PNG\r\n\x1a\n",
            b"\xFF\xD8\xFF\xE1",
            b"RIFF0000WEBP",
        ] {
            assert!(decode_rgb(bytes).is_err());
            assert!(jpeg_user_comment(bytes).is_err());
        }
        let short = RgbImage {
            width: 4,
            height: 4,
            rgb: vec![0; 5],
        };
        assert!(encode(&short, &OutputSpec::default(), &meta()).is_err());
        assert!(thumbnail(&short).is_err());
        assert!(postprocess(short, &OutputSpec::default()).is_err());
    }
}
