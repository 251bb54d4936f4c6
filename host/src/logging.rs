//! The binary's tracing subscriber: log lines on stderr as `STEPGATE_LOG`
//! says (default `warn`), and the OpenTelemetry layer, whose filter
//! enables nothing until a config's `[telemetry]` starts the export (so
//! without it no span costs more than a log line would).

use std::sync::OnceLock;

use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets, filter_fn};
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
    // stays in the log.
    let filter = filter.and(filter_fn(|metadata| metadata.is_span()));
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
