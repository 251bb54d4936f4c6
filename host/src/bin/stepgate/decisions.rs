//! `stepgate approvals`, `approve`, `deny`, `resolve` and `principal`:
//! deciding parked writes and settling writes in doubt from the command line, through the same state-store
//! records the server uses. A decision is recorded, never executed, by
//! the approver: the server (or `stepgate sweep`) resumes the run, unless
//! `--wait` asks this process to (step mode's `continue` always does).

use std::path::PathBuf;
use stepgate::inert::line;
use stepgate::{errln, outln};

use anyhow::{Context, Result, anyhow};

use stepgate::caps::resolved_result;
use stepgate::config::Config;
use stepgate::gate::OnTimeout;
use stepgate::report::exit;
use stepgate::runtime::Runtime;
use stepgate::state::approvals::{ApprovalStatus, Role, STEP_PAUSE};
use stepgate::state::in_doubt::Resolution;
use stepgate::terminal::TerminalProgress;

use crate::UsageError;

/// The caller's bearer token if they gave one: `--token-file`, else
/// `$STEPGATE_TOKEN`.
pub(crate) fn given_token(token_file: Option<&PathBuf>) -> Result<Option<String>> {
    match token_file {
        Some(path) => Ok(Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_owned(),
        )),
        None => Ok(std::env::var("STEPGATE_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())),
    }
}

/// The caller's bearer token, which this command needs.
pub(crate) fn token(token_file: Option<&PathBuf>) -> Result<String> {
    given_token(token_file)?.ok_or_else(|| {
        anyhow!("this needs your token: pass --token-file FILE or set STEPGATE_TOKEN")
    })
}

pub async fn list(config: &Config, json: bool) -> Result<u8, UsageError> {
    let store = config.state_store()?;
    let pending = store.pending_approvals().await?;
    // Runs stopped on a write in doubt wait for an operator too.
    let mut in_doubt = Vec::new();
    for run in store.runs(Some("in-doubt"), 1000).await? {
        if let Some(write) = store.in_doubt(&run.id).await? {
            in_doubt.push(write);
        }
    }
    if json {
        let mut plans = Vec::new();
        for p in &pending {
            if let Some(plan) = store
                .plan_at(&p.run_id, p.seq.max(0) as u64, &p.plan_digest)
                .await?
            {
                plans.push(plan);
            }
        }
        let in_doubt: Vec<_> = in_doubt
            .iter()
            .map(
                |d| serde_json::json!({ "run_id": d.run_id, "seq": d.entry.seq, "entry": d.entry, "recorded": d.recorded }),
            )
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "pending": pending, "in_doubt": in_doubt, "whole_plans": plans })
            )?
        );
        return Ok(exit::DONE);
    }
    if pending.is_empty() && in_doubt.is_empty() {
        outln!("no approvals pending");
    }
    for d in &in_doubt {
        if d.recorded {
            outln!(
                "{} #{}  IN DOUBT, RECORDED DONE: {} {} was made (the store holds its answer, the host lost it); `stepgate resolve {} {} mark-done --reason …` goes on",
                d.run_id,
                d.entry.seq,
                d.entry.name(),
                d.entry.args,
                d.run_id,
                d.entry.seq
            );
            continue;
        }
        outln!(
            "{} #{}  IN DOUBT: {} {} may or may not have reached its backend; check it, then `stepgate resolve {} {} retry|mark-done --reason …`",
            d.run_id,
            d.entry.seq,
            d.entry.name(),
            d.entry.args,
            d.run_id,
            d.entry.seq
        );
    }
    for p in pending {
        if p.op == STEP_PAUSE {
            outln!(
                "{} #{}  {} is paused before step `{}` (step mode; started by {}): `stepgate continue {}` or `abort`\n    so far:\n      {}",
                p.run_id,
                p.seq,
                p.playbook,
                line(&p.target),
                p.started_by,
                p.run_id,
                p.detail
                    .lines()
                    .map(|l| line(l).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n      ")
            );
            continue;
        }
        outln!(
            "{} #{}  {} wants {} on `{}` ({} of {} approvals; started by {})\n    write:  {}\n    reason: {}",
            p.run_id,
            p.seq,
            p.playbook,
            p.op,
            line(&p.target),
            p.approvals,
            p.quorum,
            p.started_by,
            line(&p.detail),
            line(&p.reason)
        );
        if !p.groups.is_empty() {
            outln!("    who:    principals of {}", p.groups.join(", "));
        }
        outln!(
            "    plan:   {} (approve --plan {} binds your decision to it); the run read before asking:\n      {}",
            &p.plan_digest[..p.plan_digest.len().min(12)],
            &p.plan_digest[..p.plan_digest.len().min(12)],
            p.plan.replace('\n', "\n      ")
        );
        if let Some(at) = p
            .expires_at
            .and_then(chrono::DateTime::from_timestamp_millis)
        {
            outln!(
                "    until:  {} (then {})",
                at.to_rfc3339(),
                match p.on_timeout {
                    OnTimeout::Deny => "denied",
                    OnTimeout::Approve => "approved",
                }
            );
        }
        if p.escalations > 0 {
            outln!("    escalated: {} of {} steps", p.escalated, p.escalations);
        }
        if let Some(plan) = store
            .plan_at(&p.run_id, p.seq.max(0) as u64, &p.plan_digest)
            .await?
            .filter(|plan| plan.writes.len() > 1)
        {
            outln!(
                "    whole plan {}: the run would go on to make {} writes (a dry run of the rest):",
                plan.digest.chars().take(12).collect::<String>(),
                plan.writes.len()
            );
            for (i, w) in plan.writes.iter().enumerate() {
                outln!("      {}. {} {}", i + 1, w.op, line(&w.detail));
            }
            outln!(
                "    approve them as one: stepgate approve {} --all --plan {} --reason \"…\"",
                p.run_id,
                plan.digest.chars().take(12).collect::<String>()
            );
        }
    }
    Ok(exit::DONE)
}

/// `stepgate continue` / `abort`: decides the step-mode pause run
/// `run_id` is parked on, and resumes it.
pub async fn step(
    config: Config,
    run_id: &str,
    go_on: bool,
    reason: &str,
    token_file: Option<&PathBuf>,
) -> Result<u8, UsageError> {
    let pending = config.state_store()?.pending_approvals().await?;
    let waiting: Vec<_> = pending.iter().filter(|p| p.run_id == run_id).collect();
    let Some(pause) = waiting.iter().find(|p| p.op == STEP_PAUSE) else {
        return Err(match waiting.first() {
            Some(write) => anyhow!(
                "run `{run_id}` waits for an approval of write #{} ({}), not at a step; use `stepgate approve` or `deny`",
                write.seq,
                write.op
            ),
            None => anyhow!("run `{run_id}` is not parked at a step; `stepgate approvals` lists what waits"),
        }
        .into());
    };
    let decision = Decision {
        run_id,
        seq: pause.seq as u64,
        approve: go_on,
        reason,
        plan: None,
    };
    // Whoever walks a run through step by step is at this terminal: the
    // run goes on here.
    decide(config, decision, token_file, true).await
}

/// What `stepgate approve` / `deny` decide.
pub struct Decision<'a> {
    pub run_id: &'a str,
    pub seq: u64,
    pub approve: bool,
    pub reason: &'a str,
    /// The plan digest (a prefix) the approver looked at.
    pub plan: Option<&'a str>,
}

/// `approve` / `deny --server URL`: the server records the decision and
/// resumes the run; with `wait`, this waits for where the run goes next.
pub async fn decide_remote(
    server: &str,
    decision: Decision<'_>,
    token_file: Option<&PathBuf>,
    wait: bool,
) -> Result<u8, UsageError> {
    let remote = crate::remote::Remote::new(server, token(token_file)?);
    let answer = remote
        .post(
            &format!("/api/runs/{}/approvals/{}", decision.run_id, decision.seq),
            &serde_json::json!({ "approve": decision.approve, "reason": decision.reason, "plan": decision.plan }),
        )
        .await?;
    settled_remote(&remote, decision.run_id, decision.seq, &answer, wait).await
}

/// After a decision the server recorded (`answer`, its reply): says where
/// write `seq` stands and, with `wait`, follows the run on the server.
async fn settled_remote(
    remote: &crate::remote::Remote,
    run_id: &str,
    seq: u64,
    answer: &serde_json::Value,
    wait: bool,
) -> Result<u8, UsageError> {
    match serde_json::from_value::<ApprovalStatus>(answer["status"].clone()) {
        Ok(ApprovalStatus::Pending { approvals, quorum }) => {
            outln!("write #{seq}: {approvals} of {quorum} approvals; the run stays parked");
            return Ok(exit::DONE);
        }
        Ok(settled) => outln!(
            "write #{seq}: {}; the server resumes run {run_id}",
            settled_by(&settled)
        ),
        Err(_) => outln!("{answer}"),
    }
    if !wait {
        return Ok(exit::DONE);
    }
    follow(remote, run_id, seq).await
}

/// After a decision recorded in the state store: says where write `seq`
/// stands and, with `wait`, resumes the run in this process.
async fn settled_here(
    config: Config,
    run_id: &str,
    seq: u64,
    status: ApprovalStatus,
    wait: bool,
) -> Result<u8, UsageError> {
    if let ApprovalStatus::Pending { approvals, quorum } = status {
        outln!("write #{seq}: {approvals} of {quorum} approvals; the run stays parked");
        return Ok(exit::DONE);
    }
    if !wait {
        outln!(
            "write #{seq}: {}; recorded. A running `stepgate serve` resumes run {run_id} (or run `stepgate sweep`; `--wait` resumes it here)",
            settled_by(&status)
        );
        return Ok(exit::DONE);
    }
    outln!(
        "write #{seq}: {}; resuming run {run_id}",
        settled_by(&status)
    );
    resume_here(config, run_id).await
}

fn settled_by(status: &ApprovalStatus) -> String {
    match status {
        ApprovalStatus::Approved { by } => format!("approved by {}", by.join(", ")),
        ApprovalStatus::Denied { by, .. } => format!("denied by {by}"),
        ApprovalStatus::Pending { approvals, quorum } => {
            format!("{approvals} of {quorum} approvals")
        }
    }
}

/// `approve` / `deny`: records the decision in the state store, which
/// needs the approver's token and nothing else (no backend secret). The
/// run is resumed by the server or `stepgate sweep`; with `wait`, by this
/// process, which then needs the config's backends.
pub async fn decide(
    config: Config,
    decision: Decision<'_>,
    token_file: Option<&PathBuf>,
    wait: bool,
) -> Result<u8, UsageError> {
    let Decision {
        run_id,
        seq,
        approve,
        reason,
        plan,
    } = decision;
    let token = token(token_file)?;
    let status = config
        .state_store()?
        .decide_approval_of_plan(&token, run_id, seq, approve, reason, plan)
        .await?;
    settled_here(config, run_id, seq, status, wait).await
}

/// Resumes run `run_id` in this process and prints where it ended.
async fn resume_here(config: Config, run_id: &str) -> Result<u8, UsageError> {
    resume_with(&Runtime::for_one_run(config)?, run_id).await
}

/// [`resume_here`] with a runtime already built.
async fn resume_with(runtime: &Runtime, run_id: &str) -> Result<u8, UsageError> {
    let report = runtime
        .resume(
            run_id,
            None,
            Box::new(TerminalProgress::new(std::io::stderr())),
        )
        .await?;
    crate::print_report(&report, false)?;
    Ok(report.exit_code())
}

/// What `stepgate approve RUN --all --plan DIGEST` approves.
pub struct WholePlan<'a> {
    pub run_id: &'a str,
    /// 8+ hex digits of the whole plan's digest.
    pub digest: &'a str,
    pub reason: &'a str,
}

fn print_whole_plan(plan: &stepgate::state::plans::RunPlan) {
    outln!(
        "approved the whole plan {} of run {}: {} write(s) from #{}, each passing while the run makes exactly these in this order:",
        plan.digest.chars().take(12).collect::<String>(),
        plan.run_id,
        plan.writes.len(),
        plan.from_seq
    );
    for (i, w) in plan.writes.iter().enumerate() {
        outln!("  {}. {} {}", i + 1, w.op, line(&w.detail));
    }
}

/// `approve --all`: records the caller's approval of run `run_id`'s whole
/// plan; the write it waits on is decided by it at once.
pub async fn approve_plan(
    config: Config,
    whole: WholePlan<'_>,
    token_file: Option<&PathBuf>,
    wait: bool,
) -> Result<u8, UsageError> {
    let token = token(token_file)?;
    let store = config.state_store()?;
    let (principal, role) = store
        .authenticate(&token)
        .await?
        .ok_or(stepgate::state::approvals::DecisionError::Unauthenticated)?;
    let plan = store
        .approve_plan(&principal, role, whole.run_id, whole.digest, whole.reason)
        .await?;
    print_whole_plan(&plan);
    let status = store
        .approval_status(whole.run_id, plan.from_seq)
        .await?
        .ok_or_else(|| anyhow!("the run's request #{} is gone", plan.from_seq))?;
    settled_here(config, whole.run_id, plan.from_seq, status, wait).await
}

/// `approve --all --server URL`.
pub async fn approve_plan_remote(
    server: &str,
    whole: WholePlan<'_>,
    token_file: Option<&PathBuf>,
    wait: bool,
) -> Result<u8, UsageError> {
    let remote = crate::remote::Remote::new(server, token(token_file)?);
    let answer = remote
        .post(
            &format!("/api/runs/{}/plan", whole.run_id),
            &serde_json::json!({ "plan": whole.digest, "reason": whole.reason }),
        )
        .await?;
    let plan: stepgate::state::plans::RunPlan = serde_json::from_value(answer["plan"].clone())
        .map_err(|e| anyhow!("the server's answer is not a plan: {e}"))?;
    print_whole_plan(&plan);
    settled_remote(&remote, whole.run_id, plan.from_seq, &answer, wait).await
}

/// Polls the server until the decided write `seq` is journaled and the
/// run stopped moving (ended, or parked again further on); its exit code.
/// A run that asks again for `seq` (it re-planned) parks with exit code 8;
/// after half an hour this stops following.
async fn follow(remote: &crate::remote::Remote, run_id: &str, seq: u64) -> Result<u8, UsageError> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30 * 60);
    loop {
        let shown = remote.get(&format!("/api/runs/{run_id}")).await?;
        let past = shown["journal"]
            .as_array()
            .is_some_and(|j| j.iter().any(|e| e["entry"]["seq"] == seq));
        let status = shown["run"]["status"].as_str().unwrap_or("running");
        if status != "running" && (past || !matches!(status, "parked" | "stale")) {
            outln!("run {run_id} is {status}");
            let code = shown["run"]["exit_code"].as_i64().unwrap_or(0);
            return Ok(u8::try_from(code).unwrap_or(exit::PLAYBOOK_ERROR));
        }
        if status == "parked" {
            let pending = remote.get("/api/approvals").await?;
            let asks_again = pending
                .as_array()
                .is_some_and(|p| p.iter().any(|a| a["run_id"] == run_id && a["seq"] == seq));
            if asks_again {
                outln!(
                    "run {run_id} asks again for write #{seq} (it re-planned on fresh data): `stepgate approvals` shows the new plan"
                );
                return Ok(exit::PARKED);
            }
        }
        if std::time::Instant::now() > until {
            return Err(anyhow!(
                "run {run_id} has not moved on in 30 minutes; `stepgate show {run_id} --server …` shows where it stands"
            )
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// `stepgate cancel`: ends run `run_id` for good.
pub async fn cancel(
    config: Config,
    run_id: &str,
    reason: &str,
    token_file: Option<&PathBuf>,
) -> Result<u8, UsageError> {
    let token = token(token_file)?;
    let cancelled = config
        .state_store()?
        .cancel_run(&token, run_id, reason)
        .await?;
    print_cancelled(&serde_json::json!(cancelled));
    Ok(exit::DONE)
}

/// `stepgate cancel --server URL`.
pub async fn cancel_remote(
    server: &str,
    run_id: &str,
    reason: &str,
    token_file: Option<&PathBuf>,
) -> Result<u8, UsageError> {
    let remote = crate::remote::Remote::new(server, token(token_file)?);
    let answer = remote
        .post(
            &format!("/api/runs/{run_id}/cancel"),
            &serde_json::json!({ "reason": reason }),
        )
        .await?;
    print_cancelled(&answer);
    Ok(exit::DONE)
}

fn print_cancelled(cancelled: &serde_json::Value) {
    outln!(
        "run {} cancelled by {} (it was {}); {} approval request(s) denied",
        cancelled["run_id"].as_str().unwrap_or("?"),
        cancelled["by"].as_str().unwrap_or("?"),
        cancelled["was"].as_str().unwrap_or("?"),
        cancelled["approvals_denied"]
    );
    if let Some(seq) = cancelled["unsettled_write"].as_i64() {
        outln!(
            "write #{seq} was intended but never recorded done: check its backend to see whether it was made"
        );
    }
}

/// `stepgate resolve`: `mark_done` is `None` for retry, else the result
/// the operator gave (if any).
pub async fn resolve(
    config: Config,
    run_id: &str,
    seq: u64,
    mark_done: Option<Option<String>>,
    reason: &str,
    token_file: Option<&PathBuf>,
) -> Result<u8, UsageError> {
    let token = token(token_file)?;
    let runtime = Runtime::for_one_run(config)?;
    let in_doubt = runtime.state.in_doubt_about(run_id, seq).await?;
    let resolution = match mark_done {
        None => Resolution::Retry,
        // The store holds its answer; that is what the playbook gets.
        Some(result) => match in_doubt.recorded_answer() {
            Some(answer) => Resolution::MarkDone(answer),
            None => {
                let value = result
                    .map(|text| {
                        serde_json::from_str(&text)
                            .with_context(|| format!("--result `{text}` is not JSON"))
                    })
                    .transpose()?;
                let entry = &in_doubt.entry;
                Resolution::MarkDone(
                    resolved_result(&entry.interface, &entry.op, value).map_err(|e| anyhow!(e))?,
                )
            }
        },
    };
    runtime
        .state
        .resolve_in_doubt(&token, run_id, seq, &resolution, reason)
        .await?;
    outln!(
        "write #{seq} {}; resuming run {run_id}",
        match resolution {
            Resolution::Retry => "will be sent again",
            Resolution::MarkDone(_) if in_doubt.recorded =>
                "recorded as done, with the answer the store holds",
            Resolution::MarkDone(_) => "recorded as done",
        }
    );
    resume_with(&runtime, run_id).await
}

pub async fn add_principal(
    config: &Config,
    name: &str,
    role: &str,
    groups: &[String],
) -> Result<u8, UsageError> {
    let role = Role::parse(role)
        .ok_or_else(|| anyhow!("unknown role `{role}`; use viewer, approver, operator or admin"))?;
    let token = config
        .state_store()?
        .add_principal_in(name, role, groups)
        .await?;
    errln!("principal `{name}` added; its token (shown only now, stored hashed):");
    outln!("{token}");
    Ok(exit::DONE)
}

pub async fn revoke_principal(config: &Config, name: &str) -> Result<u8, UsageError> {
    if config.state_store()?.revoke_principal(name).await? {
        outln!("principal `{name}` revoked");
        Ok(exit::DONE)
    } else {
        Err(anyhow!("no principal `{name}`").into())
    }
}
