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
use crate::sandbox::{RunData, classify_trap, new_store};
use crate::scope::{NotGranted, Scope};

/// What the host provides, for messages.
const PROVIDED: &str = "stepgate:playbook/{db,rpc,flags,pager,runbook}@0.1.0 and WASI 0.2 (with no files, sockets, environment or arguments; clocks and randomness deterministic)";

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
    #[error(
        "playbook `{playbook}`: {path} has SHA-256 {actual}, but the config pins {expected}; the component changed since it was pinned and is not run. Rebuild it from the reviewed source, or review the change and set `sha256 = \"{actual}\"` under [playbooks.{playbook}]"
    )]
    PinMismatch {
        playbook: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "playbook `{playbook}` is not pinned and `[engine] require_pinned` is on; add `sha256 = \"{actual}\"` under [playbooks.{playbook}] (the SHA-256 of {path}, as `stepgate inspect` prints it) after reviewing the component"
    )]
    Unpinned {
        playbook: String,
        path: PathBuf,
        actual: String,
    },
    #[error(
        "playbook `{playbook}`: {path} is not signed by a key in `[engine] signing_keys`: {why}; sign the build in CI and put the signature (hex) beside it as {path}.sig"
    )]
    Unsigned {
        playbook: String,
        path: PathBuf,
        why: String,
    },
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
    /// The config's guardrails, judged for every write of the playbook.
    pub guard: std::sync::Arc<crate::guard::Guardrails>,
    pub limits: Limits,
}

/// What a playbook is loaded with.
pub struct PlaybookSpec {
    pub name: String,
    pub path: PathBuf,
    /// What the component's bytes must be.
    pub pin: Pin,
    pub scope: Scope,
    pub gates: Gates,
    pub guard: std::sync::Arc<crate::guard::Guardrails>,
    pub limits: Limits,
}

/// The linker every playbook is instantiated against: stepgate's
/// interfaces plus a WASI with no files, sockets, environment or arguments,
/// whose clocks read the run's journaled time and whose randomness is
/// seeded by the run id (a guest's standard library works, and decides the
/// same on replay).
pub fn linker(engine: &Engine) -> Result<Linker<RunData>, LoadError> {
    let mut linker = Linker::<RunData>::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| LoadError::Linker(e.to_string()))?;
    crate::bindings::Playbook::add_to_linker::<_, HasSelf<CallCtx>>(&mut linker, |data| {
        &mut data.calls
    })
    .map_err(|e| LoadError::Linker(e.to_string()))?;
    crate::caps::clock::add_to_linker(&mut linker, |data| &mut data.calls)
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
    // The bytes checked are the bytes compiled: no second read.
    spec.pin.check(&spec.name, &spec.path, &bytes)?;
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
        guard: spec.guard,
        limits: spec.limits,
    })
}

/// What a component's bytes must be before it is compiled: its pinned
/// SHA-256, and a signature by a trusted key.
#[derive(Debug, Clone, Default)]
pub struct Pin {
    pub sha256: Option<String>,
    /// Refuse a component without `sha256`.
    pub required: bool,
    /// Trusted Ed25519 keys by name; none: no signature is checked.
    pub signing_keys: Vec<(String, ed25519_dalek::VerifyingKey)>,
}

/// The SHA-256 of a component's bytes, hex: what `sha256` pins.
pub fn component_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Pin {
    /// Refuses `bytes` unless they are what the config pins and signs.
    pub fn check(&self, playbook: &str, path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
        let actual = component_sha256(bytes);
        match &self.sha256 {
            Some(expected) if !expected.eq_ignore_ascii_case(&actual) => {
                return Err(LoadError::PinMismatch {
                    playbook: playbook.to_owned(),
                    path: path.to_owned(),
                    expected: expected.to_lowercase(),
                    actual,
                });
            }
            None if self.required => {
                return Err(LoadError::Unpinned {
                    playbook: playbook.to_owned(),
                    path: path.to_owned(),
                    actual,
                });
            }
            _ => {}
        }
        if self.signing_keys.is_empty() {
            return Ok(());
        }
        let unsigned = |why: String| LoadError::Unsigned {
            playbook: playbook.to_owned(),
            path: path.to_owned(),
            why,
        };
        let mut sig_path = path.as_os_str().to_owned();
        sig_path.push(".sig");
        let text = std::fs::read_to_string(&sig_path).map_err(|e| {
            unsigned(format!(
                "cannot read {}: {e}",
                Path::new(&sig_path).display()
            ))
        })?;
        let sig: [u8; 64] = hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                unsigned("the .sig file is not a 64-byte signature in hex".to_owned())
            })?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig);
        if self
            .signing_keys
            .iter()
            .any(|(_, key)| key.verify_strict(bytes, &sig).is_ok())
        {
            Ok(())
        } else {
            Err(unsigned(
                "the signature does not verify with any of them (another key, or other bytes)"
                    .to_owned(),
            ))
        }
    }
}

/// Calls `describe()` in a throwaway store: tight limits, no grants, and
/// any import call traps.
async fn describe(
    engine: &Engine,
    pre: &PlaybookPre<RunData>,
    name: &str,
) -> Result<Description, LoadError> {
    let slot = engine.instance_slot().await;
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
    let mut store = new_store(engine, slot, calls);
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
