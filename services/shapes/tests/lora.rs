//! The shipped LoRA (`models/shapes/loras/purple.safetensors`, trained by `pixelfarm-train-shapes
//! lora` on a colour the base model never saw), served by the production engine through the
//! shipped registry (sha256 pinned in `models/shapes/loras.yaml`) and graded by the analytic
//! checker:
//!
//! - `the_shipped_lora_teaches_purple_and_keeps_the_rest`: every purple combination × one seed
//!   matches far more often with the LoRA than without, and the gate's prompts still match with it
//!   (figures in `models/shapes/MODEL_CARD.md`, "LoRA"; `--nocapture` prints them).
//! - `the_lora_at_weight_0_gives_the_base_models_bytes`.
//! - `the_shipped_files_are_pinned`: the tokenizer is the vocabulary's, and `registry.yaml` /
//!   `loras.yaml` pin every shipped file's sha256 (`UPDATE_SHAPES_FILES=1` rewrites them).

use pixelfarm_core::{ModelName, Renderer};
use pixelfarm_diffusion::DiffusionEngine;
use pixelfarm_diffusion::registry::layout;
use pixelfarm_shapes::data::{Attributes, Color};
use pixelfarm_shapes::eval::{Accuracy, RenderSettings, gate_prompts, grade, job};
use pixelfarm_shapes::export::{
    LORAS_SNIPPET, MODEL_DIR, REGISTRY_SNIPPET, loras_snippet, registry_snippet,
};
use pixelfarm_shapes::{MODEL_NAME, shipped_registry};
use std::path::{Path, PathBuf};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

fn engine() -> (DiffusionEngine, ModelName) {
    let cfg = shipped_registry(&models()).expect("the shipped registry");
    assert!(
        cfg.loras.keys().any(|n| n.as_str() == "purple"),
        "{:?}",
        cfg.loras.keys().collect::<Vec<_>>()
    );
    (
        DiffusionEngine::new(cfg).expect("an engine"),
        ModelName::parse(MODEL_NAME).unwrap(),
    )
}

fn with_lora(weight: f64) -> RenderSettings {
    RenderSettings {
        lora: Some(weight),
        ..RenderSettings::default()
    }
}

#[test]
fn the_shipped_lora_teaches_purple_and_keeps_the_rest() {
    let (engine, model) = engine();
    let purple = Attributes::with_color(Color::Purple);
    let rate = |s: RenderSettings, prompts: &[Attributes]| {
        let graded = grade(&engine, &model, prompts, &[1], s).unwrap();
        let a = Accuracy::of(&graded, |v| v.matches());
        (a.seen.0 + a.held_out.0, a.seen.1 + a.held_out.1)
    };
    let base = rate(RenderSettings::default(), &purple);
    let taught = rate(with_lora(1.0), &purple);
    let (seen, held) = gate_prompts();
    let gate: Vec<Attributes> = seen.into_iter().chain(held).collect();
    let kept = rate(with_lora(1.0), &gate);
    println!("purple without the LoRA {base:?}, with it {taught:?}; gate prompts with it {kept:?}");
    assert_eq!(base.1, 72);
    assert!(base.0 <= 7, "the base model draws purple {base:?}");
    assert!(taught.0 >= 50, "the LoRA draws purple only {taught:?}");
    assert!(kept.0 >= 16, "the LoRA broke the base prompts: {kept:?}");
}

#[test]
fn the_lora_at_weight_0_gives_the_base_models_bytes() {
    let (engine, model) = engine();
    let a = Attributes::parse("a large purple square on a white background").unwrap();
    let render = |s: RenderSettings| {
        engine
            .render(&model, &job(&a, 4, s).unwrap())
            .unwrap()
            .image
            .rgb
    };
    let base = render(RenderSettings::default());
    assert_eq!(render(with_lora(0.0)), base);
    assert_ne!(render(with_lora(1.0)), base);
}

#[test]
fn the_shipped_files_are_pinned() {
    let dir = models().join(MODEL_DIR);
    let update = std::env::var_os("UPDATE_SHAPES_FILES").is_some();
    // In this order: the snippets pin the sha256 of the files written before them.
    type Make<'a> = Box<dyn Fn() -> String + 'a>;
    let files: [(&str, Make); 3] = [
        (
            layout::TOKENIZER,
            Box::new(|| {
                pixelfarm_shapes::vocab::tokenizer()
                    .to_string(true)
                    .unwrap()
            }),
        ),
        (
            REGISTRY_SNIPPET,
            Box::new(|| registry_snippet(&dir).unwrap()),
        ),
        (LORAS_SNIPPET, Box::new(|| loras_snippet(&dir).unwrap())),
    ];
    for (rel, make) in files {
        let (want, path) = (make(), dir.join(rel));
        if update {
            std::fs::write(&path, &want).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            want,
            "`{rel}` is stale: run with UPDATE_SHAPES_FILES=1"
        );
    }
}
