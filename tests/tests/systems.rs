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
            Escalation {
                idle_transactions: 2,
                ..case("rgs-db-connections", "idle-in-transaction-sessions")
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
        text = text.replace(
            EXAMPLE_PG,
            &format!("postgres://postgres@127.0.0.1:{}/", pg.port),
        );
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
    // Every playbook of the example config has scenarios, and routes.
    for name in config.playbooks.keys() {
        let count = scenarios.iter().filter(|s| &s.playbook == name).count();
        assert!(count >= 3, "{name} has {count} scenario(s); at least 3");
        assert!(
            routes.iter().any(|r| &r.playbook == name),
            "no route reaches {name}"
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
    // Playbooks not yet brought under the rule (they rely on
    // `server.notify` alone): the list may only shrink, so each of them
    // must still break it.
    const NOT_YET: &[&str] = &[
        "fiatrails-dlq",
        "fiatrails-rpc-failover",
        "loafinn-dlq-overflow",
        "loafinn-gate-rollback",
        "plaza-notify-saturation",
        "plaza-reconciliation-drift",
        "plaza-rpc-outage",
        "rgs-pending-queue",
        "rgs-stuck-rollbacks",
    ];
    let mut still_breaking = BTreeSet::new();
    let mut checked = 0;
    let mut broken = Vec::new();
    for scenario in scenarios() {
        let Some(expect) = &scenario.expect else {
            continue;
        };
        let gates = Gates::from_config(&config.playbooks[&scenario.playbook].gates).unwrap();
        let policy = |call: &str, args: &Json| gates.policy(call, &gate_target(call, args), &[]);
        let mut told = false;
        for write in &expect.writes {
            let args: Json = serde_json::to_value(&write.args).unwrap();
            let call = write.call.as_str();
            if matches!(call, "pager.page" | "pager.notify") && policy(call, &args) == Policy::Auto
            {
                told = true;
            }
            if policy(call, &args) == Policy::Approve {
                if !told && NOT_YET.contains(&scenario.playbook.as_str()) {
                    still_breaking.insert(scenario.playbook.clone());
                } else if !told {
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
    for name in NOT_YET {
        assert!(
            still_breaking.contains(*name),
            "{name} now tells its humans first: take it off NOT_YET"
        );
    }
    assert!(checked > 10, "only {checked} scenarios park on an approval");
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
            format!("{call} {args}")
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
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = (!system.apis.is_empty()).then(|| rt.block_on(example_api(system.name)));
    for case in system.escalations {
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
        let expected = decisions(expect.writes.iter().map(|w| {
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
    let pg = PgServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for system in SYSTEMS {
        let dir = root().join("examples/systems").join(system.name);
        let schema = std::fs::read_to_string(dir.join("schema.sql")).unwrap();
        let seed = std::fs::read_to_string(dir.join("seed.sql")).unwrap();
        rt.block_on(async {
            pg.exec("postgres", &format!("CREATE DATABASE {}", system.database))
                .await;
            pg.exec(system.database, &schema).await;
            pg.exec(system.database, &seed).await;
        });
    }
    drop(rt);
    for system in SYSTEMS {
        escalation_plan_on_postgres(system, &pg);
    }
}
