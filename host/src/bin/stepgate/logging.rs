//! The binary's tracing subscriber: log lines on stderr as `STEPGATE_LOG`
//! says (default `warn`), and the OpenTelemetry layer, whose filter
//! enables nothing until a config's `[telemetry]` starts the export (so
//! without it no span costs more than a log line would).

use std::sync::OnceLock;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, reload};

use stepgate::config::TelemetryConfig;
use stepgate::telemetry::{Export, TelemetryError};

struct Telemetry {
    export: Export,
    provider: SdkTracerProvider,
    filter: reload::Handle<Targets, Registry>,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Installs the subscriber; call once, first thing.
pub fn init() {
    let export = Export::default();
    let provider = export.provider();
    let (filter, handle) = reload::Layer::new(Targets::new());
    // Spans only: a log line's text (which may quote a backend's error)
    // stays in the log. The hint says this part restricts no level, so the
    // pair's hint is the targets' own: without one, the process-wide
    // maximum level would be TRACE and every `log::trace!` of a dependency
    // (cranelift's, while it compiles a component; sqlx's and hyper's on
    // every call) would be formatted into a record and offered to each
    // layer, instead of being skipped by one comparison.
    let spans_only =
        filter_fn(|metadata| metadata.is_span()).with_max_level_hint(LevelFilter::TRACE);
    let filter = filter.and(spans_only);
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_from_env("STEPGATE_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        );
    tracing_subscriber::registry()
        .with(stepgate::telemetry::layer(&provider).with_filter(filter))
        .with(log)
        .init();
    let _ = TELEMETRY.set(Telemetry {
        export,
        provider,
        filter: handle,
    });
}

/// Starts exporting the host's spans as `config` says (once per process;
/// a later config's `[telemetry]` is not read again). Must be called on
/// the async runtime, which the exports run on.
pub fn export(config: &TelemetryConfig) -> Result<(), TelemetryError> {
    let Some(telemetry) = TELEMETRY.get() else {
        return Ok(());
    };
    telemetry
        .export
        .start(config, tokio::runtime::Handle::current())?;
    let _ = telemetry
        .filter
        .reload(Targets::new().with_target("stepgate", tracing::Level::INFO));
    Ok(())
}

/// Sends what is still batched and stops the exporter (before exit).
pub async fn flush() {
    let Some(telemetry) = TELEMETRY.get() else {
        return;
    };
    let provider = telemetry.provider.clone();
    // A collector that is down costs at most this at exit.
    let _ = tokio::task::spawn_blocking(move || {
        provider.shutdown_with_timeout(std::time::Duration::from_secs(2))
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the default log level and no telemetry, the process-wide
    /// maximum level is `warn`: a dependency's debug and trace events are
    /// skipped by one comparison (it was TRACE once, and a debug build
    /// spent four fifths of a Python component's compile offering
    /// cranelift's trace records to the subscriber).
    #[test]
    fn debug_and_trace_events_are_off_unless_asked_for() {
        if std::env::var_os("STEPGATE_LOG").is_some() {
            return;
        }
        init();
        assert_eq!(LevelFilter::current(), LevelFilter::WARN);
    }
}
