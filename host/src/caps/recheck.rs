//! The stale-plan check. An approval is given for a plan: the write, and
//! what the run had read when it asked. When a resumed run is about to make
//! an approved write, the reads since its last write are made again; if any
//! answers differently, the world moved while humans decided (the drift
//! closed, the job completed) and the approval is void: the run stops as
//! [`Stopped::Stale`] and is re-planned on fresh data (see `run::resume`).
//!
//! With `recheck = "decisions"` (the default), a changed read does not
//! void the approval by itself: the run re-plans, and if the fresh run puts
//! up the same write, with the same arguments, after the same calls, the
//! approval carries over to it (`StateStore::carry_over`); `"reads"` asks
//! again whenever a read changed.
//!
//! Only reads an earlier execution made are checked (one this execution
//! made, after a re-plan, is as fresh as a re-read), and only those that
//! were made and can be repeated exactly:
//! `db.query`, `flags.get`, `rpc.call` (read methods) and `rpc.http`
//! requests classed as reads (sent again with the method, path, headers
//! and body the journal holds; compared by status and body, since response
//! headers such as `Date` differ on every answer). A read that fails now
//! where it answered before counts as a change: the run re-plans and the
//! playbook meets the failure itself. `runbook.now`/`sleep` are not.

use serde_json::{Value as Json, json};

use super::{CallCtx, CapError};
use crate::backends::{BackendError, Backends};
use crate::bindings::Value;
use crate::bindings::stepgate::playbook::rpc::HttpRequest;
use crate::ending::Stopped;
use crate::gate::Decision;
use crate::gate::Effect;
use crate::journal::Entry;

impl CallCtx {
    /// Re-reads what the run read since its last write; `Ok(n)` with the
    /// number of reads checked when all answer as before.
    pub(super) async fn recheck_plan(&self, write_seq: u64) -> Result<u64, CapError> {
        let entries = self.journal.entries();
        let since = entries
            .iter()
            .rposition(Entry::is_write)
            .map_or(0, |i| i + 1);
        // Only what an earlier execution read: a read this one made (after
        // a re-plan) is as fresh as a re-read would be.
        let stored = self.journal.from_store().len().max(since);
        let mut checked = 0;
        for read in &entries[since..stored] {
            let Some(now) = reread(&self.backends, read, self.limits.result_bytes).await else {
                continue;
            };
            checked += 1;
            let was = compared(read, &read.result);
            let now = compared(read, &now);
            if now != was {
                return Err(Stopped::Stale {
                    seq: write_seq,
                    read: read.seq,
                    call: format!("{} {}", read.name(), read.args),
                    was: cut(&was),
                    now: cut(&now),
                }
                .into());
            }
        }
        Ok(checked)
    }
}

/// What of a read's journaled result the check compares: all of it, but
/// for an HTTP answer its status and body (response headers such as
/// `Date` or a request id differ on every answer).
fn compared(read: &Entry, result: &Json) -> Json {
    match (read.name().as_str(), result.get("ok")) {
        ("rpc.http", Some(ok)) => json!({
            "ok": { "status": ok.get("status"), "body": ok.get("body") }
        }),
        _ => result.clone(),
    }
}

fn cut(value: &Json) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Makes a journaled read again and returns its result as the journal
/// holds results (`{"ok": …}` or `{"err": …}`); `None` for a call that is
/// not re-checked.
async fn reread(backends: &Backends, entry: &Entry, limit: u64) -> Option<Json> {
    // Only reads that were made: one refused (out of scope, bad SQL) is not
    // made now either.
    if entry.effect != Effect::Read || entry.gate != Decision::Auto {
        return None;
    }
    let text = |key: &str| {
        entry
            .args
            .get(key)
            .and_then(Json::as_str)
            .map(str::to_owned)
    };
    let answer: Result<Json, BackendError> = match (entry.interface.as_str(), entry.op.as_str()) {
        ("db", "query") => {
            let (conn, sql) = (text("conn")?, text("sql")?);
            let params: Vec<Value> =
                serde_json::from_value(entry.args.get("params")?.clone()).ok()?;
            // Checked again as when it was made: the same statement, its
            // functions vetted in the engine again.
            match backends.db(&conn).and_then(|db| {
                let checked =
                    super::sql::check_read(db.dialect(), &sql).map_err(BackendError::Invalid)?;
                Ok((db, checked))
            }) {
                Ok((db, checked)) => db
                    .query(&sql, &params, &checked.functions, limit)
                    .await
                    .map(|rows| json!(rows)),
                Err(e) => Err(e),
            }
        }
        ("flags", "get") => {
            let name = text("name")?;
            match backends.flag_store(&name) {
                Ok(store) => store.get(&name).await.map(|v| json!(v)),
                Err(e) => Err(e),
            }
        }
        ("rpc", "call") => {
            let (endpoint, method) = (text("endpoint")?, text("method")?);
            let params: Json = serde_json::from_str(&text("params")?).ok()?;
            match backends.rpc(&endpoint) {
                Ok(rpc) => rpc
                    .call(entry.seq, &method, params, Effect::Read, limit)
                    .await
                    .map(|answered| json!(answered.value.to_string())),
                Err(e) => Err(e),
            }
        }
        ("rpc", "http") => {
            let body = text("body")?;
            if body.contains(char::REPLACEMENT_CHARACTER) {
                // Journaled lossily: what was sent cannot be sent again.
                return None;
            }
            let headers: Vec<(String, String)> =
                serde_json::from_value(entry.args.get("headers")?.clone()).ok()?;
            let request = HttpRequest {
                method: text("method")?,
                path: text("path")?,
                headers,
                body: body.into_bytes(),
            };
            match backends.rpc(&text("endpoint")?) {
                Ok(rpc) => rpc
                    .http(&request, Effect::Read, limit)
                    .await
                    .map(|answered| json!(answered.value)),
                Err(e) => Err(e),
            }
        }
        _ => return None,
    };
    Some(match answer {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "err": e.redacted(backends).into_wit() }),
    })
}
