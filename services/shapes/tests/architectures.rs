//! A shapes model of other widths than the default goes through the same path as the shipped one:
//! exported as a model folder, loaded by the production registry (its architecture read from the
//! weights), rendered by the engine, and imported to resume training — with a clear error when a
//! resumed run asks for other widths. A refinement head added on import starts as a no-op, trains
//! alone and is served by the same registry entry.

use candle_core::{Device, Tensor};
use pixelfarm_diffusion::DiffusionEngine;
use pixelfarm_diffusion::shapes_net::{Reach, ShapesConfig};
use pixelfarm_shapes::data::{Attributes, SIDE};
use pixelfarm_shapes::eval::{RenderSettings, grade};
use pixelfarm_shapes::export::{self, MODEL_DIR};
use pixelfarm_shapes::train::{
    LossWeighting, Model, RunState, TrainConfig, import, load_ema, train,
};
use pixelfarm_shapes::{MODEL_NAME, shipped_registry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Write `weights` as the model folder `<models>/shapes` with its registry snippet.
fn export_to(weights: &HashMap<String, Tensor>, models: &Path) -> PathBuf {
    let dir = models.join(MODEL_DIR);
    export::write_model(weights, &dir).unwrap();
    std::fs::write(
        dir.join(export::REGISTRY_SNIPPET),
        export::registry_snippet(&dir).unwrap(),
    )
    .unwrap();
    dir
}

/// Render one prompt (2 steps) with the model folder under `models` through the production engine.
fn render(models: &Path) -> Vec<u8> {
    let engine = DiffusionEngine::new(shipped_registry(models).unwrap()).unwrap();
    let prompt = Attributes::parse("a small red circle on a blue background").unwrap();
    let settings = RenderSettings {
        steps: 2,
        ..RenderSettings::default()
    };
    let model_name = pixelfarm_core::ModelName::parse(MODEL_NAME).unwrap();
    let graded = grade(&engine, &model_name, &[prompt], &[1], settings).unwrap();
    let rgb = graded[0].image.rgb.clone();
    assert_eq!(rgb.len(), SIDE * SIDE * 3);
    rgb
}

fn weights_of(model: &Model) -> HashMap<String, Tensor> {
    model
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect()
}

/// Train the run in `run` (imported at step 10) up to `steps`.
fn up_to(steps: usize, run: PathBuf, arch: ShapesConfig, reach: Reach) -> TrainConfig {
    TrainConfig {
        out_dir: run,
        steps,
        batch: 2,
        lr: 1e-3,
        warmup: 1,
        decay_start: None,
        lr_min: 0.0,
        seed: 1,
        ema_decay: 0.9,
        mix: Default::default(),
        checkpoint_every: 1,
        max_seconds: None,
        arch,
        reach,
        weighting: LossWeighting::default(),
        device: Device::Cpu,
        data_threads: 1,
    }
}

const AT_STEP_10: RunState = RunState {
    step: 10,
    seconds: 0.0,
    loss_ema: 0.0,
};

#[test]
fn a_model_of_other_widths_exports_loads_renders_and_resumes() {
    let arch = ShapesConfig::new([16, 24, 48], 40).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    let dir = export_to(
        &weights_of(&Model::new(arch, &Device::Cpu).unwrap()),
        &models,
    );
    render(&models);

    let run = tmp.path().join("run");
    import(&dir, &run, &AT_STEP_10, 0).unwrap();
    let mut cfg = up_to(11, run, ShapesConfig::DEFAULT, Reach::All);
    let err = train(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("resume with the widths the run started with"),
        "{err}"
    );
    cfg.arch = arch;
    assert_eq!(train(&cfg).unwrap().step, 11);
}

#[test]
fn a_refinement_head_imports_as_a_no_op_trains_alone_and_is_served() {
    let arch = ShapesConfig::new([16, 24, 48], 40).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    let dir = export_to(
        &weights_of(&Model::new(arch, &Device::Cpu).unwrap()),
        &plain,
    );
    let before = render(&plain);

    let run = tmp.path().join("run");
    let err = import(&dir, &run, &AT_STEP_10, 12).unwrap_err().to_string();
    assert!(err.contains("a multiple of 8"), "{err}");
    import(&dir, &run, &AT_STEP_10, 8).unwrap();
    let imported = load_ema(&run).unwrap();
    let headed = tmp.path().join("headed");
    export_to(&imported, &headed);
    assert_eq!(render(&headed), before, "a new head changes nothing");

    // Resuming without the head is refused rather than dropping it.
    let err = train(&up_to(11, run.clone(), arch, Reach::Refiner))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("resume with the widths the run started with"),
        "{err}"
    );
    let with_head = arch.with_refine(8).unwrap();
    // Two steps: the first moves only the zeroed last convolution, the second the rest.
    assert_eq!(
        train(&up_to(12, run.clone(), with_head, Reach::Refiner))
            .unwrap()
            .step,
        12
    );
    let trained = load_ema(&run).unwrap();
    let value = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (name, t) in &imported {
        let same = value(t) == value(&trained[name]);
        assert_eq!(same, !name.starts_with("unet.refine."), "{name}");
    }
    let after = tmp.path().join("after");
    export_to(&trained, &after);
    assert_ne!(
        render(&after),
        before,
        "the trained head reaches the pixels"
    );
}
