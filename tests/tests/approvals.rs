//! Durable approvals on both state stores: a write that needs approval
//! parks its run, a quorum of distinct authenticated principals decides it,
//! and the run resumes from its journal to perform it, or to hand the
//! playbook `denied`.

use std::sync::Arc;

use stepgate::approvals::StoredApprover;
use stepgate::bindings::WitError;
use stepgate::gate::{Decision, Mode};
use stepgate::journal::Quiet;
use stepgate::run::{RunEnd, Stopped};
use stepgate::runtime::Runtime;
use stepgate::state::approvals::{ApprovalStatus, DecisionError, Role};
use stepgate_tests::servers::PgServer;
use stepgate_tests::*;

use stepgate_tests::Store as Kind;

struct World {
    setup: Setup,
    runtime: Runtime,
    _pg: Option<PgServer>,
}

/// The hostile guest's `must-write` (flags.set PLAZA_TEST_FLAG) behind an
/// approval gate with a quorum of two.
fn world(kind: Kind) -> World {
    world_with(kind, "")
}

/// [`world`] with more settings for the playbook.
fn world_with(kind: Kind, playbook_extra: &str) -> World {
    world_rules(kind, playbook_extra, "")
}

/// [`world_with`] with more gate rules (lines of `[playbooks.hostile.gates]`).
/// Pager target `leads` writes to `pages.jsonl`.
fn world_rules(kind: Kind, playbook_extra: &str, gates: &str) -> World {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let state = stepgate_tests::servers::state_section(pg.as_ref());
    let setup = Setup::new(&format!(
        r#"
{state}
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]
[pager.targets.leads]
kind = "file"
path = "{{dir}}/pages.jsonl"
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.flags.write = ["PLAZA_*"]
quorum = 2
{playbook_extra}
[playbooks.hostile.gates]
default = "approve"
{gates}
"#,
        stepgate_artifacts::HOSTILE
    ));
    let runtime = setup.runtime();
    World {
        setup,
        runtime,
        _pg: pg,
    }
}

impl World {
    /// Starts a live `must-write` run as principal `test`; it parks.
    async fn parked_run(&self) -> String {
        let approver = Arc::new(StoredApprover::new(self.runtime.state.clone(), "test"));
        let report = run(
            &self.runtime,
            "hostile",
            alert("Hostile", &[("mode", "must-write")], &[]),
            Mode::Live,
            approver,
        )
        .await;
        assert!(
            matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: 1, .. })),
            "{:?}",
            report.end
        );
        assert_eq!(report.exit_code(), 8);
        report.run_id
    }

    async fn principal(&self, name: &str, role: Role) -> String {
        self.runtime.state.add_principal(name, role).await.unwrap()
    }

    async fn resume(&self, run_id: &str) -> stepgate::run::RunReport {
        self.runtime
            .resume(run_id, None, Box::new(Quiet))
            .await
            .unwrap()
    }

    async fn flag(&self) -> Option<String> {
        self.runtime.state.flag("PLAZA_TEST_FLAG").await.unwrap()
    }
}

async fn a_parked_write_is_performed_once_its_quorum_approves(kind: Kind) {
    let w = world(kind);
    let run_id = w.parked_run().await;
    let state = &w.runtime.state;
    assert_eq!(state.run(&run_id).await.unwrap().unwrap().status, "parked");
    let pending = state.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].op.as_str(), pending[0].target.as_str()),
        ("flags.set", "PLAZA_TEST_FLAG")
    );
    assert!(pending[0].reason.contains("hostile test"));
    assert_eq!(w.flag().await, None, "nothing is written while parked");

    let alice = w.principal("alice", Role::Approver).await;
    let bob = w.principal("bob", Role::Operator).await;
    let first = state
        .decide_approval(&alice, &run_id, 1, true, "flag is the runbook's step 1")
        .await
        .unwrap();
    assert_eq!(
        first,
        ApprovalStatus::Pending {
            approvals: 1,
            quorum: 2
        }
    );
    // One approval of two: resuming parks again, still nothing written.
    let report = w.resume(&run_id).await;
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { .. })),
        "{:?}",
        report.end
    );
    assert_eq!(w.flag().await, None);

    let second = state
        .decide_approval(&bob, &run_id, 1, true, "agreed")
        .await
        .unwrap();
    assert_eq!(
        second,
        ApprovalStatus::Approved {
            by: vec!["alice".into(), "bob".into()]
        }
    );
    let report = w.resume(&run_id).await;
    assert!(
        matches!(&report.end, RunEnd::Done(o) if o.summary == "wrote"),
        "{:?}",
        report.end
    );
    assert_eq!(report.journal[0].gate, Decision::Approved);
    assert_eq!(w.flag().await.as_deref(), Some("1"));
    assert!(state.pending_approvals().await.unwrap().is_empty());
    // The audit log holds both decisions and the write.
    let audit = state.audit_records().await.unwrap();
    assert_eq!(audit.len(), 3);
    assert_eq!(audit[0].record["approval"]["principal"], "alice");
    assert_eq!(audit[2].record["entry"]["gate"], "approved");
    assert_eq!(state.verify_audit().await.unwrap(), Ok(3));
}

async fn decisions_need_a_valid_token_another_principal_and_a_reason(kind: Kind) {
    let w = world(kind);
    let run_id = w.parked_run().await;
    let state = &w.runtime.state;
    let viewer = w.principal("vera", Role::Viewer).await;
    let starter = w.principal("test", Role::Admin).await;
    let revoked = w.principal("mallory", Role::Approver).await;
    assert!(state.revoke_principal("mallory").await.unwrap());
    let alice = w.principal("alice", Role::Approver).await;

    let decide = |token: String, reason: &'static str| {
        let run_id = run_id.clone();
        async move {
            state
                .decide_approval(&token, &run_id, 1, true, reason)
                .await
        }
    };
    assert!(matches!(
        decide("sg_not_a_token".into(), "ok").await,
        Err(DecisionError::Unauthenticated)
    ));
    assert!(matches!(
        decide(revoked, "ok").await,
        Err(DecisionError::Unauthenticated)
    ));
    assert!(matches!(
        decide(viewer, "ok").await,
        Err(DecisionError::NotAnApprover(_))
    ));
    assert!(matches!(
        decide(starter, "ok").await,
        Err(DecisionError::SelfApproval(_))
    ));
    assert!(matches!(
        decide(alice.clone(), " ").await,
        Err(DecisionError::NoReason)
    ));
    assert!(
        matches!(
            decide(alice.clone(), "ok").await,
            Ok(stepgate::state::approvals::ApprovalStatus::Pending {
                approvals: 1,
                quorum: 2
            })
        ),
        "alice's approval counted, one of the two the quorum needs"
    );
    assert!(matches!(
        decide(alice.clone(), "again").await,
        Err(DecisionError::Twice(_))
    ));
    assert!(matches!(
        state.decide_approval(&alice, &run_id, 9, true, "ok").await,
        Err(DecisionError::Unknown { seq: 9, .. })
    ));
    assert_eq!(w.flag().await, None);
    // No refused decision reached the audit log; the one accepted did.
    assert_eq!(state.audit_records().await.unwrap().len(), 1);
    drop(w.setup);
}

async fn a_denied_write_is_handed_to_the_playbook_as_denied(kind: Kind) {
    let w = world(kind);
    let run_id = w.parked_run().await;
    let alice = w.principal("alice", Role::Approver).await;
    let status = w
        .runtime
        .state
        .decide_approval(&alice, &run_id, 1, false, "not during the freeze")
        .await
        .unwrap();
    assert!(matches!(status, ApprovalStatus::Denied { .. }));
    let report = w.resume(&run_id).await;
    // `must-write` cannot go on without its write: it returns the denial.
    match &report.end {
        RunEnd::Failed(WitError::Denied(why)) => {
            assert!(why.contains("alice") && why.contains("freeze"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.journal[0].gate, Decision::Denied);
    assert_eq!(w.flag().await, None);
    assert_eq!(
        w.runtime.state.run(&run_id).await.unwrap().unwrap().status,
        "failed"
    );
}

async fn an_undecided_approval_expires_as_denied(kind: Kind) {
    let w = world_with(kind, "approval_timeout = \"1h\"");
    let run_id = w.parked_run().await;
    let alice = w.principal("alice", Role::Approver).await;
    let state = &w.runtime.state;
    state
        .decide_approval(&alice, &run_id, 1, true, "one of two")
        .await
        .unwrap();
    assert_eq!(state.pending_approvals().await.unwrap().len(), 1);
    // The store's time moves past the timeout (no sleep to outlast).
    state.clock().advance(std::time::Duration::from_secs(3601));
    assert!(state.pending_approvals().await.unwrap().is_empty());
    let bob = w.principal("bob", Role::Approver).await;
    assert!(matches!(
        state
            .decide_approval(&bob, &run_id, 1, true, "too late")
            .await,
        Err(DecisionError::Decided { .. })
    ));
    let report = w.resume(&run_id).await;
    match &report.end {
        RunEnd::Failed(WitError::Denied(why)) => {
            assert!(why.contains("timeout") && why.contains("expired"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.flag().await, None);
}

/// A rule naming groups: only their principals decide. Its escalation
/// chain pages `leads` once the request has waited, and from then on the
/// leads may decide too; the sweep resumes the run once it is settled.
async fn a_rule_names_who_decides_and_escalates_when_nobody_does(kind: Kind) {
    let w = world_rules(
        kind,
        "",
        r#""flags.set:PLAZA_TEST_FLAG" = { policy = "approve", quorum = 1, groups = ["payments"], escalate = [{ after = "10m", page = "leads", groups = ["leads"] }] }"#,
    );
    let run_id = w.parked_run().await;
    let state = &w.runtime.state;
    let pending = state.pending_approvals().await.unwrap();
    assert_eq!(
        (pending[0].quorum, pending[0].groups.clone()),
        (1, vec!["payments".to_owned()])
    );

    let quiet = |_: &str| -> Box<dyn stepgate::journal::Progress> { Box::new(Quiet) };
    let swept = stepgate::sweep::sweep(&w.runtime, &quiet).await.unwrap();
    assert!(swept.escalated.is_empty() && swept.resumed.is_empty());
    let lena = state
        .add_principal_in("lena", Role::Approver, &["leads".to_owned()])
        .await
        .unwrap();
    let outsider = w.principal("olga", Role::Admin).await;
    for token in [&lena, &outsider] {
        assert!(matches!(
            state.decide_approval(token, &run_id, 1, true, "ok").await,
            Err(DecisionError::NotInGroup { .. })
        ));
    }

    state.clock().advance(std::time::Duration::from_secs(601));
    let swept = stepgate::sweep::sweep(&w.runtime, &quiet).await.unwrap();
    assert_eq!(swept.escalated.len(), 1, "{:?}", swept.errors);
    assert_eq!(swept.escalated[0].paged, "leads");
    let pages = w.setup.pages();
    assert_eq!(pages.len(), 1);
    assert!(
        pages[0]["page"]["summary"]
            .as_str()
            .unwrap()
            .contains(&run_id),
        "{}",
        pages[0]
    );
    // Paged once, whoever sweeps next.
    let again = stepgate::sweep::sweep(&w.runtime, &quiet).await.unwrap();
    assert!(again.escalated.is_empty());
    assert_eq!(w.setup.pages().len(), 1);

    state
        .decide_approval(
            &lena,
            &run_id,
            1,
            true,
            "escalated to me; the runbook says pause",
        )
        .await
        .unwrap();
    let swept = stepgate::sweep::sweep(&w.runtime, &quiet).await.unwrap();
    assert_eq!(swept.resumed.len(), 1, "{:?}", swept.errors);
    assert!(
        matches!(swept.resumed[0].end, RunEnd::Done(_)),
        "{:?}",
        swept.resumed[0].end
    );
    assert_eq!(w.flag().await.as_deref(), Some("1"));
    let audit = state.audit_records().await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.record["escalated"]["paged"] == "leads")
    );
}

/// `on_timeout = "approve"`: silence is consent once the timeout passes,
/// and the sweep carries the run on.
async fn a_rule_may_let_a_timeout_approve(kind: Kind) {
    let w = world_rules(
        kind,
        "",
        r#""flags.set" = { policy = "approve", timeout = "1h", on_timeout = "approve" }"#,
    );
    let run_id = w.parked_run().await;
    let quiet = |_: &str| -> Box<dyn stepgate::journal::Progress> { Box::new(Quiet) };
    let early = stepgate::sweep::sweep(&w.runtime, &quiet).await.unwrap();
    assert!(early.resumed.is_empty());
    w.runtime
        .state
        .clock()
        .advance(std::time::Duration::from_secs(3601));
    let swept = stepgate::sweep::sweep(&w.runtime, &quiet).await.unwrap();
    assert_eq!(swept.resumed.len(), 1);
    assert_eq!(swept.resumed[0].run_id, run_id);
    assert_eq!(swept.resumed[0].journal[0].gate, Decision::Approved);
    assert_eq!(w.flag().await.as_deref(), Some("1"));
}

stepgate_tests::on_both_stores!(
    a_parked_write_is_performed_once_its_quorum_approves,
    decisions_need_a_valid_token_another_principal_and_a_reason,
    a_denied_write_is_handed_to_the_playbook_as_denied,
    an_undecided_approval_expires_as_denied,
    a_rule_names_who_decides_and_escalates_when_nobody_does,
    a_rule_may_let_a_timeout_approve,
);

/// An approval is for the exact write put up: if the write at that position
/// is no longer the same, the approval is void and nothing is written.
#[tokio::test]
async fn an_approval_does_not_carry_over_to_a_different_write() {
    let w = world(Kind::Sqlite);
    let run_id = w.parked_run().await;
    // The filed request no longer matches what the playbook asks for (as if
    // the write had changed between the request and the decisions).
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", w.setup.path("state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE approval_requests SET detail = replace(detail, '\"1\"', '\"0\"')")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let state = &w.runtime.state;
    for name in ["alice", "bob"] {
        let token = w.principal(name, Role::Approver).await;
        state
            .decide_approval(&token, &run_id, 1, true, "looks right")
            .await
            .unwrap();
    }
    let report = w.resume(&run_id).await;
    match &report.end {
        RunEnd::Failed(WitError::Denied(why)) => assert!(why.contains("void"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.flag().await, None);
}

/// The terminal prompt of `stepgate run --live` files the same records: its
/// answer is the decision of whoever started the run. It is one person, so
/// it is asked only about a write one approver of any group may settle.
#[tokio::test]
async fn a_terminal_answer_is_a_recorded_decision_within_its_reach() {
    struct Keyboard(bool);
    #[async_trait::async_trait]
    impl stepgate::gate::Approver for Keyboard {
        async fn decide(&self, _: &stepgate::gate::WriteRequest) -> Result<(), String> {
            if self.0 {
                Ok(())
            } else {
                Err("refused at the terminal".into())
            }
        }
    }
    let at_terminal = |w: &World, yes| {
        Arc::new(
            StoredApprover::new(w.runtime.state.clone(), "cli:pat")
                .at_terminal(Arc::new(Keyboard(yes))),
        )
    };
    let must_write = || alert("Hostile", &[("mode", "must-write")], &[]);

    // One approver: the terminal settles it, both ways, on record.
    let w = world_rules(
        Kind::Sqlite,
        "",
        r#""flags.set" = { policy = "approve", quorum = 1 }"#,
    );
    let state = &w.runtime.state;
    let report = run(
        &w.runtime,
        "hostile",
        must_write(),
        Mode::Live,
        at_terminal(&w, true),
    )
    .await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    assert_eq!(w.flag().await.as_deref(), Some("1"));
    let report = run(
        &w.runtime,
        "hostile",
        must_write(),
        Mode::Live,
        at_terminal(&w, false),
    )
    .await;
    assert!(
        matches!(report.end, RunEnd::Failed(WitError::Denied(_))),
        "{:?}",
        report.end
    );
    let audit = state.audit_records().await.unwrap();
    let decisions: Vec<_> = audit
        .iter()
        .filter(|r| r.record["approval"]["principal"] == "cli:pat")
        .map(|r| r.record["approval"]["approve"].as_bool().unwrap())
        .collect();
    assert_eq!(decisions, [true, false]);

    // A quorum of two: the terminal is not asked, the run parks.
    let w = world(Kind::Sqlite);
    let report = run(
        &w.runtime,
        "hostile",
        must_write(),
        Mode::Live,
        at_terminal(&w, true),
    )
    .await;
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: 1, .. })),
        "{:?}",
        report.end
    );
    assert_eq!(
        w.runtime
            .state
            .approval_status(&report.run_id, 1)
            .await
            .unwrap(),
        Some(ApprovalStatus::Pending {
            approvals: 0,
            quorum: 2
        })
    );
    assert_eq!(w.flag().await, None);
}

/// A new version of the component deployed while a run is parked: the
/// resumed run asks for other calls than its journal holds, and stops as
/// diverged instead of making the approved write.
#[tokio::test]
async fn a_component_changed_under_a_parked_run_diverges() {
    let w = world(Kind::Sqlite);
    let run_id = w.parked_run().await;
    for name in ["alice", "bob"] {
        let token = w.principal(name, Role::Approver).await;
        w.runtime
            .state
            .decide_approval(&token, &run_id, 1, true, "approved before the deploy")
            .await
            .unwrap();
    }
    // The same playbook name, a different component: Plaza, with the
    // grants it declares.
    let redeployed = Setup::new(&format!(
        "[state]\npath = \"{state}\"\n{backends}\n[playbooks.hostile]\ncomponent = \"{component}\"\n{grants}",
        state = w.setup.path("state.db").display(),
        backends = plaza_example_backends(),
        component = stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT,
        grants = PLAZA_GRANTS,
    ));
    let report = redeployed
        .runtime()
        .resume(&run_id, None, Box::new(Quiet))
        .await
        .unwrap();
    match &report.end {
        RunEnd::Stopped(Stopped::Diverged {
            seq: 1,
            journaled,
            asked,
        }) => {
            assert!(journaled.starts_with("flags.set"), "{journaled}");
            // The new version gives up at once on the old alert.
            assert!(
                asked.contains("to fail") && asked.contains("hot_wallet"),
                "{asked}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.flag().await, None, "the approved write was not made");
    assert!(redeployed.pages().is_empty());
}

/// Decisions count in the order they were made: a denial recorded after
/// the quorum was met (one that raced the settling approval) does not turn
/// an approved, possibly performed, write into a denied one.
#[tokio::test]
async fn a_decision_after_the_settling_one_changes_nothing() {
    let w = world_rules(
        Kind::Sqlite,
        "",
        r#""flags.set" = { policy = "approve", quorum = 1 }"#,
    );
    let run_id = w.parked_run().await;
    let alice = w.principal("alice", Role::Approver).await;
    let state = &w.runtime.state;
    state
        .decide_approval(&alice, &run_id, 1, true, "go")
        .await
        .unwrap();
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", w.setup.path("state.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO approval_decisions (run_id, seq, principal, approve, reason, at, plan_digest) VALUES ($1, 1, 'bob', 0, 'late', $2, '')",
        )
        .bind(&run_id)
        .bind(chrono_now_ms() + 1000)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    assert!(matches!(
        state.approval_status(&run_id, 1).await.unwrap(),
        Some(ApprovalStatus::Approved { .. })
    ));
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
