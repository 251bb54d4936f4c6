//! The on-disk compile cache.
//!
//! A compiled component is keyed by the SHA-256 of its bytes and by the
//! engine's compatibility hash (wasmtime version, target, settings), so a
//! host never loads native code compiled for another engine. Only bytes
//! this host wrote are ever deserialized. A damaged entry is recompiled.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Hex digest of the engine's compatibility hash.
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, so the key is stable across Rust
/// versions (std's hasher is not).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl CompileCache {
    pub fn new(dir: Option<PathBuf>, engine: &wasmtime::Engine) -> CompileCache {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_key: hex::encode(hasher.0.finalize()),
        }
    }

    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    fn path_for(&self, bytes: &[u8]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        let mut hasher = Sha256::new();
        hasher.update(self.engine_key.as_bytes());
        hasher.update(bytes);
        Some(dir.join(format!("{}.cwasm", hex::encode(hasher.finalize()))))
    }

    /// The compiled component, from the cache or freshly compiled (and
    /// then cached).
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(path) = self.path_for(bytes) else {
            return Component::new(engine, bytes);
        };
        if path.exists() {
            // SAFETY: the file name is derived from this engine's
            // compatibility hash and the component's own bytes, and only
            // `store` below writes into the cache directory, so the bytes
            // are native code this host produced for this engine.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    "compile cache entry {} is unusable ({e}); recompiling",
                    path.display()
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = store(&path, &component) {
            tracing::warn!("cannot write compile cache {}: {e}", path.display());
        }
        Ok(component)
    }
}

/// Writes atomically: a crash leaves no half-written entry.
fn store(path: &std::path::Path, component: &Component) -> anyhow::Result<()> {
    let serialized = component.serialize()?;
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("cache path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}-{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, serialized)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
