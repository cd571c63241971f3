//! Payload formats a webhook may choose (Wharf's extension): ACR's own body, the Event Grid
//! schema, or CloudEvents 1.0 in structured or binary mode.
//!
//! The outbox stores one ACR body per event, shared by every webhook. Other formats are
//! rendered from that stored body, the webhook's region and the format, and from nothing else
//! (no clock, no randomness), so every attempt of a delivery sends the same bytes with the
//! same id however often it is rendered. The ACR format is the stored body itself, untouched:
//! a registry whose webhooks all use it pays nothing for this module.
//!
//! The `data` of the other formats is ACR's Event Grid data: `ContainerRegistryEventData`
//! (push, delete, and Wharf's quarantine) or `ContainerRegistryArtifactEventData` (chart
//! events), with `location` added, and for image events `target.url`, `request.addr`,
//! `actor` and `source`. Those four are in ACR's model but, per the reference, unverified in
//! ACR's own webhook bodies, so the ACR body leaves them out. They are stored after it: the
//! stored body is the ACR body, a newline, and a small JSON object of [`Extras`]. Compact JSON
//! never contains a raw newline, so the ACR format is the stored body cut at the first one
//! (a truncation, no copy) and no receiver ever sees the extras line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::event::{EventRequest, EventTarget};

/// How a webhook's deliveries are shaped (`properties.payloadFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadFormat {
    /// ACR's webhook body (`EventContent`), byte for byte.
    #[default]
    Acr,
    /// An Event Grid schema event, in a one-element array as Event Grid delivers it.
    EventGrid,
    /// CloudEvents 1.0, structured mode: `application/cloudevents+json`.
    CloudEvents,
    /// CloudEvents 1.0, binary mode: attributes in `ce-*` headers, `data` as the body.
    CloudEventsBinary,
}

impl PayloadFormat {
    pub const ALL: [PayloadFormat; 4] = [
        PayloadFormat::Acr,
        PayloadFormat::EventGrid,
        PayloadFormat::CloudEvents,
        PayloadFormat::CloudEventsBinary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Acr => "acr",
            PayloadFormat::EventGrid => "eventgrid",
            PayloadFormat::CloudEvents => "cloudevents",
            PayloadFormat::CloudEventsBinary => "cloudevents-binary",
        }
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown payload format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of acr, eventgrid, cloudevents, cloudevents-binary")]
pub struct UnknownPayloadFormat;

impl FromStr for PayloadFormat {
    type Err = UnknownPayloadFormat;

    /// Case-insensitive, like ACR's own enums.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PayloadFormat::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or(UnknownPayloadFormat)
    }
}

/// A delivery ready to send: the body, its `Content-Type`, and headers the format adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: &'static str,
    /// `ce-*` headers in binary mode; empty otherwise.
    pub headers: Vec<(&'static str, String)>,
}

/// What the Event Grid and CloudEvents data carry beyond ACR's body: who made the change,
/// from where, on which registry node, and over which scheme (for `target.url`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// The client's address, `ip:port` (`request.addr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The identity behind the request (`actor.name`); None: anonymous or the registry itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The registry node that took the request (`source`).
    #[serde(default)]
    pub source: Source,
    /// Whether the client's connection was TLS: `target.url`'s scheme.
    #[serde(default)]
    pub tls: bool,
}

/// `source` of ACR's event data: the node's `host:port` and its instance id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// The body the outbox stores for an event: ACR's body, then (if there are any) the extras
/// on a line of their own.
pub fn stored_body(mut acr_body: Vec<u8>, extras: Option<&Extras>) -> Vec<u8> {
    if let Some(x) = extras {
        acr_body.push(b'\n');
        // Strings and booleans only: serialising cannot fail.
        let _ = serde_json::to_writer(&mut acr_body, x);
    }
    acr_body
}

/// Splits a stored body into ACR's body and the extras (if any, and if they parse).
fn split_stored(body: &[u8]) -> (&[u8], Option<Extras>) {
    match body.iter().position(|&b| b == b'\n') {
        Some(i) => (&body[..i], serde_json::from_slice(&body[i + 1..]).ok()),
        None => (body, None),
    }
}

/// `request` of the Event Grid data: ACR's request plus `addr`, in the schema's order.
#[derive(Serialize)]
struct DataRequest<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<&'a str>,
    host: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    useragent: Option<&'a str>,
}

#[derive(Serialize)]
struct DataActor<'a> {
    name: &'a str,
}

/// The stored ACR body, read back. The timestamp stays the string ACR's body carries, already
/// RFC 3339, so the rendered times are the stored ones to the character.
#[derive(Deserialize)]
struct Stored {
    id: String,
    timestamp: String,
    action: String,
    target: Option<EventTarget>,
    request: Option<EventRequest>,
}

/// `target` of the Event Grid data: ACR's target plus `url` (image events), in the order of
/// the `ContainerRegistryEventData` schema.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DataTarget<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    media_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<i64>,
    repository: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

/// `ContainerRegistryEventData` / `ContainerRegistryArtifactEventData`: the chart events'
/// schema is the same minus `request` (absent from their stored body already) and `url`.
#[derive(Serialize)]
struct Data<'a> {
    id: &'a str,
    timestamp: &'a str,
    action: &'a str,
    location: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<DataTarget<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<DataRequest<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<DataActor<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a Source>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventGridEvent<'a> {
    id: &'a str,
    topic: &'a str,
    subject: &'a str,
    event_type: &'a str,
    event_time: &'a str,
    data: &'a Data<'a>,
    data_version: &'a str,
    metadata_version: &'a str,
}

#[derive(Serialize)]
struct CloudEvent<'a> {
    specversion: &'a str,
    id: &'a str,
    source: &'a str,
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subject: &'a str,
    time: &'a str,
    datacontenttype: &'a str,
    data: &'a Data<'a>,
}

/// The event type of each action. Event Grid has image and chart events only; quarantine and
/// ping get Wharf-namespaced types so that nobody mistakes them for events Azure sends.
fn event_type(action: &str) -> &'static str {
    match action {
        "push" => "Microsoft.ContainerRegistry.ImagePushed",
        "delete" => "Microsoft.ContainerRegistry.ImageDeleted",
        "chart_push" => "Microsoft.ContainerRegistry.ChartPushed",
        "chart_delete" => "Microsoft.ContainerRegistry.ChartDeleted",
        "quarantine" => "Wharf.ContainerRegistry.ImageQuarantined",
        _ => "Wharf.ContainerRegistry.Ping",
    }
}

/// Event Grid's subject: `repo:tag` for a push (just `repo` without a tag), `repo` for a
/// delete, `name:version` for chart events, empty for a ping.
fn subject(s: &Stored) -> String {
    let Some(t) = &s.target else {
        return String::new();
    };
    match s.action.as_str() {
        "chart_push" | "chart_delete" => format!(
            "{}:{}",
            t.name.as_deref().unwrap_or_default(),
            t.version.as_deref().unwrap_or_default()
        ),
        "delete" => t.repository.clone(),
        _ => match &t.tag {
            Some(tag) => format!("{}:{tag}", t.repository),
            None => t.repository.clone(),
        },
    }
}

/// Renders one delivery of the stored ACR `body` in `format`, for a webhook of region
/// `location` on the registry whose ARM id is `registry_id` (the Event Grid `topic` and the
/// CloudEvents `source`: see [`crate::arm::ArmIdentity::registry_id`]). `Acr` hands the body back untouched; so does any format if the body is not an
/// ACR event (it always is: only Wharf writes it), rather than sending nothing.
pub fn render(format: PayloadFormat, body: Vec<u8>, location: &str, registry_id: &str) -> Rendered {
    let (acr_body, extras) = split_stored(&body);
    if format == PayloadFormat::Acr {
        let len = acr_body.len();
        let mut body = body;
        body.truncate(len);
        return acr(body);
    }
    let Ok(stored) = serde_json::from_slice::<Stored>(acr_body) else {
        let len = acr_body.len();
        let mut body = body;
        body.truncate(len);
        return acr(body);
    };
    let extras = extras.unwrap_or_default();
    let is_chart = matches!(stored.action.as_str(), "chart_push" | "chart_delete");
    let target = stored.target.as_ref().map(|t| DataTarget {
        media_type: t.media_type.as_deref(),
        size: t.size,
        digest: &t.digest,
        length: t.length,
        repository: &t.repository,
        // The manifest's address on the registry the client used (ACR's listEvents sample);
        // chart events' schema has no url.
        url: match (&stored.request, is_chart) {
            (Some(r), false) if !r.host.is_empty() => Some(format!(
                "{}://{}/v2/{}/manifests/{}",
                if extras.tls { "https" } else { "http" },
                r.host,
                t.repository,
                t.digest
            )),
            _ => None,
        },
        tag: t.tag.as_deref(),
        name: t.name.as_deref(),
        version: t.version.as_deref(),
    });
    let data = Data {
        id: &stored.id,
        timestamp: &stored.timestamp,
        action: &stored.action,
        location,
        target,
        request: stored.request.as_ref().map(|r| DataRequest {
            id: &r.id,
            addr: extras.addr.as_deref(),
            host: &r.host,
            method: &r.method,
            useragent: r.useragent.as_deref(),
        }),
        // The artifact (chart) schema has no actor or source.
        actor: match (is_chart, &extras.actor) {
            (false, Some(name)) => Some(DataActor { name }),
            _ => None,
        },
        source: (!is_chart && !extras.source.addr.is_empty()).then_some(&extras.source),
    };
    let subject = subject(&stored);
    let ty = event_type(&stored.action);
    // Serialising these structs cannot fail: strings, integers and structs of them only.
    match format {
        PayloadFormat::Acr => acr(body),
        PayloadFormat::EventGrid => Rendered {
            body: serde_json::to_vec(&[EventGridEvent {
                id: &stored.id,
                topic: registry_id,
                subject: &subject,
                event_type: ty,
                event_time: &stored.timestamp,
                data: &data,
                data_version: "2.0",
                metadata_version: "1",
            }])
            .unwrap_or_default(),
            content_type: "application/json",
            headers: Vec::new(),
        },
        PayloadFormat::CloudEvents => Rendered {
            body: serde_json::to_vec(&CloudEvent {
                specversion: "1.0",
                id: &stored.id,
                source: registry_id,
                ty,
                subject: &subject,
                time: &stored.timestamp,
                datacontenttype: "application/json",
                data: &data,
            })
            .unwrap_or_default(),
            content_type: "application/cloudevents+json",
            headers: Vec::new(),
        },
        PayloadFormat::CloudEventsBinary => {
            let mut headers = vec![
                ("ce-specversion", "1.0".to_owned()),
                ("ce-id", ce_encode(&stored.id)),
                ("ce-source", ce_encode(registry_id)),
                ("ce-type", ty.to_owned()),
            ];
            if !subject.is_empty() {
                headers.push(("ce-subject", ce_encode(&subject)));
            }
            headers.push(("ce-time", ce_encode(&stored.timestamp)));
            Rendered {
                body: serde_json::to_vec(&data).unwrap_or_default(),
                // The binding carries `datacontenttype` in Content-Type, never as ce-*.
                content_type: "application/json",
                headers,
            }
        }
    }
}

fn acr(body: Vec<u8>) -> Rendered {
    Rendered {
        body,
        content_type: "application/json",
        headers: Vec::new(),
    }
}

/// The CloudEvents HTTP binding's header value encoding: printable ASCII other than space,
/// `"` and `%` as is, everything else percent-encoded as UTF-8.
fn ce_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry id that is not the default one, so the tests see it is the one passed in.
    const REGISTRY_ID: &str = "/subscriptions/6f1a2b3c-0000-4000-8000-00000000abcd/resourceGroups/rg-prod/providers/Microsoft.ContainerRegistry/registries/fabrikam";
    use crate::event::{ChartAction, Event};
    use chrono::{DateTime, Utc};
    use serde_json::{Value, json};

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn push() -> Event {
        Event::push(
            "9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65",
            ts("2026-03-04T08:30:12.4417205Z"),
            "payments/ledger",
            "sha256:d4f6",
            "application/vnd.oci.image.manifest.v1+json",
            1204,
            Some("2.7.1".to_owned()),
            EventRequest {
                id: "r1".to_owned(),
                host: "fabrikam.azurecr.io".to_owned(),
                method: "PUT".to_owned(),
                useragent: Some("containerd/1.7.13".to_owned()),
            },
        )
    }

    fn extras() -> Extras {
        Extras {
            addr: Some("203.0.113.40:51122".to_owned()),
            actor: Some("ci-bot".to_owned()),
            source: Source {
                addr: "registry-node-3:5000".to_owned(),
                instance_id: "0b6f".to_owned(),
            },
            tls: true,
        }
    }

    /// A push as the outbox stores it: ACR's body and the extras line.
    fn stored_push() -> Vec<u8> {
        stored_body(push().to_bytes(), Some(&extras()))
    }

    fn push_data() -> Value {
        json!({
            "id": "9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65",
            "timestamp": "2026-03-04T08:30:12.4417205Z",
            "action": "push",
            "location": "northeurope",
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1204,
                "digest": "sha256:d4f6", "length": 1204, "repository": "payments/ledger",
                "url": "https://fabrikam.azurecr.io/v2/payments/ledger/manifests/sha256:d4f6",
                "tag": "2.7.1"},
            "request": {"id": "r1", "addr": "203.0.113.40:51122", "host": "fabrikam.azurecr.io",
                "method": "PUT", "useragent": "containerd/1.7.13"},
            "actor": {"name": "ci-bot"},
            "source": {"addr": "registry-node-3:5000", "instanceID": "0b6f"},
        })
    }

    fn parse(r: &Rendered) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn acr_is_the_stored_body_without_the_extras_line() {
        let body = push().to_bytes();
        let r = render(
            PayloadFormat::Acr,
            stored_push(),
            "northeurope",
            REGISTRY_ID,
        );
        assert_eq!(r.body, body);
        assert!(!r.body.contains(&b'\n'));
        // A body stored without extras is sent as it is.
        let r = render(PayloadFormat::Acr, body.clone(), "northeurope", REGISTRY_ID);
        assert_eq!(r.body, body);
        assert_eq!(r.content_type, "application/json");
        assert!(r.headers.is_empty());
    }

    #[test]
    fn event_grid_push_follows_the_reference() {
        let r = render(
            PayloadFormat::EventGrid,
            stored_push(),
            "northeurope",
            REGISTRY_ID,
        );
        assert_eq!(r.content_type, "application/json");
        assert!(r.headers.is_empty());
        assert_eq!(
            parse(&r),
            json!([{
                "id": "9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65",
                "topic": REGISTRY_ID,
                "subject": "payments/ledger:2.7.1",
                "eventType": "Microsoft.ContainerRegistry.ImagePushed",
                "eventTime": "2026-03-04T08:30:12.4417205Z",
                "data": push_data(),
                "dataVersion": "2.0",
                "metadataVersion": "1",
            }])
        );
        // Key order as in the reference's example.
        let text = String::from_utf8(r.body).unwrap();
        assert!(
            text.starts_with(r#"[{"id":"9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65","topic":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""data":{"id":"9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65","timestamp":"2026-03-04T08:30:12.4417205Z","action":"push","location":"northeurope","target":{"mediaType""#),
            "{text}"
        );
    }

    #[test]
    fn cloudevents_structured_and_binary() {
        let r = render(
            PayloadFormat::CloudEvents,
            stored_push(),
            "northeurope",
            REGISTRY_ID,
        );
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert_eq!(
            parse(&r),
            json!({
                "specversion": "1.0",
                "id": "9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65",
                "source": REGISTRY_ID,
                "type": "Microsoft.ContainerRegistry.ImagePushed",
                "subject": "payments/ledger:2.7.1",
                "time": "2026-03-04T08:30:12.4417205Z",
                "datacontenttype": "application/json",
                "data": push_data(),
            })
        );
        let b = render(
            PayloadFormat::CloudEventsBinary,
            stored_push(),
            "northeurope",
            REGISTRY_ID,
        );
        assert_eq!(b.content_type, "application/json");
        assert_eq!(parse(&b), push_data());
        assert_eq!(
            b.headers,
            [
                ("ce-specversion", "1.0".to_owned()),
                ("ce-id", "9d0a3c55-7e21-4b8f-a6d2-1f0e9c8b7a65".to_owned()),
                ("ce-source", REGISTRY_ID.to_owned()),
                (
                    "ce-type",
                    "Microsoft.ContainerRegistry.ImagePushed".to_owned()
                ),
                ("ce-subject", "payments/ledger:2.7.1".to_owned()),
                ("ce-time", "2026-03-04T08:30:12.4417205Z".to_owned()),
            ]
        );
    }

    #[test]
    fn without_extras_the_data_has_no_actor_or_source_and_the_url_is_http() {
        let v = parse(&render(
            PayloadFormat::CloudEventsBinary,
            push().to_bytes(),
            "northeurope",
            REGISTRY_ID,
        ));
        assert_eq!(
            v["target"]["url"],
            "http://fabrikam.azurecr.io/v2/payments/ledger/manifests/sha256:d4f6"
        );
        assert!(v.get("actor").is_none() && v.get("source").is_none());
        assert!(v["request"].get("addr").is_none());
    }

    #[test]
    fn delete_subject_is_the_repository() {
        let ev = Event::delete(
            "c91e",
            ts("2026-03-04T09:02:47.1184063Z"),
            "payments/ledger",
            "sha256:d4f6",
            "application/vnd.oci.image.manifest.v1+json",
            EventRequest {
                id: "r2".to_owned(),
                host: "h".to_owned(),
                method: "DELETE".to_owned(),
                useragent: None,
            },
        );
        let v = parse(&render(
            PayloadFormat::CloudEvents,
            stored_body(ev.to_bytes(), Some(&extras())),
            "westus",
            REGISTRY_ID,
        ));
        assert_eq!(v["type"], "Microsoft.ContainerRegistry.ImageDeleted");
        assert_eq!(v["subject"], "payments/ledger");
        assert_eq!(
            v["data"]["target"],
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:d4f6", "repository": "payments/ledger",
                "url": "https://h/v2/payments/ledger/manifests/sha256:d4f6"})
        );
        assert_eq!(v["data"]["location"], "westus");
    }

    #[test]
    fn chart_events_use_the_artifact_schema() {
        let ev = Event::chart(
            "23f6",
            ts("2026-03-04T10:45:00.9081234Z"),
            ChartAction::Delete,
            "helm",
            "sha256:67a2",
            "application/vnd.acr.helm.chart",
            18342,
            "ingress-proxy-3.2.0.tgz",
            "ingress-proxy",
            "3.2.0",
        );
        let v = parse(&render(
            PayloadFormat::EventGrid,
            ev.to_bytes(),
            "westus",
            REGISTRY_ID,
        ));
        assert_eq!(
            v[0]["eventType"],
            "Microsoft.ContainerRegistry.ChartDeleted"
        );
        assert_eq!(v[0]["subject"], "ingress-proxy:3.2.0");
        assert_eq!(
            v[0]["data"],
            json!({"id": "23f6", "timestamp": "2026-03-04T10:45:00.9081234Z",
                "action": "chart_delete", "location": "westus",
                "target": {"mediaType": "application/vnd.acr.helm.chart", "size": 18342,
                    "digest": "sha256:67a2", "repository": "helm",
                    "tag": "ingress-proxy-3.2.0.tgz", "name": "ingress-proxy",
                    "version": "3.2.0"}})
        );
    }

    #[test]
    fn ping_has_a_wharf_type_and_no_subject() {
        let ev = Event::ping("p1", ts("2026-03-04T12:00:00Z"));
        let b = render(
            PayloadFormat::CloudEventsBinary,
            ev.to_bytes(),
            "local",
            REGISTRY_ID,
        );
        assert!(b.headers.iter().all(|(k, _)| *k != "ce-subject"));
        assert!(
            b.headers
                .contains(&("ce-type", "Wharf.ContainerRegistry.Ping".to_owned()))
        );
        assert_eq!(
            parse(&b),
            json!({"id": "p1", "timestamp": "2026-03-04T12:00:00.0000000Z",
                "action": "ping", "location": "local"})
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        for f in PayloadFormat::ALL {
            assert_eq!(
                render(f, push().to_bytes(), "x", REGISTRY_ID),
                render(f, push().to_bytes(), "x", REGISTRY_ID)
            );
        }
    }

    #[test]
    fn names_parse_case_insensitively() {
        for f in PayloadFormat::ALL {
            assert_eq!(f.as_str().parse::<PayloadFormat>(), Ok(f));
            assert_eq!(f.as_str().to_uppercase().parse::<PayloadFormat>(), Ok(f));
        }
        assert_eq!("json".parse::<PayloadFormat>(), Err(UnknownPayloadFormat));
    }

    #[test]
    fn header_values_are_percent_encoded() {
        assert_eq!(ce_encode("a b\"c%d:é"), "a%20b%22c%25d:%C3%A9");
    }
}
