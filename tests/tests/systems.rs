//! The shipped playbooks against their example systems
//! (`examples/systems/<system>/`) and the example config
//! (`examples/stepgate.toml`):
//!
//! - every route of the example config takes the alerts of the scenarios of
//!   the playbook it names, and every scenario's alert reaches its playbook;
//! - every playbook, run as a dry run against a real PostgreSQL loaded with
//!   its system's schema and seed, plans what its escalation scenario
//!   expects: the same writes, to the same targets, with the same values
//!   (free text, which carries live counts and ages, aside) and the same
//!   severity.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use stepgate::config::Config;
use stepgate::gate::Mode;
use stepgate::runtime::Runtime;
use stepgate::scenario::Scenario;
use stepgate_tests::servers::PgServer;
use stepgate_tests::*;

/// One playbook's escalation case on its system's database.
struct Escalation {
    playbook: &'static str,
    /// The scenario (under `playbooks/<playbook>/scenarios/`) whose plan the
    /// seeded system must produce.
    scenario: &'static str,
    /// Sessions left idle in a transaction on the system's database while
    /// the playbook runs (what no seed file can hold).
    idle_transactions: usize,
    /// Text replaced in the example config for this case: another corner of
    /// the example world (a provider that is down).
    config: &'static [(&'static str, &'static str)],
}

const fn case(playbook: &'static str, scenario: &'static str) -> Escalation {
    Escalation {
        playbook,
        scenario,
        idle_transactions: 0,
        config: &[],
    }
}

/// A system with a PostgreSQL copy: its database (as the example config
/// names it) and its playbooks' escalation scenarios.
struct System {
    name: &'static str,
    database: &'static str,
    escalations: &'static [Escalation],
    /// The base URLs of the example config's HTTP endpoints for this system,
    /// answered in the test from `examples/systems/<system>/api.json`.
    apis: &'static [&'static str],
}

/// The Plaza demo's in-memory SQLite database, and the same on PostgreSQL.
const PLAZA_ON_SQLITE: &str = "url = \"sqlite::memory:\"\nfixture_sql = [\"systems/plaza/schema.sql\", \"systems/plaza/seed.sql\"]";
const PLAZA_ON_POSTGRES: &str = "url = \"postgres://stepgate@127.0.0.1:5432/plaza\"";

const SYSTEMS: &[System] = &[
    System {
        name: "plaza",
        database: "plaza",
        apis: &[],
        escalations: &[
            Escalation {
                config: &[(PLAZA_ON_SQLITE, PLAZA_ON_POSTGRES)],
                ..case("plaza-reconciliation-drift", "drift-unexplained")
            },
            Escalation {
                config: &[
                    (
                        "systems/plaza/rpc-fixture.json",
                        "systems/plaza/rpc-down.json",
                    ),
                    (
                        "systems/plaza/rpc-secondary.json",
                        "systems/plaza/rpc-down.json",
                    ),
                ],
                ..case("plaza-rpc-outage", "both-providers-out-past-5-minutes")
            },
            Escalation {
                idle_transactions: 2,
                ..case("plaza-notify-saturation", "idle-in-transaction")
            },
            case("plaza-hot-wallet-compromise", "unexpected-outflow"),
            Escalation {
                config: &[(PLAZA_ON_SQLITE, PLAZA_ON_POSTGRES)],
                ..case("plaza-resolver-key-compromise", "two-unauthorized-releases")
            },
            Escalation {
                config: &[(PLAZA_ON_SQLITE, PLAZA_ON_POSTGRES)],
                ..case("plaza-platform-alerts", "disk-no-slots")
            },
            Escalation {
                config: &[(PLAZA_ON_SQLITE, PLAZA_ON_POSTGRES)],
                ..case("plaza-backup-restore", "dry-run-plan")
            },
        ],
    },
    System {
        name: "rgs",
        database: "yantra",
        apis: &[],
        escalations: &[
            case("rgs-stuck-rollbacks", "every-operator-wallet-down"),
            case("rgs-credential-leak", "active-key-used-from-a-new-ip"),
            case("rgs-pending-queue", "one-operator-swamps-the-queue"),
            case("rgs-reconciliation-drift", "unexplained"),
            case("rgs-clock-skew", "window-unset"),
            Escalation {
                idle_transactions: 6,
                ..case("rgs-db-connections", "many-idle-in-transaction")
            },
        ],
    },
    System {
        name: "fiatrails",
        database: "fiatrails",
        apis: &[],
        escalations: &[
            case("fiatrails-dlq", "rpc-back-replay-and-mark"),
            case("fiatrails-no-mints", "escrow-paused"),
            case("fiatrails-hmac-rotation", "phase-progress"),
            Escalation {
                config: &[(
                    "systems/fiatrails/rpc.json",
                    "systems/fiatrails/rpc-down.json",
                )],
                ..case("fiatrails-rpc-failover", "provider-down-fallback-up")
            },
        ],
    },
    System {
        name: "exchange",
        database: "exchange",
        apis: &[],
        escalations: &[
            case("exchange-ledger-invariant", "double-posting-two-symbols"),
            case("exchange-settlement-lag", "btc-over-t3-eth-over-t2"),
            case("exchange-split-brain", "two-live-leaders"),
            case("exchange-postgres-failover", "corruption-no-archiving"),
            case("exchange-kafka-outage", "outage"),
            case("exchange-routine-checks", "daily-findings"),
        ],
    },
    System {
        name: "loa-finn",
        database: "loa_finn",
        apis: &["http://127.0.0.1:8090", "http://127.0.0.1:8091"],
        escalations: &[
            case("loafinn-treasury-compromise", "mints-to-one-account"),
            case("loafinn-dlq-overflow", "two-finalized-one-unknown"),
            case("loafinn-gate-rollback", "gate-2-to-1"),
        ],
    },
];

/// The example config's PostgreSQL connections point at this prefix.
const EXAMPLE_PG: &str = "postgres://stepgate@127.0.0.1:5432/";

fn example_config_text() -> String {
    std::fs::read_to_string(root().join("examples/stepgate.toml")).unwrap()
}

/// The example config with its PostgreSQL connections on `pg`, its state
/// store in `state_dir`, and `replaced` text replaced.
fn example_config(pg: Option<&PgServer>, state_dir: &Path, replaced: &[(&str, &str)]) -> Config {
    let mut text = example_config_text().replace(
        "path = \"var/stepgate-state.db\"",
        &format!("path = \"{}\"", state_dir.join("state.db").display()),
    );
    for (from, to) in replaced {
        assert!(text.contains(from), "the example config has no `{from}`");
        text = text.replace(from, to);
    }
    if let Some(pg) = pg {
        text = text.replace(EXAMPLE_PG, &pg.url_of_databases());
    }
    let examples = root().join("examples");
    Config::parse(&text, &examples.join("stepgate.toml"), &examples).unwrap()
}

fn scenarios() -> Vec<Scenario> {
    let files = stepgate::scenario::discover(&[root().join("playbooks")]).unwrap();
    files.iter().map(|f| Scenario::load(f).unwrap()).collect()
}

#[test]
fn every_route_takes_the_alerts_of_its_playbooks_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(None, dir.path(), &[]);
    let routes = config.routes().unwrap();
    let scenarios = scenarios();
    let mut routed = BTreeSet::new();
    for scenario in &scenarios {
        // A schedule's run gets an alert named after the schedule.
        if config
            .schedules
            .iter()
            .any(|s| s.name == scenario.alert.name && s.playbook == scenario.playbook)
        {
            continue;
        }
        let taken = stepgate::routing::routes_for(&routes, &scenario.alert);
        let playbooks: Vec<&str> = taken.iter().map(|r| r.playbook.as_str()).collect();
        assert!(
            playbooks.contains(&scenario.playbook.as_str()),
            "the alert of {} ({}) is routed to {playbooks:?}, not to {}",
            scenario.path.display(),
            scenario.alert.name,
            scenario.playbook
        );
        for route in taken {
            routed.insert(route.index);
        }
    }
    for route in &routes {
        assert!(
            routed.contains(&route.index),
            "route #{} (to {}) takes the alert of no scenario of its playbook",
            route.index,
            route.playbook
        );
    }
    // Every playbook of the example config has scenarios, and a route or
    // a schedule that starts it.
    for name in config.playbooks.keys() {
        let count = scenarios.iter().filter(|s| &s.playbook == name).count();
        assert!(count >= 3, "{name} has {count} scenario(s); at least 3");
        assert!(
            routes.iter().any(|r| &r.playbook == name)
                || config.schedules.iter().any(|s| &s.playbook == name),
            "no route or schedule reaches {name}"
        );
    }
}

/// The write's target as its gate sees it, from its journaled arguments.
fn gate_target(call: &str, args: &Json) -> String {
    let key = match call {
        "db.execute" => "conn",
        "rpc.call" | "rpc.http" => "endpoint",
        "flags.set" => "name",
        "pager.page" => "target",
        "pager.notify" => "channel",
        _ => "",
    };
    args[key].as_str().unwrap_or_default().to_owned()
}

/// House rule: humans are told before a run can park on an approval.
/// In every scenario of every shipped playbook, a write the example
/// config's gates send to an approver comes after a page or notice the
/// gates let out at once, and the example config announces every parked
/// write (`server.notify`).
#[test]
fn humans_are_told_before_a_run_parks_on_an_approval() {
    use stepgate::gate::{Gates, Policy};
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(None, dir.path(), &[]);
    assert!(
        config.server.notify.is_some(),
        "the example config announces no parked write: set server.notify"
    );
    let mut checked = 0;
    let mut broken = Vec::new();
    for scenario in scenarios() {
        let Some(expect) = &scenario.expect else {
            continue;
        };
        let gates = Gates::from_config(&config.playbooks[&scenario.playbook].gates).unwrap();
        let policy = |call: &str, args: &Json| gates.policy(call, &gate_target(call, args), &[]);
        let mut told = false;
        for write in expect.writes.iter().flatten() {
            let args: Json = serde_json::to_value(&write.args).unwrap();
            let call = write.call.as_str();
            if matches!(call, "pager.page" | "pager.notify") && policy(call, &args) == Policy::Auto
            {
                told = true;
            }
            if policy(call, &args) == Policy::Approve {
                if !told {
                    broken.push(format!(
                        "{}: {call} parks for approval before any human is paged or told",
                        scenario.path.display()
                    ));
                }
                checked += 1;
                break;
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(checked > 20, "only {checked} scenarios park on an approval");
}

/// A write that changes the system: call, gate target, which write of
/// that target it is (the route, the statement, the method), and its gate
/// decision in a live scenario.
type SystemWrite = (String, String, String, Option<String>);

/// The writes of an expectation that change the system (not pages or
/// notices to humans).
fn system_writes(expect: &stepgate::scenario::Expect) -> Vec<SystemWrite> {
    expect
        .writes
        .iter()
        .flatten()
        .filter(|w| !matches!(w.call.as_str(), "pager.page" | "pager.notify"))
        .map(|w| {
            let args: Json = serde_json::to_value(&w.args).unwrap();
            let text = |key: &str| args[key].as_str().unwrap_or_default().to_owned();
            let which = match w.call.as_str() {
                "rpc.http" => format!("{} {}", text("method"), text("path")),
                "db.execute" => text("sql"),
                "rpc.call" => text("method"),
                _ => String::new(),
            };
            (
                w.call.clone(),
                gate_target(&w.call, &args),
                which,
                w.gate.clone(),
            )
        })
        .collect()
}

/// House rule: an outcome never claims a write that was refused, failed
/// or only planned. Every scenario pins its outcome's summary; a dry run
/// that plans a change says so in it, and a live run whose change was
/// refused says that.
#[test]
fn an_outcome_never_claims_a_write_that_was_not_made() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for scenario in scenarios() {
        let Some(expect) = &scenario.expect else {
            continue;
        };
        let path = scenario.path.display();
        let Some(status) = &expect.status else {
            broken.push(format!("{path}: the expectation pins no `status`"));
            continue;
        };
        if status != "done" {
            if expect.error.is_none() {
                broken.push(format!(
                    "{path}: a run that does not finish pins its `error`"
                ));
            }
            continue;
        }
        let Some(stepgate::scenario::TextMatch::Exact(summary)) = &expect.summary else {
            broken.push(format!(
                "{path}: the expectation pins no `summary`, word for word"
            ));
            continue;
        };
        let writes = system_writes(expect);
        if writes.is_empty() {
            continue;
        }
        checked += 1;
        if scenario.mode == stepgate::gate::Mode::DryRun && !summary.contains("dry run") {
            broken.push(format!(
                "{path}: a dry run plans {} but its summary does not say it was a dry run: {summary}",
                writes.iter().map(|(c, t, _, _)| format!("{c} {t}")).collect::<Vec<_>>().join(", ")
            ));
        }
        let refused = writes
            .iter()
            .any(|(_, _, _, gate)| gate.as_deref() == Some("denied"));
        if refused && !summary.contains("refused") && !summary.contains("NOT") {
            broken.push(format!(
                "{path}: a write was refused but the summary does not say so: {summary}"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(checked > 30, "only {checked} scenarios plan a change");
}

/// House rule: every write has a `mode = "live"` scenario in which an
/// approver refuses it, so the refused branch runs: for each playbook,
/// each change it plans in any scenario (call and target) that the
/// example config sends to an approver.
#[test]
fn every_write_has_a_live_scenario_where_it_is_refused() {
    use stepgate::gate::{Gates, Policy};
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(None, dir.path(), &[]);
    let mut planned: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let mut refused: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for scenario in scenarios() {
        let Some(expect) = &scenario.expect else {
            continue;
        };
        let gates = Gates::from_config(&config.playbooks[&scenario.playbook].gates).unwrap();
        for (call, target, which, gate) in system_writes(expect) {
            if gates.policy(&call, &target, &[]) != Policy::Approve {
                continue;
            }
            let key = (scenario.playbook.clone(), call, target, which);
            if scenario.mode == stepgate::gate::Mode::Live && gate.as_deref() == Some("denied") {
                refused.insert(key.clone());
            }
            planned.insert(key);
        }
    }
    let missing: Vec<String> = planned
        .difference(&refused)
        .map(|(p, c, t, w)| format!("{p}: {c} {t} {w}"))
        .collect();
    assert!(
        missing.is_empty(),
        "writes with no live scenario that refuses them:\n{}",
        missing.join("\n")
    );
    assert!(planned.len() > 15, "only {} approved writes", planned.len());
}

/// House rule, the failure branch: every playbook that makes a change an
/// approver decides has a `mode = "live"` scenario in which a change is
/// approved and then fails, and whose summary says so in the words a
/// failure gets (`NOT … (failed: …)`, or `refused or failed` for a list).
#[test]
fn every_playbook_has_a_live_scenario_where_an_approved_write_fails() {
    use stepgate::gate::{Gates, Policy};
    let dir = tempfile::tempdir().unwrap();
    let config = example_config(None, dir.path(), &[]);
    let mut writers = BTreeSet::new();
    let mut failing = BTreeSet::new();
    for scenario in scenarios() {
        let Some(expect) = &scenario.expect else {
            continue;
        };
        let gates = Gates::from_config(&config.playbooks[&scenario.playbook].gates).unwrap();
        let writes = system_writes(expect);
        if writes
            .iter()
            .any(|(call, target, _, _)| gates.policy(call, target, &[]) == Policy::Approve)
        {
            writers.insert(scenario.playbook.clone());
        }
        let approved = writes
            .iter()
            .any(|(_, _, _, gate)| gate.as_deref() == Some("approved"));
        let said = expect
            .summary
            .as_ref()
            .and_then(stepgate::scenario::TextMatch::exact)
            .is_some_and(|s| s.contains("(failed:") || s.contains("refused or failed"));
        if scenario.mode == stepgate::gate::Mode::Live && approved && said {
            failing.insert(scenario.playbook.clone());
        }
    }
    let missing: Vec<&String> = writers.difference(&failing).collect();
    assert!(
        missing.is_empty(),
        "playbooks with no live scenario where an approved write fails: {missing:?}"
    );
    assert!(writers.len() > 15, "only {} playbooks write", writers.len());
}

/// Addresses, keys and hosts of local test chains (Anvil, Hardhat and
/// ganache's deterministic accounts, the contracts the first of them
/// deploys, the default node port): a playbook never falls back on one.
const TEST_CHAIN: &[&str] = &[
    "f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
    "70997970c51812dc3a010c7d01b50e0d17dc79c8",
    "3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
    "90f79bf6eb2c4f870365e785982e1f101e93b906",
    "15d34aaf54267db7d7c367839aaf71a00a2c6a65",
    "9965507d1a55bcc2695c58ba16fb37d819b0a4dc",
    "976ea74026e726554db657fa54763abd0c3a0aa9",
    "14dc79964da2c08b23698b3d3cc7ca32193d9955",
    "23618e81e3f5cdf7f54c3d65f7fbc0abf5b21e8f",
    "a0ee7a142d267c1f36714e4a8f75612f20a79720",
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "90f8bf6a479f320ead074411a4b0e7944ea8c9c1",
    "4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d",
    "5fbdb2315678afecb367f032d93f642f64180aa3",
    "e7f1725e7734ce288f8367e1bb143e90bb3f0512",
    "9fe46736679d2d9a65f0992f2272de9f3c7fa6e0",
    "cf7ed3acca5a467e9e704c703e8d87f634fb0fc9",
    ":8545",
    "31337",
];

/// House rule: no hard-coded address, host or key of a test chain as a
/// default in any playbook's code (its scenarios may use them as data).
#[test]
fn no_playbook_falls_back_on_a_test_chain() {
    let mut sources = Vec::new();
    let mut stack = vec![root().join("playbooks")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "scenarios" && name != "target" {
                    stack.push(path);
                }
            } else if ["rs", "py", "js"]
                .iter()
                .any(|ext| path.extension().is_some_and(|e| e == *ext))
            {
                sources.push(path);
            }
        }
    }
    assert!(
        sources.len() > 15,
        "found only {} playbook sources",
        sources.len()
    );
    let mut found = Vec::new();
    for path in &sources {
        let text = std::fs::read_to_string(path).unwrap().to_ascii_lowercase();
        for needle in TEST_CHAIN {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", path.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "test-chain defaults in playbooks:\n{}",
        found.join("\n")
    );
}

/// The planned writes of a run or of an expectation, free text aside:
/// `call` and the arguments that decide (targets, names, values, SQL and
/// its parameters).
fn decisions(writes: impl Iterator<Item = (String, Json)>) -> Vec<String> {
    writes
        .map(|(call, mut args)| {
            if let Some(args) = args.as_object_mut() {
                for free_text in ["details", "message", "reason"] {
                    args.remove(free_text);
                }
            }
            // Keys sorted: the same arguments whatever order they came in.
            format!("{call} {}", stepgate::canonical::json_text(&args))
        })
        .collect()
}

/// `n` sessions on `database`, each idle inside an open transaction until
/// dropped.
async fn idle_transactions(pg: &PgServer, database: &str, n: usize) -> Vec<sqlx::PgConnection> {
    use sqlx::Connection;
    let mut sessions = Vec::new();
    for _ in 0..n {
        let mut conn = sqlx::PgConnection::connect(&pg.url(database))
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN; SELECT 1;")
            .execute(&mut conn)
            .await
            .unwrap();
        sessions.push(conn);
    }
    sessions
}

/// Time that starts at a scenario's `now` and runs on.
struct ScenarioTime {
    start_ms: i64,
    since: std::time::Instant,
}

#[async_trait::async_trait]
impl stepgate::backends::Clock for ScenarioTime {
    fn now_ms(&self) -> i64 {
        self.start_ms + self.since.elapsed().as_millis() as i64
    }
    async fn sleep(&self, wait: std::time::Duration) {
        tokio::time::sleep(wait).await
    }
}

/// Serves `examples/systems/<system>/api.json` (`"METHOD /path"` → status
/// and JSON body) on loopback: the admin and partner APIs of the example
/// system, which has no running services. Returns its base URL.
async fn example_api(system: &str) -> String {
    use axum::http::{Method, StatusCode, Uri};
    let file = root()
        .join("examples/systems")
        .join(system)
        .join("api.json");
    let routes: serde_json::Map<String, Json> =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let routes = std::sync::Arc::new(routes);
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let routes = routes.clone();
        async move {
            match routes.get(&format!("{method} {}", uri.path())) {
                Some(answer) => (
                    StatusCode::from_u16(answer["status"].as_u64().unwrap_or(200) as u16).unwrap(),
                    axum::Json(answer["body"].clone()),
                ),
                None => (StatusCode::NOT_FOUND, axum::Json(Json::Null)),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn escalation_plan_on_postgres(system: &System, pg: &PgServer) {
    for case in system.escalations {
        escalation_plan_on_postgres_case(system, case, pg);
    }
}

/// Runs `case` as a dry run against `system`'s seeded database on `pg` and
/// asserts it plans what its scenario expects.
fn escalation_plan_on_postgres_case(system: &System, case: &Escalation, pg: &PgServer) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = (!system.apis.is_empty()).then(|| rt.block_on(example_api(system.name)));
    {
        let state = tempfile::tempdir().unwrap();
        let mut replaced: Vec<(&str, &str)> = case.config.to_vec();
        if let Some(api) = &api {
            replaced.extend(system.apis.iter().map(|from| (*from, api.as_str())));
        }
        let path: PathBuf = root()
            .join("playbooks")
            .join(case.playbook)
            .join("scenarios")
            .join(format!("{}.toml", case.scenario));
        let scenario = Scenario::load(&path).unwrap();
        let mut runtime = Runtime::new(example_config(Some(pg), state.path(), &replaced)).unwrap();
        // The playbook's clock starts at the scenario's time (the alert's
        // age is part of its decision); the database keeps its own.
        let backends = std::sync::Arc::try_unwrap(runtime.backends)
            .ok()
            .expect("a fresh runtime's backends are its own");
        runtime.backends =
            std::sync::Arc::new(backends.with_clock(std::sync::Arc::new(ScenarioTime {
                start_ms: scenario.now_ms,
                since: std::time::Instant::now(),
            })));
        let runtime = &runtime;
        let expect = scenario.expect.clone().expect("the scenario has [expect]");
        let _idle = rt.block_on(idle_transactions(
            pg,
            system.database,
            case.idle_transactions,
        ));
        let report = rt.block_on(run_unattended(
            runtime,
            case.playbook,
            scenario.alert.clone(),
            Mode::DryRun,
        ));
        let outcome = match &report.end {
            stepgate::run::RunEnd::Done(outcome) => outcome.clone(),
            other => panic!(
                "{} on {} did not finish: {other:?}\n(PostgreSQL on port {})",
                case.playbook, system.name, pg.port
            ),
        };
        assert_eq!(
            outcome.severity, expect.severity,
            "{}: severity on the seeded system",
            case.playbook
        );
        let got = decisions(
            report
                .journal
                .iter()
                .filter(|e| e.is_write())
                .map(|e| (format!("{}.{}", e.interface, e.op), e.args.clone())),
        );
        let expected = decisions(expect.writes.iter().flatten().map(|w| {
            (
                w.call.clone(),
                stepgate::scenario::values::toml_to_json(&w.args),
            )
        }));
        assert_eq!(
            got, expected,
            "{}: the plan on the seeded {} database is not the one {} expects",
            case.playbook, system.name, case.scenario
        );
    }
}

#[test]
fn every_playbook_plans_its_escalation_on_its_seeded_postgres_system() {
    // A cluster of its own: the playbooks count the cluster's sessions.
    let pg = PgServer::own_cluster();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for system in SYSTEMS {
        let dir = root().join("examples/systems").join(system.name);
        let schema = std::fs::read_to_string(dir.join("schema.sql")).unwrap();
        let seed = std::fs::read_to_string(dir.join("seed.sql")).unwrap();
        pg.create_database(system.database);
        rt.block_on(async {
            pg.exec(system.database, &schema).await;
            pg.exec(system.database, &seed).await;
        });
    }
    drop(rt);
    for system in SYSTEMS {
        escalation_plan_on_postgres(system, &pg);
    }
}

/// Plaza with its money as NUMERIC(20,6) USDC, the usual PostgreSQL
/// choice, instead of integer micro-units: the reconciliation-drift
/// playbook reads the same amounts and plans the same writes (it once
/// failed triage on `12500.000000` and paused custodied mode as
/// "unverified").
#[test]
fn plaza_money_as_numeric_usdc_plans_as_integer_micro_units() {
    const NUMERIC: &str = "ALTER TABLE ledger_entries ALTER COLUMN amount TYPE numeric(20, 6) USING amount / 1000000.0; \
         ALTER TABLE escrow_holds ALTER COLUMN amount TYPE numeric(20, 6) USING amount / 1000000.0";
    const UNBALANCED: &str = "INSERT INTO ledger_entries (id, txn_id, account_id, amount, direction, created_at) \
         VALUES (9, 't-1004', 'escrow:order:1001', 5.000000, 1, '2026-11-23T08:00:00Z')";
    let pg = PgServer::start();
    let dir = root().join("examples/systems/plaza");
    let schema = std::fs::read_to_string(dir.join("schema.sql")).unwrap();
    let seed = std::fs::read_to_string(dir.join("seed.sql")).unwrap();
    for (scenario, unbalanced) in [("drift-unexplained", false), ("numeric-money", true)] {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let plaza = pg.database("plaza");
        rt.block_on(async {
            pg.exec("postgres", &format!("DROP DATABASE IF EXISTS {plaza}"))
                .await;
            pg.exec("postgres", &format!("CREATE DATABASE {plaza}"))
                .await;
            pg.exec("plaza", &schema).await;
            pg.exec("plaza", &seed).await;
            pg.exec("plaza", NUMERIC).await;
            if unbalanced {
                pg.exec("plaza", UNBALANCED).await;
            }
        });
        drop(rt);
        let system = System {
            name: "plaza",
            database: "plaza",
            apis: &[],
            escalations: &[],
        };
        let case = Escalation {
            config: &[(PLAZA_ON_SQLITE, PLAZA_ON_POSTGRES)],
            ..case("plaza-reconciliation-drift", scenario)
        };
        escalation_plan_on_postgres_case(&system, &case, &pg);
    }
}

/// House rule: a threshold the runbook does not state is a named,
/// documented setting. Every shipped playbook, in any language, has a
/// README with its settings and local choices, and every number a playbook
/// names at its top level (Rust `const NAME: i64 = …`, Python `NAME = 10`,
/// JavaScript `const NAME = 10;`) is listed in it. A port (`NAME-py`,
/// `NAME-js`) shares its original's README.
#[test]
fn every_playbook_lists_its_settings_and_local_choices() {
    let mut broken = Vec::new();
    let mut named = 0;
    let mut languages = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("playbooks")).unwrap() {
        let dir = entry.unwrap().path();
        let Some((language, source)) = ["src/lib.rs", "app.py", "app.js"]
            .iter()
            .map(|f| dir.join(f))
            .find(|f| f.exists())
            .map(|f| {
                (
                    f.extension().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(f).unwrap(),
                )
            })
        else {
            continue;
        };
        let is_playbook = match language.as_str() {
            "rs" => source.contains("stepgate_sdk::playbook!"),
            "py" => source.contains("stepgate.export("),
            _ => source.contains("playbook({"),
        };
        if !is_playbook {
            continue;
        }
        languages.insert(language.clone());
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let original = ["-py", "-js"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .map(|o| root().join("playbooks").join(o))
            .filter(|o| o.join("README.md").exists());
        let readme = std::fs::read_to_string(original.as_ref().unwrap_or(&dir).join("README.md"))
            .unwrap_or_default();
        if !readme.contains("## Local choices") {
            broken.push(format!(
                "{}: no README with `## Local choices`",
                dir.display()
            ));
        }
        for line in source.lines() {
            if let Some(constant) = named_number(&language, line) {
                named += 1;
                if !readme.contains(&format!("`{constant}`")) {
                    broken.push(format!(
                        "{}: `{constant}` is not in its README",
                        dir.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    assert!(named > 10, "only {named} named numbers found");
    assert_eq!(languages.len(), 3, "playbooks in {languages:?} only");
}

/// The name of a number a top-level source line names, if it does.
fn named_number(language: &str, line: &str) -> Option<String> {
    let is_number = |text: &str| {
        let text = text.trim().trim_end_matches(';').trim();
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || c == '_' || c == '.')
    };
    let is_name = |text: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    match language {
        "rs" => {
            let rest = line.trim_start_matches("pub ").strip_prefix("const ")?;
            let (name, ty) = rest.split_once(':')?;
            let ty = ty.split('=').next().unwrap_or("").trim();
            ["i64", "u64", "u32", "usize", "f64", "i32"]
                .contains(&ty)
                .then(|| name.to_owned())
        }
        "py" => {
            let (name, value) = line.split_once(" = ")?;
            (is_name(name) && is_number(value)).then(|| name.to_owned())
        }
        _ => {
            let (name, value) = line.strip_prefix("const ")?.split_once(" = ")?;
            (is_name(name) && is_number(value)).then(|| name.to_owned())
        }
    }
}
