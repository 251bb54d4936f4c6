//! Approvals in Slack. When a write parks, its request is posted to the
//! configured channel as a Block Kit message: the write, the reason, the
//! plan's reads, the digest, and Approve / Deny buttons (Deny asks for a
//! reason in a modal). Slack posts each click to
//! `POST /hooks/slack/interactions`, which takes only requests signed with
//! the app's signing secret (`v0` HMAC-SHA256 over the timestamp and the
//! raw body, the timestamp within five minutes, compared in constant
//! time), each signature once. A Slack user decides as the principal the
//! config maps it to (`[principals.alice] slack = "U…"`), through
//! [`super::decide`]: roles, groups, quorum, no self-approval and the plan
//! digest the message showed apply as everywhere else. Every decision on
//! a request, from any face, updates its messages with who decided and
//! where it stands.
//!
//! Everything from a playbook or an alert is sent as `plain_text`, or
//! inside mrkdwn made inert ([`crate::inert::slack`]): no mention, link or
//! markup of theirs reaches the channel.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use sha2::Sha256;

use super::Shared;
use crate::config::SlackConfig;
use crate::inert;
use crate::state::approvals::{ApprovalStatus, DecisionError, RequestView, STEP_PAUSE};

/// How far a request's timestamp may be from now.
const WINDOW: Duration = Duration::from_secs(5 * 60);
/// The modal that asks a denial's reason.
const DENY_MODAL: &str = "stepgate_deny";
/// The most characters of a write, or of its reads, a message shows.
const SHOWN: usize = 2700;
/// The most lines of reads a message shows.
const READ_LINES: usize = 12;

/// The Slack app, its secrets resolved.
struct Slack {
    api_url: String,
    bot_token: String,
    channel: String,
    client: reqwest::Client,
}

impl Slack {
    /// The app of the config in force, if `[slack]` is set and its secrets
    /// resolve (they are then masked in everything the host shows).
    fn of(shared: &Shared) -> Option<Slack> {
        let runtime = shared.runtime();
        let config: &SlackConfig = runtime.config.slack.as_ref()?;
        let redactor = runtime.backends.redactor();
        let resolve = |secret: &crate::secret::Secret, key: &str| {
            secret
                .resolve(key, &runtime.config.base_dir, &redactor)
                .map_err(|e| tracing::error!("slack: {e}"))
                .ok()
        };
        Some(Slack {
            api_url: config.api_url.trim_end_matches('/').to_owned(),
            bot_token: resolve(&config.bot_token, "slack.bot_token")?,

            channel: config.channel.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .ok()?,
        })
    }

    /// Calls Web API `method`; its answer if Slack says `ok`.
    async fn call(&self, method: &str, body: &Json) -> Result<Json, String> {
        let response = self
            .client
            .post(format!("{}/{method}", self.api_url))
            .bearer_auth(&self.bot_token)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("{method}: {}", e.without_url()))?;
        let answer: Json = response
            .json()
            .await
            .map_err(|e| format!("{method}: the answer is not JSON: {}", e.without_url()))?;
        if answer["ok"] == true {
            Ok(answer)
        } else {
            Err(format!(
                "{method}: Slack said {}",
                answer["error"].as_str().unwrap_or("not ok")
            ))
        }
    }
}

/// The signing secret of the config in force, if `[slack]` is set.
fn signing_secret(shared: &Shared) -> Option<String> {
    let runtime = shared.runtime();
    let config = runtime.config.slack.as_ref()?;
    config
        .signing_secret
        .resolve(
            "slack.signing_secret",
            &runtime.config.base_dir,
            &runtime.backends.redactor(),
        )
        .map_err(|e| tracing::error!("slack: {e}"))
        .ok()
}

/// Whether a request carries the app's signature (`secret`), made within
/// the window; the signature (hex) if so.
fn signed(
    secret: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<String, &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header("x-slack-request-timestamp").ok_or("no X-Slack-Request-Timestamp")?;
    let at: i64 = timestamp
        .parse()
        .map_err(|_| "a timestamp that is not a number")?;
    if now_s.abs_diff(at) > WINDOW.as_secs() {
        return Err("a timestamp more than five minutes from now");
    }
    let given = header("x-slack-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(|hex_text| hex::decode(hex_text).ok())
        .ok_or("no v0 signature")?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| "an unusable signing secret")?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&given).map_err(|_| "a wrong signature")?;
    Ok(hex::encode(given))
}

/// What a button carries: the request and the plan the message showed.
fn button_value(r: &RequestView) -> String {
    format!("{}|{}|{}", r.run_id, r.seq, r.plan_digest)
}

fn parse_value(value: &str) -> Option<(String, u64, String)> {
    let mut parts = value.splitn(3, '|');
    let run = parts.next()?.to_owned();
    let seq = parts.next()?.parse().ok()?;
    let digest = parts.next()?.to_owned();
    Some((run, seq, digest))
}

/// `text` cut to `max` characters.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

fn plain(text: &str) -> Json {
    json!({ "type": "plain_text", "text": cut(&inert::line(text), 2900), "emoji": false })
}

/// Outside text inside a mrkdwn code block: made inert and kept from
/// closing the block.
fn code(text: &str) -> String {
    format!(
        "```{}```",
        cut(
            &inert::slack(&inert::text(text)).replace("```", "`\u{200b}``"),
            2800
        )
    )
}

fn who_decided(r: &RequestView) -> String {
    let said: Vec<String> = r
        .decisions
        .iter()
        .map(|d| {
            format!(
                "{} {} ({})",
                d.principal,
                if d.approve { "approved" } else { "denied" },
                d.reason
            )
        })
        .collect();
    match &r.status {
        ApprovalStatus::Pending { approvals, quorum } => format!(
            "Waiting: {approvals} of {quorum} approvals{}",
            if said.is_empty() {
                String::new()
            } else {
                format!(" — {}", said.join("; "))
            }
        ),
        ApprovalStatus::Approved { by } => format!(
            "Approved by {}; stepgate resumes the run{}",
            by.join(", "),
            if said.is_empty() {
                String::new()
            } else {
                format!(" — {}", said.join("; "))
            }
        ),
        ApprovalStatus::Denied { by, reason } => format!("Denied by {by}: {reason}"),
    }
}

/// The message of request `r`; `stale` when the run has re-planned since.
fn blocks(r: &RequestView, public_url: Option<&str>, stale: bool) -> (String, Json) {
    let title = format!(
        "Approval needed: {} wants {} on {}",
        r.playbook, r.op, r.target
    );
    let reads: String = r
        .plan
        .lines()
        .take(READ_LINES)
        .collect::<Vec<_>>()
        .join("\n");
    // An approval binds the whole write and plan: if either is cut here,
    // the approver must see it whole in the console first.
    let whole_here = r.detail.chars().count() <= SHOWN
        && r.plan.lines().count() <= READ_LINES
        && reads.chars().count() <= SHOWN;
    let mut context = format!(
        "Run `{}` #{} · started by {} · plan digest `{}`",
        inert::slack(&r.run_id),
        r.seq,
        inert::slack(&r.started_by),
        inert::slack(&r.plan_digest.chars().take(12).collect::<String>())
    );
    if let Some(url) = public_url {
        context.push_str(&format!(
            " · <{}/ui/runs/{}/approvals/{}|open in the console>",
            url.trim_end_matches('/'),
            super::console::views::path_part(&r.run_id),
            r.seq
        ));
    }
    let mut blocks = vec![
        json!({ "type": "header", "text": plain(&cut(&title, 140)) }),
        json!({ "type": "section", "text": plain(&format!("Reason: {}", r.reason)) }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("*The write*\n{}", code(&r.detail)) } }),
        json!({ "type": "section", "text": { "type": "mrkdwn", "text": format!("*What the run read before asking*\n{}", code(if reads.is_empty() { "no calls" } else { &reads })) } }),
        json!({ "type": "section", "text": plain(if whole_here { "Approving binds you to exactly this write and these reads." } else { "The write or its reads are too long to show whole here: review and approve them in the console (Deny works here)." }) }),
        json!({ "type": "context", "elements": [ { "type": "mrkdwn", "text": context } ] }),
    ];
    let status = if stale {
        "Superseded: the run re-planned on fresh data; a newer message asks again".to_owned()
    } else {
        who_decided(r)
    };
    blocks.push(json!({ "type": "section", "block_id": "status", "text": plain(&status) }));
    if !stale && matches!(r.status, ApprovalStatus::Pending { .. }) {
        let value = button_value(r);
        let mut buttons = Vec::new();
        if whole_here {
            buttons.push(json!({ "type": "button", "action_id": "approve", "style": "primary", "text": plain("Approve"), "value": value }));
        }
        buttons.push(json!({ "type": "button", "action_id": "deny", "style": "danger", "text": plain("Deny"), "value": value }));
        blocks.push(json!({ "type": "actions", "block_id": "decide", "elements": buttons }));
    }
    // The notification text is mrkdwn too: outside text made inert.
    let text = inert::slack(&inert::line(&format!("{title} — {status}")));
    (cut(&text, 2900), Json::Array(blocks))
}

/// After a write parked: posts its request to the channel, once per plan.
pub async fn post_request(shared: &Shared, run_id: &str, seq: u64) {
    let Some(slack) = Slack::of(shared) else {
        return;
    };
    let state = shared.runtime().state.clone();
    let request = match state.approval_request(run_id, seq).await {
        Ok(Some(r)) if r.op != STEP_PAUSE && matches!(r.status, ApprovalStatus::Pending { .. }) => {
            r
        }
        Ok(_) => return,
        Err(e) => {
            tracing::error!("slack: {e}");
            return;
        }
    };
    match state
        .claim_slack_message(run_id, seq, &request.plan_digest, &slack.channel)
        .await
    {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!("slack: {e}");
            return;
        }
    }
    let public_url = shared.runtime().config.server.public_url.clone();
    let (text, blocks) = blocks(&request, public_url.as_deref(), false);
    let posted = slack
        .call(
            "chat.postMessage",
            &json!({ "channel": slack.channel, "text": text, "blocks": blocks }),
        )
        .await;
    let kept = match &posted {
        Ok(answer) => {
            let channel = answer["channel"].as_str().unwrap_or(&slack.channel);
            let ts = answer["ts"].as_str().unwrap_or_default();
            state
                .set_slack_message(run_id, seq, &request.plan_digest, channel, ts)
                .await
        }
        Err(why) => {
            tracing::error!("slack: the approval request of {run_id} #{seq} was not posted: {why}");
            state
                .release_slack_message(run_id, seq, &request.plan_digest)
                .await
        }
    };
    if let Err(e) = kept {
        tracing::error!("slack: {e}");
    }
    // A message for an earlier plan of this request says it is superseded.
    if posted.is_ok()
        && let Ok(messages) = state.slack_messages(run_id, seq).await
        && messages.len() > 1
    {
        refresh(shared, run_id, seq).await;
    }
}

/// After a decision on request (`run_id`, `seq`), from any face: its
/// messages say who decided and where it stands.
pub async fn refresh(shared: &Shared, run_id: &str, seq: u64) {
    let Some(slack) = Slack::of(shared) else {
        return;
    };
    let state = shared.runtime().state.clone();
    let (Ok(Some(request)), Ok(messages)) = (
        state.approval_request(run_id, seq).await,
        state.slack_messages(run_id, seq).await,
    ) else {
        return;
    };
    let public_url = shared.runtime().config.server.public_url.clone();
    for (digest, message) in messages {
        let Some(ts) = message.ts else { continue };
        let stale = digest != request.plan_digest;
        let (text, blocks) = blocks(&request, public_url.as_deref(), stale);
        if let Err(why) = slack
            .call(
                "chat.update",
                &json!({ "channel": message.channel, "ts": ts, "text": text, "blocks": blocks }),
            )
            .await
        {
            tracing::warn!("slack: the message of {run_id} #{seq} was not updated: {why}");
        }
    }
}

fn answer(status: StatusCode, message: &str) -> Response {
    (status, message.to_owned()).into_response()
}

/// `POST /hooks/slack/interactions`.
pub async fn interactions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Nothing of the request is read, and nothing is built, before its
    // signature is checked.
    let Some(secret) = signing_secret(&shared) else {
        return answer(
            StatusCode::NOT_FOUND,
            "Slack approvals are not configured ([slack])",
        );
    };
    let signature = match signed(&secret, &headers, &body, chrono::Utc::now().timestamp()) {
        Ok(signature) => signature,
        Err(why) => {
            tracing::warn!("slack: refused an interaction: {why}");
            return answer(StatusCode::UNAUTHORIZED, &format!("refused: {why}"));
        }
    };
    match shared
        .runtime()
        .state
        .first_sight(&signature, WINDOW * 2)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("slack: refused a replayed interaction");
            return answer(
                StatusCode::CONFLICT,
                "refused: this request was already taken",
            );
        }
        Err(e) => {
            tracing::error!("slack: {e}");
            return answer(StatusCode::INTERNAL_SERVER_ERROR, "the state store failed");
        }
    }
    let Some(slack) = Slack::of(&shared) else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "Slack approvals are misconfigured; see the server's log",
        );
    };
    let payload: Option<Json> =
        url_form_field(&body, "payload").and_then(|p| serde_json::from_str(&p).ok());
    let Some(payload) = payload else {
        return answer(
            StatusCode::BAD_REQUEST,
            "no `payload` form field holding JSON",
        );
    };
    match payload["type"].as_str() {
        Some("block_actions") => block_action(&shared, &slack, &payload).await,
        Some("view_submission") if payload["view"]["callback_id"] == DENY_MODAL => {
            deny_submitted(&shared, &payload).await
        }
        _ => answer(
            StatusCode::BAD_REQUEST,
            "an interaction stepgate does not take",
        ),
    }
}

/// The value of field `name` of an `application/x-www-form-urlencoded` body.
fn url_form_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The principal Slack user `user` decides as, and its role.
async fn principal_of(
    shared: &Shared,
    user: &str,
) -> Result<(String, crate::state::approvals::Role), String> {
    let runtime = shared.runtime();
    let Some(name) = runtime.config.principal_of_slack_user(user) else {
        return Err(format!(
            "Your Slack user ({}) is not mapped to a stepgate principal; nothing was decided. Ask an admin to add `slack = \"{}\"` under [principals.NAME].",
            inert::slack(user),
            inert::slack(user)
        ));
    };
    match runtime.state.principal_role(name).await {
        Ok(Some(role)) => Ok((name.to_owned(), role)),
        Ok(None) => Err(format!(
            "Principal `{}` does not exist or was revoked; nothing was decided.",
            inert::slack(name)
        )),
        Err(e) => {
            tracing::error!("slack: {e}");
            Err("The state store failed; nothing was decided. Try again.".to_owned())
        }
    }
}

/// Tells `user` alone, in the message's channel.
async fn tell(slack: &Slack, channel: &str, user: &str, text: &str) {
    if let Err(why) = slack
        .call(
            "chat.postEphemeral",
            &json!({ "channel": channel, "user": user, "text": text }),
        )
        .await
    {
        tracing::warn!("slack: could not tell {user}: {why}");
    }
}

fn refusal_text(e: &DecisionError) -> String {
    match e {
        DecisionError::PlanChanged { .. } => "The plan changed since this message was posted (the run re-planned on fresh data); nothing was decided. Decide on the newer message.".to_owned(),
        other => format!("Not decided: {}", inert::slack(&other.to_string())),
    }
}

async fn block_action(shared: &Arc<Shared>, slack: &Slack, payload: &Json) -> Response {
    let user = payload["user"]["id"].as_str().unwrap_or_default();
    let channel = payload["channel"]["id"]
        .as_str()
        .unwrap_or(&slack.channel)
        .to_owned();
    let action = &payload["actions"][0];
    let Some((run_id, seq, digest)) = action["value"].as_str().and_then(parse_value) else {
        return answer(StatusCode::BAD_REQUEST, "a button stepgate did not make");
    };
    let (principal, role) = match principal_of(shared, user).await {
        Ok(found) => found,
        Err(why) => {
            tell(slack, &channel, user, &why).await;
            return answer(StatusCode::OK, "");
        }
    };
    match action["action_id"].as_str() {
        Some("approve") => {
            let decided = super::decide(
                shared,
                super::Decision {
                    principal: &principal,
                    role,
                    run_id: &run_id,
                    seq,
                    approve: true,
                    reason: "approved in Slack",
                    plan: Some(&digest),
                },
            )
            .await;
            if let Err(e) = decided {
                tell(slack, &channel, user, &refusal_text(&e)).await;
            }
            answer(StatusCode::OK, "")
        }
        Some("deny") => {
            let metadata = json!({ "run": run_id, "seq": seq, "plan": digest, "channel": channel })
                .to_string();
            let modal = json!({
                "trigger_id": payload["trigger_id"],
                "view": {
                    "type": "modal",
                    "callback_id": DENY_MODAL,
                    "private_metadata": metadata,
                    "title": plain("Deny the write"),
                    "submit": plain("Deny"),
                    "close": plain("Cancel"),
                    "blocks": [{
                        "type": "input",
                        "block_id": "reason",
                        "label": plain("Why (goes to the audit log)"),
                        "element": { "type": "plain_text_input", "action_id": "reason", "multiline": true },
                    }],
                },
            });
            if let Err(why) = slack.call("views.open", &modal).await {
                tracing::warn!("slack: the deny modal did not open: {why}");
                tell(slack, &channel, user, "The reason dialog did not open; nothing was decided. Try again, or deny in the console.").await;
            }
            answer(StatusCode::OK, "")
        }
        _ => answer(StatusCode::BAD_REQUEST, "a button stepgate did not make"),
    }
}

/// The deny modal was submitted: its reason denies the request.
async fn deny_submitted(shared: &Arc<Shared>, payload: &Json) -> Response {
    let errors = |text: String| {
        axum::Json(json!({ "response_action": "errors", "errors": { "reason": cut(&text, 150) } }))
            .into_response()
    };
    let user = payload["user"]["id"].as_str().unwrap_or_default();
    let metadata: Json = payload["view"]["private_metadata"]
        .as_str()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(Json::Null);
    let (Some(run_id), Some(seq), Some(digest)) = (
        metadata["run"].as_str(),
        metadata["seq"].as_u64(),
        metadata["plan"].as_str(),
    ) else {
        return answer(StatusCode::BAD_REQUEST, "a dialog stepgate did not open");
    };
    let reason = payload["view"]["state"]["values"]["reason"]["reason"]["value"]
        .as_str()
        .unwrap_or_default();
    let (principal, role) = match principal_of(shared, user).await {
        Ok(found) => found,
        Err(why) => return errors(why),
    };
    let decided = super::decide(
        shared,
        super::Decision {
            principal: &principal,
            role,
            run_id,
            seq,
            approve: false,
            reason,
            plan: Some(digest),
        },
    )
    .await;
    match decided {
        Ok(_) => answer(StatusCode::OK, ""),
        Err(e) => errors(refusal_text(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(detail: &str, plan: &str) -> RequestView {
        RequestView {
            run_id: "r1".into(),
            seq: 3,
            playbook: "pb".into(),
            op: "db.execute".into(),
            target: "ledger".into(),
            detail: detail.into(),
            reason: "<!channel> look".into(),
            started_by: "ops".into(),
            quorum: 1,
            groups: Vec::new(),
            plan: plan.into(),
            plan_digest: "ab".repeat(32),
            created_at: 0,
            expires_at: None,
            status: ApprovalStatus::Pending {
                approvals: 0,
                quorum: 1,
            },
            decisions: Vec::new(),
            preview: None,
            previewed_at: None,
        }
    }

    fn actions(blocks: &Json) -> Vec<String> {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap().clone())
            .map(|e| e["action_id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn approve_is_offered_only_on_a_write_shown_whole() {
        let (text, shown) = blocks(&request("UPDATE t SET a = 1", "#1 db.query …"), None, false);
        assert_eq!(actions(&shown), ["approve", "deny"]);
        assert!(!text.contains("<!channel>"), "{text}");

        // A statement whose tail would be cut: only Deny here, approve in
        // the console.
        let long = format!("UPDATE t SET a = 1 {}; DROP TABLE t", " ".repeat(SHOWN));
        let (_, cut_write) = blocks(&request(&long, "#1 db.query …"), None, false);
        assert_eq!(actions(&cut_write), ["deny"]);
        let many_reads = (0..=READ_LINES)
            .map(|i| format!("#{i} read"))
            .collect::<Vec<_>>()
            .join("\n");
        let (_, cut_reads) = blocks(&request("UPDATE t SET a = 1", &many_reads), None, false);
        assert_eq!(actions(&cut_reads), ["deny"]);
    }
}
