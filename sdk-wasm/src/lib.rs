//! Switchyard's browser client, compiled to WebAssembly.
//!
//! This module is the JavaScript boundary only: it converts values (typed for TypeScript by
//! `tsify`) and turns [`ApiError`]s into JS errors. The hand-written TypeScript layer in `js/` wraps these exports
//! into the public face (`createClient`, async iterators, `Error` subclasses).

mod client;
mod fetch;

pub use client::{ChatStreamCore, ClientCore, ClientOptions, DirectOptions, ProxyOptions};

use switchyard_shared::{ApiError, ChatRequest, ChatResponse, StreamEvent};
use tsify::Ts;
use wasm_bindgen::prelude::*;
use web_sys::AbortSignal;

/// A configured client (the TypeScript layer exposes it as `SwitchyardClient`).
#[wasm_bindgen]
pub struct Client {
    core: ClientCore,
}

#[wasm_bindgen]
impl Client {
    /// Validates the options and builds the client.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Ts<ClientOptions>) -> Result<Client, JsValue> {
        let options = options.to_rust().map_err(|e| {
            to_js(ApiError::bad_request(format!(
                "invalid client options: {e}"
            )))
        })?;
        ClientCore::new(options)
            .map(|core| Client { core })
            .map_err(to_js)
    }

    /// A complete chat answer.
    pub async fn chat(
        &self,
        request: Ts<ChatRequest>,
        signal: Option<AbortSignal>,
    ) -> Result<Ts<ChatResponse>, JsValue> {
        let request = parse_request(request)?;
        let response = self
            .core
            .chat(&request, signal.as_ref())
            .await
            .map_err(to_js)?;
        to_ts(&response)
    }

    /// Starts a streamed chat answer.
    #[wasm_bindgen(js_name = chatStream)]
    pub async fn chat_stream(
        &self,
        request: Ts<ChatRequest>,
        signal: Option<AbortSignal>,
    ) -> Result<ChatStream, JsValue> {
        let request = parse_request(request)?;
        let core = self
            .core
            .chat_stream(&request, signal.as_ref())
            .await
            .map_err(to_js)?;
        Ok(ChatStream { core })
    }
}

/// A streamed answer; the TypeScript layer makes it `AsyncIterable`.
#[wasm_bindgen]
pub struct ChatStream {
    core: ChatStreamCore,
}

#[wasm_bindgen]
impl ChatStream {
    /// The next event, or `undefined` once the answer is complete. Rejects if the stream failed.
    pub async fn next(&mut self) -> Result<Option<Ts<StreamEvent>>, JsValue> {
        match self.core.next().await.map_err(to_js)? {
            Some(event) => Ok(Some(to_ts(&event)?)),
            None => Ok(None),
        }
    }

    /// Reads the rest of the stream and returns the whole answer.
    #[wasm_bindgen(js_name = finalMessage)]
    pub async fn final_message(&mut self) -> Result<Ts<ChatResponse>, JsValue> {
        let response = self.core.final_message().await.map_err(to_js)?;
        to_ts(&response)
    }

    /// Stops reading and closes the connection.
    pub fn cancel(&mut self) {
        self.core.cancel();
    }
}

fn parse_request(request: Ts<ChatRequest>) -> Result<ChatRequest, JsValue> {
    request
        .to_rust()
        .map_err(|e| to_js(ApiError::bad_request(format!("invalid chat request: {e}"))))
}

fn to_ts<T: tsify::Tsify + serde::Serialize>(value: &T) -> Result<Ts<T>, JsValue> {
    value.into_ts().map_err(|e| {
        to_js(ApiError::internal(format!(
            "could not convert the answer: {e}"
        )))
    })
}

/// An `Error` carrying the taxonomy's fields; the TypeScript layer turns it into the matching
/// `SwitchyardError` subclass.
fn to_js(e: ApiError) -> JsValue {
    let err = js_sys::Error::new(&e.message);
    err.set_name("SwitchyardError");
    let obj: &JsValue = err.as_ref();
    let set = |key: &str, value: JsValue| {
        // Setting a property on a fresh Error object cannot fail.
        let _ = js_sys::Reflect::set(obj, &JsValue::from_str(key), &value);
    };
    set("code", JsValue::from_str(e.code.as_str()));
    set("status", JsValue::from(e.http_status()));
    set("retryable", JsValue::from_bool(e.retryable));
    if let Some(s) = e.retry_after {
        set("retryAfter", JsValue::from(s as f64));
    }
    err.into()
}
