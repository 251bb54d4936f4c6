//! The approval rule, a pure function of a request's decisions in the
//! order they were made: the first denial before the quorum denies; the
//! quorum of approvals before any denial approves; nothing decided after
//! that (a decision racing the settling one) changes it. Undecided past its
//! expiry, a request is denied, or approved if its rule says silence is
//! consent.

use serde::{Deserialize, Serialize};

use crate::gate::OnTimeout;

/// Where an approval request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending { approvals: u32, quorum: u32 },
    Approved { by: Vec<String> },
    Denied { by: String, reason: String },
}

/// One decision on a request, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cast {
    pub principal: String,
    pub approve: bool,
    pub reason: String,
}

/// Where a request with `decisions` (in the order made) stands at
/// `now_ms`, under its `quorum`, expiry and `on_timeout`.
pub fn settle(
    decisions: &[Cast],
    quorum: u32,
    expires_at: Option<i64>,
    on_timeout: OnTimeout,
    now_ms: i64,
) -> ApprovalStatus {
    let mut approvers = Vec::new();
    for decision in decisions {
        if !decision.approve {
            return ApprovalStatus::Denied {
                by: decision.principal.clone(),
                reason: decision.reason.clone(),
            };
        }
        approvers.push(decision.principal.clone());
        if approvers.len() as u64 >= u64::from(quorum) {
            return ApprovalStatus::Approved { by: approvers };
        }
    }
    match expires_at.filter(|at| now_ms > *at) {
        // The rule says silence is consent.
        Some(_) if on_timeout == OnTimeout::Approve => {
            approvers.push("timeout".to_owned());
            ApprovalStatus::Approved { by: approvers }
        }
        Some(expired) => ApprovalStatus::Denied {
            by: "timeout".to_owned(),
            reason: format!(
                "no decision before the approval expired ({} of {quorum} approvals at {})",
                approvers.len(),
                chrono::DateTime::from_timestamp_millis(expired)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ),
        },
        None => ApprovalStatus::Pending {
            approvals: approvers.len() as u32,
            quorum,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cast(principal: &str, approve: bool) -> Cast {
        Cast {
            principal: principal.into(),
            approve,
            reason: format!("{principal} says so"),
        }
    }

    fn approved(by: &[&str]) -> ApprovalStatus {
        ApprovalStatus::Approved {
            by: by.iter().map(|b| (*b).to_owned()).collect(),
        }
    }

    #[test]
    fn a_quorum_of_approvals_before_any_denial_approves() {
        let deny = OnTimeout::Deny;
        assert_eq!(
            settle(&[cast("a", true)], 2, None, deny, 0),
            ApprovalStatus::Pending {
                approvals: 1,
                quorum: 2
            }
        );
        let both = [cast("a", true), cast("b", true), cast("c", false)];
        assert_eq!(settle(&both, 2, None, deny, 0), approved(&["a", "b"]));
    }

    #[test]
    fn the_first_denial_before_the_quorum_denies() {
        let decisions = [cast("a", true), cast("b", false), cast("c", true)];
        assert_eq!(
            settle(&decisions, 2, None, OnTimeout::Deny, 0),
            ApprovalStatus::Denied {
                by: "b".into(),
                reason: "b says so".into()
            }
        );
    }

    #[test]
    fn an_expired_request_is_denied_unless_silence_is_consent() {
        let one = [cast("a", true)];
        let denied = settle(&one, 2, Some(10), OnTimeout::Deny, 11);
        assert!(
            matches!(&denied, ApprovalStatus::Denied { by, reason } if by == "timeout" && reason.contains("1 of 2 approvals")),
            "{denied:?}"
        );
        assert_eq!(
            settle(&one, 2, Some(10), OnTimeout::Approve, 11),
            approved(&["a", "timeout"])
        );
        // At its expiry it still waits; a quorum reached in time stands.
        assert!(matches!(
            settle(&one, 2, Some(10), OnTimeout::Deny, 10),
            ApprovalStatus::Pending { .. }
        ));
        let both = [cast("a", true), cast("b", true)];
        assert_eq!(
            settle(&both, 2, Some(10), OnTimeout::Deny, 99),
            approved(&["a", "b"])
        );
    }
}
