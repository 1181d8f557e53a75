//! The HTTP headers of MCP's Streamable HTTP transport, and how `Mcp-Name` values are written.
//!
//! The names are those of `rmcp::transport::common::http_header`. rmcp compiles that module only
//! with its client or server features, which bring tokio, so the model-only build that `shared`
//! uses cannot import them. They are lowercase here because [`crate::HttpRequest`] carries
//! lowercase header names (HTTP header names are case-insensitive).

/// The session a server assigned in its answer to `initialize` (session-based revisions).
pub const SESSION_ID: &str = "mcp-session-id";
/// The negotiated protocol version, on every request after `initialize` (and on every request
/// of the stateless revision, where it must equal the version in `_meta`).
pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
/// The JSON-RPC method, on every request of the stateless revision (SEP-2243).
pub const METHOD: &str = "mcp-method";
/// The tool or prompt name or the resource URI, on `tools/call`, `prompts/get` and
/// `resources/read` of the stateless revision (SEP-2243).
pub const NAME: &str = "mcp-name";

/// What a client accepts in answer to a POST: one JSON-RPC response or an event stream.
pub(crate) const ACCEPT_JSON_AND_SSE: &str = "application/json, text/event-stream";

/// Headers the client writes itself; a caller-supplied value would break the protocol.
pub(crate) const RESERVED: &[&str] = &[
    "accept",
    "content-type",
    "last-event-id",
    SESSION_ID,
    PROTOCOL_VERSION,
    METHOD,
    NAME,
];

const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Writes a value for a SEP-2243 header such as `Mcp-Name`.
///
/// Values that would not survive as an HTTP header value (leading or trailing space or tab,
/// control or non-ASCII characters), and values that already look like the sentinel, are sent as
/// `=?base64?<standard base64 of the UTF-8 bytes>?=`; everything else is sent as it is. Same rule
/// as rmcp's `encode_header_value`.
pub fn encode_header_value(value: &str) -> String {
    if requires_base64(value) {
        format!(
            "{BASE64_PREFIX}{}{BASE64_SUFFIX}",
            base64_standard(value.as_bytes())
        )
    } else {
        value.to_owned()
    }
}

fn requires_base64(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    matches!(first, b' ' | b'\t')
        || matches!(last, b' ' | b'\t')
        || bytes.iter().any(|&b| !(0x20..=0x7E).contains(&b))
        || (value.starts_with(BASE64_PREFIX) && value.ends_with(BASE64_SUFFIX))
}

/// RFC 4648 base64 with padding. Written out because `shared` has no base64 dependency and
/// needs nothing else from one.
fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Finds a header by name, ignoring ASCII case.
pub(crate) fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64_standard(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn header_values_are_wrapped_only_when_needed() {
        let cases = [
            ("echo", "echo"),
            ("file:///tmp/a b.txt", "file:///tmp/a b.txt"),
            ("", ""),
            ("héllo", "=?base64?aMOpbGxv?="),
            (" padded", "=?base64?IHBhZGRlZA==?="),
            ("tab\t", "=?base64?dGFiCQ==?="),
            ("line\nbreak", "=?base64?bGluZQpicmVhaw==?="),
            ("=?base64?abc?=", "=?base64?PT9iYXNlNjQ/YWJjPz0=?="),
        ];
        for (value, sent) in cases {
            assert_eq!(encode_header_value(value), sent, "{value:?}");
        }
    }

    #[test]
    fn header_lookup_ignores_case() {
        let headers = vec![("Mcp-Session-Id".to_owned(), "abc".to_owned())];
        assert_eq!(find(&headers, SESSION_ID), Some("abc"));
        assert_eq!(find(&headers, "content-type"), None);
    }
}
