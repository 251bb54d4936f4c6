//! Loading a playbook: compile (through the cache), link against what the
//! host provides, ask the component to `describe()` itself, and check every
//! capability it declares against its grants.
//!
//! A playbook that imports something the host does not provide, or
//! declares a capability its grants do not cover, never runs: loading
//! fails with a message naming the import or the config key to add.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::{Description, PlaybookPre};
use crate::caps::CallCtx;
use crate::config::Limits;
use crate::engine::{Engine, EngineError};
use crate::gate::{Gates, Mode, NoApprover};
use crate::journal::{Journal, Quiet};
use crate::run::{RunData, classify_trap, new_store};
use crate::scope::{NotGranted, Scope};

/// What the host provides, for messages.
const PROVIDED: &str = "stepgate:playbook/{db,rpc,flags,pager,runbook}@0.1.0 and WASI 0.2 (with no files, sockets, environment or arguments)";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot link the host interfaces: {0}")]
    Linker(String),
    #[error(
        "playbook `{playbook}` imports something stepgate does not provide: {message}\nstepgate provides {PROVIDED}"
    )]
    UnknownImport { playbook: String, message: String },
    #[error("playbook `{playbook}`: describe() failed: {message}")]
    Describe { playbook: String, message: String },
    #[error("playbook `{playbook}` declares a capability its config does not grant: {source}")]
    NotGranted {
        playbook: String,
        source: NotGranted,
    },
}

/// A playbook ready to run.
pub struct Playbook {
    /// The config name (or the file stem of a bare component).
    pub name: String,
    pub path: PathBuf,
    pub description: Description,
    /// Interfaces the component imports.
    pub imports: Vec<String>,
    /// Size of the component in bytes.
    pub size: u64,
    pub pre: PlaybookPre<RunData>,
    pub scope: Scope,
    pub gates: Gates,
    pub limits: Limits,
}

/// What a playbook is loaded with.
pub struct PlaybookSpec {
    pub name: String,
    pub path: PathBuf,
    pub scope: Scope,
    pub gates: Gates,
    pub limits: Limits,
}

/// The linker every playbook is instantiated against: stepgate's
/// interfaces plus a deny-all WASI (some toolchains import it always).
pub fn linker(engine: &Engine) -> Result<Linker<RunData>, LoadError> {
    let mut linker = Linker::<RunData>::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| LoadError::Linker(e.to_string()))?;
    crate::bindings::Playbook::add_to_linker::<_, HasSelf<CallCtx>>(&mut linker, |data| {
        &mut data.calls
    })
    .map_err(|e| LoadError::Linker(e.to_string()))?;
    Ok(linker)
}

/// Loads, links, describes and checks one playbook.
pub async fn load(
    engine: &Engine,
    linker: &Linker<RunData>,
    spec: PlaybookSpec,
) -> Result<Playbook, LoadError> {
    let bytes = std::fs::read(&spec.path).map_err(|source| EngineError::Read {
        path: spec.path.clone(),
        source,
    })?;
    let component = engine.load_bytes(&spec.path, &bytes)?;
    let imports = component
        .component_type()
        .imports(engine.wasmtime())
        .map(|(name, _)| name.to_owned())
        .collect();
    let instance_pre =
        linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnknownImport {
                playbook: spec.name.clone(),
                message: format!("{e:#}"),
            })?;
    let pre = PlaybookPre::new(instance_pre).map_err(|e| LoadError::UnknownImport {
        playbook: spec.name.clone(),
        message: format!("it does not export the `playbook` world: {e:#}"),
    })?;
    let description = describe(engine, &pre, &spec.name).await?;
    for capability in &description.capabilities {
        spec.scope
            .check_declared(capability)
            .map_err(|source| LoadError::NotGranted {
                playbook: spec.name.clone(),
                source,
            })?;
    }
    Ok(Playbook {
        name: spec.name,
        path: spec.path,
        description,
        imports,
        size: bytes.len() as u64,
        pre,
        scope: spec.scope,
        gates: spec.gates,
        limits: spec.limits,
    })
}

/// Calls `describe()` in a throwaway store: tight limits, no grants, and
/// any import call traps.
async fn describe(
    engine: &Engine,
    pre: &PlaybookPre<RunData>,
    name: &str,
) -> Result<Description, LoadError> {
    let limits = Limits {
        deadline: Duration::from_secs(5),
        ..Limits::default()
    };
    let mut calls = CallCtx::new(
        name,
        "describe",
        Mode::DryRun,
        Scope::none(name),
        Gates::default(),
        std::sync::Arc::new(NoApprover),
        Default::default(),
        Journal::new(Box::new(Quiet)),
        limits,
    );
    calls.describing = true;
    let mut store = new_store(engine, calls);
    let failed = |message: String| LoadError::Describe {
        playbook: name.to_owned(),
        message,
    };
    let described = match pre.instantiate_async(&mut store).await {
        Ok(instance) => instance.call_describe(&mut store).await,
        Err(e) => Err(e),
    };
    described.map_err(|e| {
        failed(format!(
            "{:?}",
            classify_trap(&e, &store.data().output.text())
        ))
    })
}

/// The name a bare component gets: its file stem.
pub fn name_from_path(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().replace('_', "-"))
        .unwrap_or_else(|| "playbook".to_owned())
}
