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

    /// Whether the compiled form of `bytes` is in the cache (a load will
    /// not compile). Without a cache directory, never.
    pub fn holds(&self, bytes: &[u8]) -> bool {
        self.path_for(bytes).is_some_and(|path| path.exists())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> wasmtime::Engine {
        wasmtime::Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap()
    }

    fn cwasm_files(dir: &std::path::Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    }

    #[test]
    fn compiles_once_then_loads_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::new(Some(dir.path().to_owned()), &engine);
        let bytes = std::fs::read(stepgate_artifacts::HOSTILE).unwrap();
        assert!(!cache.holds(&bytes));
        cache.load(&engine, &bytes).unwrap();
        assert!(cache.holds(&bytes));
        let files = cwasm_files(dir.path());
        assert_eq!(files.len(), 1);
        let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
        cache.load(&engine, &bytes).unwrap();
        assert_eq!(
            cwasm_files(dir.path()),
            files,
            "a second load must not add an entry"
        );
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
            written
        );
        // Another component gets its own entry.
        let other = std::fs::read(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT).unwrap();
        cache.load(&engine, &other).unwrap();
        assert_eq!(cwasm_files(dir.path()).len(), 2);
    }

    #[test]
    fn a_damaged_entry_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::new(Some(dir.path().to_owned()), &engine);
        let bytes = std::fs::read(stepgate_artifacts::HOSTILE).unwrap();
        cache.load(&engine, &bytes).unwrap();
        let entry = cwasm_files(dir.path()).remove(0);
        std::fs::write(&entry, b"not native code").unwrap();
        cache.load(&engine, &bytes).unwrap();
        assert!(std::fs::metadata(&entry).unwrap().len() > 1000, "rewritten");
    }

    #[test]
    fn keys_differ_by_engine_settings() {
        let dir = tempfile::tempdir().unwrap();
        let a = CompileCache::new(Some(dir.path().to_owned()), &engine());
        let b = CompileCache::new(
            Some(dir.path().to_owned()),
            &wasmtime::Engine::new(&wasmtime::Config::new()).unwrap(),
        );
        assert_ne!(a.path_for(b"x"), b.path_for(b"x"));
        assert_ne!(a.path_for(b"x"), a.path_for(b"y"));
    }
}
