//! The SSE decoder: any split of any byte stream gives the same events as the stream in one
//! piece, and what the encoder writes the decoder reads back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{Split, bytes};
use switchyard_shared::sse::{SseDecoder, SseEvent, encode};

fn decode(chunks: &[&[u8]]) -> (Vec<SseEvent>, bool) {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(decoder.push(chunk));
    }
    (events, decoder.has_partial_event())
}

fuzz_target!(|data: &[u8]| {
    let input = Split::read(data);
    let whole = decode(&[input.body]);
    assert_eq!(
        decode(&input.chunks()),
        whole,
        "split into {:?}",
        input.lengths
    );
    assert_eq!(decode(&bytes(input.body)), whole, "split into bytes");

    // SSE cannot carry a CR inside a line: CR, LF and CRLF all end one, so all come back as LF.
    let text = String::from_utf8_lossy(input.body);
    let expected = SseEvent {
        event: Some("e".into()),
        data: text.replace("\r\n", "\n").replace('\r', "\n"),
        id: None,
    };
    let framed = encode(Some("e"), &text);
    assert_eq!(
        decode(&[framed.as_bytes()]),
        (vec![expected], false),
        "{framed:?}"
    );
});
