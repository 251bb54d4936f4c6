//! `stepgate test`, `replay` and `scenario from-journal` as CI uses them,
//! on the drift fixture and three copies of it changed on purpose (a
//! threshold moved, two writes swapped, a write added): each change is
//! caught by both the scenario and the replay, with the diff asserted.

use crate::support::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SCENARIO: &str = r#"description = "Held 500, over the threshold of 100: pause, then page"
# The world, written by hand.
unset_flags = ["KILL_SWITCH"]

[alert]
name = "DriftHigh"

[[db]]
conn = "ledger"
sql = """
SELECT held
  FROM balances WHERE id = ?1;"""
params = [1]
columns = ["held"]
rows = [[500]]

[expect]
status = "done"
severity = "SEV-0"
fields = { held = 500 }
steps = ["Read", "Mitigate"]
writes = [
  { call = "flags.set", args = { name = "KILL_SWITCH", value = "1", reason = "held 500 is over 100" } },
  { call = "pager.page", args = { target = "ceo", severity = "critical", summary = "drift over threshold", details = "held 500" } },
]
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ledger.sql"),
            "CREATE TABLE balances (id INTEGER PRIMARY KEY, held INTEGER NOT NULL);\nINSERT INTO balances VALUES (1, 500);\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("alert.json"),
            r#"{"labels": {"alertname": "DriftHigh"}}"#,
        )
        .unwrap();
        let scenarios = dir.path().join("playbooks/drift/scenarios");
        std::fs::create_dir_all(&scenarios).unwrap();
        std::fs::write(scenarios.join("over-threshold.toml"), SCENARIO).unwrap();
        let fixture = Fixture { dir };
        fixture.use_component(stepgate_artifacts::DRIFT);
        fixture
    }

    /// Points playbook `drift` at `component` (a new build of it).
    fn use_component(&self, component: &str) {
        std::fs::write(
            self.path("stepgate.toml"),
            format!(
                r#"
[state]
path = "state.db"
[db.ledger]
url = "sqlite::memory:"
fixture_sql = ["ledger.sql"]
[flags.main]
kind = "builtin"
names = ["KILL_SWITCH"]
[pager.targets.ceo]
kind = "file"
path = "pages.jsonl"
[pager.channels.incident]
kind = "file"
path = "pages.jsonl"
[playbooks.drift]
component = "{component}"
grants.db.ledger = {{}}
grants.flags = {{ read = ["KILL_SWITCH"], write = ["KILL_SWITCH"] }}
grants.pager = {{ targets = ["ceo"], channels = ["incident"] }}
"#
            ),
        )
        .unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn scenario(&self) -> PathBuf {
        self.path("playbooks/drift/scenarios/over-threshold.toml")
    }

    fn stepgate(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn test(&self, extra: &[&str]) -> (Option<i32>, String) {
        let mut args = vec!["test"];
        args.extend_from_slice(extra);
        let out = self.stepgate(&args);
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    }
}

const SET: &str = r#"flags.set {"name":"KILL_SWITCH","reason":"held 500 is over 100","value":"1"}"#;
const PAGE: &str = r#"pager.page {"details":"held 500","severity":"critical","summary":"drift over threshold","target":"ceo"}"#;

#[test]
fn a_scenario_catches_each_change_with_a_readable_diff() {
    let f = Fixture::new();
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok    drift/over-threshold"), "{out}");
    assert!(out.contains("1 scenarios: 1 passed, 0 failed"), "{out}");

    f.use_component(stepgate_artifacts::DRIFT_THRESHOLD_MOVED);
    let (code, out) = f.test(&["--junit", "report.xml"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL  drift/over-threshold"), "{out}");
    assert!(out.contains(r#"severity: - "SEV-0"  + "SEV-2""#), "{out}");
    assert!(out.contains(&format!("    - #1 {SET}")), "{out}");
    assert!(out.contains(&format!("    - #2 {PAGE}")), "{out}");
    assert!(!out.contains("    + #"), "no write planned: {out}");
    let junit = std::fs::read_to_string(f.path("report.xml")).unwrap();
    assert!(
        junit.contains(r#"<testsuite name="drift" tests="1""#),
        "{junit}"
    );
    assert!(junit.contains("failures=\"1\""), "{junit}");
    assert!(junit.contains("<failure"), "{junit}");

    f.use_component(stepgate_artifacts::DRIFT_WRITES_SWAPPED);
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("    - #1 {SET}\n          + #1 {PAGE}"))
            || out.contains(&format!("    - #1 {SET}\n      + #1 {PAGE}")),
        "{out}"
    );
    assert!(out.contains(&format!("+ #2 {SET}")), "{out}");

    f.use_component(stepgate_artifacts::DRIFT_WRITE_ADDED);
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("      #1 {SET}")),
        "unchanged writes stay: {out}"
    );
    assert!(
        out.contains(r#"+ #3 pager.notify {"channel":"incident","message":"paused at held 500"}"#),
        "{out}"
    );
}

#[test]
fn a_replay_catches_each_change_at_the_first_different_call() {
    let f = Fixture::new();
    let recorded = f.stepgate(&[
        "run",
        "drift",
        "--alert",
        "alert.json",
        "--record",
        "run.json",
    ]);
    assert_eq!(
        recorded.status.code(),
        Some(0),
        "{}",
        text(&recorded.stderr)
    );
    let replay = |component: Option<&str>| {
        let mut args = vec!["replay", "run.json"];
        if let Some(c) = component {
            args.extend(["--playbook", c]);
        }
        let out = f.stepgate(&args);
        (out.status.code(), text(&out.stdout) + &text(&out.stderr))
    };
    let (code, out) = replay(None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("same decisions: 4 calls"), "{out}");

    let (code, out) = replay(Some(stepgate_artifacts::DRIFT_THRESHOLD_MOVED));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("diverged at call #3"), "{out}");
    assert!(out.contains("- recorded: flags.set"), "{out}");
    assert!(out.contains("+ now:      to finish"), "{out}");

    let (code, out) = replay(Some(stepgate_artifacts::DRIFT_WRITES_SWAPPED));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("diverged at call #3"), "{out}");
    assert!(out.contains("+ now:      pager.page"), "{out}");

    let (code, out) = replay(Some(stepgate_artifacts::DRIFT_WRITE_ADDED));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("diverged at call #5"), "{out}");
    assert!(
        out.contains("- recorded: nothing: the recorded run made no more calls"),
        "{out}"
    );
    assert!(out.contains("+ now:      pager.notify"), "{out}");

    // Not a recording: a clear error, exit 2.
    std::fs::write(f.path("junk.json"), "{}").unwrap();
    let out = f.stepgate(&["replay", "junk.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a stepgate recording"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unanswered_read_fails_with_the_snippet_to_add() {
    let f = Fixture::new();
    let without_db = SCENARIO.replace("[[db]]\nconn = \"ledger\"", "[[db]]\nconn = \"elsewhere\"");
    std::fs::write(f.scenario(), without_db).unwrap();
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "the scenario does not answer db.query on `ledger`: SELECT held FROM balances WHERE id = ?1"
        ),
        "{out}"
    );
    assert!(out.contains("over-threshold.toml:"), "{out}");
    for line in [
        "[[db]]",
        "conn = \"ledger\"",
        "sql = \"SELECT held FROM balances WHERE id = ?1\"",
        "params = [1]",
        "columns = []",
    ] {
        assert!(out.contains(&format!("          {line}")), "{line}: {out}");
    }
}

/// A run that stops at its first unanswered read is run again with that
/// answer filled in, until every read is found: all of them are reported
/// at once, in one block that, pasted into the file, answers them all.
#[test]
fn every_unanswered_read_is_reported_at_once_in_one_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(
        path("stepgate.toml"),
        format!(
            r#"
[db.plaza]
url = "sqlite::memory:"
[rpc.base]
kind = "json-rpc"
urls = ["http://127.0.0.1:9"]
methods = {{ eth_blockNumber = "read" }}
[flags.main]
kind = "builtin"
names = ["BENCH_*"]
[playbooks.hostile]
component = "{}"
grants.db.plaza = {{}}
grants.rpc.base.methods = ["eth_blockNumber"]
grants.flags = {{ read = ["BENCH_*"] }}
"#,
            stepgate_artifacts::HOSTILE
        ),
    )
    .unwrap();
    let scenarios = path("playbooks/hostile/scenarios");
    std::fs::create_dir_all(&scenarios).unwrap();
    let file = scenarios.join("reads.toml");
    let alert = "[alert]\nname = \"Reads\"\nlabels = { mode = \"reads\" }\n";
    std::fs::write(&file, alert).unwrap();
    let test = || {
        let out = Command::new(env!("CARGO_BIN_EXE_stepgate"))
            .args(["test"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let out = test();
    assert!(out.contains("does not answer 3 calls:"), "{out}");
    for call in [
        "  - flags.get BENCH_A",
        "  - flags.get BENCH_B",
        "  - rpc.call base eth_blockNumber",
    ] {
        assert!(out.contains(call), "{call}: {out}");
    }
    // One [flags] table for both flags, then the RPC answer.
    assert_eq!(out.matches("[flags]").count(), 1, "{out}");
    let block: String = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("add to "))
        .skip(1)
        .take_while(|l| l.starts_with("          "))
        .map(|l| format!("{}\n", &l[10..]))
        .collect();
    assert!(block.contains("[[rpc]]"), "{block}");
    std::fs::write(&file, format!("{alert}\n{block}")).unwrap();
    let out = test();
    assert!(!out.contains("does not answer"), "{out}");
    assert!(out.contains("no [expect] section"), "{out}");

    // A file with a [flags] table of its own: the flag answers go there.
    std::fs::write(&file, format!("{alert}\n[flags]\nBENCH_A = \"1\"\n")).unwrap();
    let out = test();
    assert!(out.contains("does not answer 2 calls:"), "{out}");
    let under = out.find("add under [flags] in").expect(&out);
    let at_end = out.find("add to ").expect(&out);
    assert!(under < at_end, "{out}");
    assert!(out[under..at_end].contains("BENCH_B = \"\""), "{out}");
    assert!(!out[at_end..].contains("BENCH_B"), "{out}");
}

#[test]
fn update_records_what_the_playbook_decides_and_keeps_the_rest() {
    let f = Fixture::new();
    let without_expect = &SCENARIO[..SCENARIO.find("[expect]").unwrap()];
    std::fs::write(f.scenario(), without_expect).unwrap();
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(1));
    assert!(out.contains("no [expect] section"), "{out}");

    let (code, out) = f.test(&["--update"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("updated: "), "{out}");
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(0), "the recorded expectation passes: {out}");
    let written = std::fs::read_to_string(f.scenario()).unwrap();
    assert!(
        written.starts_with(without_expect),
        "the world is kept as written:\n{written}"
    );
    assert!(written.contains("# The world, written by hand."));

    // The playbook changes on purpose: --update records the new decisions,
    // and the old build now fails against them.
    f.use_component(stepgate_artifacts::DRIFT_WRITES_SWAPPED);
    assert_eq!(f.test(&[]).0, Some(1));
    assert_eq!(f.test(&["--update", "--filter", "drift/over"]).0, Some(0));
    assert_eq!(f.test(&[]).0, Some(0));
    let written = std::fs::read_to_string(f.scenario()).unwrap();
    let (page, set) = (
        written.find("pager.page").unwrap(),
        written.find("flags.set").unwrap(),
    );
    assert!(page < set, "the writes in their new order:\n{written}");
    f.use_component(stepgate_artifacts::DRIFT);
    assert_eq!(f.test(&[]).0, Some(1));
}

#[test]
fn a_recorded_run_becomes_a_passing_scenario() {
    let f = Fixture::new();
    let recorded = f.stepgate(&["run", "drift", "--alert", "alert.json", "--json"]);
    assert_eq!(
        recorded.status.code(),
        Some(0),
        "{}",
        text(&recorded.stderr)
    );
    let run_id = serde_json::from_slice::<serde_json::Value>(&recorded.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let exported = f.stepgate(&["export", &run_id, "--out", "exported.json"]);
    assert_eq!(
        exported.status.code(),
        Some(0),
        "{}",
        text(&exported.stderr)
    );
    std::fs::remove_file(f.scenario()).unwrap();
    let made = f.stepgate(&[
        "scenario",
        "from-journal",
        "exported.json",
        "--out",
        "playbooks/drift/scenarios/from-incident.toml",
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    assert!(
        text(&made.stderr).is_empty(),
        "it passes as made: {}",
        text(&made.stderr)
    );
    let scenario =
        std::fs::read_to_string(f.path("playbooks/drift/scenarios/from-incident.toml")).unwrap();
    assert!(scenario.contains("rows = [[500]]"), "{scenario}");
    let (code, out) = f.test(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ok    drift/from-incident"), "{out}");
    let _ = Path::new(".");
}

/// A live scenario: writes pass their gates, the approvers decide as the
/// scenario says, and a denial or a failing pager is the playbook's to
/// handle: here the drift fixture gives up, and the scenario says so.
#[test]
fn a_live_scenario_plays_out_approvals_and_failures() {
    let f = Fixture::new();
    let live = |world: &str, expect: &str| {
        let body = SCENARIO[..SCENARIO.find("[expect]").unwrap()].replace(
            "unset_flags = [\"KILL_SWITCH\"]",
            "unset_flags = [\"KILL_SWITCH\"]\nmode = \"live\"",
        );
        std::fs::write(f.scenario(), format!("{body}{world}\n{expect}")).unwrap();
        f.test(&[])
    };
    let denied = r#"
[[approvals]]
call = "flags.set"
target = "KILL_SWITCH"
decision = "deny"
by = "alice"
reason = "not during the freeze"
"#;
    let (code, out) = live(
        denied,
        r#"[expect]
status = "failed"
writes = [
  { call = "flags.set", args = { name = "KILL_SWITCH", value = "1", reason = "held 500 is over 100" }, gate = "denied" },
]"#,
    );
    assert_eq!(code, Some(0), "{out}");
    // A decision the run never asked for fails the scenario.
    let (code, out) = live(
        &format!("{denied}\n[[approvals]]\ncall = \"pager.page\"\ndecision = \"approve\"\n"),
        r#"[expect]
status = "failed"
writes = [
  { call = "flags.set", args = { name = "KILL_SWITCH", value = "1", reason = "held 500 is over 100" }, gate = "denied" },
]"#,
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("[[approvals]] #2 (pager.page by `an approver`) was never used"),
        "{out}"
    );

    // Approved, but the pager is down: the flag is set, the page fails.
    let approved_pager_down = r#"
[[approvals]]
call = "flags.set"
decision = "approve"

[pager]
fail = ["ceo"]
"#;
    let (code, out) = live(
        approved_pager_down,
        r#"[expect]
status = "failed"
writes = [
  { call = "flags.set", args = { name = "KILL_SWITCH", value = "1", reason = "held 500 is over 100" }, gate = "approved" },
  { call = "pager.page", args = { target = "ceo", severity = "critical", summary = "drift over threshold", details = "held 500" }, gate = "auto" },
]"#,
    );
    assert_eq!(code, Some(1), "pager.page needs approval by default: {out}");
    assert!(
        out.contains("the scenario does not answer an approval of pager.page on `ceo`"),
        "{out}"
    );
    assert!(out.contains("decision = \"approve\""), "{out}");

    let with_page = format!(
        "{approved_pager_down}\n[[approvals]]\ncall = \"pager.page\"\ndecision = \"approve\"\n"
    );
    let (code, out) = live(
        &with_page,
        r#"[expect]
status = "failed"
writes = [
  { call = "flags.set", args = { name = "KILL_SWITCH", value = "1", reason = "held 500 is over 100" }, gate = "approved" },
  { call = "pager.page", args = { target = "ceo", severity = "critical", summary = "drift over threshold", details = "held 500" }, gate = "approved" },
]"#,
    );
    assert_eq!(code, Some(0), "{out}");
}
