//! A hostile playbook against the wall: the `hostile` guest, driven by its
//! alert, attacks every class of issue #15 (SQL the checker and the engine
//! read differently, side writes through functions and triggers, tables of
//! another schema, session state left behind, HTTP paths that leave their
//! route, redirects, oversized arguments, text that takes over a terminal
//! or a Slack channel). Each case asserts the answer the playbook got
//! (`invalid` or `not-granted`) and, from outside, that the backend did
//! not change: row counts, locks, session settings, requests received.
//! Every database case runs on a file-backed SQLite and on a real
//! PostgreSQL cluster started on loopback.

use std::sync::Arc;

use stepgate::backends::Database;
use stepgate::bindings::Value;
use stepgate::gate::Mode;
use stepgate::run::{LimitExceeded, RunEnd, RunReport};
use stepgate::runtime::Runtime;
use stepgate::server::Server;
use stepgate_tests::receiver::{Receiver, Reply};
use stepgate_tests::servers::PgServer;
use stepgate_tests::{Setup, Store as Kind, alert, field, run_unattended};

const SQLITE_SCHEMA: &str = "
CREATE TABLE escrow_holds (id INTEGER PRIMARY KEY, order_id TEXT NOT NULL, state TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, account TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE TRIGGER hold_audit AFTER DELETE ON escrow_holds
BEGIN INSERT INTO ledger_entries (account, amount) VALUES ('trigger', 1); END;
INSERT INTO escrow_holds (id, order_id, state, amount) VALUES (1, 'order:1', 'held', 5), (2, 'order:2', 'held', 7);
INSERT INTO ledger_entries (account, amount) VALUES ('hot', 12), ('cold', 30);
";

const PG_SCHEMA: &str = "
CREATE TABLE escrow_holds (id SERIAL PRIMARY KEY, order_id TEXT NOT NULL, state TEXT NOT NULL, amount BIGINT NOT NULL);
CREATE TABLE ledger_entries (id SERIAL PRIMARY KEY, account TEXT NOT NULL, amount BIGINT NOT NULL);
CREATE SCHEMA archive;
CREATE TABLE archive.escrow_holds (id INT PRIMARY KEY, state TEXT NOT NULL);
INSERT INTO archive.escrow_holds VALUES (1, 'held');
CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS $$ INSERT INTO ledger_entries (account, amount) VALUES ('evil', 1) RETURNING 1 $$;
CREATE FUNCTION \"it's évil\"() RETURNS int LANGUAGE sql AS $$ INSERT INTO ledger_entries (account, amount) VALUES ('quoted', 1) RETURNING 1 $$;
CREATE FUNCTION public.random(n int) RETURNS int LANGUAGE sql AS $$ INSERT INTO ledger_entries (account, amount) VALUES ('random', n) RETURNING n $$;
CREATE FUNCTION archive.coalesce(n int) RETURNS int LANGUAGE sql AS $$ INSERT INTO ledger_entries (account, amount) VALUES ('coalesce', n) RETURNING n $$;
CREATE FUNCTION mark() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ledger_entries (account, amount) VALUES ('trigger', 1); RETURN NEW; END $$;
CREATE TRIGGER hold_audit AFTER UPDATE ON escrow_holds FOR EACH ROW WHEN (NEW.state = 'trigger') EXECUTE FUNCTION mark();
CREATE CONSTRAINT TRIGGER hold_later AFTER UPDATE ON escrow_holds DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.state = 'deferred') EXECUTE FUNCTION mark();
CREATE TABLE hold_notes (hold_id INT REFERENCES escrow_holds (id) ON DELETE CASCADE, note TEXT);
CREATE TABLE events (id INT, kind TEXT, year INT) PARTITION BY LIST (year);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES IN (2026);
INSERT INTO events VALUES (1, 'x', 2026);
CREATE TABLE archive_log (id SERIAL PRIMARY KEY, hold_id INT, state TEXT);
CREATE TABLE logs (id INT, year INT, q INT) PARTITION BY LIST (year);
CREATE TABLE logs_2026 PARTITION OF logs FOR VALUES IN (2026) PARTITION BY LIST (q);
CREATE TABLE logs_2026_q1 PARTITION OF logs_2026 FOR VALUES IN (1);
INSERT INTO logs VALUES (1, 2026, 1);
CREATE FUNCTION share() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN GRANT SELECT ON scratch TO PUBLIC; RETURN NEW; END $$;
CREATE TRIGGER hold_share AFTER UPDATE ON escrow_holds FOR EACH ROW WHEN (NEW.state = 'grant') EXECUTE FUNCTION share();
CREATE TABLE scratch (n INT);
INSERT INTO scratch VALUES (1), (2);
CREATE FUNCTION wipe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN TRUNCATE scratch; RETURN NEW; END $$;
CREATE TRIGGER hold_wipe AFTER UPDATE ON escrow_holds FOR EACH ROW WHEN (NEW.state = 'truncate') EXECUTE FUNCTION wipe();
INSERT INTO escrow_holds (order_id, state, amount) VALUES ('order:1', 'held', 5), ('order:2', 'held', 7);
INSERT INTO ledger_entries (account, amount) VALUES ('hot', 12), ('cold', 30);
";

struct Target {
    setup: Setup,
    runtime: Runtime,
    // Dropped last: stops the cluster.
    pg: Option<PgServer>,
}

/// A `plaza` database of `kind` (file-backed SQLite, or PostgreSQL), a
/// `hostile` playbook that may write `escrow_holds` only, a `reader` that
/// may only read, and an HTTP endpoint `admin` at `admin_url`.
fn target(kind: Kind, admin_url: &str) -> Target {
    let pg = (kind == Kind::Postgres).then(PgServer::start);
    let (url, schema) = match &pg {
        Some(pg) => (pg.url("postgres"), PG_SCHEMA),
        None => ("sqlite://ledger.db".to_owned(), SQLITE_SCHEMA),
    };
    let setup = Setup::new(&format!(
        r#"
[limits]
deadline = "20s"
argument_bytes = "64KiB"

[state]
path = "state.db"

[db.plaza]
url = "{url}"
fixture_sql = ["schema.sql"]

[rpc.admin]
kind = "http"
urls = ["{admin_url}"]
routes = ["POST /admin/x", "GET /health", "GET /search?*"]
headers = {{ "x-api-key" = "admin-secret" }}

[flags.plaza]
kind = "builtin"
names = ["PLAZA_*"]

[pager.channels.ops]
kind = "slack"
url = "{admin_url}/slack"

[playbooks.hostile]
component = "{component}"
gates = {{ default = "auto" }}
grants.db.plaza = {{ write = true, tables = ["escrow_holds"] }}
grants.rpc.admin.routes = ["POST /admin/x", "GET /health", "GET /search?*"]
grants.flags = {{ write = ["PLAZA_*"] }}
grants.pager = {{ channels = ["ops"] }}

[playbooks.reader]
component = "{component}"
grants.db.plaza = {{}}
"#,
        component = stepgate_artifacts::HOSTILE,
    ));
    std::fs::write(setup.path("schema.sql"), schema).unwrap();
    let runtime = setup.runtime();
    Target { setup, runtime, pg }
}

impl Target {
    async fn attack(
        &self,
        playbook: &str,
        mode: &str,
        labels: &[(&str, &str)],
        notes: &[(&str, &str)],
    ) -> RunReport {
        let mut all = vec![("mode", mode)];
        all.extend_from_slice(labels);
        run_unattended(
            &self.runtime,
            playbook,
            alert("Hostile", &all, notes),
            Mode::Live,
        )
        .await
    }

    /// The answer the playbook got for one statement.
    async fn sql(&self, playbook: &str, mode: &str, sql: &str) -> String {
        let notes = [("sql", sql), ("reason", "hostile test")];
        let report = self.attack(playbook, mode, &[], &notes).await;
        let result = field(&report, "result");
        result.as_str().unwrap_or_default().to_owned()
    }

    async fn db(&self) -> Arc<dyn Database> {
        self.runtime.backends.db("plaza").unwrap()
    }

    /// Rows of `table`, read from outside the playbook.
    async fn count(&self, table: &str) -> i64 {
        let rows = self
            .db()
            .await
            .query(&format!("SELECT COUNT(*) FROM {table}"), &[], &[], 1 << 20)
            .await
            .unwrap();
        match rows.rows[0][0] {
            Value::Int(n) => n,
            ref other => panic!("count is {other:?}"),
        }
    }

    async fn states(&self) -> Vec<Value> {
        let rows = self
            .db()
            .await
            .query(
                "SELECT state FROM escrow_holds ORDER BY id",
                &[],
                &[],
                1 << 20,
            )
            .await
            .unwrap();
        rows.rows.into_iter().map(|mut r| r.remove(0)).collect()
    }
}

fn refused(answer: &str, class: &str, case: &str) {
    assert!(
        answer.starts_with(class),
        "{case}: expected `{class}`, the playbook got `{answer}`"
    );
}

/// The statement that reaches the engine is the one the checker approved.
async fn sql_is_read_once(kind: Kind) {
    let t = target(kind, "http://127.0.0.1:9");
    let ledger = t.count("ledger_entries").await;
    for sql in [
        // The reproduced attack: SQLite reads `$1::x(')` as a parameter
        // name and the rest as four more statements.
        "SELECT $1::x('); PRAGMA query_only = OFF; COMMIT; DELETE FROM ledger_entries; BEGIN; --')",
        "SELECT 1; DELETE FROM ledger_entries",
        "SELECT 1 /* */; DELETE FROM ledger_entries",
        "SELECT 1 -- \0; DELETE FROM ledger_entries",
        "SELECT $0",
        "SELECT ?0",
        "SELECT :name",
        "SELECT $2",
        "DELETE FROM ledger_entries",
        "WITH gone AS (DELETE FROM ledger_entries RETURNING *) SELECT COUNT(*) FROM gone",
        "PRAGMA query_only = OFF",
        "ATTACH DATABASE 'stolen.db' AS s",
        "VACUUM INTO 'copy.db'",
        "SELECT load_extension('/tmp/x')",
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT pg_advisory_lock(42)",
    ] {
        let answer = t.sql("reader", "db-query", sql).await;
        refused(&answer, "invalid", sql);
    }
    assert_eq!(
        t.count("ledger_entries").await,
        ledger,
        "a read changed data"
    );
    assert!(!t.setup.path("stolen.db").exists() && !t.setup.path("copy.db").exists());
}

/// The engine itself holds a read to reading and a write to its tables,
/// whatever the parser thought.
async fn the_engine_enforces_the_grant(kind: Kind) {
    let t = target(kind, "http://127.0.0.1:9");
    let ledger = t.count("ledger_entries").await;
    // A trigger on a granted table writes to another: refused, rolled
    // back. (SQLite refuses while it prepares, for any trigger program
    // that could write elsewhere; PostgreSQL when a row did change.)
    let trigger = match kind {
        Kind::Sqlite => "DELETE FROM escrow_holds WHERE id = 1",
        Kind::Postgres => "UPDATE escrow_holds SET state = 'trigger' WHERE id = 1",
    };
    let answer = t.sql("hostile", "db-execute", trigger).await;
    refused(&answer, "invalid", "trigger");
    assert!(answer.contains("ledger_entries"), "{answer}");
    assert_eq!(t.count("ledger_entries").await, ledger);
    assert_eq!(t.count("escrow_holds").await, 2);
    assert_eq!(t.states().await[0], Value::Text("held".into()));
    // The read-only grant cannot write at all; the write grant reaches
    // only its table.
    let answer = t
        .sql(
            "reader",
            "db-execute",
            "UPDATE escrow_holds SET state = 'x'",
        )
        .await;
    refused(&answer, "not-granted", "reader write");
    let answer = t
        .sql("hostile", "db-execute", "DELETE FROM ledger_entries")
        .await;
    refused(&answer, "not-granted", "ungranted table");
    // A plain granted write still works, live.
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "UPDATE escrow_holds SET state = 'released' WHERE id = 2",
        )
        .await;
    assert_eq!(answer, "ok: 1 changed");
    assert_eq!(t.states().await[1], Value::Text("released".into()));
    if kind == Kind::Sqlite {
        // Functions outside the side-effect-free list are refused by
        // SQLite's authorizer even where the parser sees nothing wrong.
        for sql in [
            "SELECT sqlite_compileoption_get(0)",
            "SELECT zeroblob(1000000000)",
            "SELECT fts3_tokenizer('simple')",
        ] {
            let answer = t.sql("reader", "db-query", sql).await;
            refused(&answer, "invalid", sql);
        }
        // A value larger than the result limit is stopped by SQLite
        // itself while it is built (here a 128 MiB string of which only
        // the length would come back), not after.
        let answer = t
            .sql(
                "reader",
                "db-query",
                "WITH RECURSIVE r(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM r WHERE n < 27) \
                 SELECT length(s) FROM r WHERE n = 27",
            )
            .await;
        refused(&answer, "invalid", "huge value");
    }
}

/// PostgreSQL only: functions judged by the catalog, schemas kept apart,
/// and a session that leaves nothing behind.
async fn postgres_functions_schemas_and_sessions() {
    let t = target(Kind::Postgres, "http://127.0.0.1:9");
    let ledger = t.count("ledger_entries").await;
    // A user-defined function that writes: VOLATILE, refused, in a read and
    // in a granted write alike.
    let answer = t.sql("reader", "db-query", "SELECT evil()").await;
    refused(&answer, "invalid", "evil() in a read");
    assert!(answer.contains("VOLATILE"), "{answer}");
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "UPDATE escrow_holds SET amount = amount WHERE id = (SELECT evil())",
        )
        .await;
    refused(&answer, "invalid", "evil() in a write");
    // The same, named with a quote, a space and a non-ASCII letter: such a
    // name is bound into the catalog query, never written into its text.
    let answer = t.sql("reader", "db-query", r#"SELECT "it's évil"()"#).await;
    refused(&answer, "invalid", "a quoted non-ASCII name in a read");
    assert!(answer.contains("VOLATILE"), "{answer}");
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            r#"UPDATE escrow_holds SET amount = amount WHERE id = (SELECT "it's évil"())"#,
        )
        .await;
    refused(&answer, "invalid", "a quoted non-ASCII name in a write");
    assert!(answer.contains("VOLATILE"), "{answer}");
    // A function name spelled with unicode escapes.
    let answer = t
        .sql(
            "reader",
            "db-query",
            r#"SELECT U&"set\0063onfig"('default_transaction_read_only', 'off', false)"#,
        )
        .await;
    refused(&answer, "invalid", "unicode-escaped set_config");
    // A writing function named like a built-in that may be called
    // (random is volatile but only reads) or like syntax (coalesce):
    // judged by its own catalog entry, whatever it is called, and the
    // built-in itself still passes.
    for sql in [
        "SELECT random(1)",
        "SELECT public.random(1)",
        "SELECT archive.coalesce(1)",
    ] {
        let answer = t.sql("reader", "db-query", sql).await;
        refused(&answer, "invalid", sql);
        let answer = t
            .sql(
                "hostile",
                "db-execute",
                &format!("UPDATE escrow_holds SET amount = amount WHERE id = ({sql})"),
            )
            .await;
        refused(&answer, "invalid", sql);
    }
    let answer = t
        .sql(
            "reader",
            "db-query",
            "SELECT pg_catalog.random() < 2, coalesce(1, 2)",
        )
        .await;
    assert!(answer.starts_with("ok"), "{answer}");
    assert_eq!(t.count("ledger_entries").await, ledger);
    // A trigger that waits for the COMMIT (deferred), or that changes a
    // table without changing rows the statistics count (TRUNCATE, a GRANT
    // that writes the catalog): fired and seen before the commit, refused,
    // rolled back.
    for (state, table) in [
        ("deferred", "ledger_entries"),
        ("truncate", "scratch"),
        ("grant", "pg_catalog."),
    ] {
        let sql = format!("UPDATE escrow_holds SET state = '{state}' WHERE id = 1");
        let answer = t.sql("hostile", "db-execute", &sql).await;
        refused(&answer, "invalid", state);
        assert!(answer.contains(table), "{answer}");
    }
    assert_eq!(t.count("scratch").await, 2);
    assert_eq!(t.count("ledger_entries").await, ledger);
    assert_eq!(t.states().await[0], Value::Text("held".into()));
    // Same table name, another schema: not covered by the grant.
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "UPDATE archive.escrow_holds SET state = 'x'",
        )
        .await;
    refused(&answer, "not-granted", "archive schema");
    assert!(answer.contains("archive.escrow_holds"), "{answer}");
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            r#"UPDATE "ESCROW_HOLDS" SET state = 'x'"#,
        )
        .await;
    refused(&answer, "not-granted", "quoted upper-case name");
    // What the engine leaves on a session is reset before the pool hands it
    // out again: settings and advisory locks, even past the checker.
    let db = t.db().await;
    db.query(
        "SELECT set_config('default_transaction_read_only', 'off', false), pg_advisory_lock(42)::text",
        &[],
        &[],
        1 << 20,
    )
    .await
    .unwrap();
    for _ in 0..4 {
        let rows = db
            .query(
                "SELECT current_setting('default_transaction_read_only')",
                &[],
                &[],
                1 << 20,
            )
            .await
            .unwrap();
        assert_eq!(rows.rows[0][0], Value::Text("on".into()));
    }
    let pg = t.pg.as_ref().unwrap();
    let free = sqlx_scalar(pg, "SELECT pg_try_advisory_lock(42)").await;
    assert!(free, "an advisory lock outlived the call that took it");
    // Pooled sessions the server ended while they were idle are replaced,
    // not handed to the next call (connections are not pinged before use).
    let ended = sqlx_scalar(
        pg,
        "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'stepgate' AND datname = current_database()",
    )
    .await;
    assert!(ended, "no pooled stepgate session to end");
    stepgate_tests::eventually("the ended sessions are gone", || async {
        !sqlx_scalar(
            pg,
            "SELECT COUNT(*) > 0 FROM pg_stat_activity WHERE application_name = 'stepgate' AND datname = current_database()",
        )
        .await
    })
    .await;
    let rows = db
        .query("SELECT 1 AS one", &[], &[], 1 << 20)
        .await
        .expect("a read once the server ended every pooled session");
    assert_eq!(rows.rows.len(), 1);
    // A dry-run write holds no row lock once it returns.
    let report = run_unattended(
        &t.runtime,
        "hostile",
        alert(
            "Hostile",
            &[("mode", "db-execute")],
            &[
                ("sql", "UPDATE escrow_holds SET state = 'x' WHERE id = 1"),
                ("reason", "dry"),
            ],
        ),
        Mode::DryRun,
    )
    .await;
    assert_eq!(field(&report, "result"), "ok: 1 changed");
    // A dry run moves no sequence: an INSERT in any form, and an UPDATE
    // that sets a column to its default, are counted, not run.
    for (sql, rows) in [
        (
            "INSERT INTO escrow_holds (order_id, state, amount) VALUES ('o', 'held', 1), ('p', 'held', 2)",
            2,
        ),
        (
            "INSERT INTO escrow_holds (order_id, state, amount) SELECT order_id, 'copy', amount FROM escrow_holds",
            2,
        ),
        (
            "WITH src AS (SELECT order_id, amount FROM escrow_holds) \
             INSERT INTO escrow_holds (order_id, state, amount) SELECT order_id, 'cte', amount FROM src",
            2,
        ),
        (
            "INSERT INTO escrow_holds (order_id, state, amount) VALUES ('o', 'held', 1) \
             ON CONFLICT (id) DO UPDATE SET state = 'conflict'",
            1,
        ),
        (
            "UPDATE escrow_holds SET id = DEFAULT WHERE order_id = 'order:1'",
            1,
        ),
        (
            "WITH o AS (SELECT 'order:1' AS id) UPDATE escrow_holds SET id = DEFAULT \
             WHERE order_id IN (SELECT id FROM o)",
            1,
        ),
        (
            "UPDATE escrow_holds AS e SET id = DEFAULT FROM ledger_entries l \
             WHERE l.account = 'hot' AND e.amount > 0",
            2,
        ),
    ] {
        let report = run_unattended(
            &t.runtime,
            "hostile",
            alert(
                "Hostile",
                &[("mode", "db-execute")],
                &[("sql", sql), ("reason", "dry")],
            ),
            Mode::DryRun,
        )
        .await;
        assert_eq!(
            field(&report, "result"),
            format!("ok: {rows} changed").as_str()
        );
    }
    let untouched = sqlx_scalar(pg, "SELECT last_value = 2 FROM escrow_holds_id_seq").await;
    assert!(untouched, "a dry run moved the sequence");
    let bad = run_unattended(
        &t.runtime,
        "hostile",
        alert(
            "Hostile",
            &[("mode", "db-execute")],
            &[
                (
                    "sql",
                    "INSERT INTO escrow_holds (no_such_column) VALUES (1)",
                ),
                ("reason", "dry"),
            ],
        ),
        Mode::DryRun,
    )
    .await;
    refused(
        field(&bad, "result").as_str().unwrap(),
        "invalid",
        "dry insert of a bad column",
    );
    let unlocked = sqlx_scalar(
        pg,
        "SELECT COUNT(*) = 1 FROM (SELECT 1 FROM escrow_holds WHERE id = 1 FOR UPDATE NOWAIT) l",
    )
    .await;
    assert!(unlocked);
    assert_eq!(t.states().await[0], Value::Text("held".into()));
}

/// One boolean from the cluster, as the superuser, outside stepgate.
async fn sqlx_scalar(pg: &PgServer, sql: &'static str) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

stepgate_tests::on_both_stores!(sql_is_read_once, the_engine_enforces_the_grant);

#[tokio::test]
async fn postgres_judges_functions_by_the_catalog_and_resets_sessions() {
    postgres_functions_schemas_and_sessions().await;
}

/// What the scope checked is what is sent: one normal path, no query
/// string unless the route says, no redirect followed.
#[tokio::test]
async fn http_paths_stay_inside_their_route() {
    let elsewhere = Receiver::always(Reply::ok("{}")).await;
    let to = format!("{}/steal", elsewhere.url);
    let admin = Receiver::start(move |r, _| match r.path.as_str() {
        "/health" => Reply::redirect(302, to.clone()),
        _ => Reply::ok("{}"),
    })
    .await;
    let t = target(Kind::Sqlite, &admin.url);
    let t = &t;
    let http = |method: &'static str, path: &'static str| async move {
        let report = t
            .attack(
                "hostile",
                "http",
                &[("method", method)],
                &[("path", path), ("reason", "hostile test")],
            )
            .await;
        field(&report, "result")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    for path in [
        "/admin/x#/../stop",
        "/admin/x/%2e%2e/stop",
        "/admin/x/%2E%2E%2Fstop",
        "/admin/x/..%2fstop",
        "/admin/x;/../stop",
        "/admin\\x",
        "/../admin/x",
    ] {
        let answer = http("POST", path).await;
        assert!(
            answer.starts_with("invalid") || answer.starts_with("not-granted"),
            "{path}: {answer}"
        );
    }
    // A query string only where the route ends in `?*`.
    refused(
        &http("POST", "/admin/x?all=true").await,
        "not-granted",
        "query",
    );
    assert_eq!(http("GET", "/search?q=x").await, "ok: status 200");
    // The normal form is what is sent.
    assert_eq!(http("POST", "/admin/./y/../x").await, "ok: status 200");
    // A redirect is answered to the playbook, never followed.
    assert_eq!(http("GET", "/health").await, "ok: status 302");
    assert!(elsewhere.requests().is_empty(), "a redirect was followed");
    let paths: Vec<String> = admin.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/search?q=x", "/admin/x", "/health"]);

    // Headers: none that changes what the request means (its method, its
    // URL, who sent it) gets through, whatever its case; an ordinary one
    // is sent, and the journal (what an approver reads) holds its value.
    let with_header = |method: &'static str, path: &'static str, header: &'static str| async move {
        t.attack(
            "hostile",
            "http",
            &[("method", method)],
            &[
                ("path", path),
                ("header", header),
                ("reason", "hostile test"),
            ],
        )
        .await
    };
    for header in [
        "X-HTTP-Method-Override: DELETE",
        "x-method-override: POST",
        "X-Original-URL: /admin/stop",
        "X-Rewrite-URL: /admin/stop",
        "X-Forwarded-For: 10.0.0.1",
        "Forwarded: for=10.0.0.1",
        "Authorization: Bearer stolen",
        "Transfer-Encoding: chunked",
        "X-Request-Id: a\r\nX-Injected: 1",
    ] {
        let report = with_header("GET", "/health", header).await;
        refused(
            field(&report, "result").as_str().unwrap(),
            "invalid",
            header,
        );
    }
    assert_eq!(admin.requests().len(), 3, "a refused header was sent");
    let report = with_header("POST", "/admin/x", "X-Request-Id: incident-42").await;
    assert_eq!(field(&report, "result"), "ok: status 200");
    let sent = admin.requests();
    let last = sent.last().unwrap();
    assert_eq!(
        last.headers.get("x-request-id").map(String::as_str),
        Some("incident-42")
    );
    let entry = report.journal.last().unwrap();
    assert_eq!(
        entry.args["headers"],
        serde_json::json!([["X-Request-Id", "incident-42"]])
    );
}

/// Oversized arguments are refused before they are parsed or journaled;
/// steps and logs count as calls.
#[tokio::test]
async fn arguments_are_bounded_and_every_call_counts() {
    let t = target(Kind::Sqlite, "http://127.0.0.1:9");
    let report = t
        .attack("reader", "big-args", &[("n", "1000000")], &[])
        .await;
    let answer = field(&report, "result");
    let answer = answer.as_str().unwrap();
    refused(answer, "invalid", "1 MB of SQL");
    assert!(answer.contains("argument_bytes"), "{answer}");
    let entry = &report.journal[0];
    assert!(
        entry.args.get("sql").is_none(),
        "the journal kept the oversized SQL"
    );
    assert!(entry.args["oversized_bytes"].as_u64().unwrap() > 1_000_000);
    let report = t.attack("reader", "step-flood", &[], &[]).await;
    assert!(
        matches!(report.end, RunEnd::Limit(LimitExceeded::Calls { .. })),
        "{:?}",
        report.end
    );
    // A step name that is cut inside a multi-byte character.
    let name = format!("{}é and more", "x".repeat(199));
    let report = t.attack("reader", "show", &[], &[("text", &name)]).await;
    assert!(matches!(report.end, RunEnd::Done(_)), "{:?}", report.end);
}

/// Text from a playbook is shown inert: no escape sequence, no bidi
/// override, in the run's lines and its summary.
#[tokio::test]
async fn what_a_human_reads_is_inert() {
    let t = target(Kind::Sqlite, "http://127.0.0.1:9");
    let hostile = "\u{1b}[2J\u{1b}[H\u{1b}]0;x\u{7}approved by alice\r\n\u{202e}0001 USDC\u{9b}";
    let report = t
        .attack(
            "hostile",
            "flag-set",
            &[],
            &[("name", "PLAZA_X"), ("value", hostile), ("reason", hostile)],
        )
        .await;
    let report2 = t.attack("reader", "show", &[], &[("text", hostile)]).await;
    let mut shown = stepgate::terminal::summary(&report) + &stepgate::terminal::summary(&report2);
    for entry in report.journal.iter().chain(&report2.journal) {
        shown.push_str(&stepgate::terminal::call_line(entry));
    }
    assert!(shown.contains("approved by alice"), "{shown}");
    assert!(
        !shown.chars().any(stepgate::inert::is_unsafe),
        "unsafe characters reached the terminal: {shown:?}"
    );
    assert!(!shown.contains("alice\r"), "{shown:?}");
    assert!(shown.contains("\\u202E"), "{shown}");
}

/// A Slack message carries no mention or link markup from a playbook.
#[tokio::test]
async fn slack_messages_carry_no_markup() {
    let slack = Receiver::always(Reply::ok("ok")).await;
    let t = target(Kind::Sqlite, &slack.url);
    let hostile = "<!channel> wire it to <https://evil.example|the treasury> & \u{1b}[2J";
    let report = t
        .attack("hostile", "notify", &[], &[("text", hostile)])
        .await;
    assert_eq!(field(&report, "result"), "ok: sent");
    let sent = slack.requests();
    assert_eq!(sent.len(), 1);
    let text = sent[0].json()["text"].as_str().unwrap().to_owned();
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(!text.chars().any(stepgate::inert::is_unsafe), "{text:?}");
}

/// The server's edges: JSON only, bodies capped, and no listening beyond
/// loopback without a hook token.
#[tokio::test]
async fn the_server_edges_hold() {
    let t = target(Kind::Sqlite, "http://127.0.0.1:9");
    let server = Server::start(Arc::new(t.setup.runtime())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/generic", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = reqwest::Client::new();
    let alert = r#"{"labels": {"alertname": "Unrouted"}}"#;
    let post = |content_type: &'static str, body: String| {
        let request = client.post(&url).body(body);
        let request = if content_type.is_empty() {
            request
        } else {
            request.header("content-type", content_type)
        };
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(post("", alert.to_owned()).await, 415);
    assert_eq!(post("text/plain", alert.to_owned()).await, 415);
    let huge = format!(
        r#"{{"labels": {{"alertname": "{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    assert_eq!(post("application/json", huge).await, 413);
    assert_eq!(
        post("application/json; charset=utf-8", alert.to_owned()).await,
        202
    );
    // Beyond loopback, no hook token: refused before it listens.
    let server = Server::start(Arc::new(t.setup.runtime())).await.unwrap();
    let open = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = server
        .serve(open, std::future::pending())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("hook_token"), "{refused}");
    // A blank token would match a request that carries none: refused.
    std::fs::write(t.setup.path("blank-token"), "   \n").unwrap();
    let config = std::fs::read_to_string(&t.setup.config).unwrap()
        + "\n[server]\nhook_token = { file = \"blank-token\" }\n";
    std::fs::write(&t.setup.config, config).unwrap();
    let blank = Server::start(Arc::new(t.setup.runtime())).await;
    let err = blank.err().expect("a blank hook token was taken");
    assert!(err.to_string().contains("empty"), "{err}");
}

/// A client that trickles its request a byte at a time, never idle long
/// enough for the idle timeout, is cut off by the request timeout: its
/// headers, then its body, must arrive in time.
#[tokio::test]
async fn a_trickling_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = target(Kind::Sqlite, "http://127.0.0.1:9");
    let config = std::fs::read_to_string(&t.setup.config).unwrap()
        + "\n[server]\nrequest_timeout = \"500ms\"\nidle_timeout = \"30s\"\n";
    std::fs::write(&t.setup.config, config).unwrap();
    let server = Server::start(Arc::new(t.setup.runtime())).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));

    // Sends `head` then one byte of `drip` every 50 ms for at most 20 s;
    // what the server answered if it answered or closed before the drip
    // ran out, `None` if it let the client trickle on.
    async fn trickle(addr: std::net::SocketAddr, head: &str, drip: u8) -> Option<String> {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        write.write_all(head.as_bytes()).await.unwrap();
        let dripping = async move {
            for _ in 0..400 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                if write.write_all(&[drip]).await.is_err() {
                    // Closed by the server: wait for the read side.
                    std::future::pending::<()>().await;
                }
            }
        };
        let mut answer = Vec::new();
        tokio::select! {
            _ = read.read_to_end(&mut answer) => {
                Some(String::from_utf8_lossy(&answer).into_owned())
            }
            () = dripping => None,
        }
    }

    // Headers that never end: the connection is closed (hyper answers
    // nothing, or 408).
    let answer = trickle(addr, "POST /hooks/generic HTTP/1.1\r\nX-Slow: ", b'a')
        .await
        .expect("a client trickling its headers was never cut off");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A body that never ends: 408, and the request never reached a route.
    let head = "POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
    let answer = trickle(addr, head, b' ')
        .await
        .expect("a client trickling its body was never cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

/// A server listening beyond loopback keeps its hook token: a reload to a
/// config without one is refused, and the hooks still ask for it.
#[tokio::test]
async fn a_reload_cannot_take_the_hook_token_away() {
    let t = target(Kind::Sqlite, "http://127.0.0.1:9");
    let before = std::fs::read_to_string(&t.setup.config).unwrap();
    std::fs::write(
        &t.setup.config,
        format!("{before}\n[server]\nhook_token = \"hook-s3cret\"\n"),
    )
    .unwrap();
    let server = Server::start_from(Arc::new(t.setup.runtime()), Some(t.setup.config.clone()))
        .await
        .unwrap();
    let shared = server.shared.clone();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.serve(listener, std::future::pending()));
    let client = reqwest::Client::new();
    let hook = format!("http://127.0.0.1:{port}/hooks/generic");
    let post = || {
        client
            .post(&hook)
            .header("content-type", "application/json")
            .body(r#"{"labels": {"alertname": "Unrouted"}}"#)
            .send()
    };
    // Serving (and so marked as listening beyond loopback) once it answers.
    assert_eq!(post().await.unwrap().status(), 401);
    std::fs::write(&t.setup.config, &before).unwrap();
    let refused = shared.reload().unwrap_err();
    assert!(refused.contains("hook_token"), "{refused}");
    assert_eq!(post().await.unwrap().status(), 401);
}

/// PostgreSQL: what the engine-side checks must let through. A cascade
/// that matches no row locks its table and changes nothing; a partition
/// may be granted by its own name; a dry run of a statement whose `WITH`
/// changes data is run and rolled back.
#[tokio::test]
async fn legitimate_postgres_writes_pass_the_engine_checks() {
    let mut t = target(Kind::Postgres, "http://127.0.0.1:9");
    let config = std::fs::read_to_string(&t.setup.config).unwrap().replace(
        r#"tables = ["escrow_holds"]"#,
        r#"tables = ["escrow_holds", "events_2026", "archive_log", "logs_2026"]"#,
    );
    std::fs::write(&t.setup.config, config).unwrap();
    t.runtime = t.setup.runtime();
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "DELETE FROM escrow_holds WHERE id = 2",
        )
        .await;
    assert_eq!(answer, "ok: 1 changed");
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "UPDATE events_2026 SET kind = 'y' WHERE id = 1",
        )
        .await;
    assert_eq!(answer, "ok: 1 changed");
    // A partition that is itself partitioned: its rows land a level down.
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "UPDATE logs_2026 SET id = 2 WHERE id = 1",
        )
        .await;
    assert_eq!(answer, "ok: 1 changed");
    let moved = "WITH moved AS (DELETE FROM escrow_holds WHERE id = 1 RETURNING id, state) \
                 INSERT INTO archive_log (hold_id, state) SELECT id, state FROM moved";
    let report = run_unattended(
        &t.runtime,
        "hostile",
        alert(
            "Hostile",
            &[("mode", "db-execute")],
            &[("sql", moved), ("reason", "dry")],
        ),
        Mode::DryRun,
    )
    .await;
    assert_eq!(field(&report, "result"), "ok: 1 changed");
    assert_eq!(t.count("escrow_holds").await, 1);
    assert_eq!(t.count("archive_log").await, 0);
    // A cascade that does change a row of an ungranted table: refused.
    let db = t.db().await;
    db.execute(
        "INSERT INTO hold_notes VALUES (1, 'n')",
        &[],
        &["hold_notes".to_owned()],
        &[],
        stepgate::backends::Commit::Yes,
    )
    .await
    .unwrap();
    let answer = t
        .sql(
            "hostile",
            "db-execute",
            "DELETE FROM escrow_holds WHERE id = 1",
        )
        .await;
    refused(&answer, "invalid", "cascade into hold_notes");
    assert!(answer.contains("hold_notes"), "{answer}");
}
