//! The engine end to end on tiny random-weight models loaded through the registry, as in production.

use pixelfarm_core::{
    ErrorKind, GuidanceScale, JobParams, ModelName, NegativePrompt, Prompt, Renderer, Sampler,
    Seed, StepCount,
};
use pixelfarm_diffusion::registry::layout;
use pixelfarm_diffusion::{DiffusionEngine, ModelEntry, RegistryConfig, tiny};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

struct Fixture {
    _dir: tempfile::TempDir,
    entry: ModelEntry,
}

/// One tiny model for the whole test binary (writing it takes a moment).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let entry = tiny::write_tiny_model(dir.path(), 4).unwrap();
        Fixture { _dir: dir, entry }
    })
}

fn model() -> ModelName {
    ModelName::parse("tiny").unwrap()
}

fn engine_with(entry: ModelEntry) -> DiffusionEngine {
    let cfg = RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: 4,
        fused_batches: false,
        device: Default::default(),
        models: BTreeMap::from([(model(), entry)]),
    };
    DiffusionEngine::new(cfg).unwrap()
}

fn engine() -> &'static DiffusionEngine {
    static E: OnceLock<DiffusionEngine> = OnceLock::new();
    E.get_or_init(|| engine_with(fixture().entry.clone()))
}

fn job(prompt: &str, seed: u64, sampler: Sampler, steps: u32, guidance: f64) -> JobParams {
    JobParams {
        prompt: Prompt::parse(prompt).unwrap(),
        negative_prompt: NegativePrompt::parse("blurry, ugly").unwrap(),
        width: 64,
        height: 64,
        steps: StepCount::parse(steps).unwrap(),
        guidance: GuidanceScale::parse(guidance).unwrap(),
        sampler,
        seed: Seed::parse(seed).unwrap(),
    }
}

#[test]
fn renders_every_sampler_with_the_right_shape_and_phases() {
    let e = engine();
    for sampler in Sampler::ALL {
        let img = e
            .render(&model(), &job("a photo of a cat", 1, sampler, 3, 7.5))
            .unwrap();
        assert_eq!((img.width, img.height), (64, 64));
        assert_eq!(img.rgb.len(), 64 * 64 * 3);
        let distinct: std::collections::BTreeSet<u8> = img.rgb.iter().copied().collect();
        assert!(
            distinct.len() > 8,
            "{sampler}: a flat image ({} values)",
            distinct.len()
        );
        for phase in ["text_encode", "denoise", "vae_decode", "model_load"] {
            assert!(img.phases[phase] >= 0.0, "{sampler}: {phase} missing");
        }
        assert!(img.phases["denoise"] > 0.0);
    }
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let e = engine();
    let a = e
        .render(&model(), &job("a red house", 42, Sampler::EulerA, 3, 7.5))
        .unwrap();
    let b = e
        .render(&model(), &job("a red house", 42, Sampler::EulerA, 3, 7.5))
        .unwrap();
    let c = e
        .render(&model(), &job("a red house", 43, Sampler::EulerA, 3, 7.5))
        .unwrap();
    assert_eq!(a.rgb, b.rgb);
    assert_ne!(a.rgb, c.rgb);
    // A fresh engine (another worker) gives the same bytes.
    let other = engine_with(fixture().entry.clone());
    let d = other
        .render(&model(), &job("a red house", 42, Sampler::EulerA, 3, 7.5))
        .unwrap();
    assert_eq!(a.rgb, d.rgb);
}

#[test]
fn prompt_and_guidance_change_the_image() {
    let e = engine();
    let a = e
        .render(&model(), &job("a red house", 5, Sampler::Ddim, 3, 7.5))
        .unwrap();
    let b = e
        .render(&model(), &job("a blue tree", 5, Sampler::Ddim, 3, 7.5))
        .unwrap();
    let c = e
        .render(&model(), &job("a red house", 5, Sampler::Ddim, 3, 1.0))
        .unwrap();
    assert_ne!(a.rgb, b.rgb);
    assert_ne!(a.rgb, c.rgb);
}

#[test]
fn a_job_gives_the_same_image_alone_or_in_a_micro_batch() {
    let e = engine();
    for sampler in [Sampler::EulerA, Sampler::Dpmpp2m] {
        let jobs = vec![
            job("a photo of a dog", 7, sampler, 3, 7.5),
            job("a green tree in the snow", 8, sampler, 3, 5.0),
            job("a painting of a cat", 9, sampler, 3, 7.5),
            // Incompatible with the others (no guidance): its own group.
            job("a painting of a cat", 9, sampler, 3, 1.0),
        ];
        let batch = e.render_batch(&model(), &jobs);
        assert_eq!(batch.len(), jobs.len());
        for (j, b) in jobs.iter().zip(batch) {
            let alone = e.render(&model(), j).unwrap();
            assert!(
                alone.rgb == b.unwrap().rgb,
                "{sampler}: seed {} differs",
                j.seed
            );
        }
    }
}

#[test]
fn fused_batches_are_equal_up_to_rounding() {
    let mut cfg = engine().config().clone();
    cfg.fused_batches = true;
    let e = DiffusionEngine::new(cfg).unwrap();
    let jobs = vec![
        job("a photo of a dog", 7, Sampler::Euler, 3, 7.5),
        job("a green tree in the snow", 8, Sampler::Euler, 3, 5.0),
        job("a painting of a cat", 9, Sampler::Euler, 3, 7.5),
    ];
    for (j, b) in jobs.iter().zip(e.render_batch(&model(), &jobs)) {
        let (alone, b) = (e.render(&model(), j).unwrap().rgb, b.unwrap().rgb);
        let worst = alone
            .iter()
            .zip(&b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(worst <= 3, "seed {}: a byte differs by {worst}", j.seed);
    }
}

#[test]
fn progress_is_reported_and_cancellation_stops_the_rest() {
    let e = engine();
    let jobs = vec![
        job("a cat", 1, Sampler::Euler, 4, 7.5),
        job("a dog", 2, Sampler::Euler, 4, 7.5),
    ];
    let mut seen = Vec::new();
    let out = e.render_batch_with(&model(), &jobs, &mut |done, total| {
        seen.push((done, total));
        true
    });
    assert!(out.iter().all(|r| r.is_ok()));
    assert_eq!(seen.last(), Some(&(8, 8)));
    let out = e.render_batch_with(&model(), &jobs, &mut |done, _| done < 2);
    for r in out {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Conflict);
    }
}

#[test]
fn identity_is_the_weights_hash_and_unknown_models_are_permanent() {
    let e = engine();
    let id = e.identity(&model()).unwrap();
    assert_eq!(id.renderer, "candle-sd/1");
    assert_eq!(id.device, "cpu");
    assert!(!id.test_pattern);
    assert_eq!(id.id, fixture().entry.weights_id());
    let other = ModelName::parse("nope").unwrap();
    assert_eq!(e.identity(&other).unwrap_err().kind(), ErrorKind::Permanent);
    let r = e.render(&other, &job("a cat", 1, Sampler::Euler, 1, 7.5));
    assert_eq!(r.unwrap_err().kind(), ErrorKind::Permanent);
}

#[test]
fn a_sha256_mismatch_is_refused_permanently_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = match &fixture().entry.source {
        pixelfarm_diffusion::Source::File(p) => p.clone(),
        _ => unreachable!(),
    };
    copy_dir(&src, dir.path());
    let mut entry = fixture().entry.clone();
    entry.source = pixelfarm_diffusion::Source::File(dir.path().to_path_buf());
    // Tamper with the VAE after the registry recorded its hash.
    let vae = dir.path().join(layout::VAE);
    let mut bytes = std::fs::read(&vae).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&vae, bytes).unwrap();
    let e = engine_with(entry);
    let err = e
        .render(&model(), &job("a cat", 1, Sampler::Euler, 1, 7.5))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent);
    let msg = err.to_string();
    assert!(
        msg.contains("sha256 mismatch") && msg.contains("vae/diffusion_pytorch_model.safetensors"),
        "{msg}"
    );
    assert!(msg.contains(&fixture().entry.files[layout::VAE]), "{msg}");
    assert!(e.loaded_models().is_empty());
}

#[test]
fn the_lru_keeps_at_most_max_loaded_models() {
    let entry = fixture().entry.clone();
    let a = ModelName::parse("a").unwrap();
    let b = ModelName::parse("b").unwrap();
    let cfg = RegistryConfig {
        cache_dir: std::env::temp_dir(),
        max_loaded: 1,
        max_batch: 2,
        fused_batches: false,
        device: Default::default(),
        models: BTreeMap::from([(a.clone(), entry.clone()), (b.clone(), entry)]),
    };
    let e = DiffusionEngine::new(cfg).unwrap();
    assert!(e.preload(&a).unwrap() > 0.0);
    assert_eq!(e.preload(&a).unwrap(), 0.0);
    e.preload(&b).unwrap();
    assert_eq!(e.loaded_models(), vec![b]);
    assert_eq!(e.served_models().len(), 2);
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}
