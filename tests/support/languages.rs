//! Python and JavaScript playbooks for tests and benches, built from their
//! folders with the same toolchain code as `stepgate build`, once per
//! process, into `target/lang-guests/`. The toolchains come from `.ci/run`
//! (componentize-py from PyPI, componentize-js from `sdk/js`'s lockfile); a
//! missing one fails the test with the command that installs it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use stepgate::authoring::toolchain;

/// The component of the playbook folder `rel_dir` (relative to the
/// workspace root), built now if this process has not built it yet.
pub fn built(rel_dir: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    // One build at a time: each toolchain wants both cores.
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(rel_dir) {
        return path.clone();
    }
    let dir = crate::root().join(rel_dir);
    let name = dir
        .file_name()
        .expect("a playbook folder")
        .to_string_lossy()
        .into_owned();
    let out = crate::root()
        .join("target/lang-guests")
        .join(format!("{name}.wasm"));
    let component = toolchain::build(&dir, Some(&out))
        .unwrap_or_else(|e| panic!("building {rel_dir} failed: {e}"))
        .component;
    built.insert(rel_dir.to_owned(), component.clone());
    component
}
