//! Instruction counts of the overhead scenarios (`scenarios.rs`), for
//! valgrind's callgrind: deterministic where wall time is noise.
//!
//! `instructions list` prints the scenario names;
//! `instructions run NAME N` runs NAME's step N times (after one warm-up
//! call). `scripts/instructions.sh` runs each scenario under callgrind at
//! two counts and reports the difference per message, so set-up (the
//! providers, the runtime's first allocations) cancels out.

mod scenarios;
mod support;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let provider = support::provider();
    let ratio_provider = support::ratio_provider();
    let mut scenarios = scenarios::all(&provider, &ratio_provider);
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["list"] | ["list", ..] => {
            for s in &scenarios {
                println!("{}", s.name);
            }
        }
        ["run", name, count, ..] => {
            let count: u64 = count.parse().unwrap_or_else(|_| usage());
            let Some(scenario) = scenarios.iter_mut().find(|s| s.name == *name) else {
                eprintln!("no scenario {name}; `instructions list` names them");
                std::process::exit(2);
            };
            (scenario.step)();
            for _ in 0..count {
                (scenario.step)();
            }
        }
        // `cargo bench` runs every bench target with `--bench`, and
        // `cargo test --benches` with nothing: nothing to time then, the
        // script drives this one.
        [] => {}
        _ if args.iter().any(|a| a == "--bench") => {}
        _ => usage(),
    }
    let _ = provider.shutdown();
    let _ = ratio_provider.shutdown();
}

fn usage() -> ! {
    eprintln!("usage: instructions list | instructions run NAME COUNT");
    std::process::exit(2);
}
