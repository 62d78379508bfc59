//! The client-side limiter: the service allows 100 calls in any rolling minute and
//! 1,500 in any rolling hour per endpoint (contract section 7), and a client that runs
//! into 429s is kept throttled longer by every early retry. So every request, retries
//! and 401s included, first takes a slot here, one limiter per route template.
//!
//! Each template keeps the times of its calls within the longest window. A call may go
//! when fewer than the limit fall in each window; otherwise it waits until the oldest
//! one that matters leaves the window, plus a margin (a fiftieth of the window): the
//! service stamps a call when it arrives, a little after it was sent, and two calls
//! sent a window apart must not arrive less than a window apart.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The limits of one route template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls allowed in any rolling `minute`.
    pub per_minute: u32,
    /// Calls allowed in any rolling `hour`.
    pub per_hour: u32,
    /// The short window (60 s; shorter in tests).
    pub minute: Duration,
    /// The long window (3,600 s; shorter in tests).
    pub hour: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_minute: 100,
            per_hour: 1_500,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3_600),
        }
    }
}

/// Rolling-window limiters, one per route template.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    calls: Mutex<HashMap<&'static str, VecDeque<Instant>>>,
}

impl Limiter {
    /// A limiter enforcing `limits` on every route template.
    pub fn new(limits: Limits) -> Self {
        Limiter {
            limits,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// How long a call to `route` must wait from `now`; zero when it may go, and then
    /// the call is recorded.
    fn try_take(&self, route: &'static str, now: Instant) -> Duration {
        let Limits {
            per_minute,
            per_hour,
            minute,
            hour,
        } = self.limits;
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let times = calls.entry(route).or_default();
        let longest = minute.max(hour);
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= longest)
        {
            times.pop_front();
        }
        // The call that must leave `window` before another may join it: the
        // `limit`-th newest, when at least `limit` calls fall in the window.
        let wait_for = |limit: u32, window: Duration| -> Duration {
            let limit = limit.max(1) as usize;
            let in_window = times
                .iter()
                .rev()
                .take_while(|t| now.saturating_duration_since(**t) < window)
                .count();
            if in_window < limit {
                return Duration::ZERO;
            }
            let oldest = times[times.len() - limit];
            let margin = window / 50;
            (oldest + window + margin).saturating_duration_since(now)
        };
        let wait = wait_for(per_minute, minute).max(wait_for(per_hour, hour));
        if wait.is_zero() {
            times.push_back(now);
        }
        wait
    }

    /// Waits until a call to `route` is allowed and records it; returns how long it
    /// waited. `on_wait` hears of each wait before it starts.
    pub async fn acquire(
        &self,
        route: &'static str,
        mut on_wait: impl FnMut(Duration),
    ) -> Duration {
        let began = Instant::now();
        loop {
            let wait = self.try_take(route, Instant::now());
            if wait.is_zero() {
                return began.elapsed();
            }
            on_wait(wait);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_minute: u32, per_hour: u32) -> Limits {
        Limits {
            per_minute,
            per_hour,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3_600),
        }
    }

    #[test]
    fn the_minute_window_rolls() {
        let l = Limiter::new(limits(3, 100));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(l.try_take("a", t0 + Duration::from_secs(i)).is_zero());
        }
        // The fourth waits for the first to leave the minute, plus the margin.
        let wait = l.try_take("a", t0 + Duration::from_secs(10));
        assert_eq!(wait, Duration::from_millis(51_200));
        // Another route has its own window.
        assert!(l.try_take("b", t0 + Duration::from_secs(10)).is_zero());
        assert!(
            l.try_take("a", t0 + Duration::from_millis(61_200))
                .is_zero()
        );
    }

    #[test]
    fn the_hour_window_binds_too() {
        let l = Limiter::new(limits(100, 4));
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(l.try_take("a", t0 + Duration::from_secs(70 * i)).is_zero());
        }
        let wait = l.try_take("a", t0 + Duration::from_secs(300));
        assert_eq!(wait, Duration::from_secs(3_600 + 72 - 300));
    }

    #[test]
    fn no_window_ever_holds_more_than_its_limit() {
        let l = Limiter::new(limits(5, 12));
        let mut now = Instant::now();
        let start = now;
        let mut sent = Vec::new();
        while sent.len() < 40 {
            let wait = l.try_take("a", now);
            if wait.is_zero() {
                sent.push(now);
            }
            now += wait.max(Duration::from_millis(700));
        }
        for (i, t) in sent.iter().enumerate() {
            let minute = sent[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(60))
                .count();
            let hour = sent[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < Duration::from_secs(3_600))
                .count();
            assert!(
                minute <= 5,
                "{minute} calls in a minute from {:?}",
                *t - start
            );
            assert!(hour <= 12, "{hour} calls in an hour");
        }
    }
}
