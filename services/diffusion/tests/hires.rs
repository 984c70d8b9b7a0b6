//! The hires fix on a tiny random-weight model loaded through the registry, as in production:
//! the refined size, the exact img2img it is, its upscalers, batching and progress.

use pixelfarm_core::{
    HiresSpec, ImageInput, JobParams, ModelName, RenderControl, Renderer, RgbImage, ScaleFactor,
    StepCount, StepProgress, Strength, Upscaler,
};
use pixelfarm_diffusion::{DiffusionEngine, hires::enlarge, tiny};
use std::sync::OnceLock;

mod common;
mod pixels;
use pixels::mean_abs_diff;

fn model() -> ModelName {
    ModelName::parse("tiny").unwrap()
}

/// One engine over one tiny model for the whole test binary.
fn engine() -> &'static DiffusionEngine {
    static E: OnceLock<(tempfile::TempDir, DiffusionEngine)> = OnceLock::new();
    &E.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let entry = tiny::write_tiny_model(dir.path(), 4).unwrap();
        let e = common::engine_serving(model(), entry, Default::default());
        (dir, e)
    })
    .1
}

fn job(prompt: &str, seed: u64, hires: Option<HiresSpec>) -> JobParams {
    JobParams {
        hires,
        ..common::job_at_64x48(prompt, seed)
    }
}

fn hires(scale: f64, strength: f64, upscaler: Upscaler) -> Option<HiresSpec> {
    Some(HiresSpec {
        scale: ScaleFactor::parse(scale).unwrap(),
        steps: Some(StepCount::parse(6).unwrap()),
        strength: Strength::parse(strength).unwrap(),
        upscaler,
    })
}

#[test]
fn lanczos_hires_is_exactly_img2img_of_the_enlarged_first_pass() {
    let e = engine();
    let spec = hires(1.5, 0.5, Upscaler::Lanczos);
    let out = e.render(&model(), &job("a red house", 3, spec)).unwrap();
    assert_eq!((out.image.width, out.image.height), (96, 72));
    assert_eq!(out.image.rgb.len(), 96 * 72 * 3);

    // The same by hand: the plain render, enlarged, then img2img at the refined size with the
    // refining steps, strength and the job's seed.
    let first = e.render(&model(), &job("a red house", 3, None)).unwrap();
    let enlarged = enlarge(&first.image.rgb, 64, 48, 96, 72);
    let refined = JobParams {
        width: 96,
        height: 72,
        steps: StepCount::parse(6).unwrap(),
        ..job("a red house", 3, None)
    };
    let input = ImageInput {
        init: RgbImage {
            width: 96,
            height: 72,
            rgb: enlarged,
        },
        strength: 0.5,
        mask: None,
    };
    let by_hand = e
        .render_image(
            &model(),
            &refined,
            &input.clone().into(),
            &RenderControl::new(),
        )
        .unwrap();
    assert!(
        out.image.rgb == by_hand.image.rgb,
        "hires differs from its img2img"
    );
}

#[test]
fn strength_zero_keeps_the_enlarged_render_and_more_strength_changes_more() {
    let e = engine();
    let first = e.render(&model(), &job("a cat", 5, None)).unwrap();
    let enlarged = enlarge(&first.image.rgb, 64, 48, 128, 96);
    // At strength 0 no refining step runs: the enlarged render through the VAE, as img2img.
    let kept = e
        .render(
            &model(),
            &job("a cat", 5, hires(2.0, 0.0, Upscaler::Lanczos)),
        )
        .unwrap();
    let round_trip = e.vae_round_trip(&model(), 128, 96, &enlarged).unwrap();
    assert!(
        kept.image.rgb == round_trip,
        "strength 0 is the VAE round trip"
    );
    let change = |strength: f64| {
        let out = e
            .render(
                &model(),
                &job("a cat", 5, hires(2.0, strength, Upscaler::Lanczos)),
            )
            .unwrap();
        mean_abs_diff(&out.image.rgb, &round_trip)
    };
    let (light, full) = (change(0.34), change(1.0));
    assert!(
        0.0 < light && light < full,
        "strength 0.34 moves {light} from the enlarged render, strength 1 {full}"
    );

    for upscaler in [Upscaler::Lanczos, Upscaler::Latent] {
        let j = job("a cat", 5, hires(2.0, 0.6, upscaler));
        let a = e.render(&model(), &j).unwrap();
        let b = e.render(&model(), &j).unwrap();
        assert_eq!((a.image.width, a.image.height), (128, 96), "{upscaler:?}");
        assert!(
            a.image.rgb == b.image.rgb,
            "{upscaler:?}: same job, same bytes"
        );
    }
    let lanczos = e
        .render(
            &model(),
            &job("a cat", 5, hires(2.0, 0.6, Upscaler::Lanczos)),
        )
        .unwrap();
    let latent = e
        .render(
            &model(),
            &job("a cat", 5, hires(2.0, 0.6, Upscaler::Latent)),
        )
        .unwrap();
    assert!(
        lanczos.image.rgb != latent.image.rgb,
        "the upscaler matters"
    );
}

#[test]
fn hires_jobs_give_their_bytes_alone_or_batched_and_report_every_step() {
    let e = engine();
    let spec = hires(1.5, 0.5, Upscaler::Lanczos);
    let jobs = vec![
        job("a dog", 1, spec),
        job("a tree", 2, spec),
        // Without the hires fix: a group of its own.
        job("a dog", 1, None),
    ];
    let controls: Vec<RenderControl> = jobs.iter().map(|_| RenderControl::new()).collect();
    let batch = e.render_batch(&model(), &jobs, &controls);
    for (j, b) in jobs.iter().zip(batch) {
        let alone = e.render(&model(), j).unwrap();
        assert!(
            alone.image.rgb == b.unwrap().image.rgb,
            "seed {} differs",
            j.seed
        );
    }
    // 4 first-pass steps, then half of the 6 refining ones.
    for c in &controls[..2] {
        assert_eq!(c.progress(), Some(StepProgress { done: 7, total: 7 }));
    }
    assert_eq!(
        controls[2].progress(),
        Some(StepProgress { done: 4, total: 4 })
    );
}

#[test]
fn img2img_jobs_are_refined_too() {
    let e = engine();
    let input = ImageInput {
        init: RgbImage {
            width: 64,
            height: 48,
            rgb: vec![128; 64 * 48 * 3],
        },
        strength: 0.75,
        mask: None,
    };
    let control = RenderControl::new();
    let out = e
        .render_image(
            &model(),
            &job("a grey wall", 4, hires(1.5, 0.5, Upscaler::Latent)),
            &input.clone().into(),
            &control,
        )
        .unwrap();
    assert_eq!((out.image.width, out.image.height), (96, 72));
    assert_eq!(control.progress(), Some(StepProgress { done: 6, total: 6 }));
}
