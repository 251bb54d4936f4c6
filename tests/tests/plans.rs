//! An approval is bound to its plan: the write, and what the run read
//! before asking. The approver sees the reads and their digest; when the
//! run resumes, the reads are made again before the approved write goes
//! out, and if the world changed meanwhile the approval is void and the run
//! re-plans on fresh data and asks again. Both state stores.

use std::sync::Arc;

use stepgate::approvals::StoredApprover;
use stepgate::gate::Mode;
use stepgate::journal::Quiet;
use stepgate::run::{RunEnd, RunReport, Stopped};
use stepgate::runtime::Runtime;
use stepgate::state::approvals::{DecisionError, Role};
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::servers::PgServer;
use stepgate_tests::*;

use stepgate_tests::Store as Kind;

struct World {
    _setup: Setup,
    runtime: Runtime,
    _pg: Option<PgServer>,
}

/// The hostile guest's `call-loop-write`: two reads of BENCH_FLAG, then
/// `flags.set PLAZA_TEST_FLAG` behind an approval of one.
/// Asserts that `report` parked on write `seq`.
fn parked_at(report: &RunReport, seq: u64) {
    assert!(
        matches!(report.end, RunEnd::Stopped(Stopped::Parked { seq: s, .. }) if s == seq),
        "{:?}",
        report.end
    );
}

fn world(kind: Kind, rule: &str) -> World {
    world_with(kind, rule, "")
}

/// [`world`], with `more` config (guardrails) after it.
fn world_with(kind: Kind, rule: &str, more: &str) -> World {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let state = stepgate_tests::servers::state_section(pg.as_ref());
    let setup = Setup::new(&format!(
        r#"
{state}
[db.plaza]
url = "sqlite::memory:"
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*", "BENCH_*"]
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.flags = {{ read = ["BENCH_*"], write = ["PLAZA_*"] }}
[playbooks.hostile.gates]
"flags.set" = {rule}
{more}
"#,
        stepgate_artifacts::HOSTILE
    ));
    let runtime = setup.runtime();
    World {
        _setup: setup,
        runtime,
        _pg: pg,
    }
}

impl World {
    async fn set_world(&self, value: &str) {
        self.runtime
            .state
            .set_flag("BENCH_FLAG", value)
            .await
            .unwrap();
    }

    async fn parked_run(&self) -> String {
        self.parked_in("call-loop-write", 3).await
    }

    /// A run of hostile `mode`, parked on its write at `seq`.
    async fn parked_in(&self, mode: &str, seq: u64) -> String {
        let approver = Arc::new(StoredApprover::new(self.runtime.state.clone(), "ops"));
        let report = run(
            &self.runtime,
            "hostile",
            alert("Hostile", &[("mode", mode), ("n", "2")], &[]),
            Mode::Live,
            approver,
        )
        .await;
        parked_at(&report, seq);
        report.run_id
    }

    async fn resume(&self, run_id: &str) -> RunReport {
        self.runtime
            .resume(run_id, None, Box::new(Quiet))
            .await
            .unwrap()
    }

    /// amy, an approver, approves write `seq` of `run_id`.
    async fn amy_approves(&self, run_id: &str, seq: u64) {
        let state = &self.runtime.state;
        let amy = state.add_principal("amy", Role::Approver).await.unwrap();
        state
            .decide_approval(&amy, run_id, seq, true, "approved on the plan shown")
            .await
            .unwrap();
    }

    async fn written(&self) -> Option<String> {
        self.runtime.state.flag("PLAZA_TEST_FLAG").await.unwrap()
    }
}

async fn an_approval_of_a_stale_plan_is_void_and_the_run_asks_again(kind: Kind) {
    let w = world(
        kind,
        r#"{ policy = "approve", quorum = 1, recheck = "reads" }"#,
    );
    let state = &w.runtime.state;
    w.set_world("drifting").await;
    let run_id = w.parked_run().await;

    // The approver sees what the run read, and the digest it is bound to.
    let pending = state.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0]
            .plan
            .contains("flags.get BENCH_FLAG → \"drifting\""),
        "{}",
        pending[0].plan
    );
    let digest = pending[0].plan_digest.clone();
    assert_eq!(digest.len(), 64);
    let amy = state.add_principal("amy", Role::Approver).await.unwrap();
    assert!(matches!(
        state
            .decide_approval_of_plan(&amy, &run_id, 3, true, "ok", Some("deadbeef00"))
            .await,
        Err(DecisionError::PlanChanged { .. })
    ));
    state
        .decide_approval_of_plan(
            &amy,
            &run_id,
            3,
            true,
            "the drift is real",
            Some(&digest[..12]),
        )
        .await
        .unwrap();

    // While it waited, the world moved: the approval is void, nothing is
    // written, the run re-reads and asks again on the new plan.
    w.set_world("closed").await;
    parked_at(&w.resume(&run_id).await, 3);
    assert_eq!(w.written().await, None);
    let pending = state.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1, "a new request on the new plan");
    assert!(
        pending[0].plan.contains("\"closed\""),
        "{}",
        pending[0].plan
    );
    assert_ne!(pending[0].plan_digest, digest);
    assert_eq!(state.replans(&run_id).await.unwrap(), 1);
    let audit = state.audit_records().await.unwrap();
    let replanned = audit
        .iter()
        .find_map(|r| r.record.get("replanned"))
        .expect("the re-plan is audited");
    assert!(
        replanned["why"]["error"]
            .as_str()
            .unwrap()
            .contains("#1 flags.get"),
        "{replanned}"
    );

    // Approved again on the fresh plan, with the world unchanged: written,
    // and the entry says its reads were checked.
    state
        .decide_approval(&amy, &run_id, 3, true, "still needed")
        .await
        .unwrap();
    let report = w.resume(&run_id).await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    assert_eq!(w.written().await.as_deref(), Some("1"));
    assert_eq!(report.journal[2].rechecked, Some(2));
}

/// Under the default rule (`recheck = "decisions"`) an approval judges
/// what was approved, not the bytes read: the world moved while the
/// approver decided, the run re-planned on fresh data and reached the same
/// write, with the same arguments, through the same calls, so the
/// approval stands; it is carried over, audited, and the write goes out.
async fn an_approval_stands_when_the_fresh_run_decides_the_same(kind: Kind) {
    let w = world(kind, r#"{ policy = "approve", quorum = 1 }"#);
    let state = &w.runtime.state;
    w.set_world("drifting").await;
    let run_id = w.parked_run().await;
    w.amy_approves(&run_id, 3).await;
    w.set_world("still drifting, differently").await;
    let report = w.resume(&run_id).await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    assert_eq!(w.written().await.as_deref(), Some("1"));
    assert_eq!(state.replans(&run_id).await.unwrap(), 1, "re-planned once");
    assert!(state.pending_approvals().await.unwrap().is_empty());
    let audit = state.audit_records().await.unwrap();
    let carried = audit
        .iter()
        .find_map(|r| r.record.get("carried_over"))
        .expect("the carry-over is audited");
    assert_eq!(
        carried["approvers"],
        serde_json::json!(["amy"]),
        "{carried}"
    );
    assert_eq!(carried["seq"], 3);
    assert_eq!(
        state.deciders(&run_id).await.unwrap()[&3],
        ["amy"],
        "amy's approval, recorded on the fresh request"
    );
}

/// An approval carries over as a decision made now, in its approver's
/// name: an approver revoked while the run was parked carries nothing, and
/// the run asks again.
async fn a_revoked_approvers_approval_does_not_carry_over(kind: Kind) {
    let w = world(kind, r#"{ policy = "approve", quorum = 1 }"#);
    let state = &w.runtime.state;
    w.set_world("drifting").await;
    let run_id = w.parked_run().await;
    w.amy_approves(&run_id, 3).await;
    assert!(state.revoke_principal("amy").await.unwrap());
    w.set_world("still drifting, differently").await;
    parked_at(&w.resume(&run_id).await, 3);
    assert_eq!(w.written().await, None);
    assert_eq!(state.pending_approvals().await.unwrap().len(), 1);
}

/// A write a guardrail escalated was approved for what the guardrail
/// measured: its approval never carries over a re-plan, even to the same
/// write through the same calls; the run asks again.
async fn an_escalated_writes_approval_does_not_carry_over(kind: Kind) {
    let w = world_with(
        kind,
        r#"{ policy = "approve", quorum = 1 }"#,
        "[guardrails.no-flag-without-a-look]\nop = \"flags.set\"\ntargets_per_run = 0\n",
    );
    let state = &w.runtime.state;
    w.set_world("drifting").await;
    let run_id = w.parked_run().await;
    let request = state.approval_request(&run_id, 3).await.unwrap().unwrap();
    assert!(!request.plan.is_empty());
    assert!(
        request.plan.contains("no-flag-without-a-look"),
        "the guardrail escalated it: {}",
        request.plan
    );
    w.amy_approves(&run_id, 3).await;
    w.set_world("still drifting, differently").await;
    parked_at(&w.resume(&run_id).await, 3);
    assert_eq!(w.written().await, None);
    assert_eq!(state.replans(&run_id).await.unwrap(), 1);
}

/// ... and an approval is void when the fresh run decides otherwise: here
/// the write copies what it read, so a changed read is a changed write.
async fn an_approval_is_void_when_the_fresh_run_decides_otherwise(kind: Kind) {
    let w = world(kind, r#"{ policy = "approve", quorum = 1 }"#);
    let state = &w.runtime.state;
    w.set_world("drifting").await;
    let run_id = w.parked_in("copy-write", 3).await;
    w.amy_approves(&run_id, 3).await;
    w.set_world("closed").await;
    parked_at(&w.resume(&run_id).await, 3);
    assert_eq!(w.written().await, None);
    let pending = state.pending_approvals().await.unwrap();
    assert_eq!(pending.len(), 1, "asked again");
    assert!(
        pending[0].detail.contains("closed"),
        "{}",
        pending[0].detail
    );
    assert!(
        state
            .audit_records()
            .await
            .unwrap()
            .iter()
            .all(|r| r.record.get("carried_over").is_none())
    );
}

/// A plan that rests on an HTTP read is re-checked too: sent again as it
/// was, compared by status and body (the `Date` header the server sends
/// differs every second, and voids nothing).
async fn an_http_read_is_rechecked_by_status_and_body(kind: Kind) {
    let depth = Arc::new(std::sync::atomic::AtomicUsize::new(7));
    let answering = depth.clone();
    let api = Receiver::start(move |_, _| {
        let depth = answering.load(std::sync::atomic::Ordering::SeqCst);
        Reply::ok(format!("{{\"depth\": {depth}}}"))
    })
    .await;
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let state = stepgate_tests::servers::state_section(pg.as_ref());
    let setup = Setup::new(&format!(
        r#"
{state}
[db.plaza]
url = "sqlite::memory:"
[rpc.queue]
kind = "http"
urls = ["{}"]
routes = ["GET /depth"]
[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.rpc.queue.routes = ["GET /depth"]
grants.flags = {{ write = ["PLAZA_*"] }}
[playbooks.hostile.gates]
"flags.set" = {{ policy = "approve", quorum = 1, recheck = "reads" }}
"#,
        api.url,
        stepgate_artifacts::HOSTILE
    ));
    let runtime = setup.runtime();
    let approver = Arc::new(StoredApprover::new(runtime.state.clone(), "ops"));
    let report = run(
        &runtime,
        "hostile",
        alert(
            "Hostile",
            &[("mode", "http-read-write"), ("endpoint", "queue")],
            &[("path", "/depth")],
        ),
        Mode::Live,
        approver,
    )
    .await;
    let RunEnd::Stopped(Stopped::Parked { seq, .. }) = report.end else {
        panic!("{:?}", report.end);
    };
    let state = &runtime.state;
    let amy = state.add_principal("amy", Role::Approver).await.unwrap();
    let approve = async |why: &str| {
        state
            .decide_approval(&amy, &report.run_id, seq, true, why)
            .await
            .unwrap()
    };
    let resume = async || {
        runtime
            .resume(&report.run_id, None, Box::new(Quiet))
            .await
            .unwrap()
    };
    let written = async || state.flag("PLAZA_TEST_FLAG").await.unwrap();

    // The queue drained while the approver decided: void, nothing written.
    approve("deep queue").await;
    depth.store(0, std::sync::atomic::Ordering::SeqCst);
    let resumed = resume().await;
    assert!(
        matches!(resumed.end, RunEnd::Stopped(Stopped::Parked { .. })),
        "{:?}",
        resumed.end
    );
    assert_eq!(written().await, None);
    assert_eq!(state.replans(&report.run_id).await.unwrap(), 1);

    // Approved again, a second later (another `Date`), the same body:
    // written, its read checked.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    approve("still deep").await;
    let resumed = resume().await;
    assert!(matches!(resumed.end, RunEnd::Done(_)), "{:?}", resumed.end);
    assert_eq!(written().await.as_deref(), Some("1"));
    let write = resumed
        .journal
        .iter()
        .find(|e| e.name() == "flags.set")
        .unwrap();
    assert_eq!(write.rechecked, Some(1));
    let gets = api.requests().iter().filter(|r| r.method == "GET").count();
    assert!(gets >= 3, "read, re-checked, read again: {gets}");
}

async fn a_rule_without_recheck_keeps_its_approval(kind: Kind) {
    let w = world(
        kind,
        r#"{ policy = "approve", quorum = 1, recheck = false }"#,
    );
    w.set_world("drifting").await;
    let run_id = w.parked_run().await;
    let amy = w
        .runtime
        .state
        .add_principal("amy", Role::Approver)
        .await
        .unwrap();
    w.runtime
        .state
        .decide_approval(&amy, &run_id, 3, true, "go")
        .await
        .unwrap();
    w.set_world("closed").await;
    let report = w.resume(&run_id).await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
    assert_eq!(w.written().await.as_deref(), Some("1"));
    assert_eq!(report.journal[2].rechecked, None);
}

stepgate_tests::on_both_stores!(
    an_approval_of_a_stale_plan_is_void_and_the_run_asks_again,
    a_rule_without_recheck_keeps_its_approval,
    an_http_read_is_rechecked_by_status_and_body,
    an_approval_stands_when_the_fresh_run_decides_the_same,
    an_approval_is_void_when_the_fresh_run_decides_otherwise,
    a_revoked_approvers_approval_does_not_carry_over,
    an_escalated_writes_approval_does_not_carry_over,
);
