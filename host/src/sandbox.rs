//! The wasmtime store a playbook runs in, wasmtime's ctx/view split: its
//! data ([`RunData`]: the capability calls, the WASI context with fixed
//! clocks and seeded randomness, what the guest printed, the memory
//! limiter, the pool slot), how a store is made with its limits and
//! slices ([`new_store`]), and how a trap is told apart ([`classify_trap`]).
//! It runs nothing: `run` and `playbook` instantiate in it.

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::caps::CallCtx;
use crate::caps::clock::{self, RunClock};
use crate::ending::{LimitExceeded, RunEnd, Stopped};
use crate::engine::{Engine, InstanceSlot, ticks};
use crate::guest_output::GuestOutput;

/// Refuses memory growth past the run's limit, naming the limit.
pub struct MemoryLimiter {
    limit: u64,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            return Err(wasmtime::Error::new(LimitExceeded::Memory {
                limit: self.limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        crate::engine::CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        crate::engine::MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        crate::engine::TABLES_PER_COMPONENT as usize
    }
}

/// A run's store data: its capability context and an empty, deny-all WASI.
pub struct RunData {
    pub calls: CallCtx,
    /// The pool's slot this store's instance takes, freed with the store.
    _instance: InstanceSlot,
    /// What the guest printed (for crash reports).
    pub output: GuestOutput,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl WasiView for RunData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for one run, limits in place, in the instance slot it was
/// given (taken before the run's clock started: waiting for it is not
/// the playbook's time).
pub fn new_store(engine: &Engine, slot: InstanceSlot, calls: CallCtx) -> Store<RunData> {
    let limits = calls.limits;
    let output = GuestOutput::default();
    let data = RunData {
        _instance: slot,
        wasi: deterministic_wasi(&calls.run_id, &output, calls.clock.clone()),
        output,
        calls,
        table: ResourceTable::new(),
        limiter: MemoryLimiter {
            limit: limits.memory,
        },
    };
    let mut store = Store::new(engine.wasmtime(), data);
    store.limiter(|data| &mut data.limiter);
    // What one call may copy out of the guest: its arguments' limit with
    // room for their encoding, not wasmtime's 128 MiB (list elements that
    // all point at one guest string are copied once each).
    store.set_hostcall_fuel(hostcall_fuel(limits.argument_bytes));
    // A guest that computes without calling the host gives its thread
    // back every slice: a spinning playbook must not hold a worker (and
    // with it the hooks, the API and other runs) until its deadline.
    store.set_epoch_deadline(SLICE_TICKS.min(ticks(limits.deadline)));
    store.epoch_deadline_callback(|ctx| {
        let calls = &ctx.data().calls;
        let remaining = calls.remaining();
        if remaining.is_zero() {
            Err(wasmtime::Error::new(LimitExceeded::Deadline {
                limit: calls.limits.deadline,
            }))
        } else {
            // Time spent waiting on humans was not counted: go on for what
            // is really left, a slice at a time, yielding between slices.
            // tokio's own yield: the runtime polls its I/O and timers
            // before the guest goes on (a plain wake would poll them only
            // every few dozen slices, and a server would answer nothing).
            Ok(UpdateDeadline::YieldCustom(
                SLICE_TICKS.min(ticks(remaining)),
                Box::pin(tokio::task::yield_now()),
            ))
        }
    });
    store
}

/// Epoch ticks a guest runs between yields to the executor (one tick is
/// [`crate::engine::TICK`]).
const SLICE_TICKS: u64 = 2;

/// The bytes a guest may move to the host in one call, for arguments of
/// at most `argument_bytes` as JSON: eight times that, at least 4 MiB.
fn hostcall_fuel(argument_bytes: u64) -> usize {
    const FLOOR: usize = 4 << 20;
    usize::try_from(argument_bytes.saturating_mul(8))
        .unwrap_or(usize::MAX)
        .max(FLOOR)
}

/// No files, sockets, environment or arguments; the run's journaled time
/// (see [`crate::caps::clock`]) and randomness seeded from the run id, so a
/// guest cannot use WASI to see the outside world or to decide differently
/// on replay.
fn deterministic_wasi(run_id: &str, output: &GuestOutput, clock: RunClock) -> WasiCtx {
    use rand::SeedableRng;
    use sha2::Digest;
    let seed: [u8; 32] = sha2::Sha256::digest(run_id.as_bytes()).into();
    let mut builder = WasiCtx::builder();
    builder
        .secure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random(rand::rngs::StdRng::from_seed(seed))
        .insecure_random_seed(u128::from_le_bytes(
            seed[..16].try_into().unwrap_or_default(),
        ))
        .wall_clock(clock::Unread)
        .monotonic_clock(clock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .stdout(output.clone())
        .stderr(output.clone());
    builder.build()
}

/// Maps a trap to how the run ended. `printed` is what the guest wrote
/// to stdout/stderr (a panic message), which says more than the trap.
pub fn classify_trap(error: &wasmtime::Error, printed: &str) -> RunEnd {
    if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
        return RunEnd::Limit(limit.clone());
    }
    if let Some(stopped) = error.downcast_ref::<Stopped>() {
        return RunEnd::Stopped(stopped.clone());
    }
    if let Some(wasmtime::Trap::StackOverflow) = error.downcast_ref::<wasmtime::Trap>() {
        return RunEnd::Limit(LimitExceeded::Stack);
    }
    tracing::debug!("guest trap: {error:?}");
    let mut cause = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("the guest trapped: {trap}"),
        None => error.root_cause().to_string(),
    };
    if let Some(place) = trapped_in(error) {
        cause.push_str(&format!(" (in {place})"));
    }
    if printed.is_empty() {
        RunEnd::Crashed(cause)
    } else {
        RunEnd::Crashed(format!("{cause}; it printed:\n{printed}"))
    }
}

/// Where in the guest a trap happened: its innermost named functions, the
/// trap's own first. A call the sandbox answers with a trap (a toolchain's
/// stub for an import) shows as the import's shim or the function that
/// called it, e.g. `wall_clock_now ← PyTime_Time`. The names come from the
/// guest: cut short here, escaped where they are shown.
fn trapped_in(error: &wasmtime::Error) -> Option<String> {
    const FRAMES: usize = 3;
    const NAME: usize = 120;
    let trace = error.downcast_ref::<wasmtime::WasmBacktrace>()?;
    let names: Vec<String> = trace
        .frames()
        .iter()
        .filter_map(|frame| frame.func_name())
        .take(FRAMES)
        .map(|name| {
            let readable = format!("{:#}", rustc_demangle::demangle(name));
            crate::caps::cut_text(&readable, NAME)
        })
        .collect();
    (!names.is_empty()).then(|| names.join(" ← "))
}
