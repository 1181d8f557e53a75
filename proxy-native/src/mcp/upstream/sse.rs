//! The legacy HTTP+SSE transport (MCP 2024-11-05), which rmcp no longer ships a client for.
//!
//! The client opens a `GET` event stream; the server's first event, `endpoint`, names the URL to
//! `POST` JSON-RPC messages to (202 Accepted); every answer and notification comes back as a
//! `message` event on the stream. The session lives as long as the stream: when it ends, the
//! transport reports the connection closed and the pool opens a new one.
//!
//! The stream is decoded by `shared`'s SSE decoder; only bytes are moved here.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use rmcp::RoleClient;
use rmcp::model::ServerJsonRpcMessage;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use secrecy::ExposeSecret;
use switchyard_shared::sse::{SseDecoder, SseEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::McpServerConfig;

/// Messages read ahead of the session loop; the stream waits when it is full.
const INCOMING_BUFFER: usize = 64;

/// Why the SSE transport failed; messages never contain the URL (it may carry a token).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SseTransportError {
    /// The HTTP request failed.
    #[error("HTTP request failed: {0}")]
    Http(reqwest::Error),
    /// The server answered with an error status.
    #[error("the server answered {0}")]
    Status(u16),
    /// The server did not answer a POST in time.
    #[error("the server did not accept the message within {0:?}")]
    Timeout(Duration),
    /// A message could not be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(serde_json::Error),
}

impl From<reqwest::Error> for SseTransportError {
    fn from(error: reqwest::Error) -> Self {
        SseTransportError::Http(error.without_url())
    }
}

/// A connected legacy SSE session.
pub(crate) struct SseTransport {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    post_timeout: Duration,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: JoinHandle<()>,
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the event stream and waits for the `endpoint` event. Timeouts are the caller's.
pub(super) async fn connect(config: &McpServerConfig) -> Result<SseTransport, String> {
    let name = &config.name;
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout())
        // A redirect could carry the configured headers (credentials) to a host nobody named.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
    let mut headers = HeaderMap::with_capacity(config.resolved_headers.len());
    for (header, value) in &config.resolved_headers {
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("invalid value for header {header}"))?;
        value.set_sensitive(true);
        headers.insert(header.clone(), value);
    }
    // Checked at start-up.
    let url = Url::parse(config.url.as_deref().unwrap_or_default())
        .map_err(|e| format!("invalid URL: {e}"))?;
    let mut response = client
        .get(url.clone())
        .headers(headers.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot open the event stream of '{name}': {}",
                e.without_url()
            )
        })?;
    if !response.status().is_success() {
        return Err(format!(
            "'{name}' answered the event stream request with {}",
            response.status()
        ));
    }
    let mut decoder = SseDecoder::new();
    let mut early = Vec::new();
    let endpoint = loop {
        let chunk = next_chunk(&mut response).await.ok_or_else(|| {
            format!("'{name}' closed the event stream before naming its endpoint")
        })?;
        let mut found = None;
        for event in decoder.push(&chunk) {
            match event.event.as_deref() {
                Some("endpoint") if found.is_none() => found = Some(event.data),
                _ => early.push(event),
            }
        }
        if let Some(endpoint) = found {
            break endpoint;
        }
    };
    let endpoint = url
        .join(endpoint.trim())
        .map_err(|e| format!("'{name}' named an invalid endpoint: {e}"))?;
    // The endpoint comes from the server; following it elsewhere would send the configured
    // headers (credentials) to a host nobody configured.
    if endpoint.origin() != url.origin() {
        return Err(format!(
            "'{name}' named an endpoint on another origin; refused"
        ));
    }
    let (sender, incoming) = mpsc::channel(INCOMING_BUFFER);
    let reader = tokio::spawn(read_events(name.clone(), response, decoder, early, sender));
    Ok(SseTransport {
        client,
        endpoint,
        headers,
        post_timeout: config.connect_timeout(),
        incoming,
        reader,
    })
}

async fn next_chunk(response: &mut reqwest::Response) -> Option<Bytes> {
    response.chunk().await.ok().flatten()
}

/// Forwards `message` events to the session until the stream ends (which closes the session).
async fn read_events(
    server: String,
    mut response: reqwest::Response,
    mut decoder: SseDecoder,
    early: Vec<SseEvent>,
    sender: mpsc::Sender<ServerJsonRpcMessage>,
) {
    let mut pending = early;
    loop {
        for event in pending.drain(..) {
            // Events without a type are `message` events.
            if !matches!(event.event.as_deref(), None | Some("message")) {
                continue;
            }
            match serde_json::from_str::<ServerJsonRpcMessage>(&event.data) {
                Ok(message) => {
                    if sender.send(message).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(%server, %error, "skipping an unreadable message on the MCP event stream");
                }
            }
        }
        let Some(chunk) = next_chunk(&mut response).await else {
            tracing::debug!(%server, "the MCP event stream ended");
            return;
        };
        pending = decoder.push(&chunk);
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseTransportError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = serde_json::to_vec(&item).map(|body| {
            self.client
                .post(self.endpoint.clone())
                .headers(self.headers.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body)
        });
        let timeout = self.post_timeout;
        async move {
            let request = request.map_err(SseTransportError::Encode)?;
            let response = tokio::time::timeout(timeout, request.send())
                .await
                .map_err(|_| SseTransportError::Timeout(timeout))??;
            let status = response.status();
            if !status.is_success() {
                return Err(SseTransportError::Status(status.as_u16()));
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        Ok(())
    }
}
