//! The attack classes the manifest budgets refuse (docs/security.md, "Budgets"), as manifests:
//! one list for the API's tests, the real scheduler's (tests/e2e/budgets.rs) and the parser's
//! measurement (`examples/hostile_manifests.rs`), so each refusal is checked where it is measured.

/// A hostile manifest for `model`, under the 2 MiB request limit.
pub struct Hostile {
    /// What it attacks.
    pub name: &'static str,
    /// The manifest.
    pub manifest: String,
    /// A part of the error that refuses it, naming the budget.
    pub refusal: &'static str,
}

/// Every class, each sized as an attacker would size it.
pub fn manifests(model: &str) -> Vec<Hostile> {
    let head = format!("name: hostile\nmodel: {model}\n");
    let vals = |p: &str| {
        (0..100)
            .map(|i| format!("{p}{i:02}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        Hostile {
            // One 1000-character scalar anchored once and aliased 100 000 times (each alias a
            // copy in serde_yaml).
            name: "alias bomb",
            manifest: format!(
                "{head}prompt: \"{{p}}\"\nseeds: [1]\nvars:\n  p: [&a \"{}\"{}]\n",
                "x".repeat(1000),
                ", *a".repeat(100_000)
            ),
            refusal: "`vars.p[0]` (line 6): has an anchor",
        },
        Hostile {
            // Values made of the next variable's placeholders: replaced in one pass, 900 + 900
            // + 300 characters, not 300³.
            name: "nested templates",
            manifest: format!(
                "{head}prompt: \"{{a}}{{b}}{{c}}\"\nseeds: [1]\nvars:\n  a: [\"{}\"]\n  b: [\"{}\"]\n  c: [\"{}\"]\n",
                "{b}".repeat(300),
                "{c}".repeat(300),
                "y".repeat(300)
            ),
            refusal: "`prompt` (line 3): expands to a prompt that is 2100 characters",
        },
        Hostile {
            // 100 × 100 variants × 100 seeds: a million jobs with 2000-character prompts and
            // negative prompts.
            name: "million maximal jobs",
            manifest: format!(
                "{head}defaults: {{negative_prompt: \"{}\"}}\nprompt: \"{{a}} {{b}} {}\"\nseeds: {{base: 1, count: 100}}\nvars:\n  a: [{}]\n  b: [{}]\n",
                "n".repeat(2000),
                "p".repeat(1990),
                vals("a"),
                vals("b")
            ),
            refusal: "expanded-size budget",
        },
        Hostile {
            // 5000 tags aliasing one 10 000-character value: 67 KB sent, 50 MB stored.
            name: "tags through aliases",
            manifest: format!(
                "{head}prompt: p\nseeds: [1]\ntags:\n  t0: &v \"{}\"\n{}",
                "t".repeat(10_000),
                (1..5000)
                    .map(|i| format!("  t{i}: *v\n"))
                    .collect::<String>()
            ),
            refusal: "`tags.t0` (line 6): has an anchor",
        },
        Hostile {
            name: "many tags",
            manifest: format!(
                "{head}prompt: p\nseeds: [1]\ntags:\n{}",
                (0..5000)
                    .map(|i| format!("  t{i}: v\n"))
                    .collect::<String>()
            ),
            refusal: "`tags` (line 5): has 5000 tags; accepted: at most 64",
        },
        Hostile {
            // 100 000 nested flow sequences (200 KB): the parsers' look-ahead grows with depth.
            name: "deep flow nesting",
            manifest: format!(
                "{head}prompt: p\nseeds: [1]\ntags: {}{}\n",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            refusal: "nests more than 256",
        },
        Hostile {
            // The same depth in block style: a mapping per line, each indented one more space.
            name: "deep block nesting",
            manifest: format!(
                "{head}prompt: p\nseeds: [1]\ntags:\n{}",
                (0..600)
                    .map(|i| format!("{}k:\n", " ".repeat(i + 1)))
                    .collect::<String>()
            ),
            refusal: "nests deeper than 16 levels",
        },
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_manifest_is_refused_by_the_parser_naming_its_budget() {
        for h in super::manifests("m") {
            assert!(
                h.manifest.len() <= crate::manifest::MAX_MANIFEST_BYTES,
                "{}",
                h.name
            );
            let e = crate::parse_manifest(&h.manifest)
                .err()
                .unwrap_or_else(|| panic!("{}: accepted", h.name));
            assert!(e.to_string().contains(h.refusal), "{}: {e}", h.name);
        }
    }
}
