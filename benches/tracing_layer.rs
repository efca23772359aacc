#![allow(missing_docs)] // criterion_group! generates undocumented items
//! What the `tracing` layer costs the host's thread per span, against the anchor the issue
//! names: `tracing-opentelemetry` with the real OpenTelemetry SDK and no exporter (every span
//! built, sampled and ended; nothing sent), over the same span tree. And the registry alone,
//! which both pay. The tree is rig's shape, as a workflow: one run, eight agent tasks, each with
//! two model calls whose usage is recorded late and one tool call (33 spans). runtally writes to
//! a store that discards batches, so only the layer and the hand-off are measured.
//!
//! ```text
//! cargo bench -p runtally --bench tracing_layer --features tracing-layer
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry::trace::TracerProvider as _;
use runtally::store::NullStore;
use runtally::{Aggregator, AggregatorConfig};
use tracing::field::Empty;
use tracing_subscriber::layer::SubscriberExt;

const TASKS: usize = 8;
const SPANS_PER_RUN: u64 = 1 + TASKS as u64 * 4;

fn chat(input: u64, output: u64) {
    let span = tracing::info_span!(
        "chat",
        gen_ai.operation.name = "chat",
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
    );
    let _entered = span.enter();
    span.record("gen_ai.usage.input_tokens", input);
    span.record("gen_ai.usage.output_tokens", output);
}

/// One run's spans, on the calling thread's subscriber.
fn one_run(n: u64) {
    let id = format!("bench-span-{n}");
    let run = tracing::info_span!(
        "invoke_workflow",
        gen_ai.operation.name = "invoke_workflow",
        runtally.execution_id = id.as_str(),
    );
    let _run = run.enter();
    for _ in 0..TASKS {
        let _agent = tracing::info_span!(
            "invoke_agent",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = "worker",
        )
        .entered();
        chat(1_000, 200);
        let _tool = tracing::info_span!(
            "execute_tool",
            gen_ai.operation.name = "execute_tool",
            gen_ai.tool.name = "search"
        )
        .entered();
        drop(_tool);
        chat(1_400, 300);
    }
}

fn bench_dispatch(c: &mut Criterion, name: &str, dispatch: &tracing::Dispatch) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let mut group = c.benchmark_group("span_tree");
    group.throughput(Throughput::Elements(SPANS_PER_RUN));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function(name, |b| {
        tracing::dispatcher::with_default(dispatch, || {
            b.iter(|| one_run(RUN.fetch_add(1, Ordering::Relaxed)));
        })
    });
    group.finish();
}

fn span_tree(c: &mut Criterion) {
    let registry = tracing::Dispatch::new(tracing_subscriber::registry());
    bench_dispatch(c, "registry_only", &registry);

    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("bench");
    let otel = tracing::Dispatch::new(
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer)),
    );
    bench_dispatch(c, "tracing_opentelemetry_sdk_no_exporter", &otel);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let aggregator = runtime.block_on(async {
        let config = AggregatorConfig::builder()
            .with_max_pending_rows(1_000_000)
            .build()
            .expect("config");
        Aggregator::start_with_store(config, Arc::new(NullStore::new()))
            .await
            .expect("start")
    });
    let layered =
        tracing::Dispatch::new(tracing_subscriber::registry().with(runtally::layer(&aggregator)));
    bench_dispatch(c, "runtally_layer", &layered);
    // A result runtally could not take (full) is dropped and counted: say so next to the figure.
    eprintln!("runtally layer: {:?}", aggregator.metrics().tracing);
    runtime.block_on(async {
        aggregator.shutdown(Duration::from_secs(30)).await;
    });
}

criterion_group!(benches, span_tree);
criterion_main!(benches);
