//! The analytic checker: does an image show what its caption asks for? No learned model: pixels are
//! classified to the nearest palette colour, the background is the majority colour of the border,
//! the shape is the largest 4-connected region of the asked-for colour (after removing isolated specks), and its kind is decided by how much of its bounding box it fills
//! (square ≈ 1, circle ≈ π/4, triangle ≈ 1/2).

use crate::data::{Attributes, Color, SIDE, Shape, Size};

/// A pixel further than this (Euclidean, in RGB8 units) from every palette colour is "no colour".
pub const MAX_COLOR_DISTANCE: f64 = 90.0;
/// Fewest pixels the shape's region must have.
pub const MIN_AREA: usize = 30;

/// What the checker saw in one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Majority colour of the border pixels.
    pub background: Option<Color>,
    /// Whether the background is the asked-for one.
    pub background_ok: bool,
    /// Pixels in the largest region of the asked-for colour.
    pub area: usize,
    /// Whether that region is large enough to be the shape (so the colour is right).
    pub color_ok: bool,
    /// Share of its bounding box the region fills.
    pub fill: f64,
    /// The shape its fill says.
    pub shape: Option<Shape>,
    /// Whether the shape is the asked-for one.
    pub shape_ok: bool,
    /// Longest side of its bounding box, in pixels.
    pub extent: usize,
    /// Whether the size matches (reported, not part of [`Verdict::matches`]).
    pub size_ok: bool,
}

impl Verdict {
    /// Shape, colour and background all match the caption.
    pub fn matches(&self) -> bool {
        self.background_ok && self.color_ok && self.shape_ok
    }
}

/// The colours pixels are classified to when grading against `want`: the base model's, and a new
/// colour ([`Color::NEW`]) only when `want` asks for it, so grading a base caption is what it
/// was before new colours existed.
fn palette(want: &Attributes) -> Vec<Color> {
    Color::EVERY
        .into_iter()
        .filter(|c| Color::ALL.contains(c) || *c == want.color || *c == want.background)
        .collect()
}

fn nearest(px: &[u8], palette: &[Color]) -> Option<Color> {
    let mut best = None;
    let mut best_d = MAX_COLOR_DISTANCE;
    for &c in palette {
        let rgb = c.rgb();
        let d = (0..3)
            .map(|i| (px[i] as f64 - rgb[i] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        if d < best_d {
            best_d = d;
            best = Some(c);
        }
    }
    best
}

/// The shape a region filling `fill` of its bounding box is.
pub fn shape_of_fill(fill: f64) -> Shape {
    if fill >= 0.9 {
        Shape::Square
    } else if fill >= 0.66 {
        Shape::Circle
    } else {
        Shape::Triangle
    }
}

/// Speck removal: a pixel whose class at most one of its 8 neighbours shares takes the class of the
/// majority (5 or more) of its 3×3 neighbourhood, so isolated specks of sampling noise neither split
/// nor hole the shape, while thin corners (a small triangle's apex) stay.
fn mode_filter(classes: &[Option<Color>]) -> Vec<Option<Color>> {
    let mut out = classes.to_vec();
    for y in 0..SIDE {
        for x in 0..SIDE {
            let mut counts = [0usize; Color::EVERY.len() + 1];
            let slot = |c: Option<Color>| c.map_or(Color::EVERY.len(), |c| c as usize);
            for ny in y.saturating_sub(1)..(y + 2).min(SIDE) {
                for nx in x.saturating_sub(1)..(x + 2).min(SIDE) {
                    counts[slot(classes[ny * SIDE + nx])] += 1;
                }
            }
            let own = slot(classes[y * SIDE + x]);
            let (best, n) = counts
                .iter()
                .enumerate()
                .max_by_key(|(_, n)| **n)
                .expect("slots");
            if counts[own] <= 2 && *n >= 5 {
                out[y * SIDE + x] = Color::EVERY.get(best).copied();
            }
        }
    }
    out
}

/// Grade `rgb` (`SIDE × SIDE` RGB8) against `want`.
///
/// # Panics
/// When `rgb` is not `SIDE × SIDE × 3` bytes.
pub fn check(rgb: &[u8], want: &Attributes) -> Verdict {
    assert_eq!(rgb.len(), SIDE * SIDE * 3, "a {SIDE}x{SIDE} RGB image");
    let palette = palette(want);
    let classes = mode_filter(
        &rgb.chunks(3)
            .map(|px| nearest(px, &palette))
            .collect::<Vec<_>>(),
    );
    let at = |x: usize, y: usize| classes[y * SIDE + x];

    let mut counts = [0usize; Color::EVERY.len()];
    for i in 0..SIDE {
        for (x, y) in [(i, 0), (i, SIDE - 1), (0, i), (SIDE - 1, i)] {
            if let Some(c) = at(x, y) {
                counts[c as usize] += 1;
            }
        }
    }
    let (bi, bn) = counts
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .expect("a palette");
    let background = (*bn > 0).then(|| Color::EVERY[bi]);

    // Largest 4-connected region of the asked-for colour.
    let mut seen = vec![false; SIDE * SIDE];
    let mut best: Vec<usize> = Vec::new();
    for start in 0..SIDE * SIDE {
        if seen[start] || classes[start] != Some(want.color) {
            continue;
        }
        let mut region = vec![start];
        seen[start] = true;
        let mut k = 0;
        while k < region.len() {
            let p = region[k];
            k += 1;
            let (x, y) = (p % SIDE, p / SIDE);
            let mut push = |q: usize| {
                if !seen[q] && classes[q] == Some(want.color) {
                    seen[q] = true;
                    region.push(q);
                }
            };
            if x > 0 {
                push(p - 1);
            }
            if x + 1 < SIDE {
                push(p + 1);
            }
            if y > 0 {
                push(p - SIDE);
            }
            if y + 1 < SIDE {
                push(p + SIDE);
            }
        }
        if region.len() > best.len() {
            best = region;
        }
    }
    let area = best.len();
    let (mut x0, mut y0, mut x1, mut y1) = (SIDE, SIDE, 0, 0);
    for &p in &best {
        let (x, y) = (p % SIDE, p / SIDE);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    let (fill, extent) = if area == 0 {
        (0.0, 0)
    } else {
        let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
        (area as f64 / (w * h) as f64, w.max(h))
    };
    let color_ok = area >= MIN_AREA && want.color != want.background;
    let shape = color_ok.then(|| shape_of_fill(fill));
    let size = if extent >= 15 {
        Size::Large
    } else {
        Size::Small
    };
    Verdict {
        background,
        background_ok: background == Some(want.background),
        area,
        color_ok,
        fill,
        shape,
        shape_ok: shape == Some(want.shape),
        extent,
        size_ok: color_ok && size == want.size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Spec;
    use pixelfarm_diffusion::JobRng;

    #[test]
    fn every_drawn_combination_passes_and_wrong_captions_fail() {
        // The base model's combinations and the new colour's.
        let mut rng = JobRng::new(11);
        let purple = Attributes::with_color(Color::Purple);
        for a in Attributes::all().into_iter().chain(purple) {
            for _ in 0..4 {
                let img = Spec::random(a, &mut rng).render();
                let v = check(&img, &a);
                assert!(v.matches() && v.size_ok, "{} {v:?}", a.caption());
                for s in Shape::ALL.into_iter().filter(|s| *s != a.shape) {
                    assert!(!check(&img, &Attributes { shape: s, ..a }).matches());
                }
                for c in Color::EVERY.into_iter().filter(|c| *c != a.color) {
                    assert!(!check(&img, &Attributes { color: c, ..a }).matches());
                }
                let bg = Color::EVERY
                    .into_iter()
                    .find(|c| *c != a.background && *c != a.color)
                    .unwrap();
                assert!(
                    !check(
                        &img,
                        &Attributes {
                            background: bg,
                            ..a
                        }
                    )
                    .matches()
                );
            }
        }
    }

    #[test]
    fn noise_and_flat_images_fail() {
        let a = Attributes::parse("a large red circle on a blue background").unwrap();
        let mut rng = JobRng::new(3);
        let noise: Vec<u8> = (0..SIDE * SIDE * 3)
            .map(|_| (rng.uniform() * 255.0) as u8)
            .collect();
        assert!(!check(&noise, &a).matches());
        let flat: Vec<u8> = (0..SIDE * SIDE).flat_map(|_| Color::Blue.rgb()).collect();
        assert!(!check(&flat, &a).matches());
    }
}
