//! `stepgate new NAME --lang rust|python|js`: a playbook folder that builds,
//! describes itself, runs, and passes its one scenario, in the language the
//! author knows; and its entry in the operator's config, so `stepgate
//! build` then `stepgate test` work straight away.
//!
//! Every language gets the same playbook (a flag read, a gated flag write
//! with a reason, an outcome with a severity and a checklist) and the same
//! scenario: the scaffold is a small parity test of its own.

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
    let vars = Vars::new(name, request.rust_sdk);
    let component = default_output(&dir);
    // The config is checked before anything is written: a refused entry
    // leaves no half-made playbook behind.
    let config_text = registered(request.config, name, &vars.flag, &component)?;
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
    std::fs::write(request.config, config_text).map_err(|source| ScaffoldError::Write {
        path: request.config.to_owned(),
        source,
    })?;
    Ok(Scaffolded {
        dir,
        files,
        component,
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
}

impl Vars {
    fn new(name: &str, rust_sdk: Option<&Path>) -> Vars {
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
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("{{name}}", &self.name)
            .replace("{{flag}}", &self.flag)
            .replace("{{snake}}", &self.snake)
            .replace("{{camel}}", &self.camel)
            .replace("{{type}}", &self.type_name)
            .replace("{{rust_sdk}}", &self.rust_sdk)
    }
}

/// The config (made if absent) with the playbook, its flag store and its
/// grants added. It must still load: if it would not, the error says why.
fn registered(
    config: &Path,
    name: &str,
    flag: &str,
    component: &Path,
) -> Result<String, ScaffoldError> {
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
    // Where runs, approvals and the audit log are kept, if the config
    // does not say yet: a file beside it.
    let state = if doc.get("state").is_none() {
        "\n# Runs, approvals and the audit log: a SQLite file beside this config\n\
         # (or url = { env = \"STEPGATE_STATE_URL\" } for PostgreSQL).\n\
         [state]\npath = \"stepgate-state.db\"\n"
    } else {
        ""
    };
    let entry = format!(
        "{state}\n# `stepgate new {name}`: the built-in flag store for its kill switch,\n\
         # the component `stepgate build` writes, and what it may touch.\n\
         [flags.{name}]\nkind = \"builtin\"\nnames = [\"{flag}\"]\n\n\
         [playbooks.{name}]\ncomponent = {component}\n\n\
         [playbooks.{name}.grants]\nflags.read = [\"{flag}\"]\nflags.write = [\"{flag}\"]\n\n\
         # What each write needs before it goes out, live: every write not\n\
         # listed asks an approver; \"auto\" lets one through, \"deny\" stops it,\n\
         # a table sets a quorum, groups and a timeout (docs/configuration.md).\n\
         [playbooks.{name}.gates]\ndefault = \"approve\"\n\
         # \"flags.set:{flag}\" = {{ policy = \"approve\", quorum = 2, timeout = \"30m\" }}\n"
    );
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

const SCENARIO: &str = r#"description = "A critical alert while {{name}} is not paused: pause it (a gated write), then a human follows up"
now = "2026-11-23T09:00:00Z"

[alert]
name = "{{camel}}Critical"
fingerprint = "example-1"
labels = { severity = "critical" }

[flags]
{{flag}} = "0"

[expect]
status = "done"
severity = "SEV-1"
steps = ["Triage", "Mitigate"]

[expect.fields]
was_paused = false

[[expect.writes]]
call = "flags.set"

[expect.writes.args]
name = "{{flag}}"
reason = "{{name}} runbook, step 2: pause while the alert is critical"
value = "1"
"#;

/// The same alert, live: the pause asks an approver (the config's gates),
/// who approves, and the write is made.
const LIVE_SCENARIO: &str = r#"description = "Live: the pause goes to an approver, who approves it; then it is made"
mode = "live"
now = "2026-11-23T09:00:00Z"

[alert]
name = "{{camel}}Critical"
fingerprint = "example-1"
labels = { severity = "critical" }

[flags]
{{flag}} = "0"

# Each entry is one approver's decision (a gate with quorum = 2 takes two,
# with distinct `by`).
[[approvals]]
call = "flags.set"
target = "{{flag}}"
decision = "approve"                 # or deny, timeout
by = "oncall"
reason = "critical and not paused"

[expect]
status = "done"
severity = "SEV-1"

[[expect.writes]]
call = "flags.set"
gate = "approved"

[expect.writes.args]
name = "{{flag}}"
reason = "{{name}} runbook, step 2: pause while the alert is critical"
value = "1"
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

const PAUSED: &str = "{{flag}}";

struct {{type}};

impl Playbook for {{type}} {
    fn describe() -> Description {
        Description::new("{{name}}", "0.1.0")
            .summary("Pauses {{name}} while its alert is critical.")
            .answers("{{camel}}Critical")
            .flag_read(PAUSED)
            .flag_write(PAUSED)
    }

    fn run(alert: Alert) -> Result<Outcome> {
        let (paused, critical) = step("Triage", || -> Result<_> {
            let paused = flags::get(PAUSED)?.as_deref() == Some("1");
            Ok((paused, alert.label("severity") == Some("critical")))
        })?;
        if !critical {
            return Ok(Outcome::new("Not critical: nothing to do").severity("SEV-3"));
        }
        if !paused {
            step("Mitigate", || {
                flags::set(PAUSED, "1", "{{name}} runbook, step 2: pause while the alert is critical")
            })?;
        }
        Ok(Outcome::new(format!("{} paused while the alert is critical", "{{name}}"))
            .severity("SEV-1")
            .field("was_paused", paused)
            .todo("Find the cause, then unpause: set {{flag}} to 0"))
    }
}

stepgate_sdk::playbook!({{type}});
"#;

const PYTHON_APP: &str = r#""""{{name}}: what incident it handles, and which runbook section it codifies."""

import stepgate
from stepgate import Description, Outcome, flags, step

PAUSED = "{{flag}}"


class {{type}}(stepgate.Playbook):
    def describe(self):
        return (
            Description("{{name}}", "0.1.0")
            .summary("Pauses {{name}} while its alert is critical.")
            .answers("{{camel}}Critical")
            .flag_read(PAUSED)
            .flag_write(PAUSED)
        )

    def run(self, alert):
        with step("Triage"):
            paused = flags.get(PAUSED) == "1"
            critical = alert.label("severity") == "critical"
        if not critical:
            return Outcome("Not critical: nothing to do").severity("SEV-3")
        if not paused:
            with step("Mitigate"):
                flags.set(PAUSED, "1", "{{name}} runbook, step 2: pause while the alert is critical")
        return (
            Outcome("{{name}} paused while the alert is critical")
            .severity("SEV-1")
            .field("was_paused", paused)
            .todo("Find the cause, then unpause: set {{flag}} to 0")
        )


WitWorld = stepgate.export({{type}})
"#;

const JS_APP: &str = r#"// {{name}}: what incident it handles, and which runbook section it codifies.

import { playbook, Description, Outcome, flags, step } from './stepgate.js';

const PAUSED = '{{flag}}';

export const { describe, run } = playbook({
  describe() {
    return new Description('{{name}}', '0.1.0')
      .summary('Pauses {{name}} while its alert is critical.')
      .answers('{{camel}}Critical')
      .flagRead(PAUSED)
      .flagWrite(PAUSED);
  },

  run(alert) {
    const [paused, critical] = step('Triage', () => [
      flags.get(PAUSED) === '1',
      alert.label('severity') === 'critical',
    ]);
    if (!critical) return new Outcome('Not critical: nothing to do').severity('SEV-3');
    if (!paused) {
      step('Mitigate', () =>
        flags.set(PAUSED, '1', '{{name}} runbook, step 2: pause while the alert is critical'));
    }
    return new Outcome('{{name}} paused while the alert is critical')
      .severity('SEV-1')
      .field('was_paused', paused)
      .todo('Find the cause, then unpause: set {{flag}} to 0');
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
        let vars = Vars::new("payments-stuck", None);
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
    fn registering_keeps_the_config_and_refuses_a_second_entry_of_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("stepgate.toml");
        std::fs::write(
            &config,
            "# mine\n[flags.other]\nkind = \"builtin\"\nnames = [\"OTHER_*\"]\n",
        )
        .unwrap();
        let component = dir.path().join("playbooks/p/target/p.wasm");
        let text = registered(&config, "p", "P_PAUSED", &component).unwrap();
        std::fs::write(&config, &text).unwrap();
        assert!(text.starts_with("# mine"), "{text}");
        assert!(
            text.contains("component = \"playbooks/p/target/p.wasm\""),
            "{text}"
        );
        let loaded = crate::config::Config::load(&config).unwrap();
        assert!(loaded.playbooks.contains_key("p"));
        // Its gates in view, every write asking an approver; a state
        // store beside the config, once.
        assert!(
            text.contains("[playbooks.p.gates]\ndefault = \"approve\"\n"),
            "{text}"
        );
        assert_eq!(
            crate::gate::Gates::from_config(&loaded.playbooks["p"].gates)
                .unwrap()
                .policy("flags.set", "P_PAUSED", &[]),
            crate::gate::Policy::Approve
        );
        assert_eq!(text.matches("[state]").count(), 1, "{text}");
        assert!(loaded.state.path.ends_with("stepgate-state.db"), "{text}");
        let again = registered(&config, "p", "P_PAUSED", &component)
            .unwrap_err()
            .to_string();
        assert!(again.contains("already has [playbooks.p]"), "{again}");
        let second = registered(&config, "q", "Q_PAUSED", &component).unwrap();
        assert_eq!(second.matches("[state]").count(), 1, "{second}");
    }
}
