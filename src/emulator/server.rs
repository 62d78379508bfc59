//! The HTTP surface: one dispatcher that routes by hand, because the service's routing
//! is case-insensitive (`/api/Machines`), has a `v1.0` alias, and throttles per route
//! template, none of which a path router gives for free.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde_json::{Map, Value, json};

use super::auth::{self, Denied, GRAPH_AUDIENCE, MDE_AUDIENCES};
use super::state::{Claims, FaultKind, Faults, Shared, T_DOMAIN, T_GET, T_LIST, T_STATES, T_USER};
use crate::odata::ast::{Expr as Ast, ExprKind};
use crate::odata::query::{ODataQuery, parse_query};
use crate::odata::to_expr::{Scope, to_expr, to_value_expr};
use crate::schema::{MACHINE_PROPERTIES, Table, UTC};

/// The properties the service lets `$filter` use (list-machines page, Aug 2021 on).
pub const FILTERABLE: &[&str] = &[
    "computerDnsName",
    "id",
    "version",
    "deviceValue",
    "aadDeviceId",
    "machineTags",
    "lastSeen",
    "exposureLevel",
    "onboardingStatus",
    "lastIpAddress",
    "healthStatus",
    "osPlatform",
    "riskScore",
    "rbacGroupId",
];

const ODATA_CONTENT_TYPE: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(dispatch).with_state(shared)
}

/// A response in the making: status, JSON body, extra headers.
struct Reply {
    status: StatusCode,
    body: Value,
    /// Bytes sent instead of `body` when set (pages spliced from cached records).
    raw: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    odata: bool,
}

impl Reply {
    fn odata(body: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            body,
            raw: None,
            headers: Vec::new(),
            odata: true,
        }
    }

    fn plain(status: u16, body: Value) -> Self {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
            raw: None,
            headers: Vec::new(),
            odata: false,
        }
    }

    /// The service's error envelope, with a fresh correlation id as `target`.
    fn error(shared: &Shared, status: u16, code: &str, message: impl Into<String>) -> Self {
        let target = shared.lock().rng.guid();
        let mut r = Reply::plain(
            status,
            json!({"error": {"code": code, "message": message.into(), "target": target}}),
        );
        r.odata = true;
        r
    }

    fn into_response(self, cut: bool) -> Response {
        let bytes = match self.raw {
            Some(raw) => raw,
            None => serde_json::to_vec(&self.body).unwrap_or_default(),
        };
        let mut builder = Response::builder().status(self.status);
        let content_type = if self.odata {
            ODATA_CONTENT_TYPE
        } else {
            "application/json; charset=utf-8"
        };
        builder = builder.header(header::CONTENT_TYPE, content_type);
        if self.odata {
            builder = builder.header("OData-Version", "4.0");
        }
        for (k, v) in self.headers {
            builder = builder.header(k, v);
        }
        let body = if cut {
            // The length promised, half the bytes sent, then the connection fails.
            builder = builder.header(header::CONTENT_LENGTH, bytes.len());
            use futures::StreamExt;
            let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
            let first = futures::stream::iter([Ok::<Bytes, std::io::Error>(half)]);
            // A pause lets the head and the first half reach the client before the
            // connection fails.
            let fail = futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "emulated cut",
                ))
            });
            Body::from_stream(first.chain(fail))
        } else {
            Body::from(bytes)
        };
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(Body::empty()))
    }
}

fn dropped() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "emulated drop",
    ))];
    let mut r = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
    r
}

async fn dispatch(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();

    // The identity platform.
    match (&method, l.as_slice()) {
        (&Method::POST, [_, "oauth2", "v2.0", "token"]) => {
            return token_reply(auth::token(&sh, segs[0], true, &body));
        }
        (&Method::POST, [_, "oauth2", "token"]) => {
            return token_reply(auth::token(&sh, segs[0], false, &body));
        }
        (&Method::POST, [_, "oauth2", "v2.0", "devicecode"]) => {
            return token_reply(auth::device_code(&sh, segs[0], &body));
        }
        _ => {}
    }
    // Administration.
    if l.first() == Some(&"_emulator") {
        return admin(&sh, &method, &l[1..], query.as_deref(), &body).into_response(false);
    }
    // The API and the Graph preview route.
    let route: Option<(&'static str, bool, Vec<&str>)> = match l.as_slice() {
        ["testwdatppreview", "machinesecuritystates"] => Some((T_STATES, true, Vec::new())),
        ["api", rest @ ..] => {
            let rest = if rest.first() == Some(&"v1.0") {
                &rest[1..]
            } else {
                rest
            };
            let raw = segs[segs.len() - rest.len()..].to_vec();
            let template = match rest {
                ["machines"] => Some(T_LIST),
                ["machines", _] => Some(T_GET),
                ["users", _, "machines"] => Some(T_USER),
                ["domains", _, "machines"] => Some(T_DOMAIN),
                _ => None,
            };
            template.map(|t| (t, false, raw))
        }
        _ => None,
    };
    let Some((template, graph, rest)) = route else {
        return unknown_path(&sh, &path);
    };
    if method != Method::GET {
        return Reply::error(
            &sh,
            405,
            "MethodNotAllowed",
            format!("The requested resource does not support http method '{method}'."),
        )
        .into_response(false);
    }
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let audiences: &[&str] = if graph {
        &[GRAPH_AUDIENCE]
    } else {
        MDE_AUDIENCES
    };
    let claims = match auth::check(&sh, authz, audiences) {
        Ok(c) => c,
        Err(Denied::Unauthorized(why)) => {
            let mut r = Reply::error(&sh, 401, "Unauthorized", why);
            r.headers.push(("WWW-Authenticate", "Bearer".into()));
            return r.into_response(false);
        }
        Err(Denied::Forbidden(why)) => {
            return Reply::error(&sh, 403, "Forbidden", why).into_response(false);
        }
    };
    let presented = authz
        .and_then(|h| h.get(7..))
        .map(str::trim)
        .unwrap_or_default();
    if sh.lock().revoke_roll(presented, template) {
        let mut r = Reply::error(
            &sh,
            401,
            "Unauthorized",
            "invalid or expired authorization header",
        );
        r.headers.push(("WWW-Authenticate", "Bearer".into()));
        return r.into_response(false);
    }
    if let Some(wait) = throttle(&sh, &claims, template) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = Reply::error(
            &sh,
            429,
            "TooManyRequests",
            format!("Rate limit is exceeded. Try again in {secs} seconds."),
        );
        r.headers.push(("Retry-After", secs.to_string()));
        return r.into_response(false);
    }
    // Faults, drawn per call.
    let (slow, e500, e429, drop, cut, e404) = {
        let mut inner = sh.lock();
        (
            inner.roll(FaultKind::Slow, template),
            inner.roll(FaultKind::Error500, template),
            inner.roll(FaultKind::Throttle429, template),
            inner.roll(FaultKind::Drop, template),
            inner.roll(FaultKind::Cut, template),
            // A machine by id draws its own, once it is found.
            template != T_GET && inner.roll(FaultKind::NotFound, template),
        )
    };
    if slow {
        tokio::time::sleep(sh.config.slow).await;
    }
    if e500 {
        return Reply::error(&sh, 500, "InternalServerError", "").into_response(false);
    }
    if e429 {
        let mut r = Reply::error(
            &sh,
            429,
            "TooManyRequests",
            "Rate limit is exceeded. Try again in 1 seconds.",
        );
        r.headers.push(("Retry-After", "1".into()));
        return r.into_response(false);
    }
    if drop {
        return dropped();
    }
    if e404 {
        // As the service answers a path it does not know (or a gateway, one it lost).
        return unknown_path(&sh, &path);
    }
    let reply = match template {
        T_LIST => list(&sh, &claims, &host, &path, query.as_deref()).await,
        T_GET => get_one(
            &sh,
            &claims,
            &host,
            rest.get(1).copied().unwrap_or_default(),
        ),
        T_USER => related(
            &sh,
            &claims,
            &host,
            Related::User(rest.get(1).copied().unwrap_or_default()),
        ),
        T_DOMAIN => related(
            &sh,
            &claims,
            &host,
            Related::Domain(rest.get(1).copied().unwrap_or_default()),
        ),
        _ => security_states(&sh, &host, query.as_deref()),
    };
    let reply = if reply.status == StatusCode::OK
        && template != T_GET
        && sh.lock().roll(FaultKind::ForeignNextLink, template)
    {
        let query = query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        with_next_link(reply, format!("https://elsewhere.invalid{path}{query}"))
    } else {
        reply
    };
    let cut = cut && reply.status == StatusCode::OK;
    reply.into_response(cut)
}

/// The service's 404 for a path it does not know.
fn unknown_path(sh: &Shared, path: &str) -> Response {
    Reply::error(
        sh,
        404,
        "NotFound",
        format!("Resource '{path}' was not found"),
    )
    .into_response(false)
}

/// A collection answer with `link` as its `@odata.nextLink`, in place of its own.
fn with_next_link(mut reply: Reply, link: String) -> Reply {
    if let Some(raw) = reply.raw.take() {
        reply.body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    }
    if let Value::Object(map) = &mut reply.body {
        map.insert("@odata.nextLink".into(), Value::String(link));
    }
    reply
}

fn token_reply(r: Result<Value, auth::TokenError>) -> Response {
    match r {
        Ok(v) => Reply::plain(200, v).into_response(false),
        Err(e) => Reply::plain(e.status, e.body()).into_response(false),
    }
}

/// Counts the call; `Some(wait)` when it is over a limit (the call still counts, so
/// early retries keep a client throttled).
fn throttle(sh: &Shared, claims: &Claims, template: &'static str) -> Option<Duration> {
    let minute = sh.window(Duration::from_secs(60));
    let hour = sh.window(Duration::from_secs(3600));
    let key = format!("{}/{}", claims.appid, claims.upn.as_deref().unwrap_or(""));
    let now = Instant::now();
    let mut inner = sh.lock();
    let calls = inner.stats.calls.entry(template).or_default();
    calls.push_back(now);
    while calls.front().is_some_and(|t| now.duration_since(*t) > hour) {
        calls.pop_front();
    }
    *inner.stats.totals.entry(template).or_insert(0) += 1;
    let window = inner.windows.entry((key, template)).or_default();
    while window
        .front()
        .is_some_and(|t| now.duration_since(*t) > hour)
    {
        window.pop_front();
    }
    // The window is in time order: the calls of the last minute are its tail, and
    // the call that must age out before the next is allowed is the limit-th from
    // the end.
    let in_minute = window
        .iter()
        .rev()
        .take_while(|t| now.duration_since(**t) <= minute)
        .count();
    let per_minute = sh.config.calls_per_minute.max(1) as usize;
    let per_hour = sh.config.calls_per_hour.max(1) as usize;
    let until = |oldest: Option<&Instant>, length: Duration| {
        oldest.map(|t| {
            t.checked_add(length)
                .map_or(length, |end| end.saturating_duration_since(now))
        })
    };
    let mut wait = None;
    if in_minute >= per_minute {
        wait = until(window.get(window.len() - per_minute), minute);
    }
    if window.len() >= per_hour
        && let Some(w) = until(window.get(window.len() - per_hour), hour)
    {
        wait = Some(wait.map_or(w, |x: Duration| x.max(w)));
    }
    window.push_back(now);
    if wait.is_some() {
        *inner.stats.throttled.entry(template).or_insert(0) += 1;
    }
    wait
}

/// The machines a token may see: its device groups (delegated), within retention.
fn visibility(
    sh: &Shared,
    claims: &Claims,
    now_micros: i64,
) -> Option<datafusion::logical_expr::Expr> {
    let mut e: Option<datafusion::logical_expr::Expr> = None;
    if let Some(groups) = &claims.groups {
        let list = groups.iter().map(|g| lit(*g)).collect();
        e = Some(col("rbac_group_id").in_list(list, false));
    }
    if let Some(days) = sh.config.retention_days {
        let cutoff = now_micros - i64::from(days) * 86_400_000_000;
        let r = col("last_seen").gt_eq(lit(ScalarValue::TimestampMicrosecond(
            Some(cutoff),
            Some(UTC.into()),
        )));
        e = Some(match e {
            Some(x) => x.and(r),
            None => r,
        });
    }
    e
}

/// The first property name of every path in a filter, for the filterable check.
/// Walks with a stack of its own: a filter may hold thousands of `or`s.
fn filter_names(root: &Ast) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    // Each entry: a node and the lambda variables in scope there.
    let mut stack: Vec<(&Ast, Vec<&str>)> = vec![(root, Vec::new())];
    while let Some((e, vars)) = stack.pop() {
        match &e.kind {
            ExprKind::Path(p) => {
                if let Some(first) = p.first()
                    && !vars.contains(&first.as_str())
                {
                    out.push((first.clone(), e.span.start));
                }
            }
            ExprKind::Binary { left, right, .. } => {
                stack.push((right, vars.clone()));
                stack.push((left, vars));
            }
            ExprKind::Unary { expr, .. } => stack.push((expr, vars)),
            ExprKind::Call { args, .. } => {
                stack.extend(args.iter().rev().map(|a| (a, vars.clone())));
            }
            ExprKind::In { expr, list } => {
                stack.extend(list.iter().rev().map(|a| (a, vars.clone())));
                stack.push((expr, vars));
            }
            ExprKind::Lambda {
                path, var, body, ..
            } => {
                if let Some(first) = path.first() {
                    out.push((first.clone(), e.span.start));
                }
                if let (Some(v), Some(b)) = (var, body) {
                    let mut inner = vars;
                    inner.push(v.as_str());
                    stack.push((b, inner));
                }
            }
            ExprKind::Literal(_) | ExprKind::Alias(_) => {}
        }
    }
    out
}

fn odata_error(sh: &Shared, message: impl Into<String>) -> Reply {
    Reply::error(
        sh,
        400,
        "ODataError",
        format!("Invalid OData query: {}", message.into()),
    )
}

/// The canonical API name of a property name given in any case.
fn api_name(name: &str) -> Option<&'static str> {
    MACHINE_PROPERTIES
        .iter()
        .find(|p| p.api.eq_ignore_ascii_case(name))
        .map(|p| p.api)
}

async fn list(sh: &Shared, claims: &Claims, host: &str, path: &str, query: Option<&str>) -> Reply {
    // The buggy nextLinks of 2022 carry options with no name (`=10000`): the service
    // ignored them, and so does the emulator.
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with('='))
        .collect();
    let q = match parse_query(&format!("machines?{}", kept.join("&"))) {
        Ok(q) => q,
        Err(e) => return odata_error(sh, e.to_string()),
    };
    let ODataQuery {
        filter,
        select,
        orderby,
        top,
        skip,
        ..
    } = &q;
    if let Some(f) = filter {
        for (name, _) in filter_names(&f.expr) {
            if !FILTERABLE.iter().any(|p| p.eq_ignore_ascii_case(&name)) {
                return odata_error(
                    sh,
                    format!("The property '{name}' cannot be used in the $filter query option."),
                );
            }
        }
    }
    let skip = usize::try_from(skip.unwrap_or(0)).unwrap_or(usize::MAX);
    if skip > 0 && sh.lock().roll(FaultKind::MutateBetweenPages, T_LIST) {
        let mutated = sh.lock().mutate();
        if let Err(e) = mutated {
            return fleet_bug(sh, &e);
        }
    }
    let (batch, now_micros) = {
        let inner = sh.lock();
        (
            Arc::clone(&inner.view.batch),
            inner.view.fleet.now().timestamp_micros(),
        )
    };
    let scope = Scope::new(Table::Machines, batch.schema());
    let ctx = SessionContext::new();
    let mut df = match ctx.read_batch((*batch).clone()) {
        Ok(df) => df,
        Err(e) => return Reply::error(sh, 500, "InternalServerError", e.to_string()),
    };
    let visible = visibility(sh, claims, now_micros);
    let mut conditions = Vec::new();
    if let Some(v) = visible.clone() {
        conditions.push(v);
    }
    if let Some(f) = filter {
        match to_expr(&f.expr, &scope) {
            Ok(e) => conditions.push(e),
            Err(e) => return odata_error(sh, e.to_string()),
        }
    }
    for c in conditions {
        df = match df.filter(c) {
            Ok(d) => d,
            Err(e) => return odata_error(sh, e.to_string()),
        };
    }
    if !orderby.is_empty() {
        let mut keys = Vec::new();
        for k in orderby {
            match to_value_expr(&k.expr, &scope) {
                Ok((e, _)) => keys.push(e.sort(!k.descending, !k.descending)),
                Err(e) => return odata_error(sh, e.to_string()),
            }
        }
        df = match df.sort(keys) {
            Ok(d) => d,
            Err(e) => return odata_error(sh, e.to_string()),
        };
    }
    let ids = match df.select(vec![col("id")]) {
        Ok(d) => match d.collect().await {
            Ok(b) => b,
            Err(e) => return odata_error(sh, e.to_string()),
        },
        Err(e) => return odata_error(sh, e.to_string()),
    };
    let ids: Vec<String> = ids
        .iter()
        .flat_map(|b| {
            let a = arrow::array::AsArray::as_string::<i32>(b.column(0));
            a.iter().flatten().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    if filter.is_none() && ids.is_empty() && sh.config.empty_tenant_404 {
        return Reply::error(sh, 404, "ResourceNotFound", "No recent machines found");
    }
    let asked = top.map_or(sh.config.page_size, |t| t as usize);
    let page_len = sh.config.max_page.map_or(asked, |cap| asked.min(cap));
    let end = skip.saturating_add(page_len).min(ids.len());
    let page = ids.get(skip..end).unwrap_or(&[]);
    let more = end < ids.len();
    let mut next_link = None;
    if more && (top.is_none() || sh.config.next_link_with_top || page_len < asked) {
        let buggy_link = !page.is_empty() && sh.lock().roll(FaultKind::BuggyNextLink, T_LIST);
        // Built from every part sent, nameless ones included, so a buggy link followed
        // gives the same buggy link again, as the service did.
        let sent: Vec<&str> = query
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .collect();
        let mut parts: Vec<String> = sent
            .iter()
            .filter(|p| {
                !p.to_ascii_lowercase()
                    .trim_start_matches('$')
                    .starts_with("skip=")
            })
            .map(|p| {
                if buggy_link {
                    // The 2022 bug: option names lost, the skip never advancing.
                    format!("={}", p.split_once('=').map_or("", |(_, v)| v))
                } else {
                    (*p).to_string()
                }
            })
            .collect();
        let next_skip = if buggy_link { page_len } else { end };
        parts.push(format!("$skip={next_skip}"));
        next_link = Some(format!("http://{host}{path}?{}", parts.join("&")));
    }
    // The envelope's head and tail as JSON, the records spliced between them.
    let mut head = Map::new();
    head.insert(
        "@odata.context".into(),
        format!("http://{host}/api/$metadata#Machines").into(),
    );
    if q.count {
        head.insert("@odata.count".into(), ids.len().into());
    }
    let head = Value::Object(head).to_string();
    let mut out = Vec::with_capacity(page.len() * 1100 + 256);
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"value\":[");
    let selected: Option<Vec<&'static str>> = select
        .as_ref()
        .filter(|s| !s.iter().any(|i| i.name == "*"))
        .map(|s| s.iter().filter_map(|i| api_name(&i.name)).collect());
    {
        let inner = sh.lock();
        let mut first = true;
        for i in page.iter().filter_map(|id| inner.view.index.get(id)) {
            if !first {
                out.push(b',');
            }
            first = false;
            match &selected {
                None => out.extend_from_slice(inner.view.json[*i].as_bytes()),
                Some(keys) => {
                    let r = match inner.view.record(*i, sh.config.profile) {
                        Value::Object(map) => Value::Object(
                            map.into_iter()
                                .filter(|(k, _)| keys.contains(&k.as_str()))
                                .collect(),
                        ),
                        other => other,
                    };
                    out.extend_from_slice(r.to_string().as_bytes());
                }
            }
        }
    }
    out.push(b']');
    if let Some(link) = next_link {
        out.extend_from_slice(b",\"@odata.nextLink\":");
        out.extend_from_slice(Value::String(link).to_string().as_bytes());
    }
    out.push(b'}');
    let mut reply = Reply::odata(Value::Null);
    reply.raw = Some(out);
    reply
}

/// A fleet record the decoder refused: a bug of the emulator, said as such.
fn fleet_bug(sh: &Shared, e: &crate::decode::DecodeError) -> Reply {
    tracing::error!("emulated fleet does not decode: {e}");
    Reply::error(
        sh,
        500,
        "InternalServerError",
        format!("emulator bug: the fleet does not decode: {e}"),
    )
}

fn percent_decoded(seg: &str) -> String {
    crate::odata::query::decode_with(seg, 0, false)
        .map(|(s, _)| s)
        .unwrap_or_else(|_| seg.to_string())
}

/// Whether a record is visible to the token (device groups, retention).
fn visible(sh: &Shared, claims: &Claims, record: &Value, now_micros: i64) -> bool {
    if let Some(groups) = &claims.groups {
        let g = record
            .get("rbacGroupId")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !groups.contains(&g) {
            return false;
        }
    }
    if let Some(days) = sh.config.retention_days {
        let seen = record
            .get("lastSeen")
            .and_then(Value::as_str)
            .and_then(crate::decode::parse_timestamp_micros)
            .unwrap_or(i64::MIN);
        if seen < now_micros - i64::from(days) * 86_400_000_000 {
            return false;
        }
    }
    true
}

fn get_one(sh: &Shared, claims: &Claims, host: &str, raw_id: &str) -> Reply {
    let id = percent_decoded(raw_id);
    let not_found = |sh: &Shared| {
        Reply::error(
            sh,
            404,
            "ResourceNotFound",
            format!("Machine {id} was not found"),
        )
    };
    let found = {
        let inner = sh.lock();
        let now = inner.view.fleet.now().timestamp_micros();
        let by_id = inner.view.index.get(&id.to_ascii_lowercase()).copied();
        let i = by_id.or_else(|| {
            inner
                .view
                .fleet
                .machines()
                .iter()
                .position(|m| m.dns_name().is_some_and(|d| d.eq_ignore_ascii_case(&id)))
        });
        i.map(|i| inner.view.record(i, sh.config.profile))
            .filter(|r| visible(sh, claims, r, now))
    };
    let Some(record) = found else {
        return not_found(sh);
    };
    if sh.lock().roll(FaultKind::NotFound, T_GET) {
        return not_found(sh);
    }
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        format!("http://{host}/api/$metadata#Machines/$entity").into(),
    );
    if let Value::Object(map) = record {
        body.extend(map);
    }
    Reply::odata(Value::Object(body))
}

enum Related<'a> {
    User(&'a str),
    Domain(&'a str),
}

fn related(sh: &Shared, claims: &Claims, host: &str, which: Related<'_>) -> Reply {
    let mut inner = sh.lock();
    if let Related::User(u) = &which {
        inner.stats.users_asked.push(percent_decoded(u));
    }
    let now = inner.view.fleet.now().timestamp_micros();
    let fleet = &inner.view.fleet;
    let positions: Vec<usize> = match &which {
        Related::User(u) => {
            let u = percent_decoded(u);
            // The user-name part only, as the documentation says; a UPN finds nothing.
            fleet
                .machines()
                .iter()
                .enumerate()
                .filter(|(_, m)| m.users().iter().any(|x| x.eq_ignore_ascii_case(&u)))
                .map(|(i, _)| i)
                .collect()
        }
        Related::Domain(d) => {
            let d = percent_decoded(d);
            let ids: Vec<&str> = fleet
                .domain_pairs(crate::generate::DOMAIN_CAP)
                .into_iter()
                .filter(|(name, _)| name.eq_ignore_ascii_case(&d))
                .map(|(_, id)| id)
                .collect();
            ids.iter()
                .filter_map(|id| inner.view.index.get(*id).copied())
                .collect()
        }
    };
    if positions.is_empty() && matches!(which, Related::User(_)) && sh.config.legacy_user_404 {
        drop(inner);
        return Reply::error(sh, 404, "NotFound", "User was not found");
    }
    let values: Vec<Value> = positions
        .into_iter()
        .map(|i| inner.view.record(i, sh.config.profile))
        .filter(|r| visible(sh, claims, r, now))
        .collect();
    Reply::odata(
        json!({"@odata.context": format!("http://{host}/api/$metadata#Machines"), "value": values}),
    )
}

fn security_states(sh: &Shared, host: &str, query: Option<&str>) -> Reply {
    let mut offset = 0usize;
    for part in query.unwrap_or("").split('&') {
        if let Some(tok) = part.strip_prefix("$skiptoken=") {
            match decode_skiptoken(tok) {
                Some(n) => offset = n,
                None => return Reply::error(sh, 400, "BadRequest", "The $skiptoken is not valid."),
            }
        }
    }
    let inner = sh.lock();
    let fleet = &inner.view.fleet;
    let total = fleet.machines().len();
    let page = sh.config.page_size.min(1000);
    let end = offset.saturating_add(page).min(total);
    let values: Vec<Value> = fleet
        .machines()
        .get(offset..end)
        .unwrap_or(&[])
        .iter()
        .map(|m| fleet.security_state_record(m))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        format!("http://{host}/testwdatppreview/$metadata#MachineSecurityStates").into(),
    );
    body.insert("@odata.count".into(), total.into());
    body.insert("value".into(), Value::Array(values));
    if end < total {
        body.insert(
            "@odata.nextLink".into(),
            format!(
                "http://{host}/testwdatppreview/machinesecuritystates?$skiptoken={}",
                encode_skiptoken(end)
            )
            .into(),
        );
    }
    Reply::odata(Value::Object(body))
}

/// Scrambles the offset so clients treat the token as opaque, as Graph's are.
const SKIPTOKEN_KEY: u64 = 0x005e_ed0f_f5e7;

fn encode_skiptoken(n: usize) -> String {
    format!("{:x}", (n as u64) ^ SKIPTOKEN_KEY)
}

fn decode_skiptoken(t: &str) -> Option<usize> {
    u64::from_str_radix(t, 16)
        .ok()
        .map(|v| (v ^ SKIPTOKEN_KEY) as usize)
}

fn admin(sh: &Shared, method: &Method, path: &[&str], query: Option<&str>, body: &[u8]) -> Reply {
    let minute = sh.window(Duration::from_secs(60));
    let hour = sh.window(Duration::from_secs(3600));
    match (method, path) {
        (&Method::GET, ["stats"]) => Reply::plain(200, sh.lock().stats_json(minute, hour)),
        (&Method::GET, ["faults"]) => Reply::plain(200, json!(sh.lock().faults)),
        (&Method::POST, ["faults"]) => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    sh.lock().faults = f.clone();
                    Reply::plain(200, json!(f))
                }
                Err(e) => Reply::plain(400, json!({"error": e})),
            },
            Err(e) => Reply::plain(
                400,
                json!({"error": format!("expected a JSON object of fault rates: {e}")}),
            ),
        },
        (&Method::POST, ["advance"]) => {
            let days = query
                .unwrap_or("")
                .split('&')
                .find_map(|p| p.strip_prefix("days="))
                .map_or(Ok(1), str::parse::<u32>);
            match days {
                Ok(d) if d <= 3650 => {
                    let mut inner = sh.lock();
                    let far = inner.view.fleet.day().saturating_add(d);
                    if let Err(why) = inner.view.fleet.config().validate(far) {
                        return Reply::plain(
                            400,
                            json!({"error": format!("cannot advance {d} days: {why}")}),
                        );
                    }
                    if let Err(e) = inner.advance(d) {
                        drop(inner);
                        return fleet_bug(sh, &e);
                    }
                    Reply::plain(
                        200,
                        json!({"day": inner.view.fleet.day(), "date": crate::snapshot::format_time(inner.view.fleet.now())}),
                    )
                }
                _ => Reply::plain(
                    400,
                    json!({"error": "days must be a whole number from 0 to 3650"}),
                ),
            }
        }
        (&Method::GET, ["users"]) => Reply::plain(200, json!(sh.lock().view.fleet.user_names())),
        (&Method::GET, ["domains"]) => {
            Reply::plain(200, json!(sh.lock().view.fleet.domain_names()))
        }
        _ => Reply::plain(
            404,
            json!({"error": "unknown admin route (stats, faults, advance, users, domains)"}),
        ),
    }
}
