//! What a run logs is findable by run, step and call: every call's log line
//! sits under `run{run=… playbook=…}:step{step=…}:call{seq=… call=…}`.
//!
//! Alone in its test binary: the subscriber is the process's global one, so
//! no other test's thread can change which log lines are enabled.

use std::sync::{Arc, Mutex};

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

#[tokio::test]
async fn every_log_line_of_a_run_names_its_run_step_and_call() {
    let lines = Lines::default();
    let writer = lines.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("stepgate=debug"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

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

    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let run = format!("run{{run={} playbook={PLAYBOOK}}}", report.run_id);
    let calls: Vec<&str> = text.lines().filter(|l| l.contains("call made")).collect();
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
