//! The management API's bodies, in ACR's ARM shapes (Webhook, WebhookCreateParameters,
//! WebhookUpdateParameters, EventInfo, Event with eventRequestMessage/eventResponseMessage,
//! CallbackConfig), so an ARM-compatible surface can be added without reshaping anything.
//!
//! Wharf's extension: `properties.signing` (`{"enabled": bool}` in create and update; the
//! Webhook adds `previousSecretExpiresAt` while a rotated secret still signs) turns on
//! Standard Webhooks signatures. The secret is the server's: no request can set it, and only
//! CallbackConfig carries it (`signingSecret`), like the service URI.
//!
//! Wharf's other extension: `properties.payloadFormat` (`acr`, the default, `eventgrid`,
//! `cloudevents` or `cloudevents-binary`) chooses the shape of the deliveries; the Webhook
//! always shows it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json, value::RawValue};
use wharf_store::hooks::{HistoryEntry, WebhookRecord};

/// `WebhookCreateParameters`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookCreate {
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: Option<WebhookProps>,
}

/// `WebhookUpdateParameters` (`location` is refused: it is fixed after creation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdate {
    pub location: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub properties: Option<WebhookProps>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookProps {
    pub service_uri: Option<String>,
    pub custom_headers: Option<BTreeMap<String, String>>,
    pub status: Option<String>,
    pub scope: Option<String>,
    pub actions: Option<Vec<String>>,
    /// Wharf's extension: Standard Webhooks signing.
    pub signing: Option<SigningProps>,
    /// Wharf's extension: the delivery format (absent: ACR's on create, unchanged on update).
    pub payload_format: Option<String>,
}

/// `properties.signing` of create and update: only whether to sign (absent: unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningProps {
    pub enabled: Option<bool>,
}

/// The body of Wharf's rotateSigningSecret action.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSigningSecret {
    /// How long the replaced secret keeps signing beside the new one (default a day).
    pub grace_period_seconds: Option<u64>,
}

/// `CallbackConfig`: the only shape that carries the secrets. Wharf adds `signingSecret`
/// (the current secret) while the webhook signs.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackConfig {
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

// Everything here is secret; a `{:?}` of it in a log line must show none of it.
impl std::fmt::Debug for CallbackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackConfig")
            .field("service_uri", &"******")
            .field(
                "custom_headers",
                &self.custom_headers.keys().collect::<Vec<_>>(),
            )
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "******"),
            )
            .finish()
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| wharf_core::format_timestamp(&t))
        .unwrap_or_default()
}

/// `Webhook`: never carries `serviceUri`, `customHeaders` or a signing secret. Its `id` is
/// under the registry's (`arm`).
pub fn webhook_json(arm: &wharf_core::ArmIdentity, w: &WebhookRecord) -> Value {
    let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
    let mut signing = json!({ "enabled": w.signing.enabled });
    if let Some(until) = w
        .signing
        .previous_until(chrono::Utc::now().timestamp_millis())
        .filter(|_| w.signing.enabled)
    {
        signing["previousSecretExpiresAt"] = json!(rfc3339(until));
    }
    json!({
        "id": arm.child_id("webhooks", &w.name),
        "name": w.name,
        "type": "Microsoft.ContainerRegistry/registries/webhooks",
        "location": w.location,
        "tags": w.tags,
        "properties": {
            "status": w.status.as_str(),
            "scope": w.scope,
            "actions": actions,
            "provisioningState": "Succeeded",
            "signing": signing,
            "payloadFormat": w.payload_format.as_str(),
        },
        "systemData": {
            "createdAt": rfc3339(w.created_at),
            "lastModifiedAt": rfc3339(w.updated_at),
        },
    })
}

/// `Event` (a list-events entry): the request as sent, with secrets masked, and the response.
/// Wharf adds the attempt number, the delivery outcome, the attempt's start and duration, and
/// an error text when no response came.
pub fn event_json(h: &HistoryEntry) -> Value {
    let a = &h.attempt;
    // The event content is embedded as the exact bytes that were sent.
    let content: Value = match RawValue::from_string(String::from_utf8_lossy(&h.body).into_owned())
    {
        Ok(raw) => serde_json::to_value(raw).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let response = match a.status_code {
        Some(code) => json!({
            "content": a.response_body.clone().unwrap_or_default(),
            "headers": a.response_headers,
            "reasonPhrase": a.reason.clone().unwrap_or_default(),
            "statusCode": code.to_string(),
            "version": "1.1",
        }),
        None => {
            json!({ "content": "", "headers": {}, "reasonPhrase": "", "statusCode": "", "version": "1.1" })
        }
    };
    json!({
        "id": a.event_id,
        "eventRequestMessage": {
            "content": content,
            "headers": a.request_headers,
            "method": "POST",
            "requestUri": a.request_uri,
            "version": "1.1",
        },
        "eventResponseMessage": response,
        "attempt": a.attempt,
        "deliveryState": h.outcome,
        "timestamp": rfc3339(a.started_at),
        "durationMs": a.duration_ms,
        "error": a.error,
        "action": h.action,
    })
}

/// Checks a management request body's JSON types before it is deserialised, so a wrong type
/// gets a message naming the field (`properties.actions: must be an array of strings`) and
/// never echoes the value: serde's own messages quote offending strings, and a string sent
/// where `customHeaders` belongs may well be a secret.
///
/// `allowed` lists the top-level properties; `properties` (when allowed) is checked against
/// the webhook property types. Unknown properties are refused, as `deny_unknown_fields` would.
pub fn check_body(v: &Value, allowed: &[(&str, JsonType)]) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err("request body: must be a JSON object".to_owned());
    };
    for (k, val) in obj {
        let Some((_, ty)) = allowed.iter().find(|(name, _)| name == k) else {
            let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{k}: unknown property, expected one of {}",
                names.join(", ")
            ));
        };
        ty.check(k, val)?;
        if let (JsonType::Object(fields), false) = (ty, val.is_null()) {
            // The value is an object (checked just above), so the error names a field.
            check_body(val, fields).map_err(|e| format!("{k}.{e}"))?;
        }
    }
    Ok(())
}

/// The JSON type a management body field must have (`null` is accepted for all: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    String,
    StringMap,
    StringArray,
    Bool,
    /// A whole number from 0 to 2^64-1.
    Count,
    /// An object with these fields (each optional).
    Object(&'static [(&'static str, JsonType)]),
}

impl JsonType {
    fn check(self, field: &str, v: &Value) -> Result<(), String> {
        let ok = match (self, v) {
            (_, Value::Null) => true,
            (JsonType::String, Value::String(_)) => true,
            (JsonType::StringMap, Value::Object(m)) => m.values().all(Value::is_string),
            (JsonType::StringArray, Value::Array(a)) => a.iter().all(Value::is_string),
            (JsonType::Bool, Value::Bool(_)) => true,
            (JsonType::Count, Value::Number(n)) => n.is_u64(),
            (JsonType::Object(_), Value::Object(_)) => true,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let rule = match self {
            JsonType::String => "must be a string",
            JsonType::StringMap => "must be an object whose values are strings",
            JsonType::StringArray => "must be an array of strings",
            JsonType::Bool => "must be true or false",
            JsonType::Count => "must be a whole number, at least 0",
            JsonType::Object(_) => "must be an object",
        };
        Err(format!("{field}: {rule}"))
    }
}

/// Top-level fields of `WebhookCreateParameters` and `WebhookUpdateParameters` (the latter's
/// `location` is accepted here so that changing it gets its own clear error).
pub const WEBHOOK_PARAMETERS: &[(&str, JsonType)] = &[
    ("location", JsonType::String),
    ("tags", JsonType::StringMap),
    ("properties", JsonType::Object(PROPERTIES)),
];

const PROPERTIES: &[(&str, JsonType)] = &[
    ("serviceUri", JsonType::String),
    ("customHeaders", JsonType::StringMap),
    ("status", JsonType::String),
    ("scope", JsonType::String),
    ("actions", JsonType::StringArray),
    ("signing", JsonType::Object(SIGNING)),
    ("payloadFormat", JsonType::String),
];

/// Only `enabled`: the secret is generated by the server, never accepted from a client.
const SIGNING: &[(&str, JsonType)] = &[("enabled", JsonType::Bool)];

/// The body of Wharf's redeliver action.
pub const REDELIVER_PARAMETERS: &[(&str, JsonType)] = &[("eventId", JsonType::String)];

/// The body of Wharf's rotateSigningSecret action.
pub const ROTATE_PARAMETERS: &[(&str, JsonType)] = &[("gracePeriodSeconds", JsonType::Count)];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_check_names_the_field_and_hides_the_value() {
        let cases = [
            (json!([1]), "request body: must be a JSON object"),
            (
                json!({"tags": "x"}),
                "tags: must be an object whose values are strings",
            ),
            (
                json!({"nope": 1}),
                "nope: unknown property, expected one of location, tags, properties",
            ),
            (
                json!({"properties": {"customHeaders": "Bearer s3cret"}}),
                "properties.customHeaders: must be an object whose values are strings",
            ),
            (
                json!({"properties": {"customHeaders": {"A": 1}}}),
                "properties.customHeaders: must be an object whose values are strings",
            ),
            (
                json!({"properties": {"actions": "push"}}),
                "properties.actions: must be an array of strings",
            ),
            (
                json!({"properties": {"serviceUri": 1}}),
                "properties.serviceUri: must be a string",
            ),
            (json!({"properties": []}), "properties: must be an object"),
            (
                json!({"properties": {"x": 1}}),
                "properties.x: unknown property, expected one of serviceUri, customHeaders, status, scope, actions, signing, payloadFormat",
            ),
            (
                json!({"properties": {"payloadFormat": 1}}),
                "properties.payloadFormat: must be a string",
            ),
            (
                json!({"properties": {"signing": true}}),
                "properties.signing: must be an object",
            ),
            (
                json!({"properties": {"signing": {"enabled": "yes"}}}),
                "properties.signing.enabled: must be true or false",
            ),
            (
                json!({"properties": {"signing": {"secret": "whsec_bXktb3du"}}}),
                "properties.signing.secret: unknown property, expected one of enabled",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(
                check_body(&v, WEBHOOK_PARAMETERS),
                Err(want.to_owned()),
                "{v}"
            );
        }
        let ok = json!({"location": null, "tags": {"a": "b"}, "properties": {"serviceUri": "http://x",
            "customHeaders": {}, "status": "enabled", "scope": "", "actions": ["push"],
            "signing": {"enabled": true}}});
        assert_eq!(check_body(&ok, WEBHOOK_PARAMETERS), Ok(()));
        for (v, want) in [
            (
                json!({"gracePeriodSeconds": -1}),
                Err("gracePeriodSeconds: must be a whole number, at least 0".to_owned()),
            ),
            (
                json!({"gracePeriodSeconds": 1.5}),
                Err("gracePeriodSeconds: must be a whole number, at least 0".to_owned()),
            ),
            (
                json!({"gracePeriodSeconds": "60"}),
                Err("gracePeriodSeconds: must be a whole number, at least 0".to_owned()),
            ),
            (json!({"gracePeriodSeconds": 60}), Ok(())),
            (json!({}), Ok(())),
        ] {
            assert_eq!(check_body(&v, ROTATE_PARAMETERS), want, "{v}");
        }
    }
}
