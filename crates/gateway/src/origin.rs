//! Which web pages may open a WebSocket to the node: the `Origin` check that stops
//! cross-site WebSocket hijacking.
//!
//! A browser lets any page open a WebSocket to any host, and says which page it is in
//! the `Origin` header, which the page's script cannot change. A WebSocket upgrade is
//! not bound by the same-origin policy, so the server has to look: an upgrade whose
//! `Origin` is not allowed gets HTTP 403 before the token is even read.
//!
//! Clients that are not browsers (the Rust client, the SDK under Node, a load
//! generator) send no `Origin`; they are let through, and the token alone decides.
//! The check protects browsers, not the server against arbitrary programs.

use anyhow::{Context, bail};
use axum::http::{HeaderValue, Uri};

/// The `--allowed-origins` policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// The default: a page may connect when its origin's `host:port` is the request's
    /// `Host` header, i.e. the page served by the node itself, or an app on the same
    /// host behind a proxy that keeps `Host`.
    #[default]
    SameHost,
    /// `*`: any page (the token is the only gate).
    Any,
    /// Exactly these origins (`scheme://host[:port]`, lower case, no default port).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parse `--allowed-origins`: `*`, or origins like `https://app.broker.com`
    /// separated by commas.
    pub fn parse(spec: &str) -> anyhow::Result<AllowedOrigins> {
        let items: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        match items.as_slice() {
            [] => bail!("--allowed-origins is empty: give `*` or origins like https://app.example.com"),
            ["*"] => Ok(AllowedOrigins::Any),
            _ => items
                .iter()
                .map(|item| {
                    normalize(item.trim_end_matches('/')).with_context(|| {
                        format!(
                            "--allowed-origins: {item:?} is not an origin like https://app.example.com (`*` stands alone)"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
                .map(AllowedOrigins::List),
        }
    }

    /// Whether an upgrade with this `Origin` (absent for non-browser clients) and
    /// `Host` may proceed.
    pub fn allows(&self, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Some(origin) = origin.to_str().ok().and_then(normalize) else {
            return matches!(self, AllowedOrigins::Any); // "null" (sandboxed page, file://)
        };
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(allowed) => allowed.contains(&origin),
            AllowedOrigins::SameHost => {
                let authority = origin.split_once("://").map_or("", |(_, a)| a);
                host.and_then(|h| h.to_str().ok())
                    .is_some_and(|host| authority_eq(authority, host))
            }
        }
    }
}

/// `scheme://host[:port]` in lower case without its scheme's default port, or `None`
/// when `text` is not such an origin (a path, a query, user info, no host, `null`).
fn normalize(text: &str) -> Option<String> {
    let uri: Uri = text.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || uri.query().is_some() || !matches!(uri.path(), "" | "/")
    {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    Some(match authority.port_u16() {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// `host[:port]` equality, ignoring case (DNS names are case-insensitive).
fn authority_eq(origin_authority: &str, host_header: &str) -> bool {
    origin_authority.eq_ignore_ascii_case(host_header.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(policy: &AllowedOrigins, origin: Option<&str>, host: &str) -> bool {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        policy.allows(origin.as_ref(), Some(&HeaderValue::from_str(host).unwrap()))
    }

    #[test]
    fn same_host_by_default() {
        let p = AllowedOrigins::default();
        assert!(allows(&p, Some("http://127.0.0.1:8080"), "127.0.0.1:8080"));
        assert!(allows(
            &p,
            Some("https://Push.Broker.com"),
            "push.broker.com"
        ));
        assert!(allows(&p, Some("http://[::1]:8080"), "[::1]:8080"));
        assert!(!allows(&p, Some("https://evil.example"), "push.broker.com"));
        assert!(!allows(&p, Some("http://127.0.0.1:8081"), "127.0.0.1:8080"));
        assert!(!allows(&p, Some("null"), "127.0.0.1:8080"));
        assert!(
            allows(&p, None, "127.0.0.1:8080"),
            "no Origin: not a browser"
        );
        let origin = HeaderValue::from_static("http://127.0.0.1:8080");
        assert!(!p.allows(Some(&origin), None), "no Host to compare with");
    }

    #[test]
    fn a_list_allows_exactly_its_origins() {
        let p = AllowedOrigins::parse("https://app.broker.com, http://localhost:3000/").unwrap();
        assert_eq!(
            p,
            AllowedOrigins::List(vec![
                "https://app.broker.com".into(),
                "http://localhost:3000".into()
            ])
        );
        assert!(allows(
            &p,
            Some("https://app.broker.com"),
            "push.broker.com"
        ));
        assert!(allows(&p, Some("http://localhost:3000"), "push.broker.com"));
        assert!(
            !allows(&p, Some("http://app.broker.com"), "push.broker.com"),
            "scheme counts"
        );
        assert!(!allows(
            &p,
            Some("https://app.broker.com.evil.example"),
            "x"
        ));
        assert!(
            !allows(&p, Some("https://push.broker.com"), "push.broker.com"),
            "no same-host default"
        );
        // A default port written out is the same origin.
        let p = AllowedOrigins::parse("https://app.broker.com:443").unwrap();
        assert!(allows(&p, Some("https://app.broker.com"), "x"));
    }

    #[test]
    fn star_allows_any_and_bad_specs_are_refused() {
        let p = AllowedOrigins::parse("*").unwrap();
        assert!(allows(&p, Some("https://anything.example"), "x"));
        assert!(allows(&p, Some("null"), "x"));
        for bad in [
            "",
            " , ",
            "app.broker.com",
            "https://a.com/path",
            "*,https://a.com",
            "null",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad:?}");
        }
    }
}
