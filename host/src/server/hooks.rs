//! The webhooks: an Alertmanager notification (version 4) or a plain JSON
//! alert. An alert is answered 2xx only once it is stored; a malformed one
//! gets 400 and a message, one that is not `application/json` 415; a full
//! queue gets 503 (nothing is stored, and the sender retries); a store that
//! cannot record gets 500. Bodies are capped by `server.body_limit` (413).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Shared;

pub async fn alertmanager(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    accept(&shared, &headers, "alertmanager", &body).await
}

pub async fn generic(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    accept(&shared, &headers, "generic", &body).await
}

/// Whether the request says its body is JSON (`application/json`, with
/// or without parameters such as `charset`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

async fn accept(shared: &Shared, headers: &HeaderMap, source: &str, body: &str) -> Response {
    if !shared.hook_allowed(headers) {
        shared.metrics.alert("none", "unauthorized");
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({ "error": "this hook takes `Authorization: Bearer` the server's hook token" }),
        );
    }
    if !is_json(headers) {
        shared.metrics.alert("none", "malformed");
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({ "error": "the hooks take `Content-Type: application/json` only" }),
        );
    }
    let alerts = match crate::alert::parse(body) {
        Ok(alerts) => alerts,
        Err(e) => {
            shared.metrics.alert("none", "malformed");
            return answer(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() }));
        }
    };
    // Room in the queue first: an alert that is stored must be dispatched.
    // One place a notification, however many alerts it holds.
    let permit = match shared.queue.try_reserve() {
        Ok(permit) => permit,
        Err(_) => {
            shared.metrics.alert("none", "queue-full");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "the run queue is full; retry later" }),
            );
        }
    };
    let accepted = match shared.runtime().state.accept_alerts(source, alerts).await {
        Ok(accepted) => accepted,
        Err(e) => {
            tracing::error!("cannot store accepted alerts: {e}");
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": "the alert could not be stored; retry" }),
            );
        }
    };
    let ids: Vec<String> = accepted.iter().map(|a| a.id.clone()).collect();
    tracing::debug!(stored = ids.len(), "alerts stored; answering 202");
    permit.send(accepted);
    answer(
        StatusCode::ACCEPTED,
        json!({ "accepted": ids.len(), "ids": ids }),
    )
}
