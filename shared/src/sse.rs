//! Server-Sent Events framing: an incremental decoder (bytes in, events out) and an encoder.
//!
//! The decoder follows the WHATWG "event stream interpretation" rules: LF, CRLF and lone CR end a
//! line; a blank line dispatches; `:` starts a comment; `data` lines are joined with `\n`. It keeps
//! partial lines between calls, so any split of a byte stream yields the same events.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if one was given (the spec's default type is "message").
    pub event: Option<String>,
    /// The joined `data:` lines.
    pub data: String,
    /// The `id:` field of this event, if any.
    pub id: Option<String>,
}

/// Incremental SSE decoder.
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the line being read; decoded only once complete, so a UTF-8 sequence split across
    /// chunks is never mangled.
    line: Vec<u8>,
    /// The previous chunk ended in CR: an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// Whether the first line has been seen (a leading BOM is dropped).
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events they complete, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.push_with(chunk, |e| events.push(e));
        events
    }

    /// Feeds bytes and calls `emit` for each event they complete; avoids a `Vec` per chunk.
    pub fn push_with(&mut self, chunk: &[u8], mut emit: impl FnMut(SseEvent)) {
        let mut rest = chunk;
        // An empty chunk must not clear `after_cr`: the LF of a split CRLF may still come.
        if rest.is_empty() {
            return;
        }
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let was_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if was_cr {
                match rest {
                    [b'\n', tail @ ..] => rest = tail,
                    [] => self.after_cr = true,
                    _ => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.process_line(&line) {
                emit(event);
            }
            // Reuse the allocation for the next line.
            self.line = line;
            self.line.clear();
        }
        self.line.extend_from_slice(rest);
    }

    /// Whether bytes of an unfinished event are buffered (the stream was cut mid-event if it ends now).
    pub fn has_partial_event(&self) -> bool {
        !self.line.is_empty() || self.has_data || self.event.is_some()
    }

    fn process_line(&mut self, raw: &[u8]) -> Option<SseEvent> {
        let mut line = raw;
        if !self.started {
            self.started = true;
            if let [0xEF, 0xBB, 0xBF, tail @ ..] = line {
                line = tail;
            }
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            // `retry` and unknown fields do not affect which events are produced.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let id = self.id.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id,
        })
    }
}

/// Writes one event carrying `data` (which may span lines) in SSE framing; `event` is one line.
///
/// A decoder ends a line at CR, LF or CRLF alike, so each of them in `data` starts a new `data:`
/// line and comes back as LF: a CR left inside a line would end it there and lose the rest.
pub fn encode(event: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    if let Some(name) = event {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<SseEvent> {
        SseDecoder::new().push(bytes)
    }

    fn ev(data: &str) -> SseEvent {
        SseEvent {
            data: data.into(),
            ..Default::default()
        }
    }

    #[test]
    fn lf_crlf_and_cr_all_end_lines() {
        for sep in ["\n", "\r\n", "\r"] {
            let text = format!("data: a{sep}{sep}data: b{sep}{sep}");
            assert_eq!(
                decode_all(text.as_bytes()),
                vec![ev("a"), ev("b")],
                "{sep:?}"
            );
        }
    }

    #[test]
    fn comments_fields_and_multiline_data() {
        let text =
            ": keep-alive\nevent: delta\nid: 7\ndata: one\ndata:two\nretry: 10\nfoo: bar\n\n";
        assert_eq!(
            decode_all(text.as_bytes()),
            vec![SseEvent {
                event: Some("delta".into()),
                data: "one\ntwo".into(),
                id: Some("7".into())
            }]
        );
    }

    #[test]
    fn blank_blocks_and_unterminated_events_dispatch_nothing() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"event: x\n\n\n").is_empty());
        assert!(d.push(b"data: [DONE]").is_empty());
        assert!(d.has_partial_event());
    }

    #[test]
    fn an_empty_chunk_inside_a_crlf_changes_nothing() {
        let mut d = SseDecoder::new();
        assert!(d.push(b"data: a\r").is_empty());
        assert!(d.push(b"").is_empty());
        assert_eq!(d.push(b"\ndata: b\r\n\r\n"), vec![ev("a\nb")]);
        let mut whole = SseDecoder::new();
        assert_eq!(whole.push(b"data: a\r\ndata: b\r\n\r\n"), vec![ev("a\nb")]);
    }

    #[test]
    fn leading_bom_is_ignored() {
        assert_eq!(decode_all(b"\xEF\xBB\xBFdata: x\n\n"), vec![ev("x")]);
    }

    #[test]
    fn a_field_with_no_colon_has_an_empty_value() {
        assert_eq!(decode_all(b"data\n\n"), vec![ev("")]);
    }

    #[test]
    fn utf8_split_across_chunks_survives() {
        let bytes = "data: héllo wörld\n\n".as_bytes();
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for b in bytes {
            out.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, vec![ev("héllo wörld")]);
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let text = encode(Some("e"), "line1\nline2");
        assert_eq!(text, "event: e\ndata: line1\ndata: line2\n\n");
        assert_eq!(
            decode_all(text.as_bytes()),
            vec![SseEvent {
                event: Some("e".into()),
                data: "line1\nline2".into(),
                id: None
            }]
        );
    }

    #[test]
    fn every_line_break_in_encoded_data_survives_as_lf() {
        // Found by the `sse_split` fuzz target: a lone CR used to cut the data short.
        for (data, expected) in [
            (" \rJ", " \nJ"),
            ("a\r\nb", "a\nb"),
            ("a\r\r\nb\n", "a\n\nb\n"),
        ] {
            assert_eq!(
                decode_all(encode(None, data).as_bytes()),
                vec![ev(expected)]
            );
        }
    }

    /// Properties over generated streams (proptest builds natively only).
    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn arb_event() -> impl Strategy<Value = (Option<String>, Vec<String>)> {
            (
                proptest::option::of("[a-z]{1,8}"),
                proptest::collection::vec("[^\r\n]{0,20}", 1..4),
            )
        }

        proptest! {
            /// Any split of any valid byte stream, with any line-ending style, gives the same events.
            #[test]
            fn any_split_gives_the_same_events(
                events in proptest::collection::vec(arb_event(), 0..8),
                endings in proptest::collection::vec(0usize..3, 1..64),
                comments in proptest::collection::vec(any::<bool>(), 1..16),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
            ) {
                let mut text = String::new();
                let mut expected = Vec::new();
                let mut n = 0usize;
                let mut prev_cr = false;
                // A lone CR followed by a lone LF is one CRLF to any SSE parser, so never emit that pair.
                let mut eol = || {
                    n += 1;
                    let mut e = ["\n", "\r\n", "\r"][endings[n % endings.len()]];
                    if prev_cr && e == "\n" {
                        e = "\r";
                    }
                    prev_cr = e == "\r";
                    e
                };
                for (i, (name, lines)) in events.iter().enumerate() {
                    if comments[i % comments.len()] {
                        text.push_str(": comment");
                        text.push_str(eol());
                    }
                    if let Some(name) = name {
                        text.push_str("event: ");
                        text.push_str(name);
                        text.push_str(eol());
                    }
                    for line in lines {
                        text.push_str("data: ");
                        text.push_str(line);
                        text.push_str(eol());
                    }
                    text.push_str(eol());
                    // A value's first space after the colon is framing; any others belong to the data.
                    expected.push(SseEvent { event: name.clone(), data: lines.join("\n"), id: None });
                }
                let bytes = text.as_bytes();
                let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                points.sort_unstable();
                let mut decoder = SseDecoder::new();
                let mut got = Vec::new();
                let mut start = 0;
                for p in points.into_iter().chain([bytes.len()]) {
                    got.extend(decoder.push(&bytes[start..p]));
                    start = p;
                }
                prop_assert_eq!(&got, &expected);
                prop_assert_eq!(decode_all(bytes), expected);
            }
        }
    }
}
