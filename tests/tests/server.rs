//! `stepgate serve` over real HTTP on loopback: Alertmanager notifications
//! in, one run per fingerprint, approvals over the REST API with bearer
//! tokens, a resolved alert cancelling what waits, nothing accepted lost
//! across a restart, and the metrics. Both state stores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use stepgate::runtime::Runtime;
use stepgate::server::Server;
use stepgate::state::approvals::Role;
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::servers::PgServer;
use stepgate_tests::*;

use stepgate_tests::Store as Kind;

/// The hooks' token in `config`.
const HOOK_TOKEN: &str = "s3cret-hook";

struct Running {
    setup: Setup,
    runtime: Arc<Runtime>,
    url: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _pg: Option<PgServer>,
}

fn config(kind: Kind) -> (Setup, Option<PgServer>) {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    (config_on(pg.as_ref(), &[]), pg)
}

/// The config on `pg` (or SQLite), each `(from, to)` replaced.
fn config_on(pg: Option<&PgServer>, replaced: &[(&str, &str)]) -> Setup {
    let state = stepgate_tests::servers::state_section(pg);
    let mut text = format!(
        r#"
{state}
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]
[pager.channels.approvers]
kind = "file"
path = "{{dir}}/pages.jsonl"
[server]
sweep_every = "200ms"
notify = "approvers"
public_url = "https://stepgate.example"
hook_token = "s3cret-hook"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.flags.write = ["PLAZA_*"]
gates = {{ default = "approve" }}
[[routes]]
match = ["alertname=Hostile"]
playbook = "hostile"
mode = "live"
cancel_on_resolved = true
"#,
        stepgate_artifacts::HOSTILE
    );
    for (from, to) in replaced {
        assert!(text.contains(from), "the config has no `{from}`");
        text = text.replace(from, to);
    }
    Setup::new(&text)
}

async fn start(setup: Setup, pg: Option<PgServer>) -> Running {
    let runtime = Arc::new(setup.runtime());
    let server = Server::start(runtime.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));
    Running {
        setup,
        runtime,
        url,
        client: reqwest::Client::new(),
        stop: Some(stop),
        _pg: pg,
    }
}

/// An Alertmanager v4 notification of one alert.
fn notification(fingerprint: &str, status: &str, name: &str) -> Json {
    json!({
        "version": "4",
        "status": status,
        "groupKey": "{}:{alertname=\"Hostile\"}",
        "receiver": "stepgate",
        "commonLabels": { "alertname": name },
        "alerts": [{
            "status": status,
            "labels": { "alertname": name, "mode": "must-write" },
            "annotations": { "summary": "test" },
            "startsAt": "2026-11-23T09:00:00Z",
            "fingerprint": fingerprint,
        }],
    })
}

impl Running {
    async fn hook(&self, body: &Json) -> reqwest::Response {
        self.client
            .post(format!("{}/hooks/alertmanager", self.url))
            .bearer_auth(HOOK_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn decide(
        &self,
        token: Option<&str>,
        run: &str,
        seq: u64,
        approve: bool,
    ) -> reqwest::Response {
        self.decide_on_plan(token, run, seq, approve, None).await
    }

    /// [`Running::decide`], bound to the plan `plan` (a digest prefix).
    async fn decide_on_plan(
        &self,
        token: Option<&str>,
        run: &str,
        seq: u64,
        approve: bool,
        plan: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/api/runs/{run}/approvals/{seq}", self.url))
            .json(
                &json!({ "approve": approve, "reason": "checked the drift by hand", "plan": plan }),
            );
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Polls the runs until `done` says so, for up to 30 s.
    async fn runs_until(&self, token: &str, done: impl Fn(&[Json]) -> bool) -> Vec<Json> {
        let started = Instant::now();
        loop {
            let runs: Vec<Json> = self.get("/api/runs", token).await.json().await.unwrap();
            if done(&runs) {
                return runs;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "runs never got there: {runs:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A viewer's token.
    async fn viewer(&self) -> String {
        self.runtime
            .state
            .add_principal("vic", Role::Viewer)
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn status_of(runs: &[Json]) -> Vec<&str> {
    runs.iter()
        .map(|r| r["status"].as_str().unwrap_or(""))
        .collect()
}

async fn a_burst_of_one_alert_is_one_run_approved_over_the_api(kind: Kind) {
    let (setup, pg) = config(kind);
    let s = start(setup, pg).await;
    let state = &s.runtime.state;
    let viewer = state.add_principal("vic", Role::Viewer).await.unwrap();
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();

    for _ in 0..5 {
        let answer = s.hook(&notification("fp-1", "firing", "Hostile")).await;
        assert_eq!(answer.status(), 202);
    }
    let runs = s
        .runs_until(&viewer, |runs| status_of(runs) == ["parked"])
        .await;
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(runs[0]["started_by"], "alertmanager");
    // The other four joined the open run (once the dispatcher saw them).
    eventually("the other four joined", || async {
        state.in_inbox().await.unwrap() == 0
    })
    .await;
    let attached = state
        .audit_records()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.record.get("attached").is_some())
        .count();
    assert_eq!(attached, 4);
    let runs: Vec<Json> = s.get("/api/runs", &viewer).await.json().await.unwrap();
    assert_eq!(runs.len(), 1, "one run for one fingerprint: {runs:?}");
    // The approvers were told, with the exact write and how to approve.
    let told = file_with(
        &s.setup.path("pages.jsonl"),
        &format!("stepgate approve {run_id} 1"),
    )
    .await;
    assert!(
        told.contains("https://stepgate.example/api/runs/"),
        "{told}"
    );
    assert!(told.contains("PLAZA_TEST_FLAG"), "{told}");

    // No token, a viewer's, then an approver's.
    assert_eq!(s.decide(None, &run_id, 1, true).await.status(), 401);
    assert_eq!(
        s.decide(Some("sg_forged"), &run_id, 1, true).await.status(),
        401
    );
    assert_eq!(
        s.decide(Some(&viewer), &run_id, 1, true).await.status(),
        403
    );
    let approved = s.decide(Some(&alice), &run_id, 1, true).await;
    assert_eq!(approved.status(), 200);
    let body: Json = approved.json().await.unwrap();
    assert_eq!(body["resuming"], true);
    s.runs_until(&viewer, |runs| status_of(runs) == ["done"])
        .await;
    assert_eq!(
        state.flag("PLAZA_TEST_FLAG").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(s.decide(Some(&alice), &run_id, 1, true).await.status(), 409);

    let shown: Json = s
        .get(&format!("/api/runs/{run_id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["journal"][0]["entry"]["gate"], "approved");
    assert_eq!(s.get("/api/runs/r-nope", &viewer).await.status(), 404);

    // Malformed and unrouted alerts.
    // Without the hooks' token: refused, nothing stored.
    let anonymous = s
        .client
        .post(format!("{}/hooks/alertmanager", s.url))
        .json(&notification("fp-3", "firing", "Hostile"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad = s
        .client
        .post(format!("{}/hooks/alertmanager", s.url))
        .bearer_auth(HOOK_TOKEN)
        .header("content-type", "application/json")
        .body("{\"alerts\": 7}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("the alert is"));
    assert_eq!(
        s.hook(&notification("fp-2", "firing", "Other"))
            .await
            .status(),
        202
    );

    // A run's counters move once it is stored ended, a moment after.
    for line in [
        r#"stepgate_alerts_total{route="0:hostile",outcome="started"} 1"#,
        r#"stepgate_alerts_total{route="0:hostile",outcome="attached"} 4"#,
        r#"stepgate_alerts_total{route="none",outcome="malformed"} 1"#,
        r#"stepgate_runs_total{playbook="hostile",status="parked"} 1"#,
        r#"stepgate_runs_total{playbook="hostile",status="done"} 1"#,
        r#"stepgate_gate_decisions_total{decision="approved"} 1"#,
    ] {
        eventually(line, || async { s.metrics().await.contains(line) }).await;
    }
    // The unrouted one is counted once the dispatcher has seen it.
    eventually("the unrouted alert counted", || async {
        s.metrics().await.contains(r#"outcome="unrouted"} 1"#)
    })
    .await;
    assert_eq!(
        s.client
            .get(format!("{}/readyz", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

async fn a_resolved_alert_cancels_what_its_run_waits_for(kind: Kind) {
    let (setup, pg) = config(kind);
    let s = start(setup, pg).await;
    let viewer = s.viewer().await;
    assert_eq!(
        s.hook(&notification("fp-9", "firing", "Hostile"))
            .await
            .status(),
        202
    );
    s.runs_until(&viewer, |runs| status_of(runs) == ["parked"])
        .await;
    assert_eq!(
        s.hook(&notification("fp-9", "resolved", "Hostile"))
            .await
            .status(),
        202
    );
    let runs = s
        .runs_until(&viewer, |runs| status_of(runs) == ["failed"])
        .await;
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let shown: Json = s
        .get(&format!("/api/runs/{run_id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    let result = shown["journal"][0]["entry"]["result"].to_string();
    assert!(result.contains("the alert resolved"), "{result}");
    assert_eq!(s.runtime.state.flag("PLAZA_TEST_FLAG").await.unwrap(), None);
}

stepgate_tests::on_both_stores!(
    a_burst_of_one_alert_is_one_run_approved_over_the_api,
    a_resolved_alert_cancels_what_its_run_waits_for,
    an_operator_cancels_a_parked_run,
    a_quorum_of_two_distinct_approvers_decides_over_the_api,
);

/// A quorum of two over the REST API, bound to the plan the approvers
/// saw: a decision naming another plan is refused and counts nothing; the
/// first approver counts once (deciding again is refused); the second,
/// distinct one releases the write, and the request is closed after.
async fn a_quorum_of_two_distinct_approvers_decides_over_the_api(kind: Kind) {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let setup = config_on(
        pg.as_ref(),
        &[(
            "gates = { default = \"approve\" }",
            "gates = { default = \"approve\" }\nquorum = 2",
        )],
    );
    let s = start(setup, pg).await;
    let state = &s.runtime.state;
    let viewer = s.viewer().await;
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();
    let bob = state.add_principal("bob", Role::Approver).await.unwrap();
    let posted = s.hook(&notification("fp-q", "firing", "Hostile")).await;
    assert_eq!(posted.status(), 202);
    let runs = s
        .runs_until(&viewer, |runs| status_of(runs) == ["parked"])
        .await;
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let pending: Vec<Json> = s.get("/api/approvals", &viewer).await.json().await.unwrap();
    assert_eq!((pending.len(), &pending[0]["quorum"]), (1, &json!(2)));
    let digest = pending[0]["plan_digest"].as_str().unwrap()[..12].to_owned();
    let flag = || async { state.flag("PLAZA_TEST_FLAG").await.unwrap() };

    // Another plan than the request's: refused, nothing counted.
    let other = format!(
        "{}{}",
        if digest.starts_with('0') { '1' } else { '0' },
        &digest[1..]
    );
    let stale = s
        .decide_on_plan(Some(&alice), &run_id, 1, true, Some(&other))
        .await;
    assert_eq!(stale.status(), 409);
    let said = stale.text().await.unwrap();
    assert!(
        said.contains(&format!(
            "the plan you name ({other}) is not this request's"
        )),
        "{said}"
    );
    let pending: Vec<Json> = s.get("/api/approvals", &viewer).await.json().await.unwrap();
    assert_eq!(pending[0]["approvals"], json!(0), "{pending:?}");

    // Alice, on the plan she saw: one of two; again: refused.
    let first = s
        .decide_on_plan(Some(&alice), &run_id, 1, true, Some(&digest))
        .await;
    assert_eq!(first.status(), 200);
    let body: Json = first.json().await.unwrap();
    assert_eq!(
        (&body["status"], &body["resuming"]),
        (
            &json!({ "status": "pending", "approvals": 1, "quorum": 2 }),
            &json!(false)
        )
    );
    let again = s.decide(Some(&alice), &run_id, 1, true).await;
    assert_eq!(again.status(), 409);
    let said = again.text().await.unwrap();
    assert!(
        said.contains("`alice` already decided this request"),
        "{said}"
    );
    let runs: Vec<Json> = s.get("/api/runs", &viewer).await.json().await.unwrap();
    assert_eq!(status_of(&runs), ["parked"]);
    assert_eq!(flag().await, None, "one approver of two released the write");

    // Bob: the quorum; the run goes on and writes.
    let second = s.decide(Some(&bob), &run_id, 1, true).await;
    assert_eq!(second.status(), 200);
    let body: Json = second.json().await.unwrap();
    assert_eq!(
        (
            &body["status"]["status"],
            &body["status"]["by"],
            &body["resuming"]
        ),
        (&json!("approved"), &json!(["alice", "bob"]), &json!(true))
    );
    s.runs_until(&viewer, |runs| status_of(runs) == ["done"])
        .await;
    assert_eq!(flag().await.as_deref(), Some("1"));
    let late = s.decide(Some(&bob), &run_id, 1, true).await;
    assert_eq!(late.status(), 409);
    let said = late.text().await.unwrap();
    assert!(said.contains("already decided"), "{said}");
}

/// An alert stored before the server stopped, never dispatched, is
/// dispatched when the next one starts.
#[tokio::test]
async fn an_accepted_alert_survives_a_restart() {
    let (setup, pg) = config(Kind::Sqlite);
    {
        let runtime = setup.runtime();
        runtime
            .state
            .accept_alerts(
                "alertmanager",
                vec![alert("Hostile", &[("mode", "must-write")], &[])],
            )
            .await
            .unwrap();
    }
    let s = start(setup, pg).await;
    let viewer = s.viewer().await;
    s.runs_until(&viewer, |runs| status_of(runs) == ["parked"])
        .await;
    assert_eq!(s.runtime.state.in_inbox().await.unwrap(), 0);
}

/// Two replicas on one PostgreSQL state store, the same alerts posted to
/// both at once: one run per fingerprint, whichever replica started it.
#[tokio::test]
async fn two_replicas_start_one_run_per_alert() {
    let (setup, pg) = config(Kind::Postgres);
    let other = Arc::new(setup.runtime());
    let a = start(setup, pg).await;
    let b_server = Server::start(other.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(b_server.serve(listener, std::future::pending()));

    let viewer = a
        .runtime
        .state
        .add_principal("vic", Role::Viewer)
        .await
        .unwrap();
    let mut posts = Vec::new();
    for i in 0..20 {
        let url = if i % 2 == 0 {
            a.url.clone()
        } else {
            b_url.clone()
        };
        let body = notification(&format!("fp-{}", i % 4), "firing", "Hostile");
        let client = a.client.clone();
        posts.push(tokio::spawn(async move {
            client
                .post(format!("{url}/hooks/alertmanager"))
                .bearer_auth(HOOK_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for post in posts {
        assert_eq!(post.await.unwrap(), 202);
    }
    let runs = a
        .runs_until(&viewer, |runs| {
            runs.len() >= 4 && runs.iter().all(|r| r["status"] == "parked")
        })
        .await;
    eventually("both inboxes empty", || async {
        a.runtime.state.in_inbox().await.unwrap() == 0 && other.state.in_inbox().await.unwrap() == 0
    })
    .await;
    let runs_now: Vec<Json> = a.get("/api/runs", &viewer).await.json().await.unwrap();
    assert_eq!(runs_now.len(), 4, "one run per fingerprint: {runs:?}");
}

/// Schedules: a tick every second never overlaps its open run; ticks
/// missed while no server ran are recorded and, with `catch_up`, run once
/// at start.
#[tokio::test]
async fn schedules_tick_without_overlapping_and_catch_up() {
    let (setup, pg) = config(Kind::Sqlite);
    let extra = r#"
[[schedules]]
name = "every-second"
cron = "* * * * * *"
playbook = "hostile"
mode = "live"
labels = { mode = "must-write" }

[[schedules]]
name = "minutely"
cron = "* * * * *"
playbook = "hostile"
mode = "live"
catch_up = true
labels = { mode = "must-write" }
"#;
    let path = setup.path("stepgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    {
        // The last minutely tick was ten minutes ago.
        let runtime = setup.runtime();
        let ago = chrono::Utc::now().timestamp_millis() - 10 * 60 * 1000;
        runtime
            .state
            .set_schedule_tick("minutely", ago)
            .await
            .unwrap();
    }
    let s = start(setup, pg).await;
    let viewer = s.viewer().await;
    // Until two later every-second ticks have joined the open run: by then
    // an overlapping run would have started.
    let joined_the_open_run = || async {
        let audit = s.runtime.state.audit_records().await.unwrap();
        audit
            .iter()
            .filter(|r| r.record.get("attached").is_some())
            .count()
    };
    eventually("two later ticks joined the open run", || async {
        joined_the_open_run().await >= 2
    })
    .await;
    // The catch-up tick goes its own way (another lane).
    let runs = s
        .runs_until(&viewer, |runs| {
            runs.iter().any(|r| r["alert"]["name"] == "minutely")
        })
        .await;
    let named = |name: &str| runs.iter().filter(|r| r["alert"]["name"] == name).count();
    assert_eq!(named("every-second"), 1, "{runs:?}");
    assert_eq!(named("minutely"), 1, "caught up once: {runs:?}");
    let audit = s.runtime.state.audit_records().await.unwrap();
    let missed = audit
        .iter()
        .find_map(|r| r.record.get("missed_ticks").and_then(Json::as_u64))
        .expect("the missed ticks are recorded");
    assert!((9..=11).contains(&missed), "{missed}");
    let joined = audit
        .iter()
        .filter(|r| r.record.get("attached").is_some())
        .count();
    assert!(joined >= 2, "later ticks joined the open run: {joined}");
}

/// A run started by hand over the API is the operator's: they cannot
/// approve its writes; another approver does. Once it parks it holds no
/// slot: with `max_runs = 1` a second run starts beside it.
#[tokio::test]
async fn an_operator_starts_a_run_over_the_api_and_cannot_approve_it() {
    let gates = r#"gates = { default = "approve" }"#;
    let setup = config_on(None, &[(gates, &format!("{gates}\nmax_runs = 1"))]);
    let s = start(setup, None).await;
    let state = &s.runtime.state;
    let ops = state.add_principal("ops", Role::Operator).await.unwrap();
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();
    let start_run = |token: String| {
        let (client, url) = (s.client.clone(), s.url.clone());
        async move {
            client
                .post(format!("{url}/api/runs"))
                .bearer_auth(token)
                .json(&json!({ "playbook": "hostile", "alert": { "labels": { "alertname": "Hostile", "mode": "must-write" } }, "live": true }))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        start_run(alice.clone()).await.status(),
        403,
        "approvers do not start runs"
    );
    let started = start_run(ops.clone()).await;
    assert_eq!(started.status(), 202);
    let run_id = started.json::<Json>().await.unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        state.run(&run_id).await.unwrap().is_some(),
        "the run answered exists"
    );
    let runs = s
        .runs_until(&ops, |runs| status_of(runs) == ["parked"])
        .await;
    assert_eq!(runs[0]["started_by"], "ops");
    file_with(
        &s.setup.path("pages.jsonl"),
        &format!("stepgate approve {run_id} 1"),
    )
    .await;
    let second = tokio::time::timeout(Duration::from_secs(30), start_run(ops.clone()))
        .await
        .expect("a second run gets the slot the parked one freed");
    assert_eq!(second.status(), 202);
    s.runs_until(&ops, |runs| status_of(runs) == ["parked", "parked"])
        .await;
    let own = s.decide(Some(&ops), &run_id, 1, true).await;
    assert_eq!(own.status(), 403);
    assert!(own.text().await.unwrap().contains("started this run"));
    assert_eq!(s.decide(Some(&alice), &run_id, 1, true).await.status(), 200);
    s.runs_until(&ops, |runs| status_of(runs).contains(&"done"))
        .await;
}

/// A route in step mode: the Plaza run parks before each step, the
/// approvers are told what it has read so far, and continuing over the API
/// walks it through.
#[tokio::test]
async fn a_step_mode_route_walks_a_run_step_by_step() {
    let setup = Setup::new(&format!(
        "[state]\npath = \"state.db\"\n{backends}\n[server]\nnotify = \"incident\"\n[playbooks.plaza]\ncomponent = \"{component}\"\n{grants}\n[[routes]]\nmatch = [\"alertname=ReconciliationDriftHigh\"]\nplaybook = \"plaza\"\nstep = true\n",
        backends = plaza_example_backends(),
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
        grants = PLAZA_GRANTS,
    ));
    let s = start(setup, None).await;
    let alice = s
        .runtime
        .state
        .add_principal("alice", Role::Approver)
        .await
        .unwrap();
    let payload =
        std::fs::read_to_string(root().join("examples/alerts/plaza-drift-unexplained.json"))
            .unwrap();
    let posted = s
        .client
        .post(format!("{}/hooks/alertmanager", s.url))
        .header("content-type", "application/json")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    let runs = s
        .runs_until(&alice, |runs| status_of(runs) == ["parked"])
        .await;
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(runs[0]["step_mode"], true);
    let pages = s.setup.path("pages.jsonl");
    file_with(&pages, "paused before step `Triage`").await;
    // Continue before Triage; it then parks before the mitigation, and the
    // message shows what it read.
    assert_eq!(s.decide(Some(&alice), &run_id, 1, true).await.status(), 200);
    let told = file_with(&pages, "paused before step `Mitigate: unexplained drift`").await;
    assert!(told.contains("db.query plaza"), "{told}");
}

/// A tick stored but not dispatched (the server died in between, or the
/// dispatch failed) is dispatched at the next start, on its schedule's
/// route: here a dry run, although an alert route for the same name would
/// run it live.
#[tokio::test]
async fn a_schedule_tick_left_in_the_inbox_runs_on_its_schedule_route() {
    let (setup, pg) = config(Kind::Sqlite);
    let path = setup.path("stepgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let extra = r#"
[[schedules]]
name = "Hostile"
cron = "0 0 1 1 *"
playbook = "hostile"
labels = { mode = "must-write" }
"#;
    std::fs::write(&path, format!("{text}{extra}")).unwrap();
    {
        let runtime = setup.runtime();
        let mut tick = alert("Hostile", &[("mode", "must-write")], &[]);
        tick.fingerprint = Some("schedule:Hostile".into());
        runtime
            .state
            .accept_alerts(stepgate::state::inbox::SCHEDULE, vec![tick])
            .await
            .unwrap();
    }
    let s = start(setup, pg).await;
    let viewer = s.viewer().await;
    let runs = s
        .runs_until(&viewer, |runs| status_of(runs) == ["done"])
        .await;
    assert_eq!(runs[0]["mode"], "dry-run", "{runs:?}");
    assert_eq!(s.runtime.state.in_inbox().await.unwrap(), 0);
}

/// A server whose `Slow` alerts run the hostile playbook's
/// page-sleep-page in `mode`, with `server` and `playbook` settings added;
/// pages go to `pages.jsonl`.
fn slow_setup(server: &str, playbook: &str, mode: &str) -> Setup {
    slow_setup_with("[state]\npath = \"state.db\"", server, playbook, mode)
}

/// [`slow_setup`] with the `[state]` section `state`.
fn slow_setup_with(state: &str, server: &str, playbook: &str, mode: &str) -> Setup {
    Setup::new(&format!(
        r#"
{state}
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
kind = "file"
path = "{{dir}}/pages.jsonl"
[server]
sweep_every = "200ms"
{server}
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
{playbook}
[[routes]]
match = ["alertname=Slow"]
playbook = "hostile"
mode = "{mode}"
"#,
        stepgate_artifacts::HOSTILE
    ))
}

/// A `Slow` alert of `fingerprint` that pages, sleeps `ms`, pages again.
fn slow_alert(fingerprint: &str, ms: u64) -> Json {
    json!({
        "version": "4", "status": "firing", "groupKey": "{}:{alertname=\"Slow\"}",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "Slow", "mode": "page-sleep-page", "ms": ms.to_string(), "fp": fingerprint },
            "fingerprint": fingerprint,
        }],
    })
}

/// `max_runs` on a playbook: its runs execute one at a time (each is
/// stored when it gets its slot, so their lifetimes do not overlap), while
/// the server's own limit would allow eight.
#[tokio::test]
async fn a_playbook_limit_runs_its_runs_one_at_a_time() {
    let setup = slow_setup("max_runs = 8", "max_runs = 1", "dry-run");
    let s = start(setup, None).await;
    let viewer = s.viewer().await;
    for i in 0..3 {
        let body = slow_alert(&format!("slow-{i}"), 300);
        assert_eq!(s.hook(&body).await.status(), 202);
    }
    let mut runs = s
        .runs_until(&viewer, |runs| {
            runs.len() == 3 && runs.iter().all(|r| r["status"] == "done")
        })
        .await;
    runs.sort_by_key(|r| r["started_at"].as_i64());
    for pair in runs.windows(2) {
        let (ended, next) = (pair[0]["ended_at"].as_i64(), pair[1]["started_at"].as_i64());
        assert!(
            ended.unwrap() <= next.unwrap(),
            "two runs of the playbook overlapped: {pair:?}"
        );
    }
}

impl Running {
    async fn cancel(&self, token: Option<&str>, run: &str, reason: &str) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/api/runs/{run}/cancel", self.url))
            .json(&json!({ "reason": reason }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

/// An operator cancels a parked run over the API: it ends for good, its
/// approval request is denied (nobody is asked any more), the write is
/// never made, and the next alert of the fingerprint starts a new run.
async fn an_operator_cancels_a_parked_run(kind: Kind) {
    let (setup, pg) = config(kind);
    let s = start(setup, pg).await;
    let state = &s.runtime.state;
    let viewer = state.add_principal("vic", Role::Viewer).await.unwrap();
    let ops = state.add_principal("olga", Role::Operator).await.unwrap();
    assert_eq!(
        s.hook(&notification("fp-c", "firing", "Hostile"))
            .await
            .status(),
        202
    );
    let runs = s
        .runs_until(&viewer, |runs| status_of(runs) == ["parked"])
        .await;
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    assert_eq!(s.cancel(None, &run_id, "not needed").await.status(), 401);
    assert_eq!(
        s.cancel(Some(&viewer), &run_id, "not needed")
            .await
            .status(),
        403
    );
    assert_eq!(s.cancel(Some(&ops), &run_id, " ").await.status(), 400);
    assert_eq!(
        s.cancel(Some(&ops), "r-nope", "not needed").await.status(),
        404
    );
    let answer = s
        .cancel(Some(&ops), &run_id, "fixed by hand; the flag must stay off")
        .await;
    assert_eq!(answer.status(), 200);
    let body: Json = answer.json().await.unwrap();
    assert_eq!(body["was"], "parked");
    assert_eq!(body["by"], "olga");
    assert_eq!(body["approvals_denied"], 1);
    assert_eq!(s.cancel(Some(&ops), &run_id, "again").await.status(), 409);

    let shown: Json = s
        .get(&format!("/api/runs/{run_id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["run"]["status"], "cancelled", "{shown}");
    assert_eq!(shown["run"]["exit_code"], 7);
    let pending: Vec<Json> = s.get("/api/approvals", &viewer).await.json().await.unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    // The sweep leaves it alone: it stays cancelled, nothing more is
    // journaled, and the write is never made.
    let journaled = state.journal(&run_id).await.unwrap().len();
    let quiet =
        |_: &str| -> Box<dyn stepgate::journal::Progress> { Box::new(stepgate::journal::Quiet) };
    let swept = stepgate::sweep::sweep(&s.runtime, &quiet).await.unwrap();
    assert!(
        swept.resumed.is_empty() && swept.escalated.is_empty(),
        "{:?}",
        swept.errors
    );
    let shown: Json = s
        .get(&format!("/api/runs/{run_id}"), &viewer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["run"]["status"], "cancelled", "{shown}");
    assert_eq!(state.journal(&run_id).await.unwrap().len(), journaled);
    assert_eq!(s.setup.flag("PLAZA_TEST_FLAG").await, None);
    let audit = state.audit_records().await.unwrap();
    assert!(
        audit.iter().any(|r| r.record["cancelled"]["by"] == "olga"),
        "the cancel is audited"
    );
    // Cancelled is not open: the alert firing again starts a new run.
    assert_eq!(
        s.hook(&notification("fp-c", "firing", "Hostile"))
            .await
            .status(),
        202
    );
    s.runs_until(&viewer, |runs| {
        status_of(runs).contains(&"parked") && runs.len() == 2
    })
    .await;
}

/// A run cancelled while it executes stops before its next write: the
/// page after the sleep is never sent.
#[tokio::test]
async fn a_run_cancelled_while_it_executes_makes_no_more_writes() {
    let setup = slow_setup("", "gates = { default = \"auto\" }", "live");
    let s = start(setup, None).await;
    let state = &s.runtime.state;
    let viewer = state.add_principal("vic", Role::Viewer).await.unwrap();
    let ops = state.add_principal("olga", Role::Operator).await.unwrap();
    assert_eq!(s.hook(&slow_alert("slow", 5000)).await.status(), 202);
    let pages = || {
        std::fs::read_to_string(s.setup.path("pages.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    eventually("the first page", || async { pages() >= 1 }).await;
    let runs: Vec<Json> = s.get("/api/runs", &viewer).await.json().await.unwrap();
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let answer = s.cancel(Some(&ops), &run_id, "wrong wallet").await;
    assert_eq!(answer.status(), 200);
    let body: Json = answer.json().await.unwrap();
    assert_eq!(body["was"], "running");
    // Once the run has ended (past its sleep, at its next write): the
    // second page was not sent, and the record stays.
    eventually("the cancelled run ends", || async {
        s.metrics()
            .await
            .contains(r#"stepgate_runs_total{playbook="hostile","#)
    })
    .await;
    assert_eq!(pages(), 1, "no write after the cancel");
    let runs: Vec<Json> = s.get("/api/runs", &viewer).await.json().await.unwrap();
    assert_eq!(status_of(&runs), ["cancelled"], "{runs:?}");
}

/// An approval given while the server is still telling the approvers of
/// the request resumes the run once that is done, with no sweep to fall
/// back on. The run is marked executing until then, so the decision's own
/// resume steps aside; the server looks again when the work ends. Here
/// the approvers' webhook holds its answer 4 s, and the approval is given
/// inside that hold.
#[tokio::test]
async fn an_approval_given_while_the_approvers_are_told_resumes_the_run() {
    let told = Receiver::always(Reply::ok("{}").after(Duration::from_secs(4))).await;
    let webhook = format!(
        "kind = \"webhook\"\nurl = \"{}/notify\"\ntimeout = \"30s\"",
        told.url
    );
    let setup = config_on(
        None,
        &[
            ("sweep_every = \"200ms\"", "sweep_every = \"1h\""),
            ("kind = \"file\"\npath = \"{dir}/pages.jsonl\"", &webhook),
        ],
    );
    let s = start(setup, None).await;
    let state = &s.runtime.state;
    let viewer = state.add_principal("vic", Role::Viewer).await.unwrap();
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();
    assert_eq!(
        s.hook(&notification("fp-p", "firing", "Hostile"))
            .await
            .status(),
        202
    );
    eventually("the approvers are being told", || async {
        told.requests().len() == 1
    })
    .await;
    let runs: Vec<Json> = s.get("/api/runs", &viewer).await.json().await.unwrap();
    assert_eq!(status_of(&runs), ["parked"], "{runs:?}");
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(s.decide(Some(&alice), &run_id, 1, true).await.status(), 200);
    s.runs_until(&viewer, |runs| status_of(runs) == ["done"])
        .await;
    assert_eq!(
        state.flag("PLAZA_TEST_FLAG").await.unwrap().as_deref(),
        Some("1")
    );
}

/// A playbook at its `max_runs` holds up only its own runs: an alert for
/// another playbook, posted after, runs to its end while the second run of
/// the busy playbook still waits for its slot.
#[tokio::test]
async fn a_playbook_at_its_limit_holds_up_no_other_playbook() {
    let setup = slow_setup("", "max_runs = 1", "dry-run");
    let path = setup.path("stepgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            r#"{text}
[playbooks.other]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
[[routes]]
match = ["alertname=Other"]
playbook = "other"
"#,
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let s = start(setup, None).await;
    let viewer = s.viewer().await;
    // slow-1 sleeps far longer than `other` needs on a loaded machine.
    // Each step waits for the one before it: lanes of different
    // fingerprints go side by side, so `other` could otherwise end before
    // slow-1 had even started.
    assert_eq!(s.hook(&slow_alert("slow-1", 30_000)).await.status(), 202);
    s.runs_until(&viewer, |runs| status_of(runs) == ["running"])
        .await;
    assert_eq!(s.hook(&slow_alert("slow-2", 3000)).await.status(), 202);
    eventually("slow-2 is claimed and waits for its slot", || async {
        inbox_status(&s.setup, "slow-2").await.as_deref() == Some("dispatching")
    })
    .await;
    let other = json!({
        "version": "4", "status": "firing",
        "alerts": [{ "status": "firing", "labels": { "alertname": "Other", "mode": "fine" }, "fingerprint": "other-1" }],
    });
    assert_eq!(s.hook(&other).await.status(), 202);
    let runs = s
        .runs_until(&viewer, |runs| {
            runs.iter()
                .any(|r| r["playbook"] == "other" && r["status"] == "done")
        })
        .await;
    let slow: Vec<&Json> = runs.iter().filter(|r| r["playbook"] == "hostile").collect();
    assert_eq!(slow.len(), 1, "the second slow run still waits: {runs:?}");
    assert_eq!(slow[0]["status"], "running");
}

/// The `inbox` rows whose alert JSON contains `needle`, read straight
/// from the SQLite state store.
async fn inbox_rows(setup: &Setup, needle: &str) -> i64 {
    use sqlx::Connection;
    let url = format!("sqlite://{}", setup.path("state.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM inbox WHERE instr(alert, $1) > 0")
        .bind(needle)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// The status of the one `inbox` row whose alert JSON contains `needle`,
/// read straight from the SQLite state store.
async fn inbox_status(setup: &Setup, needle: &str) -> Option<String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}", setup.path("state.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query_scalar("SELECT status FROM inbox WHERE instr(alert, $1) > 0")
        .bind(needle)
        .fetch_optional(&mut conn)
        .await
        .unwrap()
}

/// A full run queue answers the hook 503 and stores nothing: the sender
/// (Alertmanager retries) sends it again later, and no alert is stored that
/// nobody would dispatch. The queue fills here for real: the playbook runs
/// one run at a time and the first one sleeps, so every new fingerprint's
/// lane waits for a slot, the dispatcher waits for a free lane, and the
/// queue (one notification deep) backs up.
#[tokio::test]
async fn a_full_queue_answers_503_and_stores_nothing() {
    let setup = slow_setup("queue = 1", "max_runs = 1", "dry-run");
    let s = start(setup, None).await;
    let mut accepted = 0;
    let refused = loop {
        let fingerprint = format!("full-{accepted:04}");
        let answer = s.hook(&slow_alert(&fingerprint, 60_000)).await;
        match answer.status().as_u16() {
            202 => accepted += 1,
            503 => break (fingerprint, answer.text().await.unwrap()),
            other => panic!("{other}: {}", answer.text().await.unwrap()),
        }
        assert!(
            accepted < 1_000,
            "1,000 alerts accepted and the queue never filled"
        );
    };
    let (fingerprint, said) = refused;
    assert!(
        said.contains("the run queue is full; retry later"),
        "{said}"
    );
    assert_eq!(inbox_rows(&s.setup, &fingerprint).await, 0);
    assert_eq!(inbox_rows(&s.setup, "full-").await, accepted);
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"stepgate_alerts_total{route="none",outcome="queue-full"} 1"#),
        "{metrics}"
    );
}

/// A run that lives three times its lease (4 s) on a healthy host is never
/// taken over: its host renews the lease while the run executes, and the other
/// replica, sweeping five times a second, finds nothing lapsed. The lease
/// owner is read all through the run: one owner from start to end.
#[tokio::test]
async fn a_healthy_run_longer_than_its_lease_is_never_taken_over() {
    let pg = PgServer::start();
    let setup = slow_setup_on(&pg, "lease = \"4s\"");
    let other = Arc::new(setup.runtime());
    let a = start(setup, None).await;
    let b_server = Server::start(other.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    tokio::spawn(b_server.serve(listener, std::future::pending()));
    let viewer = a.viewer().await;
    assert_eq!(a.hook(&slow_alert("long", 12_000)).await.status(), 202);

    let mut owners = std::collections::BTreeSet::new();
    let url = pg.url("postgres");
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never ended done; lease owners seen: {owners:?}"
        );
        let (status, owner) = lease_of(&url).await;
        if let Some(owner) = owner {
            owners.insert(owner);
        }
        if status.as_deref() == Some("done") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(owners.len(), 1, "the run changed hands: {owners:?}");
    let runs: Vec<Json> = a.get("/api/runs", &viewer).await.json().await.unwrap();
    let run_id = runs[0]["run_id"].as_str().unwrap();
    let journal = a.runtime.state.journal(run_id).await.unwrap();
    assert_eq!(journal.len(), 3, "page, sleep, page: {journal:?}");
    drop(pg);
}

/// The status and lease owner of the one run in the state store at `url`.
async fn lease_of(url: &str) -> (Option<String>, Option<String>) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT status, lease_owner FROM runs")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    match row {
        Some((status, owner)) => (Some(status), owner),
        None => (None, None),
    }
}

/// [`slow_setup`] on the PostgreSQL state store `pg`, dry-run, with
/// `state` added to its `[state]` section.
fn slow_setup_on(pg: &PgServer, state: &str) -> Setup {
    let state = format!("[state]\nurl = \"{}\"\n{state}", pg.url("postgres"));
    slow_setup_with(&state, "", "", "dry-run")
}

/// `/readyz` says whether the state store answers: 200 while it does,
/// 503 with the reason once its PostgreSQL is gone (a load balancer stops
/// sending alerts to a host that could not store them).
#[tokio::test]
async fn readyz_is_503_while_the_state_store_is_down() {
    // A cluster of its own, to stop.
    let pg = PgServer::own_cluster();
    let s = start(config_on(Some(&pg), &[]), None).await;
    let ready = || async {
        let answer = s
            .client
            .get(format!("{}/readyz", s.url))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    assert_eq!(ready().await, (200, "ready".to_owned()));
    drop(pg);
    let (status, said) = ready().await;
    assert_eq!(status, 503, "{said}");
    assert!(
        said.starts_with("the state store is not reachable:"),
        "{said}"
    );
    // The process is alive and says so.
    let alive = s.client.get(format!("{}/healthz", s.url)).send().await;
    assert_eq!(alive.unwrap().status(), 200);
}

/// Hostile runs beside a healthy one on the same server: while a spinning
/// loop holds its thread (this test's runtime has one), the healthy run
/// posted after it finishes, seen in one answer of the API that shows the
/// loop still running; a memory bomb and a call flood end as their
/// limits; and the server runs the next alert.
#[tokio::test]
async fn a_hostile_run_beside_a_healthy_one_leaves_it_to_finish() {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[limits]
deadline = "60s"
[db.plaza]
url = "sqlite::memory:"
[server]
max_runs = 4
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
[[routes]]
match = ["alertname=Hostile"]
playbook = "hostile"
"#,
        stepgate_artifacts::HOSTILE
    ));
    let s = start(setup, None).await;
    let viewer = s.viewer().await;
    // Each alert's fingerprint names it.
    let s = &s;
    let post = |mode: &str, fingerprint: &str| {
        let body = json!({
            "version": "4", "status": "firing",
            "alerts": [{ "status": "firing", "labels": { "alertname": "Hostile", "mode": mode, "fp": fingerprint }, "fingerprint": fingerprint }],
        });
        async move { assert_eq!(s.hook(&body).await.status(), 202) }
    };
    for hostile in ["spin", "memory-bomb", "call-flood"] {
        post(hostile, hostile).await;
    }
    // The spinning run holds its slot until its deadline: the healthy one
    // goes beside it.
    s.runs_until(&viewer, |runs| {
        runs.iter()
            .any(|r| r["alert"]["fingerprint"] == "spin" && r["status"] == "running")
    })
    .await;
    post("fine", "fine").await;
    let status = |runs: &[Json], fingerprint: &str| -> String {
        runs.iter()
            .find(|r| r["alert"]["fingerprint"] == fingerprint)
            .and_then(|r| r["status"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    let runs = s
        .runs_until(&viewer, |runs| {
            ["fine", "memory-bomb", "call-flood"]
                .iter()
                .all(|f| !matches!(status(runs, f).as_str(), "" | "running"))
        })
        .await;
    assert_eq!(status(&runs, "spin"), "running", "{runs:?}");
    let ended = |mode: &str| -> (String, String) {
        let run = runs
            .iter()
            .find(|r| r["alert"]["fingerprint"] == mode)
            .unwrap_or_else(|| panic!("no {mode} run: {runs:?}"));
        let error = run["outcome"]["error"].as_str().unwrap_or_default();
        (run["status"].as_str().unwrap().to_owned(), error.to_owned())
    };
    assert_eq!(ended("fine"), ("done".to_owned(), String::new()));
    for (mode, limit) in [
        ("memory-bomb", "limits.memory"),
        ("call-flood", "limits.calls"),
    ] {
        let (status, error) = ended(mode);
        assert_eq!(status, "limit", "{mode}: {error}");
        assert!(error.contains(limit), "{mode}: {error}");
    }
    post("fine", "fine-again").await;
    s.runs_until(&viewer, |runs| {
        runs.iter()
            .any(|r| r["alert"]["fingerprint"] == "fine-again" && r["status"] == "done")
    })
    .await;
}
