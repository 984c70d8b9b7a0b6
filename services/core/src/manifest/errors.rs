//! Errors that name the manifest field and the line it is written on.

use crate::Error;

pub(super) fn strip_json_location(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

pub(super) fn strip_yaml_location(e: &serde_yaml::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    // serde_yaml prefixes errors with the path it knows; the path is printed by us already.
    match s.split_once(": ") {
        Some((head, tail)) if !head.contains(' ') => tail.to_string(),
        _ => s,
    }
}

/// An `Invalid` error about the field at `path` of the manifest `text`, naming its line when it is
/// written there: ``manifest field `model` (line 2): `x` is served by no worker; accepted: …``. For
/// checks made after parsing (the scheduler's served models).
pub fn field_error_in(text: &str, path: &str, msg: &str) -> Error {
    field_error(path, locate(text, path), msg)
}

pub(super) fn field_error(path: &str, line: Option<usize>, msg: &str) -> Error {
    let path = if path == "." || path.is_empty() {
        "(top level)"
    } else {
        path
    };
    match line {
        Some(l) if l > 0 => Error::invalid(format!("manifest field `{path}` (line {l}): {msg}")),
        _ => Error::invalid(format!("manifest field `{path}`: {msg}")),
    }
}

/// The line (1-based) of the manifest field at `path` (`defaults.width`, `jobs[2].key`) in YAML or
/// JSON text. Scans forward segment by segment, so it finds block and flow style alike; `None` when
/// the field is not written in the text (a missing field).
pub(super) fn locate(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0;
    let mut found = None;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg, None),
        };
        if !key.is_empty() {
            let pats = [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("\"{key}\" :"),
            ];
            let hit = (start..lines.len()).find(|&i| {
                let t = lines[i]
                    .trim_start()
                    .trim_start_matches(['-', ' ', '{', ',']);
                pats.iter().any(|p| t.starts_with(p.as_str()))
                    || pats.iter().any(|p| {
                        lines[i].contains(&format!("{{{p}")) || lines[i].contains(&format!(", {p}"))
                    })
            })?;
            found = Some(hit + 1);
            start = hit;
        }
        if let Some(n) = index {
            let items: Vec<usize> = (start + 1..lines.len())
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .collect();
            let indent = items
                .first()
                .map(|&i| lines[i].len() - lines[i].trim_start().len());
            let hit = *items
                .iter()
                .filter(|&&i| Some(lines[i].len() - lines[i].trim_start().len()) == indent)
                .nth(n)?;
            found = Some(hit + 1);
            start = hit;
        }
    }
    found
}

pub(super) fn cross_error(text: &str, field: &str, msg: impl AsRef<str>) -> Error {
    field_error(field, locate(text, field), msg.as_ref())
}
