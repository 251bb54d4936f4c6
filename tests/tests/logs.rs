//! What a run logs is findable by run, step and call: every call's log line
//! sits under `run{run=… playbook=…}:step{step=…}:call{seq=… call=…}`;
//! and no secret reaches a log, the state store, the audit log or an API
//! answer.
//!
//! The subscriber is the process's global one, installed once
//! ([`captured`]) at debug for stepgate: every test of the binary logs
//! into it, and each test looks for its own run or its own secrets.

use std::sync::{Arc, Mutex, OnceLock};

use stepgate::gate::Mode;
use stepgate_tests::*;

const PLAYBOOK: &str = "plaza-reconciliation-drift";

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What every test of this process logs, stepgate's at debug.
fn captured() -> &'static Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Lines::default();
        let writer = lines.clone();
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("stepgate=debug"))
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish(),
        )
        .expect("no other test installs a global subscriber");
        lines
    })
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn every_log_line_of_a_run_names_its_run_step_and_call() {
    let lines = captured();

    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
{backends}
[playbooks.{PLAYBOOK}]
component = "{component}"
{PLAZA_GRANTS}
gates = {{ default = "auto" }}
"#,
        backends = plaza_example_backends(),
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
    ));
    let runtime = setup.runtime();
    let payload =
        std::fs::read_to_string(root().join("examples/alerts/plaza-drift-unexplained.json"))
            .unwrap();
    let alert = stepgate::alert::parse(&payload).unwrap().remove(0);
    let report = run_unattended(&runtime, PLAYBOOK, alert, Mode::DryRun).await;
    let calls_made = report.journal.len();
    assert!(calls_made >= 6, "{:?}", report.end);

    let text = lines.text();
    let run = format!("run{{run={} playbook={PLAYBOOK}}}", report.run_id);
    let calls: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("call made") && l.contains(&run))
        .collect();
    assert_eq!(calls.len(), calls_made, "one line per call:\n{text}");
    for (seq, line) in calls.iter().enumerate() {
        assert!(line.contains(&run), "no run span: {line}");
        assert!(
            line.contains(&format!(":call{{seq={} call=", seq + 1)),
            "no call span: {line}"
        );
    }
    assert!(
        calls[0].contains(":step{step=Triage}:call{seq=1 call=db.query}"),
        "{}",
        calls[0]
    );
    assert!(
        calls.iter().any(
            |l| l.contains(":step{step=Mitigate: unexplained drift}:call{")
                && l.contains("call=flags.set}")
        ),
        "{text}"
    );
}

/// Secrets of every kind a backend takes (an RPC URL and header, a
/// PagerDuty routing key, a Slack webhook URL, a flag API's token), all
/// used by a live run started over the server's hook: none of them is in
/// the log, the state store's files, the audit log, or any answer of the
/// REST API, while each reached its backend.
#[tokio::test]
async fn no_secret_reaches_a_log_the_state_store_the_audit_log_or_the_api() {
    use stepgate_tests::receiver::{Receiver, Reply};
    let lines = captured();
    let backend = Receiver::start(|request, _| {
        if request.path.starts_with("/rpc") {
            let id = request.json()["id"].clone();
            return Reply::ok(
                serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": "0x10" }).to_string(),
            );
        }
        match request.method.as_str() {
            "GET" => Reply::ok(r#"{"PLAZA_TEST_FLAG": false}"#),
            _ => Reply::ok(r#"{"status": "success", "dedup_key": "k"}"#),
        }
    })
    .await;
    let url = &backend.url;
    let secrets = [
        ("rpc-url", format!("{url}/rpc/S3CRET-RPC-PATH")),
        ("rpc-auth", "Bearer S3CRET-RPC-HEADER".to_owned()),
        ("pd-key", "S3CRET-PD-ROUTING-KEY".to_owned()),
        ("slack-url", format!("{url}/slack/S3CRET-SLACK-PATH")),
        ("flags-auth", "Bearer S3CRET-FLAGS-TOKEN".to_owned()),
    ];
    let files: Vec<tempfile::NamedTempFile> = secrets
        .iter()
        .map(|(_, value)| secret_file(value))
        .collect();
    let file = |i: usize| files[i].path().display().to_string();
    let setup = Setup::new(&format!(
        r#"
{state_and_db}
[rpc.base]
kind = "json-rpc"
urls = [{{ file = "{rpc_url}" }}]
headers = {{ Authorization = {{ file = "{rpc_auth}" }} }}
methods = {{ eth_blockNumber = "read", eth_sendRawTransaction = "write" }}
[flags.plaza]
kind = "http"
names = ["PLAZA_TEST_FLAG"]
url = "{url}/flags"
headers = {{ Authorization = {{ file = "{flags_auth}" }} }}
[pager.targets.ceo]
kind = "pagerduty"
routing_key = {{ file = "{pd_key}" }}
url = "{url}/v2/enqueue"
[pager.channels.incident]
kind = "slack"
url = {{ file = "{slack_url}" }}
[server]
sweep_every = "1h"
[playbooks.hostile]
component = "{component}"
gates = {{ default = "auto" }}
grants.db.plaza = {{ write = true, tables = ["escrow_holds"] }}
grants.rpc.base.methods = ["eth_blockNumber", "eth_sendRawTransaction"]
grants.flags = {{ read = ["PLAZA_*"], write = ["PLAZA_*"] }}
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
[[routes]]
match = ["alertname=Hostile"]
playbook = "hostile"
mode = "live"
"#,
        state_and_db = state_and_plaza_db(&plaza_fixture_sql()),
        rpc_url = file(0),
        rpc_auth = file(1),
        pd_key = file(2),
        slack_url = file(3),
        flags_auth = file(4),
        component = stepgate_artifacts::HOSTILE,
    ));
    let runtime = Arc::new(setup.runtime());
    let token = runtime
        .state
        .add_principal("vic", stepgate::state::approvals::Role::Viewer)
        .await
        .unwrap();
    let server = stepgate::server::Server::start(runtime.clone())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = reqwest::Client::new();
    let posted = client
        .post(format!("{api}/hooks/alertmanager"))
        .header("content-type", "application/json")
        .body(alertmanager_notification(
            serde_json::json!({ "alertname": "Hostile", "mode": "every-capability" }),
            "fp-secrets",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    let get = |path: String| {
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .get(path)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    eventually("the run is done", || async {
        get(format!("{api}/api/runs")).await.contains("\"done\"")
    })
    .await;
    let runs: serde_json::Value =
        serde_json::from_str(&get(format!("{api}/api/runs")).await).unwrap();
    let run_id = runs[0]["run_id"].as_str().unwrap().to_owned();

    // Each secret reached its backend.
    let heard: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| {
            let headers: Vec<&String> = r.headers.values().collect();
            format!(
                "{} {headers:?} {}",
                r.path,
                String::from_utf8_lossy(&r.body)
            )
        })
        .collect();
    for needle in [
        "S3CRET-RPC-PATH",
        "S3CRET-RPC-HEADER",
        "S3CRET-PD-ROUTING-KEY",
        "S3CRET-SLACK-PATH",
        "S3CRET-FLAGS-TOKEN",
    ] {
        assert!(
            heard.iter().any(|h| h.contains(needle)),
            "{needle} never reached its backend: {heard:?}"
        );
    }

    // And nowhere else.
    let mut places = vec![
        ("the log".to_owned(), lines.text()),
        (
            "the audit log".to_owned(),
            format!("{:?}", runtime.state.audit_records().await.unwrap()),
        ),
    ];
    for path in [
        "/api/runs".to_owned(),
        format!("/api/runs/{run_id}"),
        "/api/approvals".to_owned(),
        "/metrics".to_owned(),
        "/readyz".to_owned(),
    ] {
        places.push((path.clone(), get(format!("{api}{path}")).await));
    }
    for entry in std::fs::read_dir(setup.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("state.db") {
            let bytes = std::fs::read(&path).unwrap();
            places.push((name, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    assert!(places.iter().any(|(name, _)| name == "state.db"));
    assert!(
        places[0].1.contains(&run_id),
        "the log holds the run's lines"
    );
    for (place, text) in &places {
        assert!(!text.contains("S3CRET"), "a secret in {place}");
    }
}
