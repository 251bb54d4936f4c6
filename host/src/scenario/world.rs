//! The outside world of a scenario: backends that answer from the
//! scenario's answers and reach nothing. A read the scenario does not
//! answer fails back to the playbook and is noted with a snippet to paste
//! into the file, so the failure says exactly what is missing. Time starts
//! at the scenario's `now` and moves only when the playbook sleeps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;

use super::values::{from_toml, json_to_toml, to_toml, toml_to_json};
use super::{ApprovalDecision, Scenario, WorldSpec};
use crate::backends::http::Answered;
use crate::backends::{
    BackendError, Backends, Clock, Database, FlagStore, Page, PagerSink, RpcEndpoint,
};
use crate::bindings::Value;
use crate::bindings::stepgate::playbook::db::Rows;
use crate::bindings::stepgate::playbook::rpc::{HttpRequest, HttpResponse};
use crate::caps::sql::SqlDialect;
use crate::config::Config;
use crate::gate::{Approver, WriteRequest};
use crate::gate::{Effect, OnTimeout};
use crate::secret::Secret;

/// A read the scenario has no answer for, and what to add to the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Unanswered {
    pub call: String,
    pub snippet: String,
}

/// The scenario's answers, shared by its backends.
pub struct World {
    spec: WorldSpec,
    unanswered: Mutex<Vec<Unanswered>>,
    /// How often each (kind, first matching answer) was asked: several
    /// answers to the same question are given in order, the last one again
    /// once they run out (a balance read before and after waiting a block).
    asked: Mutex<std::collections::HashMap<(&'static str, usize), usize>>,
    /// Flags a live scenario has set.
    set_flags: Mutex<std::collections::BTreeMap<String, String>>,
    /// The `[[approvals]]` entries a decision used, by index.
    used_approvals: Mutex<std::collections::BTreeSet<usize>>,
    /// Entries of the scenario file the run showed to be wrong.
    mistakes: Mutex<Vec<String>>,
}

impl World {
    fn new(spec: WorldSpec) -> World {
        World {
            spec,
            unanswered: Mutex::new(Vec::new()),
            asked: Mutex::new(Default::default()),
            set_flags: Mutex::new(Default::default()),
            used_approvals: Mutex::new(Default::default()),
            mistakes: Mutex::new(Vec::new()),
        }
    }

    /// The answer to give among `matching` (indices of answers to the same
    /// question, in file order).
    fn next_of(&self, kind: &'static str, matching: &[usize]) -> Option<usize> {
        let first = *matching.first()?;
        let mut asked = self.asked.lock().ok()?;
        let n = asked.entry((kind, first)).or_insert(0);
        let pick = matching[(*n).min(matching.len() - 1)];
        *n += 1;
        Some(pick)
    }

    /// Reads the scenario asked for and had no answer to, in order.
    pub fn unanswered(&self) -> Vec<Unanswered> {
        self.unanswered
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    fn use_approval(&self, index: usize) {
        if let Ok(mut used) = self.used_approvals.lock() {
            used.insert(index);
        }
    }

    fn mistake(&self, what: String) {
        if let Ok(mut mistakes) = self.mistakes.lock() {
            mistakes.push(what);
        }
    }

    /// What is wrong in the scenario file besides unanswered reads: each
    /// decision the real approval rule would refuse, and each
    /// `[[approvals]]` entry the run never used (a decision nobody asked
    /// for tests nothing, and hides a write the playbook stopped making).
    pub fn mistakes(&self) -> Vec<String> {
        let mut mistakes = self.mistakes.lock().map(|m| m.clone()).unwrap_or_default();
        let used = self
            .used_approvals
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        for (i, a) in self.spec.approvals.iter().enumerate() {
            if !used.contains(&i) {
                let target = a
                    .target
                    .as_deref()
                    .map(|t| format!(" on `{t}`"))
                    .unwrap_or_default();
                mistakes.push(format!(
                    "[[approvals]] #{} ({}{target} by `{}`) was never used: the run asked for no such decision; remove it, or find why the playbook no longer reaches that write",
                    i + 1,
                    a.call,
                    a.by
                ));
            }
        }
        mistakes
    }

    /// The write `request` is not decided by the scenario: the entries to
    /// add, one per approval still needed.
    fn undecided(&self, request: &WriteRequest, approved_by: &[&str]) -> BackendError {
        let quorum = request.requirement.quorum.max(1) as usize;
        let groups = &request.requirement.groups;
        let mut snippet = Vec::new();
        let names = (1..).map(|n| format!("approver-{n}"));
        let fresh = names.filter(|n| !approved_by.contains(&n.as_str()));
        for by in fresh.take(quorum - approved_by.len().min(quorum)) {
            if !snippet.is_empty() {
                snippet.push(String::new());
            }
            snippet.push("[[approvals]]".to_owned());
            snippet.push(toml_line("call", toml::Value::String(request.op.clone())));
            snippet.push(toml_line(
                "target",
                toml::Value::String(request.target.clone()),
            ));
            snippet.push("decision = \"approve\"  # or deny, timeout".to_owned());
            if quorum > 1 {
                snippet.push(toml_line("by", toml::Value::String(by)));
            }
            if let Some(group) = groups.first() {
                snippet.push(toml_line(
                    "groups",
                    toml::Value::Array(vec![toml::Value::String(group.clone())]),
                ));
            }
        }
        let mut call = format!("an approval of {} on `{}`", request.op, request.target);
        if quorum > 1 {
            call.push_str(&format!(
                " (a quorum of {quorum} distinct approvers; {} so far)",
                approved_by.len()
            ));
        }
        self.missing(call, snippet.join("\n"))
    }

    fn missing(&self, call: String, snippet: String) -> BackendError {
        let message = format!("the scenario has no answer for {call}");
        if let Ok(mut u) = self.unanswered.lock() {
            u.push(Unanswered { call, snippet });
        }
        BackendError::Failed(message)
    }
}

/// SQL as matched: whitespace runs are one space, no final `;`.
pub fn normalise_sql(sql: &str) -> String {
    let joined = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.trim_end_matches(';').trim_end().to_owned()
}

/// `key = value` on one line, the value inline (`[{ to = "0x…" }]`, never
/// a `[[key]]` section, which would swallow the lines after it when
/// pasted into a scenario).
fn toml_line(key: &str, value: toml::Value) -> String {
    let mut table = toml::Table::new();
    table.insert(key.to_owned(), toml::Value::Boolean(true));
    let line = toml::to_string(&table).unwrap_or_default();
    let key = line.trim_end().strip_suffix("true").unwrap_or("");
    format!("{key}{value}")
}

/// The backends of a scenario: one per connection, endpoint, flag store and
/// pager sink the config names, all answering from `world`.
pub fn backends(config: &Config, scenario: &Scenario) -> (Backends, Arc<World>) {
    let world = Arc::new(World::new(scenario.world.clone()));
    let mut backends =
        Backends::default().with_clock(Arc::new(ScenarioClock(AtomicI64::new(scenario.now_ms))));
    for (name, db) in &config.db {
        let dialect = match &db.url {
            Secret::Inline(url) => crate::config::db_dialect(url).unwrap_or(SqlDialect::Postgres),
            // Not resolved offline: production databases are PostgreSQL.
            _ => SqlDialect::Postgres,
        };
        backends = backends.with_db(
            name,
            Arc::new(ScenarioDb {
                world: world.clone(),
                conn: name.clone(),
                dialect,
            }),
        );
    }
    for name in config.rpc.keys() {
        backends = backends.with_rpc(
            name,
            Arc::new(ScenarioRpc {
                world: world.clone(),
                endpoint: name.clone(),
            }),
        );
    }
    if !config.flags.is_empty() {
        backends = backends.with_flags("scenario", "*", Arc::new(ScenarioFlags(world.clone())));
    }
    for name in config.pager.targets.keys() {
        backends = backends.with_target(name, Arc::new(ScenarioPager(world.clone())));
    }
    for name in config.pager.channels.keys() {
        backends = backends.with_channel(name, Arc::new(ScenarioPager(world.clone())));
    }
    (backends, world)
}

/// The approvers of a live scenario: they decide as `[[approvals]]` says.
pub fn approver(world: Arc<World>) -> Arc<dyn Approver> {
    Arc::new(ScenarioApprover(world))
}

struct ScenarioApprover(Arc<World>);

#[async_trait::async_trait]
impl Approver for ScenarioApprover {
    /// Decides as the real approval rule does: the matching entries are
    /// taken in order, one decision each, until a denial (or a timeout)
    /// decides, or the quorum is met by distinct approvers. Several
    /// requests for the same write take the entries in order, the last
    /// ones again once they run out (a procedure whose operator confirms
    /// four steps and refuses the fifth). A decision the real rule would
    /// refuse (an approver outside the gate's groups, the same approver
    /// twice) fails the scenario, with what to write instead.
    async fn decide(&self, request: &WriteRequest) -> Result<(), String> {
        let world = &self.0;
        let matching: Vec<usize> = (world.spec.approvals.iter().enumerate())
            .filter(|(_, a)| {
                a.call == request.op && a.target.as_ref().is_none_or(|t| *t == request.target)
            })
            .map(|(i, _)| i)
            .collect();
        let requirement = &request.requirement;
        let quorum = requirement.quorum.max(1) as usize;
        // A scenario's time does not pass while a write waits: an entry
        // may be of any group the request would be escalated to.
        let groups = requirement.eligible_groups(i64::MAX);
        let mut approved_by: Vec<&str> = Vec::new();
        let mut taken = Vec::new();
        loop {
            // Once the entries have run out, the last ones decide again:
            // as many of them as the quorum takes.
            let next = world.next_of("approval", &matching).and_then(|i| {
                if taken.contains(&i) {
                    matching.iter().rev().copied().find(|j| !taken.contains(j))
                } else {
                    Some(i)
                }
            });
            let Some(i) = next else {
                return Err(world.undecided(request, &approved_by).to_string());
            };
            taken.push(i);
            world.use_approval(i);
            let a = &world.spec.approvals[i];
            if a.decision == ApprovalDecision::Timeout {
                // Nobody decided in time: the rule's `on_timeout` does.
                return match requirement.on_timeout {
                    OnTimeout::Approve => Ok(()),
                    OnTimeout::Deny => {
                        Err("denied by timeout: no decision before the approval expired".to_owned())
                    }
                };
            }
            let entry = || format!("[[approvals]] #{} ({} by `{}`)", i + 1, a.call, a.by);
            if !groups.is_empty() && !a.groups.iter().any(|g| groups.contains(g)) {
                world.mistake(format!(
                    "{}: this write is decided by a member of {}; `{}` is in none (give the entry `groups = [\"{}\"]`, the principal's groups)",
                    entry(),
                    groups.join(", "),
                    a.by,
                    groups[0]
                ));
                return Err(format!("`{}` may not decide this write", a.by));
            }
            if approved_by.contains(&a.by.as_str()) {
                // The server takes one decision per principal and refuses
                // a second one, an approval or a denial.
                world.mistake(format!(
                    "{}: `{}` decided this write already, and a principal decides a write once; a quorum of {quorum} needs {quorum} distinct approvers (give each entry its own `by`)",
                    entry(),
                    a.by
                ));
                return Err(format!("`{}` decided this write twice", a.by));
            }
            if a.decision == ApprovalDecision::Deny {
                return Err(format!("denied by {}: {}", a.by, a.reason));
            }
            approved_by.push(&a.by);
            if approved_by.len() >= quorum {
                return Ok(());
            }
        }
    }
}

/// Starts at the scenario's `now`; a sleep moves it at once.
struct ScenarioClock(AtomicI64);

#[async_trait::async_trait]
impl Clock for ScenarioClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    async fn sleep(&self, wait: Duration) {
        self.0.fetch_add(wait.as_millis() as i64, Ordering::SeqCst);
    }
}

struct ScenarioDb {
    world: Arc<World>,
    conn: String,
    dialect: SqlDialect,
}

impl ScenarioDb {
    fn answer(&self, sql: &str, params: &[Value]) -> Option<&super::DbAnswer> {
        let wanted = normalise_sql(sql);
        let matching: Vec<usize> = (self.world.spec.db.iter().enumerate())
            .filter(|(_, a)| {
                a.conn == self.conn
                    && normalise_sql(&a.sql) == wanted
                    && a.params.len() == params.len()
                    && a.params
                        .iter()
                        .zip(params)
                        .all(|(a, p)| from_toml(a).as_ref() == Ok(p))
            })
            .map(|(i, _)| i)
            .collect();
        let pick = self.world.next_of("db", &matching)?;
        self.world.spec.db.get(pick)
    }

    fn snippet(&self, sql: &str, params: &[Value], execute: bool) -> String {
        let mut lines = vec![
            "[[db]]".to_owned(),
            toml_line("conn", toml::Value::String(self.conn.clone())),
            toml_line("sql", toml::Value::String(normalise_sql(sql))),
            toml_line(
                "params",
                toml::Value::Array(params.iter().map(to_toml).collect()),
            ),
        ];
        if execute {
            lines.push("changed = 0  # the rows the statement would change".into());
        } else {
            lines.push("columns = []  # the column names".into());
            lines.push("rows = []     # one array of values a row".into());
        }
        lines.join("\n")
    }
}

#[async_trait::async_trait]
impl Database for ScenarioDb {
    fn dialect(&self) -> SqlDialect {
        self.dialect
    }

    async fn query(
        &self,
        sql: &str,
        params: &[Value],
        _functions: &[crate::sql_names::FunctionName],
        _max: u64,
    ) -> Result<Rows, BackendError> {
        let Some(answer) = self.answer(sql, params) else {
            let call = format!("db.query on `{}`: {}", self.conn, normalise_sql(sql));
            return Err(self.world.missing(call, self.snippet(sql, params, false)));
        };
        if let Some(message) = &answer.error {
            return Err(BackendError::Failed(message.clone()));
        }
        let rows = answer
            .rows
            .iter()
            .map(|row| row.iter().map(from_toml).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(BackendError::Invalid)?;
        Ok(Rows {
            columns: answer.columns.clone(),
            rows,
        })
    }

    /// A dry run's row count, or a live scenario's write: the same answer.
    async fn execute(
        &self,
        sql: &str,
        params: &[Value],
        _tables: &[String],
        _functions: &[crate::sql_names::FunctionName],
        _commit: crate::backends::Commit,
    ) -> Result<u64, BackendError> {
        match self.answer(sql, params) {
            Some(super::DbAnswer {
                error: Some(message),
                ..
            }) => Err(BackendError::Failed(message.clone())),
            Some(super::DbAnswer {
                changed: Some(n), ..
            }) => Ok(*n),
            _ => {
                let call = format!("db.execute on `{}`: {}", self.conn, normalise_sql(sql));
                Err(self.world.missing(call, self.snippet(sql, params, true)))
            }
        }
    }
}

struct ScenarioRpc {
    world: Arc<World>,
    endpoint: String,
}

#[async_trait::async_trait]
impl RpcEndpoint for ScenarioRpc {
    async fn probe(&self) -> Vec<Result<String, BackendError>> {
        vec![Ok("a scenario's answers".to_owned())]
    }
    async fn call(
        &self,
        _id: u64,
        method: &str,
        params: Json,
        _effect: Effect,
        _max: u64,
    ) -> Result<Answered<Json>, BackendError> {
        let matching: Vec<usize> = (self.world.spec.rpc.iter().enumerate())
            .filter(|(_, a)| {
                a.endpoint == self.endpoint
                    && a.method == method
                    && toml_to_json(&a.params) == params
            })
            .map(|(i, _)| i)
            .collect();
        let answer = self
            .world
            .next_of("rpc", &matching)
            .and_then(|i| self.world.spec.rpc.get(i));
        let via = "scenario".to_owned();
        match answer {
            Some(a) if a.error.is_some() => {
                Err(BackendError::Failed(a.error.clone().unwrap_or_default()))
            }
            Some(a) => Ok(Answered {
                value: a.result.as_ref().map(toml_to_json).unwrap_or(Json::Null),
                via,
            }),
            None => {
                let snippet = [
                    "[[rpc]]".to_owned(),
                    toml_line("endpoint", toml::Value::String(self.endpoint.clone())),
                    toml_line("method", toml::Value::String(method.to_owned())),
                    toml_line("params", json_to_toml(&params)),
                    "result = \"\"  # the JSON-RPC result".to_owned(),
                ]
                .join("\n");
                let call = format!("rpc.call {} {method} {params}", self.endpoint);
                Err(self.world.missing(call, snippet))
            }
        }
    }

    async fn http(
        &self,
        request: &HttpRequest,
        _effect: Effect,
        _max: u64,
    ) -> Result<Answered<HttpResponse>, BackendError> {
        let answer = self.world.spec.http.iter().find(|a| {
            a.endpoint == self.endpoint
                && a.method.eq_ignore_ascii_case(&request.method)
                && a.answers(&request.path)
        });
        match answer {
            Some(a) if a.error.is_some() => {
                Err(BackendError::Failed(a.error.clone().unwrap_or_default()))
            }
            Some(a) => Ok(Answered {
                value: HttpResponse {
                    status: a.status,
                    headers: a.headers.clone().into_iter().collect(),
                    body: a.body.clone().into_bytes(),
                },
                via: "scenario".to_owned(),
            }),
            None => {
                let mut snippet = vec![
                    "[[http]]".to_owned(),
                    toml_line("endpoint", toml::Value::String(self.endpoint.clone())),
                    toml_line("method", toml::Value::String(request.method.clone())),
                ];
                snippet.extend(path_lines(&request.path));
                snippet.push("status = 200".to_owned());
                snippet.push(
                    "body = \"\"  # the response body; or error = \"…\" for no answer".to_owned(),
                );
                let snippet = snippet.join("\n");
                let call = format!(
                    "rpc.http {} {} {}",
                    self.endpoint, request.method, request.path
                );
                Err(self.world.missing(call, snippet))
            }
        }
    }
}

/// The `path` (and `query`, decoded, when the request has a query string)
/// lines of an `[[http]]` answer for `path`.
fn path_lines(path: &str) -> Vec<String> {
    let (bare, query) = super::path_and_query(path);
    let mut lines = vec![toml_line("path", toml::Value::String(bare.to_owned()))];
    if let Some(query) = query {
        let query = query
            .into_iter()
            .map(|(k, v)| (k, toml::Value::String(v)))
            .collect();
        lines.push(toml_line("query", toml::Value::Table(query)));
    }
    lines
}

struct ScenarioFlags(Arc<World>);

#[async_trait::async_trait]
impl FlagStore for ScenarioFlags {
    async fn probe(&self) -> Result<String, BackendError> {
        Ok("a scenario's flags".to_owned())
    }
    async fn get(&self, name: &str) -> Result<Option<String>, BackendError> {
        if let Some(value) = self
            .0
            .set_flags
            .lock()
            .ok()
            .and_then(|f| f.get(name).cloned())
        {
            return Ok(Some(value));
        }
        if self.0.spec.failing_flags.iter().any(|f| f == name) {
            return Err(BackendError::Failed(format!(
                "the flag store does not answer for `{name}` (failing_flags in the scenario)"
            )));
        }
        if let Some(value) = self.0.spec.flags.get(name) {
            return Ok(Some(value.clone()));
        }
        if self.0.spec.unset_flags.iter().any(|f| f == name) {
            return Ok(None);
        }
        let line = toml_line(name, toml::Value::String(String::new()));
        // A second `[flags]` header would break a file that has one.
        let snippet = if self.0.spec.flags.is_empty() {
            format!("[flags]\n{line}  # or list it in unset_flags = [...]")
        } else {
            format!("{line}  # under the scenario's [flags], or list it in unset_flags = [...]")
        };
        Err(self.0.missing(format!("flags.get {name}"), snippet))
    }

    /// A live scenario's flag write: later reads see it.
    async fn set(&self, name: &str, value: &str) -> Result<Option<String>, BackendError> {
        let previous = self.get(name).await?;
        if self.0.spec.failing_flag_writes.iter().any(|f| f == name) {
            return Err(BackendError::Failed(format!(
                "the flag store refuses the write of `{name}` (failing_flag_writes in the scenario)"
            )));
        }
        if let Ok(mut set) = self.0.set_flags.lock() {
            set.insert(name.to_owned(), value.to_owned());
        }
        Ok(previous)
    }
}

/// A live scenario's pager: a page goes through unless the scenario makes
/// its target fail.
struct ScenarioPager(Arc<World>);

impl ScenarioPager {
    fn reach(&self, name: &str) -> Result<(), BackendError> {
        if self.0.spec.pager.fail.iter().any(|f| f == name) {
            return Err(BackendError::Failed(format!(
                "`{name}` cannot be reached (the scenario says so)"
            )));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl PagerSink for ScenarioPager {
    async fn probe(&self) -> Result<String, BackendError> {
        Ok("a scenario's pager".to_owned())
    }
    async fn page(&self, page: &Page<'_>) -> Result<String, BackendError> {
        self.reach(page.target)?;
        Ok(format!("page-{}", page.dedup_key))
    }

    async fn notify(&self, channel: &str, _: &str, _: &str) -> Result<(), BackendError> {
        self.reach(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_line_keeps_its_value_inline() {
        let params = toml::Value::Array(vec![toml::Value::Table(toml::Table::from_iter([(
            "to".to_owned(),
            toml::Value::String("0x5f".into()),
        )]))]);
        let line = toml_line("params", params);
        assert_eq!(line, r#"params = [{ to = "0x5f" }]"#);
        let hint = format!("[[rpc]]\n{line}\nresult = \"\"\n");
        let parsed: toml::Table = toml::from_str(&hint).unwrap();
        let rpc = &parsed["rpc"][0];
        assert!(
            rpc.get("result").is_some(),
            "result stays in the [[rpc]] entry"
        );
        assert_eq!(toml_line("a.b", toml::Value::Integer(1)), r#""a.b" = 1"#);
    }

    #[test]
    fn sql_matches_whatever_its_layout() {
        assert_eq!(
            normalise_sql("SELECT held\n   FROM balances\tWHERE id = ?1 ;\n"),
            "SELECT held FROM balances WHERE id = ?1"
        );
    }

    #[tokio::test]
    async fn answers_to_one_question_come_in_order_then_the_last_again() {
        let answer = |n: i64| super::super::DbAnswer {
            conn: "ledger".into(),
            sql: "SELECT n FROM t".into(),
            params: vec![],
            columns: vec!["n".into()],
            rows: vec![vec![toml::Value::Integer(n)]],
            changed: None,
            error: None,
        };
        let world = Arc::new(World::new(WorldSpec {
            db: vec![answer(1), answer(2)],
            ..WorldSpec::default()
        }));
        let db = ScenarioDb {
            world: world.clone(),
            conn: "ledger".into(),
            dialect: SqlDialect::Sqlite,
        };
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                db.query("SELECT n  FROM t", &[], &[], 1 << 20)
                    .await
                    .unwrap()
                    .rows[0][0]
                    .clone(),
            );
        }
        assert_eq!(got, [Value::Int(1), Value::Int(2), Value::Int(2)]);
        let missing = db.query("SELECT other FROM t", &[], &[], 1 << 20).await;
        assert!(matches!(missing, Err(BackendError::Failed(m)) if m.contains("no answer")));
        assert_eq!(world.unanswered().len(), 1);
        assert!(
            world.unanswered()[0]
                .snippet
                .contains("sql = \"SELECT other FROM t\"")
        );
    }

    fn world(flags: &[(&str, &str)]) -> Arc<World> {
        Arc::new(World::new(super::super::WorldSpec {
            flags: flags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }))
    }

    fn approvals(entries: &str) -> Arc<World> {
        let spec: WorldSpec = toml::from_str(entries).unwrap();
        Arc::new(World::new(spec))
    }

    fn write_needing(quorum: u32, groups: &[&str]) -> WriteRequest {
        WriteRequest {
            run_id: "scenario-x".into(),
            seq: 3,
            playbook: "p".into(),
            op: "flags.set".into(),
            target: "KILL".into(),
            finer: Vec::new(),
            detail: String::new(),
            reason: "because".into(),
            requirement: crate::gate::Requirement {
                quorum,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                ..Default::default()
            },
            plan: String::new(),
            plan_digest: String::new(),
            findings: Vec::new(),
        }
    }

    fn entry(decision: &str, by: &str, groups: &str) -> String {
        format!(
            "[[approvals]]\ncall = \"flags.set\"\ndecision = \"{decision}\"\nby = \"{by}\"\ngroups = [{groups}]\n"
        )
    }

    /// A scenario decides a write as the approval rule does: a quorum
    /// takes that many distinct approvers of the gate's groups, the first
    /// denial decides, and what the rule would refuse fails the scenario.
    #[tokio::test]
    async fn scenario_approvals_follow_quorum_and_groups() {
        let admins = "\"admins\"";
        let quorum_two = write_needing(2, &["admins"]);
        let decide = async |entries: &str, request: &WriteRequest| {
            let world = approvals(entries);
            let decided = ScenarioApprover(world.clone()).decide(request).await;
            (decided, world)
        };

        // Two distinct admins: approved, every entry used.
        let two = [
            entry("approve", "ann", admins),
            entry("approve", "bob", admins),
        ]
        .concat();
        let (decided, world) = decide(&two, &quorum_two).await;
        assert_eq!(decided, Ok(()));
        assert!(world.mistakes().is_empty(), "{:?}", world.mistakes());

        // A second request for the same write: the last two decide again.
        let world = approvals(&two);
        let approver = ScenarioApprover(world.clone());
        assert_eq!(approver.decide(&quorum_two).await, Ok(()));
        assert_eq!(approver.decide(&quorum_two).await, Ok(()));

        // One approval of two: undecided, with the entry still needed.
        let (decided, world) = decide(&entry("approve", "ann", admins), &quorum_two).await;
        assert!(decided.is_err());
        let missing = &world.unanswered()[0];
        assert!(
            missing.call.contains("quorum of 2") && missing.call.contains("1 so far"),
            "{missing:?}"
        );
        let pasted: WorldSpec = toml::from_str(&format!(
            "{}\n{}",
            entry("approve", "ann", admins),
            missing.snippet
        ))
        .unwrap_or_else(|e| panic!("{}: {e}", missing.snippet));
        assert_eq!(pasted.approvals.len(), 2);
        assert_ne!(pasted.approvals[1].by, "ann");
        assert_eq!(pasted.approvals[1].groups, ["admins"]);

        // An approval then a denial: denied.
        let approve_deny = [
            entry("approve", "ann", admins),
            entry("deny", "bob", admins),
        ]
        .concat();
        let (decided, _) = decide(&approve_deny, &quorum_two).await;
        assert!(decided.unwrap_err().contains("denied by bob"));

        // The same approver twice, or one outside the groups: the scenario is wrong.
        let twice = [
            entry("approve", "ann", admins),
            entry("approve", "ann", admins),
        ]
        .concat();
        let (decided, world) = decide(&twice, &quorum_two).await;
        assert!(decided.is_err());
        assert!(
            world.mistakes()[0].contains("distinct approvers"),
            "{:?}",
            world.mistakes()
        );
        let outsider = [
            entry("approve", "ann", admins),
            entry("approve", "eve", "\"ops\""),
        ]
        .concat();
        let (decided, world) = decide(&outsider, &quorum_two).await;
        assert!(decided.is_err());
        assert!(
            world.mistakes()[0].contains("`eve` is in none"),
            "{:?}",
            world.mistakes()
        );

        // One principal approving, then denying: the server refuses the
        // second decision, so the scenario is wrong.
        let changed_mind = [
            entry("approve", "ann", admins),
            entry("deny", "ann", admins),
        ]
        .concat();
        let (decided, world) = decide(&changed_mind, &quorum_two).await;
        assert!(decided.unwrap_err().contains("twice"));
        assert!(
            world.mistakes()[0].contains("decides a write once"),
            "{:?}",
            world.mistakes()
        );

        // A timeout follows the rule's `on_timeout`, whoever the entry
        // names; a timeout entry needs no group.
        let timeout = entry("timeout", "", "");
        let (decided, _) = decide(&timeout, &quorum_two).await;
        assert!(decided.unwrap_err().contains("denied by timeout"));
        let mut consent = write_needing(2, &["admins"]);
        consent.requirement.on_timeout = OnTimeout::Approve;
        let (decided, world) = decide(&timeout, &consent).await;
        assert_eq!(decided, Ok(()));
        assert!(world.mistakes().is_empty(), "{:?}", world.mistakes());

        // The groups an escalation pages may decide too.
        let mut escalated = write_needing(1, &["admins"]);
        escalated.requirement.escalate = vec![crate::gate::Escalation {
            after: Duration::from_secs(600),
            page: "leads".into(),
            groups: vec!["leads".into()],
        }];
        let (decided, world) = decide(&entry("approve", "lee", "\"leads\""), &escalated).await;
        assert_eq!(decided, Ok(()));
        assert!(world.mistakes().is_empty(), "{:?}", world.mistakes());

        // Quorum one: an approve then a deny approves, and the deny, never
        // used, fails the scenario.
        let (decided, world) = decide(&approve_deny, &write_needing(1, &[])).await;
        assert_eq!(decided, Ok(()));
        let mistakes = world.mistakes();
        assert_eq!(mistakes.len(), 1, "{mistakes:?}");
        assert!(
            mistakes[0].contains("#2") && mistakes[0].contains("never used"),
            "{mistakes:?}"
        );
    }

    /// An `[[http]]` answer matches a query string by its decoded
    /// parameters in any order, and `error` fails the request as a
    /// connection would; the snippet for an unanswered request gives its
    /// query decoded, and pasted, answers it.
    #[tokio::test]
    async fn http_answers_match_queries_and_fail_on_error() {
        let world = approvals(
            r#"
[[http]]
endpoint = "queue"
method = "GET"
path = "/jobs"
query = { state = "failed", since = "2026-11-23T09:00:00Z" }
body = "3"

[[http]]
endpoint = "queue"
method = "GET"
path = "/health"
error = "connection refused"
"#,
        );
        let rpc = ScenarioRpc {
            world: world.clone(),
            endpoint: "queue".into(),
        };
        let get = |path: &str| HttpRequest {
            method: "get".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let answered = rpc
            .http(
                &get("/jobs?since=2026-11-23T09%3A00%3A00Z&state=failed"),
                Effect::Read,
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(answered.value.body, b"3");
        let failed = rpc.http(&get("/health"), Effect::Read, 1 << 20).await;
        assert!(matches!(failed, Err(BackendError::Failed(m)) if m == "connection refused"));
        // Another parameter value: not this answer.
        let other = get("/jobs?since=2026-11-23T09%3A00%3A00Z&state=done");
        assert!(rpc.http(&other, Effect::Read, 1 << 20).await.is_err());
        let snippet = &world.unanswered()[0].snippet;
        let pasted: WorldSpec =
            toml::from_str(snippet).unwrap_or_else(|e| panic!("{snippet}: {e}"));
        assert_eq!(pasted.http[0].path, "/jobs");
        assert!(pasted.http[0].answers(&other.path), "{snippet}");
    }

    /// The snippet for a flag the scenario does not answer, pasted as
    /// shown at the end of the file, answers it: with a `[flags]` table of
    /// its own when the file has none, as a line of that table when it has.
    #[tokio::test]
    async fn a_missing_flag_snippet_pastes_into_the_file_as_shown() {
        let alert = "[alert]\nname = \"A\"\n";
        for (flags, file) in [
            (Vec::new(), alert.to_owned()),
            (
                vec![("KNOWN", "on")],
                format!("{alert}\n[flags]\nKNOWN = \"on\"\n"),
            ),
        ] {
            let world = world(&flags);
            assert!(ScenarioFlags(world.clone()).get("MISSING").await.is_err());
            let snippet = &world.unanswered()[0].snippet;
            let pasted: toml::Table = format!("{file}\n{snippet}\n")
                .parse()
                .unwrap_or_else(|e| panic!("{file}\n{snippet}\n: {e}"));
            assert_eq!(pasted["flags"]["MISSING"].as_str(), Some(""), "{pasted}");
        }
    }
}
