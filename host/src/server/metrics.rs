//! What `GET /metrics` shows, in the Prometheus text format: alerts by
//! route and outcome, runs by playbook and status with their duration,
//! capability calls by interface and result, gate decisions, guardrail
//! trips by rule, and the
//! approvals waiting (read from the state store when scraped).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::journal::Entry;
use crate::report::end_json;
use crate::run::RunReport;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub route: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    playbook: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaybookLabels {
    playbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    interface: String,
    op: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLabels {
    rule: String,
    playbook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GuardLabels {
    rule: String,
    over: String,
    mode: String,
}

pub struct Metrics {
    registry: Registry,
    alerts: Family<AlertLabels, Counter>,
    runs: Family<RunLabels, Counter>,
    duration: Family<PlaybookLabels, Histogram>,
    calls: Family<CallLabels, Counter>,
    gates: Family<GateLabels, Counter>,
    guardrails: Family<GuardLabels, Counter>,
    rate_counts: Family<RateLabels, Gauge>,
    rate_limits: Family<RateLabels, Gauge>,
    approvals_pending: Gauge,
    approvals_oldest: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("stepgate");
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alerts received, by route and what became of them",
            alerts.clone(),
        );
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs ended (or parked), by playbook and status",
            runs.clone(),
        );
        let duration = Family::<PlaybookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 4.0, 10))
        });
        registry.register(
            "run_duration_seconds",
            "Wall time of a run until it ended or parked",
            duration.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Capability calls, by interface, operation and result",
            calls.clone(),
        );
        let gates = Family::<GateLabels, Counter>::default();
        registry.register(
            "gate_decisions",
            "Gate decisions on capability calls",
            gates.clone(),
        );
        let guardrails = Family::<GuardLabels, Counter>::default();
        registry.register(
            "guardrail_trips",
            "Writes a guardrail escalated or denied (in a dry run: would have), by rule",
            guardrails.clone(),
        );
        let rate_counts = Family::<RateLabels, Gauge>::default();
        registry.register(
            "guardrail_live_runs",
            "Live runs a rate-limit guardrail counts now, by rule and playbook",
            rate_counts.clone(),
        );
        let rate_limits = Family::<RateLabels, Gauge>::default();
        registry.register(
            "guardrail_live_runs_limit",
            "The live runs a rate-limit guardrail allows in its window",
            rate_limits.clone(),
        );
        let approvals_pending = Gauge::default();
        registry.register(
            "approvals_pending",
            "Approval requests waiting for a decision",
            approvals_pending.clone(),
        );
        let approvals_oldest = Gauge::default();
        registry.register(
            "approvals_oldest_age_seconds",
            "Age of the oldest approval request waiting",
            approvals_oldest.clone(),
        );
        Metrics {
            registry,
            alerts,
            runs,
            duration,
            calls,
            gates,
            guardrails,
            rate_counts,
            rate_limits,
            approvals_pending,
            approvals_oldest,
        }
    }
}

impl Metrics {
    pub fn alert(&self, route: &str, outcome: &str) {
        self.alerts
            .get_or_create(&AlertLabels {
                route: route.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a run that ended or parked, and the calls it made this time.
    pub fn run(&self, report: &RunReport, seconds: f64, new_calls: &[Entry]) {
        let status = end_json(&report.end)["status"]
            .as_str()
            .unwrap_or("?")
            .to_owned();
        self.runs
            .get_or_create(&RunLabels {
                playbook: report.playbook.clone(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&PlaybookLabels {
                playbook: report.playbook.clone(),
            })
            .observe(seconds);
        for entry in new_calls {
            let result = if entry.result.get("ok").is_some() {
                "ok"
            } else {
                "error"
            };
            self.calls
                .get_or_create(&CallLabels {
                    interface: entry.interface.clone(),
                    op: entry.op.clone(),
                    result: result.to_owned(),
                })
                .inc();
            self.gates
                .get_or_create(&GateLabels {
                    decision: entry.gate.as_str().to_owned(),
                })
                .inc();
            for finding in &entry.guard {
                self.guardrails
                    .get_or_create(&GuardLabels {
                        rule: finding.rule.clone(),
                        over: finding.over.as_str().to_owned(),
                        mode: report.mode.as_str().to_owned(),
                    })
                    .inc();
            }
        }
    }

    /// The text exposition, with the approval gauges set to `pending`
    /// requests, the oldest `oldest_seconds` old.
    pub fn render(
        &self,
        pending: i64,
        oldest_seconds: i64,
        limits: &[crate::guard::LiveRunCount],
    ) -> String {
        for limit in limits {
            let labels = RateLabels {
                rule: limit.rule.clone(),
                playbook: limit.playbook.clone(),
            };
            self.rate_counts.get_or_create(&labels).set(limit.count);
            self.rate_limits.get_or_create(&labels).set(limit.limit);
        }
        self.approvals_pending.set(pending);
        self.approvals_oldest.set(oldest_seconds);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.push_str("# the metrics could not be encoded\n");
        }
        text
    }
}
