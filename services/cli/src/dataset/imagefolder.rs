//! The Hugging Face `imagefolder` layout: a folder per split holding the images and a
//! `metadata.jsonl` whose `file_name` (and `init_file_name`, `mask_file_name`) columns name them;
//! `datasets.load_dataset("imagefolder", data_dir=...)` loads each `*file_name` column as an image.

use pixelfarm_core::Result;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::sample::{Columns, Kind, Media, Sample};
use super::sink::{Sink, io, write_json};

/// The layout being written.
pub struct ImageFolder {
    dir: PathBuf,
    columns: Vec<(String, Kind)>,
    init: bool,
    mask: bool,
    /// Each split's `metadata.jsonl`, once it has a sample (a split without samples has no folder:
    /// `datasets` would refuse an empty one).
    metadata: [Option<BufWriter<File>>; 3],
}

impl ImageFolder {
    /// A layout in `dir` with `columns`.
    pub fn new(dir: &Path, columns: &Columns) -> Self {
        ImageFolder {
            dir: dir.to_path_buf(),
            columns: columns.metadata(),
            init: columns.init,
            mask: columns.mask,
            metadata: Default::default(),
        }
    }
}

/// Write `media` as `folder/name`, returning `name`.
fn write(folder: &Path, name: String, media: &Media) -> Result<String> {
    std::fs::write(folder.join(&name), &media.bytes).map_err(io("cannot write an image"))?;
    Ok(name)
}

impl Sink for ImageFolder {
    fn add(&mut self, s: Sample) -> Result<()> {
        let folder = self.dir.join(s.split.name());
        let metadata = match &mut self.metadata[s.split.index()] {
            Some(m) => m,
            slot => {
                std::fs::create_dir_all(&folder).map_err(io("cannot create a split folder"))?;
                let f = File::create(folder.join("metadata.jsonl"))
                    .map_err(io("cannot create metadata.jsonl"))?;
                slot.insert(BufWriter::new(f))
            }
        };
        let file = write(&folder, format!("{}.{}", s.key, s.image.ext), &s.image)?;
        let mut first = vec![("file_name", Some(file))];
        for (wanted, column, suffix, media) in [
            (self.init, "init_file_name", "init", &s.init),
            (self.mask, "mask_file_name", "mask", &s.mask),
        ] {
            if wanted {
                let name = match media {
                    Some(m) => Some(write(&folder, format!("{}_{suffix}.{}", s.key, m.ext), m)?),
                    None => None,
                };
                first.push((column, name));
            }
        }
        let first: Vec<(&str, Option<&str>)> =
            first.iter().map(|(c, n)| (*c, n.as_deref())).collect();
        write_json(metadata, &first, &self.columns, &s.row)
            .and_then(|()| metadata.write_all(b"\n"))
            .map_err(io("cannot write metadata.jsonl"))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.metadata
            .into_iter()
            .flatten()
            .try_for_each(|mut m| m.flush())
            .map_err(io("cannot write metadata.jsonl"))
    }
}
