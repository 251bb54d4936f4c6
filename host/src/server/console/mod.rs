//! The web console under `/ui/`: approvers see what waits, a run's
//! timeline (live while it moves), the plan an approval rests on, and a
//! run's audit log, and decide with a reason.
//!
//! Sign-in takes a principal's token once and answers with a session
//! cookie (HttpOnly, SameSite=Strict, `Path=/ui`, Secure when the server's
//! `public_url` is https or the request came through a TLS proxy). Every
//! state change is a POST that must carry the session's CSRF token (and,
//! when the browser sends an `Origin`, come from this server). A decision
//! goes through [`super::decide`], the path the REST API and Slack take:
//! the same roles, groups, quorum, no self-approval, and the plan digest
//! the page showed (a changed plan is refused, and the new one shown).
//!
//! The pages are server-rendered ([`views`]), every outside string escaped
//! ([`html`]); the one script only refreshes a live timeline. Nothing is
//! loaded from elsewhere, and the Content-Security-Policy says so.

pub mod html;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::Shared;
use crate::state::approvals::DecisionError;
use crate::state::now_ms;
use crate::state::sessions::Session;
use html::{Viewer, page};

/// The session cookie.
const SESSION: &str = "sg_session";
/// The sign-in form's own CSRF cookie (before there is a session).
const LOGIN: &str = "sg_login";
/// How long a session lasts.
const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

/// The console's routes, to merge into the server's router.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(approvals))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/runs", get(runs))
        .route("/ui/runs/{id}", get(run))
        .route("/ui/runs/{id}/timeline", get(timeline))
        .route("/ui/runs/{id}/audit", get(audit))
        .route("/ui/runs/{id}/approvals/{seq}", get(plan).post(decide))
        .route("/ui/runs/{id}/plan", post(approve_all))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/console.js", get(js))
}

/// An HTML answer with the console's security headers.
fn respond(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

async fn css() -> Response {
    static_file("text/css; charset=utf-8", html::CSS)
}

async fn js() -> Response {
    static_file("text/javascript; charset=utf-8", html::JS)
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    secure_headers(response.headers_mut());
    response
}

/// The value of cookie `name` in the request, if sent.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Whether cookies must be marked `Secure`: the server is reached over
/// TLS (its public URL, or the proxy in front of it says so).
fn over_tls(shared: &Shared, headers: &HeaderMap) -> bool {
    let public = shared
        .runtime()
        .config
        .server
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let proxied = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    public || proxied
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in session, as a handler's argument: a request without a live
/// one is sent to the sign-in page instead.
struct SignedIn(Session);

impl axum::extract::FromRequestParts<Arc<Shared>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Response> {
        session(shared, &parts.headers).await.map(SignedIn)
    }
}

/// The signed-in session, or the answer to give instead (the sign-in
/// page).
async fn session(shared: &Shared, headers: &HeaderMap) -> Result<Session, Response> {
    let found = match cookie(headers, SESSION) {
        Some(id) => shared.runtime().state.session(id).await,
        None => Ok(None),
    };
    match found {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(Redirect::to("/ui/login").into_response()),
        Err(e) => Err(failure(&e.to_string())),
    }
}

fn failure(why: &str) -> Response {
    tracing::error!("console: {why}");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(
            "Error",
            None,
            &views::problem("the state store failed; reload the page to retry", None),
        ),
    )
}

fn viewer(session: &Session) -> Viewer<'_> {
    Viewer {
        principal: &session.principal,
        role: session.role.as_str(),
        csrf: &session.csrf,
    }
}

/// Whether a POST is this session's own: the CSRF token matches (in
/// constant time) and, if the browser names the page's origin, it is this
/// server: as the request reached it (`Host`), or as `server.public_url`
/// names it (behind a proxy that rewrites `Host`).
fn same_origin_post(shared: &Shared, session_csrf: &str, given: &str, headers: &HeaderMap) -> bool {
    let token_ok = constant_time_eq(session_csrf.as_bytes(), given.as_bytes());
    let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let origin = origin.trim_end_matches('/');
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let this = origin
                .split_once("://")
                .is_some_and(|(_, rest)| Some(rest) == host);
            let public = shared
                .runtime()
                .config
                .server
                .public_url
                .as_deref()
                .is_some_and(|url| origin_of(url) == Some(origin));
            this || public
        }
    };
    token_ok && origin_ok
}

/// `scheme://host[:port]` of a URL.
fn origin_of(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find('/').unwrap_or(rest.len());
    url.get(..scheme.len() + 3 + end)
}

/// Byte equality that takes the same time wherever the first difference is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn forbidden_post() -> Response {
    respond(
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            None,
            &views::problem(
                "this form is not from your session (a missing or wrong CSRF token, or another site); reload the page and try again",
                Some("/ui/"),
            ),
        ),
    )
}

async fn login_page(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    login_form(&shared, &headers, StatusCode::OK, None)
}

fn login_form(
    shared: &Shared,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let Ok(token) = crate::state::approvals::random_hex() else {
        return failure("no randomness for a sign-in form");
    };
    let mut response = respond(status, page("Sign in", None, &views::login(&token, error)));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN, &token, "/ui/login", 600, over_tls(shared, headers)),
    );
    response
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    login_csrf: String,
}

async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // The form must come from the sign-in page this browser was given, so
    // no other site can sign a victim in as someone else.
    let expected = cookie(&headers, LOGIN).unwrap_or("");
    if expected.is_empty() || !same_origin_post(&shared, expected, &form.login_csrf, &headers) {
        return login_form(
            &shared,
            &headers,
            StatusCode::FORBIDDEN,
            Some("the sign-in form expired or came from elsewhere; sign in again"),
        );
    }
    let state = shared.runtime().state.clone();
    let (principal, role) = match state.authenticate(form.token.trim()).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            return login_form(
                &shared,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some(&DecisionError::Unauthenticated.to_string()),
            );
        }
        Err(e) => return failure(&e.to_string()),
    };
    let (id, _) = match state.open_session(&principal, role, SESSION_TTL).await {
        Ok(opened) => opened,
        Err(e) => return failure(&e.to_string()),
    };
    tracing::info!(principal = %principal, "console: signed in");
    let secure = over_tls(&shared, &headers);
    let mut response = Redirect::to("/ui/").into_response();
    let cookies = response.headers_mut();
    cookies.append(
        header::SET_COOKIE,
        set_cookie(SESSION, &id, "/ui", SESSION_TTL.as_secs(), secure),
    );
    cookies.append(
        header::SET_COOKIE,
        set_cookie(LOGIN, "", "/ui/login", 0, secure),
    );
    secure_headers(cookies);
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    SignedIn(session): SignedIn,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !same_origin_post(&shared, &session.csrf, &form.csrf, &headers) {
        return forbidden_post();
    }
    if let Some(id) = cookie(&headers, SESSION)
        && let Err(e) = shared.runtime().state.close_session(id).await
    {
        return failure(&e.to_string());
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION, "", "/ui", 0, over_tls(&shared, &headers)),
    );
    response
}

async fn approvals(State(shared): State<Arc<Shared>>, SignedIn(session): SignedIn) -> Response {
    match shared.runtime().state.pending_approvals().await {
        Ok(pending) => respond(
            StatusCode::OK,
            page(
                "Approvals",
                Some(&viewer(&session)),
                &views::approvals(&pending, now_ms()),
            ),
        ),
        Err(e) => failure(&e.to_string()),
    }
}

async fn runs(State(shared): State<Arc<Shared>>, SignedIn(session): SignedIn) -> Response {
    match shared.runtime().state.runs(None, 100).await {
        Ok(runs) => respond(
            StatusCode::OK,
            page("Runs", Some(&viewer(&session)), &views::runs(&runs)),
        ),
        Err(e) => failure(&e.to_string()),
    }
}

fn not_found(session: &Session, what: &str) -> Response {
    respond(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            Some(&viewer(session)),
            &views::problem(what, Some("/ui/runs")),
        ),
    )
}

async fn run(
    State(shared): State<Arc<Shared>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let state = shared.runtime().state.clone();
    let loaded = async {
        let Some(run) = state.run(&id).await? else {
            return Ok(None);
        };
        let journal = state.journal(&id).await?;
        let deciders = state.deciders(&id).await?;
        let mut requests = Vec::new();
        for seq in state.approval_seqs(&id).await? {
            if let Some(r) = state.approval_request(&id, seq.max(0) as u64).await? {
                requests.push(r);
            }
        }
        Ok::<_, crate::state::StateError>(Some((run, journal, deciders, requests)))
    }
    .await;
    match loaded {
        Ok(Some((run, journal, deciders, requests))) => respond(
            StatusCode::OK,
            page(
                &format!("Run {}", run.id),
                Some(&viewer(&session)),
                &views::run(&run, &journal, &deciders, &requests),
            ),
        ),
        Ok(None) => not_found(&session, &format!("no run `{id}`")),
        Err(e) => failure(&e.to_string()),
    }
}

/// The timeline alone, for the page's refresh.
async fn timeline(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(answer) = session(&shared, &headers).await {
        let _ = answer;
        return respond(StatusCode::UNAUTHORIZED, String::new());
    }
    let state = shared.runtime().state.clone();
    let loaded = async {
        let Some(run) = state.run(&id).await? else {
            return Ok(None);
        };
        Ok::<_, crate::state::StateError>(Some((
            run,
            state.journal(&id).await?,
            state.deciders(&id).await?,
        )))
    }
    .await;
    match loaded {
        Ok(Some((run, journal, deciders))) => {
            respond(StatusCode::OK, views::timeline(&run, &journal, &deciders))
        }
        Ok(None) => respond(StatusCode::NOT_FOUND, String::new()),
        Err(e) => failure(&e.to_string()),
    }
}

async fn audit(
    State(shared): State<Arc<Shared>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    match shared.runtime().state.audit_records_of(&id).await {
        Ok(records) => respond(
            StatusCode::OK,
            page(
                &format!("Audit of {id}"),
                Some(&viewer(&session)),
                &views::audit(&id, &records),
            ),
        ),
        Err(e) => failure(&e.to_string()),
    }
}

/// The plan page, with `notice` above it (a refusal to explain).
async fn plan_page(
    shared: &Shared,
    session: &Session,
    id: &str,
    seq: u64,
    status: StatusCode,
    notice: Option<&str>,
) -> Response {
    let state = shared.runtime().state.clone();
    match state.approval_request(id, seq).await {
        Ok(Some(request)) => {
            let whole = match state.plan_at(id, seq, &request.plan_digest).await {
                Ok(whole) => whole,
                Err(e) => return failure(&e.to_string()),
            };
            let deciding = views::Deciding {
                principal: &session.principal,
                may_approve: session.role.may_approve(),
                csrf: &session.csrf,
            };
            let mut body = String::new();
            if let Some(notice) = notice {
                body.push_str(&views::problem(notice, None));
            }
            body.push_str(&views::plan(&request, whole.as_ref(), &deciding, now_ms()));
            respond(
                status,
                page(
                    &format!("Approval {id} #{seq}"),
                    Some(&viewer(session)),
                    &body,
                ),
            )
        }
        Ok(None) => not_found(
            session,
            &format!(
                "no approval request #{seq} in run `{id}`; it may have been set aside by a re-plan"
            ),
        ),
        Err(e) => failure(&e.to_string()),
    }
}

async fn plan(
    State(shared): State<Arc<Shared>>,
    SignedIn(session): SignedIn,
    Path((id, seq)): Path<(String, u64)>,
) -> Response {
    plan_page(&shared, &session, &id, seq, StatusCode::OK, None).await
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: String,
    /// The plan digest the page showed.
    plan: String,
    reason: String,
    /// `approve` or `deny`.
    decision: String,
}

async fn decide(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    SignedIn(session): SignedIn,
    Path((id, seq)): Path<(String, u64)>,
    Form(form): Form<DecideForm>,
) -> Response {
    if !same_origin_post(&shared, &session.csrf, &form.csrf, &headers) {
        return forbidden_post();
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => {
            return plan_page(
                &shared,
                &session,
                &id,
                seq,
                StatusCode::BAD_REQUEST,
                Some("choose Approve or Deny"),
            )
            .await;
        }
    };
    let decision = super::Decision {
        principal: &session.principal,
        role: session.role,
        run_id: &id,
        seq,
        approve,
        reason: &form.reason,
        plan: Some(form.plan.trim()),
    };
    match super::decide(&shared, decision).await {
        Ok(_) => {
            tracing::info!(principal = %session.principal, run = %id, seq, approve, "console: decided");
            Redirect::to(&format!("/ui/runs/{}", views::path_part(&id))).into_response()
        }
        Err(e) => {
            let (status, notice) = refusal(&e);
            plan_page(&shared, &session, &id, seq, status, Some(&notice)).await
        }
    }
}

#[derive(Deserialize)]
struct WholePlanForm {
    csrf: String,
    /// The whole plan's digest the page showed.
    plan: String,
    reason: String,
}

async fn approve_all(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Form(form): Form<WholePlanForm>,
) -> Response {
    if !same_origin_post(&shared, &session.csrf, &form.csrf, &headers) {
        return forbidden_post();
    }
    let approved = super::approve_plan(
        &shared,
        &session.principal,
        session.role,
        &id,
        form.plan.trim(),
        &form.reason,
    )
    .await;
    match approved {
        Ok(_) => Redirect::to(&format!("/ui/runs/{}", views::path_part(&id))).into_response(),
        Err(e) => {
            let (status, notice) = refusal(&e);
            let seq = match shared.runtime().state.parked_on(&id).await {
                Ok(Some((seq, _))) => seq,
                _ => return not_found(&session, &notice),
            };
            plan_page(&shared, &session, &id, seq, status, Some(&notice)).await
        }
    }
}

/// The status and message of a decision that was not taken.
fn refusal(e: &DecisionError) -> (StatusCode, String) {
    if let DecisionError::PlanChanged { .. } = e {
        return (
            StatusCode::CONFLICT,
            "The plan changed since you looked: nothing was decided. Below is the plan as it is now; decide on it again.".to_owned(),
        );
    }
    (super::api::decision_status(e), format!("Not decided: {e}"))
}
