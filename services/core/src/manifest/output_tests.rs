//! `output` sections through the whole manifest parser: defaults, overrides, and the checks
//! across fields and against the rendered size.

use super::parse_manifest;
use super::tests::{err, job};
use crate::params::*;

#[test]
fn output_settings_reach_every_job_and_jobs_may_override_them() {
    let text = "name: n\nmodel: m\ndefaults:\n  output: {format: jpeg, quality: 80, resize: {width: 300, height: 250}}\njobs:\n  - prompt: a\n  - prompt: b\n    output: {format: webp, sharpen: 0.5, saturation: 1.2}\n";
    let b = parse_manifest(text).unwrap();
    let o = &job(&b, 0).params.output;
    assert_eq!(o.format, ImageFormat::Jpeg);
    assert_eq!(o.quality.map(Quality::get), Some(80));
    let r = o.resize.unwrap();
    assert_eq!(
        (r.width.get(), r.height.get(), r.fit),
        (300, 250, Fit::Cover)
    );
    let o = &job(&b, 1).params.output;
    assert_eq!(
        (o.format, o.quality, o.resize),
        (ImageFormat::Webp, None, None)
    );
    assert_eq!(
        (o.sharpen.get(), o.saturation.get(), o.contrast.get()),
        (0.5, 1.2, 1.0)
    );
    // Without `output`, params serialize as before (output keys of old jobs do not move).
    let plain = parse_manifest("name: n\nmodel: m\nprompt: p\nseeds: [1]\n").unwrap();
    let json = serde_json::to_string(&job(&plain, 0).params).unwrap();
    assert!(!json.contains("output"), "{json}");
}

#[test]
fn bad_output_settings_name_the_field() {
    let base = "name: n\nmodel: m\nprompt: p\nseeds: [1]\ndefaults:\n  output:\n";
    let e = err(&format!("{base}    format: gif\n"));
    assert!(
        e.contains("`defaults.output.format` (line 7)") && e.contains("jpeg"),
        "{e}"
    );
    let e = err(&format!("{base}    format: jpeg\n    quality: 101\n"));
    assert!(
        e.contains("`defaults.output.quality` (line 8)") && e.contains("1 to 100"),
        "{e}"
    );
    let e = err(&format!("{base}    quality: 80\n"));
    assert!(
        e.contains("`defaults.output.quality` (line 7)") && e.contains("png"),
        "{e}"
    );
    let e = err(&format!("{base}    sharpen: -1\n"));
    assert!(
        e.contains("`defaults.output.sharpen`") && e.contains("0 to 4"),
        "{e}"
    );
    let e = err(&format!("{base}    resize: {{width: 0, height: 5}}\n"));
    assert!(
        e.contains("`defaults.output.resize.width`") && e.contains("1 to 8192"),
        "{e}"
    );
    let e = err(&format!(
        "{base}    resize: {{width: 5, height: 5, fit: squash}}\n"
    ));
    assert!(
        e.contains("`defaults.output.resize.fit`") && e.contains("cover"),
        "{e}"
    );
    let e = err("name: n\nmodel: m\njobs:\n  - prompt: a\n    output: {quality: 5}\n");
    assert!(e.contains("`jobs[0].output.quality` (line 5)"), "{e}");
}

#[test]
fn upscale_multiplies_the_rendered_size_and_is_checked_against_it() {
    let text = "name: n\nmodel: m\ndefaults:\n  width: 512\n  height: 256\n  hires: {scale: 2}\n  output: {upscale: 2.5}\nprompt: p\nseeds: [1]\njobs:\n  - {prompt: q, output: {upscale: 1.5}}\n";
    let b = parse_manifest(text).unwrap();
    // The hires fix's 1024x512, times 2.5; the explicit job's own factor.
    assert_eq!(job(&b, 0).params.delivered_size().unwrap(), (2560, 1280));
    assert_eq!(job(&b, 1).params.delivered_size().unwrap(), (1536, 768));
    let e = err(&text.replace("width: 512", "width: 2048"));
    assert!(
        e.contains("`defaults.output.upscale` (line 7)")
            && e.contains("2.5 makes 4096x512 10240x1280"),
        "{e}"
    );
    let e = err(&text.replace(
        "upscale: 1.5",
        "upscale: 1.5, resize: {width: 9, height: 9}",
    ));
    assert!(
        e.contains("`jobs[0].output.upscale`") && e.contains("one of them"),
        "{e}"
    );
    let e = err(&text.replace("upscale: 1.5", "upscale: 1"));
    assert!(
        e.contains("`jobs[0].output.upscale`") && e.contains("above 1 and at most 4"),
        "{e}"
    );
    // Over the largest side: named with the largest factor that fits.
    let e = err(
        "name: n\nmodel: m\njobs:\n  - {prompt: q, width: 4096, height: 64, output: {upscale: 2.01}}\n",
    );
    assert!(
        e.contains("`jobs[0].output.upscale`")
            && e.contains(
                "2.01 makes 4096x64 8233x129; accepted: at most 8192 a side (an upscale up to 2.00"
            ),
        "{e}"
    );
}
