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

/// Every case: a name and a manifest of at most 2 MiB (the HTTP body limit): the hostile
/// manifests the tests refuse, and two that the budgets accept.
fn cases() -> Vec<(String, String)> {
    let hostile = pixelfarm_core::hostile::manifests("m");
    let million = &hostile
        .iter()
        .find(|h| h.name == "million maximal jobs")
        .expect("listed")
        .manifest;
    // The same million jobs with one-word prompts: a large batch the budget accepts.
    let million_short = million
        .replace(&"n".repeat(2000), "n")
        .replace(&"p".repeat(1990), "p");
    // Four variables, each value 100 placeholders of the next: one pass makes one
    // 1000-character prompt (100⁴ bytes if placeholders were expanded recursively).
    let nested = format!(
        "name: hostile\nmodel: m\nprompt: \"{{a}}{{b}}{{c}}{{d}}\"\nseeds: [1]\nvars:\n  a: [\"{}\"]\n  b: [\"{}\"]\n  c: [\"{}\"]\n  d: [\"{}\"]\n",
        "{b}".repeat(100),
        "{c}".repeat(100),
        "{d}".repeat(100),
        "y".repeat(100)
    );
    hostile
        .into_iter()
        .map(|h| (h.name.to_string(), h.manifest))
        .chain([
            ("nested templates, 4 levels (accepted)".to_string(), nested),
            ("million short jobs (accepted)".to_string(), million_short),
        ])
        .collect()
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
        let out = Command::new(&me).arg(&name).output().expect("spawn a case");
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
