//! Scope and gate, through a real component: every capability ×
//! {granted, not granted} × {dry run, live auto, live deny}. The hostile
//! guest's `every-capability` mode calls each operation once and reports
//! what it got back; the journal says what the gate decided; the backends
//! say what really happened.

use stepgate::bindings::Value;
use stepgate::gate::Mode;
use stepgate::run::{RunEnd, RunReport};
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::*;

const GRANTED: &str = r#"
grants.db.plaza = { write = true, tables = ["escrow_holds"] }
grants.rpc.base.methods = ["eth_blockNumber", "eth_sendRawTransaction"]
grants.flags = { read = ["PLAZA_*"], write = ["PLAZA_*"] }
grants.pager = { targets = ["ceo"], channels = ["incident"] }
"#;

/// Granted db read only: the hostile guest declares it, so it must be
/// granted for the component to load at all.
const NOT_GRANTED: &str = "grants.db.plaza = {}\n";

fn setup(rpc_url: &str, grants: &str, policy: &str) -> Setup {
    setup_gates(rpc_url, grants, &format!("default = \"{policy}\""))
}

/// [`setup`] with the playbook's gate table written out.
fn setup_gates(rpc_url: &str, grants: &str, gates: &str) -> Setup {
    Setup::new(&format!(
        r#"
{state_and_db}
[rpc.base]
kind = "json-rpc"
urls = ["{rpc_url}"]
methods = {{ eth_blockNumber = "read", eth_sendRawTransaction = "write" }}

{flags_and_pager}
[playbooks.hostile]
component = "{component}"
gates = {{ {gates} }}
{grants}
"#,
        flags_and_pager = FLAGS_AND_PAGER,
        state_and_db = state_and_plaza_db(&plaza_fixture_sql()),
        component = stepgate_artifacts::HOSTILE,
    ))
}

/// What each call returned to the playbook.
fn answers(report: &RunReport) -> Vec<(String, String)> {
    let RunEnd::Done(outcome) = &report.end else {
        panic!("{:?}", report.end)
    };
    outcome
        .fields
        .iter()
        .map(|(k, v)| match v {
            Value::Text(t) => (k.clone(), t.split(':').next().unwrap_or("").to_owned()),
            other => panic!("{other:?}"),
        })
        .collect()
}

fn gates(report: &RunReport) -> Vec<(String, String)> {
    report
        .journal
        .iter()
        .map(|e| (e.name(), e.gate.as_str().to_owned()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

const OPS: [&str; 9] = [
    "db.query",
    "db.execute",
    "rpc.call",
    "rpc.send",
    "flags.get",
    "flags.set",
    "pager.page",
    "pager.notify",
    "runbook.confirm",
];

const JOURNAL_OPS: [&str; 9] = [
    "db.query",
    "db.execute",
    "rpc.call",
    "rpc.call",
    "flags.get",
    "flags.set",
    "pager.page",
    "pager.notify",
    "runbook.confirm",
];

/// The write count of the order the guest's `db.execute` touches.
async fn released(runtime: &stepgate::runtime::Runtime) -> Value {
    let rows = runtime
        .backends
        .db("plaza")
        .unwrap()
        .query(
            "SELECT state FROM escrow_holds WHERE order_id = 'order:1003'",
            &[],
            &[],
            1 << 20,
        )
        .await
        .unwrap();
    rows.rows[0][0].clone()
}

/// (gate decision in the journal, what the playbook got back)
type Expect = (&'static str, &'static str);

struct Case {
    grants: &'static str,
    mode: Mode,
    policy: &'static str,
    /// `db.query`: the guest declares it, so it is granted in every config.
    query: Expect,
    /// The other reads: `rpc.call eth_blockNumber`, `flags.get`.
    reads: Expect,
    writes: Expect,
    confirm: Expect,
    writes_happen: bool,
}

impl Case {
    fn expect(&self, op: &str) -> Expect {
        match op {
            "db.query" => self.query,
            "rpc.call" | "flags.get" => self.reads,
            "runbook.confirm" => self.confirm,
            _ => self.writes,
        }
    }
}

async fn check(case: Case) {
    let node = RpcNode::start(&[]).await;
    let setup = setup(&node.url, case.grants, case.policy);
    let runtime = setup.runtime();
    let report = run_unattended(
        &runtime,
        "hostile",
        alert("Hostile", &[("mode", "every-capability")], &[]),
        case.mode,
    )
    .await;
    let label = format!(
        "{} {:?} {}",
        if case.grants == GRANTED {
            "granted"
        } else {
            "not granted"
        },
        case.mode,
        case.policy
    );

    let expected_gates: Vec<(&str, &str)> = JOURNAL_OPS
        .iter()
        .zip(OPS)
        .map(|(journal_op, op)| (*journal_op, case.expect(op).0))
        .collect();
    assert_eq!(gates(&report), pairs(&expected_gates), "{label}");
    let expected_answers: Vec<(&str, &str)> =
        OPS.iter().map(|op| (*op, case.expect(op).1)).collect();
    assert_eq!(answers(&report), pairs(&expected_answers), "{label}");

    // What really happened outside.
    let db_state = released(&runtime).await;
    let flag = setup.flag("PLAZA_TEST_FLAG").await;
    let pages = setup.pages();
    let sent = node.calls("eth_sendRawTransaction");
    if case.writes_happen {
        assert_eq!(db_state, Value::Text("released".into()), "{label}");
        assert_eq!(flag.as_deref(), Some("1"), "{label}");
        assert_eq!(pages.len(), 2, "{label}");
        assert_eq!(sent, 1, "{label}");
    } else {
        assert_eq!(db_state, Value::Text("held".into()), "{label}");
        assert_eq!(flag, None, "{label}");
        assert!(pages.is_empty(), "{label}");
        assert_eq!(sent, 0, "{label}");
    }
    let reads_reached_node = node.calls("eth_blockNumber");
    assert_eq!(
        reads_reached_node,
        usize::from(case.reads.1 == "ok"),
        "{label}"
    );
}

#[tokio::test]
async fn granted_dry_run_reads_for_real_and_simulates_every_write() {
    check(Case {
        grants: GRANTED,
        mode: Mode::DryRun,
        policy: "auto",
        query: ("auto", "ok"),
        reads: ("auto", "ok"),
        writes: ("dry-run", "ok"),
        confirm: ("dry-run", "ok"),
        writes_happen: false,
    })
    .await;
}

#[tokio::test]
async fn granted_live_auto_performs_every_write() {
    check(Case {
        grants: GRANTED,
        mode: Mode::Live,
        policy: "auto",
        query: ("auto", "ok"),
        reads: ("auto", "ok"),
        writes: ("auto", "ok"),
        confirm: ("auto", "ok"),
        writes_happen: true,
    })
    .await;
}

#[tokio::test]
async fn granted_live_deny_refuses_every_write() {
    check(Case {
        grants: GRANTED,
        mode: Mode::Live,
        policy: "deny",
        query: ("auto", "ok"),
        reads: ("auto", "ok"),
        writes: ("denied", "denied"),
        // A refused confirmation is the answer "no", not an error.
        confirm: ("denied", "ok"),
        writes_happen: false,
    })
    .await;
}

#[tokio::test]
async fn not_granted_is_refused_in_every_mode() {
    for (mode, policy, confirm_gate) in [
        (Mode::DryRun, "auto", "dry-run"),
        (Mode::Live, "auto", "auto"),
        (Mode::Live, "deny", "denied"),
    ] {
        check(Case {
            grants: NOT_GRANTED,
            mode,
            policy,
            query: ("auto", "ok"),
            reads: ("not-granted", "not-granted"),
            writes: ("not-granted", "not-granted"),
            // runbook is always granted: confirm still passes its gate.
            confirm: (confirm_gate, "ok"),
            writes_happen: false,
        })
        .await;
    }
}

/// A table, or an RPC method, can have its own rule: only the writes to
/// `escrow_holds` and `eth_sendRawTransaction` are refused, the rest of
/// the same operations' policy (auto) stands.
#[tokio::test]
async fn a_table_and_a_method_have_their_own_rules() {
    let node = RpcNode::start(&[]).await;
    let setup = setup_gates(
        &node.url,
        GRANTED,
        r#"default = "auto", "db.execute:plaza/escrow_holds" = "deny", "rpc.call:base/eth_sendRawTransaction" = "deny""#,
    );
    let runtime = setup.runtime();
    let report = run_unattended(
        &runtime,
        "hostile",
        alert("Hostile", &[("mode", "every-capability")], &[]),
        Mode::Live,
    )
    .await;
    let refused: Vec<_> = gates(&report)
        .into_iter()
        .filter(|(_, gate)| gate == "denied")
        .map(|(op, _)| op)
        .collect();
    assert_eq!(refused, ["db.execute", "rpc.call"]);
    assert_eq!(released(&runtime).await, Value::Text("held".into()));
    assert_eq!(node.calls("eth_sendRawTransaction"), 0);
    assert_eq!(setup.flag("PLAZA_TEST_FLAG").await.as_deref(), Some("1"));
}

/// Every row of the table the guest's `db.execute` writes, as text.
async fn escrow_table(runtime: &stepgate::runtime::Runtime) -> String {
    let rows = runtime
        .backends
        .db("plaza")
        .unwrap()
        .query("SELECT * FROM escrow_holds ORDER BY 1", &[], &[], 1 << 20)
        .await
        .unwrap();
    format!("{:?}", rows.rows)
}

/// The files in `dir` and their bytes.
fn files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap_or_default())
        })
        .collect();
    files.sort();
    files
}

/// A dry run reaches no backend of any kind with a write: the
/// every-capability run, granted and auto-approved, against each flag
/// store kind (builtin, envfile, http) with each pager sink kind (file,
/// webhook, PagerDuty, Slack). Before and after are compared: the whole
/// database table, the env file's directory byte for byte, the builtin
/// flag; the HTTP backends saw reads (GET) and nothing else, the JSON-RPC
/// node no `eth_sendRawTransaction`. (`rpc.http` writes in a dry run:
/// `rpc.rs::http_endpoints_send_granted_routes_and_gate_writes`.)
#[tokio::test]
async fn a_dry_run_reaches_no_backend_of_any_kind() {
    let receiver = Receiver::start(|request, _| match request.method.as_str() {
        "GET" => Reply::ok(r#"{"PLAZA_TEST_FLAG": false}"#),
        _ => Reply::ok(r#"{"status": "success", "dedup_key": "k"}"#),
    })
    .await;
    let url = &receiver.url;
    let flag_stores = [
        "kind = \"builtin\"".to_owned(),
        "kind = \"envfile\"\ndir = \"flags\"".to_owned(),
        format!("kind = \"http\"\nurl = \"{url}/flags\""),
    ];
    let sinks = [
        "kind = \"file\"\npath = \"pages.jsonl\"".to_owned(),
        format!("kind = \"webhook\"\nurl = \"{url}/webhook\""),
        format!("kind = \"pagerduty\"\nrouting_key = \"R0UT1NG\"\nurl = \"{url}/v2/enqueue\""),
        format!("kind = \"slack\"\nurl = \"{url}/slack\""),
    ];
    for flags in &flag_stores {
        for sink in &sinks {
            let label = format!("[{flags}] [{sink}]").replace('\n', " ");
            let node = RpcNode::start(&[]).await;
            // PagerDuty pages people: its channel is a Slack one.
            let channel = match sink.contains("pagerduty") {
                true => &sinks[3],
                false => sink,
            };
            let backends = format!(
                "[flags.plaza]\n{flags}\nnames = [\"PLAZA_TEST_FLAG\"]\n\
                 [pager.targets.ceo]\n{sink}\n[pager.channels.incident]\n{channel}\n"
            );
            let setup = setup(&node.url, GRANTED, "auto");
            let config = std::fs::read_to_string(&setup.config).unwrap();
            let config = config.replace(FLAGS_AND_PAGER, &backends);
            assert!(config.contains(&backends), "{label}");
            std::fs::write(&setup.config, config).unwrap();
            std::fs::create_dir(setup.path("flags")).unwrap();
            std::fs::write(setup.path("flags/.env"), "PLAZA_TEST_FLAG=0\n").unwrap();
            let runtime = setup.runtime();
            let table = escrow_table(&runtime).await;
            let env_dir = files(&setup.path("flags"));
            let heard = receiver.requests().len();

            let report = run_unattended(
                &runtime,
                "hostile",
                alert("Hostile", &[("mode", "every-capability")], &[]),
                Mode::DryRun,
            )
            .await;
            let simulated: Vec<(String, String)> = gates(&report)
                .into_iter()
                .filter(|(_, gate)| gate == "dry-run")
                .collect();
            assert_eq!(simulated.len(), 6, "{label}: {:?}", gates(&report));

            assert_eq!(escrow_table(&runtime).await, table, "{label}");
            assert_eq!(files(&setup.path("flags")), env_dir, "{label}");
            assert_eq!(setup.flag("PLAZA_TEST_FLAG").await, None, "{label}");
            assert!(!setup.path("pages.jsonl").exists(), "{label}");
            assert_eq!(node.calls("eth_sendRawTransaction"), 0, "{label}");
            let sent: Vec<String> = receiver.requests()[heard..]
                .iter()
                .filter(|r| r.method != "GET")
                .map(|r| format!("{} {}", r.method, r.path))
                .collect();
            assert!(sent.is_empty(), "{label}: {sent:?}");
        }
    }
}
