//! The URL a sender signed, for the schemes that sign one (Twilio, and
//! `{url}` in the generic scheme): either the public URL configured for the
//! source, or one rebuilt from the request, plus the port spellings the
//! providers' SDKs also accept.

use super::RequestTarget;

/// Where the signed URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedUrl {
    /// The public URL up to the path (`https://example.com/hooks/twilio`),
    /// as registered with the provider. The request's query is appended:
    /// the provider signs it, and Twilio adds `bodySHA256` to it per request.
    Configured(String),
    /// Rebuilt from the request: this scheme (else the forwarded or request
    /// scheme, else https), `:authority` and `:path` as received. Behind a
    /// proxy that rewrites host or path, configure the URL instead.
    FromRequest { scheme: Option<&'static str> },
}

/// `url_scheme` as configured: only the two a webhook URL can have.
pub fn parse_url_scheme(text: &str) -> Result<&'static str, &'static str> {
    match text {
        "https" => Ok("https"),
        "http" => Ok("http"),
        _ => Err("must be \"https\" or \"http\""),
    }
}

/// Checks a configured public URL: http(s), a host, a path, and no query
/// or fragment (the query comes from each request).
pub fn parse_configured(text: &str) -> Result<String, &'static str> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    if text
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("must not contain spaces or control characters");
    }
    if text.contains('?') || text.contains('#') {
        return Err("must not contain a query or fragment: the request's query string is appended");
    }
    match rest.find('/') {
        Some(0) | None => Err("must have a host and a path, e.g. https://example.com/hooks/twilio"),
        Some(_) => Ok(text.to_string()),
    }
}

impl SignedUrl {
    /// The full URL for this request; `None` when a rebuilt URL lacks its
    /// authority or path.
    pub fn for_request(&self, target: &RequestTarget<'_>) -> Option<String> {
        match self {
            SignedUrl::Configured(base) => {
                let query = target.path_and_query.split_once('?').map(|(_, q)| q);
                Some(match query {
                    Some(q) => format!("{base}?{q}"),
                    None => base.clone(),
                })
            }
            SignedUrl::FromRequest { scheme } => {
                if target.authority.is_empty() || !target.path_and_query.starts_with('/') {
                    return None;
                }
                let scheme = scheme.or(target.scheme).unwrap_or("https");
                Some(format!(
                    "{scheme}://{}{}",
                    target.authority, target.path_and_query
                ))
            }
        }
    }
}

/// The spellings of `url` the SDKs accept: as is, with the scheme's default
/// port added when there is no port, and with it removed when it is the
/// default. A non-default port is never dropped: that would accept a
/// signature made for a different listener.
pub fn port_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (host, port) = split_host_port(hostport);
    if host.is_empty() {
        return out;
    }
    match port {
        None => out.push(format!("{scheme}://{userinfo}{host}:{default}{tail}")),
        Some(p) if p == default => out.push(format!("{scheme}://{userinfo}{host}{tail}")),
        Some(_) => {}
    }
    out
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(hostport: &str) -> (&str, Option<&str>) {
    if hostport.starts_with('[') {
        return match hostport.find(']') {
            Some(close) => {
                let (host, after) = hostport.split_at(close + 1);
                (host, after.strip_prefix(':'))
            }
            None => (hostport, None),
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (hostport, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_are_added_or_removed_but_others_kept() {
        assert_eq!(
            port_variants("https://a.com/x?y=1"),
            vec!["https://a.com/x?y=1", "https://a.com:443/x?y=1"]
        );
        assert_eq!(
            port_variants("https://a.com:443/x"),
            vec!["https://a.com:443/x", "https://a.com/x"]
        );
        assert_eq!(
            port_variants("http://u:p@a.com:80/x"),
            vec!["http://u:p@a.com:80/x", "http://u:p@a.com/x"]
        );
        assert_eq!(
            port_variants("http://a.com:1234/x"),
            vec!["http://a.com:1234/x"]
        );
        assert_eq!(
            port_variants("https://[::1]/x"),
            vec!["https://[::1]/x", "https://[::1]:443/x"]
        );
        assert_eq!(port_variants("ftp://a.com/x"), vec!["ftp://a.com/x"]);
        assert_eq!(port_variants("nonsense"), vec!["nonsense"]);
    }

    #[test]
    fn configured_urls_take_the_request_query() {
        let base = SignedUrl::Configured(parse_configured("https://a.com/hook").unwrap());
        let t = RequestTarget {
            scheme: Some("http"),
            authority: "internal:10000",
            path_and_query: "/hook?b=2",
        };
        assert_eq!(base.for_request(&t).unwrap(), "https://a.com/hook?b=2");
        let t = RequestTarget {
            path_and_query: "/hook",
            ..t
        };
        assert_eq!(base.for_request(&t).unwrap(), "https://a.com/hook");
        for bad in [
            "a.com/x",
            "https://a.com",
            "https:///x",
            "https://a.com/x?y",
            "https://a.com/x#f",
            "https://a .com/x",
        ] {
            assert!(parse_configured(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rebuilt_urls_prefer_the_configured_scheme() {
        let t = RequestTarget {
            scheme: Some("http"),
            authority: "a.com",
            path_and_query: "/x?y=1",
        };
        assert_eq!(
            SignedUrl::FromRequest { scheme: None }
                .for_request(&t)
                .unwrap(),
            "http://a.com/x?y=1"
        );
        assert_eq!(
            SignedUrl::FromRequest {
                scheme: Some("https")
            }
            .for_request(&t)
            .unwrap(),
            "https://a.com/x?y=1"
        );
        let no_scheme = RequestTarget { scheme: None, ..t };
        assert_eq!(
            SignedUrl::FromRequest { scheme: None }
                .for_request(&no_scheme)
                .unwrap(),
            "https://a.com/x?y=1"
        );
        assert!(
            SignedUrl::FromRequest { scheme: None }
                .for_request(&RequestTarget::default())
                .is_none()
        );
    }
}
