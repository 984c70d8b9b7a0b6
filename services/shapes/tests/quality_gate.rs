//! The quality gate (issue 4): the shipped weights, rendered through the production engine
//! (registry with pinned sha256, sampler, guidance, job seeds) at the default steps, must draw what
//! the prompt asks for — graded by the analytic checker — for ≥ 90 % of seen combinations and
//! ≥ 70 % of held-out ones. Reproduce the table with
//! `cargo test -p pixelfarm-shapes --test quality_gate -- --nocapture`.

use pixelfarm_core::{ModelName, Renderer};
use pixelfarm_diffusion::DiffusionEngine;
use pixelfarm_shapes::checker::{Verdict, check};
use pixelfarm_shapes::data::{Attributes, Color};
use pixelfarm_shapes::eval::{Accuracy, GATE_SEEDS, RenderSettings, gate_prompts, grade, job};
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

#[test]
#[ignore = "interim: the trained weights are not in models/shapes yet"]
fn shipped_model_passes_the_quality_gate() {
    let (engine, model) = engine();
    let (seen, held) = gate_prompts();
    let prompts: Vec<Attributes> = seen.into_iter().chain(held).collect();
    let settings = RenderSettings::default();
    let graded = grade(&engine, &model, &prompts, &GATE_SEEDS, settings).unwrap();
    for g in &graded {
        println!(
            "{:5} {:8} seed {} {:?}",
            g.verdict.matches(),
            if g.attrs.held_out() {
                "held-out"
            } else {
                "seen"
            },
            g.seed,
            g.attrs.caption()
        );
    }
    let acc = Accuracy::of(&graded, Verdict::matches);
    println!(
        "seen {}/{} = {:.1} %, held-out {}/{} = {:.1} %",
        acc.seen.0,
        acc.seen.1,
        100.0 * acc.seen_rate(),
        acc.held_out.0,
        acc.held_out.1,
        100.0 * acc.held_out_rate()
    );
    assert!(acc.seen_rate() >= 0.9, "seen combinations: {acc:?}");
    assert!(acc.held_out_rate() >= 0.7, "held-out combinations: {acc:?}");

    // Negative control: the same images graded against a caption with another shape colour match
    // rarely, so the checker is not passing anything.
    let wrong = graded
        .iter()
        .filter(|g| {
            let other = Color::ALL
                .into_iter()
                .find(|c| *c != g.attrs.color && *c != g.attrs.background)
                .unwrap();
            check(
                &g.image.rgb,
                &Attributes {
                    color: other,
                    ..g.attrs
                },
            )
            .matches()
        })
        .count();
    assert!(
        wrong * 10 < graded.len(),
        "{wrong} images match a wrong caption"
    );

    // The seed reaches the noise: seeds of one prompt give different images.
    for pair in graded.chunks(GATE_SEEDS.len()) {
        assert_ne!(
            pair[0].image.rgb,
            pair[1].image.rgb,
            "{}",
            pair[0].attrs.caption()
        );
    }
}

#[test]
#[ignore = "interim: the trained weights are not in models/shapes yet"]
fn same_job_gives_same_bytes_and_guidance_reaches_the_pixels() {
    let (engine, model) = engine();
    let a = Attributes::parse("a large yellow triangle on a blue background").unwrap();
    let s = RenderSettings::default();
    let first = engine.render(&model, &job(&a, 9, s).unwrap()).unwrap();
    let again = engine.render(&model, &job(&a, 9, s).unwrap()).unwrap();
    assert_eq!(first.rgb, again.rgb);
    let unguided = RenderSettings { guidance: 1.0, ..s };
    let other = engine
        .render(&model, &job(&a, 9, unguided).unwrap())
        .unwrap();
    assert_ne!(first.rgb, other.rgb, "guidance does not change the image");
}
