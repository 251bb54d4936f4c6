//! The REST API, JSON in and out, every call with a bearer token
//! (`Authorization: Bearer sg_…`) of a principal: 401 without a valid one,
//! 403 without the role. Reading needs any role; deciding approvals the
//! approver role (and not to have started the run); resolving writes in
//! doubt and starting runs the operator role. The same state-store calls
//! as the CLI, so the rules are the same.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json_, json};

use super::{Shared, dispatch};
use crate::state::approvals::{ApprovalStatus, DecisionError, Role};
use crate::state::in_doubt::Resolution;
use crate::state::now_ms;

/// An API error: its status and a message that says what to do.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::state::StateError> for ApiError {
    fn from(e: crate::state::StateError) -> Self {
        tracing::error!("state store: {e}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the state store failed; retry".into(),
        )
    }
}

impl From<DecisionError> for ApiError {
    fn from(e: DecisionError) -> Self {
        ApiError(decision_status(&e), e.to_string())
    }
}

/// The HTTP status of a decision that was not taken, on every face of the
/// server.
pub fn decision_status(e: &DecisionError) -> StatusCode {
    match e {
        DecisionError::Unauthenticated => StatusCode::UNAUTHORIZED,
        DecisionError::NotAnApprover(_)
        | DecisionError::NotAnOperator(_)
        | DecisionError::SelfApproval(_)
        | DecisionError::NotInGroup { .. } => StatusCode::FORBIDDEN,
        DecisionError::Unknown { .. } | DecisionError::UnknownRun(_) => StatusCode::NOT_FOUND,
        DecisionError::Decided { .. }
        | DecisionError::Twice(_)
        | DecisionError::PlanChanged { .. }
        | DecisionError::NotInDoubt { .. }
        | DecisionError::RecordedDone { .. }
        | DecisionError::Ended { .. }
        | DecisionError::Busy { .. }
        | DecisionError::Guarded { .. } => StatusCode::CONFLICT,
        DecisionError::NoReason => StatusCode::BAD_REQUEST,
        DecisionError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The bearer token of a request.
fn token(headers: &HeaderMap) -> Result<String, ApiError> {
    super::bearer(headers).map(str::to_owned).ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "send `Authorization: Bearer TOKEN` (a principal's token)".into(),
        )
    })
}

/// The principal calling, with at least the role `allowed` accepts.
async fn caller(
    shared: &Shared,
    headers: &HeaderMap,
    allowed: fn(Role) -> bool,
) -> Result<(String, Role, String), ApiError> {
    let token = token(headers)?;
    let (name, role) = shared
        .runtime()
        .state
        .authenticate(&token)
        .await?
        .ok_or(ApiError(
            StatusCode::UNAUTHORIZED,
            DecisionError::Unauthenticated.to_string(),
        ))?;
    if !allowed(role) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "principal `{name}` is {}; this needs the {} role (`stepgate principal add NAME --role ROLE` makes one)",
                with_article(role.as_str()),
                roles_allowed(allowed)
            ),
        ));
    }
    Ok((name, role, token))
}

/// The roles `allowed` accepts, as words: "approver, operator or admin".
fn roles_allowed(allowed: fn(Role) -> bool) -> String {
    let names: Vec<&str> = [Role::Viewer, Role::Approver, Role::Operator, Role::Admin]
        .into_iter()
        .filter(|r| allowed(*r))
        .map(Role::as_str)
        .collect();
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// "an approver", "a viewer".
fn with_article(word: &str) -> String {
    match word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        true => format!("an {word}"),
        false => format!("a {word}"),
    }
}

fn anyone(_: Role) -> bool {
    true
}

/// How long `/readyz` waits for the state store. A store that is down
/// makes the pool retry its connection for its whole acquire timeout
/// (30 s), longer than any probe waits: the answer must come first.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let runtime = shared.runtime();
    // The endpoint takes no token: the store's own error (which can name
    // its database and user) goes to the log, not the answer.
    let why = match tokio::time::timeout(READY_WITHIN, runtime.state.runs(None, 1)).await {
        Ok(Ok(_)) => return (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => {
            tracing::warn!("readyz: the state store is not reachable: {e}");
            "it answered with an error (the server's log has it)".to_owned()
        }
        Err(_) => format!("no answer within {} s", READY_WITHIN.as_secs()),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the state store is not reachable: {why}"),
    )
        .into_response()
}

pub async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let pending = shared
        .runtime()
        .state
        .pending_approvals()
        .await
        .unwrap_or_default();
    let oldest = pending
        .iter()
        .map(|p| (now_ms() - p.created_at) / 1000)
        .max()
        .unwrap_or(0);
    let runtime = shared.runtime();
    let playbooks: Vec<&str> = runtime
        .config
        .playbooks
        .keys()
        .map(String::as_str)
        .collect();
    let limits = runtime
        .config
        .guard
        .live_run_counts(&playbooks, &*runtime.state)
        .await;
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(pending.len() as i64, oldest, &limits),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct RunsQuery {
    status: Option<String>,
    limit: Option<i64>,
}

pub async fn runs(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> Result<Json<Json_>, ApiError> {
    caller(&shared, &headers, anyone).await?;
    let runs = shared
        .runtime()
        .state
        .runs(q.status.as_deref(), q.limit.unwrap_or(50).clamp(1, 1000))
        .await?;
    Ok(Json(json!(runs)))
}

pub async fn show_run(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    caller(&shared, &headers, anyone).await?;
    let state = &shared.runtime().state;
    let run = state
        .run(&id)
        .await?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run `{id}`")))?;
    let journal = state.journal(&id).await?;
    let deciders = state.deciders(&id).await?;
    Ok(Json(
        json!({ "run": run, "journal": journal, "deciders": deciders }),
    ))
}

pub async fn approvals(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    caller(&shared, &headers, anyone).await?;
    Ok(Json(json!(
        shared.runtime().state.pending_approvals().await?
    )))
}

#[derive(Deserialize)]
pub struct DecideBody {
    approve: bool,
    reason: String,
    /// The plan digest (8+ hex digits) the approver looked at.
    plan: Option<String>,
}

pub async fn decide(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((id, seq)): Path<(String, u64)>,
    Json(body): Json<DecideBody>,
) -> Result<Json<Json_>, ApiError> {
    let (principal, role, _) = caller(&shared, &headers, Role::may_approve).await?;
    let status = super::decide(
        &shared,
        super::Decision {
            principal: &principal,
            role,
            run_id: &id,
            seq,
            approve: body.approve,
            reason: &body.reason,
            plan: body.plan.as_deref(),
        },
    )
    .await?;
    let settled = !matches!(status, ApprovalStatus::Pending { .. });
    Ok(Json(json!({ "status": status, "resuming": settled })))
}

#[derive(Deserialize)]
pub struct PlanBody {
    /// The whole plan's digest (8+ hex digits) the approver looked at.
    plan: String,
    reason: String,
}

/// Approves a run's whole plan (approvers): each of its writes passes
/// while the run makes exactly those, in order.
pub async fn approve_plan(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<PlanBody>,
) -> Result<Json<Json_>, ApiError> {
    let (principal, role, _) = caller(&shared, &headers, Role::may_approve).await?;
    let (plan, status) =
        super::approve_plan(&shared, &principal, role, &id, &body.plan, &body.reason).await?;
    let settled = !matches!(status, ApprovalStatus::Pending { .. });
    Ok(Json(
        json!({ "plan": plan, "status": status, "resuming": settled }),
    ))
}

#[derive(Deserialize)]
pub struct ResolveBody {
    /// `retry` or `mark-done`.
    resolution: String,
    reason: String,
    /// With mark-done: what the playbook gets back.
    result: Option<Json_>,
}

pub async fn resolve(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((id, seq)): Path<(String, u64)>,
    Json(body): Json<ResolveBody>,
) -> Result<Json<Json_>, ApiError> {
    let (_, _, token) = caller(&shared, &headers, Role::may_operate).await?;
    let state = &shared.runtime().state;
    let resolution = match body.resolution.as_str() {
        "retry" => Resolution::Retry,
        "mark-done" => {
            let in_doubt = state.in_doubt_about(&id, seq).await?;
            if let Some(answer) = in_doubt.recorded_answer() {
                // The store holds its answer; that is what the playbook gets.
                Resolution::MarkDone(answer)
            } else {
                let entry = in_doubt.entry;
                Resolution::MarkDone(
                    crate::caps::resolved_result(&entry.interface, &entry.op, body.result)
                        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?,
                )
            }
        }
        other => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("resolution `{other}`: use retry or mark-done"),
            ));
        }
    };
    state
        .resolve_in_doubt(&token, &id, seq, &resolution, &body.reason)
        .await?;
    dispatch::resume(shared.clone(), id.clone());
    Ok(Json(json!({ "resolved": seq, "resuming": true })))
}

#[derive(Deserialize)]
pub struct CancelBody {
    reason: String,
}

/// Cancels an open run (operators): it ends for good, and what it waits
/// for is denied. A run executing on any replica stops at its next write.
pub async fn cancel(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<CancelBody>,
) -> Result<Json<Json_>, ApiError> {
    let (_, _, token) = caller(&shared, &headers, Role::may_operate).await?;
    let cancelled = shared
        .runtime()
        .state
        .cancel_run(&token, &id, &body.reason)
        .await?;
    Ok(Json(json!(cancelled)))
}

#[derive(Deserialize)]
pub struct StartBody {
    playbook: String,
    /// An Alertmanager payload or a single alert.
    alert: Json_,
    #[serde(default)]
    live: bool,
}

/// Starts a run by hand, in the caller's name (who then cannot approve
/// its writes).
pub async fn start_run(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<StartBody>,
) -> Result<(StatusCode, Json<Json_>), ApiError> {
    let (name, _, _) = caller(&shared, &headers, Role::may_operate).await?;
    let alerts = crate::alert::parse(&body.alert.to_string())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let alert = crate::alert::pick(alerts)
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "the payload holds no alert".into()))?;
    let (runtime, playbook) = shared
        .playbook(&body.playbook)
        .await
        .map_err(|why| ApiError(StatusCode::BAD_REQUEST, why))?;
    let mode = if body.live {
        crate::gate::Mode::Live
    } else {
        crate::gate::Mode::DryRun
    };
    // A slot first, then the record: the run id answered exists, and its
    // lease starts when the run does.
    let slot = shared
        .slot(&playbook.name)
        .await
        .map_err(|closed| ApiError(StatusCode::SERVICE_UNAVAILABLE, closed.to_string()))?;
    let run_id = crate::run::new_run_id();
    let alert_json = serde_json::to_value(&alert).unwrap_or_default();
    runtime
        .state
        .start_run(crate::state::runs::NewRun {
            id: &run_id,
            playbook: &playbook.name,
            mode,
            alert: &alert_json,
            started_by: &name,
            step_mode: false,
            fingerprint: None,
            inbox_id: None,
        })
        .await?;
    let request = crate::run::RunRequest {
        alert,
        mode,
        approver: Arc::new(crate::approvals::StoredApprover::new(
            runtime.state.clone(),
            &name,
        )),
        progress: Box::new(crate::journal::Quiet),
        run_id: Some(run_id.clone()),
        started_by: name,
        step_mode: false,
    };
    let id = run_id.clone();
    let executing = shared.executing(&run_id);
    let state = runtime.state.clone();
    tokio::spawn(dispatch::contained(state, run_id.clone(), async move {
        let _executing = executing;
        dispatch::run_in_slot(&shared, slot, (runtime, playbook), id, request).await;
    }));
    Ok((StatusCode::ACCEPTED, Json(json!({ "run_id": run_id }))))
}

/// `POST /-/reload` (admins): the config file read again, put in force only
/// if it is valid.
pub async fn reload(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<Json_>, ApiError> {
    caller(&shared, &headers, |role| role == Role::Admin).await?;
    shared.reload().map_err(|why| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the config was not reloaded: {why}"),
        )
    })?;
    Ok(Json(json!({ "reloaded": true })))
}
