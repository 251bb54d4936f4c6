//! Gates: whether a write happens.
//!
//! Reads are never gated. A write is simulated in a dry run (the default);
//! in a live run it passes the playbook's policy for that operation:
//! `auto`, `approve` (a human says yes) or `deny`. This module decides; it
//! performs nothing and journals nothing. Asking a human is behind the
//! [`Approver`] trait so the terminal prompt and the durable approval
//! records (`crate::approvals`, which can leave a request pending and park
//! the run) share the same decision point.
//!
//! Guardrails (`crate::guard`) judge a write in its context before the
//! gate decides it; their verdict comes in as [`Guarded`] and can only
//! make the write stricter: the gate rule and the guardrails are decided
//! here, once, and the strictest wins.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod rule;

pub use rule::{Effect, Escalation, GateRule, GateRuleOrPolicy, OnTimeout};

/// Dry run (nothing written, the default) or live: the one word for it,
/// in the config, the state store, the journal's audit records and every
/// output (`dry-run`, `live`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    DryRun,
    Live,
}

impl Mode {
    /// `dry-run` or `live`, as it is stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Live => "live",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Mode, String> {
        match text {
            "dry-run" => Ok(Mode::DryRun),
            "live" => Ok(Mode::Live),
            other => Err(format!("unknown mode `{other}`; use dry-run or live")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::DryRun => "dry run",
            Mode::Live => "live",
        })
    }
}

/// The operator's policy for one write operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Performed without asking.
    Auto,
    /// Performed only when an approver says yes.
    Approve,
    /// Never performed.
    Deny,
}

/// How an approval given while its run was parked is checked when the run
/// resumes, before the write goes out (`recheck` in a gate rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Recheck {
    /// Not checked: the write goes out as approved.
    Off,
    /// The reads the plan rests on are made again; if one answers
    /// differently, the run re-plans on fresh data, and the approval
    /// stands if the fresh run reaches the same write, with the same
    /// arguments, through the same calls (what the approver approved). A
    /// query whose answer moves with the clock keeps its approval; one
    /// whose answer changes what the playbook does voids it.
    #[default]
    Decisions,
    /// Any read answering differently voids the approval.
    Reads,
}

impl<'de> Deserialize<'de> for Recheck {
    /// `"decisions"`, `"reads"`, or `false`/`"off"`; `true` (the spelling
    /// before there was a choice) is the default, `decisions`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Recheck, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelled {
            Flag(bool),
            Word(String),
        }
        match Spelled::deserialize(d)? {
            Spelled::Flag(true) => Ok(Recheck::Decisions),
            Spelled::Flag(false) => Ok(Recheck::Off),
            Spelled::Word(word) => match word.as_str() {
                "decisions" => Ok(Recheck::Decisions),
                "reads" => Ok(Recheck::Reads),
                "off" => Ok(Recheck::Off),
                other => Err(serde::de::Error::custom(format!(
                    "recheck is \"decisions\" (the default), \"reads\" or false, not `{other}`"
                ))),
            },
        }
    }
}

/// The write operations a gate key can name.
pub const WRITE_OPS: &[&str] = &[
    "db.execute",
    "rpc.call",
    "rpc.http",
    "flags.set",
    "pager.page",
    "pager.notify",
    "runbook.confirm",
];

/// `interface.op` or `interface.op:target`: what a gate policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GateKey {
    pub op: String,
    pub target: Option<String>,
}

impl FromStr for GateKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (op, target) = match text.split_once(':') {
            Some((op, target)) => (op, Some(target.to_owned())),
            None => (text, None),
        };
        if !WRITE_OPS.contains(&op) {
            return Err(format!(
                "`{op}` is not a write operation; gate keys are `default` or one of {} (optionally `:TARGET`)",
                WRITE_OPS.join(", ")
            ));
        }
        Ok(GateKey {
            op: op.to_owned(),
            target,
        })
    }
}

/// The decision recorded for each call in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// A write in a dry run: simulated, not performed.
    DryRun,
    /// Performed without asking (every granted read; writes whose policy is auto).
    Auto,
    /// A human approved it.
    Approved,
    /// Policy or a human refused it.
    Denied,
    /// Outside the playbook's grants.
    NotGranted,
    /// Refused before the gate: the call itself is wrong (bad SQL, a write
    /// without a reason).
    Invalid,
}

impl Decision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::DryRun => "dry-run",
            Decision::Auto => "auto",
            Decision::Approved => "approved",
            Decision::Denied => "denied",
            Decision::NotGranted => "not-granted",
            Decision::Invalid => "invalid",
        }
    }
}

/// What the caller must do with a call that passed its scope check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Call the backend for real.
    Perform(Decision),
    /// Simulate the write (dry run).
    Simulate,
    /// Refuse, with the reason the playbook is given.
    Refuse(String),
    /// The approval is requested and not decided yet: park the run.
    Park,
}

/// A write waiting for a human, as the approver sees it.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub run_id: String,
    /// The call's position in the run's journal.
    pub seq: u64,
    pub playbook: String,
    pub op: String,
    pub target: String,
    /// Finer targets within `target` that gate keys may name as
    /// `op:target/finer`: the tables a `db.execute` changes, the method of
    /// an `rpc.call`.
    pub finer: Vec<String>,
    /// The exact write, human-readable.
    pub detail: String,
    pub reason: String,
    /// Who must approve, and what happens if nobody does in time.
    pub requirement: Requirement,
    /// What the run read and decided before asking, one line a call: the
    /// plan the approver approves.
    pub plan: String,
    /// SHA-256 of the journal before the write, and of the guardrails it
    /// tripped: the approval is bound to it.
    pub plan_digest: String,
    /// The guardrails the write tripped: a write they escalated is decided
    /// by its own approvers, never by a whole-plan approval or the
    /// terminal of the run's own starter.
    pub findings: Vec<Finding>,
}

/// What an approval needs, resolved from the write's gate rule and the
/// playbook's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requirement {
    /// Distinct approvers needed.
    pub quorum: u32,
    /// Principals of one of these groups may decide; empty: any approver.
    pub groups: Vec<String>,
    /// How long the request may wait for its decision.
    #[serde(with = "opt_millis")]
    pub timeout: Option<std::time::Duration>,
    /// What an undecided request means past its timeout.
    pub on_timeout: OnTimeout,
    /// Who is paged while it waits.
    pub escalate: Vec<Escalation>,
    /// How the plan is checked before the approved write goes out.
    pub recheck: Recheck,
    /// A guardrail escalated the write: it is decided by its own
    /// approvers, never by a whole-plan approval or the run's own starter.
    pub guarded: bool,
}

impl Requirement {
    /// The groups that may decide a request that has been escalated
    /// `escalated` steps: the rule's, and those of each step paged so far
    /// (all of them for `i64::MAX`). Empty: any approver.
    pub fn eligible_groups(&self, escalated: i64) -> Vec<String> {
        if self.groups.is_empty() {
            // Any approver may decide; escalation pages more people, it
            // never narrows who may.
            return Vec::new();
        }
        let paged = self.escalate.iter().take(escalated.max(0) as usize);
        let mut groups: Vec<String> = self.groups.clone();
        for step in paged {
            groups.extend(step.groups.iter().cloned());
        }
        groups.sort();
        groups.dedup();
        groups
    }
}

impl Default for Requirement {
    /// One approver, any group, no timeout, no escalation.
    fn default() -> Self {
        Requirement {
            quorum: 1,
            groups: Vec::new(),
            timeout: None,
            on_timeout: OnTimeout::Deny,
            escalate: Vec::new(),
            recheck: Recheck::Decisions,
            guarded: false,
        }
    }
}

/// What a write a dry run simulated would meet in a live run: its gate's
/// policy (after guardrails) and, for an approval, what it takes. Shown
/// beside each planned write, so a dry run says what live would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveGate {
    pub policy: Policy,
    /// Distinct approvers needed, for `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// Principals of one of these groups may decide; empty: any approver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_millis",
        rename = "timeout_ms"
    )]
    pub timeout: Option<std::time::Duration>,
    /// What the request means once it times out undecided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
}

impl LiveGate {
    pub fn of(policy: Policy, requirement: &Requirement) -> LiveGate {
        let approve = policy == Policy::Approve;
        LiveGate {
            policy,
            quorum: approve.then_some(requirement.quorum.max(1)),
            groups: if approve {
                requirement.groups.clone()
            } else {
                Vec::new()
            },
            timeout: requirement.timeout.filter(|_| approve),
            on_timeout: (approve && requirement.timeout.is_some())
                .then_some(requirement.on_timeout),
        }
    }
}

impl std::fmt::Display for LiveGate {
    /// `auto`, `deny`, or `approve (quorum 2, group fiatrails-admin,
    /// timeout 30m)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self.policy {
            Policy::Auto => "auto",
            Policy::Approve => "approve",
            Policy::Deny => "deny",
        };
        let mut terms = Vec::new();
        if let Some(quorum) = self.quorum {
            terms.push(format!("quorum {quorum}"));
        }
        match self.groups.as_slice() {
            [] => {}
            [one] => terms.push(format!("group {one}")),
            many => terms.push(format!("groups {}", many.join(" or "))),
        }
        if let Some(timeout) = self.timeout {
            let then = match self.on_timeout {
                Some(OnTimeout::Approve) => ", then approved",
                _ => "",
            };
            terms.push(format!(
                "timeout {}{then}",
                humantime::format_duration(timeout)
            ));
        }
        if terms.is_empty() {
            f.write_str(word)
        } else {
            write!(f, "{word} ({})", terms.join(", "))
        }
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// What an approver says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Approved,
    Refused(String),
    /// Asked, not decided yet: the run parks until it is.
    Pending,
}

/// The human side of `approve`.
#[async_trait::async_trait]
pub trait Approver: Send + Sync {
    /// `Ok(())` if approved, `Err(why)` if refused, for approvers that
    /// answer on the spot (a terminal prompt).
    async fn decide(&self, request: &WriteRequest) -> Result<(), String>;

    /// The answer, which a durable approver may leave pending.
    async fn answer(&self, request: &WriteRequest) -> Answer {
        match self.decide(request).await {
            Ok(()) => Answer::Approved,
            Err(why) => Answer::Refused(why),
        }
    }

    /// What the dry run of write `seq` says now (a flag's current value,
    /// the rows a statement would change), kept for whoever decides its
    /// pending request. Only a durable approver keeps it.
    async fn preview(&self, _run_id: &str, _seq: u64, _preview: serde_json::Value) {}
}

/// Refuses everything: no human is attached (stdin is not a terminal).
pub struct NoApprover;

#[async_trait::async_trait]
impl Approver for NoApprover {
    async fn decide(&self, _request: &WriteRequest) -> Result<(), String> {
        Err("this write needs approval and no approver is attached (stdin is not a terminal); run interactively, or change its gate policy".to_owned())
    }
}

/// What a guardrail does to a write over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Over {
    /// The write needs approval (by at least the rule's quorum).
    Approve,
    /// The write is refused.
    Deny,
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Approve => "approve",
            Over::Deny => "deny",
        }
    }
}

/// One guardrail that a write trips: journaled with the write, audited,
/// shown to approvers and in a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The rule's name (`[guardrails.NAME]`, or a policy's `@id`).
    pub rule: String,
    pub over: Over,
    /// Distinct approvers the write needs at least, for `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// What was measured against what limit, in words.
    pub why: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.over, self.quorum) {
            (Over::Deny, _) => write!(f, "guardrail `{}` denies: {}", self.rule, self.why),
            (Over::Approve, Some(q)) if q > 1 => write!(
                f,
                "guardrail `{}` needs {q} approvers: {}",
                self.rule, self.why
            ),
            (Over::Approve, _) => {
                write!(f, "guardrail `{}` needs approval: {}", self.rule, self.why)
            }
        }
    }
}

/// What guardrails require of one write beyond its gate rule, in the
/// gate's words (`crate::guard` judges; the gate decides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guarded {
    /// Refused, and why (the rule's name and what it measured).
    pub deny: Option<String>,
    /// Needs approval, by at least this many distinct approvers.
    pub approve: Option<u32>,
}

impl Guarded {
    /// Whether no guardrail applies.
    pub fn is_clear(&self) -> bool {
        self.deny.is_none() && self.approve.is_none()
    }
}

/// The gate rules of one playbook.
#[derive(Debug, Clone)]
pub struct Gates {
    default: GateRule,
    by_key: BTreeMap<GateKey, GateRule>,
    /// The playbook's quorum, for rules that do not set one.
    quorum: u32,
    /// The playbook's approval timeout, for rules that do not set one.
    timeout: Option<std::time::Duration>,
}

impl Default for Gates {
    /// Unconfigured writes need approval, by one approver.
    fn default() -> Self {
        Gates {
            default: GateRule::bare(Policy::Approve),
            by_key: BTreeMap::new(),
            quorum: 1,
            timeout: None,
        }
    }
}

impl Gates {
    /// Builds from the config table; keys were validated at config load.
    pub fn from_config(table: &BTreeMap<String, GateRule>) -> Result<Gates, String> {
        let mut gates = Gates::default();
        for (key, rule) in table {
            if key == "default" {
                gates.default = rule.clone();
            } else {
                gates.by_key.insert(key.parse()?, rule.clone());
            }
        }
        Ok(gates)
    }

    /// Approvals need `quorum` distinct approvers unless their rule says.
    pub fn with_quorum(mut self, quorum: u32) -> Gates {
        self.quorum = quorum.max(1);
        self
    }

    /// Approvals are undecided after `timeout` unless their rule says.
    pub fn with_timeout(mut self, timeout: Option<std::time::Duration>) -> Gates {
        self.timeout = timeout;
        self
    }

    /// The rule for `op` on `target`: the most specific key wins:
    /// `op:target/finer`, then `op:target`, then `op`, then `default`. A
    /// write with several finer targets (a statement that changes two
    /// tables) takes the strictest of their rules, each table without a
    /// rule of its own counting with the rule above it: an `auto` for one
    /// table never lets a write to another past its `approve`. Between two
    /// approvals, the larger quorum wins.
    fn rule(&self, op: &str, target: &str, finer: &[String]) -> &GateRule {
        let key = |target: Option<String>| GateKey {
            op: op.to_owned(),
            target,
        };
        let coarse = self
            .by_key
            .get(&key(Some(target.to_owned())))
            .or_else(|| self.by_key.get(&key(None)))
            .unwrap_or(&self.default);
        let strictness = |rule: &&GateRule| {
            let policy = match rule.policy {
                Policy::Auto => 0,
                Policy::Approve => 1,
                Policy::Deny => 2,
            };
            (policy, rule.quorum.unwrap_or(self.quorum))
        };
        finer
            .iter()
            .map(|f| {
                self.by_key
                    .get(&key(Some(format!("{target}/{f}"))))
                    .unwrap_or(coarse)
            })
            .max_by_key(strictness)
            .unwrap_or(coarse)
    }

    /// The finer targets (tables, methods) gate keys name under `op` on
    /// `target`: `db.execute:ledger/holds` gives `holds` for `ledger`.
    pub fn finer_keys(&self, op: &str, target: &str) -> Vec<String> {
        let prefix = format!("{target}/");
        self.by_key
            .keys()
            .filter(|key| key.op == op)
            .filter_map(|key| key.target.as_deref()?.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect()
    }

    /// The policy for `op` on `target` (and its finer targets).
    pub fn policy(&self, op: &str, target: &str, finer: &[String]) -> Policy {
        self.rule(op, target, finer).policy
    }

    /// The policy and approval requirement of a write once what the
    /// guardrails require is counted: the strictest of the two wins.
    pub fn effective(
        &self,
        op: &str,
        target: &str,
        finer: &[String],
        guarded: &Guarded,
    ) -> (Policy, Requirement) {
        let mut policy = self.policy(op, target, finer);
        let mut requirement = self.requirement(op, target, finer);
        if guarded.deny.is_some() {
            policy = Policy::Deny;
        } else if let Some(quorum) = guarded.approve {
            if policy == Policy::Auto {
                policy = Policy::Approve;
            }
            requirement.quorum = requirement.quorum.max(quorum);
            // Silence is no consent to what a guardrail escalated.
            requirement.on_timeout = OnTimeout::Deny;
            requirement.guarded = true;
        }
        (policy, requirement)
    }

    /// What approving `op` on `target` (and its finer targets) needs.
    pub fn requirement(&self, op: &str, target: &str, finer: &[String]) -> Requirement {
        let rule = self.rule(op, target, finer);
        Requirement {
            quorum: rule.quorum.unwrap_or(self.quorum).max(1),
            groups: rule.groups.clone(),
            timeout: rule.timeout.or(self.timeout),
            on_timeout: rule.on_timeout,
            escalate: rule.escalate.clone(),
            recheck: rule.recheck,
            guarded: false,
        }
    }

    /// Decides a call that passed its scope check, with what the
    /// guardrails require of it. `request.requirement` is the effective
    /// one ([`Gates::effective`]).
    pub async fn decide(
        &self,
        mode: Mode,
        effect: Effect,
        request: &WriteRequest,
        guarded: &Guarded,
        approver: &dyn Approver,
    ) -> Verdict {
        if effect == Effect::Read {
            return Verdict::Perform(Decision::Auto);
        }
        if mode == Mode::DryRun {
            return Verdict::Simulate;
        }
        let (policy, _) = self.effective(&request.op, &request.target, &request.finer, guarded);
        match policy {
            Policy::Auto => Verdict::Perform(Decision::Auto),
            Policy::Deny => Verdict::Refuse(match &guarded.deny {
                Some(why) => why.clone(),
                None => format!(
                    "gate policy for {} on `{}` is deny",
                    request.op, request.target
                ),
            }),
            Policy::Approve => match approver.answer(request).await {
                Answer::Approved => Verdict::Perform(Decision::Approved),
                Answer::Refused(why) => Verdict::Refuse(why),
                Answer::Pending => Verdict::Park,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Yes;
    #[async_trait::async_trait]
    impl Approver for Yes {
        async fn decide(&self, _: &WriteRequest) -> Result<(), String> {
            Ok(())
        }
    }

    fn request(op: &str, target: &str) -> WriteRequest {
        WriteRequest {
            run_id: "r".into(),
            seq: 1,
            playbook: "p".into(),
            op: op.into(),
            target: target.into(),
            finer: Vec::new(),
            detail: String::new(),
            reason: "because".into(),
            requirement: Requirement::default(),
            plan: String::new(),
            plan_digest: String::new(),
            findings: Vec::new(),
        }
    }

    fn gates(pairs: &[(&str, Policy)]) -> Gates {
        let table = pairs
            .iter()
            .map(|(k, p)| (k.to_string(), GateRule::bare(*p)))
            .collect::<BTreeMap<_, _>>();
        Gates::from_config(&table).unwrap()
    }

    #[tokio::test]
    async fn reads_are_never_gated() {
        let g = gates(&[("default", Policy::Deny)]);
        for mode in [Mode::DryRun, Mode::Live] {
            let v = g
                .decide(
                    mode,
                    Effect::Read,
                    &request("db.query", "x"),
                    &Guarded::default(),
                    &NoApprover,
                )
                .await;
            assert_eq!(v, Verdict::Perform(Decision::Auto));
        }
    }

    #[tokio::test]
    async fn dry_run_simulates_every_write_whatever_the_policy() {
        for policy in [Policy::Auto, Policy::Approve, Policy::Deny] {
            let g = gates(&[("default", policy)]);
            let v = g
                .decide(
                    Mode::DryRun,
                    Effect::Write,
                    &request("flags.set", "F"),
                    &Guarded::default(),
                    &Yes,
                )
                .await;
            assert_eq!(v, Verdict::Simulate, "{policy:?}");
        }
    }

    #[tokio::test]
    async fn live_follows_policy_most_specific_first() {
        let g = gates(&[
            ("default", Policy::Deny),
            ("flags.set", Policy::Auto),
            ("flags.set:KILL", Policy::Approve),
        ]);
        let auto = g
            .decide(
                Mode::Live,
                Effect::Write,
                &request("flags.set", "OTHER"),
                &Guarded::default(),
                &NoApprover,
            )
            .await;
        assert_eq!(auto, Verdict::Perform(Decision::Auto));
        let asked = g
            .decide(
                Mode::Live,
                Effect::Write,
                &request("flags.set", "KILL"),
                &Guarded::default(),
                &Yes,
            )
            .await;
        assert_eq!(asked, Verdict::Perform(Decision::Approved));
        let nobody = g
            .decide(
                Mode::Live,
                Effect::Write,
                &request("flags.set", "KILL"),
                &Guarded::default(),
                &NoApprover,
            )
            .await;
        assert!(matches!(nobody, Verdict::Refuse(why) if why.contains("not a terminal")));
        let denied = g
            .decide(
                Mode::Live,
                Effect::Write,
                &request("pager.page", "ceo"),
                &Guarded::default(),
                &Yes,
            )
            .await;
        assert!(matches!(denied, Verdict::Refuse(why) if why.contains("deny")));
    }

    #[test]
    fn a_rule_sets_its_own_requirement_and_falls_back_to_the_playbook() {
        let mut strict = GateRule::bare(Policy::Approve);
        strict.quorum = Some(2);
        strict.groups = vec!["payments".into()];
        strict.on_timeout = OnTimeout::Approve;
        let table = BTreeMap::from([
            ("default".to_owned(), GateRule::bare(Policy::Approve)),
            ("flags.set:KILL".to_owned(), strict),
        ]);
        let timeout = Some(std::time::Duration::from_secs(60));
        let g = Gates::from_config(&table)
            .unwrap()
            .with_quorum(3)
            .with_timeout(timeout);
        let kill = g.requirement("flags.set", "KILL", &[]);
        assert_eq!(
            (kill.quorum, kill.groups.as_slice()),
            (2, &["payments".to_owned()][..])
        );
        assert_eq!(
            (kill.timeout, kill.on_timeout),
            (timeout, OnTimeout::Approve)
        );
        let other = g.requirement("flags.set", "OTHER", &[]);
        assert_eq!((other.quorum, other.on_timeout), (3, OnTimeout::Deny));
        assert!(other.groups.is_empty());
    }

    #[test]
    fn a_table_or_a_method_can_have_its_own_rule_and_the_strictest_wins() {
        let g = gates(&[
            ("db.execute:plaza", Policy::Auto),
            ("db.execute:plaza/ledger_entries", Policy::Deny),
            ("db.execute:plaza/escrow_holds", Policy::Approve),
            ("rpc.call:base/eth_sendRawTransaction", Policy::Approve),
            ("rpc.call", Policy::Auto),
        ]);
        let tables = |t: &[&str]| t.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        assert_eq!(
            g.policy("db.execute", "plaza", &tables(&["orders"])),
            Policy::Auto
        );
        assert_eq!(
            g.policy("db.execute", "plaza", &tables(&["escrow_holds"])),
            Policy::Approve
        );
        assert_eq!(
            g.policy(
                "db.execute",
                "plaza",
                &tables(&["escrow_holds", "ledger_entries"])
            ),
            Policy::Deny
        );
        assert_eq!(
            g.policy("rpc.call", "base", &tables(&["eth_sendRawTransaction"])),
            Policy::Approve
        );
        assert_eq!(
            g.policy("rpc.call", "base", &tables(&["eth_sendTransaction"])),
            Policy::Auto
        );
        // A table with a laxer rule does not carry a write to another.
        let g = gates(&[
            ("db.execute:plaza", Policy::Approve),
            ("db.execute:plaza/audit_log", Policy::Auto),
        ]);
        assert_eq!(
            g.policy("db.execute", "plaza", &tables(&["audit_log"])),
            Policy::Auto
        );
        assert_eq!(
            g.policy(
                "db.execute",
                "plaza",
                &tables(&["ledger_entries", "audit_log"])
            ),
            Policy::Approve
        );
    }

    /// Remembers the quorum it was asked for, and approves.
    struct Quorum(std::sync::Mutex<Vec<u32>>);
    #[async_trait::async_trait]
    impl Approver for Quorum {
        async fn decide(&self, request: &WriteRequest) -> Result<(), String> {
            self.0.lock().unwrap().push(request.requirement.quorum);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_guardrail_only_makes_a_write_stricter() {
        let mut strict = GateRule::bare(Policy::Approve);
        strict.quorum = Some(3);
        let table = BTreeMap::from([
            ("default".to_owned(), GateRule::bare(Policy::Auto)),
            ("flags.set:KILL".to_owned(), strict),
            ("pager.page".to_owned(), GateRule::bare(Policy::Deny)),
        ]);
        let g = Gates::from_config(&table).unwrap();
        let approve = |quorum| Guarded {
            deny: None,
            approve: Some(quorum),
        };
        // auto + a guardrail asking two approvers: approval by two.
        assert_eq!(
            g.effective("flags.set", "OTHER", &[], &approve(2)),
            (
                Policy::Approve,
                Requirement {
                    quorum: 2,
                    guarded: true,
                    ..g.requirement("flags.set", "OTHER", &[])
                }
            )
        );
        // Silence is no consent to what a guardrail escalated.
        let mut lenient = GateRule::bare(Policy::Approve);
        lenient.on_timeout = OnTimeout::Approve;
        let g2 = Gates::from_config(&BTreeMap::from([("default".to_owned(), lenient)])).unwrap();
        assert_eq!(
            g2.requirement("flags.set", "X", &[]).on_timeout,
            OnTimeout::Approve
        );
        assert_eq!(
            g2.effective("flags.set", "X", &[], &approve(1))
                .1
                .on_timeout,
            OnTimeout::Deny
        );
        // A rule's larger quorum stays.
        assert_eq!(
            g.effective("flags.set", "KILL", &[], &approve(2)).1.quorum,
            3
        );
        // A guardrail's approval never opens a denied write.
        assert_eq!(
            g.effective("pager.page", "ceo", &[], &approve(1)).0,
            Policy::Deny
        );
        // Nothing found: the gate rule as it is.
        assert_eq!(
            g.effective("flags.set", "OTHER", &[], &Guarded::default())
                .0,
            Policy::Auto
        );

        // Deciding: the approver is asked with the raised quorum the
        // caller put in the request; a denial says which rule.
        let asked = Quorum(Default::default());
        let mut request = request("flags.set", "OTHER");
        request.requirement = g.effective("flags.set", "OTHER", &[], &approve(2)).1;
        let v = g
            .decide(Mode::Live, Effect::Write, &request, &approve(2), &asked)
            .await;
        assert_eq!(v, Verdict::Perform(Decision::Approved));
        assert_eq!(*asked.0.lock().unwrap(), [2]);
        let denied = Guarded {
            deny: Some("guardrail `freeze` denies: inside a change freeze".into()),
            approve: Some(2),
        };
        let v = g
            .decide(Mode::Live, Effect::Write, &request, &denied, &Yes)
            .await;
        assert_eq!(
            v,
            Verdict::Refuse("guardrail `freeze` denies: inside a change freeze".into())
        );
        // A dry run simulates whatever the guardrails say.
        let v = g
            .decide(Mode::DryRun, Effect::Write, &request, &denied, &Yes)
            .await;
        assert_eq!(v, Verdict::Simulate);
    }

    #[test]
    fn unconfigured_writes_need_approval() {
        assert_eq!(
            Gates::default().policy("db.execute", "x", &[]),
            Policy::Approve
        );
    }

    #[test]
    fn recheck_is_spelled_as_a_word_or_a_flag() {
        #[derive(Deserialize)]
        struct Rule {
            recheck: Recheck,
        }
        let read = |text: &str| toml::from_str::<Rule>(&format!("recheck = {text}"));
        assert_eq!(read("true").unwrap().recheck, Recheck::Decisions);
        assert_eq!(read("false").unwrap().recheck, Recheck::Off);
        assert_eq!(read("\"reads\"").unwrap().recheck, Recheck::Reads);
        assert_eq!(read("\"decisions\"").unwrap().recheck, Recheck::Decisions);
        let err = read("\"bytes\"").err().unwrap().to_string();
        assert!(
            err.contains("\"decisions\" (the default), \"reads\" or false"),
            "{err}"
        );
        // A requirement stored before there was a choice reads as the default.
        let old: Requirement = serde_json::from_str(r#"{"quorum": 1, "recheck": true}"#).unwrap();
        assert_eq!(old.recheck, Recheck::Decisions);
    }

    #[test]
    fn a_live_gate_reads_as_the_gate_rule_says() {
        let approve = Requirement {
            quorum: 2,
            groups: vec!["fiatrails-admin".into()],
            timeout: Some(std::time::Duration::from_secs(1800)),
            ..Requirement::default()
        };
        assert_eq!(
            LiveGate::of(Policy::Approve, &approve).to_string(),
            "approve (quorum 2, group fiatrails-admin, timeout 30m)"
        );
        let consent = Requirement {
            on_timeout: OnTimeout::Approve,
            groups: vec!["a".into(), "b".into()],
            ..approve.clone()
        };
        assert_eq!(
            LiveGate::of(Policy::Approve, &consent).to_string(),
            "approve (quorum 2, groups a or b, timeout 30m, then approved)"
        );
        assert_eq!(LiveGate::of(Policy::Auto, &approve).to_string(), "auto");
        assert_eq!(LiveGate::of(Policy::Deny, &approve).to_string(), "deny");
        let json = serde_json::to_value(LiveGate::of(Policy::Approve, &approve)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "policy": "approve", "quorum": 2, "groups": ["fiatrails-admin"], "timeout_ms": 1800000, "on_timeout": "deny" })
        );
    }

    #[test]
    fn escalation_widens_who_may_decide_and_never_narrows_it() {
        let step = Escalation {
            after: std::time::Duration::from_secs(60),
            page: "leads".into(),
            groups: vec!["leads".into()],
        };
        let anyone = Requirement {
            escalate: vec![step.clone()],
            ..Requirement::default()
        };
        assert!(anyone.eligible_groups(0).is_empty());
        assert!(anyone.eligible_groups(1).is_empty(), "still any approver");
        let payments = Requirement {
            groups: vec!["payments".into()],
            escalate: vec![step],
            ..Requirement::default()
        };
        assert_eq!(payments.eligible_groups(0), ["payments"]);
        assert_eq!(payments.eligible_groups(1), ["leads", "payments"]);
    }
}
