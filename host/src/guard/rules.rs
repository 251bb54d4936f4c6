//! The guardrail rules written in TOML (`[guardrails.NAME]`): rate limits,
//! cooldowns, writes and targets per run, rows per statement, and
//! calendars. Each is checked when the config loads (the deserializer
//! fails with the line of the table and a hint) and judged per write.

use std::time::Duration;

use serde::Deserialize;

use super::calendar::{Calendar, CalendarConfig};
use super::{Over, RunHistory, WriteFacts};
use crate::routing::Matcher;

/// One `[guardrails.NAME]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Playbook names or globs the rule applies to; empty: every playbook.
    #[serde(default)]
    playbooks: Vec<String>,
    /// Alertmanager-style matchers on the run's alert (as a route's): the
    /// rule counts and applies only to runs whose alert matches.
    #[serde(default, rename = "match")]
    matchers: Vec<String>,
    /// `interface.op` or `interface.op:TARGET` the rule applies to; unset:
    /// every write.
    op: Option<String>,
    /// At most this many live runs of the playbook in `window`.
    live_runs: Option<u32>,
    window: Option<String>,
    /// A run for an alert whose last run ended less than this ago.
    cooldown: Option<String>,
    /// At most this many writes of `op` per run.
    writes_per_run: Option<u32>,
    /// At most this many distinct targets of `op` per run (flags,
    /// endpoints, pager targets).
    targets_per_run: Option<u32>,
    /// At most this many rows changed by one `db.execute`.
    max_rows: Option<u64>,
    /// A calendar: writes inside it trip the rule. Date ranges (`from`
    /// inclusive, `until` exclusive, dates or local times in `tz`)...
    #[serde(default)]
    dates: Vec<super::calendar::DateRange>,
    /// ...or a recurring window: a cron expression (in `tz`) for its
    /// start and how long it lasts.
    cron: Option<String>,
    duration: Option<String>,
    /// The calendar's time zone, e.g. "Europe/Berlin"; default UTC.
    tz: Option<String>,
    /// A maintenance window: alerts for the rule's playbooks are recorded
    /// and start no run while it is on.
    #[serde(default)]
    silence: bool,
    /// What a write over the rule needs: `approve` (default) or `deny`.
    #[serde(default = "approve")]
    over: Over,
    /// For `approve`: distinct approvers the write needs at least.
    quorum: Option<u32>,
}

/// The most earlier runs a rule reads to count ([`RunHistory`]).
pub const MOST_RUNS: u32 = 1000;

fn approve() -> Over {
    Over::Approve
}

/// What a rule measures.
#[derive(Debug, Clone)]
pub enum Measure {
    LiveRuns { max: u32, window: Duration },
    Cooldown(Duration),
    WritesPerRun(u32),
    TargetsPerRun(u32),
    Rows(u64),
    Calendar(Box<Calendar>),
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The `playbooks` names and globs as written, for checks and messages.
    pub patterns: Vec<String>,
    playbooks: Option<globset::GlobSet>,
    matchers: Vec<Matcher>,
    op: Option<(String, Option<String>)>,
    pub measure: Measure,
    pub over: Over,
    pub quorum: Option<u32>,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = RuleConfig::deserialize(d)?;
        Rule::try_from(config).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<RuleConfig> for Rule {
    type Error = String;

    fn try_from(c: RuleConfig) -> Result<Rule, String> {
        let playbooks = if c.playbooks.is_empty() {
            None
        } else {
            let mut set = globset::GlobSetBuilder::new();
            for glob in &c.playbooks {
                set.add(
                    globset::Glob::new(glob)
                        .map_err(|e| format!("`{glob}` is not a playbook name or glob: {e}"))?,
                );
            }
            Some(set.build().map_err(|e| e.to_string())?)
        };
        let matchers = c
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()?;
        let op = match &c.op {
            None => None,
            Some(text) => {
                let key: crate::gate::GateKey = text.parse()?;
                if key.target.as_deref().is_some_and(|t| t.contains('/')) {
                    return Err(format!(
                        "`{text}`: a guardrail names an operation and its target (connection, flag, endpoint), not a table or method; to limit writes to one table, write a Cedar policy on `context.finer`"
                    ));
                }
                Some((key.op, key.target))
            }
        };
        let calendar = Calendar::from_config(&CalendarConfig {
            dates: c.dates.clone(),
            cron: c.cron.clone(),
            duration: c.duration.clone(),
            tz: c.tz.clone(),
            silence: c.silence,
        })?;
        let window = c.window.as_deref().map(super::duration).transpose()?;
        let cooldown = c.cooldown.as_deref().map(super::duration).transpose()?;
        let mut measures = Vec::new();
        if let Some(max) = c.live_runs {
            let window = window.ok_or(
                "`live_runs` needs a `window`; write e.g. live_runs = 3 and window = \"1h\"",
            )?;
            measures.push(Measure::LiveRuns { max, window });
        } else if window.is_some() {
            return Err("`window` belongs to `live_runs`; add live_runs = N".to_owned());
        }
        if let Some(cooldown) = cooldown {
            measures.push(Measure::Cooldown(cooldown));
        }
        if let Some(max) = c.writes_per_run {
            measures.push(Measure::WritesPerRun(max));
        }
        if let Some(max) = c.targets_per_run {
            measures.push(Measure::TargetsPerRun(max));
        }
        if let Some(max) = c.max_rows {
            match &op {
                Some((op, _)) if op == "db.execute" => {}
                _ => {
                    return Err(
                        "`max_rows` measures `db.execute`; add op = \"db.execute\" (or \"db.execute:CONNECTION\")"
                            .to_owned(),
                    );
                }
            }
            measures.push(Measure::Rows(max));
        }
        if let Some(calendar) = calendar {
            measures.push(Measure::Calendar(Box::new(calendar)));
        } else if c.silence {
            return Err("`silence` needs a calendar: `dates` or `cron` with `duration`".to_owned());
        }
        let measure = match measures.len() {
            1 => measures.remove(0),
            0 => {
                return Err("a guardrail needs one limit: live_runs + window, cooldown, writes_per_run, targets_per_run, max_rows, or a calendar (dates, or cron + duration)".to_owned());
            }
            _ => {
                return Err(
                    "a guardrail has one limit; split this table into one guardrail per limit"
                        .to_owned(),
                );
            }
        };
        if matches!(measure, Measure::TargetsPerRun(_))
            && op.as_ref().is_some_and(|(_, target)| target.is_some())
        {
            return Err("`targets_per_run` counts the targets of one operation; name the operation alone, e.g. op = \"flags.set\"".to_owned());
        }
        if let Measure::LiveRuns { max, .. } = measure
            && max > MOST_RUNS
        {
            return Err(format!(
                "`live_runs` counts up to {MOST_RUNS} runs; use a shorter `window` with a smaller number"
            ));
        }
        if matches!(
            measure,
            Measure::WritesPerRun(_) | Measure::TargetsPerRun(_)
        ) && op.is_none()
        {
            return Err("`writes_per_run` and `targets_per_run` count one operation; add op = \"flags.set\" (or another write)".to_owned());
        }
        match (c.over, c.quorum) {
            (Over::Deny, Some(_)) => {
                return Err(
                    "`quorum` is for over = \"approve\"; a denied write has no approvers"
                        .to_owned(),
                );
            }
            (_, Some(0)) => return Err("`quorum` is at least 1".to_owned()),
            _ => {}
        }
        Ok(Rule {
            patterns: c.playbooks.clone(),
            playbooks,
            matchers,
            op,
            measure,
            over: c.over,
            quorum: c.quorum,
        })
    }
}

impl Rule {
    /// Whether the rule names `playbook`.
    pub fn names(&self, playbook: &str) -> bool {
        self.playbooks
            .as_ref()
            .is_none_or(|set| set.is_match(playbook))
    }

    /// The operation (and target) the rule is limited to, if it names one.
    pub fn op(&self) -> Option<crate::gate::GateKey> {
        self.op.as_ref().map(|(op, target)| crate::gate::GateKey {
            op: op.clone(),
            target: target.clone(),
        })
    }

    /// Whether the rule applies to a write of `op` on `target` by `playbook`.
    pub fn covers(&self, playbook: &str, op: &str, target: &str) -> bool {
        self.names(playbook)
            && match &self.op {
                None => true,
                Some((rule_op, None)) => rule_op == op,
                Some((rule_op, Some(rule_target))) => rule_op == op && rule_target == target,
            }
    }

    pub(super) fn alert_matches(&self, alert: Option<&crate::bindings::Alert>) -> bool {
        self.matchers.is_empty()
            || alert.is_some_and(|alert| self.matchers.iter().all(|m| m.matches(alert)))
    }

    /// Why `write` is over this rule, or `None` if it is within it.
    pub(super) async fn tripped(
        &self,
        write: &WriteFacts<'_>,
        history: Option<&dyn RunHistory>,
    ) -> Option<String> {
        if !self.covers(write.playbook, write.op, write.target) || !self.alert_matches(write.alert)
        {
            return None;
        }
        match &self.measure {
            Measure::LiveRuns { max, window } => {
                let history = history?;
                let window_text = humantime::format_duration(*window);
                match history
                    .live_runs_before(write.playbook, write.run_id, *window)
                    .await
                {
                    Err(e) => Some(format!("cannot count earlier runs ({e}); the limit holds")),
                    Ok(runs) => {
                        let count = runs
                            .iter()
                            .filter(|alert| self.alert_matches(alert.as_ref()))
                            .count() as u64;
                        if count >= u64::from(*max) {
                            Some(format!(
                                "{count} live runs of `{}` in the {window_text} before this one; the limit is {max}",
                                write.playbook
                            ))
                        } else if runs.len() >= MOST_RUNS as usize {
                            Some(format!(
                                "{MOST_RUNS} or more live runs of `{}` in the {window_text} before this one, too many to count; the limit holds",
                                write.playbook
                            ))
                        } else {
                            None
                        }
                    }
                }
            }
            Measure::Cooldown(cooldown) => {
                let history = history?;
                let alert = write.alert?;
                match history
                    .last_end_within(write.playbook, alert, write.run_id, *cooldown)
                    .await
                {
                    Err(e) => Some(format!(
                        "cannot read earlier runs ({e}); the cooldown holds"
                    )),
                    Ok(None) => None,
                    Ok(Some(ended)) => Some(format!(
                        "the last live run for this alert ended at {}, within the {} cooldown before this run started",
                        ended.format("%Y-%m-%d %H:%M:%S UTC"),
                        humantime::format_duration(*cooldown)
                    )),
                }
            }
            Measure::WritesPerRun(max) => {
                // A rule on one target counts the writes to that target.
                let (before, what) = match &self.op {
                    Some((_, Some(target))) => (
                        write.writes_to_target_before,
                        format!("{} on `{target}`", write.op),
                    ),
                    _ => (write.writes_before, write.op.to_owned()),
                };
                (before >= *max).then(|| {
                    format!(
                        "write {} of {what} in this run; the limit is {max}",
                        before + 1
                    )
                })
            }
            Measure::TargetsPerRun(max) => (write.targets > *max).then(|| {
                format!(
                    "{} distinct targets of {} in this run with this one; the limit is {max}",
                    write.targets, write.op
                )
            }),
            Measure::Rows(max) => match &write.rows {
                None => None,
                Some(Ok(rows)) => (rows > max)
                    .then(|| format!("the statement would change {rows} rows; the limit is {max}")),
                Some(Err(e)) => Some(format!(
                    "the rows it would change could not be measured ({e}); the limit holds"
                )),
            },
            Measure::Calendar(calendar) => calendar
                .contains(write.now)
                .then(|| calendar.describe(write.now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<Rule, String> {
        toml::from_str::<Rule>(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_rule_needs_exactly_one_limit_and_says_what_to_write() {
        let none = rule("playbooks = [\"p\"]").unwrap_err();
        assert!(none.contains("needs one limit"), "{none}");
        let two = rule("op = \"flags.set\"\nwrites_per_run = 2\ntargets_per_run = 3").unwrap_err();
        assert!(two.contains("one guardrail per limit"), "{two}");
        let no_window = rule("live_runs = 3").unwrap_err();
        assert!(no_window.contains("window = \"1h\""), "{no_window}");
        let rows = rule("max_rows = 100").unwrap_err();
        assert!(rows.contains("op = \"db.execute\""), "{rows}");
        let quorum = rule("cooldown = \"1h\"\nover = \"deny\"\nquorum = 2").unwrap_err();
        assert!(quorum.contains("no approvers"), "{quorum}");
        let op = rule("op = \"db.drop\"\nwrites_per_run = 1").unwrap_err();
        assert!(op.contains("not a write operation"), "{op}");
        let window = rule("live_runs = 3\nwindow = \"hourly\"").unwrap_err();
        assert!(window.contains("hourly"), "{window}");
        assert!(rule("op = \"db.execute:plaza\"\nmax_rows = 100\nquorum = 2").is_ok());
    }

    fn facts<'a>(
        op: &'a str,
        target: &'a str,
        writes_before: u32,
        targets: u32,
        args: &'a serde_json::Value,
    ) -> WriteFacts<'a> {
        WriteFacts {
            playbook: "p",
            run_id: "r",
            mode: crate::gate::Mode::Live,
            started_by: "test",
            alert: None,
            op,
            target,
            finer: &[],
            args,
            rows: None,
            writes_before,
            writes_to_target_before: writes_before,
            targets,
            run_writes: writes_before,
            now: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn writes_and_targets_per_run_count_up_to_their_limit() {
        let args = serde_json::json!({});
        let writes = rule("op = \"flags.set\"\nwrites_per_run = 2").unwrap();
        assert!(
            writes
                .tripped(&facts("flags.set", "A", 1, 1, &args), None)
                .await
                .is_none()
        );
        let third = writes
            .tripped(&facts("flags.set", "A", 2, 1, &args), None)
            .await;
        assert_eq!(
            third.as_deref(),
            Some("write 3 of flags.set in this run; the limit is 2")
        );
        // Another operation is not counted by it.
        assert!(
            writes
                .tripped(&facts("pager.page", "A", 5, 1, &args), None)
                .await
                .is_none()
        );

        // On one target, only the writes to it count.
        let kill = rule("op = \"flags.set:KILL\"\nwrites_per_run = 1").unwrap();
        let mut other = facts("flags.set", "KILL", 3, 1, &args);
        other.writes_to_target_before = 0;
        assert!(kill.tripped(&other, None).await.is_none());
        other.writes_to_target_before = 1;
        let again = kill.tripped(&other, None).await;
        assert_eq!(
            again.as_deref(),
            Some("write 2 of flags.set on `KILL` in this run; the limit is 1")
        );
        let table = rule("op = \"db.execute:plaza/ledger\"\nmax_rows = 1").unwrap_err();
        assert!(table.contains("Cedar policy"), "{table}");

        let targets = rule("op = \"flags.set\"\ntargets_per_run = 2").unwrap();
        assert!(
            targets
                .tripped(&facts("flags.set", "B", 4, 2, &args), None)
                .await
                .is_none()
        );
        let spread = targets
            .tripped(&facts("flags.set", "C", 4, 3, &args), None)
            .await;
        assert!(spread.is_some_and(|why| why.contains("3 distinct targets")));
    }

    #[tokio::test]
    async fn a_rule_with_matchers_applies_only_to_runs_whose_alert_matches() {
        let args = serde_json::json!({});
        let r =
            rule("match = [\"severity=page\"]\nop = \"flags.set\"\nwrites_per_run = 0").unwrap();
        // No alert (a bare run): the matchers cannot match.
        assert!(
            r.tripped(&facts("flags.set", "A", 0, 1, &args), None)
                .await
                .is_none()
        );
        let alert = |severity: &str| crate::bindings::Alert {
            name: "X".into(),
            status: crate::bindings::AlertStatus::Firing,
            labels: vec![("severity".into(), severity.into())],
            annotations: vec![],
            starts_at: None,
            fingerprint: None,
        };
        let page = alert("page");
        let mut f = facts("flags.set", "A", 0, 1, &args);
        f.alert = Some(&page);
        assert!(r.tripped(&f, None).await.is_some());
        let info = alert("info");
        f.alert = Some(&info);
        assert!(r.tripped(&f, None).await.is_none());
    }

    #[test]
    fn a_maintenance_window_silences_only_its_playbooks_while_it_is_on() {
        let now = chrono::Utc::now();
        let window = format!(
            "playbooks = [\"plaza-*\"]\nsilence = true\ndates = [{{ from = \"{}\", until = \"{}\" }}]",
            (now - chrono::Duration::minutes(5)).to_rfc3339(),
            (now + chrono::Duration::minutes(5)).to_rfc3339()
        );
        let guard = super::super::Guardrails::new(
            std::collections::BTreeMap::from([("maintenance".to_owned(), rule(&window).unwrap())]),
            None,
        );
        let alert = crate::bindings::Alert {
            name: "Drift".into(),
            status: crate::bindings::AlertStatus::Firing,
            labels: vec![("env".into(), "prod".into())],
            annotations: vec![],
            starts_at: None,
            fingerprint: None,
        };
        assert_eq!(
            guard.silenced("plaza-drift", &alert, now).as_deref(),
            Some("maintenance")
        );
        assert_eq!(guard.silenced("rgs-drift", &alert, now), None);
        assert_eq!(
            guard.silenced("plaza-drift", &alert, now + chrono::Duration::minutes(6)),
            None
        );
        // A window with matchers silences only the alerts they match.
        let staging = super::super::Guardrails::new(
            std::collections::BTreeMap::from([(
                "staging-maintenance".to_owned(),
                rule(&format!("match = [\"env=staging\"]\n{window}")).unwrap(),
            )]),
            None,
        );
        assert_eq!(staging.silenced("plaza-drift", &alert, now), None);
        let silence_alone = rule("silence = true").unwrap_err();
        assert!(
            silence_alone.contains("needs a calendar"),
            "{silence_alone}"
        );
    }

    #[test]
    fn a_rule_applies_to_its_playbooks_and_operation() {
        let r = rule("playbooks = [\"plaza-*\"]\nop = \"db.execute:plaza\"\nmax_rows = 1").unwrap();
        assert!(r.covers("plaza-drift", "db.execute", "plaza"));
        assert!(!r.covers("plaza-drift", "db.execute", "other"));
        assert!(!r.covers("rgs-drift", "db.execute", "plaza"));
        assert!(!r.covers("plaza-drift", "flags.set", "plaza"));
    }
}
