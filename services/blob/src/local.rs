//! [`LocalBlob`]: objects as files under a directory.

use async_trait::async_trait;
use bytes::Bytes;
use pixelfarm_core::{BlobStore, Error, ErrorKind, Result};
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;

use crate::{too_large, validate_key};

/// A directory of objects; a key is a relative path. Writes go to a temporary file in the same
/// directory and are renamed into place, so a reader never sees a partial object.
#[derive(Debug, Clone)]
pub struct LocalBlob {
    root: PathBuf,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        };
        Error::with_source(kind, what, e)
    }
}

impl LocalBlob {
    /// Objects under `root` (created if missing).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(io("cannot create blob directory"))?;
        Ok(LocalBlob { root })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Write `bytes` to a temporary file beside `path`, then rename it into place: a reader sees the
/// old file or the new one, never a part.
fn put_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .expect("a validated key has a parent under root");
    std::fs::create_dir_all(dir).map_err(io("cannot create object directory"))?;
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes).map_err(io("cannot write object"))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("cannot move object into place")(e));
    }
    Ok(())
}

#[async_trait]
impl BlobStore for LocalBlob {
    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<()> {
        validate_key(key)?;
        let path = self.root.join(key);
        // One trip to the blocking pool for the folder, the file and the rename: each
        // `tokio::fs` call would be a trip (and two thread wake-ups) of its own.
        tokio::task::spawn_blocking(move || put_file(&path, &bytes))
            .await
            .map_err(|e| Error::with_source(ErrorKind::Transient, "file write task failed", e))?
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        validate_key(key)?;
        match tokio::fs::read(self.root.join(key)).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("object {key} not found")))
            }
            Err(e) => Err(io("cannot read object")(e)),
        }
    }

    async fn get_limited(&self, key: &str, max_bytes: u64) -> Result<Bytes> {
        validate_key(key)?;
        let file = match tokio::fs::File::open(self.root.join(key)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!("object {key} not found")));
            }
            Err(e) => return Err(io("cannot read object")(e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(io("cannot read object"))?
            .len();
        if size > max_bytes {
            return Err(too_large(key, Some(size), max_bytes));
        }
        // One byte past the limit tells a file that grew since from one that did not.
        let mut buf = Vec::with_capacity(size as usize);
        file.take(max_bytes + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(io("cannot read object"))?;
        if buf.len() as u64 > max_bytes {
            return Err(too_large(key, None, max_bytes));
        }
        Ok(Bytes::from(buf))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match tokio::fs::remove_file(self.root.join(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io("cannot delete object")(e))
            }
            _ => Ok(()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("cannot list objects")(e)),
            };
            while let Some(entry) = rd.next_entry().await.map_err(io("cannot list objects"))? {
                let path = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with(".tmp-") {
                    continue;
                }
                if entry
                    .file_type()
                    .await
                    .map_err(io("cannot list objects"))?
                    .is_dir()
                {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if key.starts_with(prefix) && validate_key(&key).is_ok() {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn ping(&self) -> Result<()> {
        let meta = tokio::fs::metadata(&self.root)
            .await
            .map_err(io("cannot reach the output folder"))?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Permanent,
                format!("output folder {} is not a directory", self.root.display()),
            ))
        }
    }
}
