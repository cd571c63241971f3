//! `--debug`: each request and response on stderr, as az's `--debug` shows them, with every
//! secret replaced by `*****`: the `Authorization` header, passwords, tokens (in JSON bodies,
//! in the token server's forms and in its answers), signing secrets, and webhook service URIs
//! and custom header values (which often carry credentials themselves).

use std::io::Write;

use serde_json::Value;

const REDACTED: &str = "*****";

/// Whether a JSON key or form field holds a secret.
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("token")
        || matches!(
            k.as_str(),
            "serviceuri" | "customheaders" | "requesturi" | "headers" | "value" | "authorization"
        )
}

/// A JSON body with its secrets replaced. `value` is what ARM calls a password's value (in
/// `passwords: [{name, value}]`), so it is hidden wherever it appears.
pub fn redact_json(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let whole =
                        matches!(k.to_ascii_lowercase().as_str(), "customheaders" | "headers");
                    let x = if secret_key(k) && (whole || !(x.is_array() || x.is_object())) {
                        // A scalar secret, or a map of header values (each one a secret).
                        Value::String(REDACTED.into())
                    } else {
                        redact_json(x)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact_json).collect()),
        other => other.clone(),
    }
}

/// A body as text fit for stderr: JSON or a form with its secrets replaced; anything else by
/// its size only.
pub fn redact_body(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        return redact_json(&v).to_string();
    }
    if let Ok(text) = std::str::from_utf8(bytes)
        && text.contains('=')
        && !text.contains(char::is_whitespace)
    {
        // A form (the token server's): the secret fields' values go.
        return text
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if secret_key(k) => format!("{k}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
    }
    format!("<{} bytes>", bytes.len())
}

fn header_value(name: &str, v: &reqwest::header::HeaderValue) -> String {
    let n = name.to_ascii_lowercase();
    if n == "authorization" || n == "cookie" || n == "set-cookie" || n.contains("token") {
        REDACTED.into()
    } else {
        String::from_utf8_lossy(v.as_bytes()).into_owned()
    }
}

fn line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "DEBUG: {text}");
}

pub fn request(req: &reqwest::Request) {
    // The query of a URL may carry a secret too (none of Wharf's routes takes one, but the
    // token server's GET could be given `password=`); its secret fields are replaced as well.
    let mut url = req.url().clone();
    if url.query_pairs().any(|(k, _)| secret_key(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_key(&k) {
                    REDACTED.into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    line(&format!("Request URL: '{url}'"));
    line(&format!("Request method: '{}'", req.method()));
    line("Request headers:");
    for (k, v) in req.headers() {
        line(&format!("    '{k}': '{}'", header_value(k.as_str(), v)));
    }
    if let Some(b) = req.body().and_then(|b| b.as_bytes()) {
        line(&format!("Request body: {}", redact_body(b)));
    }
}

pub fn response_head(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap) {
    line(&format!("Response status: {}", status.as_u16()));
    line("Response headers:");
    for (k, v) in headers {
        line(&format!("    '{k}': '{}'", header_value(k.as_str(), v)));
    }
}

pub fn response_body(body: &[u8]) {
    line(&format!("Response content: {}", redact_body(body)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_in_bodies_are_replaced() {
        let v = json!({
            "properties": {"serviceUri": "http://h/p4th", "customHeaders": {"Authorization": "Basic x"},
                           "actions": ["push"], "signing": {"enabled": true}},
            "passwords": [{"name": "password", "value": "pw1"}],
            "signingSecret": "whsec_x", "refresh_token": "rt", "access_token": "at",
            "username": "wharf", "value": [{"name": "listed"}]
        });
        let r = redact_json(&v).to_string();
        for secret in ["p4th", "Basic x", "pw1", "whsec_x", "\"rt\"", "\"at\""] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        for kept in ["push", "password", "wharf", "enabled", "listed"] {
            assert!(r.contains(kept), "{kept} gone from {r}");
        }
        let f =
            redact_body(b"grant_type=password&username=u&password=s3cret&scope=repository:a:pull");
        assert_eq!(
            f,
            "grant_type=password&username=u&password=*****&scope=repository:a:pull"
        );
        let f = redact_body(b"grant_type=access_token&service=h&access_token=wharfm_x");
        assert!(!f.contains("wharfm_x"), "{f}");
        assert_eq!(redact_body(b"\x00\x01 binary"), "<9 bytes>");
    }
}
