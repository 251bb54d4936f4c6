//! The README's promises checked against the code: the configuration
//! reference (`docs/configuration.md`, linked from the README) is a config
//! stepgate accepts, and every test the safety list (`docs/safety.md`,
//! linked from the README) cites exists.

use std::path::Path;

use stepgate::config::Config;

#[test]
fn the_documented_config_reference_parses() {
    let docs = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let section = docs
        .split("# Configuration reference")
        .nth(1)
        .expect("a configuration reference section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block in the configuration reference");
    let config = Config::parse(
        block,
        Path::new("docs/configuration.md"),
        Path::new("/etc/stepgate"),
    )
    .unwrap_or_else(|e| panic!("the documented config does not load: {e}"));
    assert!(config.db.contains_key("ledger"));
    assert!(config.rpc.contains_key("loa_admin"));
    assert!(config.flags.contains_key("loa_finn"));
    assert!(config.pager.targets.contains_key("on-call"));
    assert_eq!(
        config.routes().expect("the documented routes parse").len(),
        1
    );
    assert_eq!(config.server.notify.as_deref(), Some("incident"));
    assert!(config.schedules[0].parsed().is_ok());
}

/// Every test the safety list (`docs/safety.md`) cites exists where it
/// says: a claim cannot keep pointing at a test that was renamed or removed.
/// Cited as `path.rs::fn`, `…::fn` (the path cited last), `path.rs::` then
/// bare names, or `name_…` for every test whose name starts so.
#[test]
fn every_test_the_safety_list_cites_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let safety = std::fs::read_to_string(root.join("docs/safety.md")).expect("docs/safety.md");
    let section = safety
        .split("# Safety properties, and where they are tested")
        .nth(1)
        // Up to the next heading of any level, if the page grows one.
        .and_then(|rest| rest.split("\n#").next())
        .and_then(|section| section.split_once("\n- ").map(|(_, list)| list))
        .expect("a safety section with a list");
    let mut file: Option<String> = None;
    let mut cited = 0;
    for (i, span) in section.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let (path, name) = match span.split_once("::") {
            Some((path, rest)) if path.ends_with(".rs") => (Some(path), rest),
            Some(("…", rest)) => (None, rest),
            None if span.ends_with(".rs") => (Some(span), ""),
            // A bare test name: lowercase words joined by underscores.
            None if span.matches('_').count() >= 3
                && span
                    .trim_end_matches('…')
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
            {
                (None, span)
            }
            _ => continue,
        };
        if let Some(path) = path {
            assert!(
                root.join(path).is_file(),
                "docs/safety.md cites {path}: no such file"
            );
            file = Some(path.to_owned());
        }
        let name = name.rsplit("::").next().unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let path = file
            .as_deref()
            .unwrap_or_else(|| panic!("`{span}` names no file"));
        let source = std::fs::read_to_string(root.join(path)).unwrap();
        let wanted = match name.strip_suffix('…') {
            Some(prefix) => format!("fn {prefix}"),
            None => format!("fn {name}("),
        };
        assert!(
            is_test(&source, &wanted),
            "docs/safety.md cites `{span}`, but {path} has no test `{wanted}…`"
        );
        assert!(
            in_its_binary(&root, path),
            "docs/safety.md cites {path}, which no test binary includes"
        );
        cited += 1;
    }
    assert!(cited >= 40, "only {cited} tests cited");
}

/// Whether `source` has a test whose definition starts with `wanted`
/// (`fn name(` or `fn prefix`): marked `#[test]` or `#[tokio::test]` just
/// above it, or a scenario `on_both_stores!` turns into tests.
fn is_test(source: &str, wanted: &str) -> bool {
    let scenarios: String = source
        .split("on_both_stores!(")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .collect();
    source.match_indices(wanted).any(|(at, _)| {
        let before = &source[..at];
        let attributes = before.trim_end().trim_end_matches("async").trim_end();
        let name = source[at + 3..]
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default();
        attributes.ends_with("#[test]")
            || attributes.ends_with("#[tokio::test]")
            || attributes
                .lines()
                .last()
                .is_some_and(|l| l.trim().starts_with("#[tokio::test("))
            || scenarios.split(',').any(|s| s.trim() == name)
    })
}

/// Whether the test file at `path` is compiled: a module of its test
/// binary (`tests/tests/X.rs` of `flows.rs`, `host/tests/X.rs` of
/// `binary.rs`), or library source.
fn in_its_binary(root: &Path, path: &str) -> bool {
    let binary = if path.starts_with("tests/tests/") {
        "tests/tests/flows.rs"
    } else if path.starts_with("host/tests/") {
        "host/tests/binary.rs"
    } else {
        return path.starts_with("host/src/");
    };
    let module = Path::new(path).file_stem().unwrap().to_str().unwrap();
    std::fs::read_to_string(root.join(binary))
        .unwrap()
        .lines()
        .any(|l| l.trim() == format!("mod {module};"))
}
