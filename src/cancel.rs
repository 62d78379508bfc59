//! Cooperative cancellation for long work that runs off the async runtime.
//!
//! Dropping a future cancels async work, but a `spawn_blocking` task runs to its end
//! whatever happens to the future that awaited it: Ctrl-C would print "interrupted"
//! while the task went on writing. Long loops (the generator's days and machines, the
//! ingester's pages) therefore take a [`Cancel`] and check it often; when it is set they
//! return [`Interrupted`] before committing, and the writer they drop removes what it
//! wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag shared between whoever may cancel and the work that checks it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

/// The work stopped because it was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Asks the work to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// A guard that cancels this flag when dropped: work handed to another thread
    /// stops when the future waiting for it is dropped (Ctrl-C in the console).
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }

    /// Whether stopping was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Interrupted)` once stopping was asked for.
    pub fn check(&self) -> Result<(), Interrupted> {
        if self.is_cancelled() {
            Err(Interrupted)
        } else {
            Ok(())
        }
    }
}

/// Cancels its flag when dropped; see [`Cancel::cancel_on_drop`].
#[derive(Debug)]
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
