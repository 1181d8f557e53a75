//! Reading JSON with as little code per type as serde allows, for the size of the browser's
//! `.wasm`.
//!
//! `serde_json::from_slice::<T>` compiles the whole reader (lexer, escapes, error positions) into
//! the `Deserialize` code of every type it reads, and a type read both from bytes and from a
//! buffer gets a copy for each. [`from_slice`] parses the bytes once into a `Node` tree, with
//! serde_json's parser (one copy, the same syntax and syntax errors), and types read themselves
//! from the tree through a small `Deserializer` whose every method hands the visitor what it asks
//! for and nothing else. Read this way, the SDK's reading code (a third of its `.wasm`) is some
//! 40% smaller. Both modes read upstream answers through this module, so they agree.
//!
//! The tree keeps object members in document order and keeps duplicate keys, so derived code sees
//! the same members in the same order as with `from_slice` and reports the same errors: a
//! missing, unknown or duplicate field, a wrong type. Those errors carry no position (the tree has
//! none); syntax errors keep theirs. A struct written as a JSON array, an undocumented form that
//! serde_json accepts, is refused.
//!
//! Internally tagged enums are the exception to "one copy per type": serde's derived code buffers
//! them and compiles each variant a second time for the buffer. Where the SDK reads such a value
//! from its own bytes (an SSE event's data), `type_tag` reads the tag alone and the caller reads
//! the variant's fields from the same bytes as a plain struct (`fields`), with the same field
//! rules, so the outcome is the derived one's.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Expected, MapAccess, SeqAccess, Unexpected, Visitor,
};
use serde::{Deserialize, Deserializer};
use serde_json::Error;

/// Reads a `T` from JSON text, as `serde_json::from_slice` does, with the differences the module
/// documentation lists.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    T::deserialize(parse(bytes)?)
}

/// A JSON value as parsed: members in document order, duplicates kept. Integers are kept apart
/// from floats as serde_json reports them (non-negative, negative, float), so that numbers reach
/// visitors exactly as from the bytes.
#[derive(Debug)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

/// The one place that instantiates serde_json's parser for the tree.
#[inline(never)]
fn parse(bytes: &[u8]) -> serde_json::Result<Node> {
    serde_json::from_slice(bytes)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any valid JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Node, E> {
                Ok(Node::Bool(b))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Node, E> {
                Ok(Node::U64(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Node, E> {
                Ok(Node::I64(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Node, E> {
                Ok(Node::F64(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Node, E> {
                Ok(Node::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Node, E> {
                Ok(Node::Str(s))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Node::Map(members))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

impl Node {
    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Node::Null => Unexpected::Unit,
            Node::Bool(b) => Unexpected::Bool(*b),
            Node::U64(n) => Unexpected::Unsigned(*n),
            Node::I64(n) => Unexpected::Signed(*n),
            Node::F64(n) => Unexpected::Float(*n),
            Node::Str(s) => Unexpected::Str(s),
            Node::Seq(_) => Unexpected::Seq,
            Node::Map(_) => Unexpected::Map,
        }
    }

    // The error paths take `&dyn Expected` and stay out of line, so that each visitor's copy of
    // a `deserialize_*` method is a match and a call.
    #[inline(never)]
    fn invalid_type(&self, expected: &dyn Expected) -> Error {
        de::Error::invalid_type(self.unexpected(), expected)
    }

    /// An enum's variant name and content: `"name"`, or `{"name": content}`; with the errors of
    /// serde_json's reader, which reads the first member of a map before it sees a second.
    #[inline(never)]
    fn into_variant(self) -> Result<(String, Option<Node>, bool), Error> {
        match self {
            Node::Str(name) => Ok((name, None, false)),
            Node::Map(members) => {
                let more = members.len() > 1;
                match members.into_iter().next() {
                    Some((name, content)) => Ok((name, Some(content), more)),
                    None => Err(de::Error::custom("expected value")),
                }
            }
            _ => Err(de::Error::custom("expected value")),
        }
    }
}

fn visit_seq<'de, V: Visitor<'de>>(items: Vec<Node>, visitor: V) -> Result<V::Value, Error> {
    let mut access = Items(items.into_iter());
    let value = visitor.visit_seq(&mut access)?;
    access.end()?;
    Ok(value)
}

fn visit_map<'de, V: Visitor<'de>>(
    members: Vec<(String, Node)>,
    visitor: V,
) -> Result<V::Value, Error> {
    let mut access = Members(members.into_iter(), None);
    let value = visitor.visit_map(&mut access)?;
    access.end()?;
    Ok(value)
}

struct Items(std::vec::IntoIter<Node>);

impl Items {
    fn end(&self) -> Result<(), Error> {
        match self.0.len() {
            0 => Ok(()),
            _ => Err(de::Error::custom("trailing characters")),
        }
    }
}

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some(item) => seed.deserialize(item).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The members of an object, and the value of the member whose key was read last.
struct Members(std::vec::IntoIter<(String, Node)>, Option<Node>);

impl Members {
    fn end(&self) -> Result<(), Error> {
        match self.0.len() {
            0 => Ok(()),
            _ => Err(de::Error::custom("trailing comma")),
        }
    }
}

impl<'de> MapAccess<'de> for Members {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.0.next() {
            Some((key, value)) => {
                self.1 = Some(value);
                seed.deserialize(Key(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.1.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// An object key, always a string: field and variant names, and the keys of string-keyed maps.
struct Key(String);

impl<'de> Deserializer<'de> for Key {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_string(self.0)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// An enum's variant: its name, and its content unless it was written as a bare string.
struct Variant(String, Option<Node>);

impl<'de> de::EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = Content;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Content), Error> {
        let Variant(name, content) = self;
        seed.deserialize(Key(name)).map(|v| (v, Content(content)))
    }
}

/// What follows a variant's name; the errors are serde_json's.
struct Content(Option<Node>);

impl<'de> de::VariantAccess<'de> for Content {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            Some(content) => <()>::deserialize(content),
            None => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.0 {
            Some(content) => seed.deserialize(content),
            None => Err(unit_variant(&"newtype variant")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Some(content) => content.deserialize_seq(visitor),
            None => Err(unit_variant(&"tuple variant")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Some(content) => content.deserialize_map(visitor),
            None => Err(unit_variant(&"struct variant")),
        }
    }
}

fn unit_variant(expected: &dyn Expected) -> Error {
    de::Error::invalid_type(Unexpected::UnitVariant, expected)
}

impl<'de> Deserializer<'de> for Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(b),
            Node::U64(n) => visitor.visit_u64(n),
            Node::I64(n) => visitor.visit_i64(n),
            Node::F64(n) => visitor.visit_f64(n),
            Node::Str(s) => visitor.visit_string(s),
            Node::Seq(items) => visit_seq(items, visitor),
            Node::Map(members) => visit_map(members, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Bool(b) => visitor.visit_bool(b),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::U64(n) => visitor.visit_u64(n),
            Node::I64(n) => visitor.visit_i64(n),
            Node::F64(n) => visitor.visit_f64(n),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Str(s) => visitor.visit_string(s),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Str(s) => visitor.visit_string(s),
            Node::Seq(items) => visit_seq(items, visitor),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Null => visitor.visit_unit(),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Seq(items) => visit_seq(items, visitor),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self {
            Node::Map(members) => visit_map(members, visitor),
            other => Err(other.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let (name, content, more) = self.into_variant()?;
        let value = visitor.visit_enum(Variant(name, content))?;
        match more {
            false => Ok(value),
            true => Err(de::Error::custom("expected value")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_byte_buf(visitor)
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }
}

/// A JSON value as compact text, as its `Display` writes it; through the serializer every other
/// value goes through, rather than the second copy of it that `Display` brings.
pub(crate) fn text(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The `type` of an internally tagged value; the other fields are skipped. `K` is an enum of the
/// variant names with `#[serde(variant_identifier)]`, so that an unknown, mistyped or missing tag
/// fails as in the derived code. `expecting` names the enum in errors as the derived code does
/// ("internally tagged enum X").
pub(crate) fn type_tag<K: DeserializeOwned>(
    bytes: &[u8],
    expecting: &'static str,
) -> serde_json::Result<K> {
    member(parse(bytes)?, "type", expecting)
}

/// The member `name` of the JSON object in `bytes`, read as `T`; the object's other members are
/// skipped, as by a derived struct with that one field, which `expecting` names in errors.
pub(crate) fn field<T: DeserializeOwned>(
    bytes: &[u8],
    name: &'static str,
    expecting: &'static str,
) -> serde_json::Result<T> {
    member(parse(bytes)?, name, expecting)
}

/// Reads the member `name` of an object as a derived struct with that one field reads it: a bad
/// value is reported before a second occurrence of the member.
fn member<T: DeserializeOwned>(
    node: Node,
    name: &'static str,
    expecting: &'static str,
) -> serde_json::Result<T> {
    let (value, repeated) = find_member(node, name, expecting)?;
    let value = T::deserialize(value)?;
    match repeated {
        false => Ok(value),
        true => Err(de::Error::duplicate_field(name)),
    }
}

/// The first value of the member `name`, and whether the member occurs again.
#[inline(never)]
fn find_member(
    node: Node,
    name: &'static str,
    expecting: &'static str,
) -> serde_json::Result<(Node, bool)> {
    let Node::Map(members) = node else {
        return Err(node.invalid_type(&expecting));
    };
    let mut found = None;
    for (key, value) in members {
        if key != name {
            continue;
        }
        match found {
            Some(first) => return Ok((first, true)),
            None => found = Some(value),
        }
    }
    found
        .map(|value| (value, false))
        .ok_or_else(|| de::Error::missing_field(name))
}

/// The variant's fields, read from the same bytes as a plain struct (its `type` field is not
/// among them and is skipped like any field the variant does not name).
pub(crate) fn fields<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
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

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        count: Option<u32>,
        ratio: f64,
        tags: Vec<String>,
        #[serde(default)]
        kind: Option<Kind>,
        #[serde(default)]
        extra: Option<serde_json::Value>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Plain,
        Named(String),
        Pair(u8, u8),
        Shaped { side: i32 },
    }

    /// `from_slice` and serde_json's own reader agree on the value or the error's text.
    fn same<T>(text: &str)
    where
        T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let theirs = serde_json::from_str::<T>(text).map_err(|e| text_of(&e));
        let ours = super::from_slice::<T>(text.as_bytes()).map_err(|e| text_of(&e));
        assert_eq!(ours, theirs, "{text}");
    }

    #[test]
    fn typed_reads_match_serde_json() {
        let cases = [
            r#"{"name": "a", "ratio": 1, "tags": []}"#,
            r#"{"name": "a", "count": 3, "ratio": -1.5, "tags": ["x", "y"], "kind": "plain"}"#,
            r#"{"tags": [], "ratio": 2e3, "name": "\u00e9\n"}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"named": "n"}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"pair": [1, 2]}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"shaped": {"side": -4}}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"plain": null}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "extra": {"z": [1, {"y": null}], "a": -0.5}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "count": null}"#,
            // Errors: missing, unknown and duplicate fields, wrong types, bad variants.
            r#"{"name": "a", "tags": []}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "colour": 1}"#,
            r#"{"name": "a", "name": "b", "ratio": 1, "tags": []}"#,
            r#"{"name": 1, "ratio": 1, "tags": []}"#,
            r#"{"name": "a", "ratio": "1", "tags": []}"#,
            r#"{"name": "a", "ratio": 1, "tags": [1]}"#,
            r#"{"name": "a", "ratio": 1, "tags": {}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "count": -1}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "count": 4294967296}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "count": 1.5}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": "odd"}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": 3}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"plain": 1}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"named": "n", "plain": null}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"named": 1, "plain": null}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"pair": []}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"pair": [1, 2, 3]}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": "named"}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"pair": 1}}"#,
            r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"shaped": 1}}"#,
            r#"null"#,
            r#"true"#,
            r#""text""#,
            r#"-2"#,
            r#"2.5"#,
            // Syntax errors come from serde_json's parser in both.
            r#"{"name": "a", "ratio": 1, "tags": [],}"#,
            r#"{"name": "a" "ratio": 1}"#,
            r#"{"name": "a", "ratio": 1, "tags": []} x"#,
            r#""#,
            r#"{"name": "\ud800"}"#,
        ];
        for case in cases {
            same::<Sample>(case);
        }
        same::<Vec<Option<u8>>>("[1, null, 3]");
        same::<Vec<Option<u8>>>("[1, null, 300]");
        same::<(u8, String)>(r#"[1, "a"]"#);
        same::<(u8, String)>(r#"[1, "a", 2]"#);
        same::<std::collections::BTreeMap<String, i64>>(r#"{"b": -1, "a": 2, "b": 3}"#);
        same::<serde_json::Value>(r#"{"b": [1, 2.5, -3, "x", true, null], "a": {}}"#);
        same::<char>(r#""é""#);
        same::<()>("null");
    }

    #[test]
    fn a_struct_written_as_an_array_is_refused() {
        let cases = [
            (r#"["a", 1, 1.0, []]"#, "struct Sample"),
            (
                r#"{"name": "a", "ratio": 1, "tags": [], "kind": {"shaped": [1]}}"#,
                "struct variant Kind::Shaped",
            ),
        ];
        for (text, expected) in cases {
            assert!(serde_json::from_str::<Sample>(text).is_ok());
            assert_eq!(
                super::from_slice::<Sample>(text.as_bytes())
                    .unwrap_err()
                    .to_string(),
                format!("invalid type: sequence, expected {expected}")
            );
        }
    }

    #[test]
    fn one_member_is_read_as_a_struct_with_that_field() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Envelope {
            result: u8,
        }
        for text in [
            r#"{"jsonrpc": "2.0", "id": 1, "result": 7}"#,
            r#"{"result": "x"}"#,
            r#"{"id": 1}"#,
            r#"{"result": 1, "result": 2}"#,
            r#"{"result": "x", "result": 2}"#,
            r#"[7]"#,
            r#"7"#,
            r#"{"result": 1"#,
        ] {
            let theirs = serde_json::from_str::<Envelope>(text)
                .map(|e| e.result)
                .map_err(|e| text_of(&e));
            let ours = super::field::<u8>(text.as_bytes(), "result", "struct Envelope")
                .map_err(|e| text_of(&e));
            if text.starts_with('[') {
                assert!(theirs.is_ok() && ours.is_err(), "{text}");
            } else {
                assert_eq!(ours, theirs, "{text}");
            }
        }
    }
}
