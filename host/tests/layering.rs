//! The host's modules form layers: `host/src/lib.rs` declares them from
//! the top of the chain down, and a module may use only the modules
//! declared below it (or its own submodules). This test reads every
//! source file and fails on a `crate::` (or crate-level `super::`) path to
//! a module declared above the one using it.
//!
//! No exception is listed: a module that needs something declared above it
//! moves the shared part down (as #22 did: the gate's words, how a run
//! ends, the journal entry, the sandbox, SQL names).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The modules `lib.rs` declares, in its order.
fn declared() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_owned())
        .collect()
}

/// Every `.rs` file of the library, with the top-level module it is in
/// and how deep below `src/` it sits (1 for `x.rs`).
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `text` without its `#[cfg(test)] mod NAME { … }` blocks, found by
/// counting braces from the module's opening one.
fn without_test_modules(text: &str) -> String {
    const MARK: &str = "#[cfg(test)]\nmod ";
    let mut kept = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        kept.push_str(&rest[..at]);
        let module = &rest[at..];
        let Some(open) = module.find('{') else {
            return kept;
        };
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in module[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(end) => rest = &module[end..],
            // Unbalanced (a brace in a literal): the rest is the test's.
            None => return kept,
        }
    }
    kept.push_str(rest);
    kept
}

/// The crate-level modules the non-test code of `text` names.
fn used(text: &str, crate_level_super: &str) -> BTreeSet<String> {
    // Test modules may use anything (an item merely marked `#[cfg(test)]`
    // is still read, and so is code after a test module).
    let code = without_test_modules(text);
    let code: String = code
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    for prefix in ["crate::", crate_level_super] {
        if prefix.is_empty() {
            continue;
        }
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + prefix.len()..];
            // `super::` inside `foo::super::`, or a longer word.
            if prefix != "crate::" && before.is_some_and(|c| c == ':' || c.is_alphanumeric()) {
                continue;
            }
            // `crate::{a, b::c}`: each path's first name.
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .collect(),
                None => vec![rest],
            };
            for path in names {
                let name: String = path
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

#[test]
fn no_module_uses_one_declared_above_it() {
    let order = declared();
    assert!(order.len() > 20, "lib.rs declares {order:?}");
    let position = |m: &str| order.iter().position(|o| o == m);
    let mut files = Vec::new();
    sources(&src(), &mut files);
    let mut upward = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(src()).unwrap();
        let parts: Vec<&str> = relative.iter().map(|p| p.to_str().unwrap()).collect();
        let user = parts[0].trim_end_matches(".rs");
        let Some(user_at) = position(user) else {
            continue; // lib.rs, main.rs and the binary's own modules
        };
        // In `x.rs` and `x/mod.rs`, `super::` is the crate; one deeper,
        // `super::super::` is.
        let crate_level_super = match parts.len() {
            1 => "super::",
            2 if parts[1] == "mod.rs" => "super::",
            2 => "super::super::",
            _ => "",
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in used(&text, crate_level_super) {
            if let Some(used_at) = position(&used)
                && used_at < user_at
            {
                upward.insert((user.to_owned(), used, relative.display().to_string()));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules using one declared above them in lib.rs (move the shared part down): {upward:?}"
    );
}
