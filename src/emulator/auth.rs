//! The identity platform's side: the token endpoints (v2 client credentials and device
//! code, v1 `resource=`), the device authorization endpoint, and the checks the API
//! makes of a bearer token (401 for a missing, unknown or expired one; 403 for the
//! wrong audience or missing permission).
//!
//! Tokens are JWT-shaped (`header.claims.signature`, base64url) so a client can decode
//! the claims as it would a real one; the emulator knows the tokens it issued and
//! accepts no others.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::state::{Claims, DeviceCode, RefreshGrant, Shared};

/// Audiences of the MDE API: current, previous and WDATP hosts, the gov clouds, the
/// app ID URI and the application id.
pub const MDE_AUDIENCES: &[&str] = &[
    "https://api.securitycenter.microsoft.com",
    "https://api.security.microsoft.com",
    "https://api.securitycenter.windows.com",
    "https://securitycenter.onmicrosoft.com/windowsatpservice",
    "https://api-gcc.securitycenter.microsoft.us",
    "https://api-gov.securitycenter.microsoft.us",
    "fc780465-2017-40d4-a0c5-307022471b92",
];

/// The audience of Microsoft Graph, where the security states route lives.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";

/// An identity-platform error: `{"error", "error_description"}` with its status.
#[derive(Debug)]
pub struct TokenError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl TokenError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        TokenError {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// The form fields of a token request (`application/x-www-form-urlencoded`).
pub fn form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Issues a token for `claims` and remembers it.
fn issue(shared: &Shared, claims: Claims) -> String {
    let mut inner = shared.lock();
    let header = b64url(br#"{"alg":"none","typ":"JWT","kid":"emulator"}"#);
    let payload = b64url(
        serde_json::to_string(&claims)
            .unwrap_or_default()
            .as_bytes(),
    );
    let sig = inner.rng.hex(43);
    let token = format!("{header}.{payload}.{sig}");
    // Expired tokens are answered as unknown ones: forget them, so a client asking
    // for tokens in a loop does not grow the emulator without end.
    let now = Instant::now();
    inner
        .tokens
        .retain(|_, c| c.expires.is_none_or(|e| e > now));
    inner.tokens.insert(token.clone(), claims);
    token
}

/// The tenant in the path must be the emulator's.
fn check_tenant(cfg: &super::EmulatorConfig, tenant: &str) -> Result<(), TokenError> {
    if tenant.eq_ignore_ascii_case(&cfg.tenant_id) {
        Ok(())
    } else {
        Err(TokenError::new(
            400,
            "invalid_tenant",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        ))
    }
}

/// `POST /{tenant}/oauth2/v2.0/token` (`v2`) or `/{tenant}/oauth2/token`.
pub fn token(shared: &Shared, tenant: &str, v2: bool, body: &[u8]) -> Result<Value, TokenError> {
    let cfg = &shared.config;
    let f = form(body);
    check_tenant(cfg, tenant)?;
    let grant = field(&f, "grant_type").ok_or_else(|| {
        TokenError::new(
            400,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
        )
    })?;
    *shared
        .lock()
        .stats
        .token_requests
        .entry(grant.to_string())
        .or_insert(0) += 1;
    match grant {
        "client_credentials" => client_credentials(shared, &f, v2),
        "urn:ietf:params:oauth:grant-type:device_code" if v2 => device_token(shared, &f),
        "refresh_token" if v2 => refresh(shared, &f),
        other => Err(TokenError::new(
            400,
            "unsupported_grant_type",
            format!("AADSTS70003: The app requested an unsupported grant type '{other}'."),
        )),
    }
}

fn client_credentials(
    shared: &Shared,
    f: &[(String, String)],
    v2: bool,
) -> Result<Value, TokenError> {
    let cfg = &shared.config;
    let client = field(f, "client_id").unwrap_or_default();
    if client != cfg.client_id {
        return Err(TokenError::new(
            400,
            "unauthorized_client",
            format!(
                "AADSTS700016: Application with identifier '{client}' was not found in the directory."
            ),
        ));
    }
    if field(f, "client_secret") != Some(cfg.client_secret.as_str()) {
        // The secret itself is never echoed.
        return Err(TokenError::new(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        ));
    }
    let aud = if v2 {
        let scope = field(f, "scope").ok_or_else(|| {
            TokenError::new(
                400,
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: 'scope'.",
            )
        })?;
        scope
            .strip_suffix("/.default")
            .ok_or_else(|| {
                TokenError::new(
                    400,
                    "invalid_scope",
                    format!("AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier."),
                )
            })?
            .to_string()
    } else {
        field(f, "resource")
            .ok_or_else(|| {
                TokenError::new(
                    400,
                    "invalid_request",
                    "AADSTS50001: The request body must contain the parameter 'resource'.",
                )
            })?
            .to_string()
    };
    let lifetime = cfg.token_lifetime.as_secs() as i64;
    let iat = now_secs();
    let claims = Claims {
        aud: aud.clone(),
        appid: cfg.client_id.clone(),
        tid: cfg.tenant_id.clone(),
        roles: cfg.roles.clone(),
        scp: None,
        upn: None,
        groups: None,
        iat,
        exp: iat + lifetime,
        expires: Instant::now().checked_add(cfg.token_lifetime),
    };
    let token = issue(shared, claims);
    Ok(if v2 {
        json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token})
    } else {
        json!({
            "token_type": "Bearer",
            "expires_in": lifetime.to_string(),
            "ext_expires_in": lifetime.to_string(),
            "expires_on": (iat + lifetime).to_string(),
            "not_before": iat.to_string(),
            "resource": aud,
            "access_token": token,
        })
    })
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`: starts a delegated sign-in for an emulated
/// user (`login_hint`, else the first `--user`), approved after `--approve-after`.
pub fn device_code(shared: &Shared, tenant: &str, body: &[u8]) -> Result<Value, TokenError> {
    let cfg = &shared.config;
    let f = form(body);
    check_tenant(cfg, tenant)?;
    if field(&f, "client_id") != Some(cfg.client_id.as_str()) {
        return Err(TokenError::new(
            400,
            "unauthorized_client",
            "AADSTS700016: Application was not found in the directory.",
        ));
    }
    let scope = field(&f, "scope").unwrap_or_default().to_string();
    let hint = field(&f, "login_hint").map(|h| h.split('@').next().unwrap_or(h).to_string());
    let user = match hint {
        Some(h) => cfg.users.iter().find(|(u, _)| u.eq_ignore_ascii_case(&h)),
        None => cfg.users.first(),
    };
    let Some((user, _)) = user else {
        return Err(TokenError::new(
            400,
            "invalid_request",
            "no emulated user for a device-code sign-in: start the emulator with --user NAME=GROUP_ID",
        ));
    };
    let mut inner = shared.lock();
    *inner
        .stats
        .token_requests
        .entry("devicecode".to_string())
        .or_insert(0) += 1;
    let now = Instant::now();
    inner.device_codes.retain(|_, d| d.expires_at > now);
    let device = inner.rng.hex(48);
    let user_code = format!("{}-{}", inner.rng.hex(4), inner.rng.hex(4)).to_uppercase();
    inner.device_codes.insert(
        device.clone(),
        DeviceCode {
            scope,
            user: user.clone(),
            approve_at: now + cfg.approve_after,
            expires_at: now + cfg.device_code_lifetime,
            issued_at: now,
            last_poll: None,
        },
    );
    Ok(json!({
        "user_code": user_code,
        "device_code": device,
        "verification_uri": "https://microsoft.com/devicelogin",
        "expires_in": cfg.device_code_lifetime.as_secs().max(1),
        "interval": DEVICE_CODE_INTERVAL.as_secs(),
        "message": format!("To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code {user_code} to authenticate. (Emulator: {user} is signed in automatically.)"),
    }))
}

/// How often a client may poll for a device-code sign-in (`interval`); polling faster
/// earns `slow_down`, as RFC 8628 says.
const DEVICE_CODE_INTERVAL: Duration = Duration::from_secs(1);

fn device_token(shared: &Shared, f: &[(String, String)]) -> Result<Value, TokenError> {
    let code = field(f, "device_code").unwrap_or_default();
    let now = Instant::now();
    let pending = {
        let mut inner = shared.lock();
        inner.device_codes.get_mut(code).map(|d| {
            let previous = d.last_poll.replace(now);
            (d.clone(), previous)
        })
    };
    let Some((dc, previous)) = pending else {
        return Err(TokenError::new(
            400,
            "invalid_grant",
            "AADSTS70000: The provided value for 'device_code' is not valid.",
        ));
    };
    if now > dc.expires_at {
        return Err(TokenError::new(
            400,
            "expired_token",
            "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. This device code has expired.",
        ));
    }
    // A tenth of the interval's grace for timers that fire a little early.
    let least = shared.config.device_code_min_poll.max(DEVICE_CODE_INTERVAL);
    let since = previous.map_or(now.duration_since(dc.issued_at), |p| now.duration_since(p));
    if since < least * 9 / 10 {
        return Err(TokenError::new(
            400,
            "slow_down",
            "AADSTS70016: OAuth 2.0 device flow error. Polling too fast; wait longer between requests.",
        ));
    }
    if now < dc.approve_at {
        return Err(TokenError::new(
            400,
            "authorization_pending",
            "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        ));
    }
    shared.lock().device_codes.remove(code);
    Ok(delegated_token(shared, &dc.user, &dc.scope))
}

/// `grant_type=refresh_token`: a new token for the user a refresh token was given to.
fn refresh(shared: &Shared, f: &[(String, String)]) -> Result<Value, TokenError> {
    let token = field(f, "refresh_token").unwrap_or_default();
    let grant = shared.lock().refresh_tokens.get(token).cloned();
    let Some(grant) = grant else {
        return Err(TokenError::new(
            400,
            "invalid_grant",
            "AADSTS70000: The provided value for 'refresh_token' is not valid.",
        ));
    };
    Ok(delegated_token(shared, &grant.user, &grant.scope))
}

/// A user's access token (with the device groups that user sees) and a refresh token.
fn delegated_token(shared: &Shared, user: &str, scope: &str) -> Value {
    let cfg = &shared.config;
    let groups = cfg
        .users
        .iter()
        .find(|(u, _)| u == user)
        .map(|(_, g)| g.clone())
        .unwrap_or_default();
    // The scope names the resource and the permission: `<resource>/Machine.Read`, or
    // `<resource>/.default` for what was consented (Machine.Read here).
    let first = scope
        .split_whitespace()
        .find(|s| s.starts_with("http") || s.contains('/'))
        .unwrap_or("");
    let (aud, perm) = first.rsplit_once('/').unwrap_or((first, ""));
    let scp = if perm == ".default" || perm.is_empty() {
        "Machine.Read".to_string()
    } else {
        perm.to_string()
    };
    let lifetime = cfg.token_lifetime.as_secs() as i64;
    let iat = now_secs();
    let claims = Claims {
        aud: aud.to_string(),
        appid: cfg.client_id.clone(),
        tid: cfg.tenant_id.clone(),
        roles: Vec::new(),
        scp: Some(scp.clone()),
        upn: Some(format!("{user}@emulator.local")),
        groups: Some(groups),
        iat,
        exp: iat + lifetime,
        expires: Instant::now().checked_add(cfg.token_lifetime),
    };
    let token = issue(shared, claims);
    let refresh = {
        let mut inner = shared.lock();
        let r = format!("refresh.{}", inner.rng.hex(48));
        inner.refresh_tokens.insert(
            r.clone(),
            RefreshGrant {
                scope: scope.to_string(),
                user: user.to_string(),
            },
        );
        r
    };
    json!({"token_type": "Bearer", "scope": scp, "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token, "refresh_token": refresh})
}

/// Why a call to the API is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Unauthorized(&'static str),
    Forbidden(&'static str),
}

/// Checks the bearer token of an API call for `audiences`; returns its claims.
pub fn check(
    shared: &Shared,
    authorization: Option<&str>,
    audiences: &[&str],
) -> Result<Claims, Denied> {
    let Some(header) = authorization else {
        return Err(Denied::Unauthorized("Authorization header is missing"));
    };
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Err(Denied::Unauthorized(
            "Authorization header is not a bearer token",
        ));
    };
    let claims = shared.lock().tokens.get(token.trim()).cloned();
    let Some(claims) = claims else {
        return Err(Denied::Unauthorized(
            "invalid or expired authorization header",
        ));
    };
    if claims
        .expires
        .map_or(claims.exp <= now_secs(), |e| e <= Instant::now())
    {
        return Err(Denied::Unauthorized(
            "invalid or expired authorization header",
        ));
    }
    if !audiences
        .iter()
        .any(|a| a.eq_ignore_ascii_case(claims.aud.trim_end_matches('/')))
    {
        return Err(Denied::Forbidden("the token's audience is not this API"));
    }
    let allowed = match &claims.scp {
        Some(scp) => scp
            .split_whitespace()
            .any(|s| s == "Machine.Read" || s == "Machine.ReadWrite"),
        None => claims
            .roles
            .iter()
            .any(|r| r == "Machine.Read.All" || r == "Machine.ReadWrite.All"),
    };
    if !allowed {
        return Err(Denied::Forbidden(
            "the token lacks the Machine.Read permission",
        ));
    }
    Ok(claims)
}
