//! Bounded differential fuzzing of the wall (issue #15, §6): generated
//! inputs from fragments known to split parsers apart.
//!
//! - SQL: every statement the checker passes as a read is run through the
//!   real backend (the engine guard included) against a file-backed SQLite
//!   and a real PostgreSQL; the database must not change. Every statement
//!   it passes as a write to `escrow_holds` is run dry and live; nothing
//!   but `escrow_holds` may change.
//! - HTTP paths: what the normaliser accepts is stable (normalising twice
//!   changes nothing), has no dot or empty segment, and is the path the
//!   URL library (what the transport sends) keeps.
//! - Alert payloads and config files: mutated input never panics the host.
//!
//! The case counts are small enough for CI; `STEPGATE_FUZZ_CASES=N` (a
//! multiplier, default 1) and `STEPGATE_FUZZ_SEED` run longer or other
//! inputs (docs/testing.md).

use std::path::Path;
use std::time::Duration;

use stepgate::backends::sqlite::Sqlite;
use stepgate::backends::{Commit, Database, DbSettings, SqlDialect};
use stepgate::bindings::Value;
use stepgate::caps::sql;
use stepgate_tests::servers::PgServer;

/// xorshift64*: a seeded generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Rng {
        let seed = std::env::var("STEPGATE_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_0f15);
        Rng((seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn cases(base: usize) -> usize {
    let times: usize = std::env::var("STEPGATE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    base * times.max(1)
}

const READ_PREFIXES: &[&str] = &[
    "SELECT ",
    "SELECT 1, ",
    "SELECT * FROM ledger_entries WHERE account = ",
    "WITH t AS (SELECT 1 AS a) SELECT ",
    "SELECT COUNT(*) FROM ledger_entries WHERE amount > ",
];

const WRITE_PREFIXES: &[&str] = &[
    "UPDATE escrow_holds SET state = ",
    "DELETE FROM escrow_holds WHERE id = ",
    "INSERT INTO escrow_holds (id, order_id, state, amount) VALUES (9, 'o', ",
    "UPDATE escrow_holds SET amount = amount WHERE state = ",
];

const FRAGMENTS: &[&str] = &[
    "$1::x('",
    "')",
    "'",
    "'x'",
    "; ",
    ";",
    "PRAGMA query_only = OFF",
    "COMMIT",
    "BEGIN",
    "ROLLBACK",
    "SAVEPOINT s",
    "DELETE FROM ledger_entries",
    "--",
    "\n",
    "/*",
    "*/",
    "$1",
    "?1",
    "?",
    ":a",
    "@a",
    "$a",
    "$0",
    "1",
    "x",
    "(",
    ")",
    ",",
    "\"",
    "`",
    "[",
    "]",
    "E'\\''",
    "$$",
    "$t$",
    "X'00'",
    "ATTACH 'f.db' AS f",
    "VACUUM INTO 'v.db'",
    "load_extension('x')",
    "UPDATE ledger_entries SET amount = 0",
    "INSERT INTO ledger_entries (account, amount) VALUES ('f', 1)",
    "RETURNING *",
    " ",
    "||",
    "::",
    " AS ",
    " FROM ledger_entries",
    "CASE WHEN 1 THEN 2 END",
    "json_extract('{}', '$.a')",
    "printf('%s', 1)",
    "char(59)",
    "U&\"d\\0061ta\"",
    "\\",
    "END",
    "DROP TABLE ledger_entries",
    "CREATE TABLE f (a)",
    "sqlite_master",
    "writefile('w', 'x')",
    "set_config('default_transaction_read_only', 'off', false)",
    "pg_advisory_lock(1)",
    "nextval('ledger_entries_id_seq')",
    "(SELECT 1)",
    "'held'",
    "NULL",
    " OR 1=1",
    "\u{0}",
    "\u{202e}",
    "é",
    "0x",
    "1e999",
    "-- \n",
    "#",
    "{",
    "}",
];

fn generate(rng: &mut Rng, prefixes: &[&str]) -> String {
    let mut sql = rng.pick(prefixes).to_owned();
    for _ in 0..1 + rng.below(7) {
        sql.push_str(rng.pick(FRAGMENTS));
    }
    sql
}

const SQLITE_SCHEMA: &str = "
CREATE TABLE escrow_holds (id INTEGER PRIMARY KEY, order_id TEXT, state TEXT, amount INTEGER);
CREATE TABLE ledger_entries (id INTEGER PRIMARY KEY, account TEXT, amount INTEGER);
CREATE TRIGGER side AFTER DELETE ON escrow_holds BEGIN INSERT INTO ledger_entries (account, amount) VALUES ('trigger', 1); END;
INSERT INTO escrow_holds VALUES (1, 'order:1', 'held', 5), (2, 'order:2', 'held', 7);
INSERT INTO ledger_entries (account, amount) VALUES ('hot', 12), ('cold', 30);
";

const PG_SCHEMA: &str = "
CREATE TABLE escrow_holds (id INT PRIMARY KEY, order_id TEXT, state TEXT, amount BIGINT);
CREATE TABLE ledger_entries (id SERIAL PRIMARY KEY, account TEXT, amount BIGINT);
INSERT INTO escrow_holds VALUES (1, 'order:1', 'held', 5), (2, 'order:2', 'held', 7);
INSERT INTO ledger_entries (account, amount) VALUES ('hot', 12), ('cold', 30);
";

fn settings() -> DbSettings {
    DbSettings {
        name: "fuzz".into(),
        statement_timeout: Duration::from_secs(5),
        max_rows: 1000,
        max_connections: 2,
        fixtures: Vec::new(),
    }
}

/// Everything that must not change: both tables and the schema.
const FINGERPRINT_SQLITE: &str = "SELECT (SELECT COALESCE(group_concat(id || account || amount, ','), '') FROM ledger_entries) || '|' || (SELECT COALESCE(group_concat(name, ','), '') FROM sqlite_master)";
const FINGERPRINT_PG: &str = "SELECT (SELECT COALESCE(string_agg(id || account || amount, ',' ORDER BY id), '') FROM ledger_entries) || '|' || (SELECT COUNT(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace)::text || '|' || current_setting('default_transaction_read_only') || '|' || (SELECT last_value FROM ledger_entries_id_seq)::text";
const HOLDS: &str =
    "SELECT COALESCE(group_concat(id || order_id || state || amount, ','), '') FROM escrow_holds";
const HOLDS_PG: &str = "SELECT COALESCE(string_agg(id || order_id || state || amount, ',' ORDER BY id), '') FROM escrow_holds";

async fn text(db: &dyn Database, sql: &str) -> String {
    let rows = db
        .query(sql, &[], &[], 1 << 20)
        .await
        .expect("fingerprint query");
    match &rows.rows[0][0] {
        Value::Text(t) => t.clone(),
        other => format!("{other:?}"),
    }
}

/// Runs the SQL differential against `db`; returns (reads run, writes run).
async fn differential(
    db: &dyn Database,
    dialect: SqlDialect,
    dir: &Path,
    n: usize,
    salt: u64,
) -> (usize, usize) {
    let (fingerprint, holds) = match dialect {
        SqlDialect::Sqlite => (FINGERPRINT_SQLITE, HOLDS),
        SqlDialect::Postgres => (FINGERPRINT_PG, HOLDS_PG),
    };
    let files = || std::fs::read_dir(dir).unwrap().count();
    let before = text(db, fingerprint).await;
    let files_before = files();
    let mut rng = Rng::new(salt);
    let (mut reads, mut writes) = (0, 0);
    for _ in 0..n {
        // Live writes change escrow_holds on purpose; compare with now.
        let holds_before = text(db, holds).await;
        let read = generate(&mut rng, READ_PREFIXES);
        if let Ok(checked) = sql::check_read(dialect, &read) {
            reads += 1;
            if std::env::var_os("STEPGATE_FUZZ_TRACE").is_some() {
                eprintln!("read: {read:?}");
            }
            let params = [Value::Text("x".into())];
            let _ = db.query(&read, &params, &checked.functions, 1 << 20).await;
            assert_eq!(
                text(db, fingerprint).await,
                before,
                "a read changed the database: {read:?}"
            );
            assert_eq!(
                text(db, holds).await,
                holds_before,
                "a read changed escrow_holds: {read:?}"
            );
        }
        let write = generate(&mut rng, WRITE_PREFIXES);
        if let Ok(checked) = sql::check_write(dialect, &write) {
            if checked.tables != ["escrow_holds"] {
                continue;
            }
            writes += 1;
            if std::env::var_os("STEPGATE_FUZZ_TRACE").is_some() {
                eprintln!("write: {write:?}");
            }
            let params = [Value::Text("x".into())];
            let _ = db
                .execute(
                    &write,
                    &params,
                    &checked.tables,
                    &checked.functions,
                    Commit::No,
                )
                .await;
            assert_eq!(
                text(db, holds).await,
                holds_before,
                "a dry run changed escrow_holds: {write:?}"
            );
            let _ = db
                .execute(
                    &write,
                    &params,
                    &checked.tables,
                    &checked.functions,
                    Commit::Yes,
                )
                .await;
            assert_eq!(
                text(db, fingerprint).await,
                before,
                "a write changed an ungranted table: {write:?}"
            );
        }
        assert_eq!(
            files(),
            files_before,
            "a statement created a file: {read:?} / {write:?}"
        );
    }
    (reads, writes)
}

#[tokio::test]
async fn sql_the_checker_passes_never_escapes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, SQLITE_SCHEMA).unwrap();
    let settings = DbSettings {
        fixtures: vec![schema],
        ..settings()
    };
    let db = Sqlite::new(settings, "sqlite://fuzz.db", dir.path());
    let (reads, writes) = differential(&db, SqlDialect::Sqlite, dir.path(), cases(10_000), 1).await;
    println!("sqlite: {reads} reads and {writes} writes the checker passed ran without escaping");
    assert!(
        reads > 0 && writes > 0,
        "the generator found nothing the checker passes"
    );
}

#[tokio::test]
async fn sql_the_checker_passes_never_escapes_on_postgres() {
    let pg = PgServer::start();
    pg.exec("postgres", PG_SCHEMA).await;
    let db = stepgate::backends::postgres::Postgres::new(settings(), pg.url("postgres"));
    let dir = tempfile::tempdir().unwrap();
    let (reads, writes) = differential(&db, SqlDialect::Postgres, dir.path(), cases(2000), 2).await;
    println!("postgres: {reads} reads and {writes} writes the checker passed ran without escaping");
    assert!(
        reads > 0 && writes > 0,
        "the generator found nothing the checker passes"
    );
}

#[test]
fn normal_paths_are_stable_and_sent_as_checked() {
    use stepgate::backends::http_path::normalise;
    const PARTS: &[&str] = &[
        "/", "/", ".", "..", "%2e", "%2E", "%2f", "%5c", "a", "b", "admin", "x", "#", "?", ";",
        "%", "%zz", "~", "%7e", "//", " ", "é", "&", "=", "%41", "%00", "@", ":", "+", "%3F", "'",
        "%27", "!", "*", "$", "(", ")", ",",
    ];
    let mut rng = Rng::new(3);
    let mut accepted = 0;
    for _ in 0..cases(20_000) {
        let mut raw = String::from("/");
        for _ in 0..rng.below(10) {
            raw.push_str(rng.pick(PARTS));
        }
        let Ok(normal) = normalise(&raw) else {
            continue;
        };
        accepted += 1;
        let segments: Vec<&str> = normal.path.split('/').skip(1).collect();
        let trailing = segments.len() > 1 && segments.last() == Some(&"");
        for (i, s) in segments.iter().enumerate() {
            let last = i == segments.len() - 1;
            assert!(
                !matches!(*s, "." | "..")
                    && (!s.is_empty() || last && (trailing || segments.len() == 1)),
                "{raw:?} -> {normal:?}"
            );
        }
        assert_eq!(
            normalise(&normal.target()).as_ref(),
            Ok(&normal),
            "not stable: {raw:?}"
        );
        let mut url = reqwest::Url::parse("http://127.0.0.1:1/").unwrap();
        url.set_path(&normal.path);
        url.set_query(normal.query.as_deref());
        assert_eq!(url.path(), normal.path, "the URL library changed {raw:?}");
        assert_eq!(
            url.query(),
            normal.query.as_deref(),
            "the URL library changed {raw:?}"
        );
    }
    assert!(accepted > 100);
}

/// Cuts, splices and garbles `base` at random places.
fn mutate(rng: &mut Rng, base: &str) -> String {
    const JUNK: &[&str] = &[
        "\"",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "1e999",
        "-",
        "\\u0000",
        "\\ud800",
        "é",
        "\u{1b}[2J",
        "[[[[[[[[[[[[[[[[",
        "\"labels\": 7",
        "\n",
        "=",
        "'''",
        "\u{0}",
    ];
    let mut text = base.to_owned();
    for _ in 0..1 + rng.below(4) {
        let mut at = rng.below(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        match rng.below(3) {
            0 => text.insert_str(at, rng.pick(JUNK)),
            1 => text.truncate(at),
            _ => {
                let mut end = (at + rng.below(20)).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, "");
            }
        }
    }
    text
}

#[test]
fn mutated_alerts_and_configs_never_panic() {
    let root = stepgate_tests::root();
    let alert = std::fs::read_to_string(root.join("examples/alerts/plaza-drift-unexplained.json"))
        .unwrap_or_else(|_| r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X"},"annotations":{},"startsAt":"2026-11-23T09:00:00Z","fingerprint":"f"}]}"#.to_owned());
    let config = std::fs::read_to_string(root.join("examples/stepgate.toml")).unwrap();
    let mut rng = Rng::new(4);
    for _ in 0..cases(5000) {
        let text = mutate(&mut rng, &alert);
        let parsed = std::panic::catch_unwind(|| stepgate::alert::parse(&text).is_ok());
        assert!(parsed.is_ok(), "the alert parser panicked on {text:?}");
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(stepgate::alert::parse(&deep).is_err());
    for _ in 0..cases(300) {
        let text = mutate(&mut rng, &config);
        let parsed = std::panic::catch_unwind(|| {
            stepgate::config::Config::parse(&text, Path::new("fuzz.toml"), &root.join("examples"))
                .is_ok()
        });
        assert!(parsed.is_ok(), "the config parser panicked on {text:?}");
    }
}
