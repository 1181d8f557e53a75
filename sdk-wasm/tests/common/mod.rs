//! Helpers both browser suites use.

/// Defines each case once per mode, as `direct::<case>` and `proxy::<case>`: the same list runs
/// in both modes (the including file defines `Mode` and the `async fn <case>(mode: Mode)`s).
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
