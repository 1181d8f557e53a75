//! Extractors whose rejections use the shared error body instead of axum's plain text.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use switchyard_shared::{ApiError, ErrorCode};

use crate::error::AppError;

/// A JSON request body; malformed, unknown-field or oversized bodies become [`AppError`]s.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// A query string; missing, malformed or unknown parameters become `400 bad_request`.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| AppError(ApiError::bad_request(rejection.body_text())))?;
        Ok(ApiQuery(value))
    }
}

/// The whole request body as bytes, for handlers that read a wire format of their own; an
/// oversized body becomes `413 payload_too_large`.
#[derive(Debug)]
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read_body(req).await.map(ApiBody)
    }
}

/// `Bytes` honours the `DefaultBodyLimit` of the proxy's layers; its rejections become the
/// shared errors.
async fn read_body(request: Request) -> Result<Bytes, AppError> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than the proxy accepts",
                ))
            } else {
                AppError(ApiError::bad_request(rejection.body_text()))
            }
        })
}

/// Reads the whole body (within the proxy's body limit) for a layer to look at, and gives the
/// request back with it for the handler.
pub async fn buffer_body(request: Request) -> Result<(Request, Bytes), AppError> {
    let (parts, body) = request.into_parts();
    let bytes = read_body(Request::from_parts(parts.clone(), body)).await?;
    Ok((Request::from_parts(parts, Body::from(bytes.clone())), bytes))
}
