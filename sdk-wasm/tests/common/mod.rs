//! Helpers the browser suites share: the two modes, the clients they build, and the settings
//! `cargo xtask test` passes at compile time.

use switchyard_sdk_wasm::{
    ClientCore, ClientOptions, DirectOptions, McpServerEndpoint, ProxyOptions, Transport,
};
use switchyard_shared::{ProviderEndpoint, ProviderKind};

/// How a case reaches its upstreams: by itself, or through the running proxy.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code, reason = "each suite uses the modes it runs in")]
pub enum Mode {
    /// The SDK calls the upstreams itself.
    Direct,
    /// The SDK calls the proxy, which calls the upstreams.
    Proxy,
    /// As `Proxy`, every call on one WebSocket.
    ProxyWebSocket,
}

/// Defines each case once per mode, as `direct::<case>` and `proxy::<case>`: the same list runs
/// in both modes (the including file defines the `async fn <case>(mode: Mode)`s).
macro_rules! in_both_modes {
    ($($case:ident),* $(,)?) => {
        mod direct {
            $(
                #[super::wasm_bindgen_test]
                async fn $case() {
                    super::$case(super::Mode::Direct).await
                }
            )*
        }
        mod proxy {
            $(
                #[super::wasm_bindgen_test]
                async fn $case() {
                    super::$case(super::Mode::Proxy).await
                }
            )*
        }
    };
}

/// A setting `cargo xtask test` passes at compile time (a browser test has no environment).
pub fn setting(value: Option<&'static str>, name: &str) -> &'static str {
    value.unwrap_or_else(|| {
        panic!("{name} is not set; run the browser tests with `cargo xtask test`")
    })
}

/// The test upstream's OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`).
pub fn upstream() -> &'static str {
    setting(
        option_env!("SWITCHYARD_TEST_UPSTREAM"),
        "SWITCHYARD_TEST_UPSTREAM",
    )
}

/// The test upstream as provider `fake`, with its key: the name and key the proxy's config
/// gives the same upstream.
#[allow(dead_code, reason = "the MCP suite offers no provider")]
pub fn fake_provider() -> ProviderEndpoint {
    ProviderEndpoint {
        name: "fake".into(),
        kind: ProviderKind::OpenAi,
        base_url: upstream().into(),
        api_key: Some(
            setting(
                option_env!("SWITCHYARD_TEST_UPSTREAM_KEY"),
                "SWITCHYARD_TEST_UPSTREAM_KEY",
            )
            .into(),
        ),
    }
}

/// The fake Anthropic API as provider `anthropic`, with its key, as the proxy's config names it.
#[allow(dead_code, reason = "only the conformance suite reaches it")]
pub fn anthropic_provider() -> ProviderEndpoint {
    ProviderEndpoint {
        name: "anthropic".into(),
        kind: ProviderKind::Anthropic,
        base_url: setting(
            option_env!("SWITCHYARD_TEST_ANTHROPIC"),
            "SWITCHYARD_TEST_ANTHROPIC",
        )
        .into(),
        api_key: Some(
            setting(
                option_env!("SWITCHYARD_TEST_ANTHROPIC_KEY"),
                "SWITCHYARD_TEST_ANTHROPIC_KEY",
            )
            .into(),
        ),
    }
}

/// The fake Gemini API as provider `gemini`, with its key, as the proxy's config names it.
#[allow(dead_code, reason = "only the conformance suite reaches it")]
pub fn gemini_provider() -> ProviderEndpoint {
    ProviderEndpoint {
        name: "gemini".into(),
        kind: ProviderKind::Gemini,
        base_url: setting(
            option_env!("SWITCHYARD_TEST_GEMINI"),
            "SWITCHYARD_TEST_GEMINI",
        )
        .into(),
        api_key: Some(
            setting(
                option_env!("SWITCHYARD_TEST_GEMINI_KEY"),
                "SWITCHYARD_TEST_GEMINI_KEY",
            )
            .into(),
        ),
    }
}

/// The MCP servers by the names the proxy's config gives them too: `everything` (the reference
/// server, session-based) and `stateless` (the rmcp server, 2026-07-28).
#[allow(dead_code, reason = "the chat suite reaches no MCP server")]
pub fn mcp_servers() -> Vec<McpServerEndpoint> {
    let endpoint = |name: &str, url: &'static str| McpServerEndpoint {
        name: name.into(),
        url: url.into(),
        headers: Default::default(),
    };
    vec![
        endpoint(
            "everything",
            setting(
                option_env!("SWITCHYARD_TEST_MCP_EVERYTHING"),
                "SWITCHYARD_TEST_MCP_EVERYTHING",
            ),
        ),
        endpoint(
            "stateless",
            setting(
                option_env!("SWITCHYARD_TEST_MCP_STATELESS"),
                "SWITCHYARD_TEST_MCP_STATELESS",
            ),
        ),
    ]
}

/// The running proxy, without a key of its own.
pub fn proxy_options(transport: Transport) -> ProxyOptions {
    ProxyOptions {
        base_url: setting(
            option_env!("SWITCHYARD_TEST_PROXY"),
            "SWITCHYARD_TEST_PROXY",
        )
        .into(),
        api_key: None,
        retry: None,
        transport,
    }
}

/// A client in `mode`: direct mode reaches `providers` and `mcp_servers` by itself, and the
/// proxy knows them by the same names, so that a case reads the same in both modes.
pub fn client(
    mode: Mode,
    providers: Vec<ProviderEndpoint>,
    mcp_servers: Vec<McpServerEndpoint>,
) -> ClientCore {
    let options = match mode {
        Mode::Direct => ClientOptions::Direct(DirectOptions {
            // The test providers carry keys, as real ones would.
            allow_browser_secrets: true,
            providers,
            mcp_servers,
            retry: None,
        }),
        Mode::Proxy => ClientOptions::Proxy(proxy_options(Transport::Sse)),
        Mode::ProxyWebSocket => ClientOptions::Proxy(proxy_options(Transport::Websocket)),
    };
    ClientCore::new(options).expect("valid options")
}

/// Waits `ms` milliseconds without blocking the page.
pub async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        web_sys::window()
            .expect("a window")
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .expect("timer");
    });
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .expect("sleep");
}
