//! Logs and traces: one subscriber, pretty for people or JSON lines for shippers,
//! plus an OpenTelemetry layer exporting spans over OTLP/gRPC when
//! `CREDD_OTLP_ENDPOINT` is set.

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, Settings};

/// Whether spans are exported over OTLP (set once, by [`init`]).
static TRACES_EXPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported over OTLP: the RPC span carries its OpenTelemetry
/// attributes only then.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("credd: could not flush traces: {err}");
        }
    }
}

/// Installs the global subscriber. Logs go to stderr; stdout is kept for what an
/// operator must copy (a generated token). Must run inside the tokio runtime when
/// traces are exported (the OTLP exporter uses tonic).
pub fn init(settings: &Settings) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(&settings.log)
        .map_err(|err| format!("CREDD_LOG is not a valid filter: {err}"))?;
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(endpoint)?),
        None => None,
    };
    TRACES_EXPORTED.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("credd")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = match settings.log_format {
        // Colour only for a person at a terminal: a log file or a collector gets none.
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    result.map_err(|err| format!("cannot install the logger: {err}"))?;
    Ok(Telemetry { provider })
}

fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| format!("CREDD_OTLP_ENDPOINT: cannot build the OTLP exporter: {err}"))?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder()
        .with_service_name("credd")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from request headers.
pub struct HeaderExtractor<'a>(pub &'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
