//! WebDataset shards: `{split}-{000000}.tar`, each sample `<key>.png` (the image, in its own
//! format's extension), `<key>.json` (its metadata) and, for img2img and inpainting jobs,
//! `<key>.init.png` and `<key>.mask.png` (WebDataset splits a file name at its first dot: these
//! are the fields `init.png` and `mask.png` of sample `<key>`). A shard holds whole samples and
//! at most `--shard-bytes`, unless one sample alone is bigger. Every tar header has the same
//! mode, owner and time, so the same batch exports to the same bytes.

use pixelfarm_core::{Error, ErrorKind, Result};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::sample::{Columns, Kind, Sample};
use super::sink::{Sink, io, write_json};

/// Tar's block: headers and the padding of each file's data.
const BLOCK: u64 = 512;

/// The two zero blocks that end an archive.
const END: u64 = 2 * BLOCK;

/// The bytes a file of `len` bytes takes in a tar: its header and its data padded to a block.
fn entry_bytes(len: u64) -> u64 {
    BLOCK + len.div_ceil(BLOCK) * BLOCK
}

/// `--shard-bytes`: a number of bytes, with an optional `KiB`, `MiB` or `GiB` suffix.
///
/// # Errors
/// A message naming `--shard-bytes` and what is accepted.
pub fn parse_shard_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)]
        .into_iter()
        .find_map(|(suffix, unit)| t.strip_suffix(suffix).map(|d| (d.trim(), unit)))
        .unwrap_or((t, 1));
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "--shard-bytes `{s}` is not a size; accepted: a positive number of bytes, optionally with KiB, MiB or GiB (e.g. 1GiB)"
            )
        })
}

/// The shard of a split being written.
struct Shard {
    tar: tar::Builder<BufWriter<File>>,
    /// Bytes written so far, without the end of the archive.
    bytes: u64,
}

/// The shards being written.
pub struct Shards {
    dir: PathBuf,
    columns: Vec<(String, Kind)>,
    limit: u64,
    /// Each split's open shard.
    open: [Option<Shard>; 3],
    /// Each split's shards so far: the number of the next.
    written: [u32; 3],
}

impl Shards {
    /// Shards of at most `limit` bytes in `dir`, samples with `columns`.
    pub fn new(dir: &Path, columns: &Columns, limit: u64) -> Self {
        Shards {
            dir: dir.to_path_buf(),
            columns: columns.metadata(),
            limit,
            open: Default::default(),
            written: [0; 3],
        }
    }
}

/// Append `data` as the file `name`, with a header that is the same for the same name and size.
fn append(tar: &mut tar::Builder<BufWriter<File>>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).map_err(io("cannot name a tar entry"))?;
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, data).map_err(io("cannot write a shard"))
}

/// Write the end of `shard`'s archive.
fn close(shard: Shard) -> Result<()> {
    shard
        .tar
        .into_inner()
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .map(drop)
        .map_err(io("cannot write a shard"))
}

impl Sink for Shards {
    fn add(&mut self, s: Sample) -> Result<()> {
        let mut json = Vec::new();
        write_json(&mut json, &[], &self.columns, &s.row).map_err(io("cannot write json"))?;
        let mut files = vec![(format!("{}.{}", s.key, s.image.ext), &s.image.bytes[..])];
        files.push((format!("{}.json", s.key), &json[..]));
        for (field, media) in [("init", &s.init), ("mask", &s.mask)] {
            if let Some(m) = media {
                files.push((format!("{}.{field}.{}", s.key, m.ext), &m.bytes[..]));
            }
        }
        let size: u64 = files.iter().map(|(_, d)| entry_bytes(d.len() as u64)).sum();
        let i = s.split.index();
        if let Some(shard) = self.open[i].take_if(|o| o.bytes + size + END > self.limit) {
            close(shard)?;
        }
        let shard = match &mut self.open[i] {
            Some(shard) => shard,
            slot => {
                let path = self
                    .dir
                    .join(format!("{}-{:06}.tar", s.split.name(), self.written[i]));
                let file = File::create(&path).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Permanent,
                        format!("cannot create {}", path.display()),
                        e,
                    )
                })?;
                self.written[i] += 1;
                slot.insert(Shard {
                    tar: tar::Builder::new(BufWriter::new(file)),
                    bytes: 0,
                })
            }
        };
        for (name, data) in &files {
            append(&mut shard.tar, name, data)?;
        }
        shard.bytes += size;
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.open.into_iter().flatten().try_for_each(close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_shard_bytes("1000"), Ok(1000));
        assert_eq!(parse_shard_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_shard_bytes("1 GiB"), Ok(1 << 30));
        for bad in ["0", "-1", "1GB", "", "x", "99999999999GiB"] {
            let e = parse_shard_bytes(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("--shard-bytes `{bad}`")) && e.contains("accepted:"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_tar_entry_takes_a_header_and_whole_blocks() {
        assert_eq!(entry_bytes(0), 512);
        assert_eq!(entry_bytes(1), 1024);
        assert_eq!(entry_bytes(512), 1024);
        assert_eq!(entry_bytes(513), 1536);
    }
}
