//! `stepgate build`: a playbook folder in, a component out, through the
//! toolchain of its language (cargo for Rust, componentize-py for Python,
//! componentize-js for JavaScript).
//!
//! The WIT contract and the Python and JavaScript SDKs are compiled into
//! this binary and written to a scratch directory for each build, so a
//! playbook is always built against the contract the host that builds it
//! speaks. Python and JavaScript components import WASI as Rust ones do,
//! and get the host's: no files, sockets, environment or arguments, clocks
//! that read the run's journaled time, randomness seeded by the run id
//! (`crate::caps::clock`, `crate::run`). The SDKs turn what is not there
//! into the language's own catchable error naming the capability to use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Language;

/// The WIT contract, as this host speaks it.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("db.wit", include_str!("../../../wit/db.wit")),
    ("rpc.wit", include_str!("../../../wit/rpc.wit")),
    ("flags.wit", include_str!("../../../wit/flags.wit")),
    ("pager.wit", include_str!("../../../wit/pager.wit")),
    ("runbook.wit", include_str!("../../../wit/runbook.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
];

/// The Python SDK (`import stepgate`).
pub const PYTHON_SDK: &str = include_str!("../../../sdk/python/stepgate.py");
/// The JavaScript SDK (`import ... from './stepgate.js'`).
pub const JS_SDK: &str = include_str!("../../../sdk/js/stepgate.js");

/// Pinned toolchain versions, for messages.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{0} is not a playbook folder: it needs Cargo.toml (Rust), app.py (Python) or app.js (JavaScript); `stepgate new NAME --lang rust|python|js` makes one"
    )]
    NotAPlaybook(PathBuf),
    #[error("{tool} not found (looked in ${env}, PATH and node_modules/.bin): {install}")]
    ToolMissing {
        tool: &'static str,
        env: &'static str,
        install: String,
    },
    #[error("{tool} failed to build {dir} ({status}):\n{output}")]
    Failed {
        tool: String,
        dir: PathBuf,
        status: String,
        output: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// A built playbook.
#[derive(Debug, Clone)]
pub struct Built {
    pub language: Language,
    pub component: PathBuf,
    pub size: u64,
    pub took: Duration,
}

/// Where `stepgate build DIR` writes the component unless told:
/// `DIR/target/NAME.wasm`, NAME the folder's name.
pub fn default_output(dir: &Path) -> PathBuf {
    // By its path, so it is known before the folder exists (`stepgate new`
    // registers it first); `.` and `..` by where they lead.
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            let real = dir.canonicalize().ok()?;
            Some(real.file_name()?.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "playbook".to_owned());
    dir.join("target").join(format!("{name}.wasm"))
}

/// Builds the playbook folder `dir` into `out` (default:
/// [`default_output`]).
pub fn build(dir: &Path, out: Option<&Path>) -> Result<Built, BuildError> {
    let language =
        Language::of_folder(dir).ok_or_else(|| BuildError::NotAPlaybook(dir.to_owned()))?;
    let out = out
        .map(Path::to_owned)
        .unwrap_or_else(|| default_output(dir));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(io(format!("cannot create {}", parent.display())))?;
    }
    let out = absolute(&out)?;
    let started = Instant::now();
    let scratch = tempfile::tempdir().map_err(io("cannot make a scratch directory"))?;
    replace_whole(&out, |partial| match language {
        Language::Rust => build_rust(dir, partial),
        Language::Python => build_python(dir, scratch.path(), partial),
        Language::JavaScript => build_js(dir, scratch.path(), partial),
    })?;
    let size = std::fs::metadata(&out)
        .map_err(io(format!("{} was not written", out.display())))?
        .len();
    if let Some(digest) = sdk_digest(language) {
        replace_whole(&stamp(&out), |partial| {
            std::fs::write(partial, &digest)
                .map_err(io(format!("cannot write {}", stamp(&out).display())))
        })?;
    }
    Ok(Built {
        language,
        component: out,
        size,
        took: started.elapsed(),
    })
}

/// Has `write` fill a new file beside `out`, then renames it over `out`:
/// a server or a run loading `out` meanwhile reads the old file or the new
/// one, never half of one. On failure `out` is left as it was and the
/// partial file is removed.
fn replace_whole(
    out: &Path,
    write: impl FnOnce(&Path) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let parent = out.parent().unwrap_or(Path::new("."));
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let mut partial = tempfile::Builder::new();
    partial.prefix(&prefix).suffix(".partial");
    // Readable like any file this user writes (the umask applies), not
    // only by its owner as a temporary file is: a server running as
    // another user loads it.
    #[cfg(unix)]
    partial.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let partial = partial
        .tempfile_in(parent)
        .map_err(io(format!("cannot create a file in {}", parent.display())))?
        .into_temp_path();
    write(&partial)?;
    partial
        .persist(out)
        .map_err(|e| e.error)
        .map_err(io(format!("cannot move the build into {}", out.display())))
}

/// The digest of what this binary compiles into a `language` playbook
/// besides its own source: the WIT contract and the language's SDK. `None`
/// for Rust, whose SDK is a crate its cargo build tracks.
fn sdk_digest(language: Language) -> Option<String> {
    use sha2::{Digest, Sha256};
    let sdk = match language {
        Language::Rust => return None,
        Language::Python => PYTHON_SDK,
        Language::JavaScript => JS_SDK,
    };
    let mut hash = Sha256::new();
    for (name, text) in WIT {
        hash.update(name.as_bytes());
        hash.update(text.as_bytes());
    }
    hash.update(sdk.as_bytes());
    Some(hex::encode(hash.finalize()))
}

/// Where a build records the SDK digest it was built with: beside the
/// component, `NAME.wasm.sdk`.
fn stamp(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".sdk");
    PathBuf::from(name)
}

/// Why the component `component` built from the playbook folder `dir` is
/// out of date, or `None` when it is current: it is missing, a source file
/// of the folder (`.rs`, `.py`, `.js`, `.mjs`, `Cargo.toml`; not
/// `target/`, `scenarios/` nor hidden folders) changed after it was built,
/// or (Python, JavaScript) it was built with another SDK or WIT contract
/// than this binary's.
pub fn out_of_date(dir: &Path, component: &Path) -> Option<String> {
    let built = match std::fs::metadata(component).and_then(|m| m.modified()) {
        Ok(built) => built,
        Err(_) => return Some(format!("{} does not exist", component.display())),
    };
    if let Some(digest) = Language::of_folder(dir).and_then(sdk_digest)
        && std::fs::read_to_string(stamp(component)).ok().as_deref() != Some(digest.as_str())
    {
        return Some(format!(
            "{} was built with another SDK than this stepgate's",
            component.display()
        ));
    }
    let (newest, file) = newest_source(dir)?;
    (newest > built).then(|| {
        format!(
            "{} changed after {} was built",
            file.display(),
            component.display()
        )
    })
}

/// The newest source file under `dir` and when it changed.
fn newest_source(dir: &Path) -> Option<(std::time::SystemTime, PathBuf)> {
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let found = if path.is_dir() {
            if name.starts_with('.')
                || ["target", "scenarios", "node_modules", "__pycache__"].contains(&name.as_str())
            {
                continue;
            }
            newest_source(&path)
        } else if [".rs", ".py", ".js", ".mjs"]
            .iter()
            .any(|e| name.ends_with(e))
            || name == "Cargo.toml"
        {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        } else {
            None
        };
        if let Some(found) = found
            && newest.as_ref().is_none_or(|(t, _)| found.0 > *t)
        {
            newest = Some(found);
        }
    }
    newest
}

fn absolute(path: &Path) -> Result<PathBuf, BuildError> {
    std::path::absolute(path).map_err(io(format!("cannot resolve {}", path.display())))
}

/// Writes the WIT contract into `dir/wit` and returns that path.
fn write_wit(scratch: &Path) -> Result<PathBuf, BuildError> {
    let wit = scratch.join("wit");
    std::fs::create_dir_all(&wit).map_err(io("cannot write the WIT contract"))?;
    for (name, text) in WIT {
        std::fs::write(wit.join(name), text).map_err(io("cannot write the WIT contract"))?;
    }
    Ok(wit)
}

fn build_python(dir: &Path, scratch: &Path, out: &Path) -> Result<(), BuildError> {
    let tool = find_tool(
        "componentize-py",
        "STEPGATE_COMPONENTIZE_PY",
        dir,
        format!("pip install {COMPONENTIZE_PY}"),
    )?;
    let wit = write_wit(scratch)?;
    let sdk = scratch.join("sdk");
    std::fs::create_dir_all(&sdk).map_err(io("cannot write the Python SDK"))?;
    std::fs::write(sdk.join("stepgate.py"), PYTHON_SDK)
        .map_err(io("cannot write the Python SDK"))?;
    let mut command = Command::new(&tool);
    command
        .arg("-d")
        .arg(&wit)
        .args(["-w", "playbook", "componentize", "-p"])
        .arg(&sdk)
        .arg("-p")
        .arg(absolute(dir)?)
        .arg("app")
        .arg("-o")
        .arg(out)
        // No __pycache__ in the author's folder.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(command, "componentize-py", dir)
}

fn build_js(dir: &Path, scratch: &Path, out: &Path) -> Result<(), BuildError> {
    let tool = find_tool(
        "componentize-js",
        "STEPGATE_COMPONENTIZE_JS",
        dir,
        format!("npm install {COMPONENTIZE_JS} (or npm ci in stepgate's sdk/js)"),
    )?;
    let wit = write_wit(scratch)?;
    // componentize-js reads modules under its working directory: the
    // playbook's sources and the SDK go into one staging directory.
    let stage = scratch.join("app");
    copy_sources(dir, &stage)?;
    std::fs::write(stage.join("stepgate.js"), JS_SDK).map_err(io("cannot write the JS SDK"))?;
    let mut command = Command::new(&tool);
    command
        .current_dir(&stage)
        .arg("app.js")
        .arg("--wit")
        .arg(&wit)
        // No wasi:http (the host gives none: HTTP goes through rpc); stdio,
        // clocks and randomness come from the host's deterministic WASI.
        .args(["-n", "playbook", "-d", "http", "fetch-event", "-o"])
        .arg(out);
    run(command, "componentize-js", dir)
}

/// Copies the `.js`/`.mjs` files of `from` (and its folders, except
/// `node_modules`, `target` and hidden ones) into `to`.
fn copy_sources(from: &Path, to: &Path) -> Result<(), BuildError> {
    std::fs::create_dir_all(to).map_err(io(format!("cannot create {}", to.display())))?;
    let entries = std::fs::read_dir(from).map_err(io(format!("cannot read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("cannot read {}", from.display())))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !(name.starts_with('.') || name == "node_modules" || name == "target") {
                copy_sources(&path, &to.join(&name))?;
            }
        } else if name.ends_with(".js") || name.ends_with(".mjs") {
            std::fs::copy(&path, to.join(&name))
                .map_err(io(format!("cannot copy {}", path.display())))?;
        }
    }
    Ok(())
}

fn build_rust(dir: &Path, out: &Path) -> Result<(), BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .map_err(io("cannot run cargo"))?;
    if !output.status.success() {
        return Err(BuildError::Failed {
            tool: "cargo".into(),
            dir: dir.to_owned(),
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).into_owned()
                + "\n(if the wasm32-wasip2 target is missing: rustup target add wasm32-wasip2)",
        });
    }
    // The artifact cargo reports: wherever the target directory is.
    let wasm = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| BuildError::Failed {
            tool: "cargo".into(),
            dir: dir.to_owned(),
            status: "no component".into(),
            output: "cargo built no .wasm: is the crate a `cdylib`?".into(),
        })?;
    std::fs::copy(&wasm, out).map_err(io(format!("cannot copy {}", wasm.display())))?;
    Ok(())
}

fn run(mut command: Command, tool: &str, dir: &Path) -> Result<(), BuildError> {
    let output = command.output().map_err(io(format!("cannot run {tool}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(BuildError::Failed {
        tool: tool.to_owned(),
        dir: dir.to_owned(),
        status: output.status.to_string(),
        output: text,
    })
}

/// A toolchain executable: `$env`, else on PATH, else in a
/// `node_modules/.bin` (or a stepgate checkout's `sdk/js/node_modules/.bin`)
/// above the playbook folder, the working directory or this binary, else
/// in the checkout this binary was built from, if it is still there (a
/// `cargo install --path host` run from anywhere).
fn find_tool(
    tool: &'static str,
    env: &'static str,
    dir: &Path,
    install: String,
) -> Result<PathBuf, BuildError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let starts = [
        Some(absolute(dir)?),
        Some(std::env::current_dir().map_err(io("no working directory"))?),
        std::env::current_exe().ok(),
    ];
    // PATH is the user's choice; a folder found by looking around is
    // used only if no other user of the machine could have planted it.
    let on_path = on_path
        .into_iter()
        .map(|d| d.join(tool))
        .find(|t| t.is_file());
    on_path
        .or_else(|| {
            tool_dirs(starts.into_iter().flatten())
                .into_iter()
                .map(|d| d.join(tool))
                .find(|t| t.is_file() && nobody_else_could_plant(t))
        })
        .ok_or(BuildError::ToolMissing { tool, env, install })
}

/// Whether `path` and every folder above it belong to this user or root
/// and not everyone may write there (a sticky folder, like /tmp, lets
/// nobody replace what another owns; a group's write is a grant the
/// owner made): else another user of the machine
/// could have planted it, say a `/tmp/node_modules/.bin` above a playbook
/// folder in /tmp, or the checkout this binary was built in, since removed.
#[cfg(unix)]
fn nobody_else_could_plant(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .all(|p| match std::fs::metadata(p) {
            Ok(m) => {
                let owner_ok = m.uid() == me || m.uid() == 0;
                let sticky_dir = m.is_dir() && m.mode() & 0o1000 != 0;
                owner_ok && (m.mode() & 0o002 == 0 || sticky_dir)
            }
            Err(_) => false,
        })
}

#[cfg(not(unix))]
fn nobody_else_could_plant(_: &Path) -> bool {
    true
}

/// Where a toolchain may be besides PATH: above each of `starts`, a
/// project's own `node_modules/.bin` or the pinned toolchain of a stepgate
/// checkout; then that of the checkout this binary was built from.
fn tool_dirs(starts: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for start in starts {
        for ancestor in start.ancestors() {
            dirs.push(ancestor.join("node_modules/.bin"));
            dirs.push(ancestor.join("sdk/js/node_modules/.bin"));
        }
    }
    if let Some(checkout) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        dirs.push(checkout.join("sdk/js/node_modules/.bin"));
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While a build writes, the old component stays whole under its
    /// name; after it, the new one is; a failed build leaves the old one
    /// and no partial file.
    #[test]
    fn a_build_replaces_its_component_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.wasm");
        std::fs::write(&out, b"old component").unwrap();
        let files = || std::fs::read_dir(dir.path()).unwrap().count();

        replace_whole(&out, |partial| {
            std::fs::write(partial, b"new com").unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), b"old component");
            std::fs::write(partial, b"new component, longer").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new component, longer");
        assert_eq!(files(), 1, "no partial file left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let plain = dir.path().join("plain");
            std::fs::write(&plain, b"").unwrap();
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&out), mode(&plain), "as readable as any file written");
            std::fs::remove_file(plain).unwrap();
        }

        let failed = replace_whole(&out, |partial| {
            std::fs::write(partial, b"torn").unwrap();
            Err(BuildError::NotAPlaybook(partial.to_owned()))
        });
        assert!(matches!(failed, Err(BuildError::NotAPlaybook(_))));
        assert_eq!(std::fs::read(&out).unwrap(), b"new component, longer");
        assert_eq!(files(), 1, "the failed build's partial file is removed");
    }

    /// A tool under a folder anyone may write to (not sticky) is not
    /// run; the same tool under folders only its owner may write is.
    #[cfg(unix)]
    #[test]
    fn a_tool_another_user_could_have_planted_is_not_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("project/node_modules/.bin");
        std::fs::create_dir_all(&bin).unwrap();
        let tool = bin.join("componentize-js");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(nobody_else_could_plant(&tool));
        let project = dir.path().join("project");
        std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!nobody_else_could_plant(&tool));
        std::fs::set_permissions(&project, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(nobody_else_could_plant(&tool));
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(!nobody_else_could_plant(&tool));
    }

    /// From a playbook folder outside any checkout, the pinned toolchain
    /// of the checkout the binary was built from is still found, after
    /// the folder's own.
    #[test]
    fn tools_are_looked_for_above_the_folder_then_in_the_build_checkout() {
        let outside = PathBuf::from("/srv/playbooks/app");
        let dirs = tool_dirs([outside.clone()]);
        assert_eq!(dirs[0], outside.join("node_modules/.bin"));
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert_eq!(
            dirs.last(),
            Some(&checkout.join("sdk/js/node_modules/.bin"))
        );
        assert!(
            checkout
                .join("sdk/js/node_modules/.bin/componentize-js")
                .is_file()
                || !checkout.join("sdk/js/node_modules").exists(),
            "the checkout's sdk/js has node_modules but no componentize-js"
        );
    }

    #[test]
    fn a_component_is_out_of_date_when_missing_or_older_than_a_source() {
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("target/p.wasm");
        std::fs::write(dir.path().join("app.py"), "x = 1\n").unwrap();
        assert!(
            out_of_date(dir.path(), &component)
                .unwrap()
                .contains("does not exist")
        );
        std::fs::create_dir_all(component.parent().unwrap()).unwrap();
        std::fs::write(&component, b"wasm").unwrap();
        assert!(
            out_of_date(dir.path(), &component)
                .unwrap()
                .contains("another SDK")
        );
        std::fs::write(stamp(&component), sdk_digest(Language::Python).unwrap()).unwrap();
        let past = std::time::SystemTime::now() - Duration::from_secs(60);
        let app = std::fs::File::options()
            .write(true)
            .open(dir.path().join("app.py"))
            .unwrap();
        app.set_modified(past).unwrap();
        assert_eq!(out_of_date(dir.path(), &component), None);
        // A scenario is not a source.
        std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
        std::fs::write(dir.path().join("scenarios/a.py"), "").unwrap();
        assert_eq!(out_of_date(dir.path(), &component), None);
        app.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        assert!(
            out_of_date(dir.path(), &component)
                .unwrap()
                .contains("app.py changed after")
        );
    }

    #[test]
    fn the_output_is_named_after_the_folder_even_before_it_exists() {
        assert_eq!(
            default_output(Path::new("playbooks/payments-stuck")),
            Path::new("playbooks/payments-stuck/target/payments-stuck.wasm")
        );
        let here = std::env::current_dir().unwrap();
        let name = here.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            default_output(Path::new(".")),
            Path::new(".").join("target").join(format!("{name}.wasm"))
        );
    }
}
