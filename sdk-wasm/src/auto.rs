//! Auto mode's routing state: each upstream (a provider or an MCP server, by name) is called
//! directly until a direct call fails in a way the proxy fixes, and through the proxy from then
//! on. The decision is kept for the client's life and reported to a listener.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use switchyard_shared::{ApiError, ErrorCode};
use tsify::Tsify;

/// How an upstream is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// The browser calls the upstream itself.
    Direct,
    /// The browser calls the proxy, which calls the upstream.
    Proxy,
}

impl Route {
    /// The name on the wire: `"direct"` or `"proxy"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Proxy => "proxy",
        }
    }
}

/// Why an upstream was moved to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Tsify)]
#[serde(rename_all = "snake_case")]
pub enum RouteReason {
    /// The upstream answered, but does not admit this page's origin.
    CorsBlocked,
    /// The upstream could not be reached from the page.
    NetworkError,
    /// The upstream is `http://` and the page `https://`: the browser would refuse the call.
    MixedContent,
}

impl RouteReason {
    /// The reason a direct failure gives to switch, if it is one the proxy fixes. Both codes
    /// come only from `fetch` rejecting before any answer: nothing reached the upstream, so the
    /// request may be sent again through the proxy.
    pub(crate) fn of(e: &ApiError) -> Option<Self> {
        match e.code {
            ErrorCode::CorsBlocked => Some(RouteReason::CorsBlocked),
            ErrorCode::NetworkError => Some(RouteReason::NetworkError),
            _ => None,
        }
    }
}

/// The event reported when an upstream changes route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Tsify)]
pub struct RouteChange {
    /// The provider or MCP server, by its configured name.
    pub upstream: String,
    /// The route it takes from now on.
    pub route: Route,
    /// Why.
    pub reason: RouteReason,
}

/// Told of each route change.
pub type RouteListener = Rc<dyn Fn(&RouteChange)>;

/// Which upstreams go through the proxy; shared by the clones of one client.
#[derive(Default)]
pub(crate) struct RouteState {
    proxied: RefCell<BTreeSet<String>>,
    listener: RefCell<Option<RouteListener>>,
}

impl RouteState {
    /// The current route of `upstream`; every upstream starts direct.
    pub(crate) fn route_of(&self, upstream: &str) -> Route {
        if self.proxied.borrow().contains(upstream) {
            Route::Proxy
        } else {
            Route::Direct
        }
    }

    /// Moves `upstream` to the proxy for good; reported once, however many calls failed at once.
    pub(crate) fn switch(&self, upstream: &str, reason: RouteReason) {
        if !self.proxied.borrow_mut().insert(upstream.to_owned()) {
            return;
        }
        let listener = self.listener.borrow().clone();
        if let Some(listener) = listener {
            listener(&RouteChange {
                upstream: upstream.to_owned(),
                route: Route::Proxy,
                reason,
            });
        }
    }

    /// Sets the one listener of route changes (the TypeScript layer fans them out).
    pub(crate) fn set_listener(&self, listener: RouteListener) {
        *self.listener.borrow_mut() = Some(listener);
    }
}

/// Whether the browser would block `url` as mixed content from this page.
pub(crate) fn is_mixed_content(url: &str) -> bool {
    blocked_as_mixed(page_protocol().as_deref(), url)
}

/// Whether a page whose `location.protocol` is `page_protocol` may not fetch `url`: an
/// `http://` URL from an `https:` page. Loopback hosts are exempt, as browsers treat them as
/// secure.
fn blocked_as_mixed(page_protocol: Option<&str>, url: &str) -> bool {
    let plain = url
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    plain && page_protocol == Some("https:") && !is_loopback(host_of(&url[7..]))
}

/// The host of `authority/path...` (without port or brackets).
fn host_of(after_scheme: &str) -> &str {
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `location.protocol` of the page or worker, if there is one.
fn page_protocol() -> Option<String> {
    let location = js_sys::Reflect::get(&js_sys::global(), &"location".into()).ok()?;
    js_sys::Reflect::get(&location, &"protocol".into())
        .ok()?
        .as_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

    wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn only_plain_http_to_a_remote_host_from_a_secure_page_is_mixed() {
        let https = Some("https:");
        assert!(blocked_as_mixed(https, "http://api.example.com/v1"));
        assert!(blocked_as_mixed(https, "HTTP://10.0.0.2:8080/v1"));
        assert!(blocked_as_mixed(https, "http://user:pw@api.example.com/v1"));
        assert!(!blocked_as_mixed(https, "https://api.example.com/v1"));
        assert!(!blocked_as_mixed(
            Some("http:"),
            "http://api.example.com/v1"
        ));
        assert!(!blocked_as_mixed(None, "http://api.example.com/v1"));
        for local in [
            "http://127.0.0.1:11434/v1",
            "http://localhost:3000/mcp",
            "http://app.localhost/v1",
            "http://[::1]:8080/v1",
        ] {
            assert!(!blocked_as_mixed(https, local), "{local}");
        }
    }
}
