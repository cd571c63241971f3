//! Limits and checks on a webhook's service URI and custom headers, applied on create and
//! update so that nothing is stored that the sender could not send.
//!
//! Messages name the field and the rule, never the value: both the URI and the header values
//! are secrets (DESIGN invariant 6). Header names are not secret and may be named.

use std::collections::BTreeMap;

use crate::HooksError;

/// Most characters in a service URI. Browsers and proxies commonly stop at about 2 KB, ARM
/// resources have no use for more, and it keeps every history row and log line bounded.
pub const MAX_URI_CHARS: usize = 2048;
/// Most custom headers on one webhook. Receivers need one or two (an auth token, a routing
/// key); the bound keeps a definition from growing into a request no server accepts.
pub const MAX_HEADERS: usize = 16;
/// Most characters in a custom header's name.
pub const MAX_HEADER_NAME_CHARS: usize = 256;
/// Most characters in a custom header's value: room for a long bearer token or JWT.
pub const MAX_HEADER_VALUE_CHARS: usize = 4096;
/// Most bytes of all custom header names and values together. Common servers refuse request
/// header sections above 8 KiB (nginx, Apache) and the sender adds its own headers, so the
/// custom ones may take at most that much.
pub const MAX_HEADER_BYTES: usize = 8192;

/// Checks that `uri` is an absolute http or https URL the sender can send to: reqwest parses
/// it as a `Url`, then turns it into an `http::Uri` when it sends, and refuses the request if
/// that fails; both steps are repeated here so such a URI is refused at creation instead of
/// failing every delivery.
pub fn validate_uri(uri: &str) -> Result<(), HooksError> {
    // Counted before parsing: a 70,000-character string need not be parsed to be refused.
    if uri.chars().count() > MAX_URI_CHARS {
        return Err(HooksError::Invalid(format!(
            "serviceUri: must be at most {MAX_URI_CHARS} characters"
        )));
    }
    let sendable = reqwest::Url::parse(uri).ok().filter(|u| {
        (u.scheme() == "http" || u.scheme() == "https")
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.as_str().parse::<http::Uri>().is_ok()
    });
    match sendable {
        Some(_) => Ok(()),
        // Never echo the URI: it is a secret.
        None => Err(HooksError::Invalid(
            "serviceUri: must be an absolute http or https URI".to_owned(),
        )),
    }
}

/// Headers that describe the connection or the message framing: the HTTP client sets them,
/// and a custom value would corrupt the request (a wrong `Content-Length`) or be dropped.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
];

pub fn validate_headers(h: &BTreeMap<String, String>) -> Result<(), HooksError> {
    let invalid = |m: String| Err(HooksError::Invalid(format!("customHeaders: {m}")));
    if h.len() > MAX_HEADERS {
        return invalid(format!("at most {MAX_HEADERS} headers"));
    }
    let mut total = 0;
    let mut seen: Vec<String> = Vec::with_capacity(h.len());
    for (k, v) in h {
        // Checked before the name is quoted in any message, so a message stays short.
        if k.chars().count() > MAX_HEADER_NAME_CHARS {
            return invalid(format!(
                "header names must be at most {MAX_HEADER_NAME_CHARS} characters"
            ));
        }
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return invalid(format!("{k:?} is not a valid header name (an HTTP token)"));
        }
        if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(k)) {
            return invalid(format!("{k:?} cannot be set, the HTTP client controls it"));
        }
        // Header names are case-insensitive: two spellings of one name would send one of the
        // two values, and which one would depend on map order.
        let lower = k.to_ascii_lowercase();
        if seen.contains(&lower) {
            return invalid(format!(
                "{k:?} is given twice (header names are case-insensitive)"
            ));
        }
        seen.push(lower);
        // The value is a secret: name the header only.
        if v.chars().count() > MAX_HEADER_VALUE_CHARS {
            return invalid(format!(
                "the value of {k:?} must be at most {MAX_HEADER_VALUE_CHARS} characters"
            ));
        }
        if reqwest::header::HeaderValue::from_str(v).is_err() {
            return invalid(format!("the value of {k:?} is not a valid header value"));
        }
        total += k.len() + v.len();
    }
    if total > MAX_HEADER_BYTES {
        return invalid(format!(
            "names and values together must be at most {MAX_HEADER_BYTES} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<(), HooksError>) -> String {
        match r {
            Err(HooksError::Invalid(m)) => m,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn uri_is_bounded_and_must_be_sendable() {
        assert!(validate_uri("http://127.0.0.1:9/hooks?token=x").is_ok());
        assert!(validate_uri("https://example.com/").is_ok());
        assert!(validate_uri("http://h/x#frag").is_ok());
        assert!(validate_uri("http://user:pw@h/x").is_ok());
        let max = format!("http://h/{}", "a".repeat(MAX_URI_CHARS - 9));
        assert_eq!(max.len(), MAX_URI_CHARS);
        assert!(validate_uri(&max).is_ok());
        let m = msg(validate_uri(&format!("{max}a")));
        assert_eq!(m, "serviceUri: must be at most 2048 characters");
        for bad in [
            "ftp://h/x",
            "mailto:a@b",
            "/just/a/path",
            "http://",
            "file:///etc/passwd",
            "http://exa mple.com/",
        ] {
            let m = msg(validate_uri(bad));
            assert!(m.starts_with("serviceUri:"), "{bad}: {m}");
            assert!(!m.contains(bad), "{bad}: the URI must not be echoed: {m}");
        }
    }

    #[test]
    fn headers_are_bounded_in_count_size_and_total() {
        let ok: BTreeMap<String, String> = (0..MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".repeat(100)))
            .collect();
        assert!(validate_headers(&ok).is_ok());
        let mut too_many = ok.clone();
        too_many.insert("X-One-More".into(), "v".into());
        assert_eq!(
            msg(validate_headers(&too_many)),
            "customHeaders: at most 16 headers"
        );

        let one = |k: String, v: String| BTreeMap::from([(k, v)]);
        let m = msg(validate_headers(&one("X".repeat(257), "v".into())));
        assert!(m.contains("at most 256 characters"), "{m}");
        assert!(validate_headers(&one("X".repeat(256), "v".into())).is_ok());
        let m = msg(validate_headers(&one("X-A".into(), "s".repeat(4097))));
        assert!(
            m.contains("at most 4096 characters") && m.contains("X-A"),
            "{m}"
        );
        assert!(!m.contains("sss"), "{m}");
        assert!(validate_headers(&one("X-A".into(), "s".repeat(4096))).is_ok());

        let big: BTreeMap<String, String> = (0..3)
            .map(|i| (format!("X-{i}"), "v".repeat(3000)))
            .collect();
        assert_eq!(
            msg(validate_headers(&big)),
            "customHeaders: names and values together must be at most 8192 bytes"
        );

        let dup = BTreeMap::from([
            ("Authorization".to_owned(), "a".to_owned()),
            ("authorization".to_owned(), "b".to_owned()),
        ]);
        assert!(msg(validate_headers(&dup)).contains("twice"));
        for (k, v) in [
            ("Bad Header", "v"),
            ("", "v"),
            ("X-A", "line\nbreak"),
            ("Host", "h"),
        ] {
            let m = msg(validate_headers(&one(k.into(), v.into())));
            assert!(m.starts_with("customHeaders:"), "{m}");
            assert!(!m.contains("break"), "{m}");
        }
    }
}
