//! The gate's words as `stepgate.toml` writes them: how a call is classed
//! ([`Effect`]), and the rule of one write operation ([`GateRule`]: its
//! policy, quorum, groups, timeout and escalation). The config embeds them;
//! the gate, the state store and the journal read them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{Policy, Recheck};
use crate::units::{de_duration, de_opt_duration, ser_duration};

/// How a read or a write is classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Read,
    Write,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Read => "read",
            Effect::Write => "write",
        })
    }
}

/// The gate of one write operation: a bare policy, or a table that says
/// who must approve and what happens when nobody does:
///
/// ```toml
/// [playbooks.plaza.gates."flags.set:PLAZA_CUSTODIED_MODE_DISABLED"]
/// policy = "approve"
/// quorum = 2
/// groups = ["payments-oncall"]
/// timeout = "30m"
/// on_timeout = "deny"
/// escalate = [{ after = "10m", page = "payments-leads", groups = ["payments-leads"] }]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateRule {
    pub policy: Policy,
    /// Distinct approvers; unset: the playbook's `quorum`.
    #[serde(default)]
    pub quorum: Option<u32>,
    /// Principals of at least one of these groups may decide; empty: any
    /// approver.
    #[serde(default)]
    pub groups: Vec<String>,
    /// How long the request may wait; unset: the playbook's
    /// `approval_timeout`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub timeout: Option<Duration>,
    /// What an undecided request means once it times out.
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Who is paged, in order, while the request waits.
    #[serde(default)]
    pub escalate: Vec<Escalation>,
    /// Before an approved write goes out of a resumed run, read again what
    /// the run read since its last write; if anything changed, the run
    /// re-plans on fresh data and (`decisions`, the default) the approval
    /// stands if it reaches the same write through the same calls, or
    /// (`reads`) is void. `false` turns the check off.
    #[serde(default)]
    pub recheck: Recheck,
}

impl GateRule {
    pub fn bare(policy: Policy) -> GateRule {
        GateRule {
            policy,
            quorum: None,
            groups: Vec::new(),
            timeout: None,
            on_timeout: OnTimeout::Deny,
            escalate: Vec::new(),
            recheck: Recheck::Decisions,
        }
    }
}

/// What an approval request nobody decided in time means.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The write is denied (the safe default).
    #[default]
    Deny,
    /// The write goes ahead: for mitigations that must not wait forever
    /// (silence means consent).
    Approve,
}

/// One step of an escalation chain: after `after` undecided, page `page`;
/// from then on principals of `groups` may decide too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    #[serde(deserialize_with = "de_duration", serialize_with = "ser_duration")]
    pub after: Duration,
    /// A pager target (`[pager.targets.NAME]`).
    pub page: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A gate written as a bare policy string or as a table.
impl<'de> Deserialize<'de> for GateRuleOrPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = GateRuleOrPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\", \"approve\", \"deny\", or a table with `policy`")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Policy::deserialize(serde::de::value::StrDeserializer::<E>::new(text))
                    .map(|p| GateRuleOrPolicy(GateRule::bare(p)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                GateRule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(GateRuleOrPolicy)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// How [`GateRule`]s are read from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRuleOrPolicy(pub GateRule);
