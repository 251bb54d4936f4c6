//! The capability interfaces a playbook imports: one file per WIT
//! interface, each implementing its generated `Host` trait.
//!
//! Every call goes through one path, [`CallCtx::call`]: count it against
//! the call limit, check its scope, pass the gate, perform or simulate it
//! through the backend, cap the bytes it returns, and journal it. Interface
//! files only say what their call's scope, class and arguments are; the
//! policy lives here once.

pub mod clock;
pub mod db;
pub mod flags;
pub mod pager;
mod recheck;
mod replay;
pub mod rpc;
pub mod runbook;
pub mod sql;
mod step_mode;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};

use std::collections::{BTreeMap, BTreeSet};

use crate::backends::{BackendError, Backends};
use crate::bindings::{Alert, WitError};
use crate::config::Limits;
use crate::ending::{LimitExceeded, StopToken, Stopped};
use crate::gate::Effect;
use crate::gate::{Approver, Decision, Finding, Gates, Mode, Verdict, WriteRequest};
use crate::guard::{Guardrails, RunHistory, WriteFacts};
use crate::journal::{Entry, Journal};
use crate::scope::{NotGranted, Scope};
use crate::state::runs::{Phase, StoredEntry};

pub use crate::bindings::CapError;

impl From<Stopped> for CapError {
    fn from(e: Stopped) -> Self {
        CapError::Trap(wasmtime::Error::new(e))
    }
}

impl From<LimitExceeded> for CapError {
    fn from(e: LimitExceeded) -> Self {
        CapError::Trap(wasmtime::Error::new(e))
    }
}

impl crate::bindings::stepgate::playbook::types::Host for CallCtx {
    fn convert_error(&mut self, err: CapError) -> wasmtime::Result<WitError> {
        match err {
            CapError::Wit(e) => Ok(e),
            CapError::Trap(t) => Err(t),
        }
    }
}

/// Whether the backend should do the write or only show what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Perform,
    Simulate,
}

/// One capability call, described for the gate and the journal.
pub struct Call {
    pub interface: &'static str,
    pub op: &'static str,
    pub effect: Effect,
    /// What the call acts on (connection, endpoint, flag, target), for gate
    /// keys like `flags.set:NAME` and for the approver.
    pub target: String,
    pub args: serde_json::Value,
    /// The reason the playbook gave (writes).
    pub reason: String,
    /// The backend takes an idempotency key ([`idempotency_key`]): sending
    /// the write twice has the effect of sending it once.
    pub keyed: bool,
    /// Finer targets gate keys may name (`db.execute:conn/TABLE`,
    /// `rpc.call:endpoint/METHOD`).
    pub finer: Vec<String>,
    /// Rows the write would change, measured by its dry run before the
    /// gate (a `db.execute` under a guardrail that limits rows).
    pub rows: Option<Result<u64, String>>,
}

/// The idempotency key of call `seq` of run `run_id`: the same write sent
/// again (a retry, a resume) carries the same key.
pub fn idempotency_key(run_id: &str, seq: u64) -> String {
    format!("{run_id}-{seq}")
}

impl Call {
    pub fn read(
        interface: &'static str,
        op: &'static str,
        target: &str,
        args: serde_json::Value,
    ) -> Call {
        Call {
            interface,
            op,
            effect: Effect::Read,
            target: target.to_owned(),
            args,
            reason: String::new(),
            keyed: false,
            finer: Vec::new(),
            rows: None,
        }
    }

    pub fn write(
        interface: &'static str,
        op: &'static str,
        target: &str,
        args: serde_json::Value,
        reason: &str,
    ) -> Call {
        Call {
            interface,
            op,
            effect: Effect::Write,
            target: target.to_owned(),
            args,
            reason: reason.to_owned(),
            keyed: false,
            finer: Vec::new(),
            rows: None,
        }
    }

    /// Names the finer targets of the write (see [`Call::finer`]).
    pub fn finer(mut self, finer: Vec<String>) -> Call {
        self.finer = finer;
        self
    }

    /// The rows the write would change (see [`Call::rows`]).
    pub fn rows(mut self, rows: Option<Result<u64, String>>) -> Call {
        self.rows = rows;
        self
    }

    /// Marks the write as keyed (see [`Call::keyed`]).
    pub fn keyed(mut self, keyed: bool) -> Call {
        self.keyed = keyed;
        self
    }
}

/// Everything a run's capability calls need: its scope, gates, backends,
/// journal and limits. It is the `T` the generated `Host` traits are
/// implemented on.
pub struct CallCtx {
    pub playbook: String,
    pub run_id: String,
    pub mode: Mode,
    pub scope: Scope,
    pub gates: Gates,
    /// The guardrails every write is judged by before its gate decides.
    pub guard: Arc<Guardrails>,
    /// The alert the run answers and who started it, for the guardrails.
    alert: Option<Alert>,
    started_by: String,
    /// Writes made or simulated so far, by `interface.op`: their targets.
    writes: BTreeMap<String, Vec<String>>,
    /// What the guardrails found of the write being decided, for its entry.
    findings: Vec<Finding>,
    /// In a dry run, what the write being decided would meet live.
    live_gate: Option<crate::gate::LiveGate>,
    pub approver: Arc<dyn Approver>,
    pub backends: Arc<Backends>,
    pub journal: Journal,
    pub limits: Limits,
    calls: u64,
    started: Instant,
    /// Time spent waiting on a human; it does not count against the deadline.
    human_wait: Duration,
    /// Set while `describe()` runs: no import may be called then.
    pub describing: bool,
    /// What the run's time readings have shown (WASI's monotonic clock).
    pub clock: clock::RunClock,
    /// On resume: the stored journal, answered in order instead of calling
    /// any backend or gate (see [`CallCtx::replayed`]).
    replay: std::collections::VecDeque<StoredEntry>,
    /// Pause at every step boundary ([`CallCtx::pause_at_step`]).
    step_mode: bool,
    /// Raised when the host stops: the run parks at its next call.
    stop: StopToken,
    /// This run was resumed from a stored journal.
    resumed: bool,
    /// Reads re-checked before the write being made (for its entry).
    rechecked: Option<u64>,
    /// The write a resumed run was parked on.
    parked_on: Option<(u64, String)>,
    /// The next write is a keyed write in doubt, sent again.
    keyed_retry: bool,
    /// Replaying a recording: nothing is ever called live.
    replay_only: bool,
    /// Looking ahead of a parked live run (every write simulated): the
    /// playbook is told it is live, so it plans and words its writes as
    /// the live run will.
    predicting: bool,
    /// The span of the step the playbook is in (a child of the run's);
    /// each call's span is its child. None before the first step.
    step_span: tracing::Span,
}

impl CallCtx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        playbook: &str,
        run_id: &str,
        mode: Mode,
        scope: Scope,
        gates: Gates,
        approver: Arc<dyn Approver>,
        backends: Arc<Backends>,
        journal: Journal,
        limits: Limits,
    ) -> CallCtx {
        CallCtx {
            playbook: playbook.to_owned(),
            run_id: run_id.to_owned(),
            mode,
            scope,
            gates,
            guard: Arc::new(Guardrails::default()),
            alert: None,
            started_by: String::new(),
            writes: BTreeMap::new(),
            findings: Vec::new(),
            live_gate: None,
            approver,
            backends,
            journal,
            limits,
            calls: 0,
            started: Instant::now(),
            human_wait: Duration::ZERO,
            describing: false,
            clock: Default::default(),
            replay: Default::default(),
            step_mode: false,
            stop: StopToken::default(),
            resumed: false,
            rechecked: None,
            parked_on: None,
            keyed_retry: false,
            replay_only: false,
            predicting: false,
            step_span: tracing::Span::none(),
        }
    }

    /// Judges every write by `guard`, for a run answering `alert` that
    /// `started_by` started.
    pub fn with_guardrails(
        mut self,
        guard: Arc<Guardrails>,
        alert: Option<Alert>,
        started_by: &str,
    ) -> CallCtx {
        self.guard = guard;
        self.alert = alert;
        self.started_by = started_by.to_owned();
        self
    }

    /// Whether the next call is answered from a journal, so nothing may
    /// reach a backend for it (not even to measure it).
    pub fn answering_from_journal(&self) -> bool {
        self.replay_only || !self.replay.is_empty()
    }

    /// The playbook entered step `name`: later calls log under its span.
    /// Called from within the run's span, which becomes its parent.
    pub fn enter_step_span(&mut self, name: &str) {
        self.step_span = tracing::info_span!("step", step = %name);
    }

    /// The host's stop token (see [`StopToken`]).
    pub fn with_stop(mut self, stop: StopToken) -> CallCtx {
        self.stop = stop;
        self
    }

    /// Run time that counts against the deadline.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.human_wait)
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.limits.deadline.saturating_sub(self.elapsed())
    }

    /// The size of a call's arguments, if it is over the per-call limit.
    fn oversized(&self, call: &Call) -> Option<u64> {
        let size = json_size(&call.args) + call.reason.len() as u64 + call.target.len() as u64;
        (size > self.limits.argument_bytes).then_some(size)
    }

    /// Counts a call; breaking the limit ends the run.
    fn admit(&mut self, interface: &str, op: &str) -> Result<(), CapError> {
        if self.describing {
            return Err(CapError::Trap(wasmtime::format_err!(
                "describe() called {interface}.{op}; describe must not call any import"
            )));
        }
        if self.stop.raised() {
            return Err(Stopped::HostStopping {
                seq: self.journal.next_seq(),
            }
            .into());
        }
        self.calls += 1;
        if self.calls > self.limits.calls {
            return Err(LimitExceeded::Calls {
                limit: self.limits.calls,
            }
            .into());
        }
        Ok(())
    }

    /// The one path of every capability call (see the module doc).
    ///
    /// `perform` is called with [`Action::Perform`] when the gate lets the
    /// call through and with [`Action::Simulate`] for a write in a dry run;
    /// it is not called at all when the call is out of scope or refused.
    pub async fn call<T, F, Fut>(
        &mut self,
        call: Call,
        scope: Result<(), NotGranted>,
        perform: F,
    ) -> Result<T, CapError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Action, CallInfo) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        self.call_via(call, scope, async move |action, info| {
            perform(action, info).await.map(|value| (value, None))
        })
        .await
    }

    /// [`CallCtx::call`] for backends that can say which of several URLs
    /// answered: `perform` returns the value and that answer, journaled
    /// as the entry's `via`.
    pub async fn call_via<T, F, Fut>(
        &mut self,
        call: Call,
        scope: Result<(), NotGranted>,
        perform: F,
    ) -> Result<T, CapError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Action, CallInfo) -> Fut,
        Fut: Future<Output = Result<(T, Option<String>), BackendError>>,
    {
        // Everything logged while the call is made (gate, backend, journal)
        // is under run → step → call.
        let span = self.step_span.in_scope(|| {
            tracing::info_span!(
                "call",
                seq = self.journal.next_seq(),
                call = %format_args!("{}.{}", call.interface, call.op)
            )
        });
        tracing::Instrument::instrument(self.call_in_span(call, scope, perform), span).await
    }

    async fn call_in_span<T, F, Fut>(
        &mut self,
        call: Call,
        scope: Result<(), NotGranted>,
        perform: F,
    ) -> Result<T, CapError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(Action, CallInfo) -> Fut,
        Fut: Future<Output = Result<(T, Option<String>), BackendError>>,
    {
        if self.oversized(&call).is_some() {
            return self
                .reject(call, Ok(()), WitError::Invalid(String::new()))
                .await;
        }
        if call.effect == Effect::Write && call.reason.trim().is_empty() && scope.is_ok() {
            let why = format!(
                "{}.{} is a write and every write needs a reason; pass one",
                call.interface, call.op
            );
            return self.reject(call, scope, WitError::Invalid(why)).await;
        }
        self.admit(call.interface, call.op)?;
        if let Some(answer) = self.replayed(&call).await {
            return answer;
        }
        let started = Instant::now();
        let info = CallInfo {
            seq: self.journal.next_seq(),
            result_limit: self.limits.result_bytes,
        };
        let (decision, outcome) = match scope {
            Err(not_granted) => (
                Decision::NotGranted,
                Err(WitError::NotGranted(not_granted.to_string())),
            ),
            Ok(()) => {
                let (verdict, recheck) = self.pass_gate(&call).await;
                let keyed_retry = std::mem::take(&mut self.keyed_retry);
                if recheck && !keyed_retry {
                    self.rechecked = Some(self.recheck_plan(info.seq).await?);
                }
                match verdict {
                    Verdict::Perform(decision) => {
                        if call.effect == Effect::Write {
                            let intended =
                                self.entry(&call, info.seq, decision, Json::Null, None, started);
                            self.journal.intend(&intended).await.map_err(unrecorded)?;
                        }
                        let answer = match self.backend(perform(Action::Perform, info)).await {
                            Ok(answer) => answer,
                            Err(ended) => {
                                return Err(self
                                    .sent_write_ends_run(&call, info.seq, decision, started, ended)
                                    .await);
                            }
                        };
                        (decision, answer)
                    }
                    Verdict::Simulate => (
                        Decision::DryRun,
                        self.backend(perform(Action::Simulate, info)).await?,
                    ),
                    Verdict::Refuse(why) => (Decision::Denied, Err(WitError::Denied(why))),
                    Verdict::Park => {
                        // The write's dry run, for the approvers to see
                        // beside it: what it would change, now.
                        let simulated = perform(Action::Simulate, info).await;
                        self.keep_preview(info.seq, simulated).await;
                        return Err(Stopped::Parked {
                            seq: info.seq,
                            call: format!("{}.{} {}", call.interface, call.op, call.args),
                        }
                        .into());
                    }
                }
            }
        };
        let (outcome, via) = match outcome {
            Ok((value, via)) => (Ok(value), via),
            Err(e) => (Err(e), None),
        };
        tracing::debug!(gate = decision.as_str(), ok = outcome.is_ok(), "call made");
        self.record(call, info.seq, decision, started, outcome, via)
            .await
    }

    /// Hands what a parked write's dry run said to the approver, redacted
    /// and cut to a size a page can show.
    async fn keep_preview<T: Serialize>(
        &self,
        seq: u64,
        simulated: Result<(T, Option<String>), BackendError>,
    ) {
        let preview = match simulated {
            Ok((value, _)) => match serde_json::to_string(&value) {
                Ok(text) => json!({ "ok": cut_text(&self.backends.redact(&text), 4096) }),
                Err(_) => return,
            },
            Err(e) => json!({ "error": cut_text(&e.redacted(&self.backends).to_string(), 1024) }),
        };
        self.approver.preview(&self.run_id, seq, preview).await;
    }

    /// Journals a call refused before the gate: out of scope, or `error`
    /// (the call itself is wrong). No backend and no approver is involved.
    pub async fn reject<T: Serialize + DeserializeOwned>(
        &mut self,
        mut call: Call,
        mut scope: Result<(), NotGranted>,
        mut error: WitError,
    ) -> Result<T, CapError> {
        if let Some(size) = self.oversized(&call) {
            (call, error) = self.shrunk(call, size);
            scope = Ok(());
        }
        self.admit(call.interface, call.op)?;
        if let Some(answer) = self.replayed(&call).await {
            return answer;
        }
        let seq = self.journal.next_seq();
        let (decision, error) = match scope {
            Err(not_granted) => (
                Decision::NotGranted,
                WitError::NotGranted(not_granted.to_string()),
            ),
            Ok(()) => (Decision::Invalid, error),
        };
        self.record(call, seq, decision, Instant::now(), Err(error), None)
            .await
    }

    /// Refuses a call whose arguments (`size` bytes, measured before any
    /// copy of them was made) are over the per-call limit. `call` carries
    /// no arguments yet; the journal keeps the size, not the bytes.
    pub async fn reject_oversized<T: Serialize + DeserializeOwned>(
        &mut self,
        call: Call,
        size: u64,
    ) -> Result<T, CapError> {
        let (call, error) = self.shrunk(call, size);
        self.reject(call, Ok(()), error).await
    }

    /// Whether arguments of `size` bytes are over the per-call limit.
    pub fn over_limit(&self, size: u64) -> bool {
        size > self.limits.argument_bytes
    }

    /// `call` as the journal keeps an oversized call, and the error.
    fn shrunk(&self, mut call: Call, size: u64) -> (Call, WitError) {
        let error = WitError::Invalid(format!(
            "the arguments of {}.{} are {size} bytes, over the limit of {} bytes per call (`argument_bytes` under [limits]); pass less, e.g. values as parameters or a shorter text",
            call.interface, call.op, self.limits.argument_bytes
        ));
        call.args = serde_json::json!({ "oversized_bytes": size });
        call.target = cut_text(&call.target, 200);
        call.reason = cut_text(&call.reason, 200);
        call.finer.clear();
        (call, error)
    }

    /// The gate's verdict, and whether an approval must be re-checked
    /// against fresh reads before the write goes out.
    async fn pass_gate(&mut self, call: &Call) -> (Verdict, bool) {
        if call.effect == Effect::Read {
            // Reads are never gated; no request to build.
            return (Verdict::Perform(Decision::Auto), false);
        }
        let op = format!("{}.{}", call.interface, call.op);
        self.findings = self.judge(call, &op).await;
        let guarded = crate::guard::guarded(&self.findings);
        let (policy, requirement) = self
            .gates
            .effective(&op, &call.target, &call.finer, &guarded);
        self.live_gate =
            (self.mode == Mode::DryRun).then(|| crate::gate::LiveGate::of(policy, &requirement));
        // The plan is shown to and bound into approvals only.
        let asks = self.mode == Mode::Live && policy == crate::gate::Policy::Approve;
        let entries = self.journal.entries();
        let (plan, plan_digest) = if asks {
            let mut plan = crate::report::so_far(entries);
            // What the guardrails measured is part of what is approved.
            for finding in &self.findings {
                plan.push_str(&format!("\n{finding}"));
            }
            // What they measured binds the approval too: a write that
            // trips other guardrails (or none) when it resumes asks again.
            let digest = crate::journal::plan_digest(entries);
            (
                plan,
                crate::guard::bound_digest(&digest, &self.findings, call.rows.as_ref()),
            )
        } else {
            Default::default()
        };
        let request = WriteRequest {
            run_id: self.run_id.clone(),
            seq: self.journal.next_seq(),
            playbook: self.playbook.clone(),
            requirement,
            op,
            target: call.target.clone(),
            finer: call.finer.clone(),
            detail: call.args.to_string(),
            reason: call.reason.clone(),
            plan,
            plan_digest,
            findings: self.findings.clone(),
        };
        // A live decision may read the run's journal from the store (a
        // whole-plan approval counts what the run has written and been
        // refused): every entry so far is stored first. A failure to store
        // shows again, and stops the write, when it is intended.
        if self.mode == Mode::Live
            && let Err(e) = self.journal.flush().await
        {
            tracing::warn!(run = %self.run_id, "cannot store the journal before a gate decision: {e}");
        }
        let asked = Instant::now();
        let verdict = self
            .gates
            .decide(self.mode, call.effect, &request, &guarded, &*self.approver)
            .await;
        if self.mode == Mode::Live {
            self.human_wait += asked.elapsed();
        }
        // An approval decided while the run was parked is checked against
        // the world as it is now (a resumed run); one given on the spot is not.
        let recheck = verdict == Verdict::Perform(Decision::Approved)
            && self.resumed
            && request.requirement.recheck != crate::gate::Recheck::Off;
        (verdict, recheck)
    }

    /// What the guardrails find of write `call` (`op`), given what the run
    /// has written so far and, through the state store, earlier runs.
    async fn judge(&self, call: &Call, op: &str) -> Vec<Finding> {
        if self.guard.is_empty() {
            return Vec::new();
        }
        let earlier = self.writes.get(op).map(Vec::as_slice).unwrap_or_default();
        let mut targets: BTreeSet<&str> = earlier.iter().map(String::as_str).collect();
        targets.insert(&call.target);
        let facts = WriteFacts {
            playbook: &self.playbook,
            run_id: &self.run_id,
            mode: self.mode,
            started_by: &self.started_by,
            alert: self.alert.as_ref(),
            op,
            target: &call.target,
            finer: &call.finer,
            args: &call.args,
            rows: call.rows.clone(),
            writes_before: earlier.len() as u32,
            writes_to_target_before: earlier.iter().filter(|t| **t == call.target).count() as u32,
            targets: targets.len() as u32,
            run_writes: self.writes.values().map(Vec::len).sum::<usize>() as u32,
            now: chrono::Utc::now(),
        };
        let history = self.journal.store().map(|s| &**s as &dyn RunHistory);
        self.guard.judge(&facts, history).await
    }

    /// Counts a write the run made (or simulated) for the guardrails that
    /// limit writes and targets per run; refused writes change nothing.
    fn count_write(&mut self, call: &Call, decision: Decision) {
        if matches!(
            decision,
            Decision::Auto | Decision::Approved | Decision::DryRun
        ) {
            self.writes
                .entry(format!("{}.{}", call.interface, call.op))
                .or_default()
                .push(call.target.clone());
        }
    }

    /// Caps the result, journals the call, and hands the outcome back.
    async fn record<T: Serialize>(
        &mut self,
        call: Call,
        seq: u64,
        decision: Decision,
        started: Instant,
        outcome: Result<T, WitError>,
        via: Option<String>,
    ) -> Result<T, CapError> {
        let result = match &outcome {
            Ok(value) => {
                let value = serde_json::to_value(value)
                    .map_err(|e| CapError::Trap(wasmtime::format_err!("journal: {e}")))?;
                let bytes = json_size(&value);
                if bytes > self.limits.result_bytes {
                    let ended = LimitExceeded::ResultBytes {
                        limit: self.limits.result_bytes,
                        call: format!("{}.{}", call.interface, call.op),
                    }
                    .into();
                    return Err(self
                        .sent_write_ends_run(&call, seq, decision, started, ended)
                        .await);
                }
                json!({ "ok": value })
            }
            Err(e) => json!({ "err": e }),
        };
        let entry = self.entry(&call, seq, decision, result, via, started);
        if entry.is_write() {
            self.rechecked = None;
            self.findings.clear();
            self.live_gate = None;
            self.count_write(&call, decision);
        }
        self.store_outcome(entry).await?;
        outcome.map_err(CapError::Wit)
    }

    /// Journals a finished call. If its outcome cannot be stored, the run
    /// ends: in doubt when the call was a sent write (it stays intended,
    /// listed for an operator to resolve, never merely crashed), else as
    /// unrecorded.
    async fn store_outcome(&mut self, entry: Entry) -> Result<(), CapError> {
        let seq = entry.seq;
        let sent = (self.journal.intended() == Some(seq))
            .then(|| format!("{}.{} {}", entry.interface, entry.op, entry.args));
        match (self.journal.record(entry).await, sent) {
            (Ok(()), _) => Ok(()),
            (Err(e), Some(call)) => {
                tracing::error!(run = %self.run_id, seq, "the outcome of a sent write could not be stored: {e}");
                Err(Stopped::InDoubt { seq, call }.into())
            }
            (Err(e), None) => Err(unrecorded(e)),
        }
    }

    /// A write that was sent, whose answer ends the run before its outcome
    /// is journaled (the answer broke a limit): it is recorded done, with
    /// the refusal as its result, and audited, so it is neither forgotten
    /// nor sent again; then the run ends as `ended` says. Anything that is
    /// not a sent write ends the run as it is.
    async fn sent_write_ends_run(
        &mut self,
        call: &Call,
        seq: u64,
        decision: Decision,
        started: Instant,
        ended: CapError,
    ) -> CapError {
        if self.journal.intended() != Some(seq) {
            return ended;
        }
        let why = match &ended {
            CapError::Trap(e) => e.to_string(),
            CapError::Wit(e) => e.to_string(),
        };
        let refused = WitError::Backend(format!(
            "the write was made, and its answer could not be kept: {why}"
        ));
        let entry = self.entry(
            call,
            seq,
            decision,
            json!({ "err": refused }),
            None,
            started,
        );
        self.count_write(call, decision);
        match self.store_outcome(entry).await {
            Ok(()) => ended,
            Err(in_doubt) => in_doubt,
        }
    }

    /// The journal entry of a call.
    fn entry(
        &self,
        call: &Call,
        seq: u64,
        decision: Decision,
        result: Json,
        via: Option<String>,
        started: Instant,
    ) -> Entry {
        Entry {
            seq,
            step: self.journal.current_step().map(str::to_owned),
            interface: call.interface.to_owned(),
            op: call.op.to_owned(),
            args: call.args.clone(),
            effect: call.effect,
            gate: decision,
            result,
            via,
            idempotency_key: call.keyed.then(|| idempotency_key(&self.run_id, seq)),
            rechecked: if call.effect == Effect::Write {
                self.rechecked
            } else {
                None
            },
            target: (call.effect == Effect::Write).then(|| call.target.clone()),
            finer: if call.effect == Effect::Write {
                call.finer.clone()
            } else {
                Vec::new()
            },
            guard: if call.effect == Effect::Write {
                self.findings.clone()
            } else {
                Vec::new()
            },
            live: self
                .live_gate
                .clone()
                .filter(|_| decision == Decision::DryRun),
            duration_us: started.elapsed().as_micros() as u64,
        }
    }

    /// Awaits a backend; a result over the size limit ends the run, every
    /// other failure goes back to the playbook as its WIT error, with any
    /// secret the driver quoted masked.
    async fn backend<T>(
        &self,
        fut: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<Result<T, WitError>, CapError> {
        match fut.await {
            Ok(v) => Ok(Ok(v)),
            Err(BackendError::TooLarge { what }) => Err(LimitExceeded::ResultBytes {
                limit: self.limits.result_bytes,
                call: what,
            }
            .into()),
            Err(e) => Ok(Err(e.redacted(&self.backends).into_wit())),
        }
    }
}

/// The length of `value` as JSON text, without building the text.
/// `text` cut to at most `max` bytes, at a character boundary, marked
/// when cut.
pub fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} [cut]", &text[..cut])
}

pub fn json_size(value: &impl Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// A call the state store could not record ends the run: no call, and
/// above all no write, may happen without its journal entry.
fn unrecorded(e: crate::state::StateError) -> CapError {
    CapError::Trap(wasmtime::format_err!(
        "the run was stopped because the state store could not record a call: {e}"
    ))
}

/// Checks that `value` is what write `interface.op` returns to a playbook,
/// so a result an operator supplies for a write in doubt (`mark-done`)
/// replays as that call's answer. With no value, the write's neutral
/// answer where it has one (`null` for a flag's unknown previous value).
pub fn resolved_result(interface: &str, op: &str, value: Option<Json>) -> Result<Json, String> {
    use crate::bindings::stepgate::playbook::rpc::HttpResponse;
    fn fits<T: DeserializeOwned>(value: &Json) -> Result<(), String> {
        serde_json::from_value::<T>(value.clone())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    let neutral = match (interface, op) {
        ("flags", "set") | ("pager", "notify") => Some(Json::Null),
        ("runbook", "confirm") => Some(Json::Bool(true)),
        _ => None,
    };
    let value = value.or(neutral).ok_or_else(|| {
        format!("{interface}.{op} has no neutral result: pass --result JSON, the value the playbook gets (e.g. 1 for a db.execute that changed one row)")
    })?;
    match (interface, op) {
        ("db", "execute") => fits::<u64>(&value),
        ("rpc", "call") | ("pager", "page") => fits::<String>(&value),
        ("rpc", "http") => fits::<HttpResponse>(&value),
        ("flags", "set") => fits::<Option<String>>(&value),
        ("pager", "notify") => fits::<()>(&value),
        ("runbook", "confirm") => fits::<bool>(&value),
        _ => Err(format!("{interface}.{op} is not a write")),
    }
    .map_err(|why| format!("--result {value} is not what {interface}.{op} returns: {why}"))?;
    Ok(value)
}

/// What a backend may need to know about the call it serves.
#[derive(Debug, Clone, Copy)]
pub struct CallInfo {
    /// The journal sequence number (idempotency keys: run id + seq).
    pub seq: u64,
    /// Bytes the result may take.
    pub result_limit: u64,
}
