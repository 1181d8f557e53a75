//! Reading internally tagged JSON without serde's buffering, for the size of the browser's
//! `.wasm`.
//!
//! serde's derived `Deserialize` for an enum with `#[serde(tag = "type")]` first buffers the whole
//! value, then reads the variant's fields from that buffer: every field type is compiled a second
//! time, for the buffer, which made these few enums one of the largest parts of the SDK. Where
//! the SDK reads such a value from its own bytes (an SSE event's data), [`type_tag`] reads the tag
//! alone and the caller reads the variant's fields from the same bytes as a plain struct, with
//! the same field rules, so the outcome is the derived one's.

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A JSON value as compact text, as its `Display` writes it; through the serializer every other
/// value goes through, rather than the second copy of it that `Display` brings.
pub(crate) fn text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The `type` of an internally tagged value; the other fields are skipped. `K` is an enum of the
/// variant names with `#[serde(variant_identifier)]`, so that an unknown, mistyped or missing tag
/// fails as in the derived code. Only serde's undocumented forms are not accepted: the value
/// written as an array, or the tag given as its variant number.
/// `expecting` names the enum in errors as the derived code does ("internally tagged enum X").
pub(crate) fn type_tag<K: DeserializeOwned>(
    bytes: &[u8],
    expecting: &'static str,
) -> serde_json::Result<K> {
    struct Tag<K>(&'static str, PhantomData<K>);
    impl<'de, K: Deserialize<'de>> Visitor<'de> for Tag<K> {
        type Value = K;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<K, A::Error> {
            let mut kind = None;
            while let Some(key) = map.next_key::<Cow<'_, str>>()? {
                if key != "type" {
                    map.next_value::<IgnoredAny>()?;
                } else if kind.is_some() {
                    return Err(de::Error::duplicate_field("type"));
                } else {
                    kind = Some(map.next_value()?);
                }
            }
            kind.ok_or_else(|| de::Error::missing_field("type"))
        }
    }
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let kind = reader.deserialize_map(Tag(expecting, PhantomData))?;
    reader.end()?;
    Ok(kind)
}

/// The variant's fields, read from the same bytes as a plain struct (its `type` field is not
/// among them and is skipped like any field the variant does not name).
pub(crate) fn fields<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    serde_json::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::mcp::McpToolEvent;
    use crate::stream::StreamEvent;

    /// An error's text without serde_json's position, which the two readers may place apart.
    fn text_of(e: &serde_json::Error) -> String {
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        full.strip_suffix(&position).unwrap_or(&full).to_owned()
    }

    #[test]
    fn serdes_undocumented_forms_are_refused() {
        for event in [
            json!(["text_delta", "hi"]),
            json!([]),
            json!({"type": 1, "text": "hi"}),
        ] {
            assert!(StreamEvent::from_json(event.to_string().as_bytes()).is_err());
        }
        assert!(McpToolEvent::from_json(b"[\"progress\", 1]").is_err());
    }

    /// `from_json` and the derived reader agree on the value or the error's text.
    fn same_event<T>(text: &str, from_json: fn(&[u8]) -> serde_json::Result<T>)
    where
        T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let derived = serde_json::from_str::<T>(text).map_err(|e| text_of(&e));
        let ours = from_json(text.as_bytes()).map_err(|e| text_of(&e));
        assert_eq!(ours, derived, "{text}");
    }

    #[test]
    fn stream_events_read_by_tag_match_the_derived_reader() {
        let cases = [
            json!({"type": "start", "id": "r1", "model": "p/m"}),
            json!({"id": "r1", "model": "p/m", "type": "start", "extra": [1]}),
            json!({"type": "text_delta", "text": "Hi"}),
            json!({"type": "tool_call_delta", "index": 0, "arguments": "{\"a"}),
            json!({"type": "tool_call_delta", "index": 1, "id": "c", "name": "f",
                   "arguments": ""}),
            json!({"type": "tool_call", "index": 0,
                   "call": {"id": "c", "name": "f", "arguments": "{}"}}),
            json!({"type": "usage", "usage": {"prompt_tokens": 1, "completion_tokens": 2,
                   "total_tokens": 3}}),
            json!({"type": "finish", "finish_reason": "tool_calls"}),
            json!({"type": "finish", "finish_reason": "something_new"}),
            json!({"type": "error", "error": {"code": "rate_limited", "message": "slow",
                   "retryable": true, "retry_after": 3}}),
            json!({"type": "text_delta"}),
            json!({"type": "text_delta", "text": 5}),
            json!({"type": "teleport"}),
            json!({"text": "no tag"}),
            json!({"type": 3}),
            json!({"type": "tool_call", "index": 0,
                   "call": {"id": "c", "name": "f", "arguments": "{}", "x": 1}}),
            json!({"type": "error", "error": {"code": "nope", "message": "m",
                   "retryable": false}}),
            json!("text_delta"),
            json!(null),
        ];
        for case in &cases {
            same_event(&case.to_string(), StreamEvent::from_json);
        }
        same_event("{\"type\": \"text_delta\", ", StreamEvent::from_json);
    }

    #[test]
    fn tool_events_read_by_tag_match_the_derived_reader() {
        let cases = [
            json!({"type": "progress", "progress": 1}),
            json!({"type": "progress", "progress": 1.5, "total": 3, "message": "m"}),
            json!({"type": "result", "result": {"content": [{"type": "text", "text": "ok"}],
                   "isError": false}}),
            json!({"type": "result", "result": {"content": [{"type": "image",
                   "data": "AA==", "mimeType": "image/png"}], "structuredContent": {"a": 1}}}),
            json!({"type": "error", "error": {"code": "not_found", "message": "m",
                   "retryable": false}}),
            json!({"type": "progress"}),
            json!({"type": "progress", "progress": "x"}),
            json!({"type": "result"}),
            json!({"type": "result", "result": {"content": [{"type": "video"}]}}),
            json!({"type": "done"}),
            json!({}),
            json!(7),
        ];
        for case in &cases {
            same_event(&case.to_string(), McpToolEvent::from_json);
        }
    }

    #[test]
    fn value_text_is_its_display() {
        for v in [
            json!({"b": [1, 2.5, null], "a": "x\"y"}),
            json!("é"),
            json!(-3),
        ] {
            assert_eq!(super::text(&v), v.to_string());
        }
    }
}
