//! Where the ingester talks to: the API origin, the token authority and the scopes of
//! each cloud (`design.md`, "Ingest behaviour"; contract section 1), and the rule that
//! plain http is only for loopback (an emulator), never for a live host.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A national cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cloud {
    #[default]
    Commercial,
    Gcc,
    GccHigh,
    Dod,
}

impl Cloud {
    /// Every cloud with its name, as `--cloud` takes them.
    pub const ALL: [(Cloud, &'static str); 4] = [
        (Cloud::Commercial, "commercial"),
        (Cloud::Gcc, "gcc"),
        (Cloud::GccHigh, "gcc-high"),
        (Cloud::Dod, "dod"),
    ];
}

impl FromStr for Cloud {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cloud::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(c, _)| *c)
            .ok_or_else(|| EndpointError::UnknownCloud(s.to_string()))
    }
}

/// A geography of the commercial cloud's API hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    Us,
    Eu,
    Uk,
    Au,
}

impl Region {
    pub const ALL: [(Region, &'static str); 4] = [
        (Region::Us, "us"),
        (Region::Eu, "eu"),
        (Region::Uk, "uk"),
        (Region::Au, "au"),
    ];

    fn name(self) -> &'static str {
        Region::ALL
            .iter()
            .find(|(r, _)| *r == self)
            .map_or("us", |(_, n)| n)
    }
}

impl FromStr for Region {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(r, _)| *r)
            .ok_or_else(|| EndpointError::UnknownRegion(s.to_string()))
    }
}

/// What is wrong with a host or URL given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("unknown cloud '{0}' (expected commercial, gcc, gcc-high or dod)")]
    UnknownCloud(String),
    #[error("unknown region '{0}' (expected us, eu, uk or au)")]
    UnknownRegion(String),
    #[error("--region is for the commercial cloud; {0} has one API host")]
    RegionOutsideCommercial(&'static str),
    #[error(
        "{what} '{url}' is not an http(s) URL of a host (like https://api.security.microsoft.com)"
    )]
    NotAUrl { what: &'static str, url: String },
    #[error(
        "{what} '{url}' uses plain http, which is accepted only for a loopback host (an emulator); live hosts are https"
    )]
    PlainHttp { what: &'static str, url: String },
}

/// The hosts and scopes of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Origin of the machines API; the client appends `/api/...`.
    pub api: String,
    /// Origin of the token authority; the client appends `/{tenant}/oauth2/...`.
    pub authority: String,
    /// The scope of API tokens (`.../.default`); the v1 endpoint takes it without
    /// `/.default` as its `resource`.
    pub scope: String,
    /// Origin of Microsoft Graph, where the security states route lives.
    pub graph: String,
    /// The scope of Graph tokens.
    pub graph_scope: String,
}

impl Endpoints {
    /// The documented hosts of `cloud` (and `region`, commercial only).
    pub fn for_cloud(cloud: Cloud, region: Option<Region>) -> Result<Self, EndpointError> {
        let (api, authority, scope, graph) = match cloud {
            Cloud::Commercial => (
                match region {
                    Some(r) => format!("https://{}.api.security.microsoft.com", r.name()),
                    None => "https://api.security.microsoft.com".to_string(),
                },
                "https://login.microsoftonline.com",
                "https://api.securitycenter.microsoft.com/.default",
                "https://graph.microsoft.com",
            ),
            Cloud::Gcc => (
                "https://api-gcc.securitycenter.microsoft.us".to_string(),
                "https://login.microsoftonline.com",
                "https://api-gcc.securitycenter.microsoft.us/.default",
                "https://graph.microsoft.com",
            ),
            Cloud::GccHigh => (
                "https://api-gov.securitycenter.microsoft.us".to_string(),
                "https://login.microsoftonline.us",
                "https://api-gov.securitycenter.microsoft.us/.default",
                "https://graph.microsoft.us",
            ),
            Cloud::Dod => (
                "https://api-gov.securitycenter.microsoft.us".to_string(),
                "https://login.microsoftonline.us",
                "https://api-gov.securitycenter.microsoft.us/.default",
                "https://dod-graph.microsoft.us",
            ),
        };
        if region.is_some() && cloud != Cloud::Commercial {
            let name = Cloud::ALL
                .iter()
                .find(|(c, _)| *c == cloud)
                .map_or("this cloud", |(_, n)| n);
            return Err(EndpointError::RegionOutsideCommercial(name));
        }
        Ok(Endpoints {
            api,
            authority: authority.to_string(),
            scope: scope.to_string(),
            graph: graph.to_string(),
            graph_scope: format!("{graph}/.default"),
        })
    }

    /// Checks every origin: an http(s) URL of a host, https unless the host is
    /// loopback. Trailing slashes are dropped.
    pub fn checked(mut self) -> Result<Self, EndpointError> {
        self.api = check_origin("--base-url", &self.api)?;
        self.authority = check_origin("--authority-url", &self.authority)?;
        self.graph = check_origin("--graph-base-url", &self.graph)?;
        Ok(self)
    }

    /// The v1 token endpoint's `resource` for a scope: the scope without `/.default`.
    pub fn resource(scope: &str) -> &str {
        scope.strip_suffix("/.default").unwrap_or(scope)
    }
}

/// The scheme and host (and port) of a URL, for comparing origins.
pub fn origin_of(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    if host.is_empty() || host.contains('@') {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Whether a URL's host (without port) is a loopback address or `localhost`.
fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_origin(what: &'static str, url: &str) -> Result<String, EndpointError> {
    let url = url.trim().trim_end_matches('/').to_string();
    let not_a_url = || EndpointError::NotAUrl {
        what,
        url: url.clone(),
    };
    let (scheme, host) = origin_of(&url).ok_or_else(not_a_url)?;
    match scheme.as_str() {
        "https" => Ok(url),
        "http" if is_loopback(&host) => Ok(url),
        "http" => Err(EndpointError::PlainHttp {
            what,
            url: url.clone(),
        }),
        _ => Err(not_a_url()),
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (tokens from {})", self.api, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clouds_and_regions() {
        let e = Endpoints::for_cloud(Cloud::Commercial, Some(Region::Eu)).expect("eu");
        assert_eq!(e.api, "https://eu.api.security.microsoft.com");
        assert_eq!(e.scope, "https://api.securitycenter.microsoft.com/.default");
        let g = Endpoints::for_cloud(Cloud::GccHigh, None).expect("gcc-high");
        assert_eq!(g.api, "https://api-gov.securitycenter.microsoft.us");
        assert_eq!(g.authority, "https://login.microsoftonline.us");
        assert!(Endpoints::for_cloud(Cloud::Dod, Some(Region::Us)).is_err());
        assert_eq!(
            Endpoints::resource("https://api.securitycenter.microsoft.com/.default"),
            "https://api.securitycenter.microsoft.com"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1/",
            "http://[::1]:9",
            "https://example.com",
        ] {
            assert!(check_origin("--base-url", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1:80",
            "ftp://127.0.0.1",
            "127.0.0.1:80",
            "http://",
            "https://user@host",
        ] {
            assert!(check_origin("--base-url", bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_origin("--base-url", "https://h.example/").as_deref(),
            Ok("https://h.example")
        );
    }
}
