//! The chat stream decoder on arbitrary bodies, in the OpenAI format (what providers send) and in
//! the proxy's own format (what the SDK reads from the proxy): the same events for any split,
//! exactly one terminal event and it is last, and the accumulator agrees with it. An OpenAI
//! stream relayed in the proxy's format (as `/api/llm/stream` does) decodes to the same events.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{Split, bytes};
use switchyard_shared::{
    ChatAccumulator, ChatStreamDecoder, ErrorCode, ProviderKind, StreamEvent, WireFormat,
};

fn decode(format: WireFormat, chunks: &[&[u8]]) -> Vec<StreamEvent> {
    let mut decoder = ChatStreamDecoder::new(format, Some("p"));
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(decoder.push(chunk));
    }
    events.extend(decoder.finish());
    assert!(decoder.is_done());
    assert!(
        decoder.push(b"data: [DONE]\n\n").is_empty(),
        "input after the end"
    );
    assert!(decoder.finish().is_empty(), "a second end");
    events
}

fn check_openai_shape(events: &[StreamEvent]) {
    match events {
        [StreamEvent::Error { .. }] => {}
        [StreamEvent::Start { model, .. }, ..] => assert!(model.starts_with("p/"), "{model}"),
        _ => panic!("a stream begins with start or is a lone error: {events:?}"),
    }
    let starts = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Start { .. }))
        .count();
    let usages = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::Usage { .. }))
        .count();
    assert!(starts <= 1 && usages <= 1, "{events:?}");
    let mut indices = HashSet::new();
    for e in events {
        if let StreamEvent::ToolCall { index, call } = e {
            assert!(indices.insert(*index), "call {index} completed twice");
            assert!(!call.id.is_empty(), "a completed call has an id");
        }
    }
    if let Some(StreamEvent::Error { error }) = events.last() {
        assert!(
            matches!(
                error.code,
                ErrorCode::UpstreamError | ErrorCode::StreamInterrupted
            ),
            "{error:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let openai = selector & 1 == 0;
    let format = if openai {
        WireFormat::Provider(ProviderKind::OpenAi)
    } else {
        WireFormat::Switchyard
    };
    let input = Split::read(rest);
    let events = decode(format, &[input.body]);
    assert_eq!(decode(format, &input.chunks()), events);
    if selector & 2 != 0 {
        assert_eq!(decode(format, &bytes(input.body)), events);
    }

    let terminal = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminal, 1, "{events:?}");
    assert!(events.last().is_some_and(StreamEvent::is_terminal));
    if openai {
        check_openai_shape(&events);
        let relayed: String = events.iter().map(StreamEvent::to_sse).collect();
        assert_eq!(
            decode(WireFormat::Switchyard, &[relayed.as_bytes()]),
            events,
            "relayed as {relayed:?}"
        );
    }

    let mut accumulator = ChatAccumulator::new();
    for e in &events {
        accumulator.push(e);
    }
    let result = accumulator.result();
    assert_eq!(accumulator.result(), result, "the result is stable");
    match (events.last(), &result) {
        (Some(StreamEvent::Finish { finish_reason }), Ok(response)) => {
            assert_eq!(response.finish_reason, *finish_reason);
        }
        (Some(StreamEvent::Error { error }), Err(e)) => assert_eq!(e, error),
        (last, result) => panic!("{last:?} gave {result:?}"),
    }
});
