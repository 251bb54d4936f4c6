//! OpenTelemetry: the spans the host already works under (run → step →
//! call, see [`run`](crate::run) and [`caps`](crate::caps)) exported over
//! OTLP/HTTP to a collector, a run's trace joined to the alert's
//! (`traceparent` annotation, W3C trace context), and each approval's
//! wait as a span from the request to the decision. Off unless
//! `[telemetry]` is configured.
//!
//! It exports what those spans carry (run id, playbook, step name, call
//! sequence and `interface.op`) and never a call's arguments, results or
//! secrets. The exporter posts through the host's own reqwest client on
//! the async runtime; a collector that is down costs dropped spans, never
//! a run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::bindings::Alert;
use crate::config::TelemetryConfig;

/// The annotation an alert carries its trace context in.
pub const TRACEPARENT: &str = "traceparent";

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("[telemetry] otlp_endpoint `{endpoint}`: {message}")]
    Endpoint { endpoint: String, message: String },
}

/// Where exported spans go, once [`Export::start`] says: until then (and
/// without `[telemetry]`) ended spans are dropped. The tracing layer has to
/// exist from the process's start (it cannot be swapped in later and still
/// take part in parenting spans), the exporter only once a config is read.
#[derive(Debug, Clone, Default)]
pub struct Export(Arc<OnceLock<BatchSpanProcessor>>);

/// Whether this process exports spans (an [`Export`] was started).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans go anywhere: what is only worth computing for a span
/// (an approval's wait) is skipped when they do not.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

impl Export {
    /// The tracer provider whose spans go to this export, also made the
    /// global one (for the approval-wait spans).
    pub fn provider(&self) -> SdkTracerProvider {
        // Every span is recorded whatever the alert's `traceparent` says
        // of sampling: an alert must not be able to hide its run.
        let provider = SdkTracerProvider::builder()
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_span_processor(self.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        provider
    }

    /// Starts sending spans to `config`'s collector, the exports run on
    /// `runtime`; a second call changes nothing.
    pub fn start(
        &self,
        config: &TelemetryConfig,
        runtime: tokio::runtime::Handle,
    ) -> Result<(), TelemetryError> {
        if self.0.get().is_some() {
            return Ok(());
        }
        let endpoint = format!("{}/v1/traces", config.otlp_endpoint.trim_end_matches('/'));
        let invalid = |message: String| TelemetryError::Endpoint {
            endpoint: config.otlp_endpoint.clone(),
            message,
        };
        let url = reqwest::Url::parse(&endpoint).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("not an http(s) URL".to_owned()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(10))
            .with_http_client(Client {
                client: collector_client().map_err(|e| invalid(e.to_string()))?,
                runtime,
            })
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(config.export_every)
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        processor.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let _ = self.0.set(processor);
        EXPORTING.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// The client the exporter posts with: every request bounded (a collector
/// that never answers must not stall the export thread for good), no
/// redirect followed.
fn collector_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

impl SpanProcessor for Export {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        if let Some(inner) = self.0.get() {
            inner.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        if let Some(inner) = self.0.get() {
            inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.get().map_or(Ok(()), |inner| inner.force_flush())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0
            .get()
            .map_or(Ok(()), |inner| inner.shutdown_with_timeout(timeout))
    }
}

/// The layer that turns the host's tracing spans into OpenTelemetry ones.
pub fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("stepgate"))
}

/// Makes `span` (a run's) a child of the trace in the alert's
/// `traceparent` annotation, if it carries a valid one.
pub fn join_alert_trace(span: &tracing::Span, alert: &Alert) {
    let Some((_, traceparent)) = alert.annotations.iter().find(|(k, _)| k == TRACEPARENT) else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([(TRACEPARENT.to_owned(), traceparent.trim().to_owned())]);
    let context = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    use opentelemetry::trace::TraceContextExt;
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// Records the wait for the approval of write `seq` (from its request at
/// `requested_ms` to its decision at `decided_ms`, ms since the epoch) as
/// a span under the current one.
pub fn approval_wait(seq: u64, requested_ms: i64, decided_ms: i64, outcome: &str) {
    let at = |ms: i64| UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let parent = tracing::Span::current().context();
    let tracer = opentelemetry::global::tracer("stepgate");
    let mut span = tracer
        .span_builder("approval wait")
        .with_start_time(at(requested_ms))
        .with_attributes([
            opentelemetry::KeyValue::new("seq", seq as i64),
            opentelemetry::KeyValue::new("outcome", outcome.to_owned()),
        ])
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(at(decided_ms).max(at(requested_ms)));
}

/// The exporter's HTTP client: the host's reqwest, each request run on
/// the async runtime (the batch processor exports from its own thread).
#[derive(Debug, Clone)]
struct Client {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = reqwest::Request::try_from(request)?;
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut response = Response::builder().status(status);
        if let Some(map) = response.headers_mut() {
            *map = headers;
        }
        Ok(response.body(body)?)
    }
}
