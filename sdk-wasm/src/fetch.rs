//! The runtime shell: executes `shared`'s request descriptions with the browser's `fetch` and
//! hands back bytes. Nothing here knows a wire format.

use js_sys::{Promise, Reflect, Uint8Array};
use switchyard_shared::{ApiError, ErrorCode, HttpRequest};
use wasm_bindgen::{JsCast, JsValue, prelude::wasm_bindgen};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    AbortController, AbortSignal, DomException, ReadableStreamDefaultReader, Request, RequestInit,
};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, which exists in windows, workers and Node alike.
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;

    /// `AbortSignal.any`: a signal that fires when any of the given ones does.
    #[wasm_bindgen(js_namespace = AbortSignal, js_name = any)]
    fn abort_signal_any(signals: &js_sys::Array) -> AbortSignal;

    /// `AbortSignal.timeout`: a signal that fires after `ms` milliseconds.
    #[wasm_bindgen(js_namespace = AbortSignal, js_name = timeout)]
    fn abort_signal_timeout(ms: u32) -> AbortSignal;

    /// The global `setTimeout`, in windows and workers alike.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsValue;
}

/// How long the CORS probe may take before the failure is reported as a plain network error.
const CORS_PROBE_MS: u32 = 3000;

/// A response whose headers have arrived; the body is still to be read.
pub(crate) struct Response {
    /// HTTP status.
    pub status: u16,
    /// The `Retry-After` header, when the server exposes it.
    pub retry_after: Option<String>,
    /// Whether the body is JSON (by its `Content-Type`, which a page may always read).
    pub json: bool,
    inner: web_sys::Response,
    /// Aborts this request alone (the caller's signal aborts it too).
    abort: AbortController,
}

/// Sends `req`; resolves once the response headers arrive.
pub(crate) async fn send(
    req: &HttpRequest,
    signal: Option<&AbortSignal>,
) -> Result<Response, ApiError> {
    if signal.is_some_and(AbortSignal::aborted) {
        return Err(aborted());
    }
    let init = RequestInit::new();
    init.set_method(req.method.as_str());
    if let Some(body) = &req.body {
        init.set_body(&JsValue::from_str(body));
    }
    // Every request gets its own controller, so that stopping early can abort the request
    // itself: cancelling only the body reader lets Chromium drain a small remaining body to keep
    // the connection alive, and the server would go on generating.
    let abort =
        AbortController::new().map_err(|e| js_error("could not create an AbortController", &e))?;
    let combined = match signal {
        Some(user) => abort_signal_any(&js_sys::Array::of2(user, &abort.signal())),
        None => abort.signal(),
    };
    init.set_signal(Some(&combined));
    let headers = web_sys::Headers::new().map_err(|e| js_error("could not build headers", &e))?;
    for (name, value) in &req.headers {
        headers
            .set(name, value)
            .map_err(|_| ApiError::bad_request(format!("header {name:?} has an invalid value")))?;
    }
    init.set_headers(&headers);
    let request = Request::new_with_str_and_init(&req.url, &init)
        .map_err(|_| ApiError::bad_request(format!("{:?} is not a valid URL", req.url)))?;
    let resp = match JsFuture::from(global_fetch(&request)).await {
        Ok(resp) => resp,
        Err(e) if is_abort(&e) => return Err(aborted()),
        Err(_) => return Err(fetch_failure(&req.url).await),
    };
    let inner: web_sys::Response = resp.unchecked_into();
    let retry_after = inner.headers().get("retry-after").ok().flatten();
    let json = inner
        .headers()
        .get("content-type")
        .ok()
        .flatten()
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    Ok(Response {
        status: inner.status(),
        retry_after,
        json,
        inner,
        abort,
    })
}

impl Response {
    /// Every header the browser lets the page see (lowercase names). Cross-origin, that is the
    /// CORS-safelisted ones and those the server lists in `Access-Control-Expose-Headers`.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Ok(Some(entries)) = js_sys::try_iter(&self.inner.headers()) else {
            return out;
        };
        for entry in entries.flatten() {
            let pair = js_sys::Array::from(&entry);
            if let (Some(k), Some(v)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                out.push((k.to_ascii_lowercase(), v));
            }
        }
        out
    }

    /// Drops an answer whose body is not wanted (a failure about to be retried): its connection
    /// is closed rather than left holding an unread body.
    pub fn discard(self) {
        self.abort.abort();
    }

    /// Reads the whole body.
    pub async fn bytes(self) -> Result<Vec<u8>, ApiError> {
        let promise = self
            .inner
            .array_buffer()
            .map_err(|e| classify(&e, "could not read the response"))?;
        let buf = JsFuture::from(promise)
            .await
            .map_err(|e| classify(&e, "the response body could not be read"))?;
        Ok(Uint8Array::new(&buf).to_vec())
    }

    /// Turns the body into a chunk reader.
    pub fn into_reader(self) -> Result<BodyReader, ApiError> {
        let body = self
            .inner
            .body()
            .ok_or_else(|| ApiError::new(ErrorCode::UpstreamError, "the response has no body"))?;
        let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
        Ok(BodyReader {
            reader,
            abort: self.abort,
            done: false,
        })
    }
}

/// Reads a response body chunk by chunk; aborts the request if stopped or dropped before its
/// end, so the server sees the connection close.
pub(crate) struct BodyReader {
    reader: ReadableStreamDefaultReader,
    abort: AbortController,
    done: bool,
}

impl BodyReader {
    /// The next chunk, or `None` at the end of the body.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let result = JsFuture::from(self.reader.read()).await.map_err(|e| {
            self.done = true;
            classify(&e, "the connection was lost mid-stream")
        })?;
        let done = Reflect::get(&result, &JsValue::from_str("done"))
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        if done {
            self.done = true;
            return Ok(None);
        }
        let value =
            Reflect::get(&result, &JsValue::from_str("value")).unwrap_or(JsValue::UNDEFINED);
        Ok(Some(
            value
                .dyn_into::<Uint8Array>()
                .map(|a| a.to_vec())
                .unwrap_or_default(),
        ))
    }

    /// Stops reading and closes the connection, which tells the server to stop.
    pub fn cancel(&mut self) {
        if !self.done {
            self.done = true;
            self.abort.abort();
            // The promise only reports when the cancellation completed, and rejects because of
            // the abort just above; it is handled so the page sees no unhandled rejection.
            ignore_rejection(&self.reader.cancel());
        }
    }
}

impl Drop for BodyReader {
    fn drop(&mut self) {
        self.cancel();
    }
}

thread_local! {
    /// One handler for every promise whose failure means nothing (a closure per call would
    /// have to be leaked).
    static IGNORE: wasm_bindgen::closure::Closure<dyn FnMut(JsValue)> =
        wasm_bindgen::closure::Closure::new(|_: JsValue| {});
}

/// Marks `promise` as handled: its rejection is expected and nobody waits for it.
fn ignore_rejection(promise: &Promise) {
    IGNORE.with(|ignore| {
        let _ = promise.catch(ignore);
    });
}

/// Runs `work` until it ends or `signal` fires, whichever comes first (`aborted` then). For work
/// that has no signal of its own, such as a caller's callback.
pub(crate) async fn until_aborted<T>(
    signal: &AbortSignal,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    if signal.aborted() {
        return Err(aborted());
    }
    // The signal resolves the promise itself: no Rust closure is kept alive for it.
    let fired = Promise::new(&mut |resolve, _| {
        let once = web_sys::AddEventListenerOptions::new();
        once.set_once(true);
        let _ = signal.add_event_listener_with_callback_and_add_event_listener_options(
            "abort", &resolve, &once,
        );
    });
    let fired = JsFuture::from(fired);
    futures_util::pin_mut!(work);
    match futures_util::future::select(work, fired).await {
        futures_util::future::Either::Left((done, _)) => Ok(done),
        futures_util::future::Either::Right(_) => Err(aborted()),
    }
}

/// Waits for `delay`, or until `signal` fires (`aborted` then).
pub(crate) async fn sleep(
    delay: std::time::Duration,
    signal: Option<&AbortSignal>,
) -> Result<(), ApiError> {
    let ms = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
    // The timer resolves the promise itself: no Rust closure is kept alive for it.
    let timer = JsFuture::from(Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    }));
    match signal {
        Some(signal) => until_aborted(signal, timer).await.map(drop),
        None => timer
            .await
            .map(drop)
            .map_err(|e| js_error("the timer failed", &e)),
    }
}

/// A signal that fires when either of `a` and `b` does.
pub(crate) fn any_signal(a: &AbortSignal, b: &AbortSignal) -> AbortSignal {
    abort_signal_any(&js_sys::Array::of2(a, b))
}

/// The error an aborted request rejects with.
pub(crate) fn aborted() -> ApiError {
    ApiError::new(ErrorCode::Aborted, "the request was aborted")
}

fn is_abort(e: &JsValue) -> bool {
    e.dyn_ref::<DomException>()
        .is_some_and(|d| d.name() == "AbortError")
}

fn classify(e: &JsValue, context: &str) -> ApiError {
    if is_abort(e) {
        aborted()
    } else {
        ApiError::new(ErrorCode::StreamInterrupted, context.to_owned())
    }
}

/// `fetch` rejects with a bare `TypeError` for every network-level failure, CORS included: the
/// browser deliberately does not say which. A `no-cors` request to the same URL tells them
/// apart: it resolves (with an opaque answer) when the server is reachable, so the first failure
/// was the browser refusing to show us the answer; it fails too when the server is not there.
async fn fetch_failure(url: &str) -> ApiError {
    let origin = url
        .find("://")
        .and_then(|i| url[i + 3..].find('/').map(|j| &url[..i + 3 + j]))
        .unwrap_or(url);
    if reachable_without_cors(url).await {
        return ApiError::new(
            ErrorCode::CorsBlocked,
            format!(
                "{origin} answered, but it does not allow this page's origin (CORS): it must send \
                 Access-Control-Allow-Origin for this origin (for MCP also \
                 Access-Control-Expose-Headers: Mcp-Session-Id), or use proxy mode"
            ),
        );
    }
    ApiError::new(
        ErrorCode::NetworkError,
        format!("could not reach {origin}: the server is down or unreachable from this page"),
    )
}

/// Whether a `GET` in `no-cors` mode gets any answer from `url` within the probe's time.
async fn reachable_without_cors(url: &str) -> bool {
    let Ok(stop) = AbortController::new() else {
        return false;
    };
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_mode(web_sys::RequestMode::NoCors);
    let signal = abort_signal_any(&js_sys::Array::of2(
        &stop.signal(),
        &abort_signal_timeout(CORS_PROBE_MS),
    ));
    init.set_signal(Some(&signal));
    let Ok(request) = Request::new_with_str_and_init(url, &init) else {
        return false;
    };
    let answered = JsFuture::from(global_fetch(&request)).await.is_ok();
    // Only the headers were wanted: close the connection rather than read a body.
    stop.abort();
    answered
}

fn js_error(context: &str, e: &JsValue) -> ApiError {
    let detail = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .unwrap_or_default();
    ApiError::internal(format!("{context}: {detail}"))
}
