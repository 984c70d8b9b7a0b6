//! Peak memory and time of `parse_manifest` on hostile manifests, one child process per case (so
//! each peak RSS, `VmHWM`, is that case's own).
//!
//! ```sh
//! cargo run --release -p pixelfarm-core --example hostile_manifests
//! ```
//!
//! Prints one row per case: the manifest size, the outcome (refused / accepted / crashed), the
//! wall time and the child's peak RSS. The table in `docs/security.md` comes from this command.

use std::process::Command;
use std::time::Instant;

/// Every case: a name and a manifest of at most 2 MiB (the HTTP body limit).
fn cases() -> Vec<(&'static str, String)> {
    let head = "name: hostile\nmodel: m\n";
    // One 1000-character scalar anchored once and aliased 100 000 times (each alias a copy).
    let alias_bomb = format!(
        "{head}prompt: \"{{p}}\"\nseeds: [1]\nvars:\n  p: [&a \"{}\"{}]\n",
        "x".repeat(1000),
        ", *a".repeat(100_000)
    );
    // Variable values made of the next variable's placeholders: 100 × 100 × 100 × 100 bytes.
    let nested = format!(
        "{head}prompt: \"{{a}}{{b}}{{c}}{{d}}\"\nseeds: [1]\nvars:\n  a: [\"{}\"]\n  b: [\"{}\"]\n  c: [\"{}\"]\n  d: [\"{}\"]\n",
        "{b}".repeat(100),
        "{c}".repeat(100),
        "{d}".repeat(100),
        "y".repeat(100)
    );
    // 100 × 100 variants × 100 seeds = a million jobs, each with a 2000-character prompt and
    // negative prompt.
    let vals = |p: &str| {
        (0..100)
            .map(|i| format!("{p}{i:02}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let million = format!(
        "{head}defaults: {{negative_prompt: \"{}\"}}\nprompt: \"{{a}} {{b}} {}\"\nseeds: {{base: 1, count: 100}}\nvars:\n  a: [{}]\n  b: [{}]\n",
        "n".repeat(2000),
        "p".repeat(1990),
        vals("a"),
        vals("b")
    );
    // A 61 KB manifest whose 5000 tags all alias one 10 000-character value (50 MB stored).
    let tags = format!(
        "{head}prompt: p\nseeds: [1]\ntags:\n  t0: &v \"{}\"\n{}",
        "t".repeat(10_000),
        (1..5000)
            .map(|i| format!("  t{i}: *v\n"))
            .collect::<String>()
    );
    // 100 000 nested flow sequences (200 KB).
    let deep = format!(
        "{head}prompt: p\nseeds: [1]\ntags: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    // The same depth in block style: a mapping per line, each indented one more space.
    let deep_block = {
        let mut s = format!("{head}prompt: p\nseeds: [1]\ntags:\n");
        for i in 0..600 {
            s.push_str(&" ".repeat(i + 1));
            s.push_str("k:\n");
        }
        s
    };
    // The same million jobs with one-word prompts: a large batch the budget accepts.
    let million_short = million
        .replace(&"n".repeat(2000), "n")
        .replace(&"p".repeat(1990), "p");
    vec![
        ("alias_bomb", alias_bomb),
        ("nested_templates", nested),
        ("million_maximal_jobs", million),
        ("million_short_jobs (accepted)", million_short),
        ("tags_via_aliases", tags),
        ("deep_flow_nesting", deep),
        ("deep_block_nesting", deep_block),
    ]
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(name) = args.get(1) {
        let (_, text) = cases()
            .into_iter()
            .find(|(n, _)| n == name)
            .expect("a case name");
        let before = vm_hwm_kib();
        let t0 = Instant::now();
        let outcome = match pixelfarm_core::parse_manifest(&text) {
            Ok(b) => format!("accepted ({} jobs)", b.jobs.len()),
            Err(e) => {
                let m = e.to_string();
                format!("refused: {}", m.chars().take(140).collect::<String>())
            }
        };
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{name}\t{} KiB\t{secs:.2} s\t{} MiB (baseline {} MiB)\t{outcome}",
            text.len() / 1024,
            vm_hwm_kib() / 1024,
            before / 1024
        );
        return;
    }
    let me = std::env::current_exe().expect("own path");
    for (name, _) in cases() {
        let t0 = Instant::now();
        let out = Command::new(&me).arg(name).output().expect("spawn a case");
        if out.status.success() {
            print!("{}", String::from_utf8_lossy(&out.stdout));
        } else {
            println!(
                "{name}\tcrashed after {:.2} s: {} {}",
                t0.elapsed().as_secs_f64(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
    }
}
