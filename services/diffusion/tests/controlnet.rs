//! ControlNets on the tiny random-weight model, loaded through the registry as in production:
//! a weight of 0 and a window that misses every step change nothing, residuals of several
//! ControlNets add up, the image steers the render, img2img and the hires fix take them, and
//! the files and jobs that cannot be rendered are refused by name.

use pixelfarm_core::{
    Controls, ErrorKind, ImageInput, JobInputs, JobParams, ModelName, RenderControl, RenderedImage,
    Renderer, RgbImage,
};
use pixelfarm_diffusion::{AdapterEntry, DiffusionEngine, Family, tiny};
use std::collections::BTreeMap;
use std::sync::OnceLock;

mod common;
mod pixels;

fn name(s: &str) -> ModelName {
    ModelName::parse(s).unwrap()
}

/// The tiny model with two random ControlNets (`edges`, `depth`) and one whose file does not
/// match its sha256 (`tampered`), for the whole test binary.
fn engine() -> &'static DiffusionEngine {
    static E: OnceLock<(tempfile::TempDir, DiffusionEngine)> = OnceLock::new();
    &E.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let entry = tiny::write_tiny_model(&dir.path().join("model"), 4).unwrap();
        let net = |file: &str, seed| {
            tiny::write_random_controlnet(&dir.path().join(file), Family::Tiny, seed).unwrap()
        };
        let mut tampered = net("tampered.safetensors", 9);
        tampered.sha256 = "0".repeat(64);
        let nets: BTreeMap<ModelName, AdapterEntry> = [
            ("edges", net("edges.safetensors", 3)),
            ("depth", net("depth.safetensors", 4)),
            ("tampered", tampered),
        ]
        .into_iter()
        .map(|(n, e)| (name(n), e))
        .collect();
        let e = common::engine_with_adapters(name("tiny"), entry, BTreeMap::new(), nets);
        (dir, e)
    })
    .1
}

fn job(control: &str) -> JobParams {
    JobParams {
        control: controls(control),
        ..common::job_at_64x48("a red house", 11)
    }
}

/// `control` as a manifest writes it (YAML flow), every image key `k`.
fn controls(yaml: &str) -> Controls {
    serde_yaml::from_str(if yaml.is_empty() { "[]" } else { yaml }).unwrap()
}

/// A control image: a white box on black, `w x h`, the box at `x`.
fn boxed(w: u32, h: u32, x: u32) -> RgbImage {
    let mut img = RgbImage::filled(w, h, [0, 0, 0]);
    for yy in h / 4..h * 3 / 4 {
        for xx in x..(x + w / 3).min(w) {
            img.put(xx, yy, [255, 255, 255]);
        }
    }
    img
}

fn render(params: &JobParams, images: Vec<RgbImage>) -> pixelfarm_core::Result<RenderedImage> {
    let inputs = JobInputs {
        init: None,
        control: images,
    };
    engine().render_from(&name("tiny"), params, &inputs, &RenderControl::new())
}

fn plain() -> Vec<u8> {
    engine().render(&name("tiny"), &job("")).unwrap().image.rgb
}

#[test]
fn a_controlnet_steers_the_render_and_its_image_decides_how() {
    let one = "[{model: edges, image: {key: k}}]";
    let left = render(&job(one), vec![boxed(64, 48, 0)]).unwrap().image.rgb;
    let right = render(&job(one), vec![boxed(64, 48, 40)])
        .unwrap()
        .image
        .rgb;
    let base = plain();
    assert!(
        pixels::mean_abs_diff(&left, &base) > 1.0,
        "the ControlNet acts"
    );
    // Random weights read the image weakly (a trained ControlNet is made to), but they read it.
    assert_ne!(left, right, "the image decides");
    // A control image of another size is resized to the render's, as init images are.
    let big = render(&job(one), vec![boxed(128, 96, 0)])
        .unwrap()
        .image
        .rgb;
    let (near, far) = (
        pixels::mean_abs_diff(&big, &left),
        pixels::mean_abs_diff(&right, &left),
    );
    assert!(near < far, "{near} {far}");
}

#[test]
fn a_weight_of_zero_or_a_window_without_steps_gives_the_plain_render_bytes() {
    let base = plain();
    for yaml in [
        "[{model: edges, image: {key: k}, weight: 0}]",
        // 4 steps: step 3 ends at 1.0 but starts at 0.75, before 0.9.
        "[{model: edges, image: {key: k}, start: 0.9, end: 1}]",
    ] {
        let out = render(&job(yaml), vec![boxed(64, 48, 0)]).unwrap();
        assert_eq!(out.image.rgb, base, "{yaml}");
    }
    // Acting on part of the schedule is between the two.
    let all = "[{model: edges, image: {key: k}}]";
    let part = "[{model: edges, image: {key: k}, start: 0, end: 0.5}]";
    let all = render(&job(all), vec![boxed(64, 48, 0)]).unwrap().image.rgb;
    let part = render(&job(part), vec![boxed(64, 48, 0)])
        .unwrap()
        .image
        .rgb;
    assert_ne!(part, base);
    assert_ne!(part, all);
}

#[test]
fn residuals_of_several_controlnets_add_up() {
    // The same ControlNet twice at half weight is exactly it once at full weight: each residual
    // is halved exactly and the two halves add back exactly.
    let image = boxed(64, 48, 10);
    let once = "[{model: edges, image: {key: k}}]";
    let twice = "[{model: edges, image: {key: k}, weight: 0.5}, {model: edges, image: {key: k}, weight: 0.5}]";
    let a = render(&job(once), vec![image.clone()]).unwrap().image.rgb;
    let b = render(&job(twice), vec![image.clone(), image.clone()])
        .unwrap()
        .image
        .rgb;
    assert_eq!(a, b);
    // Two different ones: both act.
    let both = "[{model: edges, image: {key: k}}, {model: depth, image: {key: k}}]";
    let c = render(&job(both), vec![image.clone(), image])
        .unwrap()
        .image
        .rgb;
    assert!(pixels::mean_abs_diff(&a, &c) > 1.0);
}

#[test]
fn img2img_and_the_hires_fix_take_controlnets() {
    let one = "[{model: edges, image: {key: k}}]";
    let mut p = job(one);
    let init = ImageInput {
        init: RgbImage::filled(64, 48, [90, 120, 200]),
        strength: 0.75,
        mask: None,
    };
    let inputs = |control| JobInputs {
        init: Some(init.clone()),
        control,
    };
    let e = engine();
    let (m, ctl) = (name("tiny"), RenderControl::new());
    let steered = e.render_from(&m, &p, &inputs(vec![boxed(64, 48, 0)]), &ctl);
    p.control = controls("");
    let plain = e.render_from(&m, &p, &inputs(Vec::new()), &ctl).unwrap();
    let steered = steered.unwrap();
    assert!(pixels::mean_abs_diff(&steered.image.rgb, &plain.image.rgb) > 1.0);

    let mut p = job(one);
    p.hires = serde_yaml::from_str("{scale: 1.5, strength: 0.5}").unwrap();
    let out = render(&p, vec![boxed(64, 48, 0)]).unwrap();
    assert_eq!((out.image.width, out.image.height), (96, 72));
}

#[test]
fn what_cannot_be_rendered_is_refused_naming_it() {
    let refused = |yaml: &str, images: Vec<RgbImage>| {
        let e = render(&job(yaml), images).unwrap_err();
        (e.kind(), e.to_string())
    };
    let (kind, e) = refused("[{model: tampered, image: {key: k}}]", vec![boxed(8, 8, 0)]);
    assert_eq!(kind, ErrorKind::Permanent, "{e}");
    assert!(
        e.contains("ControlNet `tampered`") && e.contains("sha256"),
        "{e}"
    );

    let (kind, e) = refused("[{model: pose, image: {key: k}}]", vec![boxed(8, 8, 0)]);
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(
        e.contains("unknown ControlNet `pose`; this worker has: depth, edges, tampered"),
        "{e}"
    );

    let (kind, e) = refused("[{model: edges, image: {key: k}}]", Vec::new());
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(e.contains("1 ControlNets and 0 control images"), "{e}");

    let empty = RgbImage {
        width: 0,
        height: 0,
        rgb: Vec::new(),
    };
    let (kind, e) = refused(
        "[{model: edges, image: {key: inputs/t/a.png}}]",
        vec![empty],
    );
    assert_eq!(kind, ErrorKind::Permanent);
    assert!(e.contains("control image `inputs/t/a.png` is empty"), "{e}");

    // The provenance's view of them: each ControlNet's file sha256.
    let applied = engine()
        .controlnets(
            &name("tiny"),
            &controls("[{model: edges, image: {key: k}}]"),
        )
        .unwrap();
    assert_eq!(applied[0].name, name("edges"));
    assert_eq!(applied[0].sha256.len(), 64);
}
