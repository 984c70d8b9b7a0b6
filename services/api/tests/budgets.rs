//! Hostile manifests through the API's submit: each is refused as `Invalid` with an error that
//! names the field and what is accepted, and nothing reaches the store.

mod common;

use pixelfarm_core::{ErrorKind, ModelName};

fn hostile() -> Vec<(&'static str, String, &'static str)> {
    let head = "name: hostile\nmodel: m\n";
    let vals = |p: &str| {
        (0..100)
            .map(|i| format!("{p}{i:02}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        (
            "alias bomb",
            format!(
                "{head}prompt: \"{{p}}\"\nseeds: [1]\nvars:\n  p: [&a \"{}\"{}]\n",
                "x".repeat(1000),
                ", *a".repeat(10_000)
            ),
            "`vars.p[0]` (line 6): has an anchor",
        ),
        (
            "nested templates",
            format!(
                "{head}prompt: \"{{a}}{{b}}{{c}}\"\nseeds: [1]\nvars:\n  a: [\"{}\"]\n  b: [\"{}\"]\n  c: [\"{}\"]\n",
                "{b}".repeat(300),
                "{c}".repeat(300),
                "y".repeat(300)
            ),
            // Replaced in one pass: 900 + 900 + 300 characters, not 300^3.
            "`prompt` (line 3): expands to a prompt that is 2100 characters",
        ),
        (
            "million maximal jobs",
            format!(
                "{head}defaults: {{negative_prompt: \"{}\"}}\nprompt: \"{{a}} {{b}} {}\"\nseeds: {{base: 1, count: 100}}\nvars:\n  a: [{}]\n  b: [{}]\n",
                "n".repeat(2000),
                "p".repeat(1990),
                vals("a"),
                vals("b")
            ),
            "expanded-size budget",
        ),
        (
            "tags through aliases",
            format!(
                "{head}prompt: p\nseeds: [1]\ntags:\n  t0: &v \"{}\"\n{}",
                "t".repeat(10_000),
                (1..5000)
                    .map(|i| format!("  t{i}: *v\n"))
                    .collect::<String>()
            ),
            "`tags.t0` (line 6): has an anchor",
        ),
        (
            "many tags",
            format!(
                "{head}prompt: p\nseeds: [1]\ntags:\n{}",
                (0..5000)
                    .map(|i| format!("  t{i}: v\n"))
                    .collect::<String>()
            ),
            "`tags` (line 5): has 5000 tags; accepted: at most 64",
        ),
        (
            "deep block nesting",
            format!(
                "{head}prompt: p\nseeds: [1]\ntags:\n{}",
                (0..600)
                    .map(|i| format!("{}k:\n", " ".repeat(i + 1)))
                    .collect::<String>()
            ),
            "nests deeper than 16 levels",
        ),
        (
            "deep flow nesting",
            format!(
                "{head}prompt: p\nseeds: [1]\ntags: {}{}\n",
                "[".repeat(40),
                "]".repeat(40)
            ),
            "nests deeper than 16 levels",
        ),
    ]
}

#[tokio::test]
async fn hostile_manifests_are_refused_and_store_nothing() {
    let m = ModelName::parse("m").unwrap();
    let common::Api {
        api,
        store,
        tenant: t,
        dir: _dir,
        ..
    } = common::api(&["m"]).await;
    for (name, text, expected) in hostile() {
        let Err(e) = api.submit(t, text).await else {
            panic!("{name}: accepted");
        };
        assert_eq!(e.kind(), ErrorKind::Invalid, "{name}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(expected), "{name}: {msg}");
        assert!(
            store.dispatchable(&m, 10).await.unwrap().is_empty(),
            "{name}: a job was stored"
        );
    }
    // The store works: a plain manifest is stored.
    api.submit(t, "name: ok\nmodel: m\nprompt: p\nseeds: [1]\n".into())
        .await
        .unwrap();
    assert_eq!(store.dispatchable(&m, 10).await.unwrap().len(), 1);
}
