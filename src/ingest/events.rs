//! What an ingest tells its caller as it goes: pages, waits, retries, warnings, and the
//! sign-in code of a delegated sign-in. The library prints nothing; the `mdesnap`
//! command shows these as a progress bar on a terminal or as plain lines.

use std::time::Duration;

/// Why the ingester is waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The client-side limiter: the next call would exceed a rate limit.
    RateLimit,
    /// The service answered 429 with this `Retry-After`.
    RetryAfter,
    /// Backing off after a transient failure (5xx, timeout, dropped connection).
    Backoff,
}

/// One thing worth telling.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A delegated sign-in is waiting for the user: show `message` (it names the URL
    /// and the code).
    SignIn {
        message: String,
        verification_uri: String,
        user_code: String,
    },
    /// A page of `route` arrived with `rows` records; `total` so far for the table,
    /// `expected` when the service said how many there are.
    Page {
        route: &'static str,
        rows: usize,
        total: u64,
        expected: Option<u64>,
    },
    /// Waiting `wait` before the next call to `route`.
    Waiting {
        route: &'static str,
        wait: Duration,
        reason: WaitReason,
    },
    /// A call to `route` failed in a way worth retrying; `attempt` of `of`.
    Retrying {
        route: &'static str,
        attempt: u32,
        of: u32,
        why: String,
    },
    /// Something the user should know that does not stop the run.
    Warning(String),
}

/// Where events go.
pub type Observer<'a> = &'a (dyn Fn(Event) + Send + Sync);
