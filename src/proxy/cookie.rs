//! LiteFS's `__txid` cookie: the position of `proxy.db` after a client's last write, as 16
//! hexadecimal digits.

use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, COOKIE};

/// The cookie's name, as LiteFS's.
pub const NAME: &str = "__txid";

/// How long a browser keeps the cookie, as LiteFS's (`DefaultCookieExpiry`).
pub const EXPIRY: Duration = Duration::from_secs(5 * 60);

/// The TXID in the request's `__txid` cookie. A missing, malformed or zero value is `None`, as
/// LiteFS treats it: the request is then served without waiting.
pub fn txid(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == NAME)
        .and_then(|(_, value)| parse_txid(value.trim_matches('"')))
}

/// A TXID as LiteFS writes it: exactly 16 hexadecimal digits, not zero.
fn parse_txid(value: &str) -> Option<u64> {
    if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(value, 16)
        .ok()
        .filter(|txid| *txid != 0)
}

/// The `Set-Cookie` value carrying `txid`, as LiteFS's: `Path=/`, `HttpOnly`, expiring
/// [`EXPIRY`] after `now`.
pub fn set_cookie(txid: u64, now: SystemTime) -> String {
    format!(
        "{NAME}={txid:016x}; Path=/; Expires={}; HttpOnly",
        http_date(now + EXPIRY)
    )
}

/// `time` as an HTTP date (`Mon, 07 Dec 2026 06:00:00 GMT`).
fn http_date(time: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::from(time)
        .format(&format)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for cookie in cookies {
            map.append(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        map
    }

    #[test]
    fn finds_the_cookie_among_others() {
        assert_eq!(
            txid(&headers(&["a=1; __txid=00000000000000ff; b=2"])),
            Some(255)
        );
        assert_eq!(
            txid(&headers(&["a=1", "__txid=0000000000000010"])),
            Some(16)
        );
        assert_eq!(txid(&headers(&[])), None);
    }

    #[test]
    fn malformed_values_count_as_absent() {
        for bad in [
            "__txid=ff",
            "__txid=000000000000000g",
            "__txid=0000000000000000",
            "__txid=+00000000000000f",
            "__txid=00000000000000001",
            "__txid",
            "__txid=",
        ] {
            assert_eq!(txid(&headers(&[bad])), None, "{bad}");
        }
    }

    #[test]
    fn the_set_cookie_value_is_litefs_s() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            set_cookie(0x2a, at),
            "__txid=000000000000002a; Path=/; Expires=Fri, 15 Jan 2027 08:05:00 GMT; HttpOnly"
        );
    }
}
