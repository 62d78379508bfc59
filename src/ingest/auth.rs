//! Tokens from the Microsoft identity platform: client credentials (an application's
//! secret, on the v2 endpoint or the v1 one) and the device authorization grant (an
//! analyst signs in with a code; the tokens are cached so the next run needs no new
//! sign-in).
//!
//! Written here rather than taken from `azure_identity` or `oauth2`: both were weighed.
//! `azure_identity` brings `azure_core` and its HTTP stack (a second client beside
//! reqwest, and minutes of build), has no v1 `resource=` flow and keeps its token cache
//! in memory only; `oauth2` speaks RFC 6749 generically but knows nothing of the
//! identity platform's error bodies, `.default` scopes, v1 endpoint or string-typed
//! `expires_in`. What is needed is three form posts and a poll loop over the reqwest
//! client the API calls use, which is less code than adapting either.
//!
//! A token is renewed `margin` before it expires (a lifetime shorter than the margin
//! means a new token for every call), and once more when the API answers 401. Secrets
//! and tokens live in [`Secret`], which never prints its value; errors carry the
//! identity platform's own message, which never holds the secret.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;

use super::endpoints::Endpoints;
use super::events::{Event, Observer};
use super::http::{Backoff, read_body};

/// A secret value: a client secret or a token. `Debug` and errors never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the ingester signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An application's client secret (application permission `Machine.Read.All`).
    ClientSecret { client_id: String, secret: Secret },
    /// The device authorization grant for a user (delegated permission
    /// `Machine.Read`): the service then answers with that user's device groups only.
    /// Tokens are cached in `cache` (a 0600 file).
    DeviceCode {
        client_id: String,
        cache: Option<PathBuf>,
    },
}

/// Which token endpoint client credentials use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenEndpoint {
    /// `/{tenant}/oauth2/v2.0/token` with `scope=.../.default`.
    #[default]
    V2,
    /// `/{tenant}/oauth2/token` with `resource=...`.
    V1,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("sign-in failed at {endpoint} ({status}): {error}: {description}")]
    Refused {
        endpoint: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("the token endpoint {endpoint} could not be reached after {attempts} attempts: {why}")]
    Unreachable {
        endpoint: String,
        attempts: u32,
        why: String,
    },
    #[error("the token endpoint {endpoint} answered something that is not a token: {why}")]
    BadAnswer { endpoint: String, why: String },
    #[error("the sign-in code expired before the sign-in was completed; run again for a new code")]
    CodeExpired,
    #[error("the sign-in was declined")]
    Declined,
    #[error("device-code sign-in uses the v2 endpoint; drop --token-endpoint v1")]
    DeviceCodeNeedsV2,
    #[error("{op} token cache {}: {source}", path.display())]
    Cache {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "token cache {} is damaged ({source}); delete it and run again (the run after signs in anew)",
        path.display()
    )]
    CacheDamaged {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The identity platform's token answer (v1 writes numbers as strings).
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    expires_in: Value,
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Debug, Deserialize)]
struct DeviceCodeAnswer {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    message: Option<String>,
    expires_in: Value,
    #[serde(default)]
    interval: Option<Value>,
}

/// A number the platform may write as a number or as a string.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// One cached sign-in: what the cache file holds per (authority, tenant, client, scope).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    access_token: String,
    /// Unix seconds.
    expires_at: i64,
    #[serde(default)]
    refresh_token: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    #[serde(default)]
    entries: BTreeMap<String, CacheEntry>,
}

/// The default token cache: `mdesnap/tokens.json` in the user's cache folder.
pub fn default_cache_path() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("mdesnap").join("tokens.json"))
}

/// A token in hand.
#[derive(Debug)]
struct Token {
    access: Secret,
    expires_at: Instant,
}

/// Tokens for one scope, renewed as needed.
#[derive(Debug)]
pub struct TokenSource {
    http: reqwest::Client,
    authority: String,
    tenant: String,
    credentials: Credentials,
    scope: String,
    endpoint: TokenEndpoint,
    margin: Duration,
    retries: u32,
    backoff: Backoff,
    current: Option<Token>,
    refresh: Option<Secret>,
    /// Tokens fetched so far (for the report and tests).
    pub fetched: u32,
}

/// The largest token answer read.
const MAX_TOKEN_BODY: u64 = 1 << 20;

impl TokenSource {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        http: reqwest::Client,
        endpoints: &Endpoints,
        scope: &str,
        tenant: &str,
        credentials: Credentials,
        endpoint: TokenEndpoint,
        margin: Duration,
        retries: u32,
        backoff_base: Duration,
    ) -> Result<Self, AuthError> {
        if endpoint == TokenEndpoint::V1 && matches!(credentials, Credentials::DeviceCode { .. }) {
            return Err(AuthError::DeviceCodeNeedsV2);
        }
        Ok(TokenSource {
            http,
            authority: endpoints.authority.clone(),
            tenant: tenant.to_string(),
            credentials,
            scope: scope.to_string(),
            endpoint,
            margin,
            retries,
            backoff: Backoff::new(backoff_base),
            current: None,
            refresh: None,
            fetched: 0,
        })
    }

    /// Forgets the token in hand (the API said 401): the next call gets a new one.
    pub fn invalidate(&mut self) {
        self.current = None;
    }

    /// A token valid for at least the margin, fetched or renewed if needed.
    pub async fn bearer(&mut self, events: Observer<'_>) -> Result<Secret, AuthError> {
        if let Some(t) = &self.current
            && t.expires_at > Instant::now() + self.margin
        {
            return Ok(t.access.clone());
        }
        let (access, lifetime, refresh) = match self.credentials.clone() {
            Credentials::ClientSecret { client_id, secret } => {
                self.client_credentials(&client_id, &secret).await?
            }
            Credentials::DeviceCode { client_id, cache } => {
                self.delegated(&client_id, cache.as_deref(), events).await?
            }
        };
        self.fetched += 1;
        let access = Secret::new(access);
        self.current = Some(Token {
            access: access.clone(),
            expires_at: Instant::now() + lifetime,
        });
        if let Some(r) = refresh {
            self.refresh = Some(Secret::new(r));
        }
        Ok(access)
    }

    fn token_url(&self) -> String {
        match self.endpoint {
            TokenEndpoint::V2 => format!("{}/{}/oauth2/v2.0/token", self.authority, self.tenant),
            TokenEndpoint::V1 => format!("{}/{}/oauth2/token", self.authority, self.tenant),
        }
    }

    async fn client_credentials(
        &mut self,
        client_id: &str,
        secret: &Secret,
    ) -> Result<(String, Duration, Option<String>), AuthError> {
        let target = match self.endpoint {
            TokenEndpoint::V2 => ("scope", self.scope.clone()),
            TokenEndpoint::V1 => ("resource", Endpoints::resource(&self.scope).to_string()),
        };
        let form = form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret.expose()),
            (target.0, &target.1),
        ]);
        let url = self.token_url();
        match self.post(&url, form).await? {
            Ok(answer) => token_of(&url, answer),
            Err((status, e)) => Err(refused(&url, status, e)),
        }
    }

    /// A user's token: from the cache, by its refresh token, or by a new sign-in.
    async fn delegated(
        &mut self,
        client_id: &str,
        cache: Option<&Path>,
        events: Observer<'_>,
    ) -> Result<(String, Duration, Option<String>), AuthError> {
        let key = format!(
            "{}|{}|{}|{}",
            self.authority, self.tenant, client_id, self.scope
        );
        let now = chrono::Utc::now().timestamp();
        let cached = match cache {
            Some(path) => read_cache(path)?.entries.remove(&key),
            None => None,
        };
        if self.current.is_none()
            && let Some(entry) = &cached
            && entry.expires_at - self.margin.as_secs() as i64 > now
        {
            let left = Duration::from_secs((entry.expires_at - now).max(0) as u64);
            if self.refresh.is_none() {
                self.refresh = entry.refresh_token.clone().map(Secret::new);
            }
            return Ok((entry.access_token.clone(), left, None));
        }
        let refresh = self
            .refresh
            .clone()
            .or_else(|| cached.and_then(|e| e.refresh_token.map(Secret::new)));
        let mut got = None;
        if let Some(refresh) = refresh {
            let form = form(&[
                ("grant_type", "refresh_token"),
                ("client_id", client_id),
                ("refresh_token", refresh.expose()),
                ("scope", &self.scope_with_offline()),
            ]);
            let url = self.token_url();
            match self.post(&url, form).await? {
                Ok(answer) => got = Some(token_of(&url, answer)?),
                // An expired or revoked refresh token: sign in again.
                Err((status, e)) => events(Event::Warning(format!(
                    "the cached sign-in could not be renewed ({status} {}), signing in again",
                    e.error
                ))),
            }
        }
        let (access, lifetime, refresh) = match got {
            Some(t) => t,
            None => self.device_code(client_id, events).await?,
        };
        if let Some(path) = cache {
            let entry = CacheEntry {
                access_token: access.clone(),
                expires_at: now + lifetime.as_secs() as i64,
                refresh_token: refresh
                    .clone()
                    .or_else(|| self.refresh.as_ref().map(|r| r.expose().to_string())),
            };
            store(path, key, entry)?;
        }
        Ok((access, lifetime, refresh))
    }

    fn scope_with_offline(&self) -> String {
        format!("{} offline_access", self.scope)
    }

    /// The device authorization grant: show the code, poll as the grant says.
    async fn device_code(
        &mut self,
        client_id: &str,
        events: Observer<'_>,
    ) -> Result<(String, Duration, Option<String>), AuthError> {
        let url = format!("{}/{}/oauth2/v2.0/devicecode", self.authority, self.tenant);
        let form_body = form(&[
            ("client_id", client_id),
            ("scope", &self.scope_with_offline()),
        ]);
        let answer = match self.post(&url, form_body).await? {
            Ok(v) => v,
            Err((status, e)) => return Err(refused(&url, status, e)),
        };
        let code: DeviceCodeAnswer =
            serde_json::from_value(answer).map_err(|e| AuthError::BadAnswer {
                endpoint: url.clone(),
                why: e.to_string(),
            })?;
        let expires = Duration::from_secs(seconds(&code.expires_in).unwrap_or(900).min(86_400));
        let mut interval = Duration::from_secs(
            code.interval
                .as_ref()
                .and_then(seconds)
                .unwrap_or(5)
                .clamp(1, 60),
        );
        events(Event::SignIn {
            message: code.message.clone().unwrap_or_else(|| {
                format!(
                    "To sign in, open {} and enter the code {}",
                    code.verification_uri, code.user_code
                )
            }),
            verification_uri: code.verification_uri.clone(),
            user_code: code.user_code.clone(),
        });
        let deadline = Instant::now() + expires;
        let token_url = self.token_url();
        loop {
            tokio::time::sleep(interval).await;
            if Instant::now() > deadline {
                return Err(AuthError::CodeExpired);
            }
            let poll = form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", client_id),
                ("device_code", &code.device_code),
            ]);
            match self.post(&token_url, poll).await? {
                Ok(answer) => return token_of(&token_url, answer),
                Err((status, e)) => match e.error.as_str() {
                    "authorization_pending" => {}
                    // RFC 8628 3.5: wait five seconds longer from now on.
                    "slow_down" => interval += Duration::from_secs(5),
                    "expired_token" | "code_expired" => return Err(AuthError::CodeExpired),
                    "authorization_declined" | "access_denied" => return Err(AuthError::Declined),
                    _ => return Err(refused(&token_url, status, e)),
                },
            }
        }
    }

    /// Posts a form; `Ok(Ok(json))` on 200, `Ok(Err(..))` with the platform's error
    /// on 4xx, retrying 5xx and transport failures with backoff.
    async fn post(
        &mut self,
        url: &str,
        body: String,
    ) -> Result<Result<Value, (u16, ErrorAnswer)>, AuthError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send()
                .await;
            let why = match sent {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match read_body(r, MAX_TOKEN_BODY).await {
                        Ok(bytes) if status == 200 => {
                            return serde_json::from_slice(&bytes).map(Ok).map_err(|e| {
                                AuthError::BadAnswer {
                                    endpoint: url.to_string(),
                                    why: e.to_string(),
                                }
                            });
                        }
                        Ok(bytes) if status < 500 => {
                            let e = serde_json::from_slice::<ErrorAnswer>(&bytes).unwrap_or(
                                ErrorAnswer {
                                    error: format!("http {status}"),
                                    error_description: String::from_utf8_lossy(&bytes)
                                        .chars()
                                        .take(300)
                                        .collect(),
                                },
                            );
                            return Ok(Err((status, e)));
                        }
                        Ok(_) => format!("http {status}"),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.without_url().to_string(),
            };
            if attempt > self.retries {
                return Err(AuthError::Unreachable {
                    endpoint: url.to_string(),
                    attempts: attempt,
                    why,
                });
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn refused(url: &str, status: u16, e: ErrorAnswer) -> AuthError {
    AuthError::Refused {
        endpoint: url.to_string(),
        status,
        error: e.error,
        description: e.error_description,
    }
}

fn token_of(url: &str, answer: Value) -> Result<(String, Duration, Option<String>), AuthError> {
    let t: TokenAnswer = serde_json::from_value(answer).map_err(|e| AuthError::BadAnswer {
        endpoint: url.to_string(),
        why: e.to_string(),
    })?;
    let lifetime = seconds(&t.expires_in).ok_or_else(|| AuthError::BadAnswer {
        endpoint: url.to_string(),
        why: "expires_in is not a number of seconds".to_string(),
    })?;
    Ok((
        t.access_token,
        Duration::from_secs(lifetime.min(30 * 86_400)),
        t.refresh_token,
    ))
}

fn read_cache(path: &Path) -> Result<CacheFile, AuthError> {
    match std::fs::read(path) {
        // A cache that does not parse is not taken for an empty one: writing over it
        // would lose the sign-ins it holds, and hide whatever damaged it.
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| AuthError::CacheDamaged {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CacheFile::default()),
        Err(source) => Err(AuthError::Cache {
            op: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Puts `entry` in the cache under `key`, keeping the other entries. The cache is
/// read again and written under an exclusive lock of `<cache>.lock` (a 0600 file
/// beside it, locked with `flock`, which the kernel drops when a holder dies), so two
/// runs signing in at once each keep their entry. The lock is held for a read and a
/// write of a small file: a caller on an async thread waits that long at most.
fn store(path: &Path, key: String, entry: CacheEntry) -> Result<(), AuthError> {
    let err = |op, source| AuthError::Cache {
        op,
        path: path.to_path_buf(),
        source,
    };
    private_dir(path).map_err(|e| err("writing", e))?;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(PathBuf::from(name))
        .map_err(|e| err("locking", e))?;
    lock.lock().map_err(|e| err("locking", e))?;
    let mut file = read_cache(path)?;
    file.entries.insert(key, entry);
    write_cache(path, &file)
    // `lock` is closed here, which releases it.
}

/// Creates the cache's folder, readable by its owner only, if it is missing.
fn private_dir(path: &Path) -> std::io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Options that create a file readable by its owner only.
fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Writes the cache readable by its owner only: a temporary 0600 file beside it,
/// renamed over it (a reader sees the old cache or the new one, never half of one).
fn write_cache(path: &Path, file: &CacheFile) -> Result<(), AuthError> {
    use std::io::Write;
    let err = |source| AuthError::Cache {
        op: "writing",
        path: path.to_path_buf(),
        source,
    };
    private_dir(path).map_err(err)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let json = serde_json::to_vec_pretty(file).map_err(|e| err(std::io::Error::other(e)))?;
    let written = private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&json).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let c = Credentials::ClientSecret {
            client_id: "app".into(),
            secret: s,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn expires_in_as_number_or_text() {
        assert_eq!(seconds(&Value::from(3599)), Some(3599));
        assert_eq!(seconds(&Value::from("3599")), Some(3599));
        assert_eq!(seconds(&Value::from("soon")), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("tokens.json");
        store(&path, "k".into(), entry(1)).expect("writes");
        for file in [
            path.clone(),
            dir.path().join("sub").join("tokens.json.lock"),
        ] {
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        let parent = std::fs::metadata(path.parent().expect("dir"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(parent & 0o777, 0o700);
        assert_eq!(read_cache(&path).expect("reads").entries.len(), 1);
    }

    fn entry(n: i64) -> CacheEntry {
        CacheEntry {
            access_token: format!("a{n}"),
            expires_at: n,
            refresh_token: None,
        }
    }

    #[test]
    fn a_damaged_cache_is_an_error_naming_the_file_and_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, b"{\"entries\": {\"k\": trunc").expect("writes");
        let err = read_cache(&path).expect_err("a damaged cache is no empty cache");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("delete"), "says how to fix it: {text}");
        let err = store(&path, "k".into(), entry(1)).expect_err("not overwritten");
        assert!(matches!(err, AuthError::CacheDamaged { .. }), "{err}");
        assert_eq!(
            std::fs::read(&path).expect("reads"),
            b"{\"entries\": {\"k\": trunc"
        );
    }

    #[test]
    fn writers_at_once_keep_every_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.json");
        let (writers, each) = (8, 12);
        std::thread::scope(|scope| {
            for w in 0..writers {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..each {
                        store(path, format!("w{w}-{i}"), entry(i)).expect("stores");
                    }
                });
            }
        });
        let file = read_cache(&path).expect("reads");
        assert_eq!(
            file.entries.len(),
            writers * each as usize,
            "no update lost"
        );
    }
}
