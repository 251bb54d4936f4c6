//! `stepgate new`, `build`, `test` and `inspect` as a playbook author uses
//! them, in each language: the scaffold builds with its toolchain, passes
//! its scenario, and `inspect` names the language. Also: the TypeScript
//! declarations shipped in `sdk/js/types` are what `jco guest-types`
//! makes of the WIT today.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `stepgate ARGS` in `dir`. Rust scaffolds build in a shared target
/// directory, so the guest dependencies compile once across runs.
fn stepgate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", root().join("target/scaffolds"))
        // A compile cache of the test's own: the first load compiles.
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        // The pinned JavaScript toolchain (`npm ci --prefix sdk/js`); the
        // scaffold lives outside the checkout, where it would not be found.
        .env(
            "STEPGATE_COMPONENTIZE_JS",
            root().join("sdk/js/node_modules/.bin/componentize-js"),
        )
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(output: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn a_scaffolded_playbook_builds_and_passes_its_scenario_in_every_language() {
    let work = tempfile::tempdir().unwrap();
    // Each language with and without a kill switch: the `{{kill}}` lines
    // of every template are built and run too.
    let variants = [
        ("python", "Python", false),
        ("js", "JavaScript", false),
        ("rust", "Rust", false),
        ("python", "Python", true),
        ("js", "JavaScript", true),
        ("rust", "Rust", true),
    ];
    let name_of = |lang: &str, kill_switch: bool| {
        format!("{}-{lang}", if kill_switch { "paused" } else { "stuck" })
    };
    // Made one after another: `new` registers each in the one config.
    for (lang, _, kill_switch) in variants {
        let name = name_of(lang, kill_switch);
        let mut args = vec!["new", &name, "--lang", lang, "--dir", "playbooks"];
        if kill_switch {
            args.push("--kill-switch");
        }
        let made = ok(stepgate(work.path(), &args), "stepgate new");
        assert!(made.contains("registered"), "{made}");
        if lang == "js" {
            // The scaffold types in an editor: app.js checks against the
            // declarations and jsconfig.json it was given.
            let checked = Command::new(root().join("sdk/js/node_modules/.bin/tsc"))
                .args(["-p", "jsconfig.json"])
                .current_dir(work.path().join(format!("playbooks/{name}")))
                .output()
                .unwrap();
            assert!(
                checked.status.success(),
                "tsc: {}{}",
                String::from_utf8_lossy(&checked.stdout),
                String::from_utf8_lossy(&checked.stderr)
            );
        }
    }
    // Built, tested and inspected a language per thread (each only reads
    // the config): a language's toolchain waits on its own steps, not on
    // the other languages'.
    std::thread::scope(|threads| {
        for language_of_thread in ["Python", "JavaScript", "Rust"] {
            let (work, name_of) = (&work, &name_of);
            threads.spawn(move || {
                for (lang, language, kill_switch) in variants {
                    if language != language_of_thread {
                        continue;
                    }
                    let name = name_of(lang, kill_switch);
                    let folder = format!("playbooks/{name}");
                    let built = ok(stepgate(work.path(), &["build", &folder]), "stepgate build");
                    assert!(built.contains(&format!("({language},")), "{built}");
                    let tested = ok(stepgate(work.path(), &["test", &folder]), "stepgate test");
                    assert!(
                        tested.contains(&format!("ok    {name}/critical-alert ")),
                        "{tested}"
                    );
                    // The live one: each write approved by the scenario's approver.
                    assert!(
                        tested.contains(&format!("ok    {name}/critical-alert-live ")),
                        "{tested}"
                    );
                    // The first load compiles, and says so; the next comes from the cache.
                    assert!(
                        tested.contains("(first time; cached afterwards)…")
                            && tested.contains("compiled in "),
                        "{tested}"
                    );
                    assert!(
                        tested.contains("2 scenarios: 2 passed, 0 failed"),
                        "{tested}"
                    );
                    // Once per language: a rebuild when the source changes, and --show.
                    if !kill_switch {
                        // The source changes after the build: `test` builds it again
                        // before any scenario runs, never testing the old component.
                        let source = source_of(&work.path().join(&folder));
                        let mut text = std::fs::read_to_string(&source).unwrap();
                        text.push_str(if lang == "python" {
                            "\n# edited\n"
                        } else {
                            "\n// edited\n"
                        });
                        std::fs::write(&source, text).unwrap();
                        let retested =
                            ok(stepgate(work.path(), &["test", &folder]), "stepgate test");
                        assert!(
                            retested.contains(&format!("building {name} ("))
                                && retested.contains("changed after"),
                            "{retested}"
                        );
                        assert!(retested.contains("2 scenarios: 2 passed"), "{retested}");
                        let again = ok(
                            stepgate(work.path(), &["test", &folder, "--show"]),
                            "stepgate test --show",
                        );
                        assert!(!again.contains("building"), "built once: {again}");
                        assert!(!again.contains("compiling"), "compiled once: {again}");
                        assert!(
                            again.contains("\n      done · "),
                            "the outcome shown: {again}"
                        );
                    }
                    let inspected = ok(
                        stepgate(work.path(), &["inspect", &name]),
                        "stepgate inspect",
                    );
                    assert!(
                        inspected.contains(&format!("language: {language}")),
                        "{inspected}"
                    );
                    assert!(inspected.contains(" MB)"), "the size: {inspected}");
                    assert!(
                        inspected
                            .lines()
                            .any(|l| l.trim_start().starts_with("pager.page:on-call ")
                                && l.contains(" approve")),
                        "its page and gate: {inspected}"
                    );
                    assert_eq!(
                        inspected.contains("flags.set:"),
                        kill_switch,
                        "a flag write only with a kill switch: {inspected}"
                    );
                }
            });
        }
    });
    // By its path, a configured component is its playbook: its grants'
    // table and its gates, not an unknown component's defaults.
    let by_path = ok(
        stepgate(
            work.path(),
            &["inspect", "playbooks/paused-rust/target/paused-rust.wasm"],
        ),
        "stepgate inspect PATH",
    );
    assert!(
        by_path.contains("(under [playbooks.paused-rust.grants])"),
        "{by_path}"
    );
    // One config, six playbooks: one on-call target and state store, and a
    // flag store for each kill switch only. A seventh with a taken name is
    // refused and the config is left as it was.
    let config = std::fs::read_to_string(work.path().join("stepgate.toml")).unwrap();
    assert_eq!(
        config.matches("[pager.targets.on-call]").count(),
        1,
        "{config}"
    );
    assert_eq!(config.matches("[state]").count(), 1, "{config}");
    assert_eq!(config.matches("kind = \"builtin\"").count(), 3, "{config}");
    let again = stepgate(
        work.path(),
        &["new", "stuck-js", "--lang", "python", "--dir", "other"],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already has [playbooks.stuck-js]"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(work.path().join("stepgate.toml")).unwrap(),
        config
    );
    assert!(
        !work.path().join("other").exists(),
        "no half-made playbook left"
    );
    // Two playbooks sharing a component: inspecting it by path names both
    // and asks for one, rather than guessing whose gates apply.
    let mut shared = config;
    shared.push_str(
        "\n[playbooks.twin]\ncomponent = \"playbooks/paused-rust/target/paused-rust.wasm\"\n",
    );
    std::fs::write(work.path().join("stepgate.toml"), shared).unwrap();
    let ambiguous = stepgate(
        work.path(),
        &["inspect", "playbooks/paused-rust/target/paused-rust.wasm"],
    );
    assert_eq!(ambiguous.status.code(), Some(2));
    let said = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(
        said.contains("playbooks `paused-rust` and `twin`: inspect one of them by name"),
        "{said}"
    );
}

#[test]
fn bad_names_and_folders_are_refused_with_what_to_do() {
    let work = tempfile::tempdir().unwrap();
    let bad = stepgate(work.path(), &["new", "Payments Stuck", "--lang", "python"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase letters"));
    let lang = stepgate(work.path(), &["new", "x", "--lang", "cobol"]);
    assert_eq!(lang.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&lang.stderr).contains("rust, python or js"));
    let not_a_playbook = stepgate(work.path(), &["build", "."]);
    assert_eq!(not_a_playbook.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&not_a_playbook.stderr).contains("stepgate new NAME"),
        "{}",
        String::from_utf8_lossy(&not_a_playbook.stderr)
    );
    assert!(
        !work.path().join("stepgate.toml").exists(),
        "nothing written"
    );
}

#[test]
fn the_shipped_typescript_declarations_match_the_wit() {
    let out = tempfile::tempdir().unwrap();
    let jco = root().join("sdk/js/node_modules/.bin/jco");
    assert!(jco.exists(), "run `npm ci --prefix sdk/js` (.ci/run does)");
    let status = Command::new(jco)
        .arg("guest-types")
        .arg(root().join("wit"))
        .args(["-n", "playbook", "-o"])
        .arg(out.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let shipped = root().join("sdk/js/types");
    let generated = files(out.path());
    assert_eq!(generated, files(&shipped), "the same files");
    assert!(generated.len() >= 7, "the world and its six interfaces");
    for file in generated {
        assert_eq!(
            std::fs::read_to_string(out.path().join(&file)).unwrap(),
            std::fs::read_to_string(shipped.join(&file)).unwrap(),
            "sdk/js/types/{file} is stale: regenerate with \
             `sdk/js/node_modules/.bin/jco guest-types wit -n playbook -o sdk/js/types`"
        );
    }
}

/// The files under `dir`, relative, sorted.
/// The playbook's main source file in a scaffold's folder.
fn source_of(folder: &Path) -> PathBuf {
    ["src/lib.rs", "app.py", "app.js"]
        .iter()
        .map(|f| folder.join(f))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no source in {}: {:?}", folder.display(), files(folder)))
}

fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}
