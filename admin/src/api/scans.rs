//! `/api/v1/scans…`: reserved for vulnerability scanning (a later issue). Routed behind the
//! same authentication so adding it changes no routing.

use axum::http::StatusCode;
use axum::response::Response;

pub(super) async fn not_yet() -> Response {
    super::error(StatusCode::NOT_IMPLEMENTED, "scanning is not implemented yet")
}
