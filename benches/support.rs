//! Shared by the benchmarks: a real SDK tracer provider whose batch
//! processor exports to an exporter that discards, so what is measured is
//! span creation, attributes, propagation and the processor hand-off.
//! Each benchmark uses part of this module.
#![allow(dead_code)]

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};

#[derive(Debug)]
pub struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// Always-on sampling (every span recorded and handed to the processor),
/// with a queue big enough that nothing is dropped at benchmark rates.
pub fn provider() -> SdkTracerProvider {
    provider_sampling(Sampler::AlwaysOn)
}

/// `parentbased_traceidratio` at 10 %, as the seeds advise for production;
/// otherwise as [`provider`].
pub fn ratio_provider() -> SdkTracerProvider {
    provider_sampling(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        0.1,
    ))))
}

fn provider_sampling(sampler: Sampler) -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(Discard)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(1 << 16)
                .with_max_export_batch_size(4096)
                .build(),
        )
        .build();
    SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_span_processor(processor)
        .build()
}

/// A field of /proc/self/status in KiB (`VmRSS`: resident now, `VmHWM`:
/// peak resident); 0 where there is no /proc.
pub fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| {
                    l.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(':'))
                })
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}
