//! Canny edge maps for ControlNet control images: white one-pixel edges on black, computed as
//! OpenCV's `cv2.Canny(rgb, low, high)` computes them on a 3-channel image with its defaults
//! (aperture 3, L1 gradient).
//!
//! Three stages, each one pass over the image with buffers allocated once per call:
//! 1. Sobel 3x3 with replicated borders on each of R, G and B; per pixel the channel with the
//!    largest L1 magnitude `|gx| + |gy|` gives the pixel its magnitude and one of four gradient
//!    directions (OpenCV's rule for multi-channel input; a tie keeps the earlier channel);
//! 2. non-maximum suppression along that direction, sorting pixels into not-an-edge, maybe-an-edge
//!    (above `low`) and edge (above `high`);
//! 3. hysteresis: an explicit stack grows the edges through 8-connected maybe-pixels.
//!
//! There is no Gaussian blur and no conversion to grey: AUTOMATIC1111's ControlNet canny
//! annotator calls `cv2.Canny` on the RGB array directly, and `cv2.Canny` does neither.

use pixelfarm_core::RgbImage;

#[cfg(test)]
mod tests;

/// Canny thresholds on the gradient magnitude (Sobel) of the 8-bit channels, as OpenCV's
/// `cv2.Canny(img, low, high)` and AUTOMATIC1111's ControlNet canny preprocessor (defaults
/// 100 / 200) take them.
///
/// The magnitude is `|gx| + |gy|` of the 3x3 Sobel on the pixel's strongest channel, so it runs
/// from 0 to 2040.
/// A `low` above `high` is swapped, as OpenCV does; a NaN threshold lets no pixel past it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CannyThresholds {
    /// A pixel above this that touches an edge (8-neighbourhood) becomes part of it: what lets an
    /// edge run on through its fainter stretches.
    pub low: f32,
    /// A pixel above this starts an edge on its own: what decides which edges exist at all.
    pub high: f32,
}

impl Default for CannyThresholds {
    /// 100 / 200: the ControlNet canny preprocessor's defaults.
    fn default() -> Self {
        CannyThresholds {
            low: 100.0,
            high: 200.0,
        }
    }
}

/// The Canny edge map of `image`: same size, edges white `(255, 255, 255)` on black, like the
/// ControlNet canny annotator's output.
///
/// The result is `cv2.Canny(img, low, high)` on the 3-channel array, as AUTOMATIC1111's annotator
/// calls it: the Sobel gradient of each of R, G and B, and per pixel the `gx`, `gy` of the channel
/// with the largest `|gx| + |gy|` (the earliest of equals). So an edge between two colours of
/// equal luma is found as long as some channel changes across it, and a grey image (all channels
/// equal) gives the same map as `cv2.Canny` on its single grey channel. No Gaussian blur comes
/// first, as there is none in A1111's annotator, which calls `cv2.Canny` directly.
///
/// Never panics. An empty image (a side of 0) gives an empty image of the same size; an image
/// whose buffer is not `width * height * 3` bytes long has no pixels to trust and gives an empty
/// 0x0 image. Memory stays under 16 bytes per pixel, whatever the image and thresholds.
pub fn canny(image: &RgbImage, t: CannyThresholds) -> RgbImage {
    let Some(size) = Size::of(image) else {
        return RgbImage {
            width: 0,
            height: 0,
            rgb: Vec::new(),
        };
    };
    let mut rgb = Vec::with_capacity(image.rgb.len());
    if size.w > 0 && size.h > 0 {
        let (low, high) = levels(t);
        let (mag, direction) = gradients(&image.rgb, size);
        let (mut map, strong) = suppress(&mag, &direction, size, low, high);
        drop((mag, direction));
        hysteresis(&mut map, strong, size.stride);
        for row in map.chunks_exact(size.stride).skip(1).take(size.h) {
            for &m in &row[1..=size.w] {
                rgb.extend_from_slice(if m == EDGE { &[255; 3] } else { &[0; 3] });
            }
        }
    }
    RgbImage {
        width: image.width,
        height: image.height,
        rgb,
    }
}

/// The image's sides and the layout of the padded buffers: magnitudes and the edge map carry a
/// one-pixel ring around the image, so every pixel has its eight neighbours without a bounds test
/// (magnitude 0 and "not an edge" there, as in OpenCV).
#[derive(Clone, Copy)]
struct Size {
    w: usize,
    h: usize,
    /// Row length of a padded buffer, `w + 2`.
    stride: usize,
    /// Length of a padded buffer, `(w + 2) * (h + 2)`.
    padded: usize,
}

impl Size {
    /// `None` when the buffer does not hold `width * height` RGB pixels (or the sizes overflow).
    fn of(image: &RgbImage) -> Option<Size> {
        let w = usize::try_from(image.width).ok()?;
        let h = usize::try_from(image.height).ok()?;
        if w.checked_mul(h)?.checked_mul(3)? != image.rgb.len() {
            return None;
        }
        let stride = w.checked_add(2)?;
        let padded = stride.checked_mul(h.checked_add(2)?)?;
        Some(Size {
            w,
            h,
            stride,
            padded,
        })
    }
}

/// The thresholds as integer levels a magnitude must exceed: ordered, floored (OpenCV's `cvFloor`;
/// magnitudes are integers, so `m > floor(t)` is `m > t`), and `i32::MAX` for NaN.
fn levels(t: CannyThresholds) -> (i32, i32) {
    let (low, high) = if t.low > t.high {
        (t.high, t.low)
    } else {
        (t.low, t.high)
    };
    // `as` saturates: infinities become i32::MIN / i32::MAX.
    let level = |t: f32| {
        if t.is_nan() {
            i32::MAX
        } else {
            t.floor() as i32
        }
    };
    (level(low), level(high))
}

/// The gradient runs mostly along x: compare with the left and right neighbours.
const HORIZONTAL: u8 = 0;
/// The gradient runs mostly along y: compare with the neighbours above and below.
const VERTICAL: u8 = 1;
/// Diagonal with `gx` and `gy` of one sign: compare with the up-left and down-right neighbours.
const DIAGONAL_DOWN: u8 = 2;
/// Diagonal with `gx` and `gy` of opposite signs: compare with the up-right and down-left ones.
const DIAGONAL_UP: u8 = 3;

/// Sobel 3x3 over each channel of `rgb` with replicated borders (OpenCV's `BORDER_REPLICATE` in
/// Canny), then per pixel the channel whose L1 magnitude is largest, the first of equals (OpenCV's
/// `cn > 1` rule: a later channel must be strictly larger). Its magnitude goes into a padded buffer
/// (zeros on the ring), and its direction (one of the four constants above) into an unpadded one.
///
/// Separable, one row at a time over the interleaved channels: the vertical smoothing `[1 2 1]`
/// and difference `[-1 0 1]` of the three rows, then `gx` as the horizontal difference of the
/// smoothing and `gy` as the horizontal smoothing of the difference, channel by channel.
fn gradients(rgb: &[u8], size: Size) -> (Vec<u16>, Vec<u8>) {
    let Size { w, h, stride, .. } = size;
    let row = 3 * w;
    let mut mag = vec![0u16; size.padded];
    let mut direction = vec![HORIZONTAL; w * h];
    let mut smooth = vec![0i32; row];
    let mut diff = vec![0i32; row];
    for y in 0..h {
        let up = &rgb[y.saturating_sub(1) * row..][..row];
        let mid = &rgb[y * row..][..row];
        let down = &rgb[(y + 1).min(h - 1) * row..][..row];
        for i in 0..row {
            let (a, b, c) = (i32::from(up[i]), i32::from(mid[i]), i32::from(down[i]));
            smooth[i] = a + 2 * b + c;
            diff[i] = c - a;
        }
        let mag_row = &mut mag[(y + 1) * stride + 1..][..w];
        let direction_row = &mut direction[y * w..][..w];
        for x in 0..w {
            let (left, centre, right) = (3 * x.saturating_sub(1), 3 * x, 3 * (x + 1).min(w - 1));
            let (mut best, mut gx, mut gy) = (-1, 0, 0);
            for c in 0..3 {
                let cgx = smooth[right + c] - smooth[left + c];
                let cgy = diff[left + c] + 2 * diff[centre + c] + diff[right + c];
                let norm = cgx.abs() + cgy.abs();
                if norm > best {
                    (best, gx, gy) = (norm, cgx, cgy);
                }
            }
            // At most 4 * 255 per axis, so 2040 in all.
            mag_row[x] = best as u16;
            direction_row[x] = quantize(gx, gy);
        }
    }
    (mag, direction)
}

/// The gradient's direction, one of four sectors 45° wide, decided in integers as OpenCV does:
/// `tan 22.5°` in Q15 fixed point (rounded to 13573), and `tan 67.5° = 2 + tan 22.5°`.
fn quantize(gx: i32, gy: i32) -> u8 {
    const TAN_22_5_Q15: i32 = 13573;
    let x = gx.abs();
    let y = gy.abs() << 15;
    let tan22 = x * TAN_22_5_Q15;
    if y < tan22 {
        HORIZONTAL
    } else if y > tan22 + (x << 16) {
        VERTICAL
    } else if (gx < 0) != (gy < 0) {
        DIAGONAL_UP
    } else {
        DIAGONAL_DOWN
    }
}

/// Edge-map value: this pixel is not part of an edge (also the ring around the image).
const NOT_EDGE: u8 = 1;
/// Edge-map value: a local maximum above `low`, an edge if hysteresis reaches it.
const MAYBE: u8 = 0;
/// Edge-map value: part of an edge.
const EDGE: u8 = 2;

/// Non-maximum suppression: a pixel above `low` stays a candidate when its magnitude is a maximum
/// along its gradient direction. Along an axis it must beat the neighbour before it and at least
/// equal the one after (`>` and `>=`), so a two-pixel plateau keeps one pixel; along a diagonal it
/// must beat both, as in OpenCV. Candidates above `high` are edges already.
///
/// Returns the padded edge map and the indices of its edges, the seeds of hysteresis.
fn suppress(
    mag: &[u16],
    direction: &[u8],
    size: Size,
    low: i32,
    high: i32,
) -> (Vec<u8>, Vec<usize>) {
    let Size { w, h, stride, .. } = size;
    let mut map = vec![NOT_EDGE; size.padded];
    let mut strong = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = (y + 1) * stride + x + 1;
            let m = mag[i];
            if i32::from(m) <= low {
                continue;
            }
            let maximum = match direction[y * w + x] {
                HORIZONTAL => m > mag[i - 1] && m >= mag[i + 1],
                VERTICAL => m > mag[i - stride] && m >= mag[i + stride],
                DIAGONAL_DOWN => m > mag[i - stride - 1] && m > mag[i + stride + 1],
                _ => m > mag[i - stride + 1] && m > mag[i + stride - 1],
            };
            if !maximum {
                continue;
            }
            if i32::from(m) > high {
                map[i] = EDGE;
                strong.push(i);
            } else {
                map[i] = MAYBE;
            }
        }
    }
    (map, strong)
}

/// Hysteresis: every candidate 8-connected to an edge becomes one, grown from `stack` without
/// recursion. A pixel is marked before it is pushed, so each is pushed at most once and the stack
/// never holds more than the image's pixels; the ring is never a candidate, so the walk stays in.
fn hysteresis(map: &mut [u8], mut stack: Vec<usize>, stride: usize) {
    while let Some(i) = stack.pop() {
        let neighbours = [
            i - stride - 1,
            i - stride,
            i - stride + 1,
            i - 1,
            i + 1,
            i + stride - 1,
            i + stride,
            i + stride + 1,
        ];
        for n in neighbours {
            if map[n] == MAYBE {
                map[n] = EDGE;
                stack.push(n);
            }
        }
    }
}
