//! The local file system as queries read it: ranged reads done in place.
//!
//! `object_store`'s `LocalFileSystem` hands every open and every read to tokio's
//! blocking pool, two or three thread hand-offs per Parquet file read; over a lake of
//! 1,000 small snapshots those hand-offs were an eighth of a history scan (perf). A
//! ranged read of a local file that the page cache holds takes microseconds, so
//! [`InlineReads`] does it on the calling thread, as DuckDB's workers do. Everything
//! else (writes, listings, reads with conditions) goes to `LocalFileSystem` as before.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path as FsPath, PathBuf};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

/// `LocalFileSystem` with ranged reads done on the calling thread.
#[derive(Debug, Default)]
pub struct InlineReads {
    inner: LocalFileSystem,
}

impl InlineReads {
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Display for InlineReads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InlineReads({})", self.inner)
    }
}

fn error(path: &FsPath, source: std::io::Error) -> object_store::Error {
    let path = path.display().to_string();
    if source.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound {
            path,
            source: source.into(),
        }
    } else {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{path}: {source}").into(),
        }
    }
}

/// Reads `range` of `file`, which must lie within it.
fn read(file: &File, path: &FsPath, range: Range<u64>) -> Result<Bytes> {
    let len = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{}: range {range:?} too large", path.display()).into(),
        }
    })?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, range.start)
        .map_err(|e| error(path, e))?;
    Ok(buf.into())
}

/// The object's metadata as `LocalFileSystem` gives it (the same ETag scheme).
fn object_meta(location: &Path, meta: &std::fs::Metadata) -> ObjectMeta {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    ObjectMeta {
        location: location.clone(),
        last_modified: DateTime::<Utc>::from(SystemTime::UNIX_EPOCH + modified),
        size: meta.len(),
        e_tag: Some(format!(
            "{:x}-{:x}-{:x}",
            meta.ino(),
            modified.as_micros(),
            meta.len()
        )),
        version: None,
    }
}

impl InlineReads {
    fn get_now(&self, location: &Path, options: &GetOptions) -> Result<GetResult> {
        let path: PathBuf = self.inner.path_to_filesystem(location)?;
        let file = File::open(&path).map_err(|e| error(&path, e))?;
        let meta = file.metadata().map_err(|e| error(&path, e))?;
        if meta.is_dir() {
            return Err(error(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "is a directory"),
            ));
        }
        let meta = object_meta(location, &meta);
        let range = match &options.range {
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("{}: {e}", path.display()).into(),
                })?,
            None => 0..meta.size,
        };
        let bytes = read(&file, &path, range.clone())?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(Box::pin(stream::once(async move { Ok(bytes) }))),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }
}

#[async_trait]
impl ObjectStore for InlineReads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let plain = !options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if plain {
            self.get_now(location, &options)
        } else {
            self.inner.get_opts(location, options).await
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let path = self.inner.path_to_filesystem(location)?;
        let file = File::open(&path).map_err(|e| error(&path, e))?;
        let size = file.metadata().map_err(|e| error(&path, e))?.len();
        ranges
            .iter()
            .map(|r| {
                if r.end > size || r.start > r.end {
                    return Err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: format!(
                            "{}: range {r:?} beyond the file's {size} bytes",
                            path.display()
                        )
                        .into(),
                    });
                }
                read(&file, &path, r.clone())
            })
            .collect()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
