//! `stepgate runs`, `show` and `audit`: reading what the state store
//! recorded. Only reads; prints text or JSON and picks the exit code.

use anyhow::Result;
use stepgate::inert::line;
use stepgate::{errln, outln};

use stepgate::config::Config;
use stepgate::report::{describe_call, exit};
use stepgate::state::StateStore;
use stepgate::state::runs::{Phase, RunRecord, StoredEntry};

use crate::UsageError;

fn store(config: &Config) -> Result<StateStore, UsageError> {
    Ok(config.state_store()?)
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Where `runs` and `show` read from: the state store, or a server.
pub enum Source<'a> {
    Local(&'a Config),
    Server(crate::remote::Remote),
}

pub async fn runs(
    source: Source<'_>,
    status: Option<&str>,
    limit: i64,
    json: bool,
) -> Result<u8, UsageError> {
    let runs: Vec<RunRecord> = match source {
        Source::Local(config) => store(config)?.runs(status, limit).await?,
        Source::Server(remote) => {
            let query = match status {
                Some(s) => format!("/api/runs?limit={limit}&status={s}"),
                None => format!("/api/runs?limit={limit}"),
            };
            serde_json::from_value(remote.get(&query).await?)?
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(exit::DONE);
    }
    if runs.is_empty() {
        outln!("no runs recorded");
    }
    for run in runs {
        let summary = run
            .outcome
            .as_ref()
            .and_then(|o| o.get("summary").or_else(|| o.get("error")))
            .and_then(|s| s.as_str())
            .unwrap_or("");
        outln!(
            "{}  {}  {:<8} {:<7} {:<28} {}",
            run.id,
            time(run.started_at),
            run.status,
            run.mode.as_str(),
            run.playbook,
            line(&summary.chars().take(60).collect::<String>())
        );
    }
    Ok(exit::DONE)
}

pub async fn show(source: Source<'_>, id: &str, json: bool) -> Result<u8, UsageError> {
    type Deciders = std::collections::BTreeMap<i64, Vec<String>>;
    let (run, journal, deciders): (RunRecord, Vec<StoredEntry>, Deciders) = match source {
        Source::Local(config) => {
            let store = store(config)?;
            let Some(run) = store.run(id).await? else {
                return Err(anyhow::anyhow!(
                    "no run `{id}` in the state store; `stepgate runs` lists them"
                )
                .into());
            };
            (run, store.journal(id).await?, store.deciders(id).await?)
        }
        Source::Server(remote) => {
            let shown = remote.get(&format!("/api/runs/{id}")).await?;
            (
                serde_json::from_value(shown["run"].clone())?,
                serde_json::from_value(shown["journal"].clone())?,
                serde_json::from_value(shown["deciders"].clone()).unwrap_or_default(),
            )
        }
    };
    if json {
        let document = serde_json::json!({ "run": run, "journal": journal, "deciders": deciders });
        outln!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(exit::DONE);
    }
    outln!(
        "run {} — {} ({}), started {} by {}",
        run.id,
        run.playbook,
        run.mode.as_str(),
        time(run.started_at),
        run.started_by
    );
    outln!("status: {}", run.status);
    let mut step = None;
    for stored in &journal {
        let entry = &stored.entry;
        if entry.step != step {
            step = entry.step.clone();
            if let Some(name) = &step {
                outln!("▶ {}", line(name));
            }
        }
        let (asked, answer) = describe_call(entry);
        let phase = match stored.phase {
            Phase::Done => "",
            Phase::Intended => " IN DOUBT (intended, never recorded as done)",
        };
        let by = deciders
            .get(&(entry.seq as i64))
            .map(|who| format!(" (by {})", who.join(", ")))
            .unwrap_or_default();
        outln!(
            "  #{:<3} {:<14} {:<6} {:<12} {asked} → {answer}{phase}{by}",
            entry.seq,
            entry.name(),
            entry.effect,
            entry.gate.as_str()
        );
    }
    if let Some(outcome) = &run.outcome {
        outln!("outcome: {}", serde_json::to_string(outcome)?);
    }
    Ok(exit::DONE)
}

pub async fn audit_verify(config: &Config) -> Result<u8, UsageError> {
    match store(config)?.verify_audit().await? {
        Ok(n) => {
            outln!("audit log intact: {n} records");
            Ok(exit::DONE)
        }
        Err(broken) => {
            errln!("audit log BROKEN at {broken}");
            Ok(exit::AUDIT_BROKEN)
        }
    }
}

pub async fn audit_export(config: &Config) -> Result<u8, UsageError> {
    for record in store(config)?.audit_records().await? {
        outln!("{}", serde_json::to_string(&record)?);
    }
    Ok(exit::DONE)
}
