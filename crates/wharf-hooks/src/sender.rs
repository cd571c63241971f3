//! Sends one delivery attempt and describes it for the history, with secrets masked.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use wharf_store::hooks::{AttemptRecord, Claimed};

use crate::guard::SelfGuard;
use crate::retry::parse_retry_after;

/// The mask shown in place of secret values.
pub const MASK: &str = "******";

/// The result of one attempt.
#[derive(Debug, Clone)]
pub struct SendResult {
    pub record: AttemptRecord,
    pub success: bool,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    guard: SelfGuard,
    user_agent: String,
    response_body_cap: usize,
}

impl Sender {
    pub fn new(
        timeout: Duration,
        user_agent: String,
        response_body_cap: usize,
        guard: SelfGuard,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect is a failure (Standard Webhooks): following one could send the event,
            // and its custom headers, somewhere the operator never configured.
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Sender {
            client,
            guard,
            user_agent,
            response_body_cap,
        })
    }

    /// The headers of an attempt: JSON content type and our agent, then the custom headers,
    /// which may override both (ACR lets a custom `Content-Type` replace the default).
    fn headers(&self, c: &Claimed) -> (HeaderMap, BTreeMap<String, String>) {
        let mut h = HeaderMap::new();
        let mut shown = BTreeMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        shown.insert("Content-Type".to_owned(), "application/json".to_owned());
        if let Ok(v) = HeaderValue::from_str(&self.user_agent) {
            h.insert(USER_AGENT, v);
            shown.insert("User-Agent".to_owned(), self.user_agent.clone());
        }
        for (k, v) in &c.custom_headers {
            if let (Ok(name), Ok(val)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                h.insert(name, val);
                shown.retain(|sk, _| !sk.eq_ignore_ascii_case(k));
                shown.insert(k.clone(), MASK.to_owned());
            }
        }
        shown.insert("Content-Length".to_owned(), c.body.len().to_string());
        (h, shown)
    }

    pub async fn send(&self, c: &Claimed) -> SendResult {
        let (headers, shown) = self.headers(c);
        let started_at = chrono::Utc::now().timestamp_millis();
        let t0 = Instant::now();
        let mut record = AttemptRecord {
            delivery_id: c.delivery_id,
            webhook: c.webhook.clone(),
            event_id: c.event_id.clone(),
            attempt: c.attempt,
            started_at,
            request_uri: redact_uri(&c.service_uri),
            request_headers: shown,
            ..Default::default()
        };
        if let Err(refused) = self.guard.check_uri(&c.service_uri).await {
            // A loop back into this server: never sent; the history says why.
            record.error = Some(refused.to_owned());
            record.duration_ms = t0.elapsed().as_millis() as i64;
            return SendResult {
                record,
                success: false,
                retry_after: None,
            };
        }
        let res = self
            .client
            .post(&c.service_uri)
            .headers(headers)
            .body(c.body.clone())
            .send()
            .await;
        let mut success = false;
        let mut retry_after = None;
        match res {
            Ok(resp) => {
                let status = resp.status();
                success = status.is_success();
                record.status_code = Some(i64::from(status.as_u16()));
                record.reason = status.canonical_reason().map(str::to_owned);
                retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                record.response_headers = resp
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                record.response_body = Some(self.read_capped(resp).await);
            }
            Err(e) => {
                record.error = Some(describe(&e));
                if e.is_timeout() {
                    // ACR records a timed-out call as 504.
                    record.status_code = Some(504);
                    record.reason = Some("Gateway Timeout".to_owned());
                }
            }
        }
        record.duration_ms = t0.elapsed().as_millis() as i64;
        SendResult {
            record,
            success,
            retry_after,
        }
    }

    /// Reads at most the cap of a response body, then stops (a receiver that streams forever
    /// must not hold a worker).
    async fn read_capped(&self, resp: reqwest::Response) -> String {
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(Ok(chunk)) = stream.next().await {
            let room = self.response_body_cap.saturating_sub(out.len());
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= self.response_body_cap {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// An error in words that never include the URI (reqwest's Display does).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_redirect() {
        "redirect not followed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "response body error".to_owned()
    } else if e.is_builder() {
        "invalid request (check the service URI and headers)".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// The URI as shown in history: scheme and host only, because paths and queries often carry
/// secrets (tokens in `?secret=`), and `serviceUri` is write-only.
pub fn redact_uri(uri: &str) -> String {
    match reqwest::Url::parse(uri) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{}:{}/{MASK}", u.scheme(), host, p),
                None => format!("{}://{}/{MASK}", u.scheme(), host),
            }
        }
        Err(_) => MASK.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_paths_queries_and_credentials() {
        assert_eq!(
            redact_uri("https://user:pw@hooks.example.org:8443/a/b?secret=x"),
            "https://hooks.example.org:8443/******"
        );
        assert_eq!(redact_uri("http://127.0.0.1/x"), "http://127.0.0.1/******");
        assert_eq!(redact_uri("not a uri"), "******");
    }
}
