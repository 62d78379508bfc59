//! One GET against the API, done the way the live service asks (contract section 7):
//! a slot from the route's limiter first, then a token (so a long wait never spends a
//! token's life), then the call. 429 waits `Retry-After` (capped) and does not count
//! against the retry budget; 5xx, timeouts, dropped connections and cut or garbled
//! bodies are retried with exponential backoff and full jitter; a 401 gets a new token
//! once; 400, 403 and other 4xx stop with the service's own message. What a 404 means
//! is the caller's to say ([`On404`]): no rows (a user or a domain the service does not
//! know), or a fault until shown otherwise (the machines list: a wrong path or a
//! gateway answers 404 too), retried like a 5xx. Every attempt, retries and 401s
//! included, takes a limiter slot.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::auth::{AuthError, TokenSource};
use super::events::{Event, Observer, WaitReason};
use super::http::{Backoff, BodyError, read_body, retry_after};
use super::rate_limit::Limiter;

/// What the API answered.
#[derive(Debug)]
pub enum Answer<T> {
    /// The body, parsed.
    Json(T),
    /// 404: at once under [`On404::NoRows`], after every retry under
    /// [`On404::Retry`].
    NotFound {
        /// Attempts made, the last of which answered 404.
        attempts: u32,
        /// The service's code and message, when it gave them.
        message: String,
    },
}

/// What a 404 from a route means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On404 {
    /// No rows: returned at once (a user or a domain the service does not know).
    NoRows,
    /// Perhaps a fault (a wrong path, a gateway): retried like a 5xx, and returned
    /// only when the retries are spent, for the caller to judge.
    Retry,
}

/// Why a call failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: the service refused the request ({status} {code}): {message}")]
    Refused {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{url}: still 401 Unauthorized with a new token: {message}")]
    Unauthorized { url: String, message: String },
    #[error("{url}: gave up after {attempts} attempts: {why}")]
    GaveUp {
        url: String,
        attempts: u32,
        why: String,
    },
    #[error("{url}: throttled {times} times in a row (429); giving up")]
    Throttled { url: String, times: u32 },
    #[error("{url}: the answer is larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    /// HTTP requests to the API, every attempt.
    pub calls: u64,
    /// Attempts repeated after a transient failure.
    pub retries: u64,
    /// 429 answers waited out.
    pub throttled: u64,
}

/// How calls are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after transient failures, per call.
    pub retries: u32,
    /// First backoff ceiling; doubles each retry.
    pub backoff_base: Duration,
    /// The longest `Retry-After` honoured as given.
    pub max_retry_after: Duration,
    /// 429s in a row before giving up on a call.
    pub max_throttled: u32,
    /// The largest body read.
    pub max_body: u64,
}

/// The API client of a run.
#[derive(Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    limiter: Limiter,
    api_tokens: TokenSource,
    graph_tokens: Option<TokenSource>,
    policy: RetryPolicy,
    backoff: Backoff,
    pub counts: Calls,
}

/// `Retry-After` when the service gives none.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(60);

impl ApiClient {
    pub fn new(
        http: reqwest::Client,
        limiter: Limiter,
        api_tokens: TokenSource,
        graph_tokens: Option<TokenSource>,
        policy: RetryPolicy,
    ) -> Self {
        ApiClient {
            http,
            limiter,
            api_tokens,
            graph_tokens,
            backoff: Backoff::new(policy.backoff_base),
            policy,
            counts: Calls::default(),
        }
    }

    /// Tokens fetched so far, API and Graph.
    pub fn tokens_fetched(&self) -> u32 {
        self.api_tokens.fetched + self.graph_tokens.as_ref().map_or(0, |g| g.fetched)
    }

    /// A token for the API, fetched now (a sign-in happens here, before any call).
    pub async fn sign_in(&mut self, events: Observer<'_>) -> Result<(), ApiError> {
        self.api_tokens.bearer(events).await?;
        Ok(())
    }

    fn tokens(&mut self, graph: bool) -> &mut TokenSource {
        match (graph, &mut self.graph_tokens) {
            (true, Some(g)) => g,
            _ => &mut self.api_tokens,
        }
    }

    /// GETs `url` of route template `route` (Graph's tokens when `graph`), its body
    /// parsed as `T`; a body that does not parse (a cut the transport did not see) is
    /// retried like any transient failure, and a 404 as `on_404` says.
    pub async fn get<T: DeserializeOwned>(
        &mut self,
        route: &'static str,
        graph: bool,
        url: &str,
        on_404: On404,
        events: Observer<'_>,
    ) -> Result<Answer<T>, ApiError> {
        let mut transient = 0u32;
        let mut throttled = 0u32;
        let mut renewed = false;
        loop {
            // The service's words when this attempt is a 404 to retry.
            let mut not_found = None;
            self.limiter
                .acquire(route, |wait| {
                    events(Event::Waiting {
                        route,
                        wait,
                        reason: WaitReason::RateLimit,
                    })
                })
                .await;
            let token = self.tokens(graph).bearer(events).await?;
            self.counts.calls += 1;
            tracing::debug!("GET {url}");
            let sent = self
                .http
                .get(url)
                .bearer_auth(token.expose())
                .header("accept", "application/json")
                .send()
                .await;
            let why = match sent {
                Err(e) => transport_error(&e),
                Ok(response) => {
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    // "Once more on a 401" means two 401s in a row end the call; a
                    // later token that is revoked or expires gets its own renewal.
                    if status != 401 {
                        renewed = false;
                    }
                    match status {
                        200..=299 => match read_body(response, self.policy.max_body).await {
                            Ok(body) => match serde_json::from_slice::<T>(&body) {
                                Ok(v) => return Ok(Answer::Json(v)),
                                Err(e) => format!("the answer is not JSON ({e})"),
                            },
                            Err(BodyError::TooLarge { limit }) => {
                                return Err(ApiError::TooLarge {
                                    url: url.to_string(),
                                    limit,
                                });
                            }
                            Err(e) => e.to_string(),
                        },
                        404 if on_404 == On404::NoRows => {
                            return Ok(Answer::NotFound {
                                attempts: 1,
                                message: String::new(),
                            });
                        }
                        404 => {
                            let (code, message) = service_error(response).await;
                            let said = [code, message]
                                .into_iter()
                                .filter(|s| !s.is_empty())
                                .collect::<Vec<_>>()
                                .join(": ");
                            let said = if said.is_empty() {
                                "no error body".to_string()
                            } else {
                                said
                            };
                            let why = format!("404 Not Found ({said})");
                            not_found = Some(said);
                            why
                        }
                        401 => {
                            let (_, message) = service_error(response).await;
                            if renewed {
                                return Err(ApiError::Unauthorized {
                                    url: url.to_string(),
                                    message,
                                });
                            }
                            renewed = true;
                            self.tokens(graph).invalidate();
                            continue;
                        }
                        429 => {
                            throttled += 1;
                            self.counts.throttled += 1;
                            if throttled > self.policy.max_throttled {
                                return Err(ApiError::Throttled {
                                    url: url.to_string(),
                                    times: throttled,
                                });
                            }
                            let wait = headers
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| retry_after(v, chrono::Utc::now()))
                                .unwrap_or(DEFAULT_RETRY_AFTER)
                                .min(self.policy.max_retry_after);
                            events(Event::Waiting {
                                route,
                                wait,
                                reason: WaitReason::RetryAfter,
                            });
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        500..=599 => format!("{status} from the service"),
                        _ => {
                            let (code, message) = service_error(response).await;
                            return Err(ApiError::Refused {
                                url: url.to_string(),
                                status,
                                code,
                                message,
                            });
                        }
                    }
                }
            };
            transient += 1;
            if transient > self.policy.retries {
                if let Some(message) = not_found {
                    return Ok(Answer::NotFound {
                        attempts: transient,
                        message,
                    });
                }
                return Err(ApiError::GaveUp {
                    url: url.to_string(),
                    attempts: transient,
                    why,
                });
            }
            self.counts.retries += 1;
            events(Event::Retrying {
                route,
                attempt: transient,
                of: self.policy.retries,
                why,
            });
            let wait = self.backoff.delay(transient);
            events(Event::Waiting {
                route,
                wait,
                reason: WaitReason::Backoff,
            });
            tokio::time::sleep(wait).await;
        }
    }
}

/// A transport failure in words, without the URL (the caller names it) and with the
/// cause that says what happened (timed out, connection refused, reset).
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut off"
    } else {
        "the connection failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = None;
    while let Some(s) = source {
        detail = Some(s.to_string());
        source = s.source();
    }
    match detail {
        Some(d) => format!("{kind} ({d})"),
        None => kind.to_string(),
    }
}

/// The service's `{"error": {"code", "message"}}`, or the body's first words.
async fn service_error(response: reqwest::Response) -> (String, String) {
    let body = read_body(response, 1 << 20).await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or("").to_string();
    let message = match v["error"]["message"].as_str() {
        Some(m) => m.to_string(),
        None => String::from_utf8_lossy(&body).chars().take(300).collect(),
    };
    (code, message)
}
