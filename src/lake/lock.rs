//! The lake's one-writer lock.
//!
//! `_lock` is an ordinary file holding an advisory OS lock (`flock` on Unix) while a
//! writer runs. The kernel drops the lock when its process dies, however it dies, so a
//! lock "left" by a killed writer is simply free: the next writer takes it over. The
//! file's text names the holder, for the message a second writer prints.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{LakeError, io_err};
use crate::snapshot::LOCK_FILE;

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct LakeLock {
    file: File,
    path: PathBuf,
}

impl LakeLock {
    /// Takes the lock of `lake`, waiting for the holder to finish when `wait` is set,
    /// failing with [`LakeError::Locked`] otherwise.
    pub fn acquire(lake: &Path, wait: bool) -> Result<Self, LakeError> {
        let path = lake.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err("opening lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if wait => {
                tracing::info!("waiting for the writer holding {}", path.display());
                file.lock().map_err(|e| io_err("locking", &path, e))?;
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // Best effort: the holder may be rewriting it right now.
                let _ = file.read_to_string(&mut holder);
                return Err(LakeError::Locked {
                    lake: lake.to_path_buf(),
                    holder: holder.trim().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("locking", &path, e)),
        }
        let holder = format!("pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()))
            .map_err(|e| io_err("writing", &path, e))?;
        Ok(LakeLock { file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first is explicit.
        let _ = self.file.unlock();
    }
}
