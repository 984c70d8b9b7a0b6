//! The policy for one text: which characters are refused, and how text is escaped to be shown.

use std::borrow::Cow;

use crate::{Error, Result};

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
