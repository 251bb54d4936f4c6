//! `stepgate new NAME --lang rust|python|js`: a playbook folder that builds,
//! describes itself, runs, and passes its one scenario, in the language the
//! author knows; and its entry in the operator's config, so `stepgate
//! build` then `stepgate test` work straight away.
//!
//! Every language gets the same playbook (a triage step, a gated page to the
//! on-call, an outcome with a severity and a checklist) and the same
//! scenarios: the scaffold is a small parity test of its own. With
//! `--kill-switch` it also reads and sets a pause flag of its own, kept in
//! a built-in flag store the config gains for it; without, the config
//! gains no store, only the `on-call` pager target if it has none.
//!
//! Templates fill `{{var}}`s, and keep a line that starts with `{{kill}}`
//! only with a kill switch.

use std::path::{Path, PathBuf};

use super::Language;
use super::toolchain::default_output;

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "`{0}` is not a playbook name: use lowercase letters, digits and dashes, starting with a letter (e.g. `payments-stuck`)"
    )]
    BadName(String),
    #[error("{0} already exists: pick another name or remove it")]
    Exists(PathBuf),
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `stepgate new` was asked.
pub struct NewPlaybook<'a> {
    pub name: &'a str,
    pub language: Language,
    /// The folder the playbook folder goes into.
    pub parent: &'a Path,
    /// The config to register it in (made if absent).
    pub config: &'a Path,
    /// The Rust SDK (`sdk/rust` of stepgate), for Rust playbooks.
    pub rust_sdk: Option<&'a Path>,
    /// A pause flag of its own, in a built-in flag store, that the
    /// playbook sets (a gated write) before it pages.
    pub kill_switch: bool,
}

/// What was made.
pub struct Scaffolded {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub component: PathBuf,
}

/// Makes the playbook folder and registers it in the config.
pub fn scaffold(request: &NewPlaybook) -> Result<Scaffolded, ScaffoldError> {
    let name = request.name;
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let dir = request.parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let vars = Vars::new(name, request.rust_sdk, request.kill_switch);
    let component = default_output(&dir);
    // The config is checked before anything is written: a refused entry
    // leaves no half-made playbook behind.
    let config_text = registered(request.config, &vars, &component)?;
    let mut files = Vec::new();
    for (path, template) in templates(request.language) {
        let path = dir.join(path);
        write(&path, &vars.fill(template))?;
        files.push(path);
    }
    for (file, template) in [
        ("critical-alert.toml", SCENARIO),
        ("critical-alert-live.toml", LIVE_SCENARIO),
    ] {
        let scenario = dir.join("scenarios").join(file);
        write(&scenario, &vars.fill(template))?;
        files.push(scenario);
    }
    replace_file(request.config, &config_text).map_err(|source| ScaffoldError::Write {
        path: request.config.to_owned(),
        source,
    })?;
    Ok(Scaffolded {
        dir,
        files,
        component,
    })
}

/// Writes `path` whole or not at all: a new file beside it, renamed over
/// it, so an interrupted `stepgate new` never leaves half a config.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".stepgate-new");
    let staged = PathBuf::from(staged);
    std::fs::write(&staged, text)?;
    std::fs::rename(&staged, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })
}

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

fn write(path: &Path, text: &str) -> Result<(), ScaffoldError> {
    let fail = |source| ScaffoldError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail)?;
    }
    std::fs::write(path, text).map_err(fail)
}

/// The values templates are filled with.
struct Vars {
    name: String,
    /// `PAYMENTS_STUCK_PAUSED`
    flag: String,
    /// `payments_stuck`
    snake: String,
    /// `PaymentsStuck`
    camel: String,
    /// `PaymentsStuckPlaybook`: never a name the SDKs use (`Outcome`, `Alert`).
    type_name: String,
    /// The SDK's path as a TOML string, quoted.
    rust_sdk: String,
    /// Whether the playbook has a pause flag of its own.
    kill_switch: bool,
}

impl Vars {
    fn new(name: &str, rust_sdk: Option<&Path>, kill_switch: bool) -> Vars {
        let snake = name.replace('-', "_");
        let camel = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        let rust_sdk = rust_sdk
            .map(|p| {
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.to_owned())
                    .display()
                    .to_string()
            })
            .unwrap_or_else(|| "../stepgate/sdk/rust".to_owned());
        Vars {
            name: name.to_owned(),
            flag: format!("{}_PAUSED", snake.to_ascii_uppercase()),
            snake,
            type_name: format!("{camel}Playbook"),
            camel,
            rust_sdk: toml_string(&rust_sdk),
            kill_switch,
        }
    }

    /// `template` with its `{{kill}}` lines kept or dropped and its
    /// variables filled.
    fn fill(&self, template: &str) -> String {
        let lines: String = template
            .split_inclusive('\n')
            .filter_map(|line| match line.strip_prefix("{{kill}}") {
                Some(rest) => self.kill_switch.then_some(rest),
                None => Some(line),
            })
            .collect();
        let (steps, summary, outcome, todo) = if self.kill_switch {
            (
                r#"["Triage", "Pause", "Page"]"#,
                "Pauses {{name}} and pages the on-call while its alert is critical.",
                "{{name}} paused and the on-call paged while the alert is critical",
                "Find the cause, then unpause: set {{flag}} to 0",
            )
        } else {
            (
                r#"["Triage", "Page"]"#,
                "Pages the on-call when {{name}}'s alert is critical.",
                "The on-call paged: {{name}}'s alert is critical",
                "Find the cause and follow the {{name}} runbook",
            )
        };
        lines
            .replace("{{steps}}", steps)
            .replace("{{summary}}", summary)
            .replace("{{outcome}}", outcome)
            .replace("{{todo}}", todo)
            .replace("{{name}}", &self.name)
            .replace("{{flag}}", &self.flag)
            .replace("{{snake}}", &self.snake)
            .replace("{{camel}}", &self.camel)
            .replace("{{type}}", &self.type_name)
            .replace("{{rust_sdk}}", &self.rust_sdk)
    }
}

/// The pager target every scaffold pages. The config gains one (a file of
/// pages beside it) when it has none.
const ON_CALL: &str = "on-call";

/// The config (made if absent) with the playbook, its grants and gates
/// added, and what it needs that the config lacks: a state store, the
/// `on-call` pager target, and with a kill switch its flag store. It must
/// still load: if it would not, the error says why.
fn registered(config: &Path, vars: &Vars, component: &Path) -> Result<String, ScaffoldError> {
    let name = vars.name.as_str();
    let fail = |message: String| ScaffoldError::Config {
        path: config.to_owned(),
        message,
    };
    let before = match std::fs::read_to_string(config) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(fail(e.to_string())),
    };
    let doc: toml_edit::DocumentMut = before
        .as_deref()
        .unwrap_or("")
        .parse()
        .map_err(|e: toml_edit::TomlError| fail(e.to_string()))?;
    if doc.get("playbooks").and_then(|p| p.get(name)).is_some() {
        return Err(fail(format!("it already has [playbooks.{name}]")));
    }
    let base = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let component = toml_string(&relative_to(component, base));
    let mut entry = String::new();
    // Where runs, approvals and the audit log are kept, if the config
    // does not say yet: a file beside it.
    if doc.get("state").is_none() {
        entry.push_str(
            "\n# Runs, approvals and the audit log: a SQLite file beside this config\n\
             # (or url = { env = \"STEPGATE_STATE_URL\" } for PostgreSQL).\n\
             [state]\npath = \"stepgate-state.db\"\n",
        );
    }
    let has_on_call = doc
        .get("pager")
        .and_then(|p| p.get("targets"))
        .and_then(|t| t.get(ON_CALL))
        .is_some();
    if !has_on_call {
        entry.push_str(&format!(
            "\n# Who a playbook pages: one JSON line a page in a file beside this\n\
             # config, until you swap in kind = \"pagerduty\", \"slack\" or \"webhook\"\n\
             # (docs/configuration.md).\n\
             [pager.targets.{ON_CALL}]\nkind = \"file\"\npath = \"pages.jsonl\"\n"
        ));
    }
    let flag = &vars.flag;
    let (store, flag_grants) = if vars.kill_switch {
        (
            format!(
                "\n# `stepgate new {name} --kill-switch`: the built-in flag store for its\n\
                 # pause flag.\n[flags.{name}]\nkind = \"builtin\"\nnames = [\"{flag}\"]\n"
            ),
            format!("flags.read = [\"{flag}\"]\nflags.write = [\"{flag}\"]\n"),
        )
    } else {
        (String::new(), String::new())
    };
    let example_key = if vars.kill_switch {
        format!("flags.set:{flag}")
    } else {
        format!("pager.page:{ON_CALL}")
    };
    entry.push_str(&format!(
        "{store}\n# `stepgate new {name}`: the component `stepgate build` writes, and\n\
         # what it may touch.\n\
         [playbooks.{name}]\ncomponent = {component}\n\n\
         [playbooks.{name}.grants]\n{flag_grants}pager.targets = [\"{ON_CALL}\"]\n\n\
         # What each write needs before it goes out, live: every write not\n\
         # listed asks an approver; \"auto\" lets one through, \"deny\" stops it,\n\
         # a table sets a quorum, groups and a timeout (docs/configuration.md).\n\
         [playbooks.{name}.gates]\ndefault = \"approve\"\n\
         # \"{example_key}\" = {{ policy = \"approve\", quorum = 2, timeout = \"30m\" }}\n"
    ));
    // Appended as text: the operator's file keeps its order and comments,
    // and the new tables read as one block.
    let mut text = before.unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&entry);
    crate::config::Config::parse(&text, config, base)
        .map_err(|e| fail(format!("adding `{name}` would make it invalid: {e}")))?;
    Ok(text)
}

/// `text` as a TOML string, quoted and escaped.
fn toml_string(text: &str) -> String {
    toml_edit::Value::from(text).to_string().trim().to_owned()
}

/// `path` relative to `base` when it lies under it, else as given.
fn relative_to(path: &Path, base: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (path, base) = (abs(path), abs(base));
    path.strip_prefix(&base)
        .map(Path::to_owned)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn templates(language: Language) -> &'static [(&'static str, &'static str)] {
    match language {
        Language::Rust => &[
            ("Cargo.toml", RUST_CARGO),
            ("src/lib.rs", RUST_LIB),
            ("README.md", RUST_README),
            (".gitignore", "target/\n"),
        ],
        Language::Python => &[
            ("app.py", PYTHON_APP),
            ("README.md", PYTHON_README),
            (".gitignore", "target/\n__pycache__/\n"),
        ],
        Language::JavaScript => &[
            ("app.js", JS_APP),
            ("README.md", JS_README),
            (".gitignore", "target/\n"),
            // What an editor types the playbook with: the SDK's and the
            // WIT's declarations, and a jsconfig.json that checks app.js.
            ("jsconfig.json", JS_CONFIG),
            (
                "stepgate.d.ts",
                include_str!("../../../sdk/js/stepgate.d.ts"),
            ),
            (
                "types/playbook.d.ts",
                include_str!("../../../sdk/js/types/playbook.d.ts"),
            ),
            (
                "types/interfaces/stepgate-playbook-db.d.ts",
                include_str!("../../../sdk/js/types/interfaces/stepgate-playbook-db.d.ts"),
            ),
            (
                "types/interfaces/stepgate-playbook-flags.d.ts",
                include_str!("../../../sdk/js/types/interfaces/stepgate-playbook-flags.d.ts"),
            ),
            (
                "types/interfaces/stepgate-playbook-pager.d.ts",
                include_str!("../../../sdk/js/types/interfaces/stepgate-playbook-pager.d.ts"),
            ),
            (
                "types/interfaces/stepgate-playbook-rpc.d.ts",
                include_str!("../../../sdk/js/types/interfaces/stepgate-playbook-rpc.d.ts"),
            ),
            (
                "types/interfaces/stepgate-playbook-runbook.d.ts",
                include_str!("../../../sdk/js/types/interfaces/stepgate-playbook-runbook.d.ts"),
            ),
            (
                "types/interfaces/stepgate-playbook-types.d.ts",
                include_str!("../../../sdk/js/types/interfaces/stepgate-playbook-types.d.ts"),
            ),
        ],
    }
}

/// Checks app.js against the SDK's declarations in an editor (VS Code and
/// any TypeScript language server); `./stepgate.js` resolves to
/// `stepgate.d.ts` until the build puts the SDK beside it.
const JS_CONFIG: &str = r#"{
  "compilerOptions": {
    "checkJs": true,
    "strict": true,
    "noEmit": true,
    "target": "ES2022",
    "module": "ES2022",
    "moduleResolution": "bundler"
  },
  "include": ["app.js", "stepgate.d.ts", "types/**/*.d.ts"]
}
"#;

const SCENARIO: &str = r#"description = "A critical alert, as a dry run: every write planned, none made"
now = "2026-11-23T09:00:00Z"

[alert]
name = "{{camel}}Critical"
fingerprint = "example-1"
labels = { severity = "critical" }
{{kill}}
{{kill}}[flags]
{{kill}}{{flag}} = "0"

[expect]
status = "done"
severity = "SEV-1"
summary = "{{outcome}}"
steps = {{steps}}
{{kill}}
{{kill}}[expect.fields]
{{kill}}was_paused = false
{{kill}}
{{kill}}[[expect.writes]]
{{kill}}call = "flags.set"
{{kill}}
{{kill}}[expect.writes.args]
{{kill}}name = "{{flag}}"
{{kill}}reason = "{{name}} runbook, step 2: pause while the alert is critical"
{{kill}}value = "1"

[[expect.writes]]
call = "pager.page"

[expect.writes.args]
target = "on-call"
severity = "critical"
summary = "{{name}}: {{camel}}Critical is critical"
details = "The {{name}} runbook: stepgate's run of it has the checklist"
"#;

/// The same alert, live: each write asks an approver (the config's gates),
/// who approves, and the write is made.
const LIVE_SCENARIO: &str = r#"description = "Live: each write goes to an approver, who approves it; then it is made"
mode = "live"
now = "2026-11-23T09:00:00Z"

[alert]
name = "{{camel}}Critical"
fingerprint = "example-1"
labels = { severity = "critical" }
{{kill}}
{{kill}}[flags]
{{kill}}{{flag}} = "0"

# Each entry is one approver's decision (a gate with quorum = 2 takes two,
# with distinct `by`).
{{kill}}[[approvals]]
{{kill}}call = "flags.set"
{{kill}}target = "{{flag}}"
{{kill}}decision = "approve"
{{kill}}by = "oncall"
{{kill}}reason = "critical and not paused"
{{kill}}
[[approvals]]
call = "pager.page"
target = "on-call"
decision = "approve"                 # or deny, timeout
by = "oncall"
reason = "critical: page"

[expect]
status = "done"
severity = "SEV-1"
{{kill}}
{{kill}}[[expect.writes]]
{{kill}}call = "flags.set"
{{kill}}gate = "approved"
{{kill}}
{{kill}}[expect.writes.args]
{{kill}}name = "{{flag}}"
{{kill}}reason = "{{name}} runbook, step 2: pause while the alert is critical"
{{kill}}value = "1"

[[expect.writes]]
call = "pager.page"
gate = "approved"

[expect.writes.args]
target = "on-call"
severity = "critical"
summary = "{{name}}: {{camel}}Critical is critical"
details = "The {{name}} runbook: stepgate's run of it has the checklist"
"#;

const RUST_CARGO: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
stepgate-sdk = { path = {{rust_sdk}} }

# A playbook builds on its own, not as part of a surrounding workspace.
[workspace]
"#;

const RUST_LIB: &str = r#"//! {{name}}: what incident it handles, and which runbook section it codifies.

use stepgate_sdk::prelude::*;

{{kill}}const PAUSED: &str = "{{flag}}";
const ON_CALL: &str = "on-call";

struct {{type}};

impl Playbook for {{type}} {
    fn describe() -> Description {
        Description::new("{{name}}", "0.1.0")
            .summary("{{summary}}")
            .answers("{{camel}}Critical")
{{kill}}            .flag_read(PAUSED)
{{kill}}            .flag_write(PAUSED)
            .page(ON_CALL)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let critical = step("Triage", || alert.label("severity") == Some("critical"));
        if !critical {
            return Ok(Outcome::new("Not critical: nothing to do").severity("SEV-3"));
        }
{{kill}}        let paused = step("Pause", || -> Result<bool> {
{{kill}}            let paused = flags::get(PAUSED)?.as_deref() == Some("1");
{{kill}}            if !paused {
{{kill}}                flags::set(PAUSED, "1", "{{name}} runbook, step 2: pause while the alert is critical")?;
{{kill}}            }
{{kill}}            Ok(paused)
{{kill}}        })?;
        step("Page", || {
            pager::page(
                ON_CALL,
                Severity::Critical,
                &format!("{{name}}: {} is critical", alert.name),
                "The {{name}} runbook: stepgate's run of it has the checklist",
            )
        })?;
        Ok(Outcome::new("{{outcome}}")
            .severity("SEV-1")
{{kill}}            .field("was_paused", paused)
            .todo("{{todo}}"))
    }
}

stepgate_sdk::playbook!({{type}});
"#;

const PYTHON_APP: &str = r#""""{{name}}: what incident it handles, and which runbook section it codifies."""

import stepgate
from stepgate import Description, Outcome, Severity, pager, step
{{kill}}from stepgate import flags

{{kill}}PAUSED = "{{flag}}"
ON_CALL = "on-call"


class {{type}}(stepgate.Playbook):
    def describe(self):
        return (
            Description("{{name}}", "0.1.0")
            .summary("{{summary}}")
            .answers("{{camel}}Critical")
{{kill}}            .flag_read(PAUSED)
{{kill}}            .flag_write(PAUSED)
            .page(ON_CALL)
        )

    def run(self, alert):
        with step("Triage"):
            critical = alert.label("severity") == "critical"
        if not critical:
            return Outcome("Not critical: nothing to do").severity("SEV-3")
{{kill}}        with step("Pause"):
{{kill}}            paused = flags.get(PAUSED) == "1"
{{kill}}            if not paused:
{{kill}}                flags.set(PAUSED, "1", "{{name}} runbook, step 2: pause while the alert is critical")
        with step("Page"):
            pager.page(
                ON_CALL,
                Severity.CRITICAL,
                f"{{name}}: {alert.name} is critical",
                "The {{name}} runbook: stepgate's run of it has the checklist",
            )
        return (
            Outcome("{{outcome}}")
            .severity("SEV-1")
{{kill}}            .field("was_paused", paused)
            .todo("{{todo}}")
        )


WitWorld = stepgate.export({{type}})
"#;

const JS_APP: &str = r#"// {{name}}: what incident it handles, and which runbook section it codifies.

import { playbook, Description, Outcome, pager, step } from './stepgate.js';
{{kill}}import { flags } from './stepgate.js';

{{kill}}const PAUSED = '{{flag}}';
const ON_CALL = 'on-call';

export const { describe, run } = playbook({
  describe() {
    return new Description('{{name}}', '0.1.0')
      .summary("{{summary}}")
      .answers('{{camel}}Critical')
{{kill}}      .flagRead(PAUSED)
{{kill}}      .flagWrite(PAUSED)
      .page(ON_CALL);
  },

  run(alert) {
    const critical = step('Triage', () => alert.label('severity') === 'critical');
    if (!critical) return new Outcome('Not critical: nothing to do').severity('SEV-3');
{{kill}}    const paused = step('Pause', () => {
{{kill}}      const paused = flags.get(PAUSED) === '1';
{{kill}}      if (!paused) flags.set(PAUSED, '1', '{{name}} runbook, step 2: pause while the alert is critical');
{{kill}}      return paused;
{{kill}}    });
    step('Page', () =>
      pager.page(
        ON_CALL,
        'critical',
        `{{name}}: ${alert.name} is critical`,
        "The {{name}} runbook: stepgate's run of it has the checklist",
      ));
    return new Outcome("{{outcome}}")
      .severity('SEV-1')
{{kill}}      .field('was_paused', paused)
      .todo('{{todo}}');
  },
});
"#;

/// A new playbook's README: what it is and its commands, then the
/// sections every playbook's README has (the house rules ask for its
/// settings and local choices).
macro_rules! readme {
    ($intro:literal) => {
        concat!(
            $intro,
            "\n## Settings from the alert\n\nThe labels and annotations it reads.\n\n",
            "## Local choices\n\nThresholds the runbook does not state, each a named constant an ",
            "annotation may override (see the house rules in stepgate's docs/playbooks.md).\n\n",
            "## Left to humans\n\nRunbook steps no capability covers: they stay on the checklist.\n"
        )
    };
}

const RUST_README: &str = readme!(
    "# {{name}}\n\nA stepgate playbook in Rust (`src/lib.rs`, the `stepgate-sdk` crate).\n\n\
```sh\nstepgate build {{name}}        # cargo build --release --target wasm32-wasip2\n\
stepgate test {{name}}         # its scenarios, offline\nstepgate inspect {{name}}\n```\n"
);

const PYTHON_README: &str = readme!(
    "# {{name}}\n\nA stepgate playbook in Python (`app.py`, `import stepgate`).\n\n\
```sh\nstepgate build {{name}}        # componentize-py (pip install componentize-py==0.25.1)\n\
stepgate test {{name}}         # its scenarios, offline\nstepgate inspect {{name}}\n```\n"
);

const JS_README: &str = readme!(
    "# {{name}}\n\nA stepgate playbook in JavaScript (`app.js`, `./stepgate.js` is added at build time).\n\n\
```sh\nstepgate build {{name}}        # componentize-js (npm install @bytecodealliance/componentize-js@0.23.0)\n\
stepgate test {{name}}         # its scenarios, offline\nstepgate inspect {{name}}\n```\n"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_spelled_for_each_language() {
        assert!(valid_name("payments-stuck2"));
        for bad in ["Payments", "-x", "x-", "pay ments", "", "9lives", "a_b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        let vars = Vars::new("payments-stuck", None, false);
        assert_eq!(vars.flag, "PAYMENTS_STUCK_PAUSED");
        assert_eq!(vars.camel, "PaymentsStuck");
        assert_eq!(vars.snake, "payments_stuck");
        assert_eq!(vars.type_name, "PaymentsStuckPlaybook");
        for path in [r#"C:\sdk "x""#, "/home/é/sdk/rust", "it's"] {
            let doc: toml::Table = toml::from_str(&format!("p = {}", toml_string(path))).unwrap();
            assert_eq!(doc["p"].as_str(), Some(path), "round trip");
        }
    }

    #[test]
    fn kill_lines_are_kept_only_with_a_kill_switch() {
        let template = "a {{name}}\n{{kill}}  b {{flag}}\nc {{steps}}\n";
        assert_eq!(
            Vars::new("p", None, false).fill(template),
            "a p\nc [\"Triage\", \"Page\"]\n"
        );
        assert_eq!(
            Vars::new("p", None, true).fill(template),
            "a p\n  b P_PAUSED\nc [\"Triage\", \"Pause\", \"Page\"]\n"
        );
    }

    #[test]
    fn registering_keeps_the_config_and_refuses_a_second_entry_of_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stepgate.toml");
        std::fs::write(
            &config,
            "# mine\n[flags.other]\nkind = \"builtin\"\nnames = [\"OTHER_*\"]\n",
        )
        .unwrap();
        let component = dir.path().join("playbooks/p/target/p.wasm");
        let text = registered(&config, &Vars::new("p", None, false), &component).unwrap();
        std::fs::write(&config, &text).unwrap();
        assert!(text.starts_with("# mine"), "{text}");
        assert!(
            text.contains("component = \"playbooks/p/target/p.wasm\""),
            "{text}"
        );
        let loaded = crate::config::Config::load(&config).unwrap();
        assert!(loaded.playbooks.contains_key("p"));
        // No flag store without a kill switch: the on-call target, once.
        assert_eq!(loaded.flags.len(), 1, "only the operator's: {text}");
        assert!(loaded.pager.targets.contains_key(ON_CALL), "{text}");
        assert_eq!(loaded.playbooks["p"].grants.pager.targets, [ON_CALL]);
        assert!(loaded.playbooks["p"].grants.flags.write.is_empty());
        // Its gates in view, every write asking an approver; a state
        // store beside the config, once.
        assert!(
            text.contains("[playbooks.p.gates]\ndefault = \"approve\"\n"),
            "{text}"
        );
        assert_eq!(
            crate::gate::Gates::from_config(&loaded.playbooks["p"].gates)
                .unwrap()
                .policy("pager.page", ON_CALL, &[]),
            crate::gate::Policy::Approve
        );
        assert_eq!(text.matches("[state]").count(), 1, "{text}");
        assert!(loaded.state.path.ends_with("stepgate-state.db"), "{text}");
        let again = registered(&config, &Vars::new("p", None, false), &component)
            .unwrap_err()
            .to_string();
        assert!(again.contains("already has [playbooks.p]"), "{again}");
        // A second playbook, with a kill switch: its flag store and
        // grants, and the state and on-call target are not added again.
        let second = registered(&config, &Vars::new("q", None, true), &component).unwrap();
        assert_eq!(second.matches("[state]").count(), 1, "{second}");
        assert_eq!(second.matches("[pager.targets.on-call]").count(), 1);
        std::fs::write(&config, &second).unwrap();
        let loaded = crate::config::Config::load(&config).unwrap();
        assert!(loaded.flags.contains_key("q"), "{second}");
        assert_eq!(loaded.playbooks["q"].grants.flags.write, ["Q_PAUSED"]);
    }
}
