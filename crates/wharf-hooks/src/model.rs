//! The management API's bodies, in ACR's ARM shapes (Webhook, WebhookCreateParameters,
//! WebhookUpdateParameters, EventInfo, Event with eventRequestMessage/eventResponseMessage,
//! CallbackConfig), so an ARM-compatible surface can be added without reshaping anything.

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
}

/// `CallbackConfig`: the only shape that carries the secrets.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackConfig {
    pub service_uri: String,
    pub custom_headers: BTreeMap<String, String>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| wharf_core::format_timestamp(&t))
        .unwrap_or_default()
}

/// The resource id of a webhook: ARM's path with a fixed local subscription, resource group
/// and registry, so ARM clients that parse ids keep working.
pub fn webhook_id(name: &str) -> String {
    format!(
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/wharf/providers/Microsoft.ContainerRegistry/registries/wharf/webhooks/{name}"
    )
}

/// `Webhook`: never carries `serviceUri` or `customHeaders`.
pub fn webhook_json(w: &WebhookRecord) -> Value {
    let actions: Vec<&str> = w.actions.iter().map(|a| a.as_str()).collect();
    json!({
        "id": webhook_id(&w.name),
        "name": w.name,
        "type": "Microsoft.ContainerRegistry/registries/webhooks",
        "location": w.location,
        "tags": w.tags,
        "properties": {
            "status": w.status.as_str(),
            "scope": w.scope,
            "actions": actions,
            "provisioningState": "Succeeded",
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
