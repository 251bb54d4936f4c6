//! Guardrails as policies: Cedar `forbid` policies evaluated for every
//! write against who started the run, the write, its size, the run so far,
//! the alert's labels and the time.
//!
//! Cedar was chosen because it is a small, analysable policy language
//! with a maintained Rust evaluator, policies that carry annotations (the
//! rule's name and what it requires), and no side effects or loops.
//! Guardrails only forbid: an implicit `permit` stands beside them, a
//! write that a policy forbids needs approval (`@over("approve")`,
//! optionally `@quorum("2")`) or is denied (the default), and a policy
//! that fails to evaluate (a missing attribute) applies, because a limit
//! that cannot be checked must hold.
//!
//! The request a policy sees:
//! - principal `Stepgate::Principal::"<who started the run>"`
//! - action `Stepgate::Action::"<interface.op>"`, e.g. `"db.execute"`
//! - resource `Stepgate::Playbook::"<playbook>"`
//! - context: `mode` ("live" or "dry-run"), `target`, `finer` (a set: the
//!   tables a statement changes, an RPC method), `args` (the write's
//!   arguments; integers stay numbers, other numbers become strings),
//!   `rows` (when measured), `writes_before`, `targets`, `run_writes`,
//!   `labels` (the alert's), `now` (`unix`, `hour`, `minute`, `weekday`
//!   "Mon".."Sun", `date` "YYYY-MM-DD", all UTC).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request,
};
use chrono::{Datelike, Timelike};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{Finding, Over, WriteFacts};

/// `[policy]` in the config: the Cedar files, relative to the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub files: Vec<PathBuf>,
}

/// What one policy requires of the writes it forbids.
#[derive(Debug, Clone)]
struct Requires {
    name: String,
    over: Over,
    quorum: Option<u32>,
    reason: Option<String>,
    /// The policy looks at `rows`.
    rows: bool,
}

/// Parsed, checked policies.
#[derive(Debug)]
pub struct Policies {
    set: PolicySet,
    requires: BTreeMap<PolicyId, Requires>,
    rows: bool,
}

const IMPLICIT_PERMIT: &str = "stepgate-implicit-permit";

impl Policies {
    /// Parses the policy files (`(path, text)`), each policy a `forbid`
    /// with an `@id` unique across them.
    pub fn parse(files: &[(PathBuf, String)]) -> Result<Policies, String> {
        let mut set = PolicySet::new();
        let mut requires = BTreeMap::new();
        let mut rows = false;
        for (path, text) in files {
            let parsed = PolicySet::from_str(text).map_err(|e| parse_error(path, text, &e))?;
            if parsed.templates().next().is_some() {
                return Err(format!(
                    "{}: templates (policies with ?principal or ?resource) are not guardrails; write each policy in full",
                    path.display()
                ));
            }
            for (index, policy) in parsed.policies().enumerate() {
                let at = |name: Option<&str>| locate(path, text, index, name);
                let name = policy.annotation("id").ok_or_else(|| {
                    format!(
                        "{}: every guardrail policy needs a name; add @id(\"…\") before it",
                        at(None)
                    )
                })?;
                if policy.effect() != Effect::Forbid {
                    return Err(format!(
                        "{}: `{name}` is a permit; guardrails only forbid (the gates say what is allowed), so write it as `forbid … unless {{ … }}`",
                        at(Some(name))
                    ));
                }
                let over = match policy.annotation("over") {
                    None | Some("deny") => Over::Deny,
                    Some("approve") => Over::Approve,
                    Some(other) => {
                        return Err(format!(
                            "{}: @over(\"{other}\") in `{name}`; write @over(\"approve\") or @over(\"deny\")",
                            at(Some(name))
                        ));
                    }
                };
                let quorum = match policy.annotation("quorum") {
                    None => None,
                    Some(q) => match (q.parse::<u32>(), over) {
                        (Ok(n), Over::Approve) if n >= 1 => Some(n),
                        (_, Over::Deny) => {
                            return Err(format!(
                                "{}: @quorum in `{name}` needs @over(\"approve\"); a denied write has no approvers",
                                at(Some(name))
                            ));
                        }
                        _ => {
                            return Err(format!(
                                "{}: @quorum(\"{q}\") in `{name}` is not a number of approvers (1 or more)",
                                at(Some(name))
                            ));
                        }
                    },
                };
                let id = PolicyId::new(name);
                if requires.contains_key(&id) || name == IMPLICIT_PERMIT {
                    return Err(format!(
                        "{}: two policies are named `{name}`; each @id must be unique",
                        at(Some(name))
                    ));
                }
                let mentions_rows = policy.to_string().contains("rows");
                rows |= mentions_rows;
                set.add(policy.new_id(id.clone()))
                    .map_err(|e| e.to_string())?;
                requires.insert(
                    id,
                    Requires {
                        name: name.to_owned(),
                        over,
                        quorum,
                        reason: policy.annotation("reason").map(str::to_owned),
                        rows: mentions_rows,
                    },
                );
            }
        }
        let permit = cedar_policy::Policy::parse(
            Some(PolicyId::new(IMPLICIT_PERMIT)),
            "permit (principal, action, resource);",
        )
        .map_err(|e| e.to_string())?;
        set.add(permit).map_err(|e| e.to_string())?;
        Ok(Policies {
            set,
            requires,
            rows,
        })
    }

    /// Reads and parses the configured files, relative to `base`.
    pub fn load(config: &PolicyConfig, base: &Path) -> Result<Option<Policies>, String> {
        if config.files.is_empty() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for file in &config.files {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base.join(file)
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read policy file {}: {e}", path.display()))?;
            files.push((path, text));
        }
        Policies::parse(&files).map(Some)
    }

    pub fn is_empty(&self) -> bool {
        self.requires.is_empty()
    }

    /// Whether a policy looks at `rows`, so statements must be measured.
    pub fn mention_rows(&self) -> bool {
        self.rows
    }

    /// The names of the policies, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.requires.values().map(|r| r.name.as_str())
    }

    /// The policies `write` trips. When the rows of a statement could not
    /// be measured, every policy that looks at rows holds: without them it
    /// would read as "not measured" and could let the write pass.
    pub fn judge(&self, write: &WriteFacts<'_>) -> Vec<Finding> {
        if let Some(Err(e)) = &write.rows {
            let unmeasured: Vec<Finding> = self
                .requires
                .values()
                .filter(|r| r.rows)
                .map(|r| {
                    finding(
                        r,
                        format!("the rows it would change could not be measured ({e}); it applies"),
                    )
                })
                .collect();
            let mut others = self.judge_measured(write);
            others.retain(|f| !unmeasured.iter().any(|u| u.rule == f.rule));
            others.extend(unmeasured);
            others.sort_by(|a, b| a.rule.cmp(&b.rule));
            return others;
        }
        self.judge_measured(write)
    }

    fn judge_measured(&self, write: &WriteFacts<'_>) -> Vec<Finding> {
        let request = match request(write) {
            Ok(request) => request,
            // Nothing the host builds should fail here; if it does, every
            // policy holds.
            Err(e) => {
                return self
                    .requires
                    .values()
                    .map(|r| {
                        finding(
                            r,
                            format!("the write could not be put to the policy ({e}); it applies"),
                        )
                    })
                    .collect();
            }
        };
        let response = Authorizer::new().is_authorized(&request, &self.set, &Entities::empty());
        let mut findings = Vec::new();
        if response.decision() == Decision::Deny {
            for id in response.diagnostics().reason() {
                if let Some(r) = self.requires.get(id) {
                    let why = r
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("policy `{}` forbids it", r.name));
                    findings.push(finding(r, why));
                }
            }
        }
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(failed) = error;
            if let Some(r) = self.requires.get(failed.policy_id()) {
                findings.push(finding(
                    r,
                    format!("the policy could not be evaluated ({error}); it applies"),
                ));
            }
        }
        findings.sort_by(|a, b| a.rule.cmp(&b.rule));
        findings
    }
}

fn finding(r: &Requires, why: String) -> Finding {
    Finding {
        rule: r.name.clone(),
        over: r.over,
        quorum: r.quorum,
        why,
    }
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

/// The Cedar request for `write`.
fn request(write: &WriteFacts<'_>) -> Result<Request, String> {
    let labels: serde_json::Map<String, Json> = write
        .alert
        .map(|alert| {
            alert
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .map(|(k, v)| (k.clone(), Json::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    let now = write.now;
    let mut context = json!({
        "mode": write.mode.as_str(),
        "target": write.target,
        "finer": write.finer,
        "args": cedar_safe(write.args).unwrap_or_else(|| json!({})),
        "writes_before": write.writes_before,
        "targets": write.targets,
        "run_writes": write.run_writes,
        "labels": labels,
        "now": {
            "unix": now.timestamp(),
            "hour": now.hour(),
            "minute": now.minute(),
            "weekday": now.weekday().to_string(),
            "date": now.format("%Y-%m-%d").to_string(),
        },
    });
    if let Some(Ok(rows)) = &write.rows {
        context["rows"] = json!(i64::try_from(*rows).unwrap_or(i64::MAX));
    }
    let context = Context::from_json_value(context, None).map_err(|e| e.to_string())?;
    Request::new(
        uid("Stepgate::Principal", write.started_by)?,
        uid("Stepgate::Action", write.op)?,
        uid("Stepgate::Playbook", write.playbook)?,
        context,
        None,
    )
    .map_err(|e| e.to_string())
}

/// `value` as Cedar can take it: integers that fit stay numbers, other
/// numbers become strings, nulls go, and keys Cedar reads as escapes
/// (`__entity`, `__extn`) are dropped so a playbook's arguments are only
/// ever data.
fn cedar_safe(value: &Json) -> Option<Json> {
    match value {
        Json::Null => None,
        Json::Bool(_) | Json::String(_) => Some(value.clone()),
        Json::Number(n) => Some(match n.as_i64() {
            Some(i) => json!(i),
            None => Json::String(n.to_string()),
        }),
        Json::Array(items) => Some(Json::Array(items.iter().filter_map(cedar_safe).collect())),
        Json::Object(map) => Some(Json::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with("__"))
                .filter_map(|(k, v)| Some((k.clone(), cedar_safe(v)?)))
                .collect(),
        )),
    }
}

/// `path:line` of a parse error.
fn parse_error(path: &Path, text: &str, e: &cedar_policy::ParseErrors) -> String {
    use miette::Diagnostic;
    let line = e
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| line_of(text, label.offset()));
    match line {
        Some(line) => format!(
            "{}:{line}: not a Cedar policy: {e}\nhint: see docs/guardrails.md for the request a policy sees",
            path.display()
        ),
        None => format!(
            "{}: not a Cedar policy: {e}\nhint: see docs/guardrails.md",
            path.display()
        ),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// `path:line` of the policy named `name` (found by its `@id`), or of
/// the `index`-th policy.
fn locate(path: &Path, text: &str, index: usize, name: Option<&str>) -> String {
    let line = name
        .and_then(|name| text.find(&format!("\"{name}\"")))
        .map(|offset| line_of(text, offset));
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => format!("{} (policy {})", path.display(), index + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::{Alert, AlertStatus};

    fn policies(text: &str) -> Result<Policies, String> {
        Policies::parse(&[(PathBuf::from("guard.cedar"), text.to_owned())])
    }

    fn alert(severity: &str) -> Alert {
        Alert {
            name: "Drift".into(),
            status: AlertStatus::Firing,
            labels: vec![
                ("alertname".into(), "Drift".into()),
                ("severity".into(), severity.into()),
            ],
            annotations: vec![],
            starts_at: None,
            fingerprint: None,
        }
    }

    fn judge(p: &Policies, op: &str, rows: Option<u64>, alert: &Alert) -> Vec<Finding> {
        let args = json!({ "sql": "UPDATE t SET x = 1", "amount": 1.5, "__entity": { "type": "X", "id": "y" } });
        p.judge(&WriteFacts {
            playbook: "plaza",
            run_id: "r",
            mode: crate::gate::Mode::Live,
            started_by: "alertmanager",
            alert: Some(alert),
            op,
            target: "ledger",
            finer: &["escrow_holds".to_owned()],
            args: &args,
            rows: rows.map(Ok),
            writes_before: 0,
            writes_to_target_before: 0,
            targets: 1,
            run_writes: 0,
            now: chrono::Utc::now(),
        })
    }

    const GUARD: &str = r#"
@id("big-updates-need-two")
@over("approve")
@quorum("2")
forbid (principal, action == Stepgate::Action::"db.execute", resource)
when { context.rows > 100 };

@id("no-ledger-writes-on-warnings")
@reason("warnings never write to the ledger")
forbid (principal, action == Stepgate::Action::"db.execute", resource)
when { context.labels.severity == "warning" && context.finer.contains("escrow_holds") };
"#;

    #[test]
    fn a_policy_escalates_or_denies_by_its_annotations() {
        let p = policies(GUARD).unwrap();
        let small = judge(&p, "db.execute", Some(3), &alert("critical"));
        assert!(small.is_empty(), "{small:?}");
        let big = judge(&p, "db.execute", Some(500), &alert("critical"));
        assert_eq!(big.len(), 1, "{big:?}");
        assert_eq!(
            (big[0].rule.as_str(), big[0].over, big[0].quorum),
            ("big-updates-need-two", Over::Approve, Some(2))
        );
        let warning = judge(&p, "db.execute", Some(3), &alert("warning"));
        assert_eq!(warning[0].over, Over::Deny);
        assert_eq!(warning[0].why, "warnings never write to the ledger");
        // Another action is not in scope of either policy.
        assert!(judge(&p, "flags.set", None, &alert("warning")).is_empty());
    }

    #[test]
    fn arguments_reach_a_policy_as_data_only() {
        // The test's arguments carry `"amount": 1.5` and an `__entity`
        // escape: the number arrives as text, the escape not at all.
        let p = policies(
            r#"
@id("amount-as-text")
forbid (principal, action, resource) when { context.args.amount == "1.5" };
@id("smuggled-entity")
forbid (principal, action, resource) when { context.args has "__entity" };
"#,
        )
        .unwrap();
        let found: Vec<String> = judge(&p, "db.execute", Some(1), &alert("critical"))
            .into_iter()
            .map(|f| f.rule)
            .collect();
        assert_eq!(found, ["amount-as-text"]);
    }

    #[test]
    fn a_policy_that_cannot_be_evaluated_applies() {
        let p = policies(GUARD).unwrap();
        // No rows measured: `context.rows` is missing, so the first policy
        // errors, and holds.
        let unmeasured = judge(&p, "db.execute", None, &alert("critical"));
        assert_eq!(unmeasured.len(), 1, "{unmeasured:?}");
        assert!(
            unmeasured[0].why.contains("could not be evaluated"),
            "{unmeasured:?}"
        );
        assert_eq!(unmeasured[0].quorum, Some(2));
    }

    #[test]
    fn a_statement_that_could_not_be_measured_holds_every_policy_on_rows() {
        let p = policies(GUARD).unwrap();
        let args = json!({});
        let alert = alert("critical");
        let facts = WriteFacts {
            playbook: "plaza",
            run_id: "r",
            mode: crate::gate::Mode::Live,
            started_by: "alertmanager",
            alert: Some(&alert),
            op: "db.execute",
            target: "ledger",
            finer: &[],
            args: &args,
            rows: Some(Err("statement timeout".into())),
            writes_before: 0,
            writes_to_target_before: 0,
            targets: 1,
            run_writes: 0,
            now: chrono::Utc::now(),
        };
        let found = p.judge(&facts);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].rule, "big-updates-need-two");
        assert!(found[0].why.contains("statement timeout"), "{found:?}");
    }

    #[test]
    fn bad_policies_name_the_file_and_line() {
        let syntax =
            policies("@id(\"x\")\nforbid (principal, action, resource)\nwhen { context.rows > };")
                .unwrap_err();
        assert!(syntax.starts_with("guard.cedar:3"), "{syntax}");
        let permit =
            policies("\n@id(\"open\")\npermit (principal, action, resource);").unwrap_err();
        assert!(
            permit.starts_with("guard.cedar:2") && permit.contains("only forbid"),
            "{permit}"
        );
        let unnamed = policies("forbid (principal, action, resource);").unwrap_err();
        assert!(unnamed.contains("@id"), "{unnamed}");
        let over = policies("@id(\"a\") @over(\"maybe\") forbid (principal, action, resource);")
            .unwrap_err();
        assert!(over.contains("@over(\"approve\")"), "{over}");
        let twice = policies("@id(\"a\") forbid (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);").unwrap_err();
        assert!(twice.contains("unique"), "{twice}");
    }
}
