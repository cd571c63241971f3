//! Sends one delivery attempt and describes it for the history, with secrets masked.
//!
//! Every attempt goes through the target guard (`guard.rs`): IP literals are checked here,
//! names by the client's only resolver, so the connection goes to an address that was
//! checked. A refused attempt is a failed attempt like any other (the history's `error` says
//! why) and is retried on the schedule: DNS or the operator's allow-list may change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use wharf_store::hooks::AttemptRecord;

use crate::snapshot::Claimed;

use crate::guard::{GuardedResolver, TargetGuard, refusal_in};
use crate::retry::parse_retry_after;
use crate::signing;

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
    guard: TargetGuard,
    user_agent: String,
    response_body_cap: usize,
}

impl Sender {
    pub fn new(
        timeout: Duration,
        user_agent: String,
        response_body_cap: usize,
        guard: TargetGuard,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect is a failure (Standard Webhooks): following one could send the event,
            // and its custom headers, somewhere the operator never configured, and past the
            // guard, which vets only the configured target.
            .redirect(reqwest::redirect::Policy::none())
            // Names resolve only through the guard, so what is connected to was checked.
            .dns_resolver(std::sync::Arc::new(GuardedResolver::new(guard.clone())))
            // A proxy from the environment (HTTP_PROXY) would resolve and connect on our
            // behalf, out of the guard's sight.
            .no_proxy()
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Sender {
            client,
            guard,
            user_agent,
            response_body_cap,
        })
    }

    /// The headers of an attempt: the payload format's content type (JSON for ACR's) and our
    /// agent, then the custom headers, which may override both (ACR lets a custom
    /// `Content-Type` replace the default), then the format's own headers (CloudEvents binary
    /// mode's `ce-*`: they are the event, so no custom header may replace them), then,
    /// when the webhook signs, the Standard Webhooks headers for an attempt made at `now_ms`.
    /// The signature is masked in what the history shows: it is no secret, but it proves
    /// nothing to a reader and nothing about a key should sit in the history.
    fn headers(&self, c: &Claimed, now_ms: i64) -> (HeaderMap, BTreeMap<String, String>) {
        let mut h = HeaderMap::new();
        let mut shown = BTreeMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(c.content_type));
        shown.insert("Content-Type".to_owned(), c.content_type.to_owned());
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
        for (name, value) in &c.format_headers {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
                shown.retain(|sk, _| !sk.eq_ignore_ascii_case(name));
                shown.insert((*name).to_owned(), value.clone());
            }
        }
        let timestamp = now_ms.div_euclid(1000);
        let secrets = c.signing.active_secrets(now_ms);
        if let Some(sig) = signing::signature_header(&secrets, &c.event_id, timestamp, &c.body) {
            let ts = timestamp.to_string();
            for (name, value, show) in [
                (signing::HEADER_ID, c.event_id.as_str(), c.event_id.as_str()),
                (signing::HEADER_TIMESTAMP, ts.as_str(), ts.as_str()),
                (signing::HEADER_SIGNATURE, sig.as_str(), MASK),
            ] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    // Validation keeps custom headers off these names while signing is on;
                    // should one be stored anyway, the signature's header wins.
                    h.insert(HeaderName::from_static(name), v);
                    shown.retain(|sk, _| !sk.eq_ignore_ascii_case(name));
                    shown.insert(name.to_owned(), show.to_owned());
                }
            }
        }
        shown.insert("Content-Length".to_owned(), c.body.len().to_string());
        (h, shown)
    }

    pub async fn send(&self, c: &Claimed) -> SendResult {
        let started_at = chrono::Utc::now().timestamp_millis();
        let (headers, shown) = self.headers(c, started_at);
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
        if let Err(refused) = self.guard.check_literal(&c.service_uri) {
            // Never sent; the history says why.
            record.error = Some(refused.to_string());
            record.duration_ms = t0.elapsed().as_millis() as i64;
            return SendResult {
                record,
                success: false,
                retry_after: None,
            };
        }
        let port = reqwest::Url::parse(&c.service_uri)
            .ok()
            .and_then(|u| u.port_or_known_default());
        let send = self
            .client
            .post(&c.service_uri)
            .headers(headers)
            .body(c.body.clone())
            .send();
        let res = match port {
            Some(p) => TargetGuard::with_port(p, send).await,
            // No port: reqwest refuses such a URI before resolving anything.
            None => send.await,
        };
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
    if let Some(why) = refusal_in(e) {
        // The guard refused every address the name resolved to, or it did not resolve.
        why
    } else if e.is_timeout() {
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
