//! Logs and traces: one subscriber, pretty for people or JSON lines for shippers,
//! plus an OpenTelemetry layer exporting spans over OTLP/gRPC when
//! `CREDD_OTLP_ENDPOINT` is set.

use opentelemetry::{KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, filter::Targets, fmt, prelude::*};

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
    let (targets, env_filter) = log_filter(&settings.log)?;
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(endpoint)?),
        None => None,
    };
    TRACES_EXPORTED.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("credd")));
    let registry = tracing_subscriber::registry()
        .with(targets)
        .with(env_filter)
        .with(otel);
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

/// The filter of `CREDD_LOG`, one of two kinds. A filter of targets and levels
/// (`info`, `credd=debug,sqlx=warn`: what an operator sets) is a [`Targets`],
/// decided once per call site: `EnvFilter` takes a shared lock on every span's
/// start, enter, exit, record and close, which every RPC paid for. A filter by
/// span or field (`credd[rpc{caller=gw}]=debug`) needs an `EnvFilter`.
fn log_filter(spec: &str) -> Result<(Option<Targets>, Option<EnvFilter>), String> {
    // EnvFilter's parse is the one the error messages come from, and the check.
    let env_filter = EnvFilter::try_new(spec)
        .map_err(|err| format!("CREDD_LOG is not a valid filter: {err}"))?;
    let by_target_only = !spec.contains(['[', '{', '"']);
    match spec.parse::<Targets>() {
        Ok(targets) if by_target_only => Ok((Some(targets), None)),
        _ => Ok((None, Some(env_filter))),
    }
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::Level;
    use tracing_subscriber::{Layer, layer::Context};

    use super::*;

    /// Records the target and level of every event that gets through.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let meta = event.metadata();
            if let Ok(mut seen) = self.0.lock() {
                seen.push(format!("{} {}", meta.target(), meta.level()));
            }
        }
    }

    /// One event of each level on a few targets, as the server's would be.
    fn emit() {
        macro_rules! at_every_level {
            ($target:literal) => {
                tracing::event!(target: $target, Level::ERROR, "e");
                tracing::event!(target: $target, Level::WARN, "w");
                tracing::event!(target: $target, Level::INFO, "i");
                tracing::event!(target: $target, Level::DEBUG, "d");
                tracing::event!(target: $target, Level::TRACE, "t");
            };
        }
        at_every_level!("credd::service::verify");
        at_every_level!("credd::store");
        at_every_level!("sqlx::query");
        at_every_level!("h2::codec");
    }

    fn seen_through(targets: Option<Targets>, env_filter: Option<EnvFilter>) -> Vec<String> {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(targets)
            .with(env_filter)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, emit);
        seen.0.lock().map(|seen| seen.clone()).unwrap_or_default()
    }

    #[test]
    fn a_filter_of_targets_and_levels_lets_through_what_env_filter_would() {
        for spec in [
            crate::config::DEFAULT_LOG,
            "info",
            "credd=debug",
            "warn,credd::service=trace",
            "credd::store=off,debug",
            "off",
        ] {
            let (targets, env_filter) = log_filter(spec).unwrap();
            assert!(targets.is_some() && env_filter.is_none(), "{spec}");
            let reference = EnvFilter::try_new(spec).unwrap();
            assert_eq!(
                seen_through(targets, None),
                seen_through(None, Some(reference)),
                "{spec}"
            );
        }
        // And the filter decides something: the default keeps sqlx's info out.
        let (targets, _) = log_filter(crate::config::DEFAULT_LOG).unwrap();
        let seen = seen_through(targets, None);
        assert!(seen.contains(&"credd::store INFO".to_owned()), "{seen:?}");
        assert!(
            !seen.iter().any(|line| line == "sqlx::query INFO"),
            "{seen:?}"
        );
    }

    #[test]
    fn a_filter_by_span_or_field_stays_an_env_filter_and_a_bad_one_is_refused() {
        let (targets, env_filter) = log_filter("info,credd[rpc{caller=gw}]=debug").unwrap();
        assert!(targets.is_none() && env_filter.is_some());
        let err = log_filter("info,credd=loud").unwrap_err();
        assert!(err.starts_with("CREDD_LOG is not a valid filter"), "{err}");
    }
}
