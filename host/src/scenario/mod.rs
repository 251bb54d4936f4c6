//! Scenarios: a playbook's regression tests, run offline in a dry run.
//!
//! A scenario file (`PLAYBOOK/scenarios/NAME.toml`) holds an alert, the
//! state of the outside world as answers to the reads the playbook makes,
//! and what the playbook is expected to decide: its outcome and the ordered
//! writes it plans. `stepgate test` runs every scenario against the
//! playbook's real grants and gates from the config, with [`world`] standing
//! in for every backend, so no real system is touched; [`check`] compares
//! what happened with what was expected and says how they differ.
//!
//! This module reads and finds scenario files; it runs nothing.

pub mod check;
pub mod from_journal;
pub mod run;
pub mod values;
pub mod world;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::bindings::{Alert, AlertStatus};

/// A scenario, loaded.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file it came from.
    pub path: PathBuf,
    /// The file's stem.
    pub name: String,
    /// The playbook (a name in the config) it tests.
    pub playbook: String,
    pub description: Option<String>,
    pub alert: Alert,
    /// What `runbook.now` answers first (ms since the epoch); sleeps move it.
    pub now_ms: i64,
    /// A dry run (the default: every write planned), or live: writes pass
    /// their gates, approvers decide as `[[approvals]]` says, and the world
    /// answers the writes too.
    pub mode: crate::gate::Mode,
    pub world: WorldSpec,
    pub expect: Option<Expect>,
}

/// The outside world, as answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldSpec {
    /// Answers to `db.query` (and the row counts of `db.execute` in a dry run).
    #[serde(default)]
    pub db: Vec<DbAnswer>,
    /// Answers to `rpc.call`.
    #[serde(default)]
    pub rpc: Vec<RpcAnswer>,
    /// Answers to `rpc.http`.
    #[serde(default)]
    pub http: Vec<HttpAnswer>,
    /// Flag values; a flag listed in `unset_flags` reads as unset.
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
    #[serde(default)]
    pub unset_flags: Vec<String>,
    /// Flags whose store fails when they are read (it does not answer).
    #[serde(default)]
    pub failing_flags: Vec<String>,
    /// Live scenarios: flags whose store refuses a write (reads answer).
    #[serde(default)]
    pub failing_flag_writes: Vec<String>,
    /// Live scenarios: what the approvers decide, write by write.
    #[serde(default)]
    pub approvals: Vec<ApprovalAnswer>,
    /// Live scenarios: pager targets and channels that fail.
    #[serde(default)]
    pub pager: PagerWorld,
}

impl WorldSpec {
    /// Adds the answers of a snippet a scenario run printed for a read it
    /// could not answer (a flag answer may be the bare `NAME = "…"` line).
    /// A snippet that does not parse adds nothing.
    pub fn answer_as(&mut self, snippet: &str) {
        let text = if snippet.starts_with('[') {
            snippet.to_owned()
        } else {
            format!("[flags]\n{snippet}")
        };
        let Ok(more) = toml::from_str::<WorldSpec>(&text) else {
            return;
        };
        self.db.extend(more.db);
        self.rpc.extend(more.rpc);
        self.http.extend(more.http);
        self.flags.extend(more.flags);
        self.approvals.extend(more.approvals);
    }
}

/// One approver's decision on a write of a live scenario, matched by
/// `interface.op` and, if given, target (flag, connection, endpoint, pager
/// target). A write whose gate needs a quorum takes that many approvals
/// by distinct `by`, each from one of the gate's `groups` when it names
/// some, as the real approval rule does; the first denial decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    pub call: String,
    pub target: Option<String>,
    pub decision: ApprovalDecision,
    /// The principal who decides.
    #[serde(default = "someone")]
    pub by: String,
    /// The principal's groups.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub reason: String,
}

fn someone() -> String {
    "an approver".to_owned()
}

/// What the approvers did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalDecision {
    Approve,
    Deny,
    /// Nobody decided in time.
    Timeout,
}

/// Pager sinks that fail.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerWorld {
    #[serde(default)]
    pub fail: Vec<String>,
}

/// One database answer, matched by connection, SQL (whitespace and a final
/// `;` do not matter) and parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbAnswer {
    pub conn: String,
    pub sql: String,
    #[serde(default)]
    pub params: Vec<toml::Value>,
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default)]
    pub rows: Vec<Vec<toml::Value>>,
    /// For a `db.execute`: the rows it would change.
    pub changed: Option<u64>,
    /// The database fails with this message instead.
    pub error: Option<String>,
}

/// One RPC answer, matched by endpoint, method and params.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcAnswer {
    pub endpoint: String,
    pub method: String,
    #[serde(default = "no_params")]
    pub params: toml::Value,
    /// The JSON-RPC `result`.
    pub result: Option<toml::Value>,
    /// The endpoint fails with this message instead.
    pub error: Option<String>,
}

fn no_params() -> toml::Value {
    toml::Value::Array(Vec::new())
}

/// One HTTP answer, matched by endpoint, method, path and query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAnswer {
    pub endpoint: String,
    pub method: String,
    /// The path; with `query` given, without a query string.
    pub path: String,
    /// The query parameters, decoded (`{ since = "2026-11-23T09:00:00Z" }`);
    /// matched whatever their order and encoding in the request.
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// The endpoint does not answer (connection refused, a timeout): the
    /// request fails with this message instead.
    pub error: Option<String>,
}

/// A request's path as an `[[http]]` answer gives it: the bare path, and
/// its query parameters decoded when it has a query string.
pub fn path_and_query(path: &str) -> (&str, Option<BTreeMap<String, String>>) {
    match path.split_once('?') {
        None => (path, None),
        Some((bare, query)) => (
            bare,
            Some(
                form_urlencoded::parse(query.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect(),
            ),
        ),
    }
}

impl HttpAnswer {
    /// Whether this answer is for `path` (the path and query string sent).
    pub fn answers(&self, path: &str) -> bool {
        let Some(query) = &self.query else {
            return self.path == path;
        };
        let (sent_path, sent_query) = path.split_once('?').unwrap_or((path, ""));
        let mut sent: Vec<(String, String)> = form_urlencoded::parse(sent_query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        sent.sort();
        let wanted: Vec<(String, String)> =
            query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.path == sent_path && sent == wanted
    }
}

fn ok_status() -> u16 {
    200
}

/// What the playbook must decide.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `done`, `failed`, `limit`, `crashed`; when given.
    pub status: Option<String>,
    pub severity: Option<String>,
    /// The outcome's summary, when given: what the on-call engineer reads
    /// first, so what it claims was done is pinned (exactly, or a part of
    /// it with `{ contains = "…" }`).
    pub summary: Option<TextMatch>,
    /// The outcome's checklist, when given: every item in order, or with
    /// `{ contains = ["…"] }` items each found in some item.
    pub checklist: Option<ListMatch>,
    /// Why the run did not finish (a `failed` playbook's message, a
    /// limit), when given: a refusal names what is missing.
    pub error: Option<String>,
    /// Every field of the outcome, when given.
    pub fields: Option<BTreeMap<String, toml::Value>>,
    /// Every step, in order, when given.
    pub steps: Option<Vec<String>>,
    /// Every write the run plans, in order (`[]` for none), when given.
    pub writes: Option<Vec<ExpectedWrite>>,
}

/// A text expected exactly, or a part of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TextMatch {
    Exact(String),
    Contains { contains: String },
}

impl TextMatch {
    /// The text, when it is expected word for word.
    pub fn exact(&self) -> Option<&str> {
        match self {
            TextMatch::Exact(text) => Some(text),
            TextMatch::Contains { .. } => None,
        }
    }

    pub fn matches(&self, got: &str) -> bool {
        match self {
            TextMatch::Exact(text) => got == text,
            TextMatch::Contains { contains } => got.contains(contains.as_str()),
        }
    }
}

/// A list expected item for item, or texts each found in some item.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ListMatch {
    Exact(Vec<String>),
    Contains { contains: Vec<String> },
}

/// A planned write: `interface.op` and its arguments as journaled, and in
/// a live scenario its gate decision (`auto`, `approved`, `denied`…).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedWrite {
    pub call: String,
    pub args: toml::Value,
    pub gate: Option<String>,
    /// In a dry run, the gate the write would meet live, as shown
    /// (`approve (quorum 2, group fiatrails-admin)`), when given.
    pub live: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertSpec {
    name: String,
    #[serde(default)]
    resolved: bool,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    fingerprint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    description: Option<String>,
    playbook: Option<String>,
    /// RFC 3339, e.g. "2026-11-23T09:00:00Z".
    now: Option<String>,
    /// `dry-run` (default) or `live`.
    mode: Option<String>,
    alert: Option<AlertSpec>,
    /// An Alertmanager payload or a single alert (JSON), relative to the file.
    alert_file: Option<PathBuf>,
    #[serde(flatten)]
    world: WorldSpec,
    expect: Option<Expect>,
}

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("scenario {path}: {message}")]
pub struct ScenarioError {
    pub path: String,
    pub message: String,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let error = |message: String| ScenarioError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let file: ScenarioFile = toml::from_str(&text).map_err(|e| error(e.to_string()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let playbook = match file.playbook {
            Some(p) => p,
            None => playbook_dir_name(path).ok_or_else(|| {
                error("name the playbook it tests (`playbook = \"NAME\"`): the file is not in PLAYBOOK/scenarios/".into())
            })?,
        };
        let alert = match (file.alert, file.alert_file) {
            (Some(spec), None) => alert_of(spec),
            (None, Some(rel)) => {
                let alert_path = path.parent().unwrap_or(Path::new(".")).join(rel);
                let payload = std::fs::read_to_string(&alert_path)
                    .map_err(|e| error(format!("alert_file {}: {e}", alert_path.display())))?;
                let alerts = crate::alert::parse(&payload)
                    .map_err(|e| error(format!("alert_file {}: {e}", alert_path.display())))?;
                crate::alert::pick(alerts)
                    .ok_or_else(|| error("alert_file holds no alert".into()))?
            }
            (Some(_), Some(_)) => {
                return Err(error("give `[alert]` or `alert_file`, not both".into()));
            }
            (None, None) => {
                return Err(error(
                    "no alert: add an `[alert]` table or `alert_file`".into(),
                ));
            }
        };
        let now_ms = match &file.now {
            Some(text) => chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|e| error(format!("now = {text:?} is not RFC 3339 ({e})")))?
                .timestamp_millis(),
            None => DEFAULT_NOW_MS,
        };
        let mode = match file.mode.as_deref() {
            None => crate::gate::Mode::DryRun,
            Some(text) => text
                .parse()
                .map_err(|_| error(format!("mode = {text:?}: use \"dry-run\" or \"live\"")))?,
        };
        for answer in &file.world.db {
            for value in answer.params.iter().chain(answer.rows.iter().flatten()) {
                values::from_toml(value)
                    .map_err(|e| error(format!("db answer `{}`: {e}", answer.sql)))?;
            }
            // A list is a parameter; no backend answers one in a row.
            if answer.rows.iter().flatten().any(|v| v.is_array()) {
                return Err(error(format!(
                    "db answer `{}`: a row's value is never a list (lists are parameters only)",
                    answer.sql
                )));
            }
        }
        Ok(Scenario {
            path: path.to_owned(),
            name,
            playbook,
            description: file.description,
            alert,
            now_ms,
            mode,
            world: file.world,
            expect: file.expect,
        })
    }
}

/// `runbook.now` when a scenario does not say: 2026-01-01T00:00:00Z.
pub const DEFAULT_NOW_MS: i64 = 1_767_225_600_000;

/// `PLAYBOOK` of `.../PLAYBOOK/scenarios/NAME.toml`.
fn playbook_dir_name(path: &Path) -> Option<String> {
    let dir = path.parent()?;
    if dir.file_name()? != "scenarios" {
        return None;
    }
    Some(dir.parent()?.file_name()?.to_string_lossy().into_owned())
}

fn alert_of(spec: AlertSpec) -> Alert {
    let mut labels: Vec<(String, String)> = spec.labels.into_iter().collect();
    if !labels.iter().any(|(k, _)| k == "alertname") {
        labels.push(("alertname".into(), spec.name.clone()));
        labels.sort();
    }
    Alert {
        name: spec.name,
        status: if spec.resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        labels,
        annotations: spec.annotations.into_iter().collect(),
        starts_at: spec.starts_at,
        fingerprint: spec.fingerprint,
    }
}

/// Every scenario file under `paths`: `*.toml` files in directories named
/// `scenarios`, or files given directly. Sorted, so runs are in one order.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_file() {
            found.push(path.clone());
            continue;
        }
        if !path.is_dir() {
            return Err(ScenarioError {
                path: path.display().to_string(),
                message: "no such file or directory".into(),
            });
        }
        walk(path, &mut found).map_err(|e| ScenarioError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    }
    found.sort();
    found.dedup();
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            // Build output and dependencies hold no scenarios.
            if name != "target" && name != "node_modules" && !name.starts_with('.') {
                walk(&path, found)?;
            }
        } else if name.ends_with(".toml")
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "scenarios")
        {
            found.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<Scenario, ScenarioError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drift/scenarios/case.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, body).unwrap();
        Scenario::load(&path)
    }

    #[test]
    fn the_playbook_is_the_folder_above_scenarios_and_the_alert_is_built() {
        let s = load("[alert]\nname = \"DriftHigh\"\nlabels = { wallet = \"0x1\" }\n").unwrap();
        assert_eq!((s.playbook.as_str(), s.name.as_str()), ("drift", "case"));
        assert_eq!(s.alert.name, "DriftHigh");
        assert!(
            s.alert
                .labels
                .contains(&("alertname".into(), "DriftHigh".into()))
        );
        assert_eq!(s.now_ms, DEFAULT_NOW_MS);
        assert!(s.expect.is_none());
    }

    #[test]
    fn a_bad_file_says_what_to_fix() {
        let err = load("description = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("no alert"), "{err}");
        let err = load(
            "[alert]\nname = \"A\"\n[[db]]\nconn = \"c\"\nsql = \"SELECT 1\"\nrows = [[1979-05-27T07:32:00Z]]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("SELECT 1") && err.contains("decimal"), "{err}");
        let err = load(
            "[alert]\nname = \"A\"\n[[db]]\nconn = \"c\"\nsql = \"SELECT 1\"\nrows = [[[1]]]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("never a list"), "{err}");
        // What an expectation leaves out is not compared, but a misspelt
        // key is not taken for a left-out one.
        assert!(load("[alert]\nname = \"A\"\n[expect]\nstatus = \"done\"\n").is_ok());
        let err = load("[alert]\nname = \"A\"\n[expect]\nwrite = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `write`"), "{err}");
        let err = load("now = \"yesterday\"\n[alert]\nname = \"A\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("RFC 3339"), "{err}");
        let err =
            load("[alert]\nname = \"A\"\n[[rpc]]\nendpoint = \"e\"\nmethod = \"m\"\nresut = 1\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("resut"), "{err}");
    }
}
