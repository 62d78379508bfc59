//! Where a lake lives: a local folder, or a prefix in Azure Blob Storage / ADLS Gen2 or
//! S3, reached through the `object_store` crate DataFusion reads with.
//!
//! Everything the lake does to its files goes through the few operations of [`Lake`]:
//! list, read, create-if-absent, replace, delete, and publish a finished data file.
//! On a local folder they are the filesystem calls the lake always made (temporary
//! names, `fsync`, rename, hard link); on an object store each is one request, the
//! manifest's create a conditional `PutMode::Create`. Object-store calls run on a
//! small runtime of their own ([`io_runtime`]), so the lake's synchronous code can
//! wait for them from any thread, inside a Tokio runtime or not.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{LakeError, io_err};

/// The schemes `--lake` takes besides a plain path.
pub const SCHEMES: &str = "az://, abfs://, abfss://, s3:// or file://";

/// How many object-store requests the lake keeps in flight at once (manifest reads,
/// deletes).
const CONCURRENCY: usize = 32;

/// A data file bigger than this is uploaded in parts.
const SINGLE_PUT_BYTES: u64 = 32 * 1024 * 1024;

/// Size of each part of a multipart upload.
const PART_BYTES: usize = 16 * 1024 * 1024;

/// How many parts of one upload are sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A lake's location; cheap to clone.
#[derive(Clone)]
pub struct Lake(Arc<Location>);

enum Location {
    Local(PathBuf),
    Remote(Remote),
}

struct Remote {
    store: Arc<dyn ObjectStore>,
    /// The lake's folder inside the store; empty for the store's root.
    prefix: ObjPath,
    /// The URL as the user gave it (no credentials: URLs with a query are refused).
    shown: String,
    /// `scheme://authority/`: what an object name is shown after.
    root: String,
}

impl fmt::Debug for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lake({self})")
    }
}

impl fmt::Display for Lake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_ref() {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Remote(r) => f.write_str(&r.shown),
        }
    }
}

impl From<&Path> for Lake {
    fn from(path: &Path) -> Self {
        Lake::local(path)
    }
}

impl From<&PathBuf> for Lake {
    fn from(path: &PathBuf) -> Self {
        Lake::local(path)
    }
}

impl From<PathBuf> for Lake {
    fn from(path: PathBuf) -> Self {
        Lake::local(path)
    }
}

impl From<&Lake> for Lake {
    fn from(lake: &Lake) -> Self {
        lake.clone()
    }
}

/// A `--lake` value that names no lake mdesnap can open.
#[derive(Debug, thiserror::Error)]
pub enum BadLake {
    #[error("'{0}' is not a lake URL: its scheme is none of {SCHEMES}")]
    Scheme(String),
    #[error("'{url}' is not a lake URL: {reason}")]
    Url { url: String, reason: String },
    #[error("lake {url}: {}", redact(&source.to_string()))]
    Store {
        url: String,
        source: object_store::Error,
    },
}

impl Lake {
    /// The lake in a local folder.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Lake(Arc::new(Location::Local(path.into())))
    }

    /// Reads a `--lake` value: a path, or a URL with one of [`SCHEMES`]. Credentials
    /// and endpoints come from the environment the way each SDK's users set them
    /// (`docs/lake-layout.md`, "Object stores").
    pub fn parse(text: &str) -> Result<Self, BadLake> {
        let Some((scheme, _)) = text.split_once("://") else {
            return Ok(Lake::local(text));
        };
        // Shown without its query: a SAS token given there must not reach the error.
        let shown = text.split(['?', '#']).next().unwrap_or_default();
        let bad = |reason: &str| BadLake::Url {
            url: shown.to_string(),
            reason: reason.to_string(),
        };
        let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            // A SAS in the URL would end up in logs and errors: it goes in
            // AZURE_STORAGE_SAS_TOKEN instead.
            return Err(bad(
                "a query or fragment is not allowed (give credentials in the environment)",
            ));
        }
        if url.password().is_some() {
            return Err(bad("a password is not allowed in the URL"));
        }
        let store: Arc<dyn ObjectStore> = match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| bad("not an absolute local path"))?;
                return Ok(Lake::local(path));
            }
            "az" | "abfs" | "abfss" => Arc::new(azure_store(text)?),
            "s3" => Arc::new(s3_store(text)?),
            _ => return Err(BadLake::Scheme(text.to_string())),
        };
        let prefix = ObjPath::from_url_path(url.path()).map_err(|e| bad(&e.to_string()))?;
        let root = format!(
            "{}://{}/",
            url.scheme(),
            &url[url::Position::BeforeUsername..url::Position::AfterPort]
        );
        Ok(Lake(Arc::new(Location::Remote(Remote {
            store,
            prefix,
            shown: text.trim_end_matches('/').to_string(),
            root,
        }))))
    }

    /// The local folder, for a lake on disk.
    pub fn local_path(&self) -> Option<&Path> {
        match self.0.as_ref() {
            Location::Local(p) => Some(p),
            Location::Remote(_) => None,
        }
    }

    /// The same lake with a local path made absolute (object-store names of local
    /// files are absolute paths).
    pub(crate) fn absolute(&self) -> io::Result<Lake> {
        match self.0.as_ref() {
            Location::Local(p) => Ok(Lake::local(std::path::absolute(p)?)),
            Location::Remote(_) => Ok(self.clone()),
        }
    }

    /// Whether two values name the same lake.
    pub(crate) fn same(&self, other: &Lake) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.to_string() == other.to_string()
    }

    /// A path relative to the lake, as messages show it.
    pub fn shown(&self, relative: &str) -> PathBuf {
        match self.0.as_ref() {
            Location::Local(p) => p.join(relative),
            Location::Remote(r) => PathBuf::from(format!("{}/{relative}", r.shown)),
        }
    }

    /// The object store and URL DataFusion reads the lake's files with, and the name
    /// of a file in it. `None` for a local lake (DataFusion's own local store).
    pub(crate) fn object_store(&self) -> Option<(ObjectStoreUrl, Arc<dyn ObjectStore>)> {
        match self.0.as_ref() {
            Location::Local(_) => None,
            // A scheme of its own: SQL's `COPY ... TO 'az://...'` finds no store for
            // the lake's container, so no statement writes into it.
            Location::Remote(r) => ObjectStoreUrl::parse("mdesnap-lake://lake")
                .ok()
                .map(|u| (u, Arc::clone(&r.store))),
        }
    }

    /// What an object-store location is shown after in messages: `/` for a local lake
    /// (locations are absolute paths without their first `/`), the store's URL root
    /// for a remote one.
    pub(crate) fn location_root(&self) -> &str {
        match self.0.as_ref() {
            Location::Local(_) => "/",
            Location::Remote(r) => &r.root,
        }
    }

    /// The object-store location of a file given relative to the lake.
    pub(crate) fn object_location(&self, relative: &str) -> String {
        match self.0.as_ref() {
            Location::Local(p) => {
                let text = p.join(relative).to_string_lossy().replace('\\', "/");
                text.trim_start_matches('/').to_string()
            }
            Location::Remote(r) => r.path(relative).to_string(),
        }
    }

    /// Fails with [`LakeError::NotFound`] unless the lake exists: a folder, or a
    /// prefix with at least one object.
    pub(crate) fn check_exists(&self) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(p) if p.is_dir() => Ok(()),
            Location::Local(p) => Err(LakeError::NotFound(p.clone())),
            Location::Remote(r) => {
                let (store, prefix) = (Arc::clone(&r.store), r.prefix.clone());
                let listed = run(async move {
                    let mut stream = store.list(Some(&prefix));
                    stream.try_next().await
                })
                .map_err(|e| self.store_err("listing", "", e))?;
                match listed {
                    Some(_) => Ok(()),
                    None => Err(LakeError::NotFound(PathBuf::from(&r.shown))),
                }
            }
        }
    }

    /// Makes the lake ready for a first write: its folder on disk (owner-only), or a
    /// check that the store answers (a missing container or bad key is reported here,
    /// before any work).
    pub(crate) fn create(&self) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(p) => create_lake_dir(p),
            Location::Remote(r) => {
                let (store, prefix) = (Arc::clone(&r.store), r.prefix.clone());
                run(async move { store.list_with_delimiter(Some(&prefix)).await })
                    .map(|_| ())
                    .map_err(|e| self.store_err("listing", "", e))
            }
        }
    }

    /// Every file under the folder `dir` (relative to the lake), at any depth, with
    /// its size; names relative to the lake with `/` separators. A missing folder
    /// has no files.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<(String, u64)>, LakeError> {
        Ok(self
            .list_versions(dir)?
            .into_iter()
            .map(|(path, size, _)| (path, size))
            .collect())
    }

    /// As [`list`](Self::list), with each object's version (its ETag) where the
    /// store gives one; a local file has none.
    pub(crate) fn list_versions(
        &self,
        dir: &str,
    ) -> Result<Vec<(String, u64, Option<String>)>, LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => {
                let mut out = Vec::new();
                list_local(root, dir, &mut out)?;
                Ok(out.into_iter().map(|(p, size)| (p, size, None)).collect())
            }
            Location::Remote(r) => {
                let (store, path) = (Arc::clone(&r.store), r.path(dir));
                let found =
                    run(async move { store.list(Some(&path)).try_collect::<Vec<_>>().await })
                        .map_err(|e| self.store_err("listing", dir, e))?;
                Ok(found
                    .into_iter()
                    .filter_map(|meta| Some((r.relative(&meta.location)?, meta.size, meta.e_tag)))
                    .collect())
            }
        }
    }

    /// Whether the lake is in an object store.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.0.as_ref(), Location::Remote(_))
    }

    /// The bytes of a file, `None` when there is none.
    pub(crate) fn read_if_present(&self, relative: &str) -> Result<Option<Bytes>, LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => match std::fs::read(root.join(relative)) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err("reading", &root.join(relative), e)),
            },
            Location::Remote(r) => {
                let (store, path) = (Arc::clone(&r.store), r.path(relative));
                match run(async move { store.get(&path).await?.bytes().await }) {
                    Ok(b) => Ok(Some(b)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(self.store_err("reading", relative, e)),
                }
            }
        }
    }

    /// The bytes of several files, in order; on an object store, read concurrently.
    pub(crate) fn read_many(&self, files: Vec<String>) -> Vec<Result<Bytes, LakeError>> {
        match self.0.as_ref() {
            Location::Local(root) => files
                .iter()
                .map(|f| {
                    let path = root.join(f);
                    std::fs::read(&path)
                        .map(Bytes::from)
                        .map_err(|e| io_err("reading", &path, e))
                })
                .collect(),
            Location::Remote(r) => {
                let store = Arc::clone(&r.store);
                let paths: Vec<ObjPath> = files.iter().map(|f| r.path(f)).collect();
                let read = run(async move {
                    Ok(futures::stream::iter(paths)
                        .map(|p| {
                            let store = Arc::clone(&store);
                            async move { store.get(&p).await?.bytes().await }
                        })
                        .buffered(CONCURRENCY)
                        .collect::<Vec<_>>()
                        .await)
                });
                match read {
                    Ok(results) => results
                        .into_iter()
                        .zip(&files)
                        .map(|(res, f)| res.map_err(|e| self.store_err("reading", f, e)))
                        .collect(),
                    Err(e) => {
                        let msg = e.to_string();
                        files
                            .iter()
                            .map(|f| {
                                Err(self.store_err(
                                    "reading",
                                    f,
                                    object_store::Error::Generic {
                                        store: "lake",
                                        source: msg.clone().into(),
                                    },
                                ))
                            })
                            .collect()
                    }
                }
            }
        }
    }

    /// Writes `bytes` as a new file, unless one exists: `false` then, and nothing is
    /// changed. On disk a synced temporary file hard-linked into place; on an object
    /// store a conditional create.
    pub(crate) fn create_new(&self, relative: &str, bytes: Bytes) -> Result<bool, LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => {
                let (path, dir, tmp) = stage_beside(root, relative, &bytes)?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                    Err(e) => return Err(io_err("publishing", &path, e)),
                }
                sync_dir(&dir)?;
                Ok(true)
            }
            Location::Remote(r) => {
                let (store, path) = (Arc::clone(&r.store), r.path(relative));
                let put = run(async move {
                    let opts = PutOptions::from(PutMode::Create);
                    store.put_opts(&path, PutPayload::from(bytes), opts).await
                });
                match put {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                    // Some stores answer a failed `If-None-Match: *` as a failed
                    // precondition.
                    Err(object_store::Error::Precondition { .. }) => Ok(false),
                    Err(e) => Err(self.store_err("publishing", relative, e)),
                }
            }
        }
    }

    /// Writes `bytes` over a file in one step: readers see the old content or the
    /// new, never a mix.
    pub(crate) fn replace(&self, relative: &str, bytes: Bytes) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => {
                let (path, dir, tmp) = stage_beside(root, relative, &bytes)?;
                if let Err(e) = std::fs::rename(&tmp, &path) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io_err("replacing", &path, e));
                }
                sync_dir(&dir)
            }
            Location::Remote(r) => {
                let (store, path) = (Arc::clone(&r.store), r.path(relative));
                run(async move { store.put(&path, PutPayload::from(bytes)).await })
                    .map(|_| ())
                    .map_err(|e| self.store_err("replacing", relative, e))
            }
        }
    }

    /// Removes files; a file already gone is not an error.
    pub(crate) fn delete(&self, files: &[String]) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => {
                for f in files {
                    let path = root.join(f);
                    let result = if path.is_dir() {
                        std::fs::remove_dir_all(&path)
                    } else {
                        std::fs::remove_file(&path)
                    };
                    match result {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("removing", &path, e)),
                    }
                }
                Ok(())
            }
            Location::Remote(r) => {
                let store = Arc::clone(&r.store);
                let paths: Vec<ObjPath> = files.iter().map(|f| r.path(f)).collect();
                let first = files.first().cloned().unwrap_or_default();
                run(async move {
                    futures::stream::iter(paths)
                        .map(|p| {
                            let store = Arc::clone(&store);
                            async move {
                                match store.delete(&p).await {
                                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                                    other => other,
                                }
                            }
                        })
                        .buffer_unordered(CONCURRENCY)
                        .try_collect::<Vec<()>>()
                        .await
                })
                .map(|_| ())
                .map_err(|e| self.store_err("removing", &first, e))
            }
        }
    }

    /// Removes a folder and everything in it.
    pub(crate) fn delete_dir(&self, dir: &str) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(_) => self.delete(&[dir.to_string()]),
            Location::Remote(_) => {
                let files: Vec<String> = self.list(dir)?.into_iter().map(|(f, _)| f).collect();
                self.delete(&files)
            }
        }
    }

    /// Removes an empty folder of a local lake (object stores have no folders); a
    /// folder that is not empty stays.
    pub(crate) fn remove_empty_dir(&self, dir: &str) {
        if let Location::Local(root) = self.0.as_ref() {
            let _ = std::fs::remove_dir(root.join(dir));
        }
    }

    /// Where a data file of the folder `dir` is written before [`publish`]
    /// (Self::publish) gives it its name: that folder on disk, created if missing; for
    /// an object store, a folder under the system's temporary folder named after the
    /// writer's `job` ([`remove_staging`](Self::remove_staging) removes it).
    pub(crate) fn staging_dir(&self, dir: &str, job: &str) -> Result<PathBuf, LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => create_dirs_synced(root, Path::new(dir)),
            Location::Remote(_) => {
                // One folder per table folder: file names are unique only within one.
                let staging = staging_root(job).join(dir);
                std::fs::create_dir_all(&staging)
                    .map_err(|e| io_err("creating staging folder", &staging, e))?;
                Ok(staging)
            }
        }
    }

    /// Publishes a finished, synced file written under [`staging_dir`]
    /// (Self::staging_dir) as `relative`: a rename on disk, an upload (then the
    /// staged copy is removed) to an object store.
    pub(crate) fn publish(&self, staged: &Path, relative: &str) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => std::fs::rename(staged, root.join(relative))
                .map_err(|e| io_err("renaming", staged, e)),
            Location::Remote(r) => {
                let result = upload(r, staged, relative).map_err(|e| match e {
                    Upload::Io(e) => io_err("reading", staged, e),
                    Upload::Store(e) => self.store_err("uploading", relative, e),
                });
                let _ = std::fs::remove_file(staged);
                result
            }
        }
    }

    /// Removes the staging folder of the writer `job`, if it made one.
    pub(crate) fn remove_staging(&self, job: &str) {
        if let Location::Remote(_) = self.0.as_ref() {
            let _ = std::fs::remove_dir_all(staging_root(job));
        }
    }

    /// Makes the entries of a local folder durable; nothing to do in an object store.
    pub(crate) fn sync_dir(&self, dir: &str) -> Result<(), LakeError> {
        match self.0.as_ref() {
            Location::Local(root) => {
                let path = root.join(dir);
                if path.is_dir() {
                    sync_dir(&path)
                } else {
                    Ok(())
                }
            }
            Location::Remote(_) => Ok(()),
        }
    }

    /// A lake at `prefix` in `store`, for tests that wrap a store to fail on purpose.
    #[cfg(test)]
    pub(crate) fn in_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Lake {
        Lake(Arc::new(Location::Remote(Remote {
            store,
            prefix: ObjPath::from(prefix),
            shown: format!("memory:///{prefix}"),
            root: "memory:///".to_string(),
        })))
    }

    /// Runs a request against the lake's store, for the lock.
    pub(crate) fn remote_store(&self) -> Option<(Arc<dyn ObjectStore>, ObjPath)> {
        match self.0.as_ref() {
            Location::Local(_) => None,
            Location::Remote(r) => Some((Arc::clone(&r.store), r.prefix.clone())),
        }
    }

    pub(crate) fn store_err(
        &self,
        op: &'static str,
        relative: &str,
        source: object_store::Error,
    ) -> LakeError {
        LakeError::Store {
            op,
            path: if relative.is_empty() {
                self.to_string()
            } else {
                self.shown(relative).display().to_string()
            },
            message: redact(&source.to_string()),
        }
    }
}

impl Remote {
    fn path(&self, relative: &str) -> ObjPath {
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn relative(&self, location: &ObjPath) -> Option<String> {
        let parts: Vec<String> = location
            .prefix_match(&self.prefix)?
            .map(|p| p.as_ref().to_string())
            .collect();
        Some(parts.join("/"))
    }
}

enum Upload {
    Io(io::Error),
    Store(object_store::Error),
}

/// Uploads a staged file: one request when small, parts in parallel when large.
fn upload(r: &Remote, staged: &Path, relative: &str) -> Result<(), Upload> {
    let size = std::fs::metadata(staged).map_err(Upload::Io)?.len();
    let (store, path) = (Arc::clone(&r.store), r.path(relative));
    if size <= SINGLE_PUT_BYTES {
        let bytes = Bytes::from(std::fs::read(staged).map_err(Upload::Io)?);
        return run(async move { store.put(&path, PutPayload::from(bytes)).await })
            .map(|_| ())
            .map_err(Upload::Store);
    }
    let mut file = std::fs::File::open(staged).map_err(Upload::Io)?;
    let upload = run(async move { store.put_multipart(&path).await }).map_err(Upload::Store)?;
    // From here on, any return but the last aborts the upload (`Parts`' drop).
    let mut parts = Parts::new(upload);
    let mut buf = vec![0u8; PART_BYTES];
    loop {
        let n = read_full(&mut file, &mut buf).map_err(Upload::Io)?;
        if n == 0 {
            break;
        }
        parts
            .send(Bytes::copy_from_slice(&buf[..n]))
            .map_err(Upload::Store)?;
    }
    parts.finish().map_err(Upload::Store)
}

/// A multipart upload being sent, at most [`PARTS_IN_FLIGHT`] parts at a time. It is
/// aborted unless [`finish`](Self::finish) completes it: when a part, the completion
/// or reading the staged file fails, or when it is dropped. The parts of an upload
/// neither completed nor aborted stay in the store, unseen and billed (S3 keeps them
/// until a lifecycle rule removes them, Azure its uncommitted blocks for a week).
/// `object_store`'s `WriteMultipart` aborts only a failed completion: a failed part
/// ends its `finish` before that.
struct Parts {
    /// `None` once completed or aborted.
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<tokio::task::JoinHandle<object_store::Result<()>>>,
}

impl Parts {
    fn new(upload: Box<dyn MultipartUpload>) -> Self {
        Parts {
            upload: Some(upload),
            in_flight: VecDeque::new(),
        }
    }

    /// Starts uploading `part`, once fewer than [`PARTS_IN_FLIGHT`] are under way.
    fn send(&mut self, part: Bytes) -> object_store::Result<()> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_for_one()?;
        }
        if let Some(upload) = self.upload.as_mut() {
            let sent = upload.put_part(PutPayload::from(part));
            self.in_flight.push_back(io_runtime().spawn(sent));
        }
        Ok(())
    }

    /// Waits for the oldest part under way.
    fn wait_for_one(&mut self) -> object_store::Result<()> {
        match self.in_flight.pop_front() {
            Some(part) => joined(futures::executor::block_on(part)),
            None => Ok(()),
        }
    }

    /// Waits for every part, then completes the upload (aborting it if that fails).
    fn finish(mut self) -> object_store::Result<()> {
        while !self.in_flight.is_empty() {
            self.wait_for_one()?;
        }
        let Some(mut upload) = self.upload.take() else {
            return Ok(());
        };
        run(async move {
            match upload.complete().await {
                Ok(_) => Ok(()),
                Err(e) => {
                    if let Err(abort) = upload.abort().await {
                        warn_not_aborted(&abort);
                    }
                    Err(e)
                }
            }
        })
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        // Parts still being sent are stopped first: one sent after the abort would
        // start the upload's storage again.
        for part in self.in_flight.drain(..) {
            part.abort();
            let _ = futures::executor::block_on(part);
        }
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        // Not `run`: a panic of the abort's task must not unwind out of a drop.
        let aborted = io_runtime().spawn(async move { upload.abort().await });
        match futures::executor::block_on(aborted) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn_not_aborted(&e),
            Err(e) => tracing::warn!("aborting a multipart upload stopped: {e}"),
        }
    }
}

fn warn_not_aborted(e: &object_store::Error) {
    tracing::warn!(
        "could not abort a failed multipart upload; its parts stay in the store, billed, until a lifecycle rule or the store removes them: {}",
        redact(&e.to_string())
    );
}

/// The outcome of a task run on [`io_runtime`], as `run` gives it.
fn joined<T>(
    outcome: Result<object_store::Result<T>, tokio::task::JoinError>,
) -> object_store::Result<T> {
    match outcome {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(object_store::Error::Generic {
            store: "lake",
            source: Box::new(e),
        }),
    }
}

fn staging_root(job: &str) -> PathBuf {
    std::env::temp_dir().join(format!("mdesnap-upload-{job}"))
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The runtime object-store requests run on, for the process's life: the lake's
/// synchronous code blocks on it from any thread, and DataFusion's reads are sent to
/// it too ([`object_store::client::SpawnedReqwestConnector`]).
pub(crate) fn io_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mdesnap-io")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the object-store runtime: {e}"))
    })
}

/// Runs an object-store request on [`io_runtime`] and waits for it.
pub(crate) fn run<T: Send + 'static>(
    fut: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> object_store::Result<T> {
    joined(futures::executor::block_on(io_runtime().spawn(fut)))
}

fn connector() -> object_store::client::SpawnedReqwestConnector {
    object_store::client::SpawnedReqwestConnector::new(io_runtime().handle().clone())
}

/// Azure: `AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY`, a SAS in
/// `AZURE_STORAGE_SAS_TOKEN`, or a service principal (`AZURE_CLIENT_ID`,
/// `AZURE_CLIENT_SECRET`, `AZURE_TENANT_ID`, the ingest's own variables); Azurite with
/// `AZURE_STORAGE_USE_EMULATOR=true` (`AZURITE_BLOB_STORAGE_URL` for its address).
fn azure_store(url: &str) -> Result<object_store::azure::MicrosoftAzure, BadLake> {
    object_store::azure::MicrosoftAzureBuilder::from_env()
        .with_url(url)
        .with_http_connector(connector())
        .build()
        .map_err(|source| BadLake::Store {
            url: url.to_string(),
            source,
        })
}

/// S3: the `AWS_*` variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`), else `AWS_PROFILE`'s entry in
/// `~/.aws/credentials` and `~/.aws/config`; `AWS_ENDPOINT_URL` for an S3-compatible
/// server (plain `http://` allowed there).
fn s3_store(url: &str) -> Result<object_store::aws::AmazonS3, BadLake> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut builder = AmazonS3Builder::from_env().with_url(url);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        for (key, value) in aws_profile() {
            builder = builder.with_config(key, value);
        }
    }
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .unwrap_or_default();
    if endpoint.starts_with("http://") {
        builder = builder.with_allow_http(true);
    }
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    builder
        .with_http_connector(connector())
        .build()
        .map_err(|source| BadLake::Store {
            url: url.to_string(),
            source,
        })
}

/// The keys, region and endpoint of the AWS profile in force (`AWS_PROFILE`, else
/// `default`), from the shared files the AWS CLI writes; empty when there are none.
fn aws_profile() -> Vec<(object_store::aws::AmazonS3ConfigKey, String)> {
    use object_store::aws::AmazonS3ConfigKey as K;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_string());
    let Some(home) = dirs::home_dir() else {
        return Vec::new();
    };
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(name))
    };
    let mut out = Vec::new();
    let credentials = std::fs::read_to_string(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"))
        .unwrap_or_default();
    for (k, v) in ini_section(&credentials, &profile) {
        match k.as_str() {
            "aws_access_key_id" => out.push((K::AccessKeyId, v)),
            "aws_secret_access_key" => out.push((K::SecretAccessKey, v)),
            "aws_session_token" => out.push((K::Token, v)),
            _ => {}
        }
    }
    let config = std::fs::read_to_string(file("AWS_CONFIG_FILE", "config")).unwrap_or_default();
    let section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    for (k, v) in ini_section(&config, &section) {
        match k.as_str() {
            "region" if std::env::var_os("AWS_REGION").is_none() => out.push((K::Region, v)),
            "endpoint_url" if std::env::var_os("AWS_ENDPOINT_URL").is_none() => {
                out.push((K::Endpoint, v));
            }
            _ => {}
        }
    }
    out
}

/// The `key = value` lines of `[section]` in an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside
            && !line.starts_with('#')
            && !line.starts_with(';')
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// Removes the query part of every URL in an error message: a SAS token travels in
/// it, and an error must never show one.
pub(crate) fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_query = false;
    let mut rest = message;
    while let Some(c) = rest.chars().next() {
        if in_query {
            if c.is_whitespace() || c == '"' || c == '\'' || c == ')' || c == ',' {
                in_query = false;
                out.push(c);
            }
        } else if c == '?'
            && (out.contains("http://") || out.contains("https://"))
            && url_open(&out)
        {
            in_query = true;
            out.push_str("?<redacted>");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Whether the text ends inside a URL (its last word starts with a scheme).
fn url_open(text: &str) -> bool {
    let word = text
        .rsplit(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '(')
        .next()
        .unwrap_or("");
    word.starts_with("http://") || word.starts_with("https://")
}

fn list_local(root: &Path, dir: &str, out: &mut Vec<(String, u64)>) -> Result<(), LakeError> {
    let path = root.join(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("listing", &path, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", &path, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let relative = if dir.is_empty() {
            name
        } else {
            format!("{}/{name}", dir.trim_end_matches('/'))
        };
        let meta = entry
            .metadata()
            .map_err(|e| io_err("listing", &entry.path(), e))?;
        if meta.is_dir() {
            list_local(root, &relative, out)?;
        } else {
            out.push((relative, meta.len()));
        }
    }
    Ok(())
}

/// Writes `bytes` synced under a temporary name beside `root/relative` (its folders
/// made if missing), for a hard link or rename into place: the final path, its folder
/// and the temporary file.
fn stage_beside(
    root: &Path,
    relative: &str,
    bytes: &[u8],
) -> Result<(PathBuf, PathBuf, PathBuf), LakeError> {
    let path = root.join(relative);
    let dir = match Path::new(relative).parent() {
        Some(parent) => create_dirs_synced(root, parent)?,
        None => root.to_path_buf(),
    };
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name(&path),
        uuid::Uuid::new_v4()
    ));
    write_synced(&tmp, bytes)?;
    Ok((path, dir, tmp))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Creates the lake folder if missing, readable by its owner only (a device inventory
/// is sensitive).
fn create_lake_dir(lake: &Path) -> Result<(), LakeError> {
    if lake.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(lake)
        .map_err(|e| io_err("creating lake", lake, e))?;
    // The new folder's entry must survive a crash too.
    match lake.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Creates `lake/relative` and any missing folder on the way, syncing the parent of
/// each folder made so the new entries survive a crash; returns the full path.
fn create_dirs_synced(lake: &Path, relative: &Path) -> Result<PathBuf, LakeError> {
    let mut dir = lake.to_path_buf();
    for part in relative.components() {
        let parent = dir.clone();
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => sync_dir(&parent)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(io_err("creating", &dir, e)),
        }
    }
    Ok(dir)
}

/// Flushes a directory's entries to disk, so a rename or link in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_err("syncing", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LakeError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| io_err("creating", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_and_file_urls_are_local() {
        let lake = Lake::parse("some/dir").expect("path");
        assert_eq!(lake.local_path(), Some(Path::new("some/dir")));
        let lake = Lake::parse("file:///tmp/lake").expect("file URL");
        assert_eq!(lake.local_path(), Some(Path::new("/tmp/lake")));
    }

    #[test]
    fn bad_urls_are_named() {
        let err = Lake::parse("gs://bucket/lake").expect_err("unsupported scheme");
        assert_eq!(
            err.to_string(),
            format!("'gs://bucket/lake' is not a lake URL: its scheme is none of {SCHEMES}")
        );
        let err = Lake::parse("az://c/lake?sv=1&sig=SECRET").expect_err("query");
        assert_eq!(
            err.to_string(),
            "'az://c/lake' is not a lake URL: a query or fragment is not allowed (give credentials in the environment)"
        );
        let err = Lake::parse("file://relative").expect_err("not absolute");
        assert!(err.to_string().contains("file://relative"), "{err}");
    }

    #[test]
    fn remote_paths_join_under_the_prefix() {
        let lake = Lake::parse("s3://bucket/a/lake/").expect("s3 URL");
        assert_eq!(lake.to_string(), "s3://bucket/a/lake");
        assert_eq!(
            lake.object_location("_snapshots/x.json"),
            "a/lake/_snapshots/x.json"
        );
        assert!(lake.local_path().is_none());
    }

    #[test]
    fn queries_of_urls_are_redacted() {
        let msg = "Error performing GET https://a.blob.core.windows.net/c/x?sv=2021&sig=abc%3D in 1s, 403";
        let out = redact(msg);
        assert_eq!(
            out,
            "Error performing GET https://a.blob.core.windows.net/c/x?<redacted> in 1s, 403"
        );
        assert_eq!(redact("what? no URL here"), "what? no URL here");
    }

    /// An in-memory store whose multipart uploads fail one part, or their completion,
    /// and count the uploads aborted.
    #[derive(Debug)]
    struct FailingParts {
        inner: object_store::memory::InMemory,
        fail_part: Option<usize>,
        fail_complete: bool,
        aborted: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FailingParts {
        fn new(fail_part: Option<usize>, fail_complete: bool) -> Arc<Self> {
            Arc::new(FailingParts {
                inner: object_store::memory::InMemory::new(),
                fail_part,
                fail_complete,
                aborted: Arc::default(),
            })
        }

        fn aborted(&self) -> usize {
            self.aborted.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl fmt::Display for FailingParts {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("FailingParts")
        }
    }

    fn refused(what: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "FailingParts",
            source: format!("{what} refused").into(),
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for FailingParts {
        async fn put_opts(
            &self,
            location: &ObjPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }

        async fn put_multipart_opts(
            &self,
            location: &ObjPath,
            opts: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            Ok(Box::new(FailingUpload {
                inner: self.inner.put_multipart_opts(location, opts).await?,
                parts: 0,
                fail_part: self.fail_part,
                fail_complete: self.fail_complete,
                aborted: Arc::clone(&self.aborted),
            }))
        }

        async fn get_opts(
            &self,
            location: &ObjPath,
            options: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.inner.get_opts(location, options).await
        }

        fn delete_stream(
            &self,
            locations: futures::stream::BoxStream<'static, object_store::Result<ObjPath>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjPath>> {
            self.inner.delete_stream(locations)
        }

        fn list(
            &self,
            prefix: Option<&ObjPath>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
        {
            self.inner.list(prefix)
        }

        async fn list_with_delimiter(
            &self,
            prefix: Option<&ObjPath>,
        ) -> object_store::Result<object_store::ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }

        async fn copy_opts(
            &self,
            from: &ObjPath,
            to: &ObjPath,
            options: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    #[derive(Debug)]
    struct FailingUpload {
        inner: Box<dyn object_store::MultipartUpload>,
        parts: usize,
        fail_part: Option<usize>,
        fail_complete: bool,
        aborted: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait::async_trait]
    impl object_store::MultipartUpload for FailingUpload {
        fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
            let part = self.parts;
            self.parts += 1;
            if self.fail_part == Some(part) {
                return Box::pin(async { Err(refused("part")) });
            }
            self.inner.put_part(data)
        }

        async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
            if self.fail_complete {
                return Err(refused("completion"));
            }
            self.inner.complete().await
        }

        async fn abort(&mut self) -> object_store::Result<()> {
            self.aborted
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.abort().await
        }
    }

    /// Publishes a staged file of three parts (16, 16 and 8 MiB) into `store`.
    fn publish_three_parts(store: &Arc<FailingParts>) -> Result<(), LakeError> {
        let lake = Lake::in_store(Arc::clone(store) as Arc<dyn ObjectStore>, "lake");
        let dir = tempfile::tempdir().expect("temp dir");
        let staged = dir.path().join("part.tmp");
        std::fs::write(&staged, vec![7u8; 2 * PART_BYTES + PART_BYTES / 2]).expect("staged");
        lake.publish(&staged, "machines/part-0.parquet")
    }

    fn stored(store: &FailingParts) -> Option<usize> {
        let path = ObjPath::from("lake/machines/part-0.parquet");
        run_local(store.inner.head(&path))
            .ok()
            .map(|m| m.size as usize)
    }

    fn run_local<T>(fut: impl Future<Output = T>) -> T {
        futures::executor::block_on(fut)
    }

    /// Publishing into `store` fails with `refused`, the upload aborted once and
    /// nothing stored.
    fn assert_aborted(store: &Arc<FailingParts>, refused: &str) {
        let err = publish_three_parts(store).expect_err(refused);
        assert!(err.to_string().contains(refused), "{err}");
        assert_eq!(store.aborted(), 1, "the upload is aborted once");
        assert_eq!(stored(store), None);
    }

    #[test]
    fn a_multipart_upload_with_a_failed_part_is_aborted() {
        assert_aborted(&FailingParts::new(Some(1), false), "part refused");
    }

    #[test]
    fn a_multipart_upload_whose_completion_fails_is_aborted() {
        assert_aborted(&FailingParts::new(None, true), "completion refused");
    }

    #[test]
    fn a_multipart_upload_dropped_unfinished_is_aborted() {
        let store = FailingParts::new(None, false);
        let (s, path) = (Arc::clone(&store), ObjPath::from("lake/x"));
        let upload = run(async move { s.put_multipart(&path).await }).expect("started");
        let mut parts = Parts::new(upload);
        parts.send(Bytes::from_static(b"a part")).expect("sent");
        drop(parts);
        assert_eq!(store.aborted(), 1);
    }

    #[test]
    fn a_completed_multipart_upload_is_not_aborted() {
        let store = FailingParts::new(None, false);
        publish_three_parts(&store).expect("uploaded");
        assert_eq!(store.aborted(), 0);
        assert_eq!(stored(&store), Some(2 * PART_BYTES + PART_BYTES / 2));
    }

    #[test]
    fn ini_sections() {
        let text = "[default]\naws_access_key_id = A\n[profile p]\nregion=eu-west-1\n# c\n";
        assert_eq!(
            ini_section(text, "default"),
            vec![("aws_access_key_id".into(), "A".into())]
        );
        assert_eq!(
            ini_section(text, "profile p"),
            vec![("region".into(), "eu-west-1".into())]
        );
        assert!(ini_section(text, "other").is_empty());
    }
}
