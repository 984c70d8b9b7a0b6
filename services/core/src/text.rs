//! One policy for the free text clients send (prompts, batch names, tags, keys), the same in
//! every mode, and the escaping used wherever such text is shown or embedded.
//!
//! Refused everywhere: NUL and every other control character (C0, DEL, C1), the Unicode line and
//! paragraph separators, and the bidirectional formatting characters (embeddings, overrides,
//! isolates, marks), which reorder what a terminal or a listing shows. Prompts
//! ([`TextKind::Prose`]) may also hold `\n` and `\t` (a multi-line YAML prompt): the text encoder
//! reads them as spaces, and the `parameters` metadata writes them as spaces
//! ([`one_line`]), so a prompt cannot forge a line there. Names, tags and keys
//! ([`TextKind::Line`]) are one line.//!
//! The policy for one text is in `policy`; `batch` applies it to a parsed batch.

mod batch;
mod policy;

pub use batch::check_batch;
pub use policy::{TextKind, check, one_line, printable};

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

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
        let mut jobs: Vec<_> = spec.jobs.iter().collect();
        jobs[0].key = "c=x\ny".into();
        spec.jobs = jobs.into();
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
