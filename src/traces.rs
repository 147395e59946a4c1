//! Traces: the `tracing` spans of the process (a span per external task, with its adapter run
//! and write-back) exported over OTLP when an endpoint is configured; nothing leaves the process
//! when none is. Exporting runs on the SDK's own thread, batched, off the tasks' paths.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The service name spans carry unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "procos";

/// A tracer provider exporting to the OTLP/HTTP receiver at `endpoint` (its base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is: `/v1/traces` is added), and the layer that hands it the
/// process's spans.
pub fn exporting<S>(endpoint: &str) -> anyhow::Result<(SdkTracerProvider, impl Layer<S>)>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(&url)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot export traces to {url}: {e}"))?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| SERVICE_NAME.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("procos"));
    Ok((provider, layer))
}
