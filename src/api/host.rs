//! The DNS-rebinding guard: without a token, the API answers only requests whose
//! `Host` names a loopback name or address.
//!
//! A web page on `evil.example` can point that name at 127.0.0.1 after the browser
//! loaded it (DNS rebinding); the page's requests then reach the API from the
//! operator's own browser, same-origin as far as the browser knows, but still with
//! `Host: evil.example`. Refusing every Host that is not loopback closes that door.
//! With a token configured the token is the protection (a rebinding page does not
//! have it), so the Host is not checked.
//!
//! A page on another site can also send a request to `http://127.0.0.1:9090/...`
//! directly: its Host is loopback, and a POST needs no permission to be sent (only
//! to read the answer). Browsers name the page's origin in an `Origin` header, so
//! without a token a request that carries one must come from a loopback origin
//! (the dashboard itself); tools such as curl send none.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::{header, HeaderMap, Uri};

use super::error::{ApiError, HostProblem};

/// Checks the `Host` header (and the authority of an absolute-form request target,
/// when there is one) of a request.
pub fn check(headers: &HeaderMap, uri: &Uri) -> Result<(), ApiError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let value = match (hosts.next(), hosts.next()) {
        (Some(value), None) => value,
        (None, _) => return Err(ApiError::ForbiddenHost(HostProblem::Missing)),
        (Some(_), Some(_)) => return Err(ApiError::ForbiddenHost(HostProblem::Repeated)),
    };
    let not_loopback = |name: &[u8]| {
        ApiError::ForbiddenHost(HostProblem::NotLoopback(
            String::from_utf8_lossy(name).into_owned(),
        ))
    };
    let host = value.to_str().map_err(|_| not_loopback(value.as_bytes()))?;
    let authority = uri.authority().map(|a| a.as_str());
    for name in std::iter::once(host).chain(authority) {
        if !is_loopback(name) {
            return Err(not_loopback(name.as_bytes()));
        }
    }
    for origin in headers.get_all(header::ORIGIN) {
        let text = origin.to_str().unwrap_or_default();
        let host = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"));
        if !host.is_some_and(is_loopback) {
            return Err(ApiError::ForbiddenHost(HostProblem::Origin(
                String::from_utf8_lossy(origin.as_bytes()).into_owned(),
            )));
        }
    }
    Ok(())
}

/// `localhost`, `localhost.`, `*.localhost` (RFC 6761 reserves them for loopback),
/// an address in 127.0.0.0/8 or `[::1]`; each with or without a port.
fn is_loopback(host: &str) -> bool {
    let Some((name, port)) = split_port(host) else {
        return false;
    };
    if !port.is_empty() && port.parse::<u16>().is_err() {
        return false;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6
            .parse::<Ipv6Addr>()
            .is_ok_and(|a| IpAddr::V6(a).to_canonical().is_loopback());
    }
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.strip_suffix(".localhost").is_some_and(|label| {
            !label.is_empty()
                && label.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        })
}

/// Splits `name[:port]`; a bracketed IPv6 address keeps its brackets. `None` for a
/// malformed value (an unbracketed IPv6 address, junk after `]`).
fn split_port(host: &str) -> Option<(&str, &str)> {
    if host.starts_with('[') {
        let end = host.find(']')? + 1;
        let (name, rest) = host.split_at(end);
        return match rest {
            "" => Some((name, "")),
            _ => Some((name, rest.strip_prefix(':')?)),
        };
    }
    match host.split_once(':') {
        None => Some((host, "")),
        Some((_, port)) if port.contains(':') => None,
        Some((name, port)) => Some((name, port)),
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_names_and_addresses_pass() {
        for host in [
            "localhost",
            "LOCALHOST:9090",
            "localhost.",
            "localhost.:9090",
            "dash.localhost",
            "a.b.localhost:1",
            "127.0.0.1",
            "127.0.0.1:9090",
            "127.255.0.9:80",
            "[::1]",
            "[::1]:9090",
            "[::ffff:127.0.0.1]:9090",
        ] {
            assert!(is_loopback(host), "{host} should pass");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for host in [
            "",
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example",
            "evillocalhost",
            ".localhost",
            "a..localhost",
            "128.0.0.1",
            "10.0.0.1:9090",
            "0.0.0.0",
            "127.1",
            "2130706433",
            "::1",
            "[::2]:9090",
            "[::1]x",
            "[::1]:port",
            "localhost:99999",
            "localhost:90:90",
            "[::1",
        ] {
            assert!(!is_loopback(host), "{host:?} should be refused");
        }
    }
}

#[cfg(test)]
mod origin_tests {
    use axum::http::{HeaderMap, HeaderValue, Uri};

    use super::check;

    fn with(origin: Option<&'static str>) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:9090"));
        if let Some(o) = origin {
            headers.insert("origin", HeaderValue::from_static(o));
        }
        check(&headers, &Uri::from_static("/api/acl/reload")).is_ok()
    }

    #[test]
    fn a_request_from_another_sites_page_is_refused() {
        // No Origin (curl, scripts) and the dashboard's own origin pass.
        assert!(with(None));
        assert!(with(Some("http://127.0.0.1:9090")));
        assert!(with(Some("http://localhost:9090")));
        assert!(with(Some("http://[::1]:9090")));
        for origin in [
            "https://evil.example",
            "http://evil.example:9090",
            "null",
            "http://127.0.0.1.evil.example",
            "file://",
        ] {
            assert!(!with(Some(origin)), "{origin} passed");
        }
    }
}
