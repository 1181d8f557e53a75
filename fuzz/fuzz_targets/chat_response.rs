//! Non-streamed chat answers, successful or not, from a provider (OpenAI format) and from the
//! proxy: no panic, a failure always has the code its status calls for, and a provider's answer
//! to a rejected key never reaches the caller (its message may echo the key).

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_shared::{
    ApiError, ChatRequest, ErrorCode, Message, PreparedRequest, ProviderEndpoint, ProviderKind,
    RouteTable,
};

const RETRY_AFTER: [Option<&str>; 7] = [
    None,
    Some("7"),
    Some("1.5"),
    Some("-1"),
    Some("NaN"),
    Some("1e400"),
    Some("99999999999999999999"),
];

fn prepared(openai: bool) -> PreparedRequest {
    let table = if openai {
        RouteTable::direct(vec![ProviderEndpoint {
            name: "p".into(),
            kind: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: Some("sk-fuzz-key".into()),
        }])
    } else {
        RouteTable::proxy("http://127.0.0.1:9", Some("sk-fuzz-key".into()))
    };
    let request = ChatRequest {
        model: "p/m".into(),
        messages: vec![Message::user("hi")],
        ..Default::default()
    };
    table.unwrap().chat(&request, false).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, body @ ..] = data else {
        return;
    };
    let openai = c & 0x80 == 0;
    let status = 100 + u16::from_le_bytes([*a, *b]) % 500;
    let retry_after = RETRY_AFTER[usize::from(c & 0x7f) % RETRY_AFTER.len()];
    let request = prepared(openai);
    let result = request.decode_response(status, retry_after, body);
    let success = (200..300).contains(&status);
    match (&result, success) {
        (Ok(response), true) => {
            if openai {
                assert!(response.model.starts_with("p/"), "{}", response.model);
            }
        }
        (Err(e), true) => assert_eq!(e.code, ErrorCode::UpstreamError, "{e:?}"),
        (Ok(_), false) => panic!("status {status} gave an answer"),
        (Err(e), false) => {
            assert_eq!(*e, request.decode_error(status, retry_after, body));
            if openai {
                let by_status = ApiError::from_upstream_status(status, None, retry_after);
                assert_eq!(e.code, by_status.code, "{e:?}");
                assert_eq!(e.retry_after, by_status.retry_after, "{e:?}");
                if matches!(status, 401 | 403) {
                    assert_eq!(
                        e.message, by_status.message,
                        "the provider's words are not kept"
                    );
                }
                assert!(e.message.len() <= 600, "{} bytes", e.message.len());
            }
        }
    }
});
