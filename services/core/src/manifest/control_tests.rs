//! `control` sections through the whole manifest parser: defaults, overrides, what the jobs
//! carry, and the errors naming the field.

use super::parse_manifest;
use super::tests::{err, job};
use crate::params::*;

#[test]
fn control_reaches_every_job_and_jobs_may_override_it() {
    let text = "name: n\nmodel: m\ndefaults:\n  control: [{model: canny, image: {key: inputs/t/layout.png}, preprocess: canny, weight: 0.8}]\nprompt: a {c} shoe\nvars: {c: [red, blue]}\nseeds: [1]\njobs:\n  - {prompt: a, control: [{model: depth, image: {key: inputs/t/d.png}, start: 0.1, end: 0.6}, {model: canny, image: {key: inputs/t/e.png}}]}\n  - {prompt: b, control: []}\n";
    let b = parse_manifest(text).unwrap();
    for i in 0..2 {
        let j = job(&b, i);
        let c: Vec<&ControlSpec> = j.params.control.iter().collect();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].model.as_str(), "canny");
        assert_eq!(c[0].image.key, "inputs/t/layout.png");
        assert_eq!(
            (c[0].weight.get(), c[0].preprocess),
            (0.8, Preprocess::Canny)
        );
    }
    let j = job(&b, 2);
    let c: Vec<&ControlSpec> = j.params.control.iter().collect();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].start.get(), c[0].end.get()), (0.1, 0.6));
    assert_eq!(c[1].weight.get(), 1.0, "absent weight is 1");
    assert!(job(&b, 3).params.control.is_empty(), "an empty list: none");
    // Every input image once per section that names it, with its field.
    let images: Vec<(&str, &str)> = b
        .jobs
        .input_images()
        .map(|(f, i)| (f, i.key.as_str()))
        .collect();
    assert_eq!(
        images,
        [
            ("control.image", "inputs/t/layout.png"),
            ("control.image", "inputs/t/d.png"),
            ("control.image", "inputs/t/e.png"),
        ]
    );
    // Without `control`, params serialize as before (output keys of old jobs do not move).
    let plain = parse_manifest("name: n\nmodel: m\nprompt: p\nseeds: [1]\n").unwrap();
    let json = serde_json::to_string(&job(&plain, 0).params).unwrap();
    assert!(!json.contains("control"), "{json}");
}

#[test]
fn bad_control_entries_name_the_field_and_what_is_accepted() {
    let base = "name: n\nmodel: m\njobs:\n  - prompt: p\n    control:\n";
    for (entry, want) in [
        (
            "{model: c, image: {key: k}, weight: 3}",
            "`jobs[0].control[0].weight` (line 6): is 3; accepted: a number from 0 to 2",
        ),
        (
            "{model: c, image: {key: k}, end: 1.5}",
            "`jobs[0].control[0].end` (line 6): is 1.5; accepted: a fraction of the steps from 0 to 1",
        ),
        (
            "{model: c, image: {key: k}, start: 0.7, end: 0.2}",
            "`jobs[0].control` (line 5): has entry 0 ending at 0.2 and starting at 0.7; accepted: `end` above `start`",
        ),
        ("{model: c}", "missing field `image`"),
        (
            "{model: c, image: {key: k}, preprocess: hed}",
            "`jobs[0].control[0].preprocess`",
        ),
        (
            "{model: 'no spaces', image: {key: k}}",
            "`jobs[0].control[0].model`",
        ),
    ] {
        let e = err(&format!("{base}      - {entry}\n"));
        assert!(e.contains(want), "{entry}: {e}");
    }
    let five = "      - {model: c, image: {key: k}}\n".repeat(5);
    let e = err(&format!("{base}{five}"));
    assert!(
        e.contains("`jobs[0].control`") && e.contains("accepted: at most 4"),
        "{e}"
    );
}
