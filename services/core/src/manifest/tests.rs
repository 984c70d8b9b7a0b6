use super::*;
use crate::params::*;
use std::collections::HashSet;

/// The `i`-th job of a batch.
pub(super) fn job(b: &BatchSpec, i: usize) -> JobSpec {
    b.jobs.iter().nth(i).expect("the batch has that job")
}

const BASIC: &str = "\
name: campaign
model: sd15
priority: 3
defaults:
  width: 64
  height: 64
  steps: 4
prompt: a {color} {shape}
vars:
  color: [red, blue, green]
  shape: [circle, square]
sizes: [[64, 64], [128, 64]]
seeds: {base: 42, count: 2}
";

#[test]
fn expands_the_cartesian_product() {
    let b = parse_manifest(BASIC).unwrap();
    assert_eq!(b.jobs.len(), 3 * 2 * 2 * 2);
    assert_eq!(job(&b, 0).params.prompt.as_str(), "a red circle");
    assert_eq!(job(&b, 0).key, "color=red,shape=circle@64x64#0");
    let keys: HashSet<_> = b.jobs.iter().map(|j| j.key).collect();
    assert_eq!(keys.len(), b.jobs.len());
    assert_eq!(b.priority.get(), 3);
}

#[test]
fn a_jobs_seed_does_not_depend_on_the_rest_of_the_batch() {
    let small = parse_manifest(&BASIC.replace("[red, blue, green]", "[red]")).unwrap();
    let big = parse_manifest(BASIC).unwrap();
    let find = |b: &BatchSpec, k: &str| b.jobs.iter().find(|j| j.key == k).unwrap().params.seed;
    let k = "color=red,shape=square@128x64#1";
    assert_eq!(find(&small, k), find(&big, k));
}

#[test]
fn json_is_accepted() {
    let b = parse_manifest(r#"{"name":"j","model":"m","prompt":"x","seeds":[1,2]}"#).unwrap();
    assert_eq!(b.jobs.len(), 2);
    assert_eq!(job(&b, 1).params.seed.get(), 2);
}

#[test]
fn explicit_jobs_override_defaults() {
    let b = parse_manifest(
            "name: n\nmodel: m\ndefaults: {steps: 3}\njobs:\n  - prompt: one\n    steps: 9\n  - prompt: two\n    seed: 5\n",
        )
        .unwrap();
    assert_eq!(job(&b, 0).params.steps.get(), 9);
    assert_eq!(job(&b, 1).params.steps.get(), 3);
    assert_eq!(job(&b, 1).params.seed.get(), 5);
}

pub(super) fn err(text: &str) -> String {
    let e = parse_manifest(text).unwrap_err();
    assert_eq!(e.kind(), crate::ErrorKind::Invalid);
    e.to_string()
}

#[test]
fn later_checks_name_the_field_and_line_too() {
    let e = field_error_in(BASIC, "model", "`sd15` is served by no worker").to_string();
    assert_eq!(
        e,
        "manifest field `model` (line 2): `sd15` is served by no worker"
    );
    let e = field_error_in("{\"name\": \"x\"}", "model", "is missing").to_string();
    assert_eq!(e, "manifest field `model`: is missing");
}

#[test]
fn errors_name_the_field_and_line() {
    let e = err(&BASIC.replace("width: 64", "width: 65"));
    assert!(
        e.contains("`defaults.width` (line 5)") && e.contains("multiple of 8"),
        "{e}"
    );
    let e = err(&BASIC.replace("steps: 4", "steps: 0"));
    assert!(
        e.contains("`defaults.steps` (line 7)") && e.contains("1 to 200"),
        "{e}"
    );
    let e = err(&BASIC.replace("model: sd15", "model: SD 15"));
    assert!(e.contains("`model` (line 2)"), "{e}");
    let e = err(&BASIC.replace("priority: 3", "priorty: 3"));
    assert!(e.contains("unknown field `priorty`"), "{e}");
    let e = err(&BASIC.replace("steps: 4", "steps: 4\n  foo: 1"));
    assert!(e.contains("`defaults.foo` (line 8)"), "{e}");
    let e = err("name: n\nmodel: m\njobs:\n  - prompt: a\n  - prompt: b\n    width: 7\n");
    assert!(e.contains("`jobs[1].width` (line 6)"), "{e}");
    let e = err(
        r#"{"name": "n", "model": "m", "defaults": {"width": 9}, "prompt": "x", "seeds": [1]}"#,
    );
    assert!(e.contains("`defaults.width` (line 1)"), "{e}");
    let e = err(&BASIC.replace("defaults:\n", "defaults:\n  sampler: plms\n"));
    assert!(
        e.contains("`defaults.sampler`") && e.contains("euler_a"),
        "{e}"
    );
}

#[test]
fn cross_field_errors_name_the_field() {
    let e = err(&BASIC.replace("a {color} {shape}", "a {colour} {shape}"));
    assert!(
        e.contains("`prompt` (line 8)") && e.contains("{colour}"),
        "{e}"
    );
    let e = err(&BASIC.replace("seeds: {base: 42, count: 2}\n", ""));
    assert!(e.contains("`seeds`"), "{e}");
    let e = err(&BASIC.replace("count: 2", "count: 0"));
    assert!(e.contains("`seeds.count`"), "{e}");
    let e = err("name: n\nmodel: m\njobs:\n  - prompt: a\n  - prompt: a\n");
    assert!(e.contains("`jobs[1].key`"), "{e}");
    let e = err("name: n\nmodel: m\n");
    assert!(e.contains("no jobs"), "{e}");
}

#[test]
fn loras_reach_every_job_and_jobs_may_override_them() {
    let text = "name: n\nmodel: m\ndefaults:\n  loras: [{name: brand, weight: 0.8}]\nprompt: p\nseeds: [1]\njobs:\n  - {key: two, prompt: q, loras: [{name: brand, weight: 0.5}, {name: texture, weight: -1}]}\n  - {key: none, prompt: q, loras: []}\n";
    let b = parse_manifest(text).unwrap();
    let names = |i: usize| -> Vec<(String, f64)> {
        job(&b, i)
            .params
            .loras
            .iter()
            .map(|l| (l.name.to_string(), l.weight.get()))
            .collect()
    };
    assert_eq!(names(0), [("brand".to_string(), 0.8)]);
    assert_eq!(
        names(1),
        [("brand".to_string(), 0.5), ("texture".to_string(), -1.0)]
    );
    assert!(names(2).is_empty());
    // The template's jobs and an override differ in their batch key (one set of weights per group).
    assert_ne!(
        crate::BatchKey::of(&job(&b, 0).params),
        crate::BatchKey::of(&job(&b, 1).params)
    );

    // Each field is named, with what is accepted.
    let e = err(
        "name: n\nmodel: m\ndefaults:\n  loras: [{name: a, weight: 9}]\nprompt: p\nseeds: [1]\n",
    );
    assert!(e.contains("defaults.loras") && e.contains("-4 to 4"), "{e}");
    let e = err(
        "name: n\nmodel: m\njobs:\n  - {prompt: a, loras: [{name: a, weight: 1}, {name: a, weight: 2}]}\n",
    );
    assert!(
        e.contains("jobs[0].loras") && e.contains("names `a` twice"),
        "{e}"
    );
    let e = err("name: n\nmodel: m\njobs:\n  - {prompt: a, loras: [{name: Bad, weight: 1}]}\n");
    assert!(e.contains("jobs[0].loras") && e.contains("a-z"), "{e}");
    // Without `loras`, params serialize as before (keys of old jobs do not move).
    let plain = parse_manifest("name: n\nmodel: m\nprompt: p\nseeds: [1]\n").unwrap();
    assert!(
        !serde_json::to_string(&job(&plain, 0).params)
            .unwrap()
            .contains("loras")
    );
}

#[test]
fn hires_reaches_every_job_checked_against_each_size() {
    let text = "name: n\nmodel: m\ndefaults:\n  hires: {scale: 2, steps: 10}\nprompt: p\nsizes: [[512, 512], [768, 512]]\nseeds: [1]\njobs:\n  - {key: plain, prompt: q, hires: {scale: 1.5, strength: 0.3, upscaler: latent}}\n";
    let b = parse_manifest(text).unwrap();
    let h = job(&b, 1).params.hires.unwrap();
    assert_eq!((h.scale.get(), h.strength.get()), (2.0, 0.5));
    assert_eq!(job(&b, 1).params.render_size().unwrap(), (1536, 1024));
    let h = job(&b, 2).params.hires.unwrap();
    assert_eq!((h.upscaler, h.strength.get()), (Upscaler::Latent, 0.3));
    assert_eq!(job(&b, 2).params.render_size().unwrap(), (768, 768));

    // A scale that takes a size past 4096 is refused at the field, saying what fits.
    let e = err(
        "name: n\nmodel: m\ndefaults:\n  hires: {scale: 4}\nprompt: p\nsizes: [[512, 512], [2048, 512]]\nseeds: [1]\n",
    );
    assert!(
        e.contains("`defaults.hires.scale` (line 4)") && e.contains("up to 2.00"),
        "{e}"
    );
    let e = err("name: n\nmodel: m\njobs:\n  - {prompt: a, width: 1024, hires: {scale: 4.5}}\n");
    assert!(
        e.contains("jobs[0].hires.scale") && e.contains("at most 4"),
        "{e}"
    );
    // Without `hires`, params serialize as before (keys of old jobs do not move).
    let plain = parse_manifest("name: n\nmodel: m\nprompt: p\nseeds: [1]\n").unwrap();
    assert!(
        !serde_json::to_string(&job(&plain, 0).params)
            .unwrap()
            .contains("hires")
    );
}

#[test]
fn the_readme_manifest_parses() {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("```yaml\nname: spring-campaign")
        .expect("README manifest")
        + 8;
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let b = parse_manifest(text).unwrap();
    assert_eq!(b.jobs.len(), 2 * 2 * 2 * 2 * 4 + 4);
    assert_eq!(
        b.jobs.iter().last().unwrap().params.output.format,
        ImageFormat::Jpeg
    );
    let lora = b.jobs.iter().find(|j| !j.params.loras.is_empty()).unwrap();
    assert_eq!(lora.params.loras.iter().next().unwrap().weight.get(), 0.8);
    let controlled = b
        .jobs
        .iter()
        .find(|j| !j.params.control.is_empty())
        .unwrap();
    let c = controlled.params.control.iter().next().unwrap();
    assert_eq!(
        (c.model.as_str(), c.preprocess),
        ("canny", Preprocess::Canny)
    );
}

#[test]
fn huge_expansions_are_refused_before_allocating() {
    let vals: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let list = format!("[{}]", vals.join(","));
    let text = format!(
        "name: n\nmodel: m\nprompt: \"{{a}} {{b}}\"\nvars:\n  a: {list}\n  b: {list}\nseeds: {{base: 1, count: 2}}\n"
    );
    assert!(err(&text).contains("more than 1000000 jobs"));
}

#[test]
fn anchors_and_aliases_are_refused_naming_the_field_and_line() {
    let e = err("name: n\nmodel: m\nseeds: [1]\nprompt: \"{p}\"\nvars:\n  p: [&a xxx, *a, *a]\n");
    assert!(
        e.contains("`vars.p[0]` (line 6)") && e.contains("anchor") && e.contains("not accepted"),
        "{e}"
    );
    let e = err("name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags:\n  a: &v x\n  b: *v\n");
    assert!(
        e.contains("`tags.a` (line 6)") && e.contains("anchor"),
        "{e}"
    );
    let e = err("name: n\nmodel: m\ndefaults: &d {steps: 3}\njobs: [{prompt: a}]\n");
    assert!(
        e.contains("`defaults` (line 3)") && e.contains("anchor"),
        "{e}"
    );
}

#[test]
fn a_star_or_ampersand_inside_text_is_not_an_alias() {
    let b = parse_manifest(
            "name: \"*stars* & co\"\nmodel: m\ntags: {t: \"&x\", u: a*b}\njobs:\n  - prompt: a * b & c\n  - prompt: '*bold* &amp'\n  - {prompt: \"x *y &z\", key: \"*k\"}\n",
        )
        .unwrap();
    assert_eq!(b.name, "*stars* & co");
    assert_eq!(job(&b, 0).params.prompt.as_str(), "a * b & c");
    assert_eq!(job(&b, 1).params.prompt.as_str(), "*bold* &amp");
    assert_eq!(job(&b, 2).key, "*k");
    assert_eq!(b.tags["u"], "a*b");
}

#[test]
fn deep_nesting_is_refused() {
    let mut block = "name: n\nmodel: m\ntags:\n".to_string();
    for i in 0..40 {
        block.push_str(&format!("{}k:\n", " ".repeat(i + 1)));
    }
    let e = err(&block);
    assert!(
        e.contains("`tags.k.k.k") && e.contains("deeper than 16"),
        "{e}"
    );
    let flow = format!(
        "name: n\nmodel: m\ntags: {}{}\n",
        "[".repeat(20),
        "]".repeat(20)
    );
    let e = err(&flow);
    assert!(
        e.contains("`tags") && e.contains("(line 3)") && e.contains("deeper than 16"),
        "{e}"
    );
}

#[test]
fn deep_flow_nesting_is_refused_before_the_yaml_parser_runs() {
    let deep = |n: usize| {
        format!(
            "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags: {}{}\n",
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    let t0 = std::time::Instant::now();
    let e = err(&deep(100_000));
    assert!(e.contains("(line 5)") && e.contains("more than 256"), "{e}");
    assert!(t0.elapsed().as_secs() < 5, "took {:?}", t0.elapsed());
    // Closing brackets inside quoted strings or comments do not hide openings.
    let hidden = format!(
        "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags: {}\n",
        "[\"]]\", 'it''s ]]', # x # ]]\n".repeat(300)
    );
    assert!(err(&hidden).contains("more than 256"));
    // Balanced brackets in prompts are text, however many.
    let prompts: String = (0..400)
        .map(|i| format!("  - prompt: \"[[a]] {{b}} {i}\"\n  - prompt: x [c] {i}\n"))
        .collect();
    let b = parse_manifest(&format!("name: n\nmodel: m\njobs:\n{prompts}")).unwrap();
    assert_eq!(b.jobs.len(), 800);
}

#[test]
fn a_value_placeholder_stays_text_and_long_expansions_are_refused_before_building() {
    // One pass: `{b}` inside a value of `a` is not replaced again.
    let b = parse_manifest(
        "name: n\nmodel: m\nprompt: \"{a} {b}\"\nseeds: [1]\nvars:\n  a: [\"x{b}\"]\n  b: [y]\n",
    )
    .unwrap();
    assert_eq!(job(&b, 0).params.prompt.as_str(), "x{b} y");
    // Each value made of the next placeholder: refused from the parts' sizes.
    let text = format!(
        "name: n\nmodel: m\nprompt: \"{{a}}{{b}}{{c}}\"\nseeds: [1]\nvars:\n  a: [\"{}\"]\n  b: [\"{}\"]\n  c: [\"{}\", short]\n",
        "{b}".repeat(300),
        "{c}".repeat(300),
        "z".repeat(1200)
    );
    let e = err(&text);
    assert!(
        e.contains("`prompt` (line 3)")
            && e.contains("3000 characters long")
            && e.contains("at most 2000"),
        "{e}"
    );
}

#[test]
fn the_expanded_size_budget_is_checked_before_expanding() {
    let vals = |p: &str| {
        (0..100)
            .map(|i| format!("{p}{i:02}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        "name: n\nmodel: m\ndefaults: {{negative_prompt: \"{}\"}}\nprompt: \"{{a}} {{b}} {}\"\nseeds: {{base: 1, count: 100}}\nvars:\n  a: [{}]\n  b: [{}]\n",
        "n".repeat(2000),
        "p".repeat(1990),
        vals("a"),
        vals("b")
    );
    let e = err(&text);
    assert!(
        e.contains("`prompt` (line 4)")
            && e.contains("1000000 jobs taking")
            && e.contains(&format!("at most {MAX_EXPANDED_BYTES} bytes per batch"))
            && e.contains("expanded-size budget"),
        "{e}"
    );
    // The same shape with short prompts fits.
    let small = text
        .replace(&"n".repeat(2000), "n")
        .replace(&"p".repeat(1990), "p");
    assert_eq!(parse_manifest(&small).unwrap().jobs.len(), 1_000_000);
}

#[test]
fn tags_are_bounded() {
    let many: String = (0..65).map(|i| format!("  t{i}: x\n")).collect();
    let e = err(&format!(
        "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags:\n{many}"
    ));
    assert!(
        e.contains("`tags` (line 5)") && e.contains("65 tags; accepted: at most 64"),
        "{e}"
    );
    let e = err(&format!(
        "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags:\n  big: {}\n",
        "v".repeat(257)
    ));
    assert!(
        e.contains("`tags.big` (line 6)") && e.contains("257 bytes; accepted: at most 256"),
        "{e}"
    );
    let e = err(&format!(
        "name: n\nmodel: m\nprompt: p\nseeds: [1]\ntags: {{{}: v}}\n",
        "k".repeat(65)
    ));
    assert!(e.contains("`tags`") && e.contains("1 to 64 bytes"), "{e}");
}

#[test]
fn an_oversized_manifest_is_refused_before_parsing() {
    let text = format!(
        "name: n\nmodel: m\nprompt: p\nseeds: [1]\n#{}\n",
        " ".repeat(MAX_MANIFEST_BYTES)
    );
    let e = err(&text);
    assert!(
        e.contains(&format!("at most {MAX_MANIFEST_BYTES} bytes")),
        "{e}"
    );
}

#[test]
fn every_example_manifest_passes_the_budgets() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = parse_manifest(&text) {
                panic!("{}: {e}", path.display());
            }
        }
    }
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for t in [
        "",
        "[]",
        "{",
        "name: [",
        "\u{0}",
        "name: n\nmodel: m\nprompt: a {\nseeds: [1]\n",
    ] {
        assert!(parse_manifest(t).is_err(), "{t:?}");
    }
}

#[test]
fn a_template_is_read_in_odometer_order_sizes_then_seeds() {
    let b = parse_manifest(BASIC).unwrap();
    let keys: Vec<String> = b.jobs.iter().map(|j| j.key).collect();
    assert_eq!(
        &keys[..5],
        [
            "color=red,shape=circle@64x64#0",
            "color=red,shape=circle@64x64#1",
            "color=red,shape=circle@128x64#0",
            "color=red,shape=circle@128x64#1",
            "color=red,shape=square@64x64#0",
        ]
        .map(String::from)
    );
    // Reading twice gives the same jobs, seeds included.
    let again: Vec<_> = b.jobs.iter().map(|j| (j.key, j.params.seed)).collect();
    let first: Vec<_> = b.jobs.iter().map(|j| (j.key, j.params.seed)).collect();
    assert_eq!(again, first);
}

#[test]
fn keys_made_twice_are_refused_without_expanding() {
    let twice = |text: &str, key: &str| {
        let e = err(text);
        assert!(e.contains(&format!("produce the job `{key}` twice")), "{e}");
    };
    twice(
        &BASIC.replace("[red, blue, green]", "[red, blue, red]"),
        "color=red,shape=circle@64x64#0",
    );
    twice(
        &BASIC.replace("[[64, 64], [128, 64]]", "[[64, 64], [128, 64], [64, 64]]"),
        "color=red,shape=circle@64x64#0",
    );
    // Values holding `,shape=` can spell another variant's key: found from the stems.
    twice(
        "name: n\nmodel: m\nprompt: \"{a} {b}\"\nseeds: [1]\nvars:\n  a: [\"x\", \"x,b=y\"]\n  b: [\"y,b=y\", \"y\"]\n",
        "a=x,b=y,b=y@512x512#0",
    );
    // Commas alone are common in prompts and make no two keys equal.
    let b = parse_manifest(
        "name: n\nmodel: m\nprompt: \"{a} {b}\"\nseeds: [1]\nvars:\n  a: [\"oil, dark\", \"ink\"]\n  b: [\"x\", \"y, z\"]\n",
    )
    .unwrap();
    assert_eq!(b.jobs.len(), 4);
}

#[test]
fn an_explicit_key_equal_to_a_template_key_is_refused() {
    let text = format!(
        "{BASIC}jobs:\n  - key: \"color=green,shape=square@128x64#1\"\n    prompt: other\n"
    );
    let e = err(&text);
    assert!(
        e.contains("`jobs[0].key`")
            && e.contains("`color=green,shape=square@128x64#1` is used by another job"),
        "{e}"
    );
    // The same form with a seed index the template does not have is another key.
    let fine = text.replace("#1\"", "#2\"");
    assert_eq!(parse_manifest(&fine).unwrap().jobs.len(), 3 * 2 * 2 * 2 + 1);
}

#[test]
fn template_keys_give_their_variables() {
    let vars = |key: &str| {
        key_vars(key, 64, 32).map(|v| {
            v.into_iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(
        vars("color=red,shape=big circle@64x32#3").unwrap(),
        ["color=red", "shape=big circle"]
    );
    // Values may hold `,`, `=`, `@` and `#`; a `,name=` only ends a value before a later name.
    assert_eq!(
        vars("a=x,y,b=1=2,c=a=b,z@q#1@64x32#0").unwrap(),
        ["a=x,y", "b=1=2", "c=a=b,z@q#1"]
    );
    assert_eq!(vars("b=1,a=2@64x32#0").unwrap(), ["b=1,a=2"]);
    // Not a template key: explicit keys, another size, no seed index.
    assert_eq!(vars("banner"), None);
    assert_eq!(vars("prompt=a cat@64x32"), None);
    assert_eq!(vars("color=red@32x32#0"), None);
    assert_eq!(vars("color=red@64x32#"), None);
    assert_eq!(vars("=red@64x32#0"), None);
}
