//! A hostile playbook for the host's tests. The alert's `mode` label picks
//! the misbehaviour; every mode must end only this run, with a clear error.

use std::hint::black_box;

use stepgate_sdk::prelude::*;

struct Hostile;

impl Playbook for Hostile {
    fn describe() -> Description {
        Description::new("hostile", "0.0.1")
            .summary(
                "Misbehaves on purpose: loops, allocates, recurses, floods, oversteps its grants.",
            )
            .answers("Hostile")
            .db_read("plaza")
    }

    fn run(alert: Alert) -> Result<Outcome> {
        match alert.label("mode").unwrap_or("") {
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![0xAB; 1 << 20]));
                }
            }
            "recurse" => Ok(Outcome::new(format!("{}", recurse(black_box(u64::MAX))))),
            "call-flood" => loop {
                black_box(runbook::now_millis());
            },
            "ungranted-call" => {
                // Not granted in any test config: the host says not-granted.
                pager::page("ceo", Severity::Critical, "hostile", "should never arrive")?;
                Ok(Outcome::new("paged"))
            }
            "write-in-query" => {
                db::query("plaza", "DELETE FROM escrow_holds", params![])?;
                Ok(Outcome::new("deleted"))
            }
            "huge-result" => {
                // About 1 GiB of 1 KiB rows: the 4 MiB per-call limit stops
                // it after some 4000 rows, before the 10000-row cap.
                let rows = db::query(
                    "plaza",
                    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r LIMIT 1000000) \
                     SELECT i, printf('%.1000d', i) AS pad FROM r",
                    params![],
                )?;
                Ok(Outcome::new(format!("{} rows", rows.len())))
            }
            "every-capability" => Ok(every_capability()),
            "must-write" => {
                flags::set(
                    "PLAZA_TEST_FLAG",
                    "1",
                    "hostile test: a write it cannot do without",
                )?;
                Ok(Outcome::new("wrote"))
            }
            "panic" => panic!("the playbook panicked on purpose"),
            "give-up" => Err(Error::failed("nothing to be done")),
            "fine" => Ok(Outcome::new("all good")),
            // A sleep far past the deadline, through WASI.
            "std-sleep" => {
                std::thread::sleep(Duration::from_secs(100_000));
                Ok(Outcome::new("slept"))
            }
            // The standard library's clocks: the run's journaled time.
            "std-clock" => {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(-1, |d| d.as_millis() as i64);
                let started = std::time::Instant::now();
                let later = runbook::now_millis();
                Ok(Outcome::new("read the clock")
                    .field("wall_ms", wall)
                    .field("later_ms", later)
                    .field("elapsed_ms", started.elapsed().as_millis() as i64))
            }
            // For benchmarks: one host call, then done.
            "first-call" => {
                runbook::now_millis();
                Ok(Outcome::new("called once"))
            }
            // For benchmarks: `n` reads of a flag.
            "call-loop" => {
                let n = count(&alert);
                for _ in 0..n {
                    flags::get("BENCH_FLAG")?;
                }
                Ok(Outcome::new(format!("{n} calls")))
            }
            // For resume tests: a page, a sleep of `ms`, another page.
            "page-sleep-page" => {
                let ms: u64 = alert.label("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
                pager::page("ceo", Severity::Warning, "first page", "before the sleep")?;
                runbook::sleep(std::time::Duration::from_millis(ms))?;
                pager::page("ceo", Severity::Warning, "second page", "after the sleep")?;
                Ok(Outcome::new("paged twice"))
            }
            // For kill loops: `n` notices to `channel` (default `ops`),
            // `ms` apart, each naming its place in the run.
            "notify-loop" => {
                let n = count(&alert);
                let ms: u64 = alert.label("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
                let channel = alert.label("channel").unwrap_or("ops");
                for i in 1..=n {
                    pager::notify(channel, &format!("write {i} of {n}"))?;
                    runbook::sleep(std::time::Duration::from_millis(ms))?;
                }
                Ok(Outcome::new(format!("{n} notices")))
            }
            // For resume benchmarks: `n` flag reads, then a write that
            // needs approval.
            "call-loop-write" => {
                let n = count(&alert);
                for _ in 0..n {
                    flags::get("BENCH_FLAG")?;
                }
                flags::set("PLAZA_TEST_FLAG", "1", "benchmark: a write after the reads")?;
                Ok(Outcome::new(format!("{n} reads, one write")))
            }
            // `call-loop-write`, but the write's value is what the reads
            // found: a change in the world changes the write.
            "copy-write" => {
                let mut value = None;
                for _ in 0..count(&alert) {
                    value = flags::get("BENCH_FLAG")?;
                }
                let value = value.unwrap_or_default();
                flags::set("PLAZA_TEST_FLAG", &value, "copy what BENCH_FLAG says")?;
                Ok(Outcome::new(format!("copied {value:?}")))
            }
            // Reads one after the other, each failure ending the run.
            "reads" => {
                let a = flags::get("BENCH_A")?;
                let b = flags::get("BENCH_B")?;
                let block = rpc::call::<serde_json::Value>("base", "eth_blockNumber", ())?;
                Ok(Outcome::new(format!("read {a:?}, {b:?} at {block}")))
            }
            // A plan resting on an HTTP read: GET `path` on `endpoint`,
            // then the write behind its gate.
            "http-read-write" => {
                let endpoint = alert.label("endpoint").unwrap_or("admin");
                let read = http::get(endpoint, text(&alert, "path"))?;
                flags::set("PLAZA_TEST_FLAG", "1", "the HTTP read said so")?;
                Ok(Outcome::new(format!(
                    "read status {}, one write",
                    read.status
                )))
            }
            // For benchmarks: `n` runs of the `sql` annotation on `plaza`.
            "query-loop" => {
                let n = count(&alert);
                let sql = alert.annotation("sql").unwrap_or("SELECT 1");
                let mut rows = 0;
                for _ in 0..n {
                    rows += db::query("plaza", sql, params![])?.len();
                }
                Ok(Outcome::new(format!("{n} queries, {rows} rows")))
            }
            // For benchmarks: `n` eth_blockNumber calls on `base`.
            "rpc-loop" => {
                let n = count(&alert);
                for _ in 0..n {
                    rpc::call::<serde_json::Value>("base", "eth_blockNumber", ())?;
                }
                Ok(Outcome::new(format!("{n} calls")))
            }
            // Attacks, driven by the alert: what the call is comes from
            // labels and annotations, and the outcome's `result` says how
            // the host answered ("ok: …" or the error kind and message).
            "db-query" => {
                let answer = db::query(conn(&alert), text(&alert, "sql"), values(&alert))
                    .map(|rows| format!("{} rows", rows.len()));
                Ok(answered(answer))
            }
            "db-execute" => {
                let answer = db::execute(
                    conn(&alert),
                    text(&alert, "sql"),
                    values(&alert),
                    text(&alert, "reason"),
                )
                .map(|n| format!("{n} changed"));
                Ok(answered(answer))
            }
            "http" => {
                let endpoint = alert.label("endpoint").unwrap_or("admin");
                let path = text(&alert, "path");
                let method = alert.label("method").unwrap_or("POST");
                let answer = match (alert.annotation("header"), method) {
                    // A request with a header of the playbook's choosing
                    // (`Name: value`), through the raw interface.
                    (Some(header), _) => {
                        use stepgate_sdk::bindings::stepgate::playbook::rpc as raw;
                        let (name, value) = header.split_once(':').unwrap_or((header, ""));
                        raw::http(
                            endpoint,
                            &raw::HttpRequest {
                                method: method.to_owned(),
                                path: path.to_owned(),
                                headers: vec![(name.trim().to_owned(), value.trim().to_owned())],
                                body: Vec::new(),
                            },
                            text(&alert, "reason"),
                        )
                        .map(|r| http::Response {
                            status: r.status,
                            body: serde_json::Value::Null,
                            dry_run: false,
                        })
                    }
                    (None, "GET") => http::get(endpoint, path),
                    (None, _) => http::post(
                        endpoint,
                        path,
                        &serde_json::json!({ "from": "hostile" }),
                        text(&alert, "reason"),
                    ),
                }
                .map(|r| format!("status {}", r.status));
                Ok(answered(answer))
            }
            "flag-set" => {
                let answer = flags::set(
                    text(&alert, "name"),
                    text(&alert, "value"),
                    text(&alert, "reason"),
                )
                .map(|was| format!("was {was:?}"));
                Ok(answered(answer))
            }
            "notify" => {
                let channel = alert.label("channel").unwrap_or("ops");
                let answer =
                    pager::notify(channel, text(&alert, "text")).map(|()| "sent".to_owned());
                Ok(answered(answer))
            }
            // Shows hostile text everywhere a human reads a run: a step
            // name, a log line, the outcome's summary, field and checklist.
            "show" => {
                let shown = text(&alert, "text");
                step(shown, || runbook::info(shown));
                Ok(Outcome::new(shown)
                    .severity(shown)
                    .field(shown, shown)
                    .todo(shown))
            }
            // `n` bytes of SQL in one call: refused by size, never parsed.
            "big-args" => {
                let n: usize = alert
                    .label("n")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1 << 20);
                let sql = format!("SELECT '{}'", "x".repeat(n));
                Ok(answered(
                    db::query("plaza", &sql, params![]).map(|_| "ran".to_owned()),
                ))
            }
            // Steps and logs count as calls: this ends on the call limit.
            "step-flood" => loop {
                step("again", || runbook::debug("again"));
            },
            other => Err(Error::failed(format!("unknown mode `{other}`"))),
        }
    }
}

/// The `conn` label (default `plaza`).
fn conn(alert: &Alert) -> &str {
    alert.label("conn").unwrap_or("plaza")
}

/// An annotation, or "".
fn text<'a>(alert: &'a Alert, key: &str) -> &'a str {
    alert.annotation(key).unwrap_or("")
}

/// The `params` annotation: a JSON array of strings, integers and nulls.
fn values(alert: &Alert) -> Vec<Value> {
    let params: Vec<serde_json::Value> =
        serde_json::from_str(text(alert, "params")).unwrap_or_default();
    params
        .into_iter()
        .map(|p| match p {
            serde_json::Value::String(s) => Value::from(s),
            serde_json::Value::Number(n) => Value::from(n.as_i64().unwrap_or(0)),
            _ => Value::Null,
        })
        .collect()
}

/// The outcome of an attack: `result` is "ok: …" or the error.
fn answered(answer: Result<String>) -> Outcome {
    let result = match answer {
        Ok(what) => format!("ok: {what}"),
        Err(e) => kind(Err::<(), _>(e)),
    };
    Outcome::new("attacked").field("result", result)
}

fn kind<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::NotGranted(m)) => format!("not-granted: {m}"),
        Err(Error::Denied(m)) => format!("denied: {m}"),
        Err(Error::Invalid(m)) => format!("invalid: {m}"),
        Err(Error::Timeout(m)) => format!("timeout: {m}"),
        Err(Error::Backend(m)) => format!("backend: {m}"),
        Err(Error::Failed(m)) => format!("failed: {m}"),
    }
}

/// The `n` label of a benchmark mode (default 1000).
fn count(alert: &Alert) -> u32 {
    alert
        .label("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// Calls every operation of every interface once and reports, per call,
/// "ok" or the error kind, so a test can check scope and gate decisions.
fn every_capability() -> Outcome {
    fn kind<T>(r: Result<T>) -> String {
        match r {
            Err(Error::NotGranted(_)) => "not-granted".into(),
            Err(Error::Denied(_)) => "denied".into(),
            other => crate::kind(other),
        }
    }
    let reason = "hostile test: exercising the gate";
    Outcome::new("called everything")
        .field(
            "db.query",
            kind(db::query(
                "plaza",
                "SELECT COUNT(*) AS n FROM escrow_holds",
                params![],
            )),
        )
        .field(
            "db.execute",
            kind(db::execute(
                "plaza",
                "UPDATE escrow_holds SET state = 'released' WHERE order_id = ?1",
                params!["order:1003"],
                reason,
            )),
        )
        .field(
            "rpc.call",
            kind(rpc::call::<String>("base", "eth_blockNumber", ())),
        )
        .field(
            "rpc.send",
            kind(rpc::send::<serde_json::Value>(
                "base",
                "eth_sendRawTransaction",
                ["0xdead"],
                reason,
            )),
        )
        .field("flags.get", kind(flags::get("PLAZA_TEST_FLAG")))
        .field(
            "flags.set",
            kind(flags::set("PLAZA_TEST_FLAG", "1", reason)),
        )
        .field(
            "pager.page",
            kind(pager::page(
                "ceo",
                Severity::Warning,
                "gate test",
                "details",
            )),
        )
        .field("pager.notify", kind(pager::notify("incident", "gate test")))
        .field(
            "runbook.confirm",
            kind(
                runbook::confirm("Proceed with the test?")
                    .map(|yes| if yes { "yes" } else { "no" }),
            ),
        )
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        black_box(recurse(black_box(n - 1))).wrapping_add(1)
    }
}

stepgate_sdk::playbook!(Hostile);
