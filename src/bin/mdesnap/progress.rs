//! How an ingest's events reach the user: a progress bar on a terminal, plain lines
//! when stderr is piped, nothing but warnings with `--quiet`. A wait for a rate limit,
//! a `Retry-After` or a backoff is shown as such, so a slow run never looks stuck.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mdesnap::ingest::{Event, WaitReason};

/// Where events are shown.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    quiet: bool,
    pages: Mutex<u64>,
}

impl Progress {
    /// A bar on a terminal, lines otherwise; `quiet` shows warnings and sign-in codes
    /// only.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            quiet,
            pages: Mutex::new(0),
        }
    }

    /// A line that stays: above the bar on a terminal, on stderr otherwise.
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Shows one event.
    pub fn show(&self, event: Event) {
        match event {
            Event::SignIn { message, .. } => self.line(&message),
            Event::Warning(w) => self.line(&format!("warning: {w}")),
            _ if self.quiet => {}
            Event::Page {
                route,
                rows,
                total,
                expected,
            } => {
                let pages = {
                    let mut p = self.pages.lock().unwrap_or_else(|e| e.into_inner());
                    *p += 1;
                    *p
                };
                let of = expected.map(|e| format!(" of {e}")).unwrap_or_default();
                let text = format!("page {pages}: {route}: {rows} new, {total}{of} so far");
                match &self.bar {
                    Some(bar) => bar.set_message(text),
                    None => eprintln!("{text}"),
                }
            }
            Event::Waiting {
                route,
                wait,
                reason,
            } => {
                if wait < Duration::from_millis(500) {
                    return;
                }
                let why = match reason {
                    WaitReason::RateLimit => "the rate limit",
                    WaitReason::RetryAfter => "the service's Retry-After (429)",
                    WaitReason::Backoff => "a backoff after a failed call",
                };
                let text = format!("waiting {:.1}s for {why} of {route}", wait.as_secs_f64());
                match &self.bar {
                    Some(bar) => bar.set_message(text),
                    None => eprintln!("{text}"),
                }
            }
            Event::Retrying {
                route,
                attempt,
                of,
                why,
            } => self.line(&format!("retry {attempt} of {of} for {route}: {why}")),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
