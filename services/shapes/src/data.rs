//! The procedural dataset: one coloured shape on a plain background, with its caption.
//!
//! Every image is drawn from a [`Spec`] (shape, size, colour, background, centre) with 4×4
//! supersampling, so edges are anti-aliased the same way every time. Some (shape, colour) pairs are
//! never drawn for training ([`HELD_OUT`]): the quality gate asks for them to test composition.

use pixelfarm_diffusion::JobRng;

/// Side of the training images, in pixels.
pub const SIDE: usize = 32;

/// A shape the model knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    /// A filled disc.
    Circle,
    /// An axis-aligned filled square.
    Square,
    /// A filled triangle pointing up.
    Triangle,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];

    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }
}

/// A colour of the closed palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Color {
    #[allow(missing_docs)]
    Red,
    #[allow(missing_docs)]
    Green,
    #[allow(missing_docs)]
    Blue,
    #[allow(missing_docs)]
    Yellow,
    #[allow(missing_docs)]
    White,
    #[allow(missing_docs)]
    Black,
    /// Never drawn for the base model: the colour its LoRA teaches ([`Color::NEW`]).
    Purple,
}

impl Color {
    /// The base model's colours: every colour its training draws.
    pub const ALL: [Color; 6] = [
        Color::Red,
        Color::Green,
        Color::Blue,
        Color::Yellow,
        Color::White,
        Color::Black,
    ];

    /// Colours the base model never saw; its vocabulary has their words, so a LoRA can teach them
    /// (`models/shapes/loras/`).
    pub const NEW: [Color; 1] = [Color::Purple];

    /// Every colour: [`Color::ALL`], then [`Color::NEW`].
    pub const EVERY: [Color; Self::ALL.len() + Self::NEW.len()] = {
        let mut every = [Color::Black; Self::ALL.len() + Self::NEW.len()];
        let mut i = 0;
        while i < every.len() {
            every[i] = if i < Self::ALL.len() {
                Self::ALL[i]
            } else {
                Self::NEW[i - Self::ALL.len()]
            };
            i += 1;
        }
        every
    };

    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
            Color::White => "white",
            Color::Black => "black",
            Color::Purple => "purple",
        }
    }

    /// The sRGB value drawn (well apart from each other, so the checker can tell them apart).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 40, 40],
            Color::Green => [40, 180, 60],
            Color::Blue => [40, 70, 220],
            Color::Yellow => [240, 210, 40],
            Color::White => [240, 240, 240],
            Color::Black => [20, 20, 20],
            // At least 118 RGB units from every other colour (blue is the nearest).
            Color::Purple => [150, 40, 190],
        }
    }
}

/// Small or large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Size {
    /// Radius 5 to 6.5 pixels.
    Small,
    /// Radius 9 to 11 pixels.
    Large,
}

impl Size {
    /// Both sizes.
    pub const ALL: [Size; 2] = [Size::Small, Size::Large];

    /// The caption word.
    pub fn word(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// The range of the "radius" (half the extent) in pixels.
    pub fn radius_range(self) -> (f64, f64) {
        match self {
            Size::Small => (5.0, 6.5),
            Size::Large => (9.0, 11.0),
        }
    }
}

/// (shape, colour) pairs never shown in training.
pub const HELD_OUT: [(Shape, Color); 4] = [
    (Shape::Triangle, Color::Red),
    (Shape::Square, Color::Green),
    (Shape::Circle, Color::Blue),
    (Shape::Circle, Color::White),
];

/// What a caption asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes {
    #[allow(missing_docs)]
    pub shape: Shape,
    #[allow(missing_docs)]
    pub size: Size,
    /// The shape's colour.
    pub color: Color,
    /// The background's colour (never the shape's).
    pub background: Color,
}

impl Attributes {
    /// `a {size} {color} {shape} on a {background} background`.
    pub fn caption(&self) -> String {
        format!(
            "a {} {} {} on a {} background",
            self.size.word(),
            self.color.word(),
            self.shape.word(),
            self.background.word()
        )
    }

    /// Parse a caption written by [`Self::caption`].
    pub fn parse(caption: &str) -> Option<Attributes> {
        let w: Vec<&str> = caption.split_whitespace().collect();
        if w.len() != 8 || w[0] != "a" || w[4] != "on" || w[5] != "a" || w[7] != "background" {
            return None;
        }
        let size = Size::ALL.into_iter().find(|s| s.word() == w[1])?;
        let color = Color::EVERY.into_iter().find(|c| c.word() == w[2])?;
        let shape = Shape::ALL.into_iter().find(|s| s.word() == w[3])?;
        let background = Color::EVERY.into_iter().find(|c| c.word() == w[6])?;
        Some(Attributes {
            shape,
            size,
            color,
            background,
        })
    }

    /// Whether this combination is never shown in training.
    pub fn held_out(&self) -> bool {
        HELD_OUT.contains(&(self.shape, self.color))
    }

    /// Every combination of the base model's colours (shape × size × colour × background ≠
    /// colour).
    pub fn all() -> Vec<Attributes> {
        Self::of_colors(&Color::ALL)
    }

    /// Every combination of `colors` (shape × size × colour × background ≠ colour).
    fn of_colors(colors: &[Color]) -> Vec<Attributes> {
        let mut v = Vec::new();
        for shape in Shape::ALL {
            for size in Size::ALL {
                for &color in colors {
                    for &background in colors {
                        if background != color {
                            v.push(Attributes {
                                shape,
                                size,
                                color,
                                background,
                            });
                        }
                    }
                }
            }
        }
        v
    }

    /// The combinations training draws from.
    pub fn training() -> Vec<Attributes> {
        Self::all().into_iter().filter(|a| !a.held_out()).collect()
    }

    /// Every combination with `new` as the shape's or the background's colour, the other one of
    /// the base model's colours: what a LoRA teaching `new` learns from and is graded on.
    pub fn with_color(new: Color) -> Vec<Attributes> {
        let mut colors = Color::ALL.to_vec();
        colors.push(new);
        Self::of_colors(&colors)
            .into_iter()
            .filter(|a| a.color == new || a.background == new)
            .collect()
    }
}

/// One image to draw: attributes plus the free geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    #[allow(missing_docs)]
    pub attrs: Attributes,
    /// Half the extent, in pixels.
    pub radius: f64,
    /// Centre, in pixels from the top-left corner.
    pub center: (f64, f64),
}

/// Largest offset of a shape's centre from the image centre, in pixels.
pub const MAX_JITTER: f64 = 3.0;

/// A square's half side in units of the spec's radius: a little smaller than the circle's box, so
/// both cover similar areas.
const SQUARE_HALF: f64 = 0.85;

/// Where a triangle's base lies below the centre, in units of the radius (its apex is one radius
/// above).
const TRIANGLE_BASE: f64 = 0.8;

impl Spec {
    /// A random spec for `attrs`.
    pub fn random(attrs: Attributes, rng: &mut JobRng) -> Spec {
        let (lo, hi) = attrs.size.radius_range();
        let radius = lo + (hi - lo) * rng.uniform();
        let mid = SIDE as f64 / 2.0;
        let jitter = |rng: &mut JobRng| (rng.uniform() * 2.0 - 1.0) * MAX_JITTER;
        let center = (mid + jitter(rng), mid + jitter(rng));
        Spec {
            attrs,
            radius,
            center,
        }
    }

    /// Whether the point `(x, y)` (pixels, continuous) is inside the shape.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let (dx, dy) = (x - self.center.0, y - self.center.1);
        let r = self.radius;
        match self.attrs.shape {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            Shape::Square => dx.abs() <= SQUARE_HALF * r && dy.abs() <= SQUARE_HALF * r,
            Shape::Triangle => {
                // Apex at (0, -r), base from (-r, TRIANGLE_BASE·r) to (r, TRIANGLE_BASE·r).
                let top = -r;
                let base = TRIANGLE_BASE * r;
                if !(top..=base).contains(&dy) {
                    return false;
                }
                let half_width = r * (dy - top) / (base - top);
                dx.abs() <= half_width
            }
        }
    }

    /// How much of each pixel the shape covers (0..1, row-major, `SIDE × SIDE`), from 4×4 samples
    /// per pixel.
    pub fn coverage(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(SIDE * SIDE);
        for py in 0..SIDE {
            for px in 0..SIDE {
                let mut inside = 0u32;
                for sy in 0..4 {
                    for sx in 0..4 {
                        let x = px as f64 + (sx as f64 + 0.5) / 4.0;
                        let y = py as f64 + (sy as f64 + 0.5) / 4.0;
                        inside += u32::from(self.contains(x, y));
                    }
                }
                out.push(inside as f64 / 16.0);
            }
        }
        out
    }

    /// The image as RGB8, row-major, `SIDE × SIDE × 3` bytes (4×4 supersampled).
    pub fn render(&self) -> Vec<u8> {
        let fg = self.attrs.color.rgb();
        let bg = self.attrs.background.rgb();
        let mut out = Vec::with_capacity(SIDE * SIDE * 3);
        for a in self.coverage() {
            for c in 0..3 {
                let v = a * fg[c] as f64 + (1.0 - a) * bg[c] as f64;
                out.push(v.round() as u8);
            }
        }
        out
    }

    /// Pixels within one pixel of the shape's outline (where the 3×3 neighbourhood's coverage
    /// varies), as that variation (0..1, row-major): where the shape's identity is written.
    pub fn outline(&self) -> Vec<f64> {
        let cov = self.coverage();
        let mut out = Vec::with_capacity(SIDE * SIDE);
        for y in 0..SIDE {
            for x in 0..SIDE {
                let (mut lo, mut hi) = (1.0f64, 0.0f64);
                for ny in y.saturating_sub(1)..(y + 2).min(SIDE) {
                    for nx in x.saturating_sub(1)..(x + 2).min(SIDE) {
                        lo = lo.min(cov[ny * SIDE + nx]);
                        hi = hi.max(cov[ny * SIDE + nx]);
                    }
                }
                out.push(hi - lo);
            }
        }
        out
    }

    /// The shape's vertices in pixels: a square's four corners, a triangle's apex and base
    /// corners, none for a circle.
    pub fn vertices(&self) -> Vec<(f64, f64)> {
        let ((cx, cy), r) = (self.center, self.radius);
        match self.attrs.shape {
            Shape::Circle => Vec::new(),
            Shape::Square => {
                let h = SQUARE_HALF * r;
                vec![
                    (cx - h, cy - h),
                    (cx + h, cy - h),
                    (cx - h, cy + h),
                    (cx + h, cy + h),
                ]
            }
            Shape::Triangle => {
                let base = cy + TRIANGLE_BASE * r;
                vec![(cx, cy - r), (cx - r, base), (cx + r, base)]
            }
        }
    }

    /// How close each pixel's centre lies to a vertex of the shape (row-major, `SIDE × SIDE`):
    /// `1 − d / 2` within 2 px (`d` the distance to the nearest vertex), else 0. Corners are what
    /// tell a square from a circle, and the few pixels they cover are where an averaging denoiser
    /// rounds them off.
    pub fn corners(&self) -> Vec<f64> {
        let vertices = self.vertices();
        let mut out = Vec::with_capacity(SIDE * SIDE);
        for py in 0..SIDE {
            for px in 0..SIDE {
                let (x, y) = (px as f64 + 0.5, py as f64 + 0.5);
                let near = vertices
                    .iter()
                    .map(|&(vx, vy)| 1.0 - (x - vx).hypot(y - vy) / 2.0)
                    .fold(0.0, f64::max);
                out.push(near);
            }
        }
        out
    }
}

/// RGB8 bytes to channel-first floats in -1..1 (what the model sees).
pub fn to_model_pixels(rgb: &[u8]) -> Vec<f32> {
    let n = rgb.len() / 3;
    let mut out = vec![0f32; rgb.len()];
    for i in 0..n {
        for c in 0..3 {
            out[c * n + i] = rgb[i * 3 + c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// An endless stream of training examples, fixed by its seed.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: JobRng,
    combos: Vec<Attributes>,
    /// Two pools instead of `combos`: with the probability, an example comes from the first,
    /// else from the second.
    pools: Option<(f64, Vec<Attributes>, Vec<Attributes>)>,
}

impl Generator {
    /// The stream for `seed` over the training combinations.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: JobRng::new(seed),
            combos: Attributes::training(),
            pools: None,
        }
    }

    /// Draw squares with probability `share` (the others uniformly among the rest); `None` keeps
    /// every training combination equally likely.
    pub fn with_square_share(mut self, share: Option<f64>) -> Self {
        self.pools = share.map(|p| {
            let (sq, rest) = self.combos.iter().partition(|a| a.shape == Shape::Square);
            (p, sq, rest)
        });
        self
    }

    /// Draw a combination of the new colour `color` ([`Attributes::with_color`], the held-out
    /// pairs left out: a base colour's held-out shape on the new background stays unseen) with
    /// probability `share`, else a training combination of the base model (what keeps a LoRA
    /// from unlearning the rest).
    pub fn with_new_color(mut self, color: Color, share: f64) -> Self {
        let new = Attributes::with_color(color)
            .into_iter()
            .filter(|a| !a.held_out())
            .collect();
        self.pools = Some((share, new, self.combos.clone()));
        self
    }

    /// The next example: spec, caption, image.
    pub fn next_example(&mut self) -> (Spec, String, Vec<u8>) {
        let pool = match &self.pools {
            None => &self.combos,
            Some((p, first, second)) => {
                if self.rng.uniform() < *p {
                    first
                } else {
                    second
                }
            }
        };
        let i = (self.rng.uniform() * pool.len() as f64) as usize;
        let attrs = pool[i.min(pool.len() - 1)];
        let spec = Spec::random(attrs, &mut self.rng);
        let img = spec.render();
        (spec, attrs.caption(), img)
    }

    /// The generator's own random numbers (noise, timesteps, caption dropout while training).
    pub fn rng(&mut self) -> &mut JobRng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests;
