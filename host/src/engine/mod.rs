//! wasmtime setup: one engine per host process, the compile cache, the
//! pooling allocator and the epoch ticker that enforces deadlines.
//!
//! The engine knows no capability and no playbook: it turns bytes into
//! compiled components, quickly and only once, and hands out the instance
//! slots a store needs: one more instance than the pool holds waits for a
//! slot instead of failing (scenarios run side by side, a server's runs
//! and look-aheads, a replay's). It carries the host's stop token, which
//! parks its runs when the host stops.

mod cache;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use wasmtime::component::Component;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

pub use cache::CompileCache;

use crate::config::EngineConfig;
use crate::ending::StopToken;

/// How often the epoch advances. Deadlines are checked at this grain.
pub const TICK: Duration = Duration::from_millis(10);

/// Ticks that cover `d` (at least one).
pub fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Setup(String),
    #[error("cannot read component {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
}

/// The host's wasmtime engine.
pub struct Engine {
    engine: wasmtime::Engine,
    cache: CompileCache,
    pooling: bool,
    /// One permit per instance the pool holds (`engine.max_instances`).
    instances: Arc<Semaphore>,
    /// Raised when the host stops: the runs of this engine park.
    stop: StopToken,
}

/// The right to hold one component instance; a store keeps it for its
/// whole life and frees it when it is dropped.
#[derive(Debug)]
pub struct InstanceSlot {
    _permit: OwnedSemaphorePermit,
}

impl Engine {
    /// Builds the engine. `max_memory` is the largest memory limit any
    /// playbook has (pooling slots are sized for it).
    pub fn new(config: &EngineConfig, max_memory: u64) -> Result<Engine, EngineError> {
        let mut wasm = base_config();
        let mut pooling = false;
        let engine = if config.pooling {
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config(
                config.max_instances,
                max_memory,
            )));
            match wasmtime::Engine::new(&wasm) {
                Ok(engine) => {
                    pooling = true;
                    engine
                }
                Err(e) => {
                    tracing::warn!(
                        "the pooling allocator is not available on this host ({e}); falling back to on-demand allocation"
                    );
                    let wasm = base_config();
                    wasmtime::Engine::new(&wasm).map_err(|e| EngineError::Setup(e.to_string()))?
                }
            }
        } else {
            wasmtime::Engine::new(&wasm).map_err(|e| EngineError::Setup(e.to_string()))?
        };
        start_ticker(&engine);
        let cache_dir = config.cache_dir.clone().or_else(default_cache_dir);
        Ok(Engine {
            cache: CompileCache::new(cache_dir, config.cache_max_size, &engine),
            engine,
            pooling,
            instances: Arc::new(Semaphore::new(config.max_instances.max(1) as usize)),
            stop: StopToken::default(),
        })
    }

    /// What the host raises to park the runs of this engine.
    pub fn stop_token(&self) -> &StopToken {
        &self.stop
    }

    /// Shares `token` (a reloaded server's runtimes park together).
    pub fn share_stop_token(&mut self, token: StopToken) {
        self.stop = token;
    }

    /// Waits for an instance slot (one is free once a store is dropped).
    pub async fn instance_slot(&self) -> InstanceSlot {
        match self.instances.clone().acquire_owned().await {
            Ok(permit) => InstanceSlot { _permit: permit },
            // Never closed: the engine owns it and closes nothing.
            Err(_) => unreachable!("the engine's instance semaphore is never closed"),
        }
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// Whether instances come from the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    pub fn cache(&self) -> &CompileCache {
        &self.cache
    }

    /// Reads and compiles a component, through the on-disk cache.
    pub fn load(&self, path: &Path) -> Result<Component, EngineError> {
        let bytes = std::fs::read(path).map_err(|source| EngineError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Component, EngineError> {
        self.cache
            .load(&self.engine, bytes)
            .map_err(|e| EngineError::Compile {
                path: path.to_owned(),
                message: format!("{e:#}"),
            })
    }
}

fn base_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// What one component may take of the pool: enough for the Rust, Python
/// and JavaScript guests, far less than the pool, so one component cannot
/// fill it (the store's limiter holds the same numbers, see `run`).
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 64;
pub const MEMORIES_PER_COMPONENT: u32 = 8;
pub const TABLES_PER_COMPONENT: u32 = 64;

fn pooling_config(instances: u32, max_memory: u64) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 8)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(max_memory as usize);
    pool
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("stepgate"))
}

/// Advances the epoch every [`TICK`] until the engine is dropped.
fn start_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("stepgate-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| {
            tracing::error!("cannot start the epoch ticker: {e}; deadlines will not fire")
        });
}
