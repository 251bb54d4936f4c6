//! WASI's clocks, as a playbook sees them: the run's journaled time, so a
//! guest's own standard library (`time.time()`, `datetime.now()`,
//! `Date.now()`, `std::time::SystemTime`) decides on replay as it did live.
//!
//! - The wall clock *is* `runbook.now`: each reading is the same journaled
//!   call, answered from the journal on resume and replay, counted against
//!   the call limit like any call. While `describe()` runs (no import may
//!   be called then) it reads the Unix epoch.
//! - The monotonic clock counts from the run's first time reading and moves
//!   only when the run reads the time again: never backwards, never by
//!   itself, and the same on replay. Nothing is journaled for it, so a
//!   language runtime that reads it on its own does not change the journal.
//!
//! - A sleep through WASI (`time.sleep`, `setTimeout`) waits in the host,
//!   out of the epoch deadline's reach: one that would pass the run's
//!   deadline ends the run at once, as the deadline would have.
//!
//! This module replaces WASI's wall-clock `now` and monotonic-clock
//! `subscribe-*` in the linker; it must not read the host's clock itself
//! (the journal's clock does).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use std::time::Duration;

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::clocks::wall_clock::Datetime;

use super::CallCtx;
use crate::bindings::stepgate::playbook::runbook::Host as _;
use crate::ending::LimitExceeded;

/// The WASI clock interfaces this host's WASI defines (the linker answers
/// any 0.2 import with them; componentize-py's components import 0.2.9).
const WALL_CLOCK: &str = "wasi:clocks/wall-clock@0.2.12";
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// What a run's clocks have seen, shared by its [`CallCtx`] (which moves
/// it on every time reading) and its WASI monotonic clock (which reads it).
#[derive(Clone, Default)]
pub struct RunClock(Arc<Seen>);

struct Seen {
    /// The first reading, in ms since the epoch; [`NOT_YET`] before any.
    first_ms: AtomicI64,
    /// Nanoseconds from the first reading to the latest (the most seen).
    elapsed_ns: AtomicU64,
}

const NOT_YET: i64 = i64::MIN;

impl Default for Seen {
    fn default() -> Self {
        Seen {
            first_ms: AtomicI64::new(NOT_YET),
            elapsed_ns: AtomicU64::new(0),
        }
    }
}

impl RunClock {
    /// Records a time reading (journaled or replayed) of `ms`.
    pub fn saw(&self, ms: i64) {
        let first =
            match self
                .0
                .first_ms
                .compare_exchange(NOT_YET, ms, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => ms,
                Err(first) => first,
            };
        let elapsed = u64::try_from(ms.saturating_sub(first))
            .unwrap_or(0)
            .saturating_mul(1_000_000);
        self.0.elapsed_ns.fetch_max(elapsed, Ordering::SeqCst);
    }
}

impl wasmtime_wasi::HostMonotonicClock for RunClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.elapsed_ns.load(Ordering::SeqCst)
    }
}

/// The wall clock a run's WASI context holds: never read, since the
/// linker answers `now` from the journal, but it must say its resolution.
pub struct Unread;

impl wasmtime_wasi::HostWallClock for Unread {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Answers WASI's wall-clock `now` with `runbook.now`, and bounds WASI's
/// sleeps by the run's deadline. Call after WASI is added to `linker`,
/// whose functions these replace.
pub fn add_to_linker<T: WasiView + 'static>(
    linker: &mut Linker<T>,
    calls: fn(&mut T) -> &mut CallCtx,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = define(linker, calls);
    linker.allow_shadowing(false);
    defined
}

fn define<T: WasiView + 'static>(
    linker: &mut Linker<T>,
    calls: fn(&mut T) -> &mut CallCtx,
) -> wasmtime::Result<()> {
    let mut wall = linker.instance(WALL_CLOCK)?;
    wall.func_wrap_async("now", move |mut store, (): ()| {
        Box::new(async move {
            let ctx = calls(store.data_mut());
            let ms = if ctx.describing { 0 } else { ctx.now().await? };
            Ok((datetime(ms),))
        })
    })?;
    // A sleep (`time.sleep`, `setTimeout`, `std::thread::sleep`) waits in
    // the host, where the epoch deadline cannot reach it: one that would
    // pass the deadline ends the run now instead.
    let mut monotonic = linker.instance(MONOTONIC_CLOCK)?;
    monotonic.func_wrap(
        "subscribe-duration",
        move |mut store, (ns,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            let data = store.data_mut();
            within_deadline(calls(data), Duration::from_nanos(ns))?;
            Ok((monotonic_clock::Host::subscribe_duration(
                &mut data.clocks(),
                ns,
            )?,))
        },
    )?;
    monotonic.func_wrap(
        "subscribe-instant",
        move |mut store, (when,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            let data = store.data_mut();
            let now = monotonic_clock::Host::now(&mut data.clocks())?;
            within_deadline(calls(data), Duration::from_nanos(when.saturating_sub(now)))?;
            Ok((monotonic_clock::Host::subscribe_instant(
                &mut data.clocks(),
                when,
            )?,))
        },
    )?;
    Ok(())
}

/// Refuses a wait that would pass the run's deadline (or any wait while
/// `describe()` runs), ending the run as its deadline would.
fn within_deadline(ctx: &CallCtx, wait: Duration) -> wasmtime::Result<()> {
    if wait.is_zero() {
        return Ok(());
    }
    if ctx.describing || wait >= ctx.remaining() {
        return Err(wasmtime::Error::new(LimitExceeded::Deadline {
            limit: ctx.limits.deadline,
        }));
    }
    Ok(())
}

fn datetime(ms: i64) -> Datetime {
    let ms = ms.max(0);
    Datetime {
        seconds: (ms / 1000) as u64,
        nanoseconds: ((ms % 1000) * 1_000_000) as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi::HostMonotonicClock;

    #[test]
    fn the_monotonic_clock_counts_from_the_first_reading_and_never_goes_back() {
        let clock = RunClock::default();
        assert_eq!(clock.now(), 0, "nothing read yet");
        clock.saw(1_000_000);
        assert_eq!(clock.now(), 0);
        clock.saw(1_000_250);
        assert_eq!(clock.now(), 250_000_000);
        // A wall clock stepped back does not move it back.
        clock.saw(1_000_100);
        assert_eq!(clock.now(), 250_000_000);
    }

    #[test]
    fn a_reading_is_seconds_and_nanoseconds_and_never_before_the_epoch() {
        let d = datetime(1_764_000_000_250);
        assert_eq!((d.seconds, d.nanoseconds), (1_764_000_000, 250_000_000));
        let d = datetime(-5);
        assert_eq!((d.seconds, d.nanoseconds), (0, 0));
    }
}
