//! The JSON-RPC envelope as the HTTP client writes and reads it.
//!
//! Why not `rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage}`: those are enums over every
//! request, result and notification MCP defines, and deserializing one pulls all of their
//! `Deserialize` code into the browser's `.wasm`. The client knows which result each request
//! expects, so it reads the envelope generically ([`Incoming`]: id, method, error, and only the
//! `resultType` of a result) and then deserializes just that result type from the same bytes
//! ([`result_of`]). Params are still written with rmcp's param types.

use rmcp::model::JsonObject;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message from the server, read just far enough to route it.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming {
    /// A number or a string for requests and responses; absent for notifications; `null` in
    /// errors about requests the server could not read.
    #[serde(default)]
    pub id: Option<Value>,
    /// Present on server requests and notifications.
    #[serde(default)]
    pub method: Option<String>,
    /// The result, without its content (read later with [`result_of`]).
    #[serde(default)]
    pub result: Option<ResultHead>,
    #[serde(default)]
    pub error: Option<RpcError>,
}

/// The part of every result the client looks at before deserializing it.
#[derive(Debug, Deserialize)]
pub(crate) struct ResultHead {
    /// Since 2026-07-28: `complete`, `input_required` (the server wants the client to answer
    /// questions and retry) or an extension's type. Absent means `complete`.
    #[serde(rename = "resultType", default)]
    pub result_type: Option<String>,
}

/// A JSON-RPC error object. Lenient where `rmcp::model::ErrorData` is strict (a missing message
/// is accepted), since the client only maps it into the taxonomy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct RpcError {
    pub code: i64,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub data: Option<Value>,
}

impl RpcError {
    /// The JSON-RPC code as rmcp and `error_from_jsonrpc` type it (an out-of-range code from a
    /// broken server becomes -32603, internal error).
    pub fn code_i32(&self) -> i32 {
        i32::try_from(self.code).unwrap_or(-32603)
    }
}

/// Reads the `result` of a response message as `T`.
pub(crate) fn result_of<T: DeserializeOwned>(message: &[u8]) -> Result<T, serde_json::Error> {
    crate::json::field(message, "result", "struct Envelope")
}

/// Whether a message's `id` is the one the client sent (a string holding the same number is
/// accepted, as some servers echo ids that way).
pub(crate) fn id_matches(id: &Value, expected: i64) -> bool {
    match id {
        Value::Number(n) => n.as_i64() == Some(expected),
        Value::String(s) => s.parse::<i64>().ok() == Some(expected),
        _ => false,
    }
}

#[derive(Serialize)]
struct OutgoingRequest<'a> {
    jsonrpc: &'static str,
    id: i64,
    method: &'a str,
    params: &'a JsonObject,
}

#[derive(Serialize)]
struct OutgoingNotification<'a> {
    jsonrpc: &'static str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a JsonObject>,
}

/// The body of a request.
pub(crate) fn request_body(id: i64, method: &str, params: &JsonObject) -> String {
    // A map of JSON values always serializes.
    serde_json::to_string(&OutgoingRequest {
        jsonrpc: "2.0",
        id,
        method,
        params,
    })
    .unwrap_or_default()
}

/// The body of a notification.
pub(crate) fn notification_body(method: &str, params: Option<&JsonObject>) -> String {
    serde_json::to_string(&OutgoingNotification {
        jsonrpc: "2.0",
        method,
        params,
    })
    .unwrap_or_default()
}

/// Serializes rmcp params (plain data) into the JSON object that becomes `params`.
pub(crate) fn to_object<P: Serialize>(params: &P) -> JsonObject {
    match serde_json::to_value(params) {
        Ok(Value::Object(map)) => map,
        // rmcp's params types are structs: they always serialize to objects.
        _ => JsonObject::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn incoming_messages_are_classified_without_reading_results() {
        let m: Incoming = serde_json::from_value(json!({
            "jsonrpc": "2.0", "id": 3,
            "result": {"resultType": "input_required", "inputRequests": {"a": {}}}
        }))
        .unwrap();
        assert_eq!(m.id, Some(json!(3)));
        assert_eq!(
            m.result.unwrap().result_type.as_deref(),
            Some("input_required")
        );

        let m: Incoming = serde_json::from_value(json!({
            "jsonrpc": "2.0", "id": null, "error": {"code": -32700}
        }))
        .unwrap();
        assert_eq!((m.id, m.error.unwrap().code), (None, -32700));

        let m: Incoming = serde_json::from_value(json!({
            "jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}
        }))
        .unwrap();
        assert_eq!(m.method.as_deref(), Some("notifications/progress"));
    }

    #[test]
    fn ids_match_as_numbers_or_numeric_strings() {
        assert!(id_matches(&json!(7), 7));
        assert!(id_matches(&json!("7"), 7));
        assert!(!id_matches(&json!(8), 7));
        assert!(!id_matches(&json!("x7"), 7));
        assert!(!id_matches(&json!(7.5), 7));
    }

    #[test]
    fn bodies_have_the_json_rpc_shape() {
        let mut params = JsonObject::new();
        params.insert("cursor".into(), json!("c1"));
        let body: Value = serde_json::from_str(&request_body(4, "tools/list", &params)).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"cursor": "c1"}})
        );
        let body: Value =
            serde_json::from_str(&notification_body("notifications/initialized", None)).unwrap();
        assert_eq!(
            body,
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        );
    }

    #[test]
    fn results_are_read_from_the_message_bytes() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"nextCursor":"n"}}"#;
        let r: rmcp::model::ListToolsResult = result_of(msg).unwrap();
        assert_eq!(r.next_cursor.as_deref(), Some("n"));
    }
}
