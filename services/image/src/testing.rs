//! Images for tests and measurements of the input checks: plain PNGs, PNGs whose header declares
//! a size their data does not have, and real decompression bombs.

use pixelfarm_core::RgbImage;

use crate::PngMetadata;
use crate::output::encode;

/// An RGB image of `w`x`h`, `pixel(x, y)` each, as PNG bytes.
///
/// # Panics
/// When the encoder refuses the size (0 or beyond the encoder's limits).
pub fn png(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            rgb.extend(pixel(x, y));
        }
    }
    let image = RgbImage {
        width: w,
        height: h,
        rgb,
    };
    let meta = PngMetadata {
        parameters: String::new(),
        provenance_json: String::new(),
    };
    encode(&image, &Default::default(), &meta).expect("a PNG of that size encodes")
}

/// A PNG whose header declares `w`x`h` but whose data is that of a 1x1 image: what a bomb's
/// header looks like, in under 1 KiB.
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = png(1, 1, |_, _| [0; 3]);
    // IHDR's data starts at byte 16 (8 signature + 4 length + 4 type); its CRC follows the
    // 13 data bytes.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A valid black RGB PNG of `side`x`side` pixels that decodes to `side² × 3` bytes from a file
/// about 160 times smaller: one deflate block of fixed Huffman codes, each copying 258 zero bytes
/// in 13 bits (13000 a side: 507 MB of pixels from a 3.1 MB file).
pub fn png_bomb(side: u32) -> Vec<u8> {
    // Every row is its filter byte (0, none) and its pixels: all zero bytes.
    let raw = u64::from(side) * (1 + u64::from(side) * 3);
    let mut bits = BitWriter::default();
    bits.put(0b1, 1); // BFINAL
    bits.put(0b01, 2); // BTYPE: fixed Huffman codes
    let literal_zero = reversed(0x30, 8);
    bits.put(literal_zero, 8);
    let copies = (raw - 1) / 258;
    // Length 258 is symbol 285 (8-bit code 0xC5, no extra bits); distance 1 is code 0 (5 bits).
    let copy = reversed(0xC5, 8);
    for _ in 0..copies {
        bits.put(copy, 13);
    }
    for _ in 0..(raw - 1) % 258 {
        bits.put(literal_zero, 8);
    }
    bits.put(0, 7); // end of block: symbol 256, code 0000000
    let deflate = bits.finish();
    let mut zlib = vec![0x78, 0x01];
    zlib.extend(deflate);
    // Adler-32 of zero bytes: the byte sum stays 1, the second sum grows by 1 a byte.
    let adler = (((raw % 65521) as u32) << 16) | 1;
    zlib.extend(adler.to_be_bytes());

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend(side.to_be_bytes());
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, adaptive filters, no interlace
    png_file(&[(b"IHDR", &ihdr), (b"IDAT", &zlib), (b"IEND", &[])])
}

/// A 1x1 indexed-colour PNG whose palette (PLTE chunk) holds `palette_bytes` bytes, every chunk
/// with its right CRC: with a length that is not a multiple of 3 (which the PNG specification
/// forbids), what made png 0.18.1's decoder panic (image-rs/image-png#694).
pub fn png_with_palette(palette_bytes: usize) -> Vec<u8> {
    let ihdr = [0, 0, 0, 1, 0, 0, 0, 1, 8, 3, 0, 0, 0]; // 1x1, 8 bits, indexed colour
    let palette = vec![0x40; palette_bytes];
    // One stored deflate block holding the row: filter byte 0 and palette index 0.
    let zlib = [
        0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFF, 0, 0, 0x00, 0x02, 0x00, 0x01,
    ];
    png_file(&[
        (b"IHDR", &ihdr),
        (b"PLTE", &palette),
        (b"IDAT", &zlib),
        (b"IEND", &[]),
    ])
}

/// The PNG signature and `chunks` (type and data), each with its length and CRC.
fn png_file(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in chunks {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(*kind);
        out.extend(*data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    out
}

/// The `len` low bits of `code` in reverse order: deflate packs Huffman codes from their most
/// significant bit into a stream filled from each byte's least significant bit.
fn reversed(code: u32, len: u32) -> u64 {
    u64::from(code.reverse_bits() >> (32 - len))
}

/// Bits, least significant first, into bytes.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, bits: u64, len: u32) {
        self.acc |= bits << self.n;
        self.n += len;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(data: &[u8]) -> u32 {
    let table: [u32; 256] = std::array::from_fn(|i| {
        (0..8).fold(i as u32, |c, _| {
            if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            }
        })
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests;
