//! One policy for the free text clients send (prompts, batch names, tags, keys), the same in
//! every mode, and the escaping used wherever such text is shown or embedded.
//!
//! Refused everywhere: NUL and every other control character (C0, DEL, C1), the Unicode line and
//! paragraph separators, and the bidirectional formatting characters (embeddings, overrides,
//! isolates, marks), which reorder what a terminal or a listing shows. Prompts
//! ([`TextKind::Prose`]) may also hold `\n` and `\t` (a multi-line YAML prompt): the text encoder
//! reads them as spaces, and the `parameters` metadata writes them as spaces
//! ([`one_line`]), so a prompt cannot forge a line there. Names, tags and keys
//! ([`TextKind::Line`]) are one line.

use std::borrow::Cow;

use crate::{BatchSpec, Error, Result, field_error_in};

/// Which text a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// Prompts: line breaks (`\n`) and tabs accepted.
    Prose,
    /// Names, tags, keys: one line, no tabs.
    Line,
}

/// Characters that reorder displayed text: LRM, RLM, ALM, the embeddings and overrides
/// (U+202A..U+202E) and the isolates (U+2066..U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` is refused in any text ([`TextKind::Prose`] still accepts `\n` and `\t`).
fn is_refused(c: char) -> bool {
    c.is_control() || is_bidi_control(c) || c == '\u{2028}' || c == '\u{2029}'
}

/// Check `s` against the policy for `kind`.
///
/// # Errors
/// `Invalid` naming the first refused character (as `U+XXXX`), where it is and what is accepted;
/// the caller prefixes the field.
pub fn check(s: &str, kind: TextKind) -> Result<()> {
    let allowed = |c: char| kind == TextKind::Prose && (c == '\n' || c == '\t');
    if let Some((i, c)) = s
        .chars()
        .enumerate()
        .find(|&(_, c)| is_refused(c) && !allowed(c))
    {
        let accepted = match kind {
            TextKind::Prose => "printable text, line breaks and tabs",
            TextKind::Line => "printable text on one line",
        };
        return Err(Error::invalid(format!(
            "holds U+{:04X} ({}) at character {}; accepted: {accepted}, without control or bidirectional formatting characters",
            u32::from(c),
            describe(c),
            i + 1
        )));
    }
    Ok(())
}

fn describe(c: char) -> &'static str {
    match c {
        '\0' => "NUL",
        '\n' => "line feed",
        '\r' => "carriage return",
        '\t' => "tab",
        '\u{1b}' => "escape",
        c if is_bidi_control(c) => "a bidirectional formatting character",
        '\u{2028}' | '\u{2029}' => "a line separator",
        _ => "a control character",
    }
}

/// `s` with every line break and tab as one space: for one-line formats such as the A1111
/// `parameters` text, where a line break would start a line the reader trusts.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_refused) {
        Cow::Owned(
            s.chars()
                .map(|c| if is_refused(c) { ' ' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// `s` safe to print on a terminal: every refused character (line breaks and tabs included)
/// written as `\u{…}`, so text stored before this policy, or sent by a broken server, can
/// neither move the cursor nor reorder a line.
pub fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_refused) {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            if is_refused(c) {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

/// Check a parsed batch's one-line text (name, idempotency key, tags, job keys) and the
/// manifest itself against the policy; prompts were checked when they were parsed
/// ([`crate::Prompt::parse`]). Every text is stored and shown back, so nothing refused here
/// reaches a database or a terminal.
///
/// # Errors
/// `Invalid` naming the manifest field (and its line where it can be found).
pub fn check_batch(manifest: &str, spec: &BatchSpec) -> Result<()> {
    if let Some(i) = manifest.find('\0') {
        let line = manifest[..i].matches('\n').count() + 1;
        return Err(Error::invalid(format!(
            "the manifest holds a NUL byte on line {line}; accepted: text without NUL"
        )));
    }
    let field = |path: &str, e: Error| field_error_in(manifest, path, &e.to_string());
    check(&spec.name, TextKind::Line).map_err(|e| field("name", e))?;
    if let Some(k) = &spec.idempotency_key {
        check(k, TextKind::Line).map_err(|e| field("idempotency_key", e))?;
    }
    for (k, v) in &spec.tags {
        check(k, TextKind::Line).map_err(|e| field("tags", e.prefixed("a key ")))?;
        check(v, TextKind::Line).map_err(|e| field(&format!("tags.{}", printable(k)), e))?;
    }
    for job in &spec.jobs {
        check(&job.key, TextKind::Line).map_err(|e| {
            field(
                "key",
                e.prefixed(&format!(
                    "the job key `{}`, built from `vars` values or given as `jobs[].key`, ",
                    printable(&job.key)
                )),
            )
        })?;
    }
    Ok(())
}

trait Prefixed {
    fn prefixed(self, p: &str) -> Error;
}

impl Prefixed for Error {
    fn prefixed(self, p: &str) -> Error {
        Error::invalid(format!("{p}{self}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_refused() {
        for bad in [
            "a\0b",
            "a\rb",
            "a\u{1b}[2Jb",
            "a\u{7f}",
            "a\u{85}",
            "evil\u{202E}gnp.exe",
            "a\u{2066}b",
            "a\u{2028}b",
        ] {
            for kind in [TextKind::Prose, TextKind::Line] {
                assert!(check(bad, kind).is_err(), "{bad:?} {kind:?}");
            }
        }
        assert_eq!(
            check("ab\0", TextKind::Line).unwrap_err().to_string(),
            "holds U+0000 (NUL) at character 3; accepted: printable text on one line, without control or bidirectional formatting characters"
        );
        assert!(check("a\nb\tc", TextKind::Prose).is_ok());
        assert!(check("a\nb", TextKind::Line).is_err());
        assert!(check("a\tb", TextKind::Line).is_err());
        assert!(check("ein Bäcker, 猫, עברית, emoji 🎨", TextKind::Line).is_ok());
    }

    #[test]
    fn batches_name_the_field() {
        let m = |extra: &str| {
            format!("name: b\nmodel: m\nprompt: \"a {{c}}\"\nvars: {{c: [x]}}\nseeds: [1]\n{extra}")
        };
        let spec_of = |text: &str| crate::parse_manifest(text).unwrap();
        let ok = m("tags: {team: ads}\n");
        assert!(check_batch(&ok, &spec_of(&ok)).is_ok());

        let text = m("");
        let mut spec = spec_of(&text);
        spec.name = "evil\u{202E}gnp".into();
        let e = check_batch(&text, &spec).unwrap_err().to_string();
        assert!(
            e.starts_with("manifest field `name` (line 1): holds U+202E"),
            "{e}"
        );

        let mut spec = spec_of(&text);
        spec.tags.insert("team".into(), "a\u{1b}[31m".into());
        let e = check_batch(&text, &spec).unwrap_err().to_string();
        assert!(
            e.starts_with("manifest field `tags.team`: holds U+001B (escape)"),
            "{e}"
        );

        let mut spec = spec_of(&text);
        spec.jobs[0].key = "c=x\ny".into();
        let e = check_batch(&text, &spec).unwrap_err().to_string();
        assert!(e.contains("the job key `c=x\\u{a}y`"), "{e}");

        let json = r#"{"name": "b", "model": "m", "prompt": "a\u0000b", "seeds": [1]}"#;
        let e = crate::parse_manifest(json).unwrap_err().to_string();
        assert!(e.starts_with("manifest field `prompt`"), "{e}");
        assert!(e.contains("holds U+0000 (NUL) at character 2"), "{e}");
        let yaml =
            "name: b\nmodel: m\nprompt: p\nseeds: [1]\ndefaults: {negative_prompt: \"x\\e[2J\"}\n";
        let e = crate::parse_manifest(yaml).unwrap_err().to_string();
        assert!(e.contains("negative_prompt") && e.contains("U+001B"), "{e}");
        assert!(crate::Prompt::parse("line one\nline two\tand a tab").is_ok());

        let text = m("# a comment \0\n");
        let e = check_batch(&text, &spec_of(&ok)).unwrap_err().to_string();
        assert_eq!(
            e,
            "the manifest holds a NUL byte on line 6; accepted: text without NUL"
        );
    }

    #[test]
    fn escaping() {
        assert_eq!(
            one_line("a\nNegative prompt: x\tb"),
            "a Negative prompt: x b"
        );
        assert!(matches!(one_line("plain"), Cow::Borrowed(_)));
        assert_eq!(
            printable("a\u{1b}[2J\u{202E}b\n"),
            "a\\u{1b}[2J\\u{202e}b\\u{a}"
        );
        assert!(matches!(printable("Bäcker"), Cow::Borrowed(_)));
    }
}
