//! The one place where an error becomes an HTTP response: status from the shared taxonomy, the
//! shared JSON body, and `Retry-After` when the error carries a delay.

use axum::extract::rejection::JsonRejection;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use switchyard_shared::{ApiError, ErrorCode};

/// An error answered to the client in the shared body shape.
#[derive(Debug)]
pub struct AppError(pub ApiError);

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        AppError(e)
    }
}

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        let error = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the proxy accepts",
            )
        } else {
            // Syntax errors, unknown fields and a missing JSON content type alike: the caller must
            // fix the request, and axum's text (serde's message) says how.
            ApiError::bad_request(rejection.body_text())
        };
        AppError(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let AppError(error) = self;
        let status =
            StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Messages of the shared taxonomy never carry secrets, so they may be logged.
        // `unavailable` is reported once, when the store goes away (`limits/cluster.rs`), rather
        // than once per refused request.
        if status.is_server_error() && error.code != ErrorCode::Unavailable {
            tracing::warn!(code = %error.code, reason = %error.message, "request failed");
        } else {
            tracing::debug!(code = %error.code, reason = %error.message, "request refused");
        }
        let mut response = (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            error.to_body_json(),
        )
            .into_response();
        if let Some(seconds) = error.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        // For faces that answer errors in another shape (`layers::OpenAiErrorsLayer`).
        response.extensions_mut().insert(error);
        response
    }
}
