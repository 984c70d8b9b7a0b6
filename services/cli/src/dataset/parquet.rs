//! Parquet: `{split}.parquet`, one row per sample: the image in an `image` column (and `init`,
//! `mask`) of Hugging Face's `Image` struct `{bytes: binary, path: string}`, then the metadata
//! columns. The file's `huggingface` metadata names the features, so `datasets` loads the image
//! columns as images. Rows are buffered and written as a row group once they hold
//! [`super::Options::row_group_bytes`].

use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_buffer::NullBufferBuilder;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use pixelfarm_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::sample::{Cell, Columns, Kind, Media, Sample};
use super::sink::{Sink, io};

/// The image struct's fields, as Hugging Face `datasets` writes an `Image` feature.
fn image_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

/// The schema of every split's file, and its `huggingface` metadata naming its features (in the
/// columns' order, as `datasets` shows them): in the file's key-value metadata for Parquet
/// readers, and in the Arrow schema stored there, which is where pyarrow (and so `datasets`)
/// looks.
fn schema(media: &[&str], columns: &[(String, Kind)]) -> (SchemaRef, KeyValue) {
    let mut fields = Vec::new();
    let mut features = Vec::new();
    let feature =
        |name: &str, json: serde_json::Value| format!("{}:{json}", serde_json::Value::from(name));
    for name in media {
        fields.push(Field::new(*name, DataType::Struct(image_fields()), true));
        features.push(feature(name, serde_json::json!({"_type": "Image"})));
    }
    for (name, kind) in columns {
        let (data_type, dtype) = match kind {
            Kind::Str => (DataType::Utf8, "string"),
            Kind::Int => (DataType::Int64, "int64"),
            Kind::Float => (DataType::Float64, "float64"),
        };
        fields.push(Field::new(name, data_type, true));
        features.push(feature(
            name,
            serde_json::json!({"dtype": dtype, "_type": "Value"}),
        ));
    }
    let hf = format!("{{\"info\":{{\"features\":{{{}}}}}}}", features.join(","));
    let key = "huggingface".to_string();
    let metadata = HashMap::from([(key.clone(), hf.clone())]);
    (
        Arc::new(Schema::new(fields).with_metadata(metadata)),
        KeyValue::new(key, hf),
    )
}

/// An image column: its name, the suffix of its `path`s after the sample key, and its image of a
/// sample.
struct Medium {
    name: &'static str,
    suffix: &'static str,
    of: fn(&Sample) -> Option<&Media>,
}

fn image_of(s: &Sample) -> Option<&Media> {
    Some(&s.image)
}

fn init_of(s: &Sample) -> Option<&Media> {
    s.init.as_ref()
}

fn mask_of(s: &Sample) -> Option<&Media> {
    s.mask.as_ref()
}

/// A metadata column being built.
enum Column {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
}

/// An image column being built.
struct ImageColumn {
    bytes: BinaryBuilder,
    path: StringBuilder,
    nulls: NullBufferBuilder,
}

impl ImageColumn {
    fn new() -> Self {
        ImageColumn {
            bytes: BinaryBuilder::new(),
            path: StringBuilder::new(),
            nulls: NullBufferBuilder::new(0),
        }
    }

    fn push(&mut self, key: &str, suffix: &str, media: Option<&Media>) {
        match media {
            Some(m) => {
                self.bytes.append_value(&m.bytes);
                self.path.append_value(format!("{key}{suffix}.{}", m.ext));
                self.nulls.append_non_null();
            }
            None => {
                self.bytes.append_null();
                self.path.append_null();
                self.nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        let arrays: Vec<ArrayRef> =
            vec![Arc::new(self.bytes.finish()), Arc::new(self.path.finish())];
        Arc::new(StructArray::new(
            image_fields(),
            arrays,
            self.nulls.finish(),
        ))
    }
}

/// One split's file and the rows of its next row group.
struct SplitFile {
    writer: ArrowWriter<File>,
    images: Vec<ImageColumn>,
    columns: Vec<Column>,
    /// Rows in the builders.
    rows: usize,
    /// Image and text bytes in the builders.
    buffered: u64,
}

impl SplitFile {
    /// Write the buffered rows as one row group.
    fn flush(&mut self, schema: &SchemaRef) -> Result<()> {
        let mut arrays: Vec<ArrayRef> = self.images.iter_mut().map(ImageColumn::finish).collect();
        arrays.extend(self.columns.iter_mut().map(|c| -> ArrayRef {
            match c {
                Column::Str(b) => Arc::new(b.finish()),
                Column::Int(b) => Arc::new(b.finish()),
                Column::Float(b) => Arc::new(b.finish()),
            }
        }));
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(parquet_error)?;
        self.writer.write(&batch).map_err(parquet_error)?;
        self.writer.flush().map_err(parquet_error)?;
        self.rows = 0;
        self.buffered = 0;
        Ok(())
    }
}

fn parquet_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::with_source(ErrorKind::Permanent, "cannot write parquet", e)
}

/// The files being written.
pub struct Files {
    dir: PathBuf,
    schema: SchemaRef,
    /// The image columns (`image`, and `init`, `mask` where the batch has them).
    media: Vec<Medium>,
    kinds: Vec<Kind>,
    props: WriterProperties,
    row_group_bytes: u64,
    /// Each split's file, once it has a sample.
    open: [Option<SplitFile>; 3],
}

impl Files {
    /// Files in `dir` with `columns`, row groups of about `row_group_bytes`.
    pub fn new(dir: &Path, columns: &Columns, row_group_bytes: u64) -> Self {
        let mut media = vec![Medium {
            name: "image",
            suffix: "",
            of: image_of,
        }];
        if columns.init {
            media.push(Medium {
                name: "init",
                suffix: "_init",
                of: init_of,
            });
        }
        if columns.mask {
            media.push(Medium {
                name: "mask",
                suffix: "_mask",
                of: mask_of,
            });
        }
        let names: Vec<&str> = media.iter().map(|m| m.name).collect();
        let metadata = columns.metadata();
        let (schema, hf) = schema(&names, &metadata);
        // Row groups are cut here, by bytes; no dictionary or statistics for the image bytes
        // (every value is distinct, and min/max would copy images into the footer).
        let mut props = WriterProperties::builder()
            .set_key_value_metadata(Some(vec![hf]))
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None);
        for name in &names {
            let bytes = ColumnPath::from(vec![name.to_string(), "bytes".to_string()]);
            props = props
                .set_column_dictionary_enabled(bytes.clone(), false)
                .set_column_statistics_enabled(bytes, EnabledStatistics::None);
        }
        Files {
            dir: dir.to_path_buf(),
            schema,
            media,
            kinds: metadata.iter().map(|(_, k)| *k).collect(),
            props: props.build(),
            row_group_bytes,
            open: Default::default(),
        }
    }
}

impl Sink for Files {
    fn add(&mut self, s: Sample) -> Result<()> {
        let file = match &mut self.open[s.split.index()] {
            Some(f) => f,
            slot => {
                let path = self.dir.join(format!("{}.parquet", s.split.name()));
                let f = File::create(&path).map_err(io("cannot create a parquet file"))?;
                let writer = ArrowWriter::try_new(f, self.schema.clone(), Some(self.props.clone()))
                    .map_err(parquet_error)?;
                slot.insert(SplitFile {
                    writer,
                    images: self.media.iter().map(|_| ImageColumn::new()).collect(),
                    columns: self
                        .kinds
                        .iter()
                        .map(|k| match k {
                            Kind::Str => Column::Str(StringBuilder::new()),
                            Kind::Int => Column::Int(Int64Builder::new()),
                            Kind::Float => Column::Float(Float64Builder::new()),
                        })
                        .collect(),
                    rows: 0,
                    buffered: 0,
                })
            }
        };
        for (col, medium) in file.images.iter_mut().zip(&self.media) {
            let media = (medium.of)(&s);
            col.push(&s.key, medium.suffix, media);
            file.buffered += media.map_or(0, |m| m.bytes.len() as u64);
        }
        for (col, cell) in file.columns.iter_mut().zip(&s.row) {
            match (col, cell) {
                (Column::Str(b), Cell::Str(v)) => {
                    file.buffered += v.as_ref().map_or(0, |v| v.len() as u64);
                    b.append_option(v.as_deref());
                }
                (Column::Int(b), Cell::Int(v)) => b.append_value(*v),
                (Column::Float(b), Cell::Float(v)) => b.append_option(*v),
                _ => unreachable!("rows follow the columns' kinds"),
            }
        }
        file.rows += 1;
        if file.buffered >= self.row_group_bytes {
            file.flush(&self.schema)?;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let schema = self.schema;
        for mut f in self.open.into_iter().flatten() {
            if f.rows > 0 {
                f.flush(&schema)?;
            }
            f.writer.close().map_err(parquet_error)?;
        }
        Ok(())
    }
}
