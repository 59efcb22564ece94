//! Request extractors whose every rejection is the API's JSON error `{"error": …}`.
//!
//! `JsonBody` takes a JSON body whatever its `Content-Type` says: `curl -d '{…}'` sends
//! `application/x-www-form-urlencoded`, and an admin API has no form bodies to confuse it
//! with. An empty body is `None` (the endpoint's defaults).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
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

/// The single `{…}` path parameter as sent (decoded), a JSON 400 when absent or malformed.
async fn path_param<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<String, Response> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(raw)
}

/// A `{name}` path parameter parsed into an account name (users, robots, groups) at the edge:
/// a name that could leave its path segment (`..`, `/`, `%`) is a 400 here, never pasted into
/// an internal URL.
pub(crate) struct NameParam(pub berth_internal_api::accounts::AccountName);

impl<S: Send + Sync> FromRequestParts<S> for NameParam {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let raw = path_param(parts, state).await?;
        berth_internal_api::accounts::AccountName::parse(&raw)
            .map(NameParam)
            .map_err(|e| error(StatusCode::BAD_REQUEST, e))
    }
}

/// A GC job id (`gc-` and 32 hex digits, as the node makes them), parsed at the edge.
pub(crate) struct JobIdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for JobIdParam {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let raw = path_param(parts, state).await?;
        let hex = raw.strip_prefix("gc-").unwrap_or("");
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(JobIdParam(raw))
        } else {
            Err(error(StatusCode::BAD_REQUEST, format!("invalid job id {raw:?}: expected gc-<32 hex digits>")))
        }
    }
}

/// A `{digest}` path parameter parsed into a digest.
pub(crate) struct DigestParam(pub berth_types::Digest);

impl<S: Send + Sync> FromRequestParts<S> for DigestParam {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let raw = path_param(parts, state).await?;
        raw.parse().map(DigestParam).map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid digest {raw:?}: {e}")))
    }
}

/// 405 as JSON.
pub(crate) async fn method_not_allowed() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint").into_response()
}
