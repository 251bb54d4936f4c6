//! The on-disk compile cache.
//!
//! A compiled component is keyed by the SHA-256 of its bytes and by the
//! engine's compatibility hash (wasmtime version, target, settings), so a
//! host never loads native code compiled for another engine. Only bytes
//! this host wrote are ever deserialized. A damaged entry is recompiled.
//!
//! Loads of one component that miss at the same moment compile it once:
//! the others wait for it and load what it stored (a server starting many
//! runs of a new playbook at once, `stepgate test` running every
//! scenario). The directory is bounded: a Python component compiles to
//! about 37 MB and every rebuild is a new entry, so past `max_bytes` the
//! entries loaded least recently are removed (a load marks its entry by
//! its modification time).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub struct CompileCache {
    dir: Option<PathBuf>,
    /// Hex digest of the engine's compatibility hash.
    engine_key: String,
    /// The most the directory's entries may hold together, in bytes.
    max_bytes: u64,
    /// One lock per entry being compiled in this process.
    compiling: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
    /// How many components this cache compiled (the rest came from disk).
    compiles: AtomicU64,
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
    pub fn new(dir: Option<PathBuf>, max_bytes: u64, engine: &wasmtime::Engine) -> CompileCache {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        CompileCache {
            dir,
            engine_key: hex::encode(hasher.0.finalize()),
            max_bytes,
            compiling: Mutex::default(),
            compiles: AtomicU64::new(0),
        }
    }

    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// How many components this cache compiled rather than read from disk.
    pub fn compiles(&self) -> u64 {
        self.compiles.load(Ordering::Relaxed)
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
        if let Some(component) = from_disk(engine, &path) {
            return Ok(component);
        }
        let turn = self.turn_to_compile(&path);
        let _turn = turn.lock().unwrap_or_else(PoisonError::into_inner);
        // Another load may have compiled it while this one waited.
        if let Some(component) = from_disk(engine, &path) {
            return Ok(component);
        }
        let compiled = Component::new(engine, bytes);
        if let Ok(component) = &compiled {
            self.compiles.fetch_add(1, Ordering::Relaxed);
            match store(&path, component) {
                Ok(()) => self.keep_within_bounds(&path),
                Err(e) => tracing::warn!("cannot write compile cache {}: {e}", path.display()),
            }
        }
        // Later loads find the entry on disk (or compile again after a
        // failure): the lock need not outlive this compile, so a server's
        // map does not grow with every component it ever loaded.
        self.compiling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&path);
        compiled
    }

    fn turn_to_compile(&self, path: &Path) -> Arc<Mutex<()>> {
        self.compiling
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_owned())
            .or_default()
            .clone()
    }

    /// Removes the entries loaded least recently until the directory holds
    /// at most `max_bytes`, never `kept` (the entry just stored). A removed
    /// entry that a loaded component maps stays readable until unmapped.
    fn keep_within_bounds(&self, kept: &Path) {
        let Some(dir) = &self.dir else { return };
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = listing
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path != kept && std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// The entry at `path`, if there is a usable one; marked as just loaded.
fn from_disk(engine: &wasmtime::Engine, path: &Path) -> Option<Component> {
    if !path.exists() {
        return None;
    }
    // SAFETY: the file name is derived from this engine's compatibility
    // hash and the component's own bytes, and only `store` below writes
    // into the cache directory, so the bytes are native code this host
    // produced for this engine.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(component) => {
            // Best effort: an entry that cannot be marked is only evicted
            // a little early.
            let _ = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
            Some(component)
        }
        Err(e) => {
            tracing::warn!(
                "compile cache entry {} is unusable ({e}); recompiling",
                path.display()
            );
            None
        }
    }
}

/// Writes atomically: a crash leaves no half-written entry.
fn store(path: &Path, component: &Component) -> anyhow::Result<()> {
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
        let cache = CompileCache::new(Some(dir.path().to_owned()), u64::MAX, &engine);
        let bytes = std::fs::read(stepgate_artifacts::HOSTILE).unwrap();
        assert!(!cache.holds(&bytes));
        cache.load(&engine, &bytes).unwrap();
        assert!(cache.holds(&bytes));
        let files = cwasm_files(dir.path());
        assert_eq!(files.len(), 1);
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(&files[0]).unwrap().ino();
        cache.load(&engine, &bytes).unwrap();
        assert_eq!(
            cwasm_files(dir.path()),
            files,
            "a second load must not add an entry"
        );
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().ino(),
            written,
            "nor write it again"
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
        let cache = CompileCache::new(Some(dir.path().to_owned()), u64::MAX, &engine);
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
        let a = CompileCache::new(Some(dir.path().to_owned()), u64::MAX, &engine());
        let b = CompileCache::new(
            Some(dir.path().to_owned()),
            u64::MAX,
            &wasmtime::Engine::new(&wasmtime::Config::new()).unwrap(),
        );
        assert_ne!(a.path_for(b"x"), b.path_for(b"x"));
        assert_ne!(a.path_for(b"x"), a.path_for(b"y"));
    }

    /// Loads of one component that miss together compile it once.
    #[test]
    fn loads_that_miss_together_compile_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::new(Some(dir.path().to_owned()), u64::MAX, &engine);
        let bytes = std::fs::read(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT).unwrap();
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|threads| {
            for _ in 0..4 {
                threads.spawn(|| {
                    start.wait();
                    cache.load(&engine, &bytes).unwrap();
                });
            }
        });
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 1, "one entry, no temporary file left behind");
        assert_eq!(cache.compiles(), 1, "compiled once, loaded four times");
    }

    /// Past its bound the cache drops the entry loaded least recently,
    /// never the one just stored.
    #[test]
    fn the_cache_keeps_to_its_bound_dropping_the_least_recently_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let component = |artifact: &str| std::fs::read(artifact).unwrap();
        let (a, b, c) = (
            component(stepgate_artifacts::HOSTILE),
            component(stepgate_artifacts::PLAZA_RECONCILIATION_DRIFT),
            component(stepgate_artifacts::PLAZA_RPC_OUTAGE),
        );
        // Each entry's size, from a cache of its own.
        let sizes = tempfile::tempdir().unwrap();
        let sizer = CompileCache::new(Some(sizes.path().to_owned()), u64::MAX, &engine);
        let size = |bytes: &[u8]| {
            sizer.load(&engine, bytes).unwrap();
            std::fs::metadata(sizer.path_for(bytes).unwrap())
                .unwrap()
                .len()
        };
        // Room for a and c, not for b as well.
        let bounded = CompileCache::new(Some(dir.path().to_owned()), size(&a) + size(&c), &engine);
        let unbounded = CompileCache::new(Some(dir.path().to_owned()), u64::MAX, &engine);
        unbounded.load(&engine, &a).unwrap();
        unbounded.load(&engine, &b).unwrap();
        // `a` was stored first; loading it again makes `b` the least recent.
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        for bytes in [&a, &b] {
            let entry = std::fs::File::open(bounded.path_for(bytes).unwrap()).unwrap();
            entry.set_modified(past).unwrap();
        }
        bounded.load(&engine, &a).unwrap();
        assert!(
            bounded.holds(&a) && bounded.holds(&b),
            "a hit removes nothing"
        );
        bounded.load(&engine, &c).unwrap();
        assert!(bounded.holds(&c), "the entry just stored is kept");
        assert!(bounded.holds(&a), "the one loaded recently is kept");
        assert!(!bounded.holds(&b), "the least recently loaded is dropped");
    }
}
