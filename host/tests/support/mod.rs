//! What the host's process-level tests share (the modules of
//! `tests/binary.rs`, each using a part of it).
#![allow(dead_code)]

pub mod hook;
pub mod served;

/// Throwaway PostgreSQL clusters, shared with the `tests` crate.
#[path = "../../../tests/support/servers.rs"]
pub mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use servers::free_port;

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Adds principal `name` with `role` to the state store of `config`
/// (`stepgate principal add`); writes its token beside the config as
/// `NAME.token` and returns that file's path.
pub fn principal(config: &Path, name: &str, role: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_stepgate"))
        .args(["principal", "add", name, "--role", role, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("sg_"), "{token}");
    let file = config.with_file_name(format!("{name}.token"));
    std::fs::write(&file, token).unwrap();
    file
}
