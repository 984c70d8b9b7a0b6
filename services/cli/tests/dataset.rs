//! Dataset exports of a real batch: `pixelfarm run`'s pipeline (SQLite, in-process broker, the
//! test-pattern renderer) and the `pixelfarm` binary's flags.

use pixelfarm_cli::dataset::{self, Format, Options, Split};
use pixelfarm_cli::embedded::{self, DATASET_DIR};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// 4 × 3 variants × 3 seeds of the test pattern, and one img2img job the test pattern cannot
/// render (it fails: the export leaves it out).
const MANIFEST: &str = "name: dataset
model: test-pattern
idempotency_key: dataset-test
defaults: {width: 16, height: 8, steps: 2}
prompt: a {color} {shape}
vars:
  color: [red, green, blue, cyan]
  shape: [circle, square, star]
seeds: {base: 3, count: 3}
jobs:
  - {key: from-an-image, prompt: a red circle, init: {image: {key: init.png}, strength: 0.5}}
";

/// A manifest folder with `init.png` beside the manifest.
fn manifest_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let image = pixelfarm_core::RgbImage {
        width: 16,
        height: 8,
        rgb: vec![200; 16 * 8 * 3],
    };
    let meta = pixelfarm_image::encode::PngMetadata {
        parameters: String::new(),
        provenance_json: String::new(),
    };
    let png = pixelfarm_image::encode::encode_png(&image, &meta).unwrap();
    std::fs::write(dir.path().join("init.png"), png).unwrap();
    dir
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Render (or resume) the batch into `out` with a dataset in `opts`' format.
async fn run(base: &Path, out: &Path, opts: &Options) -> dataset::Summary {
    let opts = embedded::RunOptions {
        workers: 2,
        progress: false,
        dataset: Some(opts),
        webhook_wait: std::time::Duration::ZERO,
        signing: &Default::default(),
        registry: None,
    };
    let r = embedded::run(MANIFEST.into(), base, out, opts)
        .await
        .unwrap();
    r.dataset.unwrap()
}

/// The metadata rows of an imagefolder export, with the split each is in.
fn imagefolder_rows(dir: &Path) -> Vec<(Split, serde_json::Value)> {
    let mut rows = Vec::new();
    for split in Split::ALL {
        let Ok(text) = std::fs::read_to_string(dir.join(split.name()).join("metadata.jsonl"))
        else {
            continue;
        };
        for line in text.lines() {
            rows.push((split, serde_json::from_str(line).unwrap()));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_exports_the_same_batch_to_the_same_bytes() {
    let base = manifest_dir();
    let out = tempfile::tempdir().unwrap();
    let dataset = out.path().join(DATASET_DIR);
    for format in [Format::ImageFolder, Format::WebDataset, Format::Parquet] {
        let mut opts = Options::new(format);
        opts.shard_bytes = 16 << 10;
        opts.row_group_bytes = 4 << 10;
        let first = run(base.path(), out.path(), &opts).await;
        assert_eq!(first.total(), 36, "{format:?}");
        assert_eq!(
            (first.skipped.total(), first.skipped.dead),
            (1, 1),
            "{format:?}"
        );
        let written = files(&dataset);
        let again = run(base.path(), out.path(), &opts).await;
        assert_eq!(again.samples, first.samples, "{format:?}");
        let rewritten = files(&dataset);
        assert_eq!(
            written.keys().collect::<Vec<_>>(),
            rewritten.keys().collect::<Vec<_>>(),
            "{format:?}"
        );
        assert!(written == rewritten, "{format:?}: the same bytes");
        match format {
            Format::ImageFolder => check_imagefolder(&dataset, &first),
            Format::WebDataset => check_shards(&dataset, opts.shard_bytes),
            Format::Parquet => check_parquet(&dataset, &first),
        }
    }
}

fn check_imagefolder(dir: &Path, summary: &dataset::Summary) {
    let rows = imagefolder_rows(dir);
    let mut split_of_variant: HashMap<String, Split> = HashMap::new();
    for (split, row) in &rows {
        let variant = row["variant_key"].as_str().unwrap().to_string();
        let job_key = row["job_key"].as_str().unwrap();
        assert!(job_key.starts_with(&format!("{variant}#")), "{row}");
        // Every seed of a variant in one split.
        assert_eq!(
            *split_of_variant.entry(variant).or_insert(*split),
            *split,
            "{row}"
        );
        // The variables are columns; the batch has an init image (of the failed job), so every
        // row has the init columns, null here.
        let color = job_key
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("color=")
            .unwrap();
        assert_eq!(row["var_color"], color, "{row}");
        assert!(row["var_shape"].is_string(), "{row}");
        assert!(
            row["init_file_name"].is_null() && row["init_strength"].is_null(),
            "{row}"
        );
        assert_eq!(
            (row["width"].as_u64(), row["height"].as_u64()),
            (Some(16), Some(8))
        );
        let file = dir
            .join(split.name())
            .join(row["file_name"].as_str().unwrap());
        let png = std::fs::read(file).unwrap();
        assert_eq!(
            pixelfarm_core::sha256_hex(&png),
            row["image_sha256"].as_str().unwrap()
        );
    }
    assert_eq!(split_of_variant.len(), 12);
    for split in Split::ALL {
        let n = rows.iter().filter(|(s, _)| *s == split).count() as u64;
        assert_eq!(n, summary.samples[split.index()], "{split}");
    }
}

fn check_shards(dir: &Path, limit: u64) {
    let mut shards = 0;
    let mut samples = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let size = std::fs::metadata(&path).unwrap().len();
        let mut tar = tar::Archive::new(std::fs::File::open(&path).unwrap());
        let mut keys = Vec::new();
        for entry in tar.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (h.mtime().unwrap(), h.uid().unwrap(), h.mode().unwrap()),
                (0, 0, 0o644)
            );
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let (key, field) = name.split_once('.').unwrap();
            assert!(["png", "json"].contains(&field), "{name}");
            if !keys.contains(&key.to_string()) {
                keys.push(key.to_string());
            }
        }
        assert!(
            size <= limit || keys.len() == 1,
            "{}: {size} bytes",
            path.display()
        );
        shards += 1;
        samples += keys.len();
    }
    assert_eq!(samples, 36);
    assert!(shards > 3, "{shards} shards: the bound cut the splits");
}

fn check_parquet(dir: &Path, summary: &dataset::Summary) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    for split in Split::ALL {
        let path = dir.join(format!("{split}.parquet"));
        let want = summary.samples[split.index()];
        if want == 0 {
            assert!(!path.exists());
            continue;
        }
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows() as u64, want, "{split}");
        if want > 4 {
            assert!(meta.num_row_groups() > 1, "{split}: bounded row groups");
        }
        let hf = meta
            .file_metadata()
            .key_value_metadata()
            .unwrap()
            .iter()
            .find(|kv| kv.key == "huggingface")
            .and_then(|kv| kv.value.clone())
            .unwrap();
        let hf: serde_json::Value = serde_json::from_str(&hf).unwrap();
        assert_eq!(hf["info"]["features"]["image"]["_type"], "Image");
        assert_eq!(hf["info"]["features"]["init"]["_type"], "Image");
        assert_eq!(hf["info"]["features"]["var_color"]["dtype"], "string");
    }
}

#[test]
fn bad_flags_are_refused_naming_the_flag() {
    let pixelfarm = env!("CARGO_BIN_EXE_pixelfarm");
    for (args, says) in [
        (
            &["--format", "zip"][..],
            "invalid value 'zip' for '--format <FORMAT>'",
        ),
        (
            &["--format", "zip"],
            "[possible values: folder, imagefolder, webdataset, parquet]",
        ),
        (
            &["--format", "parquet", "--split", "0.9,0.2,0"],
            "--split `0.9,0.2,0` sums to 1.1",
        ),
        (
            &["--format", "webdataset", "--shard-bytes", "1GB"],
            "--shard-bytes `1GB` is not a size",
        ),
        (
            &["--format", "parquet", "--shard-bytes", "1GiB"],
            "--shard-bytes applies to --format webdataset only",
        ),
        (
            &["--split", "0.8,0.1,0.1"],
            "--split and --shard-bytes apply to a dataset",
        ),
    ] {
        let out = tempfile::tempdir().unwrap();
        let r = std::process::Command::new(pixelfarm)
            .args(["run", "missing.yaml", "--out"])
            .arg(out.path().join("o"))
            .args(args)
            .output()
            .unwrap();
        assert!(!r.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.path().join("o").exists(), "{args:?}: nothing written");
    }
}
