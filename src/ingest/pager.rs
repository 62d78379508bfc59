//! Paging the collections, with the guarantees `design.md` gives a snapshot.
//!
//! `/api/machines` is read with `$top` (the page size) and `$skip`; a page shorter than
//! `$top` ends the list, unless it comes with a nextLink that may be followed (a
//! service paging below `$top`). `@odata.nextLink` is followed only when it advances
//! and keeps every option sent (the same origin and path, `$filter` and `$top` as
//! sent, a larger `$skip`); the 2022 links that lost the `$` of their options and never
//! advance are ignored with a warning, and paging goes on by `$skip`, which reads the
//! list whole anyway. A link that leaves the origin or path fails the run: following it
//! would send the token elsewhere, and the service says there is more.
//!
//! An empty fleet is never presumed. A 404 from the list is retried like a 5xx (a
//! wrong path and a faulty gateway answer 404 too), then fails the run; so does an
//! empty first page of the unfiltered list. The service does answer 404 for a tenant
//! with no recent machines: `allow_empty` takes either as an empty list, on the first
//! page only. A filter that matches nothing is an empty list as it is.
//!
//! Offset paging over a list that changes during the run can repeat machines (one
//! onboarded before the offset pushes the rest back) and skip them (one retired before
//! the offset pulls the rest forward). Repeats are dropped by id. Against skips, every
//! page after the first starts `overlap` rows before where the previous one ended, and
//! continues after the newest id of the previous page's tail that it finds again (the
//! anchor): whatever moved, nothing between the anchor and the new page's end was
//! missed. If no anchor is found the list moved more than the overlap, and the pager
//! steps further back until it finds one. So a machine present for the whole run
//! appears exactly once; one that changed, in one of its versions.
//!
//! The user and domain endpoints answer one collection each (followed through a
//! nextLink if they give one; a 404 means no rows); the security states route pages
//! by an opaque `$skiptoken` link. Those links are the only way on, so one that leaves
//! the route or asks for a page already read fails the run rather than cut the
//! collection short. `--max-pages` bounds them all together.

use std::collections::HashSet;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::client::{Answer, ApiClient, ApiError, On404};
use super::endpoints::origin_of;
use super::events::{Event, Observer};

/// Route templates: the unit of rate limits.
pub const T_LIST: &str = "/api/machines";
pub const T_USER: &str = "/api/users/{id}/machines";
pub const T_DOMAIN: &str = "/api/domains/{domain}/machines";
pub const T_STATES: &str = "/testwdatppreview/machinesecuritystates";

/// What a path segment keeps unencoded: the unreserved characters only.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What a query value keeps unencoded: unreserved characters and the OData
/// punctuation that reads well in logs (`'(),:/`).
const QUERY_VALUE: &AsciiSet = &SEGMENT
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b',')
    .remove(b':')
    .remove(b'/');

/// Why paging stopped.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(
        "more than {max} pages: the run stops with nothing committed (raise --max-pages if the tenant is that large)"
    )]
    TooManyPages { max: u64 },
    #[error("{url}: record {index} of the page has no string 'id'")]
    NoId { url: String, index: usize },
    #[error("{url}: the answer has no 'value' array")]
    NoValue { url: String },
    #[error(
        "{url}: 404 Not Found after {attempts} attempts ({message}); the service answers 404 for a tenant with no recent machines, but so do a wrong path and a faulty gateway, so it is not taken for an empty tenant: if the tenant has no machines, run again with --allow-empty"
    )]
    ListNotFound {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error(
        "{url}: 404 Not Found after {attempts} attempts ({message}), after earlier pages of the list were read: the list would be cut short"
    )]
    PageNotFound {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error(
        "{url}: the service answered no machines at all; an empty answer is taken for a fault until shown otherwise: if the tenant has no machines, run again with --allow-empty"
    )]
    EmptyList { url: String },
    #[error(
        "{url}: the service's @odata.nextLink {link} leaves the route it pages (another origin or path): following it would send the token elsewhere, and stopping would cut the collection short"
    )]
    LinkLeavesRoute { url: String, link: String },
    #[error(
        "{url}: the service's @odata.nextLink {link} asks again for a page already read: the collection cannot be read whole"
    )]
    LinkRepeats { url: String, link: String },
    #[error("'{0}' cannot be a path segment (a user or domain name may not be empty, '.' or '..')")]
    BadSegment(String),
    #[error("the writer stopped")]
    WriterGone,
}

/// Pages left in the run.
#[derive(Debug)]
pub struct Budget {
    max: u64,
    used: u64,
}

impl Budget {
    pub fn new(max: u64) -> Self {
        Budget { max, used: 0 }
    }

    fn take(&mut self) -> Result<(), PageError> {
        if self.used >= self.max {
            return Err(PageError::TooManyPages { max: self.max });
        }
        self.used += 1;
        Ok(())
    }

    /// Pages read.
    pub fn used(&self) -> u64 {
        self.used
    }
}

/// A machine id, compactly: the service's 40 hex digits as 20 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdKey {
    Hex([u8; 20]),
    Other(Box<str>),
}

impl IdKey {
    pub fn of(id: &str) -> IdKey {
        let b = id.as_bytes();
        if b.len() == 40 {
            let mut out = [0u8; 20];
            let nibble = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            let mut ok = true;
            for (i, pair) in b.chunks(2).enumerate() {
                match (nibble(pair[0]), nibble(pair[1])) {
                    (Some(h), Some(l)) => out[i] = (h << 4) | l,
                    _ => ok = false,
                }
            }
            if ok {
                return IdKey::Hex(out);
            }
        }
        IdKey::Other(id.into())
    }
}

/// A user id or domain as one path segment: percent-encoded, so it can never change
/// the path (`../machines` becomes `..%2Fmachines`).
pub fn segment(name: &str) -> Result<String, PageError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(PageError::BadSegment(name.to_string()));
    }
    Ok(utf8_percent_encode(name, SEGMENT).to_string())
}

/// A record as the service sent it: its JSON text, parsed where it is decoded (on
/// the writer's thread), so a page in flight costs its bytes, not a tree of values.
pub type RawRecord = Box<RawValue>;

/// A collection answer: `value`, `@odata.nextLink`, `@odata.count`.
#[derive(Debug, Deserialize)]
struct Collection {
    #[serde(default)]
    value: Option<Vec<RawRecord>>,
    #[serde(rename = "@odata.nextLink", default)]
    next: Option<String>,
    #[serde(rename = "@odata.count", default)]
    count: Option<u64>,
}

/// A collection answer with its records checked present.
struct Page {
    records: Vec<RawRecord>,
    next: Option<String>,
    count: Option<u64>,
}

impl Page {
    /// No rows, no link.
    fn empty() -> Page {
        Page {
            records: Vec::new(),
            next: None,
            count: None,
        }
    }
}

/// The records, nextLink and count of an answer (none of a 404).
fn split(url: &str, answer: Answer<Collection>) -> Result<Page, PageError> {
    match answer {
        Answer::NotFound { .. } => Ok(Page::empty()),
        Answer::Json(c) => match c.value {
            Some(records) => Ok(Page {
                records,
                next: c.next,
                count: c.count,
            }),
            None => Err(PageError::NoValue {
                url: url.to_string(),
            }),
        },
    }
}

/// Just the `id` of a record; the rest is skipped, not built.
#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
}

/// The id of record `index` of the page at `url`.
pub fn record_id(url: &str, index: usize, record: &RawValue) -> Result<String, PageError> {
    serde_json::from_str::<IdOnly<'_>>(record.get())
        .ok()
        .and_then(|r| r.id)
        .map(std::borrow::Cow::into_owned)
        .ok_or_else(|| PageError::NoId {
            url: url.to_string(),
            index,
        })
}

/// The query options of a URL, names and values URL-decoded.
fn options(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let query = query.split('#').next().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or("")
}

/// Whether `link` stays on the origin and path of `sent` (a link elsewhere would take
/// the bearer token with it).
fn same_route(link: &str, sent: &str) -> bool {
    origin_of(link).is_some()
        && origin_of(link) == origin_of(sent)
        && path_of(link).eq_ignore_ascii_case(path_of(sent))
}

/// The `$skip` a machines nextLink continues at, when it may be followed: the same
/// route, every option sent kept, a `$skip` beyond the one sent.
fn next_skip(link: &str, sent: &str, skip: u64) -> Result<u64, String> {
    if !same_route(link, sent) {
        return Err("it leaves the route".to_string());
    }
    let got = options(link);
    if let Some((name, _)) = got.iter().find(|(n, _)| !n.starts_with('$')) {
        return Err(format!("it has an option without '$' ('{name}')"));
    }
    for (name, value) in options(sent) {
        if name == "$skip" {
            continue;
        }
        if !got
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(&name) && *v == value)
        {
            return Err(format!("it drops or changes {name}"));
        }
    }
    let next = got
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("$skip"))
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .ok_or_else(|| "it has no $skip".to_string())?;
    if next <= skip {
        return Err(format!("it does not advance ($skip={next})"));
    }
    Ok(next)
}

/// What `/api/machines` is asked for.
#[derive(Debug, Clone, Copy)]
pub struct ListOptions<'a> {
    /// The API origin.
    pub api: &'a str,
    /// `$filter`, sent as given.
    pub filter: Option<&'a str>,
    /// `$top`.
    pub page_size: u32,
    /// Take a 404 (after the retries) or an empty first page for an empty tenant.
    pub allow_empty: bool,
}

/// Reads `/api/machines`; `sink` gets the records not seen before, page by page.
/// Returns the duplicates dropped.
pub async fn machines(
    client: &mut ApiClient,
    list: ListOptions<'_>,
    budget: &mut Budget,
    seen: &mut HashSet<IdKey>,
    events: Observer<'_>,
    mut sink: impl AsyncSink,
) -> Result<u64, PageError> {
    let ListOptions {
        api,
        filter,
        page_size,
        allow_empty,
    } = list;
    let top = u64::from(page_size.max(1));
    let overlap = if top >= 2 {
        (top / 10).clamp(1, 1_000)
    } else {
        0
    };
    let mut offset = 0u64;
    let mut back = 0u64;
    let mut tail: Vec<IdKey> = Vec::new();
    let mut duplicates = 0u64;
    let mut total = 0u64;
    let mut warned = false;
    loop {
        budget.take()?;
        let skip = if offset == 0 {
            0
        } else {
            offset.saturating_sub(overlap + back)
        };
        let mut url = format!("{api}/api/machines?$top={top}&$skip={skip}");
        if let Some(f) = filter {
            url.push_str("&$filter=");
            url.push_str(&utf8_percent_encode(f, QUERY_VALUE).to_string());
        }
        let first = offset == 0;
        let answer = client
            .get(T_LIST, false, &url, On404::Retry, events)
            .await?;
        let page = match answer {
            Answer::NotFound { .. } if first && allow_empty => Page::empty(),
            Answer::NotFound { attempts, message } if first => {
                return Err(PageError::ListNotFound {
                    url,
                    attempts,
                    message,
                });
            }
            Answer::NotFound { attempts, message } => {
                return Err(PageError::PageNotFound {
                    url,
                    attempts,
                    message,
                });
            }
            answer => split(&url, answer)?,
        };
        let Page { records, next, .. } = page;
        if first && records.is_empty() && filter.is_none() && !allow_empty {
            return Err(PageError::EmptyList { url });
        }
        let n = records.len() as u64;
        let mut keys = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            keys.push(IdKey::of(&record_id(&url, i, r)?));
        }
        // Where this page continues the list: after the newest anchor found again.
        let start = if skip < offset && !tail.is_empty() {
            let anchor = tail
                .iter()
                .rev()
                .find_map(|a| keys.iter().rposition(|k| k == a));
            match anchor {
                Some(j) => j + 1,
                None if skip > 0 => {
                    // The list moved by more than the overlap: look further back.
                    back = back.saturating_mul(2).saturating_add(top);
                    tracing::info!("no anchor in the page at $skip={skip}; stepping back");
                    continue;
                }
                None => 0,
            }
        } else {
            0
        };
        back = 0;
        let mut fresh = Vec::with_capacity(records.len().saturating_sub(start));
        for (key, record) in keys.iter().zip(records).skip(start) {
            if seen.insert(key.clone()) {
                fresh.push(record);
            } else {
                duplicates += 1;
            }
        }
        total += fresh.len() as u64;
        events(Event::Page {
            route: T_LIST,
            rows: fresh.len(),
            total,
            expected: None,
        });
        sink.send(fresh).await?;
        tail = keys[keys.len().saturating_sub(overlap as usize)..].to_vec();
        offset = skip + n;
        let mut continued = false;
        if let Some(link) = next {
            if !same_route(&link, &url) {
                return Err(PageError::LinkLeavesRoute { url, link });
            }
            match next_skip(&link, &url, skip) {
                // A link that jumps past rows not received would skip them.
                Ok(s) if s > offset => {
                    if !warned {
                        warned = true;
                        events(Event::Warning(format!(
                            "ignoring the service's @odata.nextLink ($skip={s} passes rows not received); paging on with $skip"
                        )));
                    }
                }
                // The overlap still applies. A service that pages below $top says so
                // with a link on a short page.
                Ok(_) => continued = n > 0,
                Err(why) if !warned => {
                    warned = true;
                    events(Event::Warning(format!(
                        "ignoring the service's @odata.nextLink ({why}); paging on with $skip"
                    )));
                }
                Err(_) => {}
            }
        }
        if n < top && !continued {
            return Ok(duplicates);
        }
    }
}

/// Where pages go: the writer, on its own thread.
pub trait AsyncSink {
    fn send(
        &mut self,
        records: Vec<RawRecord>,
    ) -> impl std::future::Future<Output = Result<(), PageError>> + Send;
}

/// A collection that pages by nextLink: the first URL, then the links it gives, each
/// on the route and never one asked before (or the page fails: the link is the only
/// way to the rest).
#[derive(Debug)]
pub struct Linked {
    route: &'static str,
    graph: bool,
    first: String,
    next: Option<String>,
    asked: HashSet<String>,
}

/// One page of a [`Linked`] collection.
#[derive(Debug)]
pub struct LinkedPage {
    pub url: String,
    pub records: Vec<RawRecord>,
    /// `@odata.count`, when the service gives it.
    pub count: Option<u64>,
}

impl Linked {
    pub fn new(route: &'static str, graph: bool, first: String) -> Self {
        Linked {
            route,
            graph,
            next: Some(first.clone()),
            first,
            asked: HashSet::new(),
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next(
        &mut self,
        client: &mut ApiClient,
        budget: &mut Budget,
        events: Observer<'_>,
    ) -> Result<Option<LinkedPage>, PageError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        budget.take()?;
        self.asked.insert(url.clone());
        let answer = client
            .get(self.route, self.graph, &url, On404::NoRows, events)
            .await?;
        let Page {
            records,
            next: link,
            count,
        } = split(&url, answer)?;
        if let Some(link) = link {
            if !same_route(&link, &self.first) {
                return Err(PageError::LinkLeavesRoute { url, link });
            }
            if self.asked.contains(&link) {
                return Err(PageError::LinkRepeats { url, link });
            }
            self.next = Some(link);
        }
        Ok(Some(LinkedPage {
            url,
            records,
            count,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_never_change_the_path() {
        assert_eq!(
            segment("../machines").ok().as_deref(),
            Some("..%2Fmachines")
        );
        assert_eq!(segment("a b").ok().as_deref(), Some("a%20b"));
        assert_eq!(segment("o'brien").ok().as_deref(), Some("o%27brien"));
        assert_eq!(segment("jürgen").ok().as_deref(), Some("j%C3%BCrgen"));
        assert_eq!(segment("x?y#z").ok().as_deref(), Some("x%3Fy%23z"));
        for bad in ["", ".", ".."] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn next_links_are_followed_only_when_they_keep_and_advance() {
        let sent =
            "http://127.0.0.1:9/api/machines?$top=100&$skip=0&$filter=riskScore%20eq%20'High'";
        let good =
            "http://127.0.0.1:9/api/machines?$top=100&$filter=riskScore%20eq%20'High'&$skip=100";
        assert_eq!(next_skip(good, sent, 0), Ok(100));
        // The 2022 bug: names lost, never advancing.
        let buggy = "http://127.0.0.1:9/api/machines?=100&=riskScore%20eq%20'High'&$skip=100";
        assert!(next_skip(buggy, sent, 0).is_err());
        let dropped = "http://127.0.0.1:9/api/machines?$top=100&$skip=100";
        assert!(next_skip(dropped, sent, 0).is_err());
        let stuck =
            "http://127.0.0.1:9/api/machines?$top=100&$filter=riskScore%20eq%20'High'&$skip=0";
        assert!(next_skip(stuck, sent, 0).is_err());
        let elsewhere =
            "https://evil.example/api/machines?$top=100&$filter=riskScore%20eq%20'High'&$skip=100";
        assert!(next_skip(elsewhere, sent, 0).is_err());
    }

    #[test]
    fn ids_are_compact_when_they_are_hex() {
        let id = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";
        assert!(matches!(IdKey::of(id), IdKey::Hex(_)));
        assert_eq!(IdKey::of(id), IdKey::of(id));
        assert!(matches!(IdKey::of("ABC"), IdKey::Other(_)));
        assert!(matches!(
            IdKey::of("1E5BC9D7E413DDD7902C2932E418702B84D0CC07"),
            IdKey::Other(_)
        ));
    }
}
