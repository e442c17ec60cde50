//! Header handling between the client, the proxies and the application: hop-by-hop headers
//! are stripped, `X-Forwarded-*` added, and ltxd's own forwarding headers never reach the
//! application.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// How many proxies a request went through (an ltxd header between proxies).
pub const HOPS: HeaderName = HeaderName::from_static("ltxd-proxy-hops");
/// The cluster's HTTP token, from a replica's proxy to the primary's.
pub const TOKEN: HeaderName = HeaderName::from_static("ltxd-proxy-token");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The hop-by-hop headers of RFC 9110 §7.6.1, which apply to one connection only.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The hop count a trusted peer stated; 0 for a client or a malformed value.
pub fn hops(headers: &HeaderMap) -> u32 {
    headers
        .get(&HOPS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

/// Prepares a client's request headers for the next hop. From a client (`trusted` false),
/// `X-Forwarded-For` gets the client's address appended and `-Proto`/`-Host` are set when
/// missing; a trusted peer proxy set them already. ltxd's own headers are removed either way.
pub fn forward_request(headers: &mut HeaderMap, peer: IpAddr, tls: bool, trusted: bool) {
    strip_hop_by_hop(headers);
    headers.remove(&HOPS);
    headers.remove(&TOKEN);
    if trusted {
        return;
    }
    let peer = peer.to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(earlier)) => format!("{earlier}, {peer}"),
        _ => peer,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert(X_FORWARDED_HOST, host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn clients_get_forwarded_headers_and_lose_ltxd_s() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("app.example"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert(HOPS, HeaderValue::from_static("1"));
        headers.insert(TOKEN, HeaderValue::from_static("guess"));
        forward_request(&mut headers, "192.0.2.7".parse().unwrap(), false, false);
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, 192.0.2.7");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "app.example");
        assert!(!headers.contains_key(HOPS) && !headers.contains_key(TOKEN));
    }

    #[test]
    fn a_trusted_peer_s_forwarded_headers_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        forward_request(&mut headers, "192.0.2.7".parse().unwrap(), false, true);
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn malformed_hop_counts_are_zero() {
        let mut headers = HeaderMap::new();
        assert_eq!(hops(&headers), 0);
        headers.insert(HOPS, HeaderValue::from_static("x"));
        assert_eq!(hops(&headers), 0);
        headers.insert(HOPS, HeaderValue::from_static("2"));
        assert_eq!(hops(&headers), 2);
    }
}
