//! LoRAs on tiny random-weight models loaded through the registry, as in production: both file
//! layouts, weights that add up, weight 0, micro-batches of mixed sets, the SDXL names, and the
//! files that are refused.

use pixelfarm_core::{
    ErrorKind, JobParams, LoraSpec, LoraWeight, Loras, ModelName, RenderControl, Renderer,
    StepCount,
};
use pixelfarm_diffusion::tiny_lora::{LoraLayout, write_random_lora};
use pixelfarm_diffusion::{AdapterEntry, DiffusionEngine, Family, tiny};
use std::path::Path;
use std::sync::OnceLock;

mod common;

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

/// An engine serving `entry` as `model`, with `loras`.
fn engine_with(
    model: &str,
    entry: pixelfarm_diffusion::ModelEntry,
    loras: Vec<(&str, AdapterEntry)>,
) -> DiffusionEngine {
    let loras = loras.into_iter().map(|(n, e)| (name(n), e)).collect();
    common::engine_serving(name(model), entry, loras)
}

/// The tiny model with the same random LoRA written in both layouts (`kohya`, `peft`) and a
/// second one (`other`), for the whole test binary.
fn tiny_engine() -> &'static DiffusionEngine {
    static E: OnceLock<(tempfile::TempDir, DiffusionEngine)> = OnceLock::new();
    &E.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        let entry = tiny::write_tiny_model(&model, 4).unwrap();
        let lora = |file: &str, layout, seed| {
            write_random_lora(
                &model,
                Family::Tiny,
                &dir.path().join(file),
                layout,
                4,
                seed,
            )
            .unwrap()
        };
        let loras = vec![
            ("kohya", lora("kohya.safetensors", LoraLayout::Kohya, 7)),
            ("peft", lora("peft.safetensors", LoraLayout::Peft, 7)),
            ("other", lora("other.safetensors", LoraLayout::Kohya, 8)),
        ];
        let e = engine_with("tiny", entry, loras);
        (dir, e)
    })
    .1
}

fn loras(set: &[(&str, f64)]) -> Loras {
    Loras::new(
        set.iter()
            .map(|(n, w)| LoraSpec {
                name: name(n),
                weight: LoraWeight::parse(*w).unwrap(),
            })
            .collect(),
    )
    .unwrap()
}

fn job(seed: u64, set: &[(&str, f64)]) -> JobParams {
    JobParams {
        steps: StepCount::parse(3).unwrap(),
        loras: loras(set),
        ..common::job_at_64x48("a red house", seed)
    }
}

fn pixels(e: &DiffusionEngine, model: &str, job: &JobParams) -> Vec<u8> {
    e.render(&name(model), job).unwrap().image.rgb
}

#[test]
fn both_layouts_make_the_same_pixels_and_weights_add_up() {
    let e = tiny_engine();
    let base = pixels(e, "tiny", &job(1, &[]));
    let kohya = pixels(e, "tiny", &job(1, &[("kohya", 1.0)]));
    assert_ne!(base, kohya, "the LoRA changes the image");
    assert_eq!(kohya, pixels(e, "tiny", &job(1, &[("peft", 1.0)])));
    // Every scale here is a power of two, so the halves add up to the whole exactly.
    assert_eq!(
        kohya,
        pixels(e, "tiny", &job(1, &[("kohya", 0.5), ("peft", 0.5)]))
    );
    assert_ne!(kohya, pixels(e, "tiny", &job(1, &[("kohya", 0.5)])));
    // At weight 0 a LoRA leaves the model as it is: the base model's bytes.
    assert_eq!(base, pixels(e, "tiny", &job(1, &[("kohya", 0.0)])));
    assert_eq!(
        kohya,
        pixels(e, "tiny", &job(1, &[("peft", 1.0), ("other", 0.0)]))
    );
}

#[test]
fn a_job_renders_the_same_alone_and_in_a_batch_of_mixed_sets() {
    let e = tiny_engine();
    let jobs = vec![
        job(11, &[("kohya", 1.0)]),
        job(12, &[]),
        job(13, &[("other", 0.7)]),
        job(14, &[("kohya", 1.0)]),
        job(15, &[("other", 0.7), ("kohya", -0.5)]),
    ];
    let controls: Vec<RenderControl> = jobs.iter().map(|_| RenderControl::new()).collect();
    let batched = e.render_batch(&name("tiny"), &jobs, &controls);
    for (job, got) in jobs.iter().zip(batched) {
        assert_eq!(got.unwrap().image.rgb, pixels(e, "tiny", job));
    }
}

#[test]
fn the_renderer_names_each_lora_with_its_sha256() {
    let e = tiny_engine();
    let applied = e
        .loras(&name("tiny"), &loras(&[("peft", 0.5), ("kohya", 1.0)]))
        .unwrap();
    let names: Vec<(&str, f64)> = applied
        .iter()
        .map(|l| (l.name.as_str(), l.weight.get()))
        .collect();
    assert_eq!(names, [("peft", 0.5), ("kohya", 1.0)]);
    assert_eq!(applied[1].sha256, e.config().loras[&name("kohya")].sha256);
    assert_ne!(applied[0].sha256, applied[1].sha256);
    let err = e
        .loras(&name("tiny"), &loras(&[("nope", 1.0)]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("unknown LoRA `nope`"), "{err}");
}

/// The file at `path` registered as a LoRA of the tiny family, with its sha256 as it is now.
fn tiny_lora_at(path: &Path) -> AdapterEntry {
    AdapterEntry {
        family: Family::Tiny,
        source: pixelfarm_diffusion::Source::File(path.to_path_buf()),
        sha256: pixelfarm_diffusion::registry::sha256_file(path).unwrap(),
    }
}

/// `job` rendered by an engine whose `bad` LoRA is `entry`: the error.
fn refused(model_dir: &Path, entry: AdapterEntry) -> pixelfarm_core::Error {
    let model = tiny::write_tiny_model(model_dir, 4).unwrap();
    let e = engine_with("tiny", model, vec![("bad", entry)]);
    e.render(&name("tiny"), &job(1, &[("bad", 1.0)]))
        .unwrap_err()
}

#[test]
fn tampered_foreign_and_malformed_files_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    tiny::write_tiny_model(&model, 4).unwrap();
    let path = dir.path().join("lora.safetensors");
    let entry = write_random_lora(&model, Family::Tiny, &path, LoraLayout::Kohya, 2, 1).unwrap();

    // One byte changed after it was registered.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = refused(&model, entry.clone());
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(
        e.to_string().contains("LoRA `bad`") && e.to_string().contains("sha256 mismatch"),
        "{e}"
    );

    // Registered for another family.
    let e = refused(
        &model,
        AdapterEntry {
            family: Family::TinyXl,
            ..entry.clone()
        },
    );
    assert!(e.to_string().contains("is for family `tiny-xl`"), "{e}");

    // A model file registered as a LoRA: its tensors are no LoRA parts.
    let unet = model.join(pixelfarm_diffusion::registry::layout::UNET);
    let e = refused(&model, tiny_lora_at(&unet));
    assert_eq!(e.kind(), ErrorKind::Permanent);
    assert!(
        e.to_string().contains("LoRA `bad`") && e.to_string().contains("is not a LoRA part"),
        "{e}"
    );

    // A LoRA of a layer the model does not have (made for a bigger model, say).
    let stray = dir.path().join("stray.safetensors");
    let t = |shape: &[usize]| {
        candle_core::Tensor::zeros(shape, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap()
    };
    let tensors = std::collections::HashMap::from([
        (
            "lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight".to_string(),
            t(&[2, 8]),
        ),
        (
            "lora_unet_down_blocks_9_attentions_0_proj_in.lora_up.weight".to_string(),
            t(&[8, 2]),
        ),
    ]);
    candle_core::safetensors::save(&tensors, &stray).unwrap();
    let e = refused(&model, tiny_lora_at(&stray));
    assert!(
        e.to_string()
            .contains("layer `lora_unet_down_blocks_9_attentions_0_proj_in` names no layer"),
        "{e}"
    );
}

#[test]
fn sdxl_loras_under_sd_scripts_names_match_the_diffusers_layout() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let entry = tiny::write_tiny_xl_model(&model).unwrap();
    let lora = |file: &str, layout| {
        write_random_lora(&model, Family::TinyXl, &dir.path().join(file), layout, 4, 3).unwrap()
    };
    let kohya = lora("kohya.safetensors", LoraLayout::Kohya);
    // The kohya file names SDXL's UNet as sd-scripts does, and both text encoders.
    let names = candle_core::safetensors::load(kohya_path(&kohya), &candle_core::Device::Cpu)
        .unwrap()
        .into_keys()
        .collect::<Vec<_>>();
    for prefix in ["lora_unet_input_blocks_", "lora_te1_", "lora_te2_"] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "{prefix}: {names:?}"
        );
    }
    let e = engine_with(
        "xl",
        entry,
        vec![
            ("kohya", kohya),
            ("peft", lora("peft.safetensors", LoraLayout::Peft)),
        ],
    );
    let base = pixels(&e, "xl", &job(5, &[]));
    let k = pixels(&e, "xl", &job(5, &[("kohya", 1.0)]));
    assert_ne!(base, k);
    assert_eq!(k, pixels(&e, "xl", &job(5, &[("peft", 1.0)])));
}

fn kohya_path(entry: &AdapterEntry) -> std::path::PathBuf {
    match &entry.source {
        pixelfarm_diffusion::Source::File(p) => p.clone(),
        other => panic!("a written LoRA is a local file, not {other}"),
    }
}
