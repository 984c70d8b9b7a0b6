//! [`RgbImage`]: the one pixel buffer every crate passes around — a render's output, a decoded
//! init image or mask, a contact sheet.

/// RGB8 pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
}

impl RgbImage {
    /// `width x height` pixels of `colour`.
    pub fn filled(width: u32, height: u32, colour: [u8; 3]) -> Self {
        RgbImage {
            width,
            height,
            rgb: colour
                .iter()
                .copied()
                .cycle()
                .take(width as usize * height as usize * 3)
                .collect(),
        }
    }

    /// Byte offset of pixel `(x, y)`, when it is inside the image.
    fn offset(&self, x: u32, y: u32) -> Option<usize> {
        (x < self.width && y < self.height)
            .then(|| (y as usize * self.width as usize + x as usize) * 3)
    }

    /// The pixel at `(x, y)`; `None` outside the image or past the end of a short buffer.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        let i = self.offset(x, y)?;
        let p = self.rgb.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// Set the pixel at `(x, y)` to `colour`; a pixel outside the image is left out.
    pub fn put(&mut self, x: u32, y: u32, colour: [u8; 3]) {
        if let Some(p) = self.offset(x, y).and_then(|i| self.rgb.get_mut(i..i + 3)) {
            p.copy_from_slice(&colour);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_row_major_and_outside_is_none() {
        let mut img = RgbImage::filled(3, 2, [1, 2, 3]);
        assert_eq!(img.rgb.len(), 18);
        img.put(2, 1, [9, 8, 7]);
        img.put(3, 0, [0; 3]);
        assert_eq!(img.pixel(2, 1), Some([9, 8, 7]));
        assert_eq!(&img.rgb[15..], &[9, 8, 7]);
        assert_eq!(img.pixel(0, 0), Some([1, 2, 3]));
        assert_eq!(img.pixel(3, 0), None);
        assert_eq!(img.pixel(0, 2), None);
        img.rgb.truncate(4);
        assert_eq!(img.pixel(1, 0), None);
    }
}
