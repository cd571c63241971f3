//! The ACR webhook event (`EventContent`) and its exact JSON rendering.
//!
//! Receivers written for ACR parse these bodies, some of them strictly, so the shape follows
//! the published examples to the letter: which fields each action carries (the reference's
//! field-presence matrix), the key order, omitted rather than null fields, and 7-digit UTC
//! timestamps. The constructors are the only intended way to build an [`Event`]; they encode
//! the matrix so that callers cannot produce a shape ACR never sends.

use std::fmt;

use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::webhook::WebhookAction;

/// The `action` of an event: the five subscribable actions plus `ping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventAction {
    Push,
    Delete,
    Quarantine,
    ChartPush,
    ChartDelete,
    Ping,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self.webhook_action() {
            Some(action) => action.as_str(),
            None => "ping",
        }
    }

    /// The subscription this event is delivered to; `None` for `ping`, which goes to one
    /// webhook on request whatever its actions.
    pub fn webhook_action(self) -> Option<WebhookAction> {
        match self {
            EventAction::Push => Some(WebhookAction::Push),
            EventAction::Delete => Some(WebhookAction::Delete),
            EventAction::Quarantine => Some(WebhookAction::Quarantine),
            EventAction::ChartPush => Some(WebhookAction::ChartPush),
            EventAction::ChartDelete => Some(WebhookAction::ChartDelete),
            EventAction::Ping => None,
        }
    }
}

impl From<WebhookAction> for EventAction {
    fn from(action: WebhookAction) -> Self {
        match action {
            WebhookAction::Push => EventAction::Push,
            WebhookAction::Delete => EventAction::Delete,
            WebhookAction::Quarantine => EventAction::Quarantine,
            WebhookAction::ChartPush => EventAction::ChartPush,
            WebhookAction::ChartDelete => EventAction::ChartDelete,
        }
    }
}

impl fmt::Display for EventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventAction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The two chart actions, as a type of their own so that [`Event::chart`] cannot be handed an
/// action whose shape is different.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChartAction {
    Push,
    Delete,
}

impl From<ChartAction> for EventAction {
    fn from(action: ChartAction) -> Self {
        match action {
            ChartAction::Push => EventAction::ChartPush,
            ChartAction::Delete => EventAction::ChartDelete,
        }
    }
}

/// `target`: what the event is about. Field order is the wire key order. Deserialize reads
/// a stored body back for the other payload formats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// int64 on the wire: the reference docs say Int32, but blobs and manifests can exceed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<i64>,
    pub repository: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `request`: the registry request that caused the event. Field order is the wire key order;
/// `useragent` is lower-case on the wire, as in Docker Distribution's notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRequest {
    pub id: String,
    pub host: String,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub useragent: Option<String>,
}

/// One webhook delivery body (`EventContent`). Field order is the wire key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: String,
    #[serde(serialize_with = "serialize_timestamp")]
    pub timestamp: DateTime<Utc>,
    pub action: EventAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<EventTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<EventRequest>,
}

impl Event {
    /// A manifest push. `tag` is `None` for a push by digest, and the key is then omitted
    /// (ACR's behaviour there is unverified; receivers are told to accept both). The request
    /// method is forced to `PUT`, the only way to push a manifest.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per wire field keeps call sites aligned with the presence matrix"
    )]
    pub fn push(
        id: impl Into<String>,
        timestamp: DateTime<Utc>,
        repository: impl Into<String>,
        digest: impl Into<String>,
        media_type: impl Into<String>,
        size: i64,
        tag: Option<String>,
        request: EventRequest,
    ) -> Self {
        Event {
            id: id.into(),
            timestamp,
            action: EventAction::Push,
            target: Some(EventTarget {
                media_type: Some(media_type.into()),
                size: Some(size),
                digest: digest.into(),
                length: Some(size),
                repository: repository.into(),
                tag,
                name: None,
                version: None,
            }),
            request: Some(EventRequest {
                method: "PUT".to_owned(),
                ..request
            }),
        }
    }

    /// A manifest or repository deletion. ACR sends no `tag`, `size` or `length` here, even
    /// when the manifest was deleted by tag. The request method is forced to `DELETE`.
    pub fn delete(
        id: impl Into<String>,
        timestamp: DateTime<Utc>,
        repository: impl Into<String>,
        digest: impl Into<String>,
        media_type: impl Into<String>,
        request: EventRequest,
    ) -> Self {
        Event {
            id: id.into(),
            timestamp,
            action: EventAction::Delete,
            target: Some(EventTarget {
                media_type: Some(media_type.into()),
                size: None,
                digest: digest.into(),
                length: None,
                repository: repository.into(),
                tag: None,
                name: None,
                version: None,
            }),
            request: Some(EventRequest {
                method: "DELETE".to_owned(),
                ..request
            }),
        }
    }

    /// A quarantine notice for a pushed image. ACR's example has no `mediaType` and no
    /// `useragent`, so both are dropped whatever the caller passes; the method is `PUT`.
    pub fn quarantine(
        id: impl Into<String>,
        timestamp: DateTime<Utc>,
        repository: impl Into<String>,
        digest: impl Into<String>,
        size: i64,
        tag: Option<String>,
        request: EventRequest,
    ) -> Self {
        Event {
            id: id.into(),
            timestamp,
            action: EventAction::Quarantine,
            target: Some(EventTarget {
                media_type: None,
                size: Some(size),
                digest: digest.into(),
                length: Some(size),
                repository: repository.into(),
                tag,
                name: None,
                version: None,
            }),
            request: Some(EventRequest {
                method: "PUT".to_owned(),
                useragent: None,
                ..request
            }),
        }
    }

    /// A legacy Helm 2 chart push or delete. These carry `name` and `version`, have `size`
    /// but no `length`, and no `request` at all. `tag` is the chart package file name.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per wire field keeps call sites aligned with the presence matrix"
    )]
    pub fn chart(
        id: impl Into<String>,
        timestamp: DateTime<Utc>,
        action: ChartAction,
        repository: impl Into<String>,
        digest: impl Into<String>,
        media_type: impl Into<String>,
        size: i64,
        tag: impl Into<String>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Event {
            id: id.into(),
            timestamp,
            action: action.into(),
            target: Some(EventTarget {
                media_type: Some(media_type.into()),
                size: Some(size),
                digest: digest.into(),
                length: None,
                repository: repository.into(),
                tag: Some(tag.into()),
                name: Some(name.into()),
                version: Some(version.into()),
            }),
            request: None,
        }
    }

    /// A ping: only `id`, `timestamp` and `action`, since receivers must not require a
    /// `target` on a ping and ACR's own contents are unverified.
    pub fn ping(id: impl Into<String>, timestamp: DateTime<Utc>) -> Self {
        Event {
            id: id.into(),
            timestamp,
            action: EventAction::Ping,
            target: None,
            request: None,
        }
    }

    /// The event as a JSON value, for embedding in other documents (event history).
    ///
    /// `serde_json::Value` sorts object keys unless serde_json's `preserve_order` feature is
    /// on, so serialising this value does not give the wire order; use [`Event::to_bytes`] for
    /// delivery bodies.
    pub fn to_json(&self) -> serde_json::Value {
        // Cannot fail: every field is a string, an integer or a struct of them, and there are
        // no maps with non-string keys, the only thing serde_json refuses.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The delivery body: one compact JSON object, keys in ACR's order.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Cannot fail, for the same reason as in `to_json`.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// RFC 3339 in UTC with exactly 7 fractional digits and `Z`, e.g.
/// `2026-03-04T08:30:12.4417205Z`: the .NET round-trip format most ACR samples show.
/// Sub-100 ns precision is truncated, not rounded, as .NET ticks are.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    // chrono stores a leap second as nanoseconds >= 1e9 and prints its seconds as `60`; the
    // modulo keeps the fraction at 7 digits in that case too.
    let ticks = ts.nanosecond() % 1_000_000_000 / 100;
    format!("{}.{ticks:07}Z", ts.format("%Y-%m-%dT%H:%M:%S"))
}

fn serialize_timestamp<S: Serializer>(
    ts: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_timestamp(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = r#"{
      "id": "9333761c-febc-45b4-90b0-4524b752018c",
      "timestamp": "2026-03-04T08:30:12.4417205Z",
      "action": "push",
      "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 1204,
        "digest": "sha256:d4f696750301c8af2a73f1c97cff744b7ca5e3a6144a439570ae463c9c1e75f8",
        "length": 1204,
        "repository": "payments/ledger",
        "tag": "2.7.1"
      },
      "request": {
        "id": "5972d2b1-1cb2-4f47-aecc-58031029d7f7",
        "host": "fabrikam.azurecr.io",
        "method": "PUT",
        "useragent": "containerd/1.7.13"
      }
    }"#;

    const DELETE: &str = r#"{
      "id": "c91e0c2b-b041-416d-9d6c-ac234a08e814",
      "timestamp": "2026-03-04T09:02:47.118406322Z",
      "action": "delete",
      "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:d4f696750301c8af2a73f1c97cff744b7ca5e3a6144a439570ae463c9c1e75f8",
        "repository": "payments/ledger"
      },
      "request": {
        "id": "36effae9-feb9-4b7f-8951-cd462de6f126",
        "host": "fabrikam.azurecr.io",
        "method": "DELETE",
        "useragent": "azsdk-python-containerregistry/1.2.0"
      }
    }"#;

    const CHART_PUSH: &str = r#"{
      "id": "23f676e9-de9d-4d25-83dd-a71ca579c03b",
      "timestamp": "2026-03-04T10:45:00.9081234Z",
      "action": "chart_push",
      "target": {
        "mediaType": "application/vnd.acr.helm.chart",
        "size": 18342,
        "digest": "sha256:67a21a7ecb27f36daae5820671697e0901e5b4c0b8c5b85f1bd7d565cbbb600c",
        "repository": "helm",
        "tag": "ingress-proxy-3.2.0.tgz",
        "name": "ingress-proxy",
        "version": "3.2.0"
      }
    }"#;

    const QUARANTINE: &str = r#"{
      "id": "01d74d46-ad1b-4458-8f5c-4a46c89f1f3c",
      "timestamp": "2026-03-04T11:20:33.5550019Z",
      "action": "quarantine",
      "target": {
        "size": 2210,
        "digest": "sha256:feae22cb77eeda7043f0c431439cc4e092dd702d6beabe9f5425ea2047c8375e",
        "length": 2210,
        "repository": "scanner-demo",
        "tag": "v9"
      },
      "request": {
        "id": "4411c642-9d32-434f-85ef-03636b4d5a88",
        "host": "fabrikam.azurecr.io",
        "method": "PUT"
      }
    }"#;

    const PING: &str = r#"{
      "id": "6f0d7c1e-8a53-4d0e-9c59-2f1b1f3e2a11",
      "timestamp": "2026-03-04T12:00:00.0000001Z",
      "action": "ping"
    }"#;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn request(id: &str, method: &str, useragent: Option<&str>) -> EventRequest {
        EventRequest {
            id: id.to_owned(),
            host: "fabrikam.azurecr.io".to_owned(),
            method: method.to_owned(),
            useragent: useragent.map(str::to_owned),
        }
    }

    /// Drops whitespace outside string literals, turning a pretty example into compact JSON.
    fn minify(s: &str) -> String {
        let mut out = String::new();
        let (mut in_string, mut escaped) = (false, false);
        for c in s.chars() {
            if in_string {
                out.push(c);
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => {}
                }
            } else if !c.is_whitespace() {
                in_string = c == '"';
                out.push(c);
            }
        }
        out
    }

    /// Object keys in the order they appear in a compact JSON text, each prefixed with its
    /// nesting depth so that `target.id`-like collisions cannot hide an ordering error.
    fn keys_in_order(json: &str) -> Vec<String> {
        let bytes = json.as_bytes();
        let mut keys = Vec::new();
        let (mut depth, mut i) = (0usize, 0usize);
        while i < bytes.len() {
            match bytes[i] {
                b'{' => depth += 1,
                b'}' => depth -= 1,
                b'"' => {
                    let start = i + 1;
                    i += 1;
                    while bytes[i] != b'"' {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    if bytes.get(i + 1) == Some(&b':') {
                        keys.push(format!("{depth}:{}", &json[start..i]));
                    }
                }
                _ => {}
            }
            i += 1;
        }
        keys
    }

    /// Field-by-field equality through `Value`, then exact key order of the rendered text.
    fn assert_renders_as(event: &Event, example: &str) {
        let rendered = String::from_utf8(event.to_bytes()).unwrap();
        let expected: serde_json::Value = serde_json::from_str(example).unwrap();
        let actual: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(actual, expected);
        assert_eq!(event.to_json(), expected);
        assert_eq!(keys_in_order(&rendered), keys_in_order(&minify(example)));
        assert!(!rendered.contains("null"), "{rendered}");
    }

    #[test]
    fn push_matches_reference_example() {
        let event = Event::push(
            "9333761c-febc-45b4-90b0-4524b752018c",
            ts("2026-03-04T08:30:12.4417205Z"),
            "payments/ledger",
            "sha256:d4f696750301c8af2a73f1c97cff744b7ca5e3a6144a439570ae463c9c1e75f8",
            "application/vnd.oci.image.manifest.v1+json",
            1204,
            Some("2.7.1".to_owned()),
            request(
                "5972d2b1-1cb2-4f47-aecc-58031029d7f7",
                "PUT",
                Some("containerd/1.7.13"),
            ),
        );
        assert_renders_as(&event, PUSH);
        // The example has no escapes or spaces in values, so the body is the example, compact.
        assert_eq!(event.to_bytes(), minify(PUSH).into_bytes());
        assert_eq!(
            keys_in_order(&String::from_utf8(event.to_bytes()).unwrap()),
            [
                "1:id",
                "1:timestamp",
                "1:action",
                "1:target",
                "2:mediaType",
                "2:size",
                "2:digest",
                "2:length",
                "2:repository",
                "2:tag",
                "1:request",
                "2:id",
                "2:host",
                "2:method",
                "2:useragent",
            ]
        );
    }

    #[test]
    fn delete_matches_reference_example() {
        let event = Event::delete(
            "c91e0c2b-b041-416d-9d6c-ac234a08e814",
            ts("2026-03-04T09:02:47.118406322Z"),
            "payments/ledger",
            "sha256:d4f696750301c8af2a73f1c97cff744b7ca5e3a6144a439570ae463c9c1e75f8",
            "application/vnd.oci.image.manifest.v1+json",
            // The constructor, not the caller, decides the method.
            request(
                "36effae9-feb9-4b7f-8951-cd462de6f126",
                "PUT",
                Some("azsdk-python-containerregistry/1.2.0"),
            ),
        );
        // The example's timestamp has 9 digits; Wharf emits 7, truncated.
        let example = DELETE.replace(
            "2026-03-04T09:02:47.118406322Z",
            "2026-03-04T09:02:47.1184063Z",
        );
        assert_renders_as(&event, &example);
        assert_eq!(event.to_bytes(), minify(&example).into_bytes());
    }

    #[test]
    fn quarantine_matches_reference_example() {
        let event = Event::quarantine(
            "01d74d46-ad1b-4458-8f5c-4a46c89f1f3c",
            ts("2026-03-04T11:20:33.5550019Z"),
            "scanner-demo",
            "sha256:feae22cb77eeda7043f0c431439cc4e092dd702d6beabe9f5425ea2047c8375e",
            2210,
            Some("v9".to_owned()),
            // A user agent passed in is dropped, as in ACR's example.
            request(
                "4411c642-9d32-434f-85ef-03636b4d5a88",
                "POST",
                Some("docker/27.0"),
            ),
        );
        assert_renders_as(&event, QUARANTINE);
        assert_eq!(event.to_bytes(), minify(QUARANTINE).into_bytes());
    }

    #[test]
    fn chart_push_matches_reference_example() {
        let event = Event::chart(
            "23f676e9-de9d-4d25-83dd-a71ca579c03b",
            ts("2026-03-04T10:45:00.9081234Z"),
            ChartAction::Push,
            "helm",
            "sha256:67a21a7ecb27f36daae5820671697e0901e5b4c0b8c5b85f1bd7d565cbbb600c",
            "application/vnd.acr.helm.chart",
            18342,
            "ingress-proxy-3.2.0.tgz",
            "ingress-proxy",
            "3.2.0",
        );
        assert_renders_as(&event, CHART_PUSH);
        assert_eq!(event.to_bytes(), minify(CHART_PUSH).into_bytes());
    }

    #[test]
    fn chart_delete_has_the_chart_push_shape() {
        let event = Event::chart(
            "23f676e9-de9d-4d25-83dd-a71ca579c03b",
            ts("2026-03-04T10:45:00.9081234Z"),
            ChartAction::Delete,
            "helm",
            "sha256:67a21a7ecb27f36daae5820671697e0901e5b4c0b8c5b85f1bd7d565cbbb600c",
            "application/vnd.acr.helm.chart",
            18342,
            "ingress-proxy-3.2.0.tgz",
            "ingress-proxy",
            "3.2.0",
        );
        let example = CHART_PUSH.replace("\"chart_push\"", "\"chart_delete\"");
        assert_renders_as(&event, &example);
    }

    #[test]
    fn ping_has_only_id_timestamp_action() {
        let event = Event::ping(
            "6f0d7c1e-8a53-4d0e-9c59-2f1b1f3e2a11",
            ts("2026-03-04T12:00:00.0000001Z"),
        );
        assert_renders_as(&event, PING);
        assert_eq!(event.to_bytes(), minify(PING).into_bytes());
    }

    #[test]
    fn push_without_tag_omits_the_key() {
        let event = Event::push(
            "id",
            ts("2026-03-04T08:30:12Z"),
            "repo",
            "sha256:00",
            "application/vnd.oci.image.manifest.v1+json",
            1,
            None,
            request("r", "PUT", None),
        );
        let json = event.to_json();
        let target = json["target"].as_object().unwrap();
        assert!(!target.contains_key("tag"));
        assert!(
            !json["request"]
                .as_object()
                .unwrap()
                .contains_key("useragent")
        );
        let body = String::from_utf8(event.to_bytes()).unwrap();
        assert!(!body.contains("\"tag\""), "{body}");
        assert!(!body.contains("null"), "{body}");
    }

    #[test]
    fn sizes_are_64_bit_integers() {
        let big = 5_000_000_000_i64;
        let event = Event::push(
            "id",
            ts("2026-03-04T08:30:12Z"),
            "repo",
            "sha256:00",
            "application/vnd.oci.image.index.v1+json",
            big,
            Some("t".to_owned()),
            request("r", "PUT", None),
        );
        let body = String::from_utf8(event.to_bytes()).unwrap();
        assert!(
            body.contains("\"size\":5000000000,") && body.contains("\"length\":5000000000,"),
            "{body}"
        );
        assert_eq!(event.to_json()["target"]["size"].as_i64(), Some(big));
    }

    #[test]
    fn timestamps_have_seven_fraction_digits() {
        let cases = [
            (
                "2026-03-04T08:30:12.4417205Z",
                "2026-03-04T08:30:12.4417205Z",
            ),
            ("2026-03-04T08:30:12Z", "2026-03-04T08:30:12.0000000Z"),
            (
                "2026-03-04T09:02:47.118406322Z",
                "2026-03-04T09:02:47.1184063Z",
            ),
            (
                "2026-03-04T09:02:47.999999999Z",
                "2026-03-04T09:02:47.9999999Z",
            ),
            (
                "2019-03-12T15:16:31.0087496-07:00",
                "2019-03-12T22:16:31.0087496Z",
            ),
            ("0999-01-01T00:00:00.5Z", "0999-01-01T00:00:00.5000000Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(format_timestamp(&ts(input)), expected, "{input}");
        }
    }

    #[test]
    fn actions_render_and_map() {
        let cases = [
            (EventAction::Push, "push", Some(WebhookAction::Push)),
            (EventAction::Delete, "delete", Some(WebhookAction::Delete)),
            (
                EventAction::Quarantine,
                "quarantine",
                Some(WebhookAction::Quarantine),
            ),
            (
                EventAction::ChartPush,
                "chart_push",
                Some(WebhookAction::ChartPush),
            ),
            (
                EventAction::ChartDelete,
                "chart_delete",
                Some(WebhookAction::ChartDelete),
            ),
            (EventAction::Ping, "ping", None),
        ];
        for (action, s, webhook) in cases {
            assert_eq!(action.as_str(), s);
            assert_eq!(action.to_string(), s);
            assert_eq!(action.webhook_action(), webhook);
            if let Some(w) = webhook {
                assert_eq!(EventAction::from(w), action);
            }
        }
    }
}
