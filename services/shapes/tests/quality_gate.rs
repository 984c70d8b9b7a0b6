//! The quality gate on the shipped weights, rendered through the production engine
//! (registry with pinned sha256, sampler, guidance, job seeds) at the default steps and graded by
//! the analytic checker, on fixed seen and held-out prompts × seeds.
//!
//! - `shipped_model_passes_the_quality_gate`: the gate's thresholds, ≥ 90 % of seen and ≥ 70 % of
//!   held-out images match in shape, colour and background (measured 36/36 and 20/24; the table is
//!   in `models/shapes/MODEL_CARD.md`; `--nocapture` prints it); then, on the same images (they
//!   take most of a minute to render, so once), what the model reaches per check — backgrounds,
//!   shape colours, each shape, as measured with a margin — plus seeds that reach
//!   the noise and a checker that rejects wrong captions, so a broken sampler, guidance or seed
//!   path fails CI even where the gate's totals would still pass.
//! - `same_job_gives_same_bytes_and_guidance_reaches_the_pixels` (active).

use pixelfarm_core::{ModelName, Renderer};
use pixelfarm_diffusion::DiffusionEngine;
use pixelfarm_shapes::checker::{Verdict, check};
use pixelfarm_shapes::data::{Attributes, Color, Shape};
use pixelfarm_shapes::eval::{
    Accuracy, GATE_SEEDS, Graded, RenderSettings, gate_prompts, grade, job, renoise,
};
use pixelfarm_shapes::{MODEL_NAME, shipped_registry};
use std::path::Path;

fn engine() -> (DiffusionEngine, ModelName) {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let cfg = shipped_registry(&models).expect("the shipped registry");
    (
        DiffusionEngine::new(cfg).expect("an engine"),
        ModelName::parse(MODEL_NAME).unwrap(),
    )
}

/// The gate prompts × seeds at the shipped defaults, graded, with the table printed.
fn gate_run() -> Vec<Graded> {
    let (engine, model) = engine();
    let (seen, held) = gate_prompts();
    let prompts: Vec<Attributes> = seen.into_iter().chain(held).collect();
    let graded = grade(
        &engine,
        &model,
        &prompts,
        &GATE_SEEDS,
        RenderSettings::default(),
    )
    .unwrap();
    for g in &graded {
        println!(
            "{:5} {:8} seed {} {:?} {:?}",
            g.verdict.matches(),
            if g.attrs.held_out() {
                "held-out"
            } else {
                "seen"
            },
            g.seed,
            g.attrs.caption(),
            g.verdict
        );
    }
    let rate = |f: fn(&Verdict) -> bool| {
        let a = Accuracy::of(&graded, f);
        format!(
            "seen {}/{} ({:.1} %), held-out {}/{} ({:.1} %)",
            a.seen.0,
            a.seen.1,
            100.0 * a.seen_rate(),
            a.held_out.0,
            a.held_out.1,
            100.0 * a.held_out_rate()
        )
    };
    println!("all:        {}", rate(Verdict::matches));
    println!("background: {}", rate(|v| v.background_ok));
    println!("colour:     {}", rate(|v| v.color_ok));
    println!("shape:      {}", rate(|v| v.shape_ok));
    graded
}

#[test]
fn shipped_model_passes_the_quality_gate() {
    let graded = gate_run();
    let acc = Accuracy::of(&graded, Verdict::matches);
    assert!(acc.seen_rate() >= 0.9, "seen combinations: {acc:?}");
    assert!(acc.held_out_rate() >= 0.7, "held-out combinations: {acc:?}");
    holds_its_measured_accuracy(&graded);
}

/// What the gate images show beyond the gate's two totals.
fn holds_its_measured_accuracy(graded: &[Graded]) {
    // What the shipped weights reach (see MODEL_CARD.md): a broken sampler or seed path gives noise
    // or flat images, which fail the background or colour check.
    let bg = Accuracy::of(graded, |v| v.background_ok);
    assert!(
        bg.seen_rate() >= 0.9 && bg.held_out_rate() >= 0.9,
        "backgrounds: {bg:?}"
    );
    let color = Accuracy::of(graded, |v| v.background_ok && v.color_ok);
    assert!(
        color.seen_rate() >= 0.9 && color.held_out_rate() >= 0.9,
        "background and shape colour: {color:?}"
    );

    // Each shape comes out as asked about as often as measured (circles 18/21, triangles 18/18,
    // squares 20/21): a regression in training, sampler or guidance shows here before anyone reads
    // a contact sheet.
    let shape_rate = |shape: Shape| {
        let of: Vec<&Graded> = graded.iter().filter(|g| g.attrs.shape == shape).collect();
        of.iter().filter(|g| g.verdict.matches()).count() as f64 / of.len() as f64
    };
    assert!(shape_rate(Shape::Circle) >= 0.8, "circles");
    assert!(shape_rate(Shape::Triangle) >= 0.9, "triangles");
    assert!(shape_rate(Shape::Square) >= 0.85, "squares");

    // Negative control: the same images graded against a caption with another shape colour match
    // rarely, so the checker is not passing anything.
    let wrong = graded
        .iter()
        .filter(|g| {
            let other = Color::ALL
                .into_iter()
                .find(|c| *c != g.attrs.color && *c != g.attrs.background)
                .unwrap();
            let v = check(
                &g.image.rgb,
                &Attributes {
                    color: other,
                    ..g.attrs
                },
            );
            v.background_ok && v.color_ok
        })
        .count();
    assert!(
        wrong * 10 < graded.len(),
        "{wrong} images match a wrong colour"
    );

    // The seed reaches the noise: seeds of one prompt give different images.
    for same_prompt in graded.chunks(GATE_SEEDS.len()) {
        assert_ne!(
            same_prompt[0].image.rgb,
            same_prompt[1].image.rgb,
            "{}",
            same_prompt[0].attrs.caption()
        );
    }
}

#[test]
fn same_job_gives_same_bytes_and_guidance_reaches_the_pixels() {
    let (engine, model) = engine();
    let a = Attributes::parse("a large yellow triangle on a blue background").unwrap();
    let s = RenderSettings::default();
    let first = engine.render(&model, &job(&a, 9, s).unwrap()).unwrap();
    let again = engine.render(&model, &job(&a, 9, s).unwrap()).unwrap();
    assert_eq!(first.image.rgb, again.image.rgb);
    let unguided = RenderSettings { guidance: 1.0, ..s };
    let other = engine
        .render(&model, &job(&a, 9, unguided).unwrap())
        .unwrap();
    assert_ne!(
        first.image.rgb, other.image.rgb,
        "guidance does not change the image"
    );
}

/// `renoise`, the low-noise diagnostic of the model card: at strength 0 the clean squares come
/// back as they went in; from strength 0.1 (3 of 30 steps) the shipped model keeps nearly all
/// (measured 97/100 with two placements per combination, 48/50 with one).
#[test]
fn renoised_clean_squares_stay_squares_at_low_noise() {
    let (engine, model) = engine();
    let rows = renoise(
        &engine,
        &model,
        Shape::Square,
        1,
        &[0.0, 0.1],
        RenderSettings::default(),
    )
    .unwrap();
    assert_eq!((rows[0].matched, rows[0].total), (50, 50), "{rows:?}");
    assert!(rows[1].matched >= 45, "{rows:?}");
}
