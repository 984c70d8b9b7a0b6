//! Where XMP and a C2PA manifest store go in each file format, as C2PA 2.1 ("Embedding
//! manifests into assets") and the XMP specification (part 3) place them:
//! - PNG: an `iTXt` chunk `XML:com.adobe.xmp` and a `caBX` chunk, both right after `IHDR`;
//! - JPEG: an APP1 segment `http://ns.adobe.com/xap/1.0/` and APP11 segments (JPEG XT boxes
//!   carrying the JUMBF), both after the existing APPn segments;
//! - WebP: the extended format (`VP8X` with the XMP flag) with an `XMP ` chunk, then a `C2PA`
//!   chunk at the end of the RIFF.
//!
//! The manifest's exclusion range (what its data hash leaves out) is the whole chunk or segments
//! it sits in, header included.

use std::ops::Range;

use pixelfarm_core::{Error, ImageFormat, Result};

/// Bytes of the PNG signature and of its `IHDR` chunk (13 bytes of data).
const PNG_HEADER_END: usize = 8 + 12 + 13;

/// JUMBF bytes per APP11 segment (a segment holds at most 65533 bytes with its headers).
const JPEG_JUMBF_PER_SEGMENT: usize = 64000;

/// The XMP namespace header of a JPEG APP1 segment.
const JPEG_XMP_HEADER: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// `bytes` (a PNG, JPEG or WebP of `width`x`height` as the encoders write them) with the XMP
/// packet `xmp` added.
///
/// # Errors
/// `Invalid` when the bytes are not what the encoders write.
pub(super) fn add_xmp(
    bytes: &[u8],
    format: ImageFormat,
    size: (u32, u32),
    xmp: &str,
) -> Result<Vec<u8>> {
    match format {
        ImageFormat::Png => {
            let mut data = b"XML:com.adobe.xmp\0\0\0\0\0".to_vec();
            data.extend_from_slice(xmp.as_bytes());
            let at = png_insertion_point(bytes)?;
            Ok([&bytes[..at], &png_chunk(b"iTXt", &data), &bytes[at..]].concat())
        }
        ImageFormat::Jpeg => {
            let at = jpeg_insertion_point(bytes)?;
            let payload = [JPEG_XMP_HEADER, xmp.as_bytes()].concat();
            Ok([&bytes[..at], &jpeg_segment(0xE1, &payload)?, &bytes[at..]].concat())
        }
        ImageFormat::Webp => {
            let mut chunks = riff_chunks(bytes)?;
            match chunks.first_mut() {
                Some((kind, data)) if kind == b"VP8X" && !data.is_empty() => data[0] |= VP8X_XMP,
                _ => chunks.insert(0, (*b"VP8X", vp8x(size)?)),
            }
            chunks.push((*b"XMP ", xmp.as_bytes().to_vec()));
            Ok(riff(&chunks))
        }
    }
}

/// `bytes` with the manifest store `store` embedded, and the range of the result that holds it
/// (the data hash's exclusion).
///
/// # Errors
/// `Invalid` when the bytes are not what the encoders write or the store cannot fit the format.
pub(super) fn add_manifest(
    bytes: &[u8],
    format: ImageFormat,
    store: &[u8],
) -> Result<(Vec<u8>, Range<usize>)> {
    let (at, inserted) = match format {
        ImageFormat::Png => (png_insertion_point(bytes)?, png_chunk(b"caBX", store)),
        ImageFormat::Jpeg => (jpeg_insertion_point(bytes)?, jpeg_app11(store)?),
        ImageFormat::Webp => {
            let mut chunks = riff_chunks(bytes)?;
            chunks.push((*b"C2PA", store.to_vec()));
            let out = riff(&chunks);
            // The chunk is last: header and data, without the pad byte of an odd-sized store.
            let start = out.len() - 8 - store.len() - store.len() % 2;
            return Ok((out, start..start + 8 + store.len()));
        }
    };
    let range = at..at + inserted.len();
    Ok(([&bytes[..at], &inserted, &bytes[at..]].concat(), range))
}

fn not_encoded(format: &str) -> Error {
    Error::invalid(format!(
        "the {format} bytes are not as pixelfarm's encoder writes them; content credentials need its output"
    ))
}

/// Right after `IHDR`, the first chunk of every PNG.
fn png_insertion_point(bytes: &[u8]) -> Result<usize> {
    if bytes.len() < PNG_HEADER_END || &bytes[12..16] != b"IHDR" || bytes[8..12] != [0, 0, 0, 13] {
        return Err(not_encoded("PNG"));
    }
    Ok(PNG_HEADER_END)
}

/// A PNG chunk: length, type, data, CRC-32 of type and data.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    [
        &(data.len() as u32).to_be_bytes()[..],
        kind,
        data,
        &crc.finalize().to_be_bytes(),
    ]
    .concat()
}

/// After the SOI marker and every APPn segment that follows it.
fn jpeg_insertion_point(bytes: &[u8]) -> Result<usize> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(not_encoded("JPEG"));
    }
    let mut at = 2;
    while let Some(&[0xFF, marker, hi, lo]) = bytes.get(at..at + 4) {
        if !(0xE0..=0xEF).contains(&marker) {
            break;
        }
        at += 2 + usize::from(u16::from_be_bytes([hi, lo]));
    }
    if at > bytes.len() {
        return Err(not_encoded("JPEG"));
    }
    Ok(at)
}

/// A JPEG marker segment: `FF marker`, length (itself included), payload.
fn jpeg_segment(marker: u8, payload: &[u8]) -> Result<Vec<u8>> {
    let len = u16::try_from(payload.len() + 2)
        .map_err(|_| Error::invalid("a JPEG segment holds at most 65533 bytes"))?;
    Ok([&[0xFF, marker][..], &len.to_be_bytes(), payload].concat())
}

/// The JUMBF `store` in APP11 segments (ISO 19566-5, JPEG XT): each begins with `JP`, the box
/// instance number and its sequence number; the ones after the first repeat the box's header.
fn jpeg_app11(store: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(store.len() + 64);
    for (i, part) in store.chunks(JPEG_JUMBF_PER_SEGMENT).enumerate() {
        let seq = u32::try_from(i + 1).map_err(|_| Error::invalid("the manifest is too large"))?;
        let mut payload = b"JP\x02\x11".to_vec();
        payload.extend_from_slice(&seq.to_be_bytes());
        if i > 0 {
            payload.extend_from_slice(&store[..8]);
        }
        payload.extend_from_slice(part);
        out.extend(jpeg_segment(0xEB, &payload)?);
    }
    Ok(out)
}

/// The XMP flag of a `VP8X` chunk's first byte.
const VP8X_XMP: u8 = 0x04;

/// A `VP8X` chunk's data for a `width`x`height` canvas with XMP.
fn vp8x((width, height): (u32, u32)) -> Result<Vec<u8>> {
    let side = |v: u32| {
        v.checked_sub(1)
            .filter(|v| *v < 1 << 24)
            .map(|v| v.to_le_bytes())
            .ok_or_else(|| not_encoded("WebP"))
    };
    let (w, h) = (side(width)?, side(height)?);
    Ok([&[VP8X_XMP, 0, 0, 0][..], &w[..3], &h[..3]].concat())
}

/// The chunks of a `RIFF….WEBP` file, in order.
fn riff_chunks(bytes: &[u8]) -> Result<Vec<([u8; 4], Vec<u8>)>> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WEBP" {
        return Err(not_encoded("WebP"));
    }
    let mut chunks = Vec::new();
    let mut at = 12;
    while at < bytes.len() {
        let header = bytes.get(at..at + 8).ok_or_else(|| not_encoded("WebP"))?;
        let kind: [u8; 4] = header[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        let data = bytes
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| not_encoded("WebP"))?;
        chunks.push((kind, data.to_vec()));
        at += 8 + len + len % 2;
    }
    Ok(chunks)
}

/// A `RIFF….WEBP` file of `chunks` (each padded to an even size).
fn riff(chunks: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = b"WEBP".to_vec();
    for (kind, data) in chunks {
        body.extend_from_slice(kind);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    [b"RIFF", &(body.len() as u32).to_le_bytes()[..], &body].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_without_panicking() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Webp] {
            for bytes in [
                &b""[..],
                b"\x89PNG\r\n\x1a\n",
                b"\xFF\xD8\xFF\xE0\xFF\xFF",
                b"RIFF\0\0\0\0WEBPVP8X\xff\xff\xff\xff",
            ] {
                assert!(
                    add_xmp(bytes, format, (8, 8), "x").is_err(),
                    "{format:?} {bytes:?}"
                );
                assert!(
                    add_manifest(bytes, format, b"x").is_err(),
                    "{format:?} {bytes:?}"
                );
            }
        }
        assert!(vp8x((0, 8)).is_err());
        assert!(vp8x((1 << 24 | 1, 8)).is_err());
    }

    #[test]
    fn large_stores_span_several_app11_segments() {
        let store: Vec<u8> = (0..150_000u32).map(|i| i as u8).collect();
        let segments = jpeg_app11(&store).unwrap();
        // Three segments: 8 header bytes in the first, 16 in the others, plus marker and length.
        assert_eq!(segments.len(), store.len() + 3 * 4 + 8 + 2 * 16);
        assert_eq!(&segments[..2], &[0xFF, 0xEB]);
        assert_eq!(&segments[4..12], b"JP\x02\x11\0\0\0\x01");
    }
}
