//! The host's state store, on a SQLite file and on a real PostgreSQL: runs
//! and their journals are recorded, every write is audited in a hash chain
//! that shows tampering, and no write happens that the store could not
//! record first.

use stepgate::gate::Mode;
use stepgate::run::RunEnd;
use stepgate::runtime::Runtime;
use stepgate::state::runs::Phase;
use stepgate_tests::servers::PgServer;
use stepgate_tests::*;

use stepgate_tests::Store as Kind;

const UNEXPLAINED: &str = "0x2222222222222222222222222222222222222222";

struct State {
    setup: Setup,
    runtime: Runtime,
    pg: Option<PgServer>,
}

impl State {
    /// Runs SQL on the state database, behind the host's back.
    async fn tamper(&self, sql: &str) {
        match &self.pg {
            Some(pg) => pg.exec("postgres", sql).await,
            None => {
                use sqlx::Connection;
                let url = format!("sqlite://{}", self.setup.path("state.db").display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

/// A config whose state lives on `kind`, with the Plaza playbook (auto
/// gates) and the hostile guest.
async fn state(kind: Kind, rpc_url: &str) -> State {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let state = stepgate_tests::servers::state_section(pg.as_ref());
    let setup = Setup::new(&format!(
        r#"
{state}
[db.plaza]
url = "sqlite::memory:"
fixture_sql = {sql}
[rpc.base]
kind = "json-rpc"
urls = ["{rpc_url}"]
methods = {{ eth_call = "read", eth_getTransactionCount = "read", eth_getBlockByNumber = "read" }}
{FLAGS_AND_PAGER}
[playbooks.plaza]
component = "{plaza}"
grants.db.plaza = {{}}
grants.rpc.base.methods = ["eth_call", "eth_getTransactionCount", "eth_getBlockByNumber"]
grants.flags.write = ["PLAZA_CUSTODIED_MODE_DISABLED"]
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
gates = {{ default = "auto" }}

[playbooks.hostile]
component = "{hostile}"
grants.db.plaza = {{}}
grants.flags.write = ["PLAZA_*"]
gates = {{ default = "auto" }}
"#,
        sql = toml_paths(&plaza_fixture_sql()),
        plaza = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
        hostile = stepgate_artifacts::HOSTILE,
    ));
    let runtime = setup.runtime();
    State { setup, runtime, pg }
}

async fn node() -> RpcNode {
    RpcNode::start(&[(
        UNEXPLAINED,
        vec![WalletState {
            usdc_micro: 12_480_000_000,
            pending_nonce: 81,
            latest_nonce: 81,
            ..WalletState::default()
        }],
    )])
    .await
}

fn drift() -> stepgate::bindings::Alert {
    alert(
        "ReconciliationDriftHigh",
        &[("hot_wallet", UNEXPLAINED)],
        &[("block_time_ms", "20")],
    )
}

async fn a_live_run_is_recorded_and_its_writes_audited(kind: Kind) {
    let node = node().await;
    let s = state(kind, &node.url).await;
    let report = run_unattended(&s.runtime, "plaza", drift(), Mode::Live).await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);

    let store = &s.runtime.state;
    let runs = store.runs(None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run.id, report.run_id);
    assert_eq!((run.status.as_str(), run.mode.as_str()), ("done", "live"));
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.started_by, "test");
    assert_eq!(run.alert["name"], "ReconciliationDriftHigh");
    assert_eq!(run.outcome.as_ref().unwrap()["severity"], "SEV-0");

    let journal = store.journal(&report.run_id).await.unwrap();
    assert_eq!(journal.len(), report.journal.len());
    for (stored, entry) in journal.iter().zip(&report.journal) {
        assert_eq!(stored.phase, Phase::Done);
        assert_eq!(&stored.entry, entry);
    }

    let audit = store.audit_records().await.unwrap();
    let ops: Vec<String> = audit
        .iter()
        .map(|r| {
            format!(
                "{}.{}",
                r.record["entry"]["interface"].as_str().unwrap(),
                r.record["entry"]["op"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ops,
        ["pager.page", "flags.set", "pager.page", "pager.notify"]
    );
    assert!(
        audit
            .iter()
            .all(|r| r.run_id == report.run_id && r.record["started_by"] == "test")
    );
    assert!(
        audit[1].record["entry"]["args"]["reason"]
            .as_str()
            .unwrap()
            .contains("Plaza runbook"),
        "every write is audited with its reason"
    );
    assert_eq!(store.verify_audit().await.unwrap(), Ok(4));

    // Edit, reorder, delete: each is found, at the record it touched;
    // each undone, the chain is whole again.
    s.tamper("UPDATE audit SET record = replace(record, '\"auto\"', '\"approved\"') WHERE seq = 2")
        .await;
    assert_eq!(store.verify_audit().await.unwrap().unwrap_err().seq, 2);
    s.tamper("UPDATE audit SET record = replace(record, '\"approved\"', '\"auto\"') WHERE seq = 2")
        .await;
    assert_eq!(store.verify_audit().await.unwrap(), Ok(4));
    let swap = "UPDATE audit SET seq = 100 WHERE seq = 2; UPDATE audit SET seq = 2 WHERE seq = 4; UPDATE audit SET seq = 4 WHERE seq = 100";
    s.tamper(swap).await;
    assert_eq!(store.verify_audit().await.unwrap().unwrap_err().seq, 2);
    s.tamper(swap).await;
    assert_eq!(store.verify_audit().await.unwrap(), Ok(4));
    s.tamper("DELETE FROM audit WHERE seq = 3").await;
    let broken = store.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(broken.seq, 4, "{broken}");
    assert!(broken.problem.contains("missing"), "{broken}");
}

async fn no_write_happens_that_the_store_could_not_record(kind: Kind) {
    let node = node().await;
    let s = state(kind, &node.url).await;
    // Open and migrate the store, then take the journal table away.
    s.runtime.state.runs(None, 1).await.unwrap();
    s.tamper("ALTER TABLE journal RENAME TO journal_gone").await;
    let report = run_unattended(
        &s.runtime,
        "hostile",
        alert("Hostile", &[("mode", "must-write")], &[]),
        Mode::Live,
    )
    .await;
    match &report.end {
        RunEnd::Crashed(m) => assert!(m.contains("state store could not record"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.runtime.state.flag("PLAZA_TEST_FLAG").await.unwrap(),
        None,
        "the write was not made"
    );
    let run = s.runtime.state.run(&report.run_id).await.unwrap().unwrap();
    assert_eq!(run.status, "crashed");
}

/// The hostile playbook paging `ceo` through a webhook that records what
/// it receives (auto gates), its state on `kind`.
async fn paging(kind: Kind) -> (State, stepgate_tests::receiver::Receiver) {
    use stepgate_tests::receiver::{Receiver, Reply};
    let pager = Receiver::always(Reply::ok("{}")).await;
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let state_line = stepgate_tests::servers::state_section(pg.as_ref());
    let setup = paging_setup(&state_line, &pager);
    let runtime = setup.runtime();
    (State { setup, runtime, pg }, pager)
}

/// The config of [`paging`], its state in `state_line`.
fn paging_setup(state_line: &str, pager: &stepgate_tests::receiver::Receiver) -> Setup {
    Setup::new(&format!(
        r#"
{state_line}
[db.plaza]
url = "sqlite::memory:"
[pager.targets.ceo]
kind = "webhook"
url = "{}"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.pager.targets = ["ceo"]
gates = {{ default = "auto" }}
"#,
        pager.url,
        stepgate_artifacts::HOSTILE
    ))
}

/// A write's done row committed although the host was told the commit
/// failed (the connection cut during COMMIT, its answer lost): the host
/// asks the store before it calls the write in doubt, finds it recorded,
/// and the run goes on. Nothing is sent twice; each write is audited once.
#[tokio::test]
async fn a_write_committed_whose_answer_was_lost_is_found_recorded() {
    use std::time::Duration;
    use stepgate_tests::faults::CommitCutter;
    use stepgate_tests::receiver::{Receiver, Reply};
    // The pager answers after 2 s: time to arm the cut while the first
    // page is in flight, so the next COMMIT is the one recording it done.
    let pager = Receiver::always(Reply::ok("{}").after(Duration::from_secs(2))).await;
    let pg = PgServer::start();
    let cutter = CommitCutter::start(pg.port).await;
    let url =
        pg.url("postgres")
            .replacen(&format!(":{}/", pg.port), &format!(":{}/", cutter.port), 1);
    let setup = paging_setup(&format!("[state]\nurl = \"{url}\"\n"), &pager);
    let runtime = setup.runtime();
    runtime.state.runs(None, 1).await.unwrap();
    let (report, ()) = tokio::join!(
        run_unattended(
            &runtime,
            "hostile",
            alert("Hostile", &[("mode", "page-sleep-page"), ("ms", "1")], &[]),
            Mode::Live,
        ),
        async {
            eventually("the first page in flight", || async {
                !pager.requests().is_empty()
            })
            .await;
            cutter.arm();
        }
    );
    assert_eq!(cutter.cuts(), 1, "the done row's commit was cut");
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    assert_eq!(pager.requests().len(), 2, "each page sent once");
    let journal = runtime.state.journal(&report.run_id).await.unwrap();
    let phases: Vec<Phase> = journal.iter().map(|e| e.phase).collect();
    assert_eq!(phases, [Phase::Done; 3]);
    let audited: Vec<String> = runtime
        .state
        .audit_records_of(&report.run_id)
        .await
        .unwrap()
        .iter()
        .filter_map(|r| {
            r.record["entry"]["args"]["summary"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(audited, ["first page", "second page"]);
    assert_eq!(
        runtime
            .state
            .run(&report.run_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        "done"
    );
}

/// A write is audited in the commit that records it done, after it was
/// sent. If the audit log cannot take the record, the write (already
/// stored as intended, with its reason) is left in doubt: the run stops in
/// doubt, listed for an operator to resolve, and the write is neither
/// repeated nor forgotten. No journal entry without its audit record: the
/// done entry was not stored either.
async fn a_write_whose_audit_record_cannot_be_stored_is_left_in_doubt(kind: Kind) {
    let (s, pager) = paging(kind).await;
    s.runtime.state.runs(None, 1).await.unwrap();
    s.tamper("ALTER TABLE audit RENAME TO audit_gone").await;
    let report = run_unattended(
        &s.runtime,
        "hostile",
        alert("Hostile", &[("mode", "page-sleep-page"), ("ms", "1")], &[]),
        Mode::Live,
    )
    .await;
    match &report.end {
        RunEnd::Stopped(stepgate::run::Stopped::InDoubt { seq: 1, call }) => {
            assert!(call.contains("first page"), "{call}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pager.requests().len(), 1, "the first page only, once");
    let journal = s.runtime.state.journal(&report.run_id).await.unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].phase, Phase::Intended);
    assert_eq!(journal[0].entry.args["summary"], "first page");
    // Listed in doubt for an operator, and a resume does not guess.
    let in_doubt = s.runtime.state.in_doubt(&report.run_id).await.unwrap();
    assert_eq!(in_doubt.map(|d| d.entry.seq), Some(1));
    s.tamper("ALTER TABLE audit_gone RENAME TO audit").await;
    let resumed = s
        .runtime
        .resume(
            &report.run_id,
            Some(std::sync::Arc::new(stepgate::gate::NoApprover)),
            Box::new(stepgate::journal::Quiet),
        )
        .await;
    assert!(
        matches!(
            resumed,
            Err(stepgate::runtime::ResumeFailed::Resume(
                stepgate::run::ResumeError::InDoubt(ref id)
            )) if id == &report.run_id
        ),
        "{:?}",
        resumed.as_ref().err()
    );
    assert_eq!(pager.requests().len(), 1, "the page was not sent again");
}

/// A write that was sent and answered with more than `limits.result_bytes`:
/// the run ends as a limit, and the write is recorded done (its answer
/// refused) and audited; it was made, so it is neither in doubt nor sent
/// again.
async fn a_sent_write_whose_answer_is_too_big_is_recorded_and_audited(kind: Kind) {
    use stepgate_tests::receiver::{Receiver, Reply};
    let admin = Receiver::always(Reply::ok("x".repeat(256 << 10))).await;
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let state_line = stepgate_tests::servers::state_section(pg.as_ref());
    let setup = Setup::new(&format!(
        r#"
{state_line}
[limits]
result_bytes = "64KiB"
[db.plaza]
url = "sqlite::memory:"
[rpc.admin]
kind = "http"
urls = ["{}"]
routes = ["POST /admin/x"]
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.rpc.admin.routes = ["POST /admin/x"]
gates = {{ default = "auto" }}
"#,
        admin.url,
        stepgate_artifacts::HOSTILE
    ));
    let runtime = setup.runtime();
    let s = State { setup, runtime, pg };
    let report = run_unattended(
        &s.runtime,
        "hostile",
        alert(
            "Hostile",
            &[("mode", "http")],
            &[("path", "/admin/x"), ("reason", "the runbook says so")],
        ),
        Mode::Live,
    )
    .await;
    match &report.end {
        RunEnd::Limit(limit) => assert!(limit.to_string().contains("result_bytes"), "{limit}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(admin.requests().len(), 1, "sent once");
    let journal = s.runtime.state.journal(&report.run_id).await.unwrap();
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert_eq!(journal[0].phase, Phase::Done);
    let refused = journal[0].entry.result["err"].to_string();
    assert!(refused.contains("the write was made"), "{refused}");
    let audit = s
        .runtime
        .state
        .audit_records_of(&report.run_id)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].record["entry"]["op"], "http");
    assert_eq!(
        s.runtime.state.in_doubt(&report.run_id).await.unwrap(),
        None
    );
}

stepgate_tests::on_both_stores!(
    a_sent_write_whose_answer_is_too_big_is_recorded_and_audited,
    a_live_run_is_recorded_and_its_writes_audited,
    no_write_happens_that_the_store_could_not_record,
    a_write_whose_audit_record_cannot_be_stored_is_left_in_doubt,
);

mod resume {
    use super::*;
    use stepgate::gate::NoApprover;
    use stepgate::journal::Quiet;
    use stepgate::run::Stopped;
    use stepgate_tests::receiver::Receiver;

    /// A run of `page-sleep-page` recorded live against a receiving pager,
    /// then the state made to look as if the host died after call #1 with
    /// that call in `phase`.
    async fn interrupted(kind: Kind, phase: &str) -> (State, Receiver, String) {
        let (s, pager) = super::paging(kind).await;
        let report = run_unattended(
            &s.runtime,
            "hostile",
            alert("Hostile", &[("mode", "page-sleep-page"), ("ms", "10")], &[]),
            Mode::Live,
        )
        .await;
        assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
        assert_eq!(pager.requests().len(), 2);
        s.tamper(&format!(
            "DELETE FROM journal WHERE seq > 1; UPDATE journal SET phase = '{phase}'; UPDATE runs SET status = 'running', ended_at = NULL, outcome = NULL, exit_code = NULL"
        ))
        .await;
        (s, pager, report.run_id)
    }

    async fn resume(s: &State, run_id: &str) -> stepgate::run::RunReport {
        s.runtime
            .resume(
                run_id,
                Some(std::sync::Arc::new(NoApprover)),
                Box::new(Quiet),
            )
            .await
            .unwrap()
    }

    pub async fn a_resumed_run_answers_its_journal_and_goes_on_live(kind: Kind) {
        let (s, pager, run_id) = interrupted(kind, "done").await;
        let report = resume(&s, &run_id).await;
        assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
        // #1 came from the journal; only the second page went out again.
        let requests = pager.requests();
        assert_eq!(requests.len(), 3);
        assert_eq!(requests[2].json()["summary"], "second page");
        let names: Vec<String> = report.journal.iter().map(|e| e.name()).collect();
        assert_eq!(names, ["pager.page", "runbook.sleep", "pager.page"]);
        let stored = s.runtime.state.journal(&run_id).await.unwrap();
        assert_eq!(stored.len(), 3);
        assert!(stored.iter().all(|e| e.phase == Phase::Done));
        assert_eq!(
            s.runtime.state.run(&run_id).await.unwrap().unwrap().status,
            "done"
        );
        // A finished run does not resume again.
        let again = s
            .runtime
            .resume(
                &run_id,
                Some(std::sync::Arc::new(NoApprover)),
                Box::new(Quiet),
            )
            .await;
        assert!(
            matches!(
                &again,
                Err(stepgate::runtime::ResumeFailed::Resume(
                    stepgate::run::ResumeError::Ended { status, .. }
                )) if status == "done"
            ),
            "{:?}",
            again.as_ref().err()
        );
    }

    pub async fn a_write_caught_between_intended_and_done_is_in_doubt(kind: Kind) {
        let (s, pager, run_id) = interrupted(kind, "intended").await;
        let report = resume(&s, &run_id).await;
        match &report.end {
            RunEnd::Stopped(Stopped::InDoubt { seq: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(report.exit_code(), 7);
        assert_eq!(
            pager.requests().len(),
            2,
            "the write in doubt was not repeated"
        );
        let run = s.runtime.state.run(&run_id).await.unwrap().unwrap();
        assert_eq!(run.status, "in-doubt");
    }

    /// A host that stops parks its own runs at their next call, and no
    /// other host's: the stop token is its runtime's, not the process's.
    /// The parked run resumes from its journal on the next start.
    #[tokio::test]
    async fn a_stopping_host_parks_its_runs_and_no_others() {
        let (a, pager_a) = super::paging(Kind::Sqlite).await;
        let (b, pager_b) = super::paging(Kind::Sqlite).await;
        let slow = || {
            alert(
                "Hostile",
                &[("mode", "page-sleep-page"), ("ms", "1000")],
                &[],
            )
        };
        let (stopped, went_on, ()) = tokio::join!(
            run_unattended(&a.runtime, "hostile", slow(), Mode::Live),
            run_unattended(&b.runtime, "hostile", slow(), Mode::Live),
            // A's token is raised on A's first page alone: waiting for B's
            // too could let A's sleep end first on a loaded machine. B's
            // run is in flight then, whatever call it is at: both started
            // together.
            async {
                eventually("A's first page", || async { pager_a.requests().len() == 1 }).await;
                a.runtime.engine.stop_token().raise();
            }
        );
        // The receiver may see the first page before the run has made its
        // next call (the sleep, #2): it parks at #2 or at the second page,
        // #3, never later and never before the first page was recorded.
        assert!(
            matches!(
                stopped.end,
                RunEnd::Stopped(Stopped::HostStopping { seq: 2 | 3 })
            ),
            "parked after the first page, before the second: {:?}",
            stopped.end
        );
        assert!(matches!(went_on.end, RunEnd::Done(_)), "{:?}", went_on.end);
        assert_eq!(pager_a.requests().len(), 1);
        assert_eq!(pager_b.requests().len(), 2);
        // The next start (a new runtime on the same store) goes on.
        let next = a.setup.runtime();
        let resumed = next
            .resume(
                &stopped.run_id,
                Some(std::sync::Arc::new(NoApprover)),
                Box::new(Quiet),
            )
            .await
            .unwrap();
        assert!(matches!(resumed.end, RunEnd::Done(_)), "{:?}", resumed.end);
        assert_eq!(pager_a.requests().len(), 2, "only the second page, once");
    }

    stepgate_tests::on_both_stores!(
        a_resumed_run_answers_its_journal_and_goes_on_live,
        a_write_caught_between_intended_and_done_is_in_doubt,
        a_changed_playbook_diverges_instead_of_guessing,
    );

    pub async fn a_changed_playbook_diverges_instead_of_guessing(kind: Kind) {
        let (s, pager, run_id) = interrupted(kind, "done").await;
        s.tamper("UPDATE journal SET entry = replace(entry, 'first page', 'another page')")
            .await;
        let report = resume(&s, &run_id).await;
        match &report.end {
            RunEnd::Stopped(Stopped::Diverged {
                seq: 1,
                journaled,
                asked,
            }) => {
                assert!(journaled.contains("another page") && asked.contains("first page"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pager.requests().len(), 2);
    }
}
