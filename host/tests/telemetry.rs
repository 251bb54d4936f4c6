//! OpenTelemetry export against a local OTLP/HTTP receiver: a live run
//! whose alert carries a `traceparent` parks on an approval, and the run
//! that resumes it in another process after the decision exports, in the
//! alert's trace, its run span (the alert's span its parent), its calls
//! under it and the approval's wait with the time it took. Nothing of a
//! call's arguments is exported, and without `[telemetry]` nothing is. A
//! collector that never answers does not hold a run's exit for long.

use crate::support::{principal, text};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::support;
use support::hook::Hook;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ALERT_SPAN: &str = "00f067aa0ba902b7";
/// The alert's trace context says "not sampled": its run is recorded all
/// the same (an alert cannot hide a run from traces).
const FLAGS: &str = "00";

fn stepgate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every span the receiver got, with its service name.
fn spans(hook: &Hook) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for body in hook.raw_bodies() {
        let request = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("an OTLP/HTTP protobuf export");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
    }
    spans
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

#[test]
fn a_run_exports_its_spans_in_the_alerts_trace_with_the_approval_wait() {
    let collector = Hook::start(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let config = |telemetry: bool| {
        let mut text = format!(
            r#"
[state]
path = "state.db"
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
gates = {{ default = "approve" }}
"#,
            stepgate_artifacts::HOSTILE
        );
        if telemetry {
            text.push_str(&format!(
                "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"stepgate-test\"\nexport_every = \"100ms\"\n",
                collector.url
            ));
        }
        std::fs::write(dir.path().join("stepgate.toml"), text).unwrap();
    };
    config(true);
    std::fs::write(
        dir.path().join("alert.json"),
        format!(
            r#"{{"labels": {{"alertname": "Hostile", "mode": "page-sleep-page", "ms": "0"}},
                "annotations": {{"traceparent": "00-{TRACE_ID}-{ALERT_SPAN}-{FLAGS}"}}}}"#
        ),
    )
    .unwrap();
    let operator = principal(&dir.path().join("stepgate.toml"), "ops", "operator")
        .display()
        .to_string();
    let amy = principal(&dir.path().join("stepgate.toml"), "amy", "approver")
        .display()
        .to_string();

    let parked = stepgate(
        dir.path(),
        &[
            "run",
            "hostile",
            "--live",
            "--json",
            "--alert",
            "alert.json",
            "--token-file",
            &operator,
        ],
    );
    assert_eq!(parked.status.code(), Some(8), "{}", text(&parked.stderr));
    let run: serde_json::Value = serde_json::from_slice(&parked.stdout).unwrap();
    let run = run["run_id"].as_str().unwrap().to_owned();
    // The approver takes a while: the wait must show it.
    std::thread::sleep(Duration::from_millis(300));
    let approved = stepgate(
        dir.path(),
        &[
            "approve",
            &run,
            "1",
            "--reason",
            "page the CEO",
            "--wait",
            "--token-file",
            &amy,
        ],
    );
    assert_eq!(
        approved.status.code(),
        Some(8),
        "{}",
        text(&approved.stderr)
    );

    let spans = spans(&collector);
    let trace = hex::decode(TRACE_ID).unwrap();
    let alert_span = hex::decode(ALERT_SPAN).unwrap();
    assert!(
        spans.iter().all(|(service, _)| service == "stepgate-test"),
        "{spans:?}"
    );
    let runs: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "run")
        .collect();
    // The part that parked, and the resumed part (which re-checks its
    // reads before the approved write: a run span of its own).
    assert!(runs.len() >= 2, "{spans:?}");
    for span in &runs {
        assert_eq!(span.trace_id, trace, "in the alert's trace");
        assert_eq!(
            span.parent_span_id, alert_span,
            "the alert's span is the parent"
        );
        assert_eq!(attribute(span, "run").as_deref(), Some(run.as_str()));
    }
    let pages: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "call" && attribute(s, "call").as_deref() == Some("pager.page"))
        .collect();
    assert!(!pages.is_empty(), "{spans:?}");
    for page in &pages {
        assert_eq!(page.trace_id, trace);
        assert!(
            runs.iter().any(|r| r.span_id == page.parent_span_id),
            "a call is a child of its run: {page:?}"
        );
    }
    let waits: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == "approval wait")
        .collect();
    assert_eq!(waits.len(), 1, "{spans:?}");
    let wait = waits[0];
    assert_eq!(wait.trace_id, trace);
    assert_eq!(attribute(wait, "outcome").as_deref(), Some("approved"));
    assert_eq!(attribute(wait, "seq").as_deref(), Some("1"));
    let waited = Duration::from_nanos(wait.end_time_unix_nano - wait.start_time_unix_nano);
    assert!(
        waited >= Duration::from_millis(300),
        "the wait spans the request to the decision: {waited:?}"
    );
    // Spans say which call, never what it carried.
    for body in collector.raw_bodies() {
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("before the sleep"),
            "a page's details exported"
        );
    }

    // Without [telemetry], nothing is sent.
    config(false);
    let before = collector.count();
    let other = stepgate(
        dir.path(),
        &["run", "hostile", "--json", "--alert", "alert.json"],
    );
    assert_eq!(other.status.code(), Some(0), "{}", text(&other.stderr));
    assert_eq!(collector.count(), before, "nothing exported");
}

/// A collector that takes the connection and never answers: the run ends
/// as it would, and the process exits within a few seconds of it.
#[test]
fn a_collector_that_never_answers_does_not_hold_the_run() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stepgate.toml"),
        format!(
            r#"
[db.plaza]
url = "sqlite::memory:"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
[telemetry]
otlp_endpoint = "http://{}"
export_every = "100ms"
"#,
            stepgate_artifacts::HOSTILE,
            silent.local_addr().unwrap()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("alert.json"),
        r#"{"labels": {"alertname": "Hostile", "mode": "fine"}}"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = stepgate(
        dir.path(),
        &["run", "hostile", "--json", "--alert", "alert.json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Bounded by the exporter's shutdown (2 s) and the runtime's (2 s); a
    // generous limit, as this is about not hanging, not about speed.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
}
