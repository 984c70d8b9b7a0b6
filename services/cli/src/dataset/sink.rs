//! What every dataset layout does with a sample, and the JSON of a metadata row.

use pixelfarm_core::{Error, ErrorKind, Result};
use std::io::Write;

use super::sample::{Cell, Kind, Sample};

/// One sink of samples: a dataset layout being written.
pub trait Sink {
    /// Write `sample` into its split.
    fn add(&mut self, sample: Sample) -> Result<()>;
    /// Complete every file.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// An I/O error as a `Permanent` one saying what could not be done.
pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::with_source(ErrorKind::Permanent, what, e)
}

/// Write `row` as one JSON object: the `first` fields (file names), then the metadata columns,
/// in order (so the same sample always gives the same bytes).
pub fn write_json(
    out: &mut impl Write,
    first: &[(&str, Option<&str>)],
    columns: &[(String, Kind)],
    row: &[Cell],
) -> std::io::Result<()> {
    let mut sep = "{";
    let mut field = |out: &mut dyn Write, name: &str, value: serde_json::Value| {
        write!(out, "{sep}{}:{value}", serde_json::Value::from(name))?;
        sep = ",";
        Ok::<_, std::io::Error>(())
    };
    for (name, value) in first {
        field(out, name, value.map_or(serde_json::Value::Null, Into::into))?;
    }
    for ((name, _), cell) in columns.iter().zip(row) {
        let value = match cell {
            Cell::Str(s) => s.as_deref().map_or(serde_json::Value::Null, Into::into),
            Cell::Int(i) => (*i).into(),
            Cell::Float(f) => f.map_or(serde_json::Value::Null, Into::into),
        };
        field(out, name, value)?;
    }
    out.write_all(b"}")
}
