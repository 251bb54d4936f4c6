//! Approving a whole plan: when a live run parks on its first write, a
//! dry run of the rest lists every write it would make; an approver who
//! approves the list as one has approved each write while the run makes
//! exactly those writes, in order, with the same arguments. Any difference
//! asks again; the rules (no self-approval, role) hold for each write.

use std::sync::Arc;

use sqlx::Connection;
use stepgate::approvals::StoredApprover;
use stepgate::gate::Mode;
use stepgate::journal::Quiet;
use stepgate::run::{RunEnd, Stopped};
use stepgate::runtime::Runtime;
use stepgate::state::approvals::{ApprovalStatus, DecisionError, Role};
use stepgate_tests::*;

struct World {
    setup: Setup,
    runtime: Runtime,
}

async fn world(held: i64) -> World {
    world_with(held, "").await
}

/// [`world`] with `extra` config at its end.
async fn world_with(held: i64, extra: &str) -> World {
    let setup = Setup::new(&format!(
        r#"
[state]
path = "{{dir}}/state.db"
[db.ledger]
url = "sqlite://{{dir}}/ledger.db"
[flags.main]
kind = "builtin"
names = ["KILL_SWITCH"]
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
[playbooks.drift]
component = "{}"
grants.db.ledger = {{}}
grants.flags = {{ read = ["KILL_SWITCH"], write = ["KILL_SWITCH"] }}
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
gates = {{ default = "approve" }}
{extra}
"#,
        stepgate_artifacts::DRIFT
    ));
    let w = World {
        runtime: setup.runtime(),
        setup,
    };
    w.ledger(&format!(
        "CREATE TABLE balances (id INTEGER PRIMARY KEY, held INTEGER NOT NULL); INSERT INTO balances VALUES (1, {held})"
    ))
    .await;
    w
}

impl World {
    /// A run parked on its first write, whose whole plan `amy` approved.
    async fn parked_run_with_its_plan_approved(&self) -> (String, stepgate::state::plans::RunPlan) {
        let state = &self.runtime.state;
        let run = self.parked_run().await;
        let request = state.approval_request(&run, 3).await.unwrap().unwrap();
        let plan = state
            .plan_at(&run, 3, &request.plan_digest)
            .await
            .unwrap()
            .unwrap();
        state.add_principal("amy", Role::Approver).await.unwrap();
        state
            .approve_plan("amy", Role::Approver, &run, &plan.digest, "as planned")
            .await
            .unwrap();
        (run, plan)
    }

    async fn ledger(&self, sql: &str) {
        let path = self.setup.path("ledger.db");
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    async fn parked_run(&self) -> String {
        let approver = Arc::new(StoredApprover::new(self.runtime.state.clone(), "ops"));
        let playbook = self.runtime.playbook("drift").await.unwrap();
        let report = self
            .runtime
            .run(
                &playbook,
                stepgate::run::RunRequest {
                    alert: alert("DriftHigh", &[], &[]),
                    mode: Mode::Live,
                    approver,
                    progress: Box::new(Quiet),
                    run_id: None,
                    started_by: "ops".into(),
                    step_mode: false,
                },
            )
            .await;
        assert!(
            matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: 3, .. })),
            "{:?}",
            report.end
        );
        report.run_id
    }
}

#[tokio::test]
async fn a_whole_plan_approved_once_passes_each_write_it_lists() {
    let w = world(500).await;
    let state = &w.runtime.state;
    let run = w.parked_run().await;

    // The parked run's whole plan: the pause it waits on, then the page.
    let request = state.approval_request(&run, 3).await.unwrap().unwrap();
    let plan = state
        .plan_at(&run, 3, &request.plan_digest)
        .await
        .unwrap()
        .expect("a whole plan was made when the run parked");
    let ops: Vec<&str> = plan.writes.iter().map(|w| w.op.as_str()).collect();
    assert_eq!(ops, ["flags.set", "pager.page"]);
    assert!(
        plan.writes[1].detail.contains("held 500"),
        "{:?}",
        plan.writes
    );
    assert_eq!(plan.ended["status"], "done");
    // Looking ahead wrote nothing and paged nobody.
    assert_eq!(state.flag("KILL_SWITCH").await.unwrap(), None);
    assert!(w.setup.pages().is_empty());

    // Whoever started the run may not approve its plan; a wrong digest is
    // refused.
    state.add_principal("ops", Role::Operator).await.unwrap();
    assert!(matches!(
        state
            .approve_plan("ops", Role::Operator, &run, &plan.digest, "mine")
            .await,
        Err(DecisionError::SelfApproval(_))
    ));
    state.add_principal("amy", Role::Approver).await.unwrap();
    assert!(matches!(
        state
            .approve_plan("amy", Role::Approver, &run, "0123456789ab", "wrong")
            .await,
        Err(DecisionError::PlanChanged { .. })
    ));
    state
        .approve_plan(
            "amy",
            Role::Approver,
            &run,
            &plan.digest[..12],
            "pause and page, as the runbook says",
        )
        .await
        .unwrap();
    // The write it waits on is decided by it at once.
    assert_eq!(
        state.approval_status(&run, 3).await.unwrap(),
        Some(ApprovalStatus::Approved {
            by: vec!["amy".into()]
        })
    );

    // Resumed: both writes go out without asking again.
    let report = w.runtime.resume(&run, None, Box::new(Quiet)).await.unwrap();
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    assert_eq!(
        state.flag("KILL_SWITCH").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(w.setup.pages().len(), 1);
    let page = state.approval_request(&run, 4).await.unwrap().unwrap();
    assert_eq!(page.decisions.len(), 1);
    assert_eq!(page.decisions[0].principal, "amy");
    assert!(
        page.decisions[0].reason.contains("whole plan")
            && page.decisions[0].reason.contains("write 2 of 2"),
        "{}",
        page.decisions[0].reason
    );
    let audit = state.audit_records_of(&run).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.record["plan_approval"]["principal"] == "amy")
    );
}

#[tokio::test]
async fn a_run_that_leaves_its_whole_plan_asks_again() {
    let w = world(500).await;
    let state = &w.runtime.state;
    let (run, plan) = w.parked_run_with_its_plan_approved().await;

    // The held sum moves before the run resumes: its reads answer
    // differently, the approval is void, and the run re-plans. The new
    // writes (held 700) are not the approved plan's: they ask again.
    w.ledger("UPDATE balances SET held = 700 WHERE id = 1")
        .await;
    let report = w.runtime.resume(&run, None, Box::new(Quiet)).await.unwrap();
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: 3, .. })),
        "{:?}",
        report.end
    );
    let asked = state.approval_request(&run, 3).await.unwrap().unwrap();
    assert!(asked.detail.contains("held 700"), "{}", asked.detail);
    assert!(asked.decisions.is_empty(), "{:?}", asked.decisions);
    assert_eq!(state.flag("KILL_SWITCH").await.unwrap(), None);
    assert!(w.setup.pages().is_empty());
    // A new whole plan was made on the new data.
    let new_plan = state
        .plan_at(&run, 3, &asked.plan_digest)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new_plan.digest, plan.digest);
    assert!(new_plan.approvals.is_empty());
}

/// A re-plan voids every whole-plan approval of the run, even when the
/// re-planned run asks for the very same writes: the approver approved
/// them on reads that are gone.
#[tokio::test]
async fn a_re_plan_voids_a_whole_plan_approval_even_for_the_same_writes() {
    let w = world(500).await;
    let state = &w.runtime.state;
    let (run, plan) = w.parked_run_with_its_plan_approved().await;
    let request = state.approval_request(&run, 3).await.unwrap().unwrap();

    // A read the plan rests on answers otherwise (the flag is "0", not
    // unset), though the playbook would write the same: the approval of
    // #3 is void, the run re-plans and asks again, and amy's whole-plan
    // approval does not answer for her.
    state.set_flag("KILL_SWITCH", "0").await.unwrap();
    let report = w.runtime.resume(&run, None, Box::new(Quiet)).await.unwrap();
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: 3, .. })),
        "{:?}",
        report.end
    );
    let asked = state.approval_request(&run, 3).await.unwrap().unwrap();
    assert_eq!(asked.detail, request.detail, "the same write");
    assert!(asked.decisions.is_empty(), "{:?}", asked.decisions);
    assert!(matches!(asked.status, ApprovalStatus::Pending { .. }));
    // The old plan's digest no longer approves anything.
    assert!(matches!(
        state
            .approve_plan("amy", Role::Approver, &run, &plan.digest, "again")
            .await,
        Err(DecisionError::PlanChanged { .. })
    ));
    let set_aside = state.audit_records_of(&run).await.unwrap();
    assert!(
        set_aside
            .iter()
            .any(|r| r.record.get("replanned").is_some())
    );
}

/// A write a guardrail escalated is decided by its own approvers: a whole
/// plan approved without seeing what the guardrail measured does not
/// carry it.
#[tokio::test]
async fn a_write_a_guardrail_escalated_asks_again_despite_a_whole_plan() {
    let w = world_with(
        500,
        "[guardrails.pages-need-their-own]\nop = \"pager.page\"\nwrites_per_run = 0\n",
    )
    .await;
    let state = &w.runtime.state;
    let (run, _) = w.parked_run_with_its_plan_approved().await;
    let report = w.runtime.resume(&run, None, Box::new(Quiet)).await.unwrap();
    // The pause went out on the plan; the page waits for its own approval.
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: 4, .. })),
        "{:?}",
        report.end
    );
    assert_eq!(
        state.flag("KILL_SWITCH").await.unwrap().as_deref(),
        Some("1")
    );
    assert!(w.setup.pages().is_empty());
    let page = state.approval_request(&run, 4).await.unwrap().unwrap();
    assert!(page.decisions.is_empty(), "{:?}", page.decisions);
    assert!(page.plan.contains("pages-need-their-own"), "{}", page.plan);
}

/// A write a guardrail denies stays denied under a whole plan: approving
/// the plan approved the writes the plan made, never one past a limit.
#[tokio::test]
async fn a_write_a_guardrail_denies_is_denied_despite_a_whole_plan() {
    let w = world_with(
        500,
        "[guardrails.no-pages]\nop = \"pager.page\"\nwrites_per_run = 0\nover = \"deny\"\n",
    )
    .await;
    let state = &w.runtime.state;
    let (run, _) = w.parked_run_with_its_plan_approved().await;
    let report = w.runtime.resume(&run, None, Box::new(Quiet)).await.unwrap();
    // The pause went out on the plan; the page was refused, not sent.
    assert_eq!(
        state.flag("KILL_SWITCH").await.unwrap().as_deref(),
        Some("1")
    );
    assert!(w.setup.pages().is_empty());
    let page = report
        .journal
        .iter()
        .find(|e| e.interface == "pager" && e.op == "page")
        .unwrap_or_else(|| panic!("the page was asked for: {:?}", report.end));
    assert_eq!(page.gate, stepgate::gate::Decision::Denied, "{page:?}");
    assert!(
        page.result.to_string().contains("no-pages"),
        "the refusal names its rule: {}",
        page.result
    );
    assert!(
        state
            .approval_request(&run, page.seq)
            .await
            .unwrap()
            .is_none(),
        "a denied write asks nobody"
    );
}

/// A whole plan does not decide the write it starts at when a guardrail
/// escalated that write: it is approved on its own.
#[tokio::test]
async fn a_whole_plan_cannot_approve_a_first_write_a_guardrail_escalated() {
    let w = world_with(
        500,
        "[guardrails.no-pause-without-its-own]\nop = \"flags.set\"\nwrites_per_run = 0\nquorum = 2\n",
    )
    .await;
    let state = &w.runtime.state;
    let run = w.parked_run().await;
    let request = state.approval_request(&run, 3).await.unwrap().unwrap();
    assert_eq!(request.quorum, 2);
    let plan = state
        .plan_at(&run, 3, &request.plan_digest)
        .await
        .unwrap()
        .unwrap();
    state.add_principal("amy", Role::Approver).await.unwrap();
    let refused = state
        .approve_plan("amy", Role::Approver, &run, &plan.digest, "all of it")
        .await;
    assert!(
        matches!(refused, Err(DecisionError::Guarded { seq: 3, .. })),
        "{refused:?}"
    );
    assert!(matches!(
        state.approval_status(&run, 3).await.unwrap(),
        Some(ApprovalStatus::Pending { .. })
    ));
}
