//! `defaults.loras` with variables, through the whole manifest parser.

use super::{BatchSpec, parse_manifest};

/// Each job's key with its LoRAs as `name:weight`.
fn loras(b: &BatchSpec) -> Vec<(String, Vec<String>)> {
    b.jobs
        .iter()
        .map(|j| {
            let l = j.params.loras.iter();
            (
                j.key,
                l.map(|l| format!("{}:{}", l.name, l.weight)).collect(),
            )
        })
        .collect()
}

fn err(text: &str) -> String {
    parse_manifest(text).unwrap_err().to_string()
}

#[test]
fn a_template_sweeps_lora_weights_and_names_through_vars() {
    // `{w}` unquoted is a YAML mapping; quoted it is a string: both are the placeholder.
    for weight in ["{w}", "\"{w}\""] {
        let text = format!(
            "name: n\nmodel: m\ndefaults:\n  loras: [{{name: brand, weight: {weight}}}]\nprompt: a house\nvars:\n  w: [0, 0.5, -1.25]\nseeds: [7]\n"
        );
        let b = parse_manifest(&text).unwrap();
        assert_eq!(
            loras(&b),
            [
                ("w=0@512x512#0".into(), vec!["brand:0".to_string()]),
                ("w=0.5@512x512#0".into(), vec!["brand:0.5".to_string()]),
                ("w=-1.25@512x512#0".into(), vec!["brand:-1.25".to_string()]),
            ]
        );
        // A seed list gives every weight the same noise.
        assert!(b.jobs.iter().all(|j| j.params.seed.get() == 7));
    }
    // Names too, beside prompt variables, fixed entries and explicit jobs with their own.
    let text = "name: n\nmodel: m\ndefaults:\n  loras:\n    - {name: '{style}', weight: 0.8}\n    - {name: texture, weight: '{w}'}\nprompt: a {thing}\nvars:\n  style: [ink, neon]\n  thing: [cup]\n  w: ['0.25', '1']\nseeds: [1]\njobs:\n  - {key: own, prompt: q, loras: [{name: ink, weight: 1}]}\n";
    let b = parse_manifest(text).unwrap();
    let got = loras(&b);
    assert_eq!(got.len(), 5);
    assert_eq!(
        got[1],
        (
            "style=ink,thing=cup,w=1@512x512#0".into(),
            vec!["ink:0.8".to_string(), "texture:1".to_string()]
        )
    );
    assert_eq!(got[2].1, ["neon:0.8", "texture:0.25"]);
    assert_eq!(got[4], ("own".into(), vec!["ink:1".to_string()]));
    // Jobs of different sets differ in their batch key; the same set, whatever the
    // variant, shares it.
    let key = |i: usize| crate::BatchKey::of(&b.jobs.iter().nth(i).unwrap().params);
    assert_ne!(key(0), key(1));
    // JSON manifests say it as a string.
    let json = r#"{"name": "n", "model": "m", "defaults": {"loras": [{"name": "brand", "weight": "{w}"}]}, "prompt": "p", "vars": {"w": ["0.5"]}, "seeds": [1]}"#;
    assert_eq!(loras(&parse_manifest(json).unwrap())[0].1, ["brand:0.5"]);
}

#[test]
fn a_bad_lora_variable_is_named_with_what_is_accepted() {
    let with = |loras: &str, vars: &str| {
        format!(
            "name: n\nmodel: m\ndefaults:\n  loras: {loras}\nprompt: a {{thing}}\nvars:\n  thing: [cup]\n{vars}seeds: [1]\n"
        )
    };
    let cases = [
        (
            with("[{name: brand, weight: {x}}]", ""),
            "`defaults.loras[0].weight`",
            "placeholder `{x}` has no entry in `vars`",
        ),
        (
            with("[{name: brand, weight: {w}}]", "  w: ['0.5', strong]\n"),
            "`vars.w`",
            "has a value used as `defaults.loras[0].weight` that is `strong`; accepted: a number from -4 to 4",
        ),
        (
            with("[{name: brand, weight: {w}}]", "  w: ['9']\n"),
            "`vars.w`",
            "that is 9; accepted: a number from -4 to 4",
        ),
        (
            with("[{name: '{s}', weight: 1}]", "  s: [ok, Bad]\n"),
            "`vars.s`",
            "used as `defaults.loras[0].name` that is `Bad`; accepted: 1 to 64 characters",
        ),
        (
            with(
                "[{name: '{s}', weight: 1}, {name: ink, weight: 1}]",
                "  s: [neon, ink]\n",
            ),
            "`defaults.loras`",
            "for the variant `s=ink,thing=cup` names `ink` twice",
        ),
        (
            with("[{name: brand, weight: {w: 1}}]", ""),
            "`defaults.loras[0].weight`",
            "is a mapping; accepted: a value or a `{variable}` of `vars`",
        ),
        (
            with("[{name: brand, weight: '{a b}'}]", ""),
            "`defaults.loras[0].weight`",
            "placeholder `{a b}` is not a name",
        ),
        (
            with("[{name: brand, weight: 1}]", "  w: ['1']\n"),
            "`vars.w`",
            "is not used by any `{placeholder}` in `prompt` or `defaults.loras`",
        ),
        (
            with("[{name: brand, weight: {w}}]", "  w: ['1']\n")
                + "jobs:\n  - {key: own, prompt: q}\n",
            "`jobs[0].loras`",
            "`defaults.loras` uses `vars`",
        ),
    ];
    for (text, field, msg) in cases {
        let e = err(&text);
        assert!(e.contains(field) && e.contains(msg), "{text}\n{e}");
    }
}
