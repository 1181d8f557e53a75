//! A transport wrapper that records what the pool needs to recover from a broken connection:
//! whether the server's side has closed, and which requests were actually handed to it.
//!
//! When a call fails because the connection broke, retrying it on a new session is safe only if
//! the server never received it; a tool call that reached the server may have had its effect.
//! rmcp reports both cases as "transport closed", so the wrapper keeps the difference.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rmcp::RoleClient;
use rmcp::model::{JsonRpcMessage, RequestId};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;

/// What is known about one connection to an MCP server.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    closed: AtomicBool,
    delivered: Mutex<HashSet<RequestId>>,
}

impl LinkState {
    /// Whether the server's side ended (its process exited, its stream closed).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether request `id` was written to the server successfully.
    pub fn was_delivered(&self, id: &RequestId) -> bool {
        self.delivered().contains(id)
    }

    /// Drops what is known about request `id` once it has completed.
    pub fn forget(&self, id: &RequestId) {
        self.delivered().remove(id);
    }

    /// Records that the server received request `id`, for a transport that knows it before
    /// its `send` completes (an HTTP transport, once the server has answered the POST).
    pub fn mark_delivered(&self, id: &RequestId) {
        self.delivered().insert(id.clone());
    }

    /// Records that the session can carry no more messages.
    pub fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn delivered(&self) -> std::sync::MutexGuard<'_, HashSet<RequestId>> {
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `T`, recording into a shared [`LinkState`].
pub(crate) struct Tracked<T> {
    inner: T,
    state: Arc<LinkState>,
}

impl<T> Tracked<T> {
    pub fn new(inner: T) -> (Self, Arc<LinkState>) {
        let state = Arc::new(LinkState::default());
        (
            Tracked {
                inner,
                state: Arc::clone(&state),
            },
            state,
        )
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Tracked<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let id = match &item {
            JsonRpcMessage::Request(request) => Some(request.id.clone()),
            _ => None,
        };
        let sending = self.inner.send(item);
        let state = Arc::clone(&self.state);
        async move {
            let result = sending.await;
            tracing::trace!(?id, ok = result.is_ok(), "MCP message written");
            if let (Ok(()), Some(id)) = (&result, id) {
                state.delivered().insert(id);
            }
            result
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await;
        if message.is_none() {
            self.state.closed.store(true, Ordering::Release);
        }
        message
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.state.closed.store(true, Ordering::Release);
        self.inner.close()
    }
}
