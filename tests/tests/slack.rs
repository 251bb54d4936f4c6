//! Approvals in Slack against a local fake of Slack's Web API (it records
//! every call and answers `ok`): a parked write is posted with the plan
//! and buttons; interactions are taken only when signed with the signing
//! secret within five minutes, once each; a Slack user decides as the
//! principal the config maps it to, under the same rules as everywhere
//! (no self-approval, the plan digest the message showed); Deny asks for a
//! reason in a modal; each message is updated with who decided.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::{Value as Json, json};
use stepgate::server::Server;
use stepgate::state::approvals::{ApprovalStatus, Role};
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::*;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn fake_slack() -> impl Fn(&receiver::Received, usize) -> Reply + Send + Sync + 'static {
    |request, n| match request.path.as_str() {
        "/chat.postMessage" => Reply::ok(
            json!({ "ok": true, "channel": "C0APPROVE", "ts": format!("1700000000.{n:06}") })
                .to_string(),
        ),
        _ => Reply::ok(r#"{"ok": true}"#),
    }
}

struct World {
    _setup: Setup,
    runtime: Arc<stepgate::runtime::Runtime>,
    slack: Receiver,
    url: String,
    client: reqwest::Client,
    ops: String,
    alice: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn world() -> World {
    let slack = Receiver::start(fake_slack()).await;
    let setup = Setup::new(&format!(
        r#"
[state]
path = "{{dir}}/state.db"
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*", "BENCH_*"]
[server]
sweep_every = "200ms"
public_url = "https://stepgate.example"
[slack]
signing_secret = "{SECRET}"
bot_token = "xoxb-test-token"
channel = "C0APPROVE"
api_url = "{}"
[principals.alice]
slack = "UALICE"
[principals.carol]
slack = "UCAROL"
[principals.ops]
slack = "UOPS"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.flags = {{ read = ["BENCH_*"], write = ["PLAZA_*"] }}
gates = {{ default = "approve" }}
"#,
        slack.url,
        stepgate_artifacts::HOSTILE
    ));
    let runtime = Arc::new(setup.runtime());
    let state = &runtime.state;
    let ops = state.add_principal("ops", Role::Operator).await.unwrap();
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();
    state.add_principal("carol", Role::Approver).await.unwrap();
    state.set_flag("BENCH_FLAG", "before").await.unwrap();
    let server = Server::start(runtime.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    World {
        _setup: setup,
        runtime,
        slack,
        url,
        client: reqwest::Client::new(),
        ops,
        alice,
        stop: Some(stop),
    }
}

fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn form(payload: &Json) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

fn click(user: &str, action: &str, value: &str) -> Json {
    json!({
        "type": "block_actions",
        "user": { "id": user },
        "channel": { "id": "C0APPROVE" },
        "trigger_id": format!("trigger-{user}"),
        "actions": [{ "action_id": action, "value": value }],
    })
}

impl World {
    /// Posts `body` to the interactions hook, signed with `secret` at
    /// `timestamp`.
    async fn interact_as(&self, body: &str, secret: &str, timestamp: i64) -> reqwest::Response {
        self.client
            .post(format!("{}/hooks/slack/interactions", self.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", sign(secret, timestamp, body))
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    async fn interact(&self, payload: &Json) -> reqwest::Response {
        self.interact_as(&form(payload), SECRET, chrono::Utc::now().timestamp())
            .await
    }

    async fn parked_run(&self, labels: Json, annotations: Json) -> String {
        let started: Json = self
            .client
            .post(format!("{}/api/runs", self.url))
            .bearer_auth(&self.ops)
            .json(&json!({ "playbook": "hostile", "alert": { "labels": labels, "annotations": annotations }, "live": true }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = started["run_id"].as_str().unwrap().to_owned();
        self.until(|| async { self.status(&id).await == "parked" })
            .await;
        id
    }

    async fn status(&self, id: &str) -> String {
        self.runtime.state.run(id).await.unwrap().unwrap().status
    }

    async fn until<F, Fut>(&self, done: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        eventually("a step of the Slack flow", done).await;
    }

    /// The Slack API calls made to `method` so far, their bodies.
    fn calls(&self, method: &str) -> Vec<Json> {
        self.slack
            .requests()
            .into_iter()
            .filter(|r| r.path == format!("/{method}"))
            .map(|r| r.json())
            .collect()
    }

    /// The posted message of run `id`, waiting for it.
    async fn message_of(&self, id: &str) -> Json {
        self.until(|| async { self.posted(id).is_some() }).await;
        self.posted(id).unwrap()
    }

    fn posted(&self, id: &str) -> Option<Json> {
        self.calls("chat.postMessage")
            .into_iter()
            .rfind(|m| m.to_string().contains(id))
    }

    async fn request(&self, id: &str, seq: u64) -> stepgate::state::approvals::RequestView {
        self.runtime
            .state
            .approval_request(id, seq)
            .await
            .unwrap()
            .unwrap()
    }
}

/// The Approve button's value in a posted message.
fn button(message: &Json) -> String {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("a message with buttons")["elements"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The text of every mrkdwn element of a message (where Slack would read
/// markup).
fn mrkdwn(message: &Json) -> String {
    fn walk(value: &Json, out: &mut String) {
        match value {
            Json::Object(map) => {
                if map.get("type").and_then(Json::as_str) == Some("mrkdwn") {
                    out.push_str(map["text"].as_str().unwrap_or_default());
                    out.push('\n');
                }
                map.values().for_each(|v| walk(v, out));
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = String::new();
    walk(&message["blocks"], &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_approved_and_denied_from_slack_under_the_same_rules() {
    let mut w = world().await;
    let run = w
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "flag-set" }),
            json!({ "name": "PLAZA_TEST_FLAG", "value": "1", "reason": "<!channel> pause <https://evil.example|payouts>" }),
        )
        .await;
    let message = w.message_of(&run).await;
    assert_eq!(message["channel"], "C0APPROVE");
    let text = message.to_string();
    let digest = w.request(&run, 1).await.plan_digest;
    assert_eq!(button(&message), format!("{run}|1|{digest}"));
    assert!(
        text.contains("PLAZA_TEST_FLAG") && text.contains(&digest[..12]),
        "{text}"
    );
    let marked = mrkdwn(&message);
    assert!(
        !marked.contains("<!channel>") && !marked.contains("<https://evil"),
        "outside text reached Slack as markup: {marked}"
    );
    assert!(marked.contains("&lt;!channel&gt;"), "{marked}");
    assert!(
        marked.contains("https://stepgate.example/ui/runs/"),
        "the message links to the console: {marked}"
    );
    // The bot token went to Slack, and nowhere else of the message.
    let posted = w.slack.requests();
    assert_eq!(posted[0].headers["authorization"], "Bearer xoxb-test-token");
    assert!(!text.contains("xoxb"));

    let approve = click("UALICE", "approve", &button(&message));
    let body = form(&approve);
    let now = chrono::Utc::now().timestamp();

    // Unsigned, wrongly signed, or signed too long ago: refused.
    let wrong = w.interact_as(&body, "not-the-secret", now).await;
    assert_eq!(wrong.status(), 401);
    let old = w.interact_as(&body, SECRET, now - 6 * 60).await;
    assert_eq!(old.status(), 401);
    let unsigned = w
        .client
        .post(format!("{}/hooks/slack/interactions", w.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    assert!(w.request(&run, 1).await.decisions.is_empty());

    // A Slack user no principal is mapped to decides nothing, and is told.
    let stranger = w
        .interact(&click("UNOBODY", "approve", &button(&message)))
        .await;
    assert_eq!(stranger.status(), 200);
    let told = w.calls("chat.postEphemeral");
    assert!(
        told.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("not mapped")
            && told.last().unwrap()["user"] == "UNOBODY",
        "{told:?}"
    );
    // The operator who started the run may not approve it from Slack either.
    let own = w
        .interact(&click("UOPS", "approve", &button(&message)))
        .await;
    assert_eq!(own.status(), 200);
    let told = w.calls("chat.postEphemeral");
    assert!(
        told.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("may not decide its own writes"),
        "{told:?}"
    );
    assert!(w.request(&run, 1).await.decisions.is_empty());

    // Alice approves: recorded as alice, the run resumes and finishes.
    let approved = w.interact_as(&body, SECRET, now).await;
    assert_eq!(approved.status(), 200);
    w.until(|| async { w.status(&run).await == "done" }).await;
    assert_eq!(
        w.runtime
            .state
            .flag("PLAZA_TEST_FLAG")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    let decided = w.request(&run, 1).await;
    assert_eq!(decided.decisions.len(), 1);
    assert_eq!(decided.decisions[0].principal, "alice");
    assert_eq!(decided.decisions[0].plan_digest, digest);
    w.until(|| async {
        w.calls("chat.update")
            .iter()
            .any(|u| u["ts"] == message_ts(&w, &run) && u.to_string().contains("Approved by alice"))
    })
    .await;
    let update = w
        .calls("chat.update")
        .into_iter()
        .rfind(|u| u.to_string().contains("Approved by alice"))
        .unwrap();
    assert!(
        !update.to_string().contains("\"actions\""),
        "a settled message keeps no buttons: {update}"
    );

    // The same signed request again: refused, nothing decided twice.
    let replayed = w.interact_as(&body, SECRET, now).await;
    assert_eq!(replayed.status(), 409);
    assert_eq!(w.request(&run, 1).await.decisions.len(), 1);

    // Deny asks for a reason in a modal; its submission denies.
    let denied_run = w
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "flag-set" }),
            json!({ "name": "PLAZA_OTHER", "value": "1", "reason": "try the other flag" }),
        )
        .await;
    let message = w.message_of(&denied_run).await;
    let deny = w
        .interact(&click("UCAROL", "deny", &button(&message)))
        .await;
    assert_eq!(deny.status(), 200);
    assert!(
        w.request(&denied_run, 1).await.decisions.is_empty(),
        "a click on Deny alone decides nothing"
    );
    let modal = w
        .calls("views.open")
        .pop()
        .expect("the reason modal opened");
    assert_eq!(modal["trigger_id"], "trigger-UCAROL");
    let submitted = w
        .interact(&json!({
            "type": "view_submission",
            "user": { "id": "UCAROL" },
            "view": {
                "callback_id": modal["view"]["callback_id"],
                "private_metadata": modal["view"]["private_metadata"],
                "state": { "values": { "reason": { "reason": { "type": "plain_text_input", "value": "not during the freeze" } } } },
            },
        }))
        .await;
    assert_eq!(submitted.status(), 200);
    let denied = w.request(&denied_run, 1).await;
    assert_eq!(
        denied.status,
        ApprovalStatus::Denied {
            by: "carol".into(),
            reason: "not during the freeze".into()
        }
    );
    w.until(|| async { w.status(&denied_run).await != "parked" })
        .await;
    assert_eq!(w.runtime.state.flag("PLAZA_OTHER").await.unwrap(), None);

    let _ = w.stop.take().map(|s| s.send(()));
}

fn message_ts(w: &World, run: &str) -> Json {
    let posted = w
        .slack
        .requests()
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r.path == "/chat.postMessage")
        .find(|(_, r)| String::from_utf8_lossy(&r.body).contains(run));
    let (n, _) = posted.unwrap();
    json!(format!("1700000000.{n:06}"))
}

/// A message posted on a plan that the run then re-planned away from: its
/// button decides nothing (the digest is not the request's), the old
/// message says it is superseded, and a new one asks on the new plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_on_a_stale_plan_is_refused() {
    let mut w = world().await;
    let run = w
        .parked_run(
            json!({ "alertname": "Hostile", "mode": "copy-write", "n": "2" }),
            json!({}),
        )
        .await;
    let first = w.message_of(&run).await;
    let old_button = button(&first);
    // The world changes; alice approves in the console's API; the run
    // re-checks its reads, re-plans and asks again on a new plan.
    w.runtime
        .state
        .set_flag("BENCH_FLAG", "after")
        .await
        .unwrap();
    let approved = w
        .client
        .post(format!("{}/api/runs/{run}/approvals/3", w.url))
        .bearer_auth(&w.alice)
        .json(&json!({ "approve": true, "reason": "on the old plan" }))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    w.until(|| async { w.calls("chat.postMessage").len() == 2 })
        .await;
    let second = w.posted(&run).unwrap();
    assert_ne!(button(&second), old_button, "a new message on the new plan");
    w.until(|| async {
        w.calls("chat.update")
            .iter()
            .any(|u| u.to_string().contains("Superseded"))
    })
    .await;

    let stale = w.interact(&click("UCAROL", "approve", &old_button)).await;
    assert_eq!(stale.status(), 200);
    let told = w.calls("chat.postEphemeral");
    assert!(
        told.last().unwrap()["text"]
            .as_str()
            .unwrap()
            .contains("plan changed"),
        "{told:?}"
    );
    let request = w.request(&run, 3).await;
    assert!(request.decisions.is_empty(), "{:?}", request.decisions);
    assert!(matches!(request.status, ApprovalStatus::Pending { .. }));
    let _ = w.stop.take().map(|s| s.send(()));
}
