//! `stepgate doctor`: a config checked against the world it will run in,
//! one line per check, so a team can run it in CI and at every deploy.
//!
//! It opens and migrates the state store, opens each database connection
//! (and, where no playbook may write through it, checks that its role
//! cannot write), asks each RPC endpoint something harmless, checks each
//! flag store and pager sink can be reached without changing a flag or
//! telling anyone (a `HEAD` for webhooks), and loads each playbook's
//! component with its pin. It never runs a playbook, sets a flag, sends a
//! page or changes a backend's table; what it writes is what any start
//! writes (the state store's schema brought up to date) and a probe file
//! made and removed where a file sink or an envfile store writes. Every
//! text a backend returned is made inert and every secret masked before
//! it is shown.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::backends::{BackendError, Backends};
use crate::config::Config;
use crate::inert::line;
use crate::runtime::Runtime;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    /// Works, but something should change (an unpinned component).
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub verdict: Verdict,
    /// The config key checked: `state`, `db.plaza`, `playbooks.drift`.
    pub what: String,
    pub detail: String,
}

impl Check {
    fn new(verdict: Verdict, what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            verdict,
            what: what.into(),
            detail: detail.into(),
        }
    }

    fn of(what: impl Into<String>, result: Result<String, String>) -> Check {
        match result {
            Ok(detail) => Check::new(Verdict::Ok, what, detail),
            Err(detail) => Check::new(Verdict::Fail, what, detail),
        }
    }
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict == Verdict::Fail)
}

/// Runs every check of `config`.
pub async fn doctor(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let state = match config.state_store() {
        Ok(state) => Arc::new(state),
        Err(e) => {
            checks.push(Check::new(Verdict::Fail, "state", line(&e.to_string())));
            checks.extend(playbooks(config).await);
            return checks;
        }
    };
    checks.push(Check::of(
        "state",
        bounded(state.check())
            .await
            .map(|what| format!("{}: opened, schema up to date", line(&what)))
            .map_err(|e| line(&e).into_owned()),
    ));
    match Backends::from_config(config, state.clone()) {
        Ok(backends) => checks.extend(backends_of(config, &backends).await),
        Err(e) => checks.push(Check::new(Verdict::Fail, "backends", line(&e.to_string()))),
    }
    checks.extend(playbooks(config).await);
    checks
}

/// `future`, or a timeout error after [`CHECK_TIMEOUT`].
async fn bounded<T, E: std::fmt::Display>(
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, future).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

/// A backend's config key and what probing it found.
type Probed = (String, Result<String, String>);

/// One check per backend (one per URL of an RPC endpoint), all at once:
/// a dead host costs one timeout, not one per connection.
async fn backends_of(config: &Config, backends: &Backends) -> Vec<Check> {
    use futures_util::future::{BoxFuture, FutureExt, join_all};
    let shown = |result: Result<String, String>| {
        result
            .map(|t| line(&backends.redact(&t)).into_owned())
            .map_err(|t| line(&backends.redact(&t)).into_owned())
    };
    let inventory = backends.inventory();
    let mut probes: Vec<BoxFuture<'_, Vec<Probed>>> = Vec::new();
    for (name, db) in inventory.db {
        probes.push(
            async move {
                vec![(
                    format!("db.{name}"),
                    database(config, name, db.as_ref()).await,
                )]
            }
            .boxed(),
        );
    }
    for (name, rpc) in inventory.rpc {
        probes.push(
            async move {
                let answers = match tokio::time::timeout(CHECK_TIMEOUT, rpc.probe()).await {
                    Ok(answers) => answers,
                    Err(_) => vec![Err(BackendError::Timeout(format!(
                        "no answer within {CHECK_TIMEOUT:?}"
                    )))],
                };
                answers
                    .into_iter()
                    .map(|a| (format!("rpc.{name}"), a.map_err(|e| e.to_string())))
                    .collect()
            }
            .boxed(),
        );
    }
    for (name, flags) in inventory.flags {
        probes.push(
            async move { vec![(format!("flags.{name}"), bounded(flags.probe()).await)] }.boxed(),
        );
    }
    for (kind, sinks) in [
        ("pager.targets", inventory.targets),
        ("pager.channels", inventory.channels),
    ] {
        for (name, sink) in sinks {
            probes.push(
                async move { vec![(format!("{kind}.{name}"), bounded(sink.probe()).await)] }
                    .boxed(),
            );
        }
    }
    join_all(probes)
        .await
        .into_iter()
        .flatten()
        .map(|(what, result)| Check::of(what, shown(result)))
        .collect()
}

/// A connection answers; one no playbook may write through has a role
/// that cannot write.
async fn database(
    config: &Config,
    name: &str,
    db: &dyn crate::backends::Database,
) -> Result<String, String> {
    let answers = bounded(db.probe()).await?;
    let writers: BTreeSet<&str> = config
        .playbooks
        .iter()
        .filter(|(_, p)| p.grants.db.get(name).is_some_and(|g| g.write))
        .map(|(playbook, _)| playbook.as_str())
        .collect();
    let writable = bounded(db.writable_tables()).await?;
    match (writable, writers.is_empty()) {
        (None, _) => Ok(format!(
            "{answers} (SQLite has no roles: reads run in read-only transactions)"
        )),
        (Some(tables), true) if tables.is_empty() => Ok(format!(
            "{answers}; read-only, as no playbook may write through it"
        )),
        (Some(tables), true) => Err(format!(
            "{answers}, but its role can change {} table(s) ({}) and no playbook may write through it: connect as a read-only role (GRANT SELECT only)",
            tables.len(),
            listed(&tables)
        )),
        (Some(tables), false) => Ok(format!(
            "{answers}; its role can change {} table(s) ({}); {} may write through it",
            tables.len(),
            listed(&tables),
            writers.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The first few of `names`.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(", and {} more", names.len() - SHOWN));
    }
    text
}

/// Each playbook's component loads (its imports granted, its pin and
/// signature checked); an unpinned one is a warning with the pin to add.
async fn playbooks(config: &Config) -> Vec<Check> {
    if config.playbooks.is_empty() {
        return Vec::new();
    }
    let runtime = match Runtime::offline(config.clone()) {
        Ok(runtime) => runtime,
        Err(e) => return vec![Check::new(Verdict::Fail, "engine", line(&e.to_string()))],
    };
    let mut checks = Vec::new();
    for (name, playbook) in &config.playbooks {
        let what = format!("playbooks.{name}");
        if let Err(e) = runtime.playbook(name).await {
            checks.push(Check::new(Verdict::Fail, what, line(&e.to_string())));
            continue;
        }
        let check = match &playbook.sha256 {
            Some(pin) => Check::new(Verdict::Ok, what, format!("loads; pinned (sha256 {pin})")),
            None => {
                let path = config.resolve(&playbook.component);
                let actual = std::fs::read(&path)
                    .map(|bytes| crate::playbook::component_sha256(&bytes))
                    .unwrap_or_default();
                Check::new(
                    Verdict::Warn,
                    what,
                    format!(
                        "loads; not pinned: after reviewing it, add sha256 = \"{actual}\" under [playbooks.{name}]"
                    ),
                )
            }
        };
        checks.push(check);
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_is_cut() {
        let names: Vec<String> = (1..=7).map(|i| format!("t{i}")).collect();
        assert_eq!(listed(&names), "t1, t2, t3, t4, t5, and 2 more");
        assert_eq!(listed(&names[..2]), "t1, t2");
    }
}
