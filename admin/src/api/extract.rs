//! Request extractors whose every rejection is the API's JSON error `{"error": …}`.
//!
//! `JsonBody` takes a JSON body whatever its `Content-Type` says: `curl -d '{…}'` sends
//! `application/x-www-form-urlencoded`, and an admin API has no form bodies to confuse it
//! with. An empty body is `None` (the endpoint's defaults).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error;

/// An optional JSON body, parsed whatever the content type.
pub(crate) struct JsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| error(e.status(), e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(None));
        }
        serde_json::from_slice(&bytes)
            .map(|v| JsonBody(Some(v)))
            .map_err(|e| error(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid JSON body: {e}")))
    }
}

/// Query parameters; a malformed query string is a JSON 400.
pub(crate) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// 405 as JSON.
pub(crate) async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint").into_response()
}
