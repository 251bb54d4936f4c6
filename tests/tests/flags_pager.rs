//! Flag stores and pager sinks against real files and recording HTTP
//! receivers that assert the exact requests (headers, body, dedup key).

use std::time::Duration;

use serde_json::json;
use stepgate::bindings::WitError;
use stepgate::bindings::stepgate::playbook::flags::Host as Flags;
use stepgate::bindings::stepgate::playbook::pager::{Host as Pager, Severity};
use stepgate::caps::{CallCtx, CapError};
use stepgate::gate::{Decision, Mode};
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::servers::free_port;
use stepgate_tests::{Setup, call_ctx, secret_file};

fn wit<T: std::fmt::Debug>(result: Result<T, CapError>) -> WitError {
    match result {
        Err(CapError::Wit(e)) => e,
        other => panic!("expected a WIT error, got {other:?}"),
    }
}

async fn set(ctx: &mut CallCtx, name: &str, value: &str) -> Result<Option<String>, CapError> {
    Flags::set(
        ctx,
        name.into(),
        value.into(),
        "test: custodied mode off".into(),
    )
    .await
}

const FLAGS_PLAYBOOK: &str = r#"
[playbooks.p]
component = "unused.wasm"
gates = { default = "auto" }
grants.flags.write = ["*"]
"#;

const PAGER_PLAYBOOK: &str = r#"
[playbooks.p]
component = "unused.wasm"
gates = { default = "auto" }
grants.pager.targets = ["on-call"]
"#;

#[tokio::test]
async fn envfile_flags_replace_the_file_and_show_before_and_after() {
    let setup = Setup::new(&format!(
        "[state]\npath = \"state.db\"\n[flags.plaza]\nkind = \"envfile\"\nnames = [\"*\"]\ndir = \"plaza\"\n{FLAGS_PLAYBOOK}"
    ));
    std::fs::create_dir(setup.path("plaza")).unwrap();
    std::fs::write(
        setup.path("plaza/.env"),
        "DATABASE_URL_FILE=/run/secrets/db\nPLAZA_CUSTODIED_MODE_DISABLED=0\n",
    )
    .unwrap();
    let runtime = setup.runtime();

    let mut dry = call_ctx(&runtime, "p", Mode::DryRun);
    assert_eq!(
        set(&mut dry, "PLAZA_CUSTODIED_MODE_DISABLED", "1")
            .await
            .unwrap(),
        Some("0".into())
    );
    assert!(
        !setup.path("plaza/.env.previous").exists(),
        "a dry run writes nothing"
    );

    let mut live = call_ctx(&runtime, "p", Mode::Live);
    let previous = set(&mut live, "PLAZA_CUSTODIED_MODE_DISABLED", "1")
        .await
        .unwrap();
    assert_eq!(previous, Some("0".into()));
    let entry = &live.journal.entries()[0];
    assert_eq!(entry.gate, Decision::Auto);
    assert_eq!(entry.args["value"], "1");
    assert_eq!(
        entry.result,
        json!({ "ok": "0" }),
        "the journal shows before → after"
    );
    assert_eq!(
        std::fs::read_to_string(setup.path("plaza/.env")).unwrap(),
        "DATABASE_URL_FILE=/run/secrets/db\nPLAZA_CUSTODIED_MODE_DISABLED=1\n"
    );
    assert!(
        std::fs::read_to_string(setup.path("plaza/.env.previous"))
            .unwrap()
            .contains("PLAZA_CUSTODIED_MODE_DISABLED=0")
    );

    for (name, value) in [
        ("../x", "1"),
        ("A=B", "1"),
        ("A\nB", "1"),
        ("OK", "1\nEVIL=1"),
    ] {
        match wit(set(&mut live, name, value).await) {
            WitError::Invalid(m) => assert!(m.contains("env file"), "{m}"),
            other => panic!("{name:?}={value:?}: {other:?}"),
        }
    }
    assert!(!setup.dir.path().join("x").exists());
    assert_eq!(
        std::fs::read_to_string(setup.path("plaza/.env"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[tokio::test]
async fn http_flags_speak_the_admin_api_shape_from_the_config() {
    let admin = Receiver::start(|request, _| match request.method.as_str() {
        "GET" => Reply::ok(r#"{"credits": true, "x402": true}"#),
        _ => Reply::ok(r#"{"ok": true}"#),
    })
    .await;
    let auth = secret_file("Bearer adm1n-t0ken");
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[flags.loa_finn]
kind = "http"
names = ["credits", "x402"]
url = "{}/api/v1/admin/feature-flags"
headers = {{ Authorization = {{ file = "{}" }} }}
{FLAGS_PLAYBOOK}"#,
        admin.url,
        auth.path().display()
    ));
    let runtime = setup.runtime();
    let mut dry = call_ctx(&runtime, "p", Mode::DryRun);
    assert_eq!(
        set(&mut dry, "credits", "false").await.unwrap(),
        Some("true".into())
    );
    assert_eq!(admin.requests().len(), 1, "a dry run only reads");

    let mut live = call_ctx(&runtime, "p", Mode::Live);
    assert_eq!(
        set(&mut live, "credits", "false").await.unwrap(),
        Some("true".into())
    );
    let requests = admin.requests();
    let post = &requests[2];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, "/api/v1/admin/feature-flags");
    assert_eq!(post.headers["authorization"], "Bearer adm1n-t0ken");
    assert_eq!(post.headers["content-type"], "application/json");
    assert_eq!(post.json(), json!({ "flag": "credits", "enabled": false }));
    let journal = serde_json::to_string(live.journal.entries()).unwrap();
    assert!(!journal.contains("adm1n-t0ken"));
}

#[tokio::test]
async fn pagerduty_pages_carry_the_dedup_key_and_retries_reuse_it() {
    let pd = Receiver::start(|request, n| {
        if n == 0 {
            Reply::status(500, "try again")
        } else {
            let key = request.json()["dedup_key"].clone();
            Reply::status(
                202,
                json!({ "status": "success", "message": "Event processed", "dedup_key": key })
                    .to_string(),
            )
        }
    })
    .await;
    let routing_key = "R0UT1NGKEY0000000000000000000000";
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[pager.targets.on-call]
kind = "pagerduty"
routing_key = {{ file = "pd-key" }}
url = "{}/v2/enqueue"
source = "stepgate-test"
[pager.channels.incident]
kind = "slack"
url = {{ file = "slack-url" }}
{PAGER_PLAYBOOK}grants.pager.channels = ["incident"]
"#,
        pd.url
    ));
    std::fs::write(setup.path("pd-key"), format!("{routing_key}\n")).unwrap();
    let slack_secret_path = "/services/T000/B000/XXXXSECRETXXXX";
    let slack = Receiver::always(Reply::ok("ok")).await;
    std::fs::write(
        setup.path("slack-url"),
        format!("{}{slack_secret_path}", slack.url),
    )
    .unwrap();
    let runtime = setup.runtime();
    let mut live = call_ctx(&runtime, "p", Mode::Live);

    let id = Pager::page(
        &mut live,
        "on-call".into(),
        Severity::Critical,
        "Plaza: unexplained USDC drift".into(),
        "hot wallet short by 12.5 USDC".into(),
    )
    .await
    .unwrap();
    assert_eq!(id, "run-test-1");
    let requests = pd.requests();
    assert_eq!(requests.len(), 2, "one 500, one retry");
    for request in &requests {
        assert_eq!(request.path, "/v2/enqueue");
        assert_eq!(
            request.json(),
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": "run-test-1",
                "payload": {
                    "summary": "Plaza: unexplained USDC drift",
                    "source": "stepgate-test",
                    "severity": "critical",
                    "custom_details": { "target": "on-call", "details": "hot wallet short by 12.5 USDC" },
                },
            })
        );
    }

    Pager::notify(
        &mut live,
        "incident".into(),
        "custodied mode disabled".into(),
    )
    .await
    .unwrap();
    let posted = &slack.requests()[0];
    assert_eq!(posted.path, slack_secret_path);
    assert_eq!(posted.json(), json!({ "text": "custodied mode disabled" }));

    let journal = serde_json::to_string(live.journal.entries()).unwrap();
    assert!(!journal.contains(routing_key) && !journal.contains("XXXXSECRETXXXX"));
}

/// A Slack channel whose receiver drops repeats (`idempotent = true`)
/// gets the dedup key beside the text and is retried after a 5xx; a plain
/// one is posted at most once, so a failure is an error, not a repeat.
#[tokio::test]
async fn an_idempotent_slack_sink_carries_the_key_and_is_retried_a_plain_one_is_not() {
    let failing_first = || {
        Receiver::start(|_, n| {
            if n == 0 {
                Reply::status(500, "try again")
            } else {
                Reply::ok("ok")
            }
        })
    };
    let (relay, plain) = (failing_first().await, failing_first().await);
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[pager.targets.on-call]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "slack"
url = "{}/relay"
idempotent = true
[pager.channels.plain]
kind = "slack"
url = "{}/plain"
{PAGER_PLAYBOOK}grants.pager.channels = ["incident", "plain"]"#,
        relay.url, plain.url
    ));
    let runtime = setup.runtime();
    let mut live = call_ctx(&runtime, "p", Mode::Live);
    Pager::notify(&mut live, "incident".into(), "failover done".into())
        .await
        .unwrap();
    let requests = relay.requests();
    assert_eq!(requests.len(), 2, "one 500, one retry");
    for request in &requests {
        assert_eq!(
            request.json(),
            json!({ "text": "failover done", "dedup_key": "run-test-1" })
        );
    }
    let err = wit(Pager::notify(&mut live, "plain".into(), "failover done".into()).await);
    let WitError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("HTTP 500"), "{message}");
    assert_eq!(plain.requests().len(), 1, "never sent twice");
    assert_eq!(
        plain.requests()[0].json(),
        json!({ "text": "failover done" })
    );
}

#[tokio::test]
async fn webhook_sinks_post_json_and_a_dead_one_never_shows_its_url() {
    let hook = Receiver::always(Reply::ok("{}")).await;
    let secret_path = "/hooks/Sup3rS3cretT0ken";
    let dead = format!("http://127.0.0.1:{}{secret_path}", free_port());
    let dead_url = secret_file(&dead);
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[pager.targets.on-call]
kind = "webhook"
url = "{}/page"
headers = {{ X-Api-Key = "k-123" }}
timeout = "2s"
[pager.channels.incident]
kind = "webhook"
url = {{ file = "{}" }}
{PAGER_PLAYBOOK}grants.pager.channels = ["incident"]
"#,
        hook.url,
        dead_url.path().display()
    ));
    let runtime = setup.runtime();
    let mut live = call_ctx(&runtime, "p", Mode::Live);
    Pager::page(
        &mut live,
        "on-call".into(),
        Severity::Warning,
        "drift".into(),
        "details".into(),
    )
    .await
    .unwrap();
    let received = &hook.requests()[0];
    assert_eq!(received.headers["x-api-key"], "k-123");
    assert_eq!(
        received.json(),
        json!({ "kind": "page", "dedup_key": "run-test-1", "target": "on-call", "severity": "warning", "summary": "drift", "details": "details" })
    );

    let started = std::time::Instant::now();
    let err = wit(Pager::notify(&mut live, "incident".into(), "hello".into()).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    let WitError::Backend(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("cannot connect"), "{message}");
    assert!(!message.contains("Sup3rS3cret"), "{message}");
}

#[test]
fn pagerduty_as_a_channel_is_refused_at_load() {
    let err = stepgate::config::Config::parse(
        "[pager.channels.incident]\nkind = \"pagerduty\"\nrouting_key = { env = \"PD\" }\n",
        std::path::Path::new("t.toml"),
        std::path::Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("pager.channels.incident") && err.contains("targets"),
        "{err}"
    );
}
