//! What a manifest may cost, and the scan of a YAML text that enforces the budgets on the raw text
//! before a YAML parser runs.

use super::errors::field_error;
use crate::Error;

/// Most jobs one batch may expand to: the store writes a batch in one transaction.
pub const MAX_JOBS_PER_BATCH: u64 = 1_000_000;

/// Largest manifest text accepted, in bytes: every other budget below is priced from it, and it
/// matches the HTTP body limit so the gRPC path (whose own limit is larger) is held to the same.
pub const MAX_MANIFEST_BYTES: usize = 2 << 20;

/// Deepest nesting of YAML mappings and lists: a real manifest needs 5 (`jobs[].init.image`).
/// JSON is held to serde_json's own 128 levels, which cost nothing more.
pub const MAX_NESTING_DEPTH: usize = 16;

/// Most `[`/`{` a YAML manifest may leave open at once, counted on the raw text before the YAML
/// parser sees it: both YAML parsers look ahead over a whole flow collection with work that
/// grows with its depth (100 000 nested `[` cost 78 s), so the text is refused before they run.
/// Far above [`MAX_NESTING_DEPTH`], which the parser's events enforce exactly, so that brackets
/// in prompts are not mistaken for nesting.
pub const MAX_OPEN_BRACKETS: usize = 256;

/// Most bytes one batch's jobs may take (jobs × bytes per job: prompt, negative prompt, key and
/// the job's fixed fields), computed from the manifest before any job is built; bounds what one
/// batch writes to the database (a million jobs of 500 bytes fit). The jobs are never all in
/// memory at once: they are built as they are written ([`super::Jobs`]).
pub const MAX_EXPANDED_BYTES: u64 = 512 << 20;

/// Most tags on one batch: tags are re-sent with every GET and watch event of the batch.
pub const MAX_TAGS: usize = 64;

/// Longest batch name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 64;

/// Longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 256;

/// Why the YAML budget scan stopped.
pub(super) enum Scan {
    /// A budget is exceeded (an anchor, an alias, too deep): refuse before deserializing.
    Refused(Error),
    /// The scanner found a syntax error: serde_yaml reports it with its own message, which
    /// names the field; this error is used only if serde_yaml accepts the text.
    Unreadable(Error),
}

/// Refuse a YAML text that leaves more than [`MAX_OPEN_BRACKETS`] `[`/`{` open at once, in one
/// linear pass over the characters, before a YAML parser runs. An upper bound of the flow
/// nesting: every `[` and `{` counts as an opening, wherever it is (a quoted string, a comment,
/// a prompt); a `]` or `}` inside what looks like a quoted string or a comment closes only an
/// opening of that same string or comment, so text can make the count too high (a refusal) but
/// closing brackets hidden in text cannot lower it below the real nesting.
pub(super) fn open_brackets(text: &str) -> std::result::Result<(), Scan> {
    let (mut open, mut line) = (0usize, 1usize);
    // The quote being read (`#` for a comment), and the openings counted inside it.
    let mut inside: Option<char> = None;
    let mut local = 0usize;
    // The character before the current one; `\n` at the start.
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
        }
        match (inside, c) {
            (_, '[' | '{') => {
                open += 1;
                if inside.is_some() {
                    local += 1;
                }
            }
            (Some(_), ']' | '}') => {
                if local > 0 {
                    local -= 1;
                    open -= 1;
                }
            }
            (None, ']' | '}') => open = open.saturating_sub(1),
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some('\''), '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
            }
            (Some('#'), '\n') => inside = None,
            (Some('#'), _) => {}
            (Some(q), _) if c == q => inside = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if prev.is_whitespace() || "[{,:?-".contains(prev) => {
                inside = Some(c);
                local = 0;
            }
            (None, '#') if prev.is_whitespace() => {
                inside = Some('#');
                local = 0;
            }
            (None, _) => {}
        }
        if open > MAX_OPEN_BRACKETS {
            return Err(Scan::Refused(field_error(
                "",
                Some(line),
                &format!(
                    "nests more than {MAX_OPEN_BRACKETS} `[`/`{{` deep; accepted: at most {MAX_NESTING_DEPTH} levels of mappings and lists"
                ),
            )));
        }
        prev = c;
    }
    Ok(())
}

/// Walk the YAML event stream once, refusing anchors (`&a`), aliases (`*a`) and nesting deeper
/// than [`MAX_NESTING_DEPTH`], naming the field and line. The parser is pulled one event at a
/// time and dropped at the first refusal, so a hostile text costs at most one pass over the
/// part read. Aliases are refused rather than counted: serde_yaml copies the aliased node for
/// every alias, so a 2 MiB manifest could otherwise expand to gigabytes. A `*` or `&` inside a
/// scalar (`"a * b"`, `x & y`) is text, not an alias, and is accepted.
pub(super) fn scan_yaml(text: &str) -> std::result::Result<(), Scan> {
    use yaml_rust2::parser::{Event, Parser};

    /// Where the next node of an open collection goes.
    enum Frame {
        /// In a mapping: its current key (once read), and whether the next node is a key.
        Map { key: String, at_key: bool },
        /// In a list: the index of the next item.
        Seq { index: usize },
    }
    fn path(frames: &[Frame]) -> String {
        let mut p = String::new();
        for f in frames {
            match f {
                Frame::Map { key, at_key: false } => {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(key);
                }
                Frame::Map { at_key: true, .. } => {}
                Frame::Seq { index } => p.push_str(&format!("[{index}]")),
            }
        }
        p
    }
    /// A node of the top frame is complete: the next one is the next key or item.
    fn advance(frames: &mut [Frame]) {
        match frames.last_mut() {
            Some(Frame::Map { at_key, .. }) => *at_key = !*at_key,
            Some(Frame::Seq { index }) => *index += 1,
            None => {}
        }
    }
    const NO_ANCHORS: &str =
        "YAML anchors and aliases are not accepted (each alias is a copy); write the value out";

    let mut parser = Parser::new_from_str(text);
    let mut frames: Vec<Frame> = Vec::new();
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(e) => e,
            Err(e) => {
                return Err(Scan::Unreadable(field_error(
                    "",
                    Some(e.marker().line()),
                    &format!("is not YAML this scheduler reads: {}", e.info()),
                )));
            }
        };
        let line = Some(mark.line());
        let refuse =
            |frames: &[Frame], msg: &str| Scan::Refused(field_error(&path(frames), line, msg));
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => {
                return Err(refuse(
                    &frames,
                    &format!("is an alias (`*name`); {NO_ANCHORS}"),
                ));
            }
            Event::Scalar(value, _, anchor, _) => {
                if anchor > 0 {
                    return Err(refuse(
                        &frames,
                        &format!("has an anchor (`&name`); {NO_ANCHORS}"),
                    ));
                }
                if let Some(Frame::Map { key, at_key: true }) = frames.last_mut() {
                    *key = value;
                }
                advance(&mut frames);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if anchor > 0 {
                    return Err(refuse(
                        &frames,
                        &format!("has an anchor (`&name`); {NO_ANCHORS}"),
                    ));
                }
                if frames.len() >= MAX_NESTING_DEPTH {
                    return Err(refuse(
                        &frames,
                        &format!(
                            "nests deeper than {MAX_NESTING_DEPTH} levels; accepted: at most {MAX_NESTING_DEPTH} levels of mappings and lists"
                        ),
                    ));
                }
                frames.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map {
                        key: String::new(),
                        at_key: true,
                    }
                } else {
                    Frame::Seq { index: 0 }
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop();
                advance(&mut frames);
            }
            _ => {}
        }
    }
}
