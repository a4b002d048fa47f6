//! Per-message cost of tracing, next to a raw baseline and the SDK's own
//! span floor measured in the same run (the steps are in `scenarios.rs`;
//! `instructions.rs` counts the same steps' instructions). The difference
//! between `traced` and `sdk-span-floor` is what tracebridge adds; between
//! `traced-unsampled` and `raw`, what an unsampled message costs.

mod scenarios;
mod support;

use criterion::{Criterion, criterion_group, criterion_main};

fn overhead(c: &mut Criterion) {
    let provider = support::provider();
    let ratio_provider = support::ratio_provider();
    scenarios::assert_unsampled_context_travels(&ratio_provider);
    let mut scenarios = scenarios::all(&provider, &ratio_provider);
    // One criterion group per side, its variants side by side.
    scenarios.sort_by_key(|s| {
        s.name
            .rsplit_once('/')
            .map(|(side, _)| side)
            .unwrap_or(s.name)
    });
    let mut sides: Vec<(&str, Vec<scenarios::Scenario>)> = Vec::new();
    for scenario in scenarios {
        let side = scenario
            .name
            .rsplit_once('/')
            .map_or(scenario.name, |(side, _)| side);
        match sides.last_mut() {
            Some((last, members)) if *last == side => members.push(scenario),
            _ => sides.push((side, vec![scenario])),
        }
    }
    for (side, members) in sides {
        let mut group = c.benchmark_group(side);
        for mut scenario in members {
            let variant = scenario
                .name
                .rsplit_once('/')
                .map_or(scenario.name, |(_, v)| v);
            group.bench_function(variant, |b| b.iter(&mut scenario.step));
        }
        group.finish();
    }
    let _ = provider.shutdown();
    let _ = ratio_provider.shutdown();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
