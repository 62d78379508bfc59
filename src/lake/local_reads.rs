//! The local file system as queries read it: ranged reads done in place.
//!
//! `object_store`'s `LocalFileSystem` hands every open and every read to tokio's
//! blocking pool, two or three thread hand-offs per Parquet file read; over a lake of
//! 1,000 small snapshots those hand-offs were an eighth of a history scan (perf). A
//! ranged read of a local file that the page cache holds takes microseconds, so
//! [`InlineReads`] does it on the calling thread, as DuckDB's workers do. Everything
//! else (writes, listings, whole-object reads, reads with conditions) goes to
//! `LocalFileSystem` as before.

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
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, Result,
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

/// An error about `path` that is neither "not found" nor the file system's own.
fn invalid(path: &FsPath, what: impl fmt::Display) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {what}", path.display()).into(),
    }
}

/// Reads `range` of `file`, which must lie within it.
fn read(file: &File, path: &FsPath, range: Range<u64>) -> Result<Bytes> {
    let len = usize::try_from(range.end.saturating_sub(range.start))
        .map_err(|_| invalid(path, format_args!("range {range:?} too large")))?;
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
    /// The object's file, opened, with its path and metadata.
    fn open(&self, location: &Path) -> Result<(PathBuf, File, std::fs::Metadata)> {
        let path = self.inner.path_to_filesystem(location)?;
        let file = File::open(&path).map_err(|e| error(&path, e))?;
        let meta = file.metadata().map_err(|e| error(&path, e))?;
        Ok((path, file, meta))
    }

    fn get_range_now(&self, location: &Path, range: &GetRange) -> Result<GetResult> {
        let (path, file, meta) = self.open(location)?;
        if meta.is_dir() {
            return Err(error(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "is a directory"),
            ));
        }
        let meta = object_meta(location, &meta);
        let range = range.as_range(meta.size).map_err(|e| invalid(&path, e))?;
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
        // A whole-object read (a CSV of the user's, say) stays streamed in chunks by
        // `LocalFileSystem`; a ranged read is bounded by what its caller asked for.
        let plain = !options.head
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        match &options.range {
            Some(range) if plain => self.get_range_now(location, range),
            _ => self.inner.get_opts(location, options).await,
        }
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let (path, file, meta) = self.open(location)?;
        let size = meta.len();
        ranges
            .iter()
            .map(|r| {
                if r.end > size || r.start > r.end {
                    return Err(invalid(
                        &path,
                        format_args!("range {r:?} beyond the file's {size} bytes"),
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    fn store_with(bytes: &[u8]) -> (tempfile::TempDir, InlineReads, Path) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("data.bin");
        std::fs::write(&file, bytes).expect("write");
        let location = Path::from_absolute_path(&file).expect("absolute path");
        (dir, InlineReads::new(), location)
    }

    #[tokio::test]
    async fn ranged_reads_return_the_bytes_asked_for() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let (_dir, store, location) = store_with(&data);
        let got = store.get_range(&location, 100..250).await.expect("range");
        assert_eq!(&got[..], &data[100..250]);
        let suffix = GetOptions {
            range: Some(GetRange::Suffix(8)),
            ..Default::default()
        };
        let got = store.get_opts(&location, suffix).await.expect("suffix");
        assert_eq!(got.range, 9_992..10_000);
        assert_eq!(got.meta.size, 10_000);
        assert_eq!(&got.bytes().await.expect("bytes")[..], &data[9_992..]);
        let got = store
            .get_ranges(&location, &[0..4, 5_000..5_010])
            .await
            .expect("ranges");
        assert_eq!(
            got,
            vec![
                Bytes::copy_from_slice(&data[0..4]),
                Bytes::copy_from_slice(&data[5_000..5_010])
            ]
        );
        // The whole object is streamed by LocalFileSystem, and equal.
        let whole = store.get(&location).await.expect("get");
        let chunks: Vec<Bytes> = whole.into_stream().try_collect().await.expect("stream");
        assert_eq!(chunks.concat(), data);
    }

    #[tokio::test]
    async fn a_range_past_the_end_or_a_missing_file_is_an_error_naming_it() {
        let (dir, store, location) = store_with(b"short");
        let err = store
            .get_ranges(&location, &[0..2, 3..100])
            .await
            .expect_err("past the end");
        assert!(err.to_string().contains("data.bin"), "{err}");
        let err = store
            .get_range(&location, 10..20)
            .await
            .expect_err("starts past the end");
        assert!(err.to_string().contains("data.bin"), "{err}");
        let missing = Path::from_absolute_path(dir.path().join("gone.bin")).expect("path");
        let err = store.get_range(&missing, 0..1).await.expect_err("missing");
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        let err = store
            .get_ranges(&missing, &[0..1, 1..2])
            .await
            .expect_err("missing");
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    }
}
