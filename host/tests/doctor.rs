//! `stepgate doctor` against a real world: a PostgreSQL cluster with a
//! read-only role and a superuser, a webhook receiver, a dead port, and
//! components pinned, unpinned and pinned wrong. One line per check, the
//! failures named, nothing delivered, no secret shown, exit 1 on a failure
//! and 0 once the config is fixed.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::support;
use support::free_port;
use support::hook::Hook;
use support::servers::PgServer;

fn doctor(dir: &Path, json: bool) -> Output {
    let mut args = vec!["doctor"];
    if json {
        args.push("--json");
    }
    // `db.reports` takes its URL from the environment: set on the process
    // started, never on this one (other tests' threads read it).
    let reader = std::fs::read_to_string(dir.join("reader-url")).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(args)
        .current_dir(dir)
        .env("STEPGATE_TEST_READER_URL", reader.trim())
        .output()
        .unwrap()
}

/// The line of check `what`.
fn line_of<'a>(stdout: &'a str, what: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(what))
        .unwrap_or_else(|| panic!("no line for {what}:\n{stdout}"))
}

#[test]
fn doctor_names_each_failure_delivers_nothing_and_passes_once_fixed() {
    let pg = PgServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pg.exec(
        "postgres",
        "CREATE TABLE ledger (id int); \
         CREATE ROLE reader LOGIN PASSWORD 'r3ader-pw'; \
         GRANT SELECT ON ledger TO reader; \
         CREATE ROLE clerk LOGIN PASSWORD 'cl3rk-pw'; \
         GRANT SELECT ON ledger TO clerk; GRANT UPDATE (id) ON ledger TO clerk;",
    ));
    let reader = format!(
        "postgres://reader:r3ader-pw@127.0.0.1:{}/{}",
        pg.port,
        pg.database("postgres")
    );
    let hook = Hook::start(Duration::ZERO);
    let dead = free_port();
    let hostile = stepgate_artifacts::HOSTILE;
    let pin = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(hostile).unwrap()))
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reader-url"), &reader).unwrap();
    std::fs::write(
        dir.path().join("clerk-url"),
        reader.replace("reader:r3ader-pw", "clerk:cl3rk-pw"),
    )
    .unwrap();
    let world = |broken: bool| {
        let mut config = format!(
            r#"
[state]
path = "state.db"
[db.reports]
url = {{ env = "STEPGATE_TEST_READER_URL" }}
[db.clerk]
url = {{ file = "clerk-url" }}
[db.admin]
url = "{}"
[db.plaza]
url = "sqlite::memory:"
[rpc.status]
kind = "http"
urls = ["http://127.0.0.1:{}/s3cr3t-path"]
[pager.channels.ops]
kind = "webhook"
url = "{}"
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[playbooks.pinned]
component = "{hostile}"
sha256 = "{pin}"
grants.db.reports = {{}}
grants.db.clerk = {{ write = true, tables = ["ledger"] }}
grants.db.admin = {{ write = true, tables = ["ledger"] }}
grants.db.plaza = {{}}
[playbooks.unpinned]
component = "{hostile}"
grants.db.reports = {{}}
grants.db.admin = {{}}
grants.db.plaza = {{}}
"#,
            pg.url("postgres"),
            if broken { dead } else { hook_port(&hook.url) },
            hook.url,
        );
        if broken {
            for db in ["admin", "clerk"] {
                config = config.replace(
                    &format!("grants.db.{db} = {{ write = true, tables = [\"ledger\"] }}"),
                    &format!("grants.db.{db} = {{}}"),
                );
            }
            config.push_str(&format!(
                "[playbooks.tampered]\ncomponent = \"{hostile}\"\nsha256 = \"{}\"\ngrants.db.reports = {{}}\ngrants.db.admin = {{}}\ngrants.db.plaza = {{}}\n",
                "0".repeat(64)
            ));
        }
        std::fs::write(dir.path().join("stepgate.toml"), config).unwrap();
    };

    world(true);
    let out = doctor(dir.path(), false);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(line_of(&stdout, "state").starts_with("ok"), "{stdout}");
    assert!(
        line_of(&stdout, "db.reports").contains("read-only"),
        "{stdout}"
    );
    let admin = line_of(&stdout, "db.admin");
    assert!(
        admin.starts_with("FAIL")
            && admin.contains("public.ledger")
            && admin.contains("read-only role"),
        "a superuser where nothing writes: {admin}"
    );
    let clerk = line_of(&stdout, "db.clerk");
    assert!(
        clerk.starts_with("FAIL") && clerk.contains("public.ledger"),
        "an UPDATE on one column is a write: {clerk}"
    );
    assert!(line_of(&stdout, "db.plaza").starts_with("ok"), "{stdout}");
    let status = line_of(&stdout, "rpc.status");
    assert!(
        status.starts_with("FAIL") && status.contains("cannot connect"),
        "{status}"
    );
    assert!(
        line_of(&stdout, "pager.channels.ops").starts_with("ok"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, "pager.targets.ceo").starts_with("ok"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, "playbooks.pinned").starts_with("ok"),
        "{stdout}"
    );
    let unpinned = line_of(&stdout, "playbooks.unpinned");
    assert!(
        unpinned.starts_with("warn") && unpinned.contains(&pin),
        "the pin to add: {unpinned}"
    );
    let tampered = line_of(&stdout, "playbooks.tampered");
    assert!(
        tampered.starts_with("FAIL") && tampered.contains("changed since it was pinned"),
        "{tampered}"
    );
    for secret in ["s3cr3t", "r3ader-pw", "cl3rk-pw"] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
    // The webhook was reached, and told nothing; no page was written.
    assert!(hook.count() >= 1, "the webhook was not reached");
    assert!(
        hook.bodies().iter().all(|b| b.is_null()),
        "something was delivered: {:?}",
        hook.bodies()
    );
    assert!(!dir.path().join("pages.jsonl").exists());

    // Fixed: the admin connection is granted writes, the endpoint is up,
    // the tampered playbook gone. Warnings alone pass.
    world(false);
    let out = doctor(dir.path(), true);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdict = |what: &str| {
        checks
            .iter()
            .find(|c| c["what"] == what)
            .map(|c| c["verdict"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no {what}: {stdout}"))
    };
    assert_eq!(verdict("db.admin"), "ok");
    assert_eq!(verdict("db.clerk"), "ok");
    assert_eq!(verdict("rpc.status"), "ok");
    assert_eq!(verdict("playbooks.unpinned"), "warn");
    assert!(checks.iter().all(|c| c["verdict"] != "fail"), "{stdout}");
}

/// The port of a `http://127.0.0.1:PORT/...` URL.
fn hook_port(url: &str) -> u16 {
    url.trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}
