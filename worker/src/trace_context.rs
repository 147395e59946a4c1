//! W3C trace context across the engine: a task's span joins the trace of its instance's
//! `traceparent` variable, and the step is handed the context of its own run, so that what the
//! step calls (the `http` adapter's request, a sandboxed script that reads `TRACEPARENT`) lands in
//! the same trace.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The process variable (and header, and environment variable in lower case) that carries it.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the span `traceparent` names, when it names one.
pub(crate) fn join(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        // Without a tracing layer that exports (no OTLP endpoint) this does nothing.
        let _ = span.set_parent(context);
    } else {
        tracing::debug!(
            traceparent,
            "the instance's traceparent is not a W3C trace context; the task starts no trace of it"
        );
    }
}

/// The trace context to hand a step that runs inside `span`: `span`'s own when spans are
/// exported, else the instance's `traceparent` as it came (when it is a valid one), so that the
/// step still joins the caller's trace.
pub(crate) fn for_step(span: &tracing::Span, traceparent: Option<&str>) -> Option<String> {
    let propagator = TraceContextPropagator::new();
    let own = span.context();
    let context = if own.span().span_context().is_valid() {
        own
    } else {
        let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent?.to_owned())]);
        propagator.extract(&carrier)
    };
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    propagator.inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_an_exporting_layer_the_step_gets_the_instances_context() {
        let span = tracing::info_span!("external_task");
        join(&span, Some(GIVEN));
        assert_eq!(for_step(&span, Some(GIVEN)).as_deref(), Some(GIVEN));
        assert_eq!(for_step(&span, Some("not a trace context")), None);
        assert_eq!(for_step(&span, None), None);
    }
}
