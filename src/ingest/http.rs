//! The HTTP pieces both the token endpoints and the API use: the client (rustls with
//! ring, a timeout per request, no redirects: a redirect to another host must not take
//! a bearer token with it), reading a body with a size bound, and backoff with full
//! jitter.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::rng::Rng;

/// Installs rustls's ring provider as the process default, once. reqwest is built
/// without a provider of its own (its default, aws-lc-rs, compiles a large C library),
/// so a `reqwest::Client` built anywhere in the process needs this first; [`client`]
/// calls it.
pub fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Fails only when a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The HTTP client of a run: `timeout` bounds each request, body included.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mdesnap/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body was cut off: {0}")]
    Cut(#[source] reqwest::Error),
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_body(mut response: reqwest::Response, limit: u64) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Cut)? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `0..min(cap, base * 2^n)`, so clients that failed together do not retry together.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    rng: Rng,
}

impl Backoff {
    /// The longest single wait.
    pub const CAP: Duration = Duration::from_secs(60);

    pub fn new(base: Duration) -> Self {
        // Seeded from the clock, the process and a count of the backoffs made in it, so
        // no two share a stream: jitter need not be reproducible, only spread.
        static MADE: AtomicU64 = AtomicU64::new(0);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let made = MADE.fetch_add(1, Ordering::Relaxed);
        Backoff {
            base,
            cap: Self::CAP,
            rng: Rng::derive(seed, &[std::process::id().into(), made]),
        }
    }

    /// The wait before retry number `attempt` (1 for the first retry).
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        let ceiling = self.base.saturating_mul(factor).min(self.cap);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.below(micros.saturating_add(1)))
    }
}

/// The seconds a `Retry-After` header asks for: a number of seconds or an HTTP date.
pub fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(500));
        for attempt in 1..=40 {
            let ceiling = Duration::from_millis(500)
                .saturating_mul(2u32.saturating_pow((attempt - 1).min(30)))
                .min(Backoff::CAP);
            for _ in 0..50 {
                assert!(b.delay(attempt) <= ceiling, "attempt {attempt}");
            }
        }
    }

    #[test]
    fn retry_after_in_both_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-29T08:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Sun, 29 Nov 2026 08:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 29 Nov 2026 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
