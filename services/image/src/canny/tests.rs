use super::*;

const WHITE: [u8; 3] = [255; 3];
const BLACK: [u8; 3] = [0; 3];

/// A `w`x`h` image of `pixel(x, y)`.
fn image(w: u32, h: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
    let mut img = RgbImage::filled(w, h, BLACK);
    for y in 0..h {
        for x in 0..w {
            img.put(x, y, pixel(x, y));
        }
    }
    img
}

/// A grey image of `level(x, y)`.
fn grey(w: u32, h: u32, level: impl Fn(u32, u32) -> u8) -> RgbImage {
    image(w, h, |x, y| [level(x, y); 3])
}

/// Pseudo-random bytes (a 64-bit LCG), the same on every run.
fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 56) as u8
    };
    let mut img = RgbImage::filled(w, h, BLACK);
    for b in &mut img.rgb {
        *b = next();
    }
    img
}

fn edge(img: &RgbImage, x: u32, y: u32) -> bool {
    img.pixel(x, y) == Some(WHITE)
}

fn edge_count(img: &RgbImage) -> usize {
    img.rgb.chunks_exact(3).filter(|p| p == &WHITE).count()
}

fn thresholds(low: f32, high: f32) -> CannyThresholds {
    CannyThresholds { low, high }
}

#[test]
fn the_default_thresholds_are_the_controlnet_preprocessors() {
    assert_eq!(CannyThresholds::default(), thresholds(100.0, 200.0));
}

#[test]
fn a_flat_image_has_no_edges() {
    for colour in [BLACK, WHITE, [120, 30, 200]] {
        let out = canny(&RgbImage::filled(17, 9, colour), CannyThresholds::default());
        assert_eq!(out, RgbImage::filled(17, 9, BLACK), "{colour:?}");
        // Even with thresholds that let any gradient through.
        let out = canny(&RgbImage::filled(17, 9, colour), thresholds(-1.0, -1.0));
        assert_eq!(edge_count(&out), 0, "{colour:?}");
    }
}

#[test]
fn a_white_square_on_black_gives_a_closed_thin_outline_at_its_border() {
    let (size, lo, hi) = (40u32, 12u32, 28u32); // the square is x, y in lo..hi
    let img = grey(size, size, |x, y| {
        if (lo..hi).contains(&x) && (lo..hi).contains(&y) {
            255
        } else {
            0
        }
    });
    let out = canny(&img, CannyThresholds::default());
    assert_eq!((out.width, out.height), (size, size));

    // Every edge pixel lies on the square's border, give or take a pixel.
    let near_border = |x: u32, y: u32| {
        let inside_outer = (lo - 1..=hi).contains(&x) && (lo - 1..=hi).contains(&y);
        let inside_inner = (lo + 1..hi - 1).contains(&x) && (lo + 1..hi - 1).contains(&y);
        inside_outer && !inside_inner
    };
    for y in 0..size {
        for x in 0..size {
            if edge(&out, x, y) {
                assert!(near_border(x, y), "edge at ({x}, {y})");
            }
        }
    }
    // The perimeter of the 16x16 square is 60 pixels; corners may cut a pixel each.
    let side = hi - lo;
    let perimeter = 4 * (side - 1) as usize;
    let count = edge_count(&out);
    assert!(count.abs_diff(perimeter) <= 4, "{count} edge pixels");

    // One pixel wide: no 2x2 block is all edge.
    for y in 0..size - 1 {
        for x in 0..size - 1 {
            let block = [(x, y), (x + 1, y), (x, y + 1), (x + 1, y + 1)];
            assert!(!block.iter().all(|&(x, y)| edge(&out, x, y)), "({x}, {y})");
        }
    }

    // Closed: black pixels reachable from the image's corner (4-connected) never reach the
    // square's centre.
    let mut outside = vec![false; (size * size) as usize];
    let mut stack = vec![(0u32, 0u32)];
    outside[0] = true;
    while let Some((x, y)) = stack.pop() {
        let steps = [
            (x.wrapping_sub(1), y),
            (x + 1, y),
            (x, y.wrapping_sub(1)),
            (x, y + 1),
        ];
        for (nx, ny) in steps {
            if nx < size && ny < size && !edge(&out, nx, ny) {
                let i = (ny * size + nx) as usize;
                if !outside[i] {
                    outside[i] = true;
                    stack.push((nx, ny));
                }
            }
        }
    }
    let centre = (lo + hi) / 2;
    assert!(
        !outside[(centre * size + centre) as usize],
        "the outline leaks"
    );

    // The interior and the far background are black.
    for y in 0..size {
        for x in 0..size {
            let interior = (lo + 2..hi - 2).contains(&x) && (lo + 2..hi - 2).contains(&y);
            let far = !(lo - 3..hi + 3).contains(&x) || !(lo - 3..hi + 3).contains(&y);
            if interior || far {
                assert!(!edge(&out, x, y), "({x}, {y})");
            }
        }
    }
}

#[test]
fn a_gradient_below_low_gives_no_edges() {
    // 10 levels a pixel: the Sobel magnitude is 4 * 2 * 10 = 80, under the low threshold of 100.
    let img = grey(25, 12, |x, _| (x * 10) as u8);
    assert_eq!(edge_count(&canny(&img, CannyThresholds::default())), 0);
    // The same ramp is a band of edges once low and high are under 80.
    assert!(edge_count(&canny(&img, thresholds(50.0, 70.0))) > 0);
}

#[test]
fn a_step_between_low_and_high_is_kept_only_when_connected_to_a_strong_edge() {
    // A vertical step at x = 10 from 0 to 35: magnitude 4 * 35 = 140, between 100 and 200.
    let weak = grey(20, 30, |x, _| if x >= 10 { 35 } else { 0 });
    assert_eq!(edge_count(&canny(&weak, CannyThresholds::default())), 0);

    // The same step continued below by a step to 255 (magnitude 1020) along the same column:
    // hysteresis carries the edge up the weak stretch to the top of the image.
    let joined = grey(20, 30, |x, y| match (x >= 10, y >= 15) {
        (false, _) => 0,
        (true, false) => 35,
        (true, true) => 255,
    });
    let out = canny(&joined, CannyThresholds::default());
    for y in 0..13 {
        assert!(edge(&out, 9, y), "weak stretch at y = {y}");
    }
    for y in 17..30 {
        assert!(edge(&out, 9, y), "strong stretch at y = {y}");
    }
    // Raising low over the weak step's magnitude leaves only the strong stretch.
    let out = canny(&joined, thresholds(150.0, 200.0));
    assert!((0..13).all(|y| !edge(&out, 9, y)));
    assert!((17..30).all(|y| edge(&out, 9, y)));
}

#[test]
fn swapped_thresholds_behave_like_ordered_ones() {
    let img = noise(31, 23, 7);
    for (low, high) in [(100.0, 200.0), (20.0, 600.0), (350.5, 351.0)] {
        assert_eq!(
            canny(&img, thresholds(high, low)),
            canny(&img, thresholds(low, high)),
            "{low} / {high}"
        );
    }
}

#[test]
fn tiny_and_empty_images_do_not_panic() {
    for (w, h) in [(1, 1), (1, 5), (5, 1), (2, 2), (0, 0), (0, 5), (5, 0)] {
        for t in [
            CannyThresholds::default(),
            thresholds(-10.0, -5.0),
            thresholds(f32::NAN, 10.0),
            thresholds(f32::NEG_INFINITY, f32::INFINITY),
        ] {
            let img = noise(w, h, u64::from(w * 10 + h));
            let out = canny(&img, t);
            assert_eq!((out.width, out.height), (w, h));
            assert_eq!(out.rgb.len(), (w * h * 3) as usize);
        }
    }
    let one_by_five = grey(1, 5, |_, y| if y >= 2 { 255 } else { 0 });
    let out = canny(&one_by_five, CannyThresholds::default());
    assert_eq!(edge_count(&out), 1);
    assert!(edge(&out, 0, 1));
}

#[test]
fn a_buffer_of_the_wrong_length_gives_an_empty_image() {
    let mut img = RgbImage::filled(4, 4, WHITE);
    img.rgb.pop();
    let out = canny(&img, CannyThresholds::default());
    assert_eq!((out.width, out.height, out.rgb.len()), (0, 0, 0));
    let huge = RgbImage {
        width: u32::MAX,
        height: u32::MAX,
        rgb: vec![0; 3],
    };
    assert_eq!(canny(&huge, CannyThresholds::default()).rgb.len(), 0);
}

#[test]
fn the_output_is_pure_black_and_white() {
    let out = canny(&noise(64, 48, 1), CannyThresholds::default());
    assert!(out.rgb.chunks_exact(3).all(|p| p == WHITE || p == BLACK));
    let edges = edge_count(&out);
    assert!(edges > 0 && edges < 64 * 48, "{edges} edge pixels");
}

/// Luma as OpenCV's `cvtColor(img, COLOR_RGB2GRAY)` rounds it (14-bit fixed point).
fn luma(p: [u8; 3]) -> u8 {
    let y = 4899 * u32::from(p[0]) + 9617 * u32::from(p[1]) + 1868 * u32::from(p[2]);
    ((y + (1 << 13)) >> 14) as u8
}

#[test]
fn an_edge_between_colours_of_equal_luma_is_found() {
    // Pure red against colours of the same luma (76): no edge in the luma, but the red channel
    // steps by 179 or 255, well above the high threshold.
    const RED: [u8; 3] = [255, 0, 0];
    for other in [[76, 76, 76], [0, 110, 101]] {
        assert_eq!(luma(RED), luma(other), "{other:?}");
        for (left, right) in [(RED, other), (other, RED)] {
            let img = image(12, 6, |x, _| if x < 6 { left } else { right });
            let out = canny(&img, CannyThresholds::default());
            // One straight edge, on the last column before the step.
            assert_eq!(edge_count(&out), 6, "{left:?} | {right:?}");
            assert!((0..6).all(|y| edge(&out, 5, y)), "{left:?} | {right:?}");
        }
    }
}

#[test]
fn the_strongest_channel_decides_the_magnitude() {
    // Red steps by 35 (magnitude 140, under the high threshold), blue by 60 (240, over it): the
    // blue step alone makes the edge, and with blue flat the red step alone makes none.
    let both = image(20, 8, |x, _| if x >= 10 { [35, 0, 60] } else { BLACK });
    assert_eq!(edge_count(&canny(&both, CannyThresholds::default())), 8);
    let red_only = image(20, 8, |x, _| if x >= 10 { [35, 0, 0] } else { BLACK });
    assert_eq!(edge_count(&canny(&red_only, CannyThresholds::default())), 0);
    // Channel magnitudes are not summed: 140 in each of the three is still 140.
    let all = grey(20, 8, |x, _| if x >= 10 { 35 } else { 0 });
    assert_eq!(edge_count(&canny(&all, CannyThresholds::default())), 0);
}

#[test]
fn a_grey_image_gives_the_edges_of_its_single_channel() {
    // All channels equal: the per-channel maximum is that one channel, so the map is
    // `cv2.Canny` on the grey plane alone, as it was when the gradient was taken on the luma.
    let grey_noise = {
        let n = noise(33, 27, 11);
        grey(33, 27, |x, y| n.rgb[((y * 33 + x) * 3) as usize])
    };
    let square = grey(30, 30, |x, y| {
        if (8..20).contains(&x) && (10..25).contains(&y) {
            200
        } else {
            20
        }
    });
    let ramp = grey(25, 12, |x, y| (x * 10 + y * 7) as u8);
    for (img, low, high) in [
        (grey_noise, 100.0, 200.0),
        (square, 100.0, 200.0),
        (ramp, 50.0, 70.0),
    ] {
        let plane: Vec<i64> = img.rgb.iter().step_by(3).map(|&v| i64::from(v)).collect();
        let single = reference_planes(&[plane], img.width, img.height, low, high);
        let out = canny(&img, thresholds(low, high));
        let got: Vec<bool> = out.rgb.chunks_exact(3).map(|p| p == WHITE).collect();
        assert!(got.contains(&true), "{}x{}", img.width, img.height);
        assert_eq!(got, single, "{}x{}", img.width, img.height);
    }
}

/// The same algorithm written plainly, pixel by pixel from its definition, on the image's R, G
/// and B planes.
fn reference(img: &RgbImage, low: f32, high: f32) -> Vec<bool> {
    let planes: Vec<Vec<i64>> = (0..3)
        .map(|c| {
            img.rgb
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| i64::from(v))
                .collect()
        })
        .collect();
    reference_planes(&planes, img.width, img.height, low, high)
}

/// Canny written plainly on any number of planes (clamped Sobel on each, per pixel the gradient
/// of the first plane with the largest `|gx| + |gy|`, a magnitude of 0 outside, float angles for
/// the sectors, breadth-first hysteresis), to check the row buffers, channel choice, padding and
/// fixed-point sectors of the real one.
fn reference_planes(
    planes: &[Vec<i64>],
    width: u32,
    height: u32,
    low: f32,
    high: f32,
) -> Vec<bool> {
    let (w, h) = (i64::from(width), i64::from(height));
    let sobel = |plane: &[i64], x: i64, y: i64| {
        let at = |x: i64, y: i64| plane[(y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize];
        let gx = at(x + 1, y - 1) + 2 * at(x + 1, y) + at(x + 1, y + 1)
            - at(x - 1, y - 1)
            - 2 * at(x - 1, y)
            - at(x - 1, y + 1);
        let gy = at(x - 1, y + 1) + 2 * at(x, y + 1) + at(x + 1, y + 1)
            - at(x - 1, y - 1)
            - 2 * at(x, y - 1)
            - at(x + 1, y - 1);
        (gx, gy)
    };
    let grad = |x: i64, y: i64| {
        let mut best: Option<(i64, i64)> = None;
        for plane in planes {
            let (gx, gy) = sobel(plane, x, y);
            if best.is_none_or(|(bx, by)| gx.abs() + gy.abs() > bx.abs() + by.abs()) {
                best = Some((gx, gy));
            }
        }
        best.unwrap_or((0, 0))
    };
    let mag = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= w || y >= h {
            return 0;
        }
        let (gx, gy) = grad(x, y);
        gx.abs() + gy.abs()
    };
    let (low, high) = (low.min(high) as f64, low.max(high) as f64);
    let mut state = vec![0u8; (w * h) as usize]; // 0 no, 1 maybe, 2 edge
    for y in 0..h {
        for x in 0..w {
            let m = mag(x, y);
            if (m as f64) <= low {
                continue;
            }
            let (gx, gy) = grad(x, y);
            let angle = (gy.abs() as f64).atan2(gx.abs() as f64).to_degrees();
            let keep = if angle < 22.5 {
                m > mag(x - 1, y) && m >= mag(x + 1, y)
            } else if angle > 67.5 {
                m > mag(x, y - 1) && m >= mag(x, y + 1)
            } else if (gx < 0) != (gy < 0) {
                m > mag(x + 1, y - 1) && m > mag(x - 1, y + 1)
            } else {
                m > mag(x - 1, y - 1) && m > mag(x + 1, y + 1)
            };
            if keep {
                state[(y * w + x) as usize] = if m as f64 > high { 2 } else { 1 };
            }
        }
    }
    let mut queue: std::collections::VecDeque<(i64, i64)> = (0..w * h)
        .filter(|&i| state[i as usize] == 2)
        .map(|i| (i % w, i / w))
        .collect();
    while let Some((x, y)) = queue.pop_front() {
        for (dx, dy) in [
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ] {
            let (nx, ny) = (x + dx, y + dy);
            if nx >= 0 && ny >= 0 && nx < w && ny < h && state[(ny * w + nx) as usize] == 1 {
                state[(ny * w + nx) as usize] = 2;
                queue.push_back((nx, ny));
            }
        }
    }
    state.into_iter().map(|s| s == 2).collect()
}

#[test]
fn it_matches_a_plain_reference_implementation() {
    let smooth = image(40, 30, |x, y| {
        let r = ((x * 7 + y * 3) % 256) as u8;
        [r, (x * y % 256) as u8, ((x + y) * 9 % 256) as u8]
    });
    // Each byte 0 or 64: channels often tie, so the first-of-equals rule is exercised.
    let mut coarse = noise(35, 27, 6);
    for b in &mut coarse.rgb {
        *b &= 0x40;
    }
    let cases = [
        (noise(37, 29, 3), 100.0, 200.0),
        (coarse, 100.0, 200.0),
        (noise(16, 16, 4), 250.0, 500.0),
        (noise(1, 9, 5), 50.0, 150.0),
        (smooth, 20.0, 60.0),
    ];
    for (img, low, high) in cases {
        let out = canny(&img, thresholds(low, high));
        let got: Vec<bool> = out.rgb.chunks_exact(3).map(|p| p == WHITE).collect();
        assert!(
            got.contains(&true),
            "no edges to compare in {}x{}",
            img.width,
            img.height
        );
        assert_eq!(
            got,
            reference(&img, low, high),
            "{}x{}",
            img.width,
            img.height
        );
    }
}
