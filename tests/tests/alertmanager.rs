//! End to end with a real Prometheus Alertmanager: alerts posted to its v2
//! API the way Prometheus posts them reach `stepgate serve` through its
//! webhook receiver. A burst of one alert makes one Plaza run; its live
//! write parks; an approval over the REST API completes it and sets the
//! flag; the resolved notification is recorded; the metrics moved.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};
use stepgate::server::Server;
use stepgate::state::approvals::Role;
use stepgate_tests::servers::Alertmanager;
use stepgate_tests::*;

const FLAG: &str = "PLAZA_CUSTODIED_MODE_DISABLED";

fn plaza_alert(ends_at: Option<String>) -> Json {
    let mut alert = json!({
        "labels": {
            "alertname": "ReconciliationDriftHigh",
            "severity": "critical",
            "service": "plaza-api",
            "hot_wallet": "0x2222222222222222222222222222222222222222",
        },
        "annotations": { "summary": "escrow and hot wallet disagree" },
        "startsAt": "2026-11-23T09:00:00Z",
        "generatorURL": "http://prometheus.local/graph",
    });
    if let Some(at) = ends_at {
        alert["endsAt"] = json!(at);
    }
    json!([alert])
}

#[tokio::test]
async fn alertmanager_alerts_become_one_approved_plaza_run() {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
{backends}
[server]
sweep_every = "500ms"
notify = "incident"
[playbooks.plaza-reconciliation-drift]
component = "{component}"
{grants}
[playbooks.plaza-reconciliation-drift.gates]
default = "approve"
"pager.page" = "auto"
"pager.notify" = "auto"
[[routes]]
match = ["alertname=ReconciliationDriftHigh"]
playbook = "plaza-reconciliation-drift"
mode = "live"
"#,
        backends = plaza_example_backends(),
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
        grants = PLAZA_GRANTS,
    ));
    let runtime = Arc::new(setup.runtime());
    let server = Server::start(runtime.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let am = Alertmanager::start(&format!("{url}/hooks/alertmanager")).await;

    let state = runtime.state.clone();
    let viewer = state.add_principal("vic", Role::Viewer).await.unwrap();
    let alice = state.add_principal("alice", Role::Approver).await.unwrap();
    let client = reqwest::Client::new();
    let runs = || {
        let (client, url, viewer) = (client.clone(), url.clone(), viewer.clone());
        async move {
            let runs: Vec<Json> = client
                .get(format!("{url}/api/runs"))
                .bearer_auth(&viewer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            runs
        }
    };

    // Prometheus re-sends a firing alert every evaluation: a burst.
    for _ in 0..10 {
        am.post(&plaza_alert(None)).await;
    }
    eventually("a parked run", || async {
        runs().await.iter().any(|r| r["status"] == "parked")
    })
    .await;
    // Alertmanager notifies the group again after group_interval; still one run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = runs().await;
    assert_eq!(all.len(), 1, "one run for one alert: {all:?}");
    let run_id = all[0]["run_id"].as_str().unwrap().to_owned();

    // The approvers were told; one approves over the REST API.
    let pending: Vec<Json> = client
        .get(format!("{url}/api/approvals"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["target"], FLAG);
    let seq = pending[0]["seq"].as_i64().unwrap();
    file_with(
        &setup.path("pages.jsonl"),
        &format!("stepgate approve {run_id} {seq}"),
    )
    .await;
    let approved = client
        .post(format!("{url}/api/runs/{run_id}/approvals/{seq}"))
        .bearer_auth(&alice)
        .json(&json!({ "approve": true, "reason": "runbook: pause custodied mode on unexplained drift" }))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200, "{}", approved.text().await.unwrap());
    eventually("the run done", || async {
        runs().await[0]["status"] == "done"
    })
    .await;
    assert_eq!(state.flag(FLAG).await.unwrap().as_deref(), Some("1"));

    // The alert resolves; Alertmanager says so; stepgate records it.
    let past = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    am.post(&plaza_alert(Some(past))).await;
    let metrics = || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(format!("{url}/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    eventually("the resolved notification", || async {
        metrics().await.contains(r#"outcome="resolved""#)
    })
    .await;
    for line in [
        r#"stepgate_alerts_total{route="0:plaza-reconciliation-drift",outcome="started"} 1"#,
        r#"stepgate_runs_total{playbook="plaza-reconciliation-drift",status="parked"} 1"#,
        r#"stepgate_runs_total{playbook="plaza-reconciliation-drift",status="done"} 1"#,
        r#"stepgate_gate_decisions_total{decision="approved"} 1"#,
    ] {
        eventually(line, || async { metrics().await.contains(line) }).await;
    }
    assert_eq!(runs().await.len(), 1);
}
