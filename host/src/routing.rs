//! Which playbook answers an alert: routes from the config, tried in
//! order, each with Alertmanager-style matchers on the alert's labels
//! (`alertname` included): `label=value`, `label!=value`, `label=~regex`,
//! `label!~regex` (regexes anchored, as in Alertmanager). The first route
//! that matches wins, unless it says `continue`. It decides nothing else.

use std::fmt;

use crate::bindings::Alert;
use crate::gate::Mode;

/// One matcher on one label.
#[derive(Debug, Clone)]
pub struct Matcher {
    label: String,
    op: MatchOp,
    value: String,
    regex: Option<regex::Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl Matcher {
    /// `label=value`, `label!=value`, `label=~regex`, `label!~regex`; the
    /// value may be in double quotes.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let (label, op, value) = [("=~", MatchOp::Regex), ("!~", MatchOp::NotRegex), ("!=", MatchOp::NotEqual), ("=", MatchOp::Equal)]
            .iter()
            .find_map(|(sep, op)| text.split_once(sep).map(|(l, v)| (l, *op, v)))
            .ok_or_else(|| format!("`{text}` is not a matcher; write label=value, label!=value, label=~regex or label!~regex"))?;
        let label = label.trim();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{label}` in `{text}` is not a label name"));
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_owned();
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("`{value}` in `{text}` is not a regex: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher {
            label: label.to_owned(),
            op,
            value,
            regex,
        })
    }

    /// An absent label matches as the empty string, as in Alertmanager.
    pub fn matches(&self, alert: &Alert) -> bool {
        let value = alert
            .labels
            .iter()
            .find(|(k, _)| *k == self.label)
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            MatchOp::NotRegex => !self.regex.as_ref().is_some_and(|r| r.is_match(value)),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        };
        write!(f, "{}{op}{:?}", self.label, self.value)
    }
}

/// A route: where matching alerts go.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the config, for messages and metrics.
    pub index: usize,
    pub matchers: Vec<Matcher>,
    pub playbook: String,
    pub mode: Mode,
    /// Try the next routes too.
    pub continue_matching: bool,
    /// When the alert resolves, deny the run's pending approvals.
    pub cancel_on_resolved: bool,
    /// Runs start in step mode.
    pub step_mode: bool,
}

/// The routes an alert takes, in order.
pub fn routes_for<'a>(routes: &'a [Route], alert: &Alert) -> Vec<&'a Route> {
    let mut taken = Vec::new();
    for route in routes {
        if route.matchers.iter().all(|m| m.matches(alert)) {
            taken.push(route);
            if !route.continue_matching {
                break;
            }
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::AlertStatus;

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            name: "A".into(),
            status: AlertStatus::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: vec![],
            starts_at: None,
            fingerprint: None,
        }
    }

    fn route(index: usize, matchers: &[&str], continue_matching: bool) -> Route {
        Route {
            index,
            matchers: matchers
                .iter()
                .map(|m| Matcher::parse(m).unwrap())
                .collect(),
            playbook: format!("p{index}"),
            mode: Mode::DryRun,
            continue_matching,
            cancel_on_resolved: false,
            step_mode: false,
        }
    }

    #[test]
    fn matchers_work_as_in_alertmanager() {
        let a = alert(&[
            ("alertname", "ReconciliationDriftHigh"),
            ("severity", "critical"),
        ]);
        for (m, expected) in [
            ("alertname=ReconciliationDriftHigh", true),
            ("alertname=\"ReconciliationDriftHigh\"", true),
            ("severity!=warning", true),
            ("severity=~crit.*", true),
            ("severity=~crit", false),
            ("severity!~warn.*|info", true),
            ("team=", true),
            ("team!=", false),
        ] {
            assert_eq!(Matcher::parse(m).unwrap().matches(&a), expected, "{m}");
        }
        for bad in ["severity", "=x", "sev ity=x", "x=~("] {
            assert!(Matcher::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_match_wins_unless_it_continues() {
        let routes = [
            route(0, &["alertname=A"], true),
            route(1, &["severity=critical"], false),
            route(2, &[], false),
        ];
        let both = routes_for(
            &routes,
            &alert(&[("alertname", "A"), ("severity", "critical")]),
        );
        assert_eq!(both.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1]);
        let last = routes_for(&routes, &alert(&[("alertname", "B")]));
        assert_eq!(last.iter().map(|r| r.index).collect::<Vec<_>>(), [2]);
        assert!(routes_for(&routes[..2], &alert(&[("alertname", "B")])).is_empty());
    }
}
