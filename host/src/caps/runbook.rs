//! `stepgate:playbook/runbook`: the run itself. Always granted. `now` and
//! `sleep` are journaled (a replay answers them from the journal, so time
//! is deterministic; WASI's wall clock reads `now` too, see
//! [`super::clock`]); `confirm` is a human decision and passes the write
//! gate like any write. In step mode, `step` pauses for an operator.
//! `dry-run` tells the playbook its run's mode, for wording only.

use std::time::Duration;

use serde_json::json;

use super::{Action, Call, CallCtx, CapError, cut_text};
use crate::backends::BackendError;
use crate::bindings::WitError;
use crate::bindings::stepgate::playbook::runbook::{Host, Level};

/// Longest log line kept; the rest is cut, so a playbook cannot flood the
/// terminal or the journal.
const MAX_LOG_LINE: usize = 4096;

/// Longest step name kept.
const MAX_STEP_NAME: usize = 200;

/// A call that cannot return a WIT error: anything but a trap is a bug.
fn infallible<T>(result: Result<T, CapError>) -> wasmtime::Result<T> {
    match result {
        Ok(v) => Ok(v),
        Err(CapError::Trap(t)) => Err(t),
        Err(CapError::Wit(e)) => Err(wasmtime::format_err!("unexpected error: {e:?}")),
    }
}

impl Host for CallCtx {
    async fn step(&mut self, name: String) -> wasmtime::Result<()> {
        infallible(self.admit("runbook", "step"))?;
        let name = cut_text(&name, MAX_STEP_NAME);
        self.enter_step_span(&name);
        self.step_span.in_scope(|| tracing::info!("step"));
        self.journal.enter_step(name.clone());
        if self.step_mode() {
            infallible(self.pause_at_step(&name).await)?;
        }
        Ok(())
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        infallible(self.admit("runbook", "log"))?;
        let message = cut_text(&message, MAX_LOG_LINE);
        let level = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.step_span
            .in_scope(|| tracing::debug!(level, message = %message, "playbook log"));
        self.journal.log(level, &message);
        Ok(())
    }

    async fn now(&mut self) -> wasmtime::Result<i64> {
        let call = Call::read("runbook", "now", "clock", json!({}));
        let backends = self.backends.clone();
        let result = self
            .call(call, Ok(()), async move |_, _| {
                Ok(backends.clock().now_ms())
            })
            .await;
        let ms = infallible(result)?;
        self.clock.saw(ms);
        Ok(ms)
    }

    async fn sleep(&mut self, millis: u64) -> Result<(), CapError> {
        let call = Call::read("runbook", "sleep", "clock", json!({ "millis": millis }));
        let wait = Duration::from_millis(millis);
        let remaining = self.remaining();
        let backends = self.backends.clone();
        self.call(call, Ok(()), async move |_, _| {
            if wait >= remaining {
                return Err(BackendError::Timeout(format!(
                    "a sleep of {wait:?} would pass the run's deadline ({remaining:?} left)"
                )));
            }
            backends.clock().sleep(wait).await;
            Ok(())
        })
        .await
    }

    async fn confirm(&mut self, question: String) -> Result<bool, CapError> {
        let call = Call::write(
            "runbook",
            "confirm",
            "confirm",
            json!({ "question": question }),
            &question,
        );
        let answer = self
            .call(call, Ok(()), async move |action, _| {
                // A dry run assumes yes, so the plan shows what follows.
                Ok(matches!(action, Action::Perform | Action::Simulate))
            })
            .await;
        match answer {
            // A human (or the policy) saying no is an answer, not a failure.
            Err(CapError::Wit(WitError::Denied(_))) => Ok(false),
            other => other,
        }
    }

    async fn dry_run(&mut self) -> wasmtime::Result<bool> {
        // Not journaled: the mode is the run's own, and a resumed or
        // replayed run keeps the mode it was recorded with.
        infallible(self.admit("runbook", "dry-run"))?;
        Ok(self.told_dry_run())
    }
}
