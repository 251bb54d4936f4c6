//! Guardrails: limits a platform team sets once, which hold whatever a
//! playbook does.
//!
//! A gate rule says how one write operation is decided (`auto`,
//! `approve`, `deny`). A guardrail looks at a write in its context: how
//! many live runs of the playbook came before it, how long ago the same
//! alert's last run ended, how many writes and targets the run has made,
//! how many rows the statement would change, whether a change freeze is
//! on, and what the team's Cedar policies say of all of it. Each rule that
//! applies yields a [`Finding`]: the write needs approval (with a quorum
//! of at least N) or is denied, with the rule's name and the count that
//! tripped it.
//!
//! Guardrails only make a write stricter; nothing here lets a write past
//! its gate. [`crate::gate::Gates`] combines the gate rule and the
//! findings into the one verdict (the strictest wins), in dry runs too,
//! where the findings are journaled as what would have stopped the write.
//!
//! This module judges; it performs nothing and journals nothing. What it
//! needs from the world (earlier runs) comes through [`RunHistory`].

mod calendar;
mod history;
mod policy;
mod rules;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::bindings::Alert;
use crate::gate::Mode;
pub use crate::gate::{Finding, Over};

pub use calendar::Calendar;
pub use policy::{Policies, PolicyConfig};
pub use rules::{Measure, Rule, RuleConfig};

/// A write as the guardrails see it.
#[derive(Debug, Clone)]
pub struct WriteFacts<'a> {
    pub playbook: &'a str,
    pub run_id: &'a str,
    pub mode: Mode,
    /// Who started the run (a principal, `alertmanager`, `cli:USER`).
    pub started_by: &'a str,
    /// The alert the run answers.
    pub alert: Option<&'a Alert>,
    /// `interface.op`.
    pub op: &'a str,
    pub target: &'a str,
    pub finer: &'a [String],
    pub args: &'a serde_json::Value,
    /// Rows the write would change, measured by its dry run just before
    /// (`db.execute` under a row rule); `Err` when it could not be measured.
    pub rows: Option<Result<u64, String>>,
    /// Writes of this operation the run made before this one.
    pub writes_before: u32,
    /// Of those, the writes to this same target.
    pub writes_to_target_before: u32,
    /// Distinct targets of this operation in the run, this one included.
    pub targets: u32,
    /// Writes of any operation the run made before this one.
    pub run_writes: u32,
    /// Now, for calendars and policies.
    pub now: DateTime<Utc>,
}

/// A rate limit's count, as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRunCount {
    pub rule: String,
    pub playbook: String,
    pub count: i64,
    pub limit: i64,
}

/// What guardrails need to know of earlier runs (the state store).
#[async_trait::async_trait]
pub trait RunHistory: Send + Sync {
    /// The alerts of the live runs of `playbook` started in the `window`
    /// before run `run_id` started (that run itself not counted), at most
    /// `rules::MOST_RUNS` of them.
    async fn live_runs_before(
        &self,
        playbook: &str,
        run_id: &str,
        window: std::time::Duration,
    ) -> Result<Vec<Option<Alert>>, String>;

    /// When the last live run of `playbook` for the same alert (by
    /// fingerprint) other than `run_id` ended, if one ended in the
    /// `within` before run `run_id` started.
    async fn last_end_within(
        &self,
        playbook: &str,
        alert: &Alert,
        run_id: &str,
        within: std::time::Duration,
    ) -> Result<Option<DateTime<Utc>>, String>;
}

/// Every guardrail of a config: the named rules and the policies.
#[derive(Debug, Default)]
pub struct Guardrails {
    rules: BTreeMap<String, Rule>,
    policies: Option<Policies>,
}

impl Guardrails {
    /// Builds from the config's `[guardrails.NAME]` rules (already
    /// validated by their deserializer) and policies (already parsed).
    pub fn new(rules: BTreeMap<String, Rule>, policies: Option<Policies>) -> Guardrails {
        Guardrails { rules, policies }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.policies.as_ref().is_none_or(Policies::is_empty)
    }

    pub fn rules(&self) -> &BTreeMap<String, Rule> {
        &self.rules
    }

    pub fn policies(&self) -> Option<&Policies> {
        self.policies.as_ref()
    }

    /// Whether a write of `op` on `target` by `playbook` is under a row
    /// rule, so its rows must be measured before it is judged.
    pub fn measures_rows(&self, playbook: &str, op: &str, target: &str) -> bool {
        self.rules.values().any(|rule| {
            matches!(rule.measure, Measure::Rows(_)) && rule.covers(playbook, op, target)
        }) || self.policies.as_ref().is_some_and(|p| p.mention_rows())
    }

    /// The most rows a write of `op` on `target` by `playbook` may change
    /// when it is made, so data that grew between the measurement and the
    /// write cannot carry it past what was judged: the smallest row limit
    /// its measured `rows` were within, and the measured count itself
    /// where a rule it tripped was approved or a policy judged the count.
    /// `None` when no row limit applies.
    pub fn row_cap(
        &self,
        playbook: &str,
        op: &str,
        target: &str,
        rows: Option<&Result<u64, String>>,
    ) -> Option<u64> {
        let Some(Ok(measured)) = rows else {
            return None;
        };
        let mut cap: Option<u64> = None;
        let mut hold_measured = self.policies.as_ref().is_some_and(Policies::mention_rows);
        for rule in self.rules.values() {
            if let Measure::Rows(max) = rule.measure
                && rule.covers(playbook, op, target)
            {
                if *measured <= max {
                    cap = Some(cap.map_or(max, |c| c.min(max)));
                } else {
                    hold_measured = true;
                }
            }
        }
        if hold_measured {
            cap = Some(cap.map_or(*measured, |c| c.min(*measured)));
        }
        cap
    }

    /// The maintenance window silencing `alert` for `playbook` now, by
    /// name: one that names the playbook, whose matchers the alert
    /// matches, and that is on.
    pub fn silenced(&self, playbook: &str, alert: &Alert, now: DateTime<Utc>) -> Option<String> {
        self.rules
            .iter()
            .find_map(|(name, rule)| match &rule.measure {
                Measure::Calendar(calendar)
                    if calendar.silence
                        && rule.names(playbook)
                        && rule.alert_matches(Some(alert))
                        && calendar.contains(now) =>
                {
                    Some(name.clone())
                }
                _ => None,
            })
    }

    /// Each rate limit's count now, for `/metrics`: per rule and playbook
    /// it names among `playbooks`, the live runs started in its window
    /// (of alerts its matchers match), and its limit.
    pub async fn live_run_counts(
        &self,
        playbooks: &[&str],
        history: &dyn RunHistory,
    ) -> Vec<LiveRunCount> {
        let mut counts = Vec::new();
        for (name, rule) in &self.rules {
            let Measure::LiveRuns { max, window } = rule.measure else {
                continue;
            };
            for playbook in playbooks.iter().filter(|p| rule.names(p)) {
                // A run id no run has: counted back from now.
                let Ok(runs) = history.live_runs_before(playbook, "", window).await else {
                    continue;
                };
                let count = runs
                    .iter()
                    .filter(|alert| rule.alert_matches(alert.as_ref()))
                    .count() as i64;
                counts.push(LiveRunCount {
                    rule: name.clone(),
                    playbook: (*playbook).to_owned(),
                    count,
                    limit: i64::from(max),
                });
            }
        }
        counts
    }

    /// Every guardrail `write` trips. A rule that cannot count what it
    /// limits (the state store failed) trips, saying so: a limit that
    /// cannot be checked holds.
    pub async fn judge(
        &self,
        write: &WriteFacts<'_>,
        history: Option<&dyn RunHistory>,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (name, rule) in &self.rules {
            if let Some(why) = rule.tripped(write, history).await {
                findings.push(Finding {
                    rule: name.clone(),
                    over: rule.over,
                    quorum: rule.quorum,
                    why,
                });
            }
        }
        if let Some(policies) = &self.policies {
            findings.extend(policies.judge(write));
        }
        findings
    }
}

/// The guardrails a runtime shares with every run it starts.
pub type SharedGuardrails = Arc<Guardrails>;

/// What `findings` require of the write, in the gate's words: the first
/// denial, else approval by the largest quorum any asks for.
pub fn guarded(findings: &[Finding]) -> crate::gate::Guarded {
    let deny = findings
        .iter()
        .find(|f| f.over == Over::Deny)
        .map(ToString::to_string);
    let approve = findings
        .iter()
        .filter(|f| f.over == Over::Approve)
        .map(|f| f.quorum.unwrap_or(1))
        .max();
    crate::gate::Guarded { deny, approve }
}

/// `plan_digest` bound to the guardrails a write tripped (their names,
/// what they require) and the order of magnitude of the rows it was
/// measured to change: unchanged when none tripped, so approvals of writes
/// no guardrail touches are bound as before. An approval of "340 rows"
/// stands for 290 or 410 rows, not for a million.
pub fn bound_digest(
    plan_digest: &str,
    findings: &[Finding],
    rows: Option<&Result<u64, String>>,
) -> String {
    if findings.is_empty() {
        return plan_digest.to_owned();
    }
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(plan_digest.as_bytes());
    if let Some(Ok(rows)) = rows {
        hash.update(format!("\nrows ~1e{}", rows.checked_ilog10().unwrap_or(0)).as_bytes());
    }
    for f in findings {
        let canonical = serde_json::json!([f.rule, f.over, f.quorum]);
        hash.update(b"\n");
        hash.update(canonical.to_string().as_bytes());
    }
    hex::encode(hash.finalize())
}

/// Parses a duration written as in the rest of the config ("1h", "30m").
fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. \"1h\" or \"30m\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, over: Over, quorum: Option<u32>) -> Finding {
        Finding {
            rule: rule.into(),
            over,
            quorum,
            why: "measured".into(),
        }
    }

    #[test]
    fn an_approval_is_bound_to_the_guardrails_a_write_tripped() {
        let plan = "abc";
        assert_eq!(bound_digest(plan, &[], None), plan);
        let two = bound_digest(plan, &[finding("big", Over::Approve, Some(2))], None);
        assert_ne!(two, plan);
        assert_ne!(
            two,
            bound_digest(plan, &[finding("big", Over::Approve, Some(3))], None)
        );
        assert_ne!(
            two,
            bound_digest(plan, &[finding("freeze", Over::Approve, Some(2))], None)
        );
        // What was measured may move; what the rule requires binds.
        let mut moved = finding("big", Over::Approve, Some(2));
        moved.why = "measured again".into();
        assert_eq!(two, bound_digest(plan, &[moved], None));
        // Rows within the same order of magnitude keep the approval; ten
        // times as many void it.
        let big = [finding("big", Over::Approve, Some(2))];
        let at = |n: u64| bound_digest(plan, &big, Some(&Ok(n)));
        assert_eq!(at(340), at(410));
        assert_ne!(at(340), at(3400));
        assert_ne!(at(340), at(1_000_000));
    }

    #[test]
    fn findings_require_the_first_denial_else_the_largest_quorum() {
        let g = guarded(&[
            finding("a", Over::Approve, None),
            finding("b", Over::Approve, Some(3)),
        ]);
        assert_eq!((g.deny, g.approve), (None, Some(3)));
        let g = guarded(&[
            finding("a", Over::Approve, Some(2)),
            finding("f", Over::Deny, None),
        ]);
        assert!(g.deny.is_some_and(|why| why.contains("`f` denies")));
        assert!(guarded(&[]).is_clear());
    }
}
