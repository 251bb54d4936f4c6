//! The Plaza reconciliation-drift playbook, end to end: SQLite loaded with
//! the Plaza example system, a JSON-RPC node on loopback, the built-in flag
//! store and the file pager, in dry run and live, for the explained and
//! the unexplained case.

use std::path::PathBuf;

use stepgate::gate::Mode;
use stepgate::run::RunEnd;
use stepgate_tests::*;

const EXPLAINED: &str = "0x1111111111111111111111111111111111111111";
const UNEXPLAINED: &str = "0x2222222222222222222222222222222222222222";
const PLAYBOOK: &str = "plaza-reconciliation-drift";
const FLAG: &str = "PLAZA_CUSTODIED_MODE_DISABLED";

/// 12,500 USDC is held in escrow in the example system.
const HELD: u128 = 12_500_000_000;

fn wallet(usdc_micro: u128, pending: u64, latest: u64) -> WalletState {
    WalletState {
        usdc_micro,
        pending_nonce: pending,
        latest_nonce: latest,
        outgoing_micro: 0,
    }
}

/// A wallet with a payout of `outgoing_micro` USDC from it in flight.
fn wallet_out(usdc_micro: u128, pending: u64, latest: u64, outgoing_micro: u128) -> WalletState {
    WalletState {
        outgoing_micro,
        ..wallet(usdc_micro, pending, latest)
    }
}

fn setup(rpc_url: &str, flag_policy: &str, extra_sql: &[PathBuf]) -> Setup {
    let mut sql = plaza_fixture_sql();
    sql.extend_from_slice(extra_sql);
    Setup::new(&format!(
        r#"
{state_and_db}
[rpc.base]
kind = "json-rpc"
urls = ["{rpc_url}"]
timeout = "5s"
methods = {{ eth_call = "read", eth_getTransactionCount = "read", eth_getBlockByNumber = "read" }}

{flags_and_pager}
[playbooks.{PLAYBOOK}]
component = "{component}"
grants.db.plaza = {{}}
grants.rpc.base.methods = ["eth_call", "eth_getTransactionCount", "eth_getBlockByNumber"]
grants.flags.write = ["{FLAG}"]
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
gates = {{ default = "deny", "flags.set" = "{flag_policy}", "pager.page" = "auto", "pager.notify" = "auto" }}
"#,
        flags_and_pager = FLAGS_AND_PAGER,
        state_and_db = state_and_plaza_db(&sql),
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
    ))
}

fn drift_alert(wallet: &str) -> stepgate::bindings::Alert {
    alert(
        "ReconciliationDriftHigh",
        &[("hot_wallet", wallet), ("severity", "critical")],
        &[("block_time_ms", "20")],
    )
}

fn triage() -> Vec<(String, String, String)> {
    let read = |op: &str| (op.to_owned(), "read".to_owned(), "auto".to_owned());
    vec![
        read("db.query"),
        read("db.query"),
        read("rpc.call"),
        read("rpc.call"),
        read("rpc.call"),
        read("rpc.call"),
    ]
}

fn mitigation(gate_flag: &str, gate_pager: &str) -> Vec<(String, String, String)> {
    let write = |op: &str, gate: &str| (op.to_owned(), "write".to_owned(), gate.to_owned());
    // The CEO first (the pause may wait for an approver), then the pause,
    // then what was done.
    vec![
        write("pager.page", gate_pager),
        write("flags.set", gate_flag),
        write("pager.page", gate_pager),
        write("pager.notify", gate_pager),
    ]
}

fn severity(report: &stepgate::run::RunReport) -> Option<String> {
    match &report.end {
        RunEnd::Done(outcome) => outcome.severity.clone(),
        other => panic!("run did not finish: {other:?}"),
    }
}

#[tokio::test]
async fn unexplained_drift_dry_run_plans_the_writes_and_makes_none() {
    let node = RpcNode::start(&[(UNEXPLAINED, vec![wallet(HELD - 20_000_000, 81, 81)])]).await;
    let setup = setup(&node.url, "auto", &[]);
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(UNEXPLAINED), Mode::DryRun).await;

    let mut expected = triage();
    expected.extend(mitigation("dry-run", "dry-run"));
    assert_eq!(journal_shape(&report), expected);
    assert_eq!(severity(&report).as_deref(), Some("SEV-0"));
    assert_eq!(field(&report, "drift_usdc"), "20.000000");
    assert_eq!(field(&report, "held_usdc"), "12500.000000");
    assert_eq!(field(&report, "in_flight_txs"), 0);
    assert_eq!(field(&report, "postmortem_required"), true);
    assert_eq!(report.exit_code(), 0);
    // The reads were real: the node answered them.
    assert_eq!(node.calls("eth_call"), 1);
    assert_eq!(node.calls("eth_getTransactionCount"), 2);
    // Nothing was written.
    assert_eq!(setup.flag(FLAG).await, None);
    assert!(setup.pages().is_empty());
    let flag_entry = &report.journal[7];
    assert_eq!(flag_entry.args["value"], "1");
    assert!(
        flag_entry.args["reason"]
            .as_str()
            .unwrap()
            .contains("Plaza runbook")
    );
}

#[tokio::test]
async fn unexplained_drift_live_pauses_custodied_mode_and_pages_the_ceo() {
    let node = RpcNode::start(&[(UNEXPLAINED, vec![wallet(HELD - 20_000_000, 81, 81)])]).await;
    let setup = setup(&node.url, "auto", &[]);
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(UNEXPLAINED), Mode::Live).await;

    let mut expected = triage();
    expected.extend(mitigation("auto", "auto"));
    assert_eq!(journal_shape(&report), expected);
    assert_eq!(severity(&report).as_deref(), Some("SEV-0"));
    assert_eq!(setup.flag(FLAG).await.as_deref(), Some("1"));
    let pages = setup.pages();
    assert_eq!(pages.len(), 3, "{pages:?}");
    // The CEO is paged before the pause, and again with what was done.
    for (page, seq) in [(&pages[0], 7), (&pages[1], 9)] {
        assert_eq!(page["kind"], "page");
        assert_eq!(page["page"]["target"], "ceo");
        assert_eq!(page["page"]["severity"], "critical");
        assert_eq!(
            page["page"]["dedup_key"],
            format!("{}-{seq}", report.run_id),
            "dedup key is run id + call sequence"
        );
    }
    assert_eq!(pages[2]["kind"], "notify");
    assert_eq!(pages[2]["channel"], "incident");
}

#[tokio::test]
async fn live_run_whose_flag_write_is_refused_still_pages_and_says_so() {
    let node = RpcNode::start(&[(UNEXPLAINED, vec![wallet(HELD - 20_000_000, 81, 81)])]).await;
    let setup = setup(&node.url, "approve", &[]);
    let runtime = setup.runtime();
    // No approver attached (not a terminal): the approval is refused.
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(UNEXPLAINED), Mode::Live).await;

    let mut expected = triage();
    expected.extend(mitigation("denied", "auto"));
    assert_eq!(journal_shape(&report), expected);
    assert_eq!(setup.flag(FLAG).await, None);
    assert_eq!(
        setup.pages().len(),
        3,
        "the CEO first, then what was done, twice"
    );
    let RunEnd::Done(outcome) = &report.end else {
        panic!("{:?}", report.end)
    };
    assert!(
        outcome.checklist.iter().any(|c| c.contains("NOT paused")),
        "{:?}",
        outcome.checklist
    );
}

#[tokio::test]
async fn explained_drift_waits_a_block_and_clears_without_writing() {
    for mode in [Mode::DryRun, Mode::Live] {
        // Two transactions in flight; after one block they confirm and the
        // wallet matches the escrow holds.
        let node = RpcNode::start(&[(
            EXPLAINED,
            vec![wallet(HELD - 20_000_000, 44, 42), wallet(HELD, 44, 44)],
        )])
        .await;
        let setup = setup(&node.url, "auto", &[]);
        let runtime = setup.runtime();
        let report = run_unattended(&runtime, PLAYBOOK, drift_alert(EXPLAINED), mode).await;
        assert_eq!(severity(&report).as_deref(), Some("SEV-1"), "{mode:?}");
        assert_eq!(report.writes().count(), 0, "{mode:?}");
        let names: Vec<String> = report.journal.iter().map(|e| e.name()).collect();
        assert_eq!(
            names.iter().filter(|n| *n == "runbook.sleep").count(),
            1,
            "{names:?}"
        );
        assert_eq!(field(&report, "drift_usdc"), "0.000000");
        assert_eq!(node.calls("eth_call"), 2, "read, one block, read again");
        assert_eq!(report.steps, ["Triage", "Wait one block and re-check"]);
        assert_eq!(setup.flag(FLAG).await, None);
        assert!(setup.pages().is_empty());
    }
}

#[tokio::test]
async fn explained_drift_still_pending_is_sev1_and_writes_nothing_live() {
    // A 20 USDC payout is in flight: the ledger released its hold, the
    // wallet still holds it until it lands.
    let node = RpcNode::start(&[(
        EXPLAINED,
        vec![wallet_out(HELD + 20_000_000, 44, 42, 20_000_000)],
    )])
    .await;
    let setup = setup(&node.url, "auto", &[]);
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(EXPLAINED), Mode::Live).await;
    assert_eq!(severity(&report).as_deref(), Some("SEV-1"));
    assert_eq!(field(&report, "in_flight_txs"), 2);
    assert_eq!(report.writes().count(), 0);
    let sleeps = report
        .journal
        .iter()
        .filter(|e| e.name() == "runbook.sleep")
        .count();
    assert_eq!(sleeps, 3, "waits at most three blocks");
    assert_eq!(field(&report, "unaccounted_usdc"), "0.000000");
    assert!(setup.pages().is_empty());
}

#[tokio::test]
async fn transactions_in_flight_that_do_not_account_for_the_drift_explain_nothing() {
    // Two transactions in flight, but the only USDC they move is a 5 USDC
    // payout: the wallet is 20 short and would be 25 short once it lands,
    // so after three blocks the drift is unexplained (SEV-0), not
    // "explained by something in flight".
    let node = RpcNode::start(&[(
        EXPLAINED,
        vec![wallet_out(HELD - 20_000_000, 44, 42, 5_000_000)],
    )])
    .await;
    let setup = setup(&node.url, "auto", &[]);
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(EXPLAINED), Mode::DryRun).await;
    assert_eq!(severity(&report).as_deref(), Some("SEV-0"));
    assert_eq!(field(&report, "unaccounted_usdc"), "25.000000");
    assert_eq!(
        node.calls("eth_getBlockByNumber"),
        4,
        "read, three blocks, read"
    );
    let names: Vec<String> = report.writes().map(|e| e.name()).collect();
    assert_eq!(
        names,
        ["pager.page", "flags.set", "pager.page", "pager.notify"]
    );
}

#[tokio::test]
async fn drift_beyond_the_operational_buffer_is_sev0_even_with_transactions_in_flight() {
    let node = RpcNode::start(&[(EXPLAINED, vec![wallet(HELD - 900_000_000, 44, 42)])]).await;
    let setup = setup(&node.url, "auto", &[]);
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(EXPLAINED), Mode::DryRun).await;
    assert_eq!(severity(&report).as_deref(), Some("SEV-0"));
    assert_eq!(field(&report, "drift_usdc"), "900.000000");
    assert_eq!(report.writes().count(), 4);
}

#[tokio::test]
async fn corrupted_ledger_is_sev0_whatever_the_wallet_says() {
    let node = RpcNode::start(&[(UNEXPLAINED, vec![wallet(HELD, 81, 81)])]).await;
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.sql");
    std::fs::write(
        &corrupt,
        "INSERT INTO ledger_entries (txn_id, account_id, amount, direction, created_at) \
         VALUES ('t-2001', 'order:2001', 5000000, 1, '2026-11-23T08:00:00Z');",
    )
    .unwrap();
    let setup = setup(&node.url, "auto", &[corrupt]);
    let runtime = setup.runtime();
    let alert = alert(
        "LedgerSumZeroViolation",
        &[("hot_wallet", UNEXPLAINED)],
        &[],
    );
    let report = run_unattended(&runtime, PLAYBOOK, alert, Mode::DryRun).await;
    assert_eq!(severity(&report).as_deref(), Some("SEV-0"));
    assert_eq!(field(&report, "ledger_violations"), 1);
    assert_eq!(field(&report, "drift_usdc"), "0.000000");
    // Halt releases (a page), the CEO, the pause, what was done (twice).
    assert_eq!(report.writes().count(), 5);
    assert_eq!(report.steps[0], "Halt releases");
}

#[tokio::test]
async fn an_alert_without_the_wallet_label_fails_clearly() {
    let node = RpcNode::start(&[]).await;
    let setup = setup(&node.url, "auto", &[]);
    let runtime = setup.runtime();
    let alert = alert("ReconciliationDriftHigh", &[], &[]);
    let report = run_unattended(&runtime, PLAYBOOK, alert, Mode::DryRun).await;
    match &report.end {
        RunEnd::Failed(stepgate::bindings::WitError::Failed(m)) => {
            assert!(m.contains("hot_wallet"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.exit_code(), 3);
    assert_eq!(node.total_calls(), 0);
}

/// The same playbook, unchanged, on production-shaped backends: PostgreSQL
/// (URL from the environment), the env file Plaza's API reads, PagerDuty
/// and a Slack webhook (recording receivers), live with auto gates.
#[tokio::test]
async fn unexplained_drift_live_on_postgres_envfile_pagerduty_and_slack() {
    use stepgate_tests::receiver::{Receiver, Reply};
    use stepgate_tests::servers::PgServer;

    let pg = PgServer::start();
    let node = RpcNode::start(&[(UNEXPLAINED, vec![wallet(HELD - 20_000_000, 81, 81)])]).await;
    let pagerduty = Receiver::always(Reply::status(202, r#"{"status": "success"}"#)).await;
    let slack = Receiver::always(Reply::ok("ok")).await;
    let pg_url = secret_file(&pg.url("postgres"));
    let setup = Setup::new(&format!(
        r#"
[state]
path = "state.db"
[db.plaza]
url = {{ file = "{pg_url}" }}
fixture_sql = {sql}
[rpc.base]
kind = "json-rpc"
urls = ["{rpc}"]
methods = {{ eth_call = "read", eth_getTransactionCount = "read", eth_getBlockByNumber = "read" }}
[flags.plaza]
kind = "envfile"
names = ["PLAZA_*"]
dir = "plaza-etc"
[pager.targets.ceo]
kind = "pagerduty"
routing_key = {{ file = "pd-key" }}
url = "{pd}/v2/enqueue"
[pager.channels.incident]
kind = "slack"
url = "{slack}/services/T0/B0/X"
[playbooks.{PLAYBOOK}]
component = "{component}"
grants.db.plaza = {{}}
grants.rpc.base.methods = ["eth_call", "eth_getTransactionCount", "eth_getBlockByNumber"]
grants.flags.write = ["{FLAG}"]
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
gates = {{ default = "auto" }}
"#,
        sql = toml_paths(&plaza_fixture_sql()),
        pg_url = pg_url.path().display(),
        rpc = node.url,
        pd = pagerduty.url,
        slack = slack.url,
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
    ));
    std::fs::create_dir(setup.path("plaza-etc")).unwrap();
    std::fs::write(setup.path("plaza-etc/.env"), "PLAZA_PORT=8080\n").unwrap();
    std::fs::write(setup.path("pd-key"), "R0UT1NG\n").unwrap();
    let runtime = setup.runtime();
    let report = run_unattended(&runtime, PLAYBOOK, drift_alert(UNEXPLAINED), Mode::Live).await;

    let mut expected = triage();
    expected.extend(mitigation("auto", "auto"));
    assert_eq!(
        journal_shape(&report),
        expected,
        "{:?}\n{:#?}",
        report.end,
        report.journal
    );
    assert_eq!(severity(&report).as_deref(), Some("SEV-0"));
    // PostgreSQL's SUM(bigint) is NUMERIC: the same figures as on SQLite.
    assert_eq!(field(&report, "held_usdc"), "12500.000000");
    assert_eq!(field(&report, "drift_usdc"), "20.000000");
    assert_eq!(
        std::fs::read_to_string(setup.path("plaza-etc/.env")).unwrap(),
        format!("PLAZA_PORT=8080\n{FLAG}=1\n")
    );
    let pages = pagerduty.requests();
    assert_eq!(pages.len(), 2, "the CEO before the pause, and after");
    for (page, seq) in pages.iter().zip([7, 9]) {
        let event = page.json();
        assert_eq!(event["routing_key"], "R0UT1NG");
        assert_eq!(event["dedup_key"], format!("{}-{seq}", report.run_id));
        assert_eq!(event["payload"]["severity"], "critical");
    }
    let notices = slack.requests();
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].json()["text"]
            .as_str()
            .unwrap()
            .contains("SEV-0")
    );
}
