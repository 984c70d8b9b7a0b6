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

    /// This image resized bilinearly to `width x height` (itself when it has that size).
    ///
    /// # Errors
    /// `Permanent` (a bad input image never gets better on retry) for an empty image or a pixel
    /// buffer whose length does not match its size: the message says which, after the caller's
    /// name for the image.
    pub fn resized(&self, width: u32, height: u32) -> crate::Result<RgbImage> {
        let (iw, ih) = (self.width as usize, self.height as usize);
        if iw == 0 || ih == 0 {
            return Err(crate::Error::permanent("is empty"));
        }
        if self.rgb.len() != iw * ih * 3 {
            return Err(crate::Error::permanent(format!(
                "is {iw}x{ih} but has {} bytes; expected {} (RGB8)",
                self.rgb.len(),
                iw * ih * 3
            )));
        }
        let (w, h) = (width as usize, height as usize);
        let rgb = if (iw, ih) == (w, h) {
            self.rgb.clone()
        } else {
            resize_bilinear(&self.rgb, iw, ih, w, h)
        };
        Ok(RgbImage { width, height, rgb })
    }

    /// Set the pixel at `(x, y)` to `colour`; a pixel outside the image is left out.
    pub fn put(&mut self, x: u32, y: u32, colour: [u8; 3]) {
        if let Some(p) = self.offset(x, y).and_then(|i| self.rgb.get_mut(i..i + 3)) {
            p.copy_from_slice(&colour);
        }
    }
}

fn resize_bilinear(src: &[u8], sw: usize, sh: usize, w: usize, h: usize) -> Vec<u8> {
    let mut out = vec![0u8; w * h * 3];
    let coord = |i: usize, s: usize, d: usize| {
        let f = ((i as f64 + 0.5) * s as f64 / d as f64 - 0.5).clamp(0.0, (s - 1) as f64);
        let lo = f.floor() as usize;
        (lo, (lo + 1).min(s - 1), f - lo as f64)
    };
    for y in 0..h {
        let (y0, y1, fy) = coord(y, sh, h);
        for x in 0..w {
            let (x0, x1, fx) = coord(x, sw, w);
            for c in 0..3 {
                let p = |yy: usize, xx: usize| src[(yy * sw + xx) * 3 + c] as f64;
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                out[(y * w + x) * 3 + c] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    out
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
