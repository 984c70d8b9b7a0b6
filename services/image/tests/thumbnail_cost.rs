//! What a thumbnail adds to a job's encode: its time against the PNG encode of the same image, in
//! the same run. A measurement, run by hand (release, so the encoders run as in production):
//!
//! cargo test --release -p pixelfarm-image --test thumbnail_cost -- --ignored --nocapture

use pixelfarm_core::{OutputSpec, RgbImage};
use pixelfarm_image::PngMetadata;
use pixelfarm_image::output::{encode, thumbnail};
use std::time::Instant;

/// A render-like picture: smooth gradients with a little deterministic noise.
fn picture(side: u32) -> RgbImage {
    let mut rgb = Vec::with_capacity((side * side * 3) as usize);
    let mut state = 0x2545_f491_u32;
    for y in 0..side {
        for x in 0..side {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state % 9) as i32 - 4;
            let base = [x * 255 / side, y * 255 / side, (x + y) * 127 / side];
            rgb.extend(base.map(|v| (v as i32 + noise).clamp(0, 255) as u8));
        }
    }
    RgbImage {
        width: side,
        height: side,
        rgb,
    }
}

/// Median seconds of `rounds` calls of `f`.
fn median(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..rounds)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[rounds / 2]
}

#[test]
#[ignore = "a measurement; run by hand"]
fn thumbnail_against_the_png_encode() {
    let meta = PngMetadata {
        parameters: "a test picture".into(),
        provenance_json: "{}".into(),
    };
    println!(
        "| side | PNG encode ms | PNG KiB | thumbnail ms | thumbnail KiB | thumbnail / PNG time |"
    );
    println!("|---|---|---|---|---|---|");
    for side in [512, 1024, 2048] {
        let img = picture(side);
        let png = encode(&img, &OutputSpec::default(), &meta).unwrap();
        let thumb = thumbnail(&img).unwrap().unwrap();
        let rounds = 15;
        let png_s = median(rounds, || {
            encode(&img, &OutputSpec::default(), &meta).unwrap();
        });
        let thumb_s = median(rounds, || {
            thumbnail(&img).unwrap();
        });
        println!(
            "| {side} | {:.1} | {} | {:.1} | {:.1} | {:.2} |",
            png_s * 1e3,
            png.len() / 1024,
            thumb_s * 1e3,
            thumb.len() as f64 / 1024.0,
            thumb_s / png_s
        );
    }
}
