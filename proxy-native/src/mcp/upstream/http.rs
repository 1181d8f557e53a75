//! Streamable HTTP upstreams, through rmcp's client transport on a reqwest client of the proxy's.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, JsonRpcMessage, RequestId, ServerJsonRpcMessage};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use secrecy::ExposeSecret;
use sse_stream::Sse;

use crate::config::McpServerConfig;

/// The transport for `config`; nothing is sent until the session starts.
pub(super) fn transport(
    config: &McpServerConfig,
) -> Result<StreamableHttpClientTransport<CorrelatingClient>, String> {
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout())
        // A redirect could carry the configured headers (credentials) to a host nobody named.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
    let mut headers = HashMap::with_capacity(config.resolved_headers.len());
    for (name, value) in &config.resolved_headers {
        // Checked at start-up; the message names the header only.
        let mut value = HeaderValue::from_str(value.expose_secret())
            .map_err(|_| format!("invalid value for header {name}"))?;
        // Sensitive values are left out of Debug output (and so of any log that prints one).
        value.set_sensitive(true);
        headers.insert(name.clone(), value);
    }
    // Checked at start-up.
    let url = config.url.clone().unwrap_or_default();
    let transport_config =
        StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
    Ok(StreamableHttpClientTransport::with_client(
        CorrelatingClient(client),
        transport_config,
    ))
}

/// reqwest, except that a JSON-RPC error without an `id` answering a request POST is given that
/// request's id.
///
/// Servers built on the MCP TypeScript SDK (server-everything among them) answer a POST with an
/// unknown `Mcp-Session-Id` with HTTP 400 and an error whose `id` is missing, because they read
/// it before parsing the body. rmcp cannot match such an error to a request and drops it, and the
/// request would wait for its timeout; but the error is the answer to the POST that carried it,
/// and with its id restored the pool sees "session lost" at once and opens a new session.
#[derive(Debug, Clone)]
pub(super) struct CorrelatingClient(reqwest::Client);

fn correlate(
    id: Option<RequestId>,
    response: Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>,
) -> Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>> {
    match response {
        Ok(StreamableHttpPostResponse::Json(JsonRpcMessage::Error(mut error), session))
            if error.id.is_none() && id.is_some() =>
        {
            error.id = id;
            Ok(StreamableHttpPostResponse::Json(
                ServerJsonRpcMessage::Error(error),
                session,
            ))
        }
        other => other,
    }
}

fn request_id(message: &ClientJsonRpcMessage) -> Option<RequestId> {
    match message {
        JsonRpcMessage::Request(request) => Some(request.id.clone()),
        _ => None,
    }
}

impl StreamableHttpClient for CorrelatingClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let id = request_id(&message);
        let response = self
            .0
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        correlate(id, response)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let id = request_id(&message);
        let response = self
            .0
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        correlate(id, response)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let id = request_id(&message);
        let response = self
            .0
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        correlate(id, response)
    }

    fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<Output = Result<(), StreamableHttpError<Self::Error>>> + Send + '_ {
        self.0
            .delete_session(uri, session_id, auth_header, custom_headers)
    }

    fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> impl Future<
        Output = Result<
            BoxStream<'static, Result<Sse, SseError>>,
            StreamableHttpError<Self::Error>,
        >,
    > + Send
    + '_ {
        self.0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
    }

    fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> impl Future<
        Output = Result<
            BoxStream<'static, Result<Sse, SseError>>,
            StreamableHttpError<Self::Error>,
        >,
    > + Send
    + '_ {
        self.0.get_stream_with_max_sse_event_size(
            uri,
            session_id,
            last_event_id,
            auth_header,
            custom_headers,
            max_sse_event_size,
        )
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::{ErrorCode, ErrorData, JsonRpcError, JsonRpcVersion2_0};

    use super::*;

    fn id_less_error() -> StreamableHttpPostResponse {
        StreamableHttpPostResponse::Json(
            ServerJsonRpcMessage::Error(JsonRpcError {
                jsonrpc: JsonRpcVersion2_0,
                id: None,
                error: ErrorData::new(
                    ErrorCode(-32000),
                    "Bad Request: No valid session ID provided",
                    None,
                ),
            }),
            None,
        )
    }

    #[test]
    fn an_id_less_error_answering_a_request_gets_its_id() {
        let id = RequestId::Number(7);
        let Ok(StreamableHttpPostResponse::Json(JsonRpcMessage::Error(error), _)) =
            correlate(Some(id.clone()), Ok(id_less_error()))
        else {
            panic!("still an error response expected");
        };
        assert_eq!(error.id, Some(id));
        // A notification's answer has no request to belong to.
        let Ok(StreamableHttpPostResponse::Json(JsonRpcMessage::Error(error), _)) =
            correlate(None, Ok(id_less_error()))
        else {
            panic!("still an error response expected");
        };
        assert_eq!(error.id, None);
    }
}
