//! The lake's one-writer lock.
//!
//! On disk, `_lock` is an ordinary file holding an advisory OS lock (`flock` on Unix)
//! while a writer runs. The kernel drops the lock when its process dies, however it
//! dies, so a lock "left" by a killed writer is simply free: the next writer takes it
//! over. The file's text names the holder, for the message a second writer prints.
//!
//! An object store has no such lock, so `_lock` there is a lease: an object naming its
//! holder and an expiry time. It is taken with a conditional create, or, once its
//! expiry has passed, with a conditional overwrite of the version read (of two
//! writers taking over a dead one's lock, one wins). The holder renews it every third
//! of the lease on a thread of its own, and releases it by overwriting it as expired;
//! when that thread cannot start, taking the lock fails at once (and the lease is
//! released), rather than the unrenewed lease running out before the commit.
//! A writer whose renewal failed and whose lease ran out publishes nothing
//! ([`LakeLock::check`]). The lease is 60 s, `MDESNAP_LOCK_LEASE` (e.g. `10s`) sets
//! another; the rule assumes writers' clocks agree to well within it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::store::run;
use super::{Lake, LakeError, io_err};
use crate::snapshot::LOCK_FILE;

/// The lease of an object-store lock when `MDESNAP_LOCK_LEASE` does not say.
const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct LakeLock {
    lake: Lake,
    held: Held,
}

#[derive(Debug)]
enum Held {
    File(File),
    Lease(Lease),
}

impl LakeLock {
    /// Takes the lock of `lake`, waiting for the holder to finish when `wait` is set,
    /// failing with [`LakeError::Locked`] otherwise.
    pub fn acquire(lake: impl Into<Lake>, wait: bool) -> Result<Self, LakeError> {
        let lake = lake.into();
        let held = match lake.remote_store() {
            None => Held::File(lock_file(&lake, wait)?),
            Some((store, prefix)) => {
                Held::Lease(Lease::take(&lake, store, prefix, wait, spawn_renewer)?)
            }
        };
        Ok(LakeLock { lake, held })
    }

    /// The lake this lock is of.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Fails with [`LakeError::LockLost`] when the lease ran out and may have been taken
    /// over: checked just before a manifest is published.
    pub fn check(&self) -> Result<(), LakeError> {
        match &self.held {
            Held::File(_) => Ok(()),
            Held::Lease(lease) if lease.state.lost.load(Ordering::SeqCst) => {
                Err(LakeError::LockLost {
                    lake: self.lake.to_string(),
                })
            }
            Held::Lease(lease) => {
                let valid_until = *lease
                    .state
                    .valid_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if Utc::now() >= valid_until {
                    return Err(LakeError::LockLost {
                        lake: self.lake.to_string(),
                    });
                }
                Ok(())
            }
        }
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        match &mut self.held {
            // Closing the file releases the lock as well; unlocking first is explicit.
            Held::File(file) => {
                let _ = file.unlock();
            }
            Held::Lease(lease) => lease.release(),
        }
    }
}

fn lock_file(lake: &Lake, wait: bool) -> Result<File, LakeError> {
    let path = lake.shown(LOCK_FILE);
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
                lake: lake.to_string(),
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
    Ok(file)
}

/// The lock object's content.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LeaseText {
    holder: String,
    /// RFC 3339; the lock is free from then on.
    expires_at: String,
}

impl LeaseText {
    fn expires(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.expires_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// What the holder and its renewal thread share.
#[derive(Debug)]
struct LeaseState {
    /// The version of the lock object this holder wrote last.
    version: Mutex<UpdateVersion>,
    /// Until when the last successful write holds the lease.
    valid_until: Mutex<DateTime<Utc>>,
    /// Someone else's version is there: the lease was taken over.
    lost: AtomicBool,
    stop: (Mutex<bool>, Condvar),
}

#[derive(Debug)]
struct Lease {
    store: Arc<dyn ObjectStore>,
    path: ObjPath,
    holder: String,
    state: Arc<LeaseState>,
    renewer: Option<JoinHandle<()>>,
}

/// The renewal thread's body, as [`Lease::take`] hands it to its spawner.
type Renewal = Box<dyn FnOnce() + Send>;

/// What starts the renewal thread: [`spawn_renewer`], or a test's stand-in.
type Spawn = fn(Renewal) -> io::Result<JoinHandle<()>>;

/// Starts the thread that renews a held lease.
fn spawn_renewer(renewal: Renewal) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("mdesnap-lock".to_string())
        .spawn(renewal)
}

fn lease_length() -> Duration {
    std::env::var("MDESNAP_LOCK_LEASE")
        .ok()
        .and_then(|s| humantime::parse_duration(s.trim()).ok())
        .filter(|d| *d >= Duration::from_secs(1))
        .unwrap_or(DEFAULT_LEASE)
}

/// Writes the lock object naming `holder` until `expires`, as `mode` allows: a create
/// to take a free lock, an update of the version read or written last otherwise.
fn put_lease(
    store: &Arc<dyn ObjectStore>,
    path: &ObjPath,
    holder: &str,
    expires: DateTime<Utc>,
    mode: PutMode,
) -> object_store::Result<object_store::PutResult> {
    let text = LeaseText {
        holder: holder.to_string(),
        expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let payload = PutPayload::from(serde_json::to_vec(&text).unwrap_or_default());
    let (store, path) = (Arc::clone(store), path.clone());
    run(async move { store.put_opts(&path, payload, PutOptions::from(mode)).await })
}

fn version_of(result: &object_store::PutResult) -> UpdateVersion {
    UpdateVersion {
        e_tag: result.e_tag.clone(),
        version: result.version.clone(),
    }
}

impl Lease {
    fn take(
        lake: &Lake,
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
        wait: bool,
        spawn: Spawn,
    ) -> Result<Self, LakeError> {
        let path = prefix.join(LOCK_FILE);
        let length = lease_length();
        let holder = format!(
            "pid {} on {}",
            std::process::id(),
            hostname().unwrap_or_else(|| "an unnamed host".to_string())
        );
        let chrono_length =
            chrono::Duration::from_std(length).unwrap_or_else(|_| chrono::Duration::seconds(60));
        let mut said_waiting = false;
        loop {
            let expires = Utc::now() + chrono_length;
            let created = put_lease(&store, &path, &holder, expires, PutMode::Create);
            let current = match created {
                Ok(put) => {
                    return Lease::held(store, path, holder, version_of(&put), expires)
                        .renewed(lake, length, spawn);
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    let (s, p) = (Arc::clone(&store), path.clone());
                    let read = run(async move {
                        let got = s.get(&p).await?;
                        let version = UpdateVersion {
                            e_tag: got.meta.e_tag.clone(),
                            version: got.meta.version.clone(),
                        };
                        Ok((got.bytes().await?, version))
                    });
                    match read {
                        Ok(found) => found,
                        // Released and removed between the two requests: try again.
                        Err(object_store::Error::NotFound { .. }) => continue,
                        Err(e) => return Err(lake.store_err("reading", LOCK_FILE, e)),
                    }
                }
                Err(e) => return Err(lake.store_err("creating", LOCK_FILE, e)),
            };
            let (bytes, version) = current;
            let text: Option<LeaseText> = serde_json::from_slice(&bytes).ok();
            // A lock object that cannot be read is treated as expired: nothing could
            // ever free it otherwise.
            let expiry = text.as_ref().and_then(LeaseText::expires);
            if expiry.is_none_or(|t| t <= Utc::now()) {
                let expires = Utc::now() + chrono_length;
                let taken = put_lease(&store, &path, &holder, expires, PutMode::Update(version));
                match taken {
                    Ok(put) => {
                        if let Some(t) = text.filter(|t| !t.holder.is_empty()) {
                            tracing::info!("took over the expired lock of {} ({})", lake, t.holder);
                        }
                        return Lease::held(store, path, holder, version_of(&put), expires)
                            .renewed(lake, length, spawn);
                    }
                    // Another writer took it first.
                    Err(object_store::Error::Precondition { .. }) => {}
                    Err(e) => return Err(lake.store_err("taking over", LOCK_FILE, e)),
                }
            }
            let held_by = text
                .map(|t| format!("{}, lease until {}", t.holder, t.expires_at))
                .unwrap_or_else(|| "unknown holder".to_string());
            if !wait {
                return Err(LakeError::Locked {
                    lake: lake.to_string(),
                    holder: held_by,
                });
            }
            if !said_waiting {
                tracing::info!("waiting for the writer holding {lake} ({held_by})");
                said_waiting = true;
            }
            let pause = expiry
                .and_then(|t| (t - Utc::now()).to_std().ok())
                .unwrap_or_default()
                .clamp(Duration::from_millis(200), Duration::from_secs(2));
            std::thread::sleep(pause);
        }
    }

    /// The lease just written, not yet renewed.
    fn held(
        store: Arc<dyn ObjectStore>,
        path: ObjPath,
        holder: String,
        version: UpdateVersion,
        expires: DateTime<Utc>,
    ) -> Self {
        let state = Arc::new(LeaseState {
            version: Mutex::new(version),
            valid_until: Mutex::new(expires),
            lost: AtomicBool::new(false),
            stop: (Mutex::new(false), Condvar::new()),
        });
        Lease {
            store,
            path,
            holder,
            state,
            renewer: None,
        }
    }

    /// Starts renewing the lease on a thread of its own. If that thread cannot start,
    /// the lease is released and taking the lock fails now: unrenewed, the lease would
    /// run out during a long write, and the writer would learn it only at commit.
    fn renewed(mut self, lake: &Lake, length: Duration, spawn: Spawn) -> Result<Self, LakeError> {
        let (store, path, holder, state) = (
            Arc::clone(&self.store),
            self.path.clone(),
            self.holder.clone(),
            Arc::clone(&self.state),
        );
        match spawn(Box::new(move || {
            renew(&store, &path, &holder, &state, length)
        })) {
            Ok(thread) => {
                self.renewer = Some(thread);
                Ok(self)
            }
            Err(source) => {
                self.release();
                Err(LakeError::LockRenewal {
                    lake: lake.to_string(),
                    source,
                })
            }
        }
    }

    /// Stops renewing and marks the lock expired, unless it was lost.
    fn release(&mut self) {
        {
            let (stop, wake) = &self.state.stop;
            *stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_all();
        }
        if let Some(thread) = self.renewer.take() {
            let _ = thread.join();
        }
        if self.state.lost.load(Ordering::SeqCst) {
            return;
        }
        let version = self
            .state
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let released = DateTime::<Utc>::UNIX_EPOCH;
        if let Err(e) = put_lease(
            &self.store,
            &self.path,
            &self.holder,
            released,
            PutMode::Update(version),
        ) {
            tracing::warn!(
                "could not release the lake's lock ({}); it frees itself when its lease ends",
                super::store::redact(&e.to_string())
            );
        }
    }
}

/// Renews the lease every third of its length until told to stop or the lease is
/// found taken over.
fn renew(
    store: &Arc<dyn ObjectStore>,
    path: &ObjPath,
    holder: &str,
    state: &LeaseState,
    length: Duration,
) {
    let chrono_length =
        chrono::Duration::from_std(length).unwrap_or_else(|_| chrono::Duration::seconds(60));
    loop {
        {
            let (stop, wake) = &state.stop;
            let guard = stop.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = wake
                .wait_timeout_while(guard, length / 3, |stopped| !*stopped)
                .unwrap_or_else(|e| e.into_inner());
            if *guard {
                return;
            }
        }
        let version = state
            .version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let expires = Utc::now() + chrono_length;
        match put_lease(store, path, holder, expires, PutMode::Update(version)) {
            Ok(put) => {
                *state.version.lock().unwrap_or_else(|e| e.into_inner()) = version_of(&put);
                *state.valid_until.lock().unwrap_or_else(|e| e.into_inner()) = expires;
            }
            Err(object_store::Error::Precondition { .. }) => {
                tracing::error!("the lake's lock was taken over by another writer");
                state.lost.store(true, Ordering::SeqCst);
                return;
            }
            // Retried at the next turn; the lease holds until `valid_until`.
            Err(e) => tracing::warn!(
                "renewing the lake's lock: {}",
                super::store::redact(&e.to_string())
            ),
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_threads(_: Renewal) -> io::Result<JoinHandle<()>> {
        Err(io::Error::new(io::ErrorKind::WouldBlock, "no threads left"))
    }

    #[test]
    fn a_renewal_thread_that_cannot_start_fails_the_lock_and_frees_it() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let lake = Lake::in_store(Arc::clone(&store), "lake");
        let err = Lease::take(
            &lake,
            Arc::clone(&store),
            ObjPath::from("lake"),
            false,
            no_threads,
        )
        .expect_err("no renewal, no lock");
        assert!(matches!(err, LakeError::LockRenewal { .. }), "{err}");
        assert!(err.to_string().contains("no threads left"), "{err}");
        // The lease it wrote is released: the next writer takes the lock at once.
        LakeLock::acquire(&lake, false).expect("the lock is free");
    }
}
