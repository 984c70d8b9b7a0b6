//! A shapes model of other widths than the default goes through the same path as the shipped one:
//! exported as a model folder, loaded by the production registry (its architecture read from the
//! weights), rendered by the engine, and imported to resume training — with a clear error when a
//! resumed run asks for other widths.

use candle_core::{Device, Tensor};
use pixelfarm_diffusion::DiffusionEngine;
use pixelfarm_diffusion::shapes_net::ShapesConfig;
use pixelfarm_shapes::data::{Attributes, SIDE};
use pixelfarm_shapes::eval::{RenderSettings, grade};
use pixelfarm_shapes::export::{self, MODEL_DIR};
use pixelfarm_shapes::train::{LossWeighting, Model, RunState, TrainConfig, import, train};
use pixelfarm_shapes::{MODEL_NAME, shipped_registry};
use std::collections::HashMap;

#[test]
fn a_model_of_other_widths_exports_loads_renders_and_resumes() {
    let arch = ShapesConfig::new([16, 24, 48], 40).unwrap();
    let model = Model::new(arch, &Device::Cpu).unwrap();
    let weights: HashMap<String, Tensor> = model
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models").join(MODEL_DIR);
    export::write_model(&weights, &dir).unwrap();
    std::fs::write(
        dir.join(export::REGISTRY_SNIPPET),
        export::registry_snippet(&dir).unwrap(),
    )
    .unwrap();

    let engine =
        DiffusionEngine::new(shipped_registry(&tmp.path().join("models")).unwrap()).unwrap();
    let prompt = Attributes::parse("a small red circle on a blue background").unwrap();
    let settings = RenderSettings {
        steps: 2,
        ..RenderSettings::default()
    };
    let model_name = pixelfarm_core::ModelName::parse(MODEL_NAME).unwrap();
    let graded = grade(&engine, &model_name, &[prompt], &[1], settings).unwrap();
    assert_eq!(graded[0].image.rgb.len(), SIDE * SIDE * 3);

    let run = tmp.path().join("run");
    let state = RunState {
        step: 10,
        seconds: 0.0,
        loss_ema: 0.0,
    };
    import(&dir, &run, &state).unwrap();
    let mut cfg = TrainConfig {
        out_dir: run,
        steps: 11,
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
        arch: ShapesConfig::DEFAULT,
        weighting: LossWeighting::default(),
        device: Device::Cpu,
        data_threads: 1,
    };
    let err = train(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("resume with the widths the run started with"),
        "{err}"
    );
    cfg.arch = arch;
    assert_eq!(train(&cfg).unwrap().step, 11);
}
