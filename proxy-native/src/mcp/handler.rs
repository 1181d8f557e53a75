//! What the proxy does with messages an MCP server sends on its own: progress notifications are
//! routed to the request they belong to, a changed tool list invalidates the tool cache, and
//! every changed list is announced to the gateway's clients (`/mcp`).
//! Server-to-client requests (sampling, elicitation, roots) get rmcp's defaults: the proxy has no
//! user to ask, so elicitation is declined and sampling is not offered.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Stream;
use rmcp::ClientHandler;
use rmcp::model::{
    ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{NotificationContext, RoleClient};
use tokio::sync::{broadcast, mpsc};

use crate::identity::Identity;

/// Progress notifications kept for a token nobody has subscribed to yet: a fast server can
/// report progress before the caller has registered for it (the request is on the wire before
/// `send_cancellable_request` returns its token). Old ones are dropped first.
const EARLY_PROGRESS_LIMIT: usize = 64;
/// Progress buffered per subscriber; when a client reads slower than the server reports, extra
/// notifications are dropped (progress is advisory, the result is not).
const SUBSCRIBER_BUFFER: usize = 64;

/// Which list of a server changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `notifications/tools/list_changed`.
    Tools,
    /// `notifications/prompts/list_changed`.
    Prompts,
    /// `notifications/resources/list_changed`.
    Resources,
}

/// A server's announcement that one of its lists changed.
#[derive(Debug, Clone)]
pub struct ListChanged {
    /// The configured server's name.
    pub server: Arc<str>,
    /// For a `per_user` server, the user whose session announced it; `None` for a shared one.
    pub owner: Option<Identity>,
    /// Which list.
    pub kind: ListKind,
}

/// The state shared by a session and its handler.
#[derive(Debug)]
pub(crate) struct HandlerState {
    server: Arc<str>,
    owner: Option<Identity>,
    changes: broadcast::Sender<ListChanged>,
    /// Progress notifications by token.
    pub progress: ProgressRouter,
    /// Incremented on every `notifications/tools/list_changed`; a cached tool list taken at an
    /// older generation is stale.
    pub tools_generation: AtomicU64,
}

impl HandlerState {
    pub fn new(
        server: Arc<str>,
        owner: Option<Identity>,
        changes: broadcast::Sender<ListChanged>,
    ) -> Arc<Self> {
        Arc::new(HandlerState {
            server,
            owner,
            changes,
            progress: ProgressRouter::default(),
            tools_generation: AtomicU64::new(0),
        })
    }
}

impl HandlerState {
    /// Passes a changed list on to the gateway's clients; nobody listening is not an error.
    fn announce(&self, kind: ListKind) {
        let _ = self.changes.send(ListChanged {
            server: Arc::clone(&self.server),
            owner: self.owner.clone(),
            kind,
        });
    }
}

/// The rmcp client handler of one upstream session.
#[derive(Debug, Clone)]
pub(crate) struct ProxyClientHandler {
    pub state: Arc<HandlerState>,
}

impl ClientHandler for ProxyClientHandler {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.state.progress.deliver(params);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        tracing::debug!(server = %self.state.server, "MCP server changed its tool list");
        self.state.tools_generation.fetch_add(1, Ordering::AcqRel);
        self.state.announce(ListKind::Tools);
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.state.announce(ListKind::Prompts);
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.state.announce(ListKind::Resources);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("switchyard-proxy", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// Routes progress notifications to the caller waiting for them, by progress token.
#[derive(Debug, Default)]
pub(crate) struct ProgressRouter {
    // A plain mutex: it is never held across an await.
    inner: Arc<Mutex<RouterState>>,
}

#[derive(Debug, Default)]
struct RouterState {
    subscribers: HashMap<ProgressToken, mpsc::Sender<ProgressNotificationParam>>,
    early: VecDeque<ProgressNotificationParam>,
}

impl ProgressRouter {
    fn lock(&self) -> std::sync::MutexGuard<'_, RouterState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `params` to its subscriber, or keeps it until one subscribes.
    pub fn deliver(&self, params: ProgressNotificationParam) {
        let mut state = self.lock();
        if let Some(sender) = state.subscribers.get(&params.progress_token) {
            // Full: the client is slow and this update is dropped; closed: the call is over.
            let _ = sender.try_send(params);
            return;
        }
        if state.early.len() == EARLY_PROGRESS_LIMIT {
            state.early.pop_front();
        }
        state.early.push_back(params);
    }

    /// The progress notifications for `token`, including any that arrived before this call.
    pub fn subscribe(&self, token: ProgressToken) -> ProgressSubscription {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let mut state = self.lock();
        let early = std::mem::take(&mut state.early);
        for params in early {
            if params.progress_token == token {
                let _ = sender.try_send(params);
            } else {
                state.early.push_back(params);
            }
        }
        state.subscribers.insert(token.clone(), sender);
        ProgressSubscription {
            token,
            receiver,
            router: Arc::clone(&self.inner),
        }
    }
}

/// A stream of the progress of one request; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct ProgressSubscription {
    token: ProgressToken,
    receiver: mpsc::Receiver<ProgressNotificationParam>,
    router: Arc<Mutex<RouterState>>,
}

impl Stream for ProgressSubscription {
    type Item = ProgressNotificationParam;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

impl Drop for ProgressSubscription {
    fn drop(&mut self) {
        let mut state = self.router.lock().unwrap_or_else(PoisonError::into_inner);
        state.subscribers.remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use rmcp::model::NumberOrString;

    use super::*;

    fn progress(token: i64, value: f64) -> ProgressNotificationParam {
        ProgressNotificationParam::new(ProgressToken(NumberOrString::Number(token)), value)
    }

    #[tokio::test]
    async fn progress_reaches_its_subscriber_even_when_it_came_first() {
        let router = ProgressRouter::default();
        router.deliver(progress(1, 1.0));
        router.deliver(progress(2, 1.0));
        let mut one = router.subscribe(ProgressToken(NumberOrString::Number(1)));
        router.deliver(progress(1, 2.0));
        assert_eq!(one.next().await.unwrap().progress, 1.0);
        assert_eq!(one.next().await.unwrap().progress, 2.0);
        // Token 2's early notification was kept for its own subscriber.
        let mut two = router.subscribe(ProgressToken(NumberOrString::Number(2)));
        assert_eq!(two.next().await.unwrap().progress, 1.0);
        drop(one);
        assert!(router.lock().subscribers.len() == 1);
    }

    #[test]
    fn unclaimed_progress_is_bounded() {
        let router = ProgressRouter::default();
        for i in 0..(EARLY_PROGRESS_LIMIT as i64 + 10) {
            router.deliver(progress(i, 1.0));
        }
        assert_eq!(router.lock().early.len(), EARLY_PROGRESS_LIMIT);
    }
}
