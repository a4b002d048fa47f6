//! Scale-out: three relays in one consumer group on a six-partition topic,
//! restarted one after another under load, by SIGTERM and by SIGKILL. The
//! group's committed offsets are watched throughout: none may ever move
//! backwards (a member committing a partition it had lost rolled the new
//! owner back and froze it, issue 24); nothing is lost, duplicates stay
//! within the windows the events could abandon, and the run finishes.
#![cfg(feature = "kafka")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::flow::{RelayProcess, RelaySetup, Seen, Tally, Until, drain_kafka, kafka_reader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
const WINDOW: usize = 64;
const ARRIVE: Duration = Duration::from_secs(240);

/// What the watcher of a group's commits saw.
struct Commits {
    /// Every backward move: (partition, from, to).
    backwards: Vec<(i32, i64, i64)>,
    /// The last committed offset of each partition.
    last: BTreeMap<i32, i64>,
}

/// Reads the group's committed offsets every 50 ms until `stop`.
fn watch_commits(
    bootstrap: &str,
    group: &str,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Commits> {
    let watcher: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a watcher of the group's commits");
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        let mut list = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            list.add_partition(&topic, partition);
        }
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        let mut backwards = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(committed) = watcher.committed_offsets(list.clone(), Duration::from_secs(5)) {
                for element in committed.elements() {
                    if let Offset::Offset(now) = element.offset() {
                        let before = last.insert(element.partition(), now);
                        if let Some(before) = before.filter(|&b| now < b) {
                            backwards.push((element.partition(), before, now));
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Commits { backwards, last }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_restarted_one_by_one_never_roll_offsets_back() {
    let bootstrap = common::kafka_bootstrap();
    let source = common::unique("scale-src");
    let sink = common::unique("scale-dst");
    common::kafka::create_topic(&source, PARTITIONS).await;
    common::kafka::create_topic(&sink, 1).await;
    let group = format!("{source}-relay");
    let route = format!(
        r#"name = "scale"
from = {{ kafka = "k", topic = "{source}", group = "{group}" }}
to = {{ kafka = "k", topic = "{sink}" }}"#
    );
    let setups: Vec<RelaySetup> = (0..3)
        .map(|_| RelaySetup::new(WINDOW, &bootstrap, &route))
        .collect();
    let stop_watching = Arc::new(AtomicBool::new(false));
    let watcher = watch_commits(&bootstrap, &group, &source, stop_watching.clone());
    let sender =
        common::flow::spawn_kafka_sender(&bootstrap, &source, 80, 500, Duration::from_millis(400));
    let reader = kafka_reader(&bootstrap, &sink);
    let mut seen = Seen::new();
    // The first member reads every partition for a while; then the others
    // join and take partitions it had settled messages on: the state that
    // made a stopping member commit partitions it no longer held.
    let mut relays: Vec<Option<RelayProcess>> = vec![Some(setups[0].start()), None, None];
    drain_kafka(&reader, &mut seen, 2_000, Until::Arrived, ARRIVE).await;
    relays[1] = Some(setups[1].start());
    relays[2] = Some(setups[2].start());
    drain_kafka(
        &reader,
        &mut seen,
        usize::MAX,
        Until::Empty,
        Duration::from_secs(8),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // Each member in turn, while messages keep coming: a rolling restart
    // (SIGTERM), then a crash (SIGKILL), twice round.
    let events = [
        (0, "-TERM"),
        (1, "-KILL"),
        (2, "-TERM"),
        (0, "-KILL"),
        (1, "-TERM"),
        (2, "-KILL"),
    ];
    for (member, signal) in events {
        drain_kafka(
            &reader,
            &mut seen,
            usize::MAX,
            Until::Empty,
            Duration::from_secs(3),
        )
        .await;
        let relay = relays[member].take().expect("running");
        if signal == "-TERM" {
            relay.stop();
        } else {
            relay.signal(signal);
            relay.wait(Duration::from_secs(10));
        }
        relays[member] = Some(setups[member].start());
        eprintln!(
            "{signal} member {member}: {} keys arrived so far",
            seen.len()
        );
    }
    let origins = sender.await.expect("the sender");
    let started = Instant::now();
    drain_kafka(&reader, &mut seen, origins.len(), Until::Arrived, ARRIVE).await;
    let took = started.elapsed();
    for relay in relays.into_iter().flatten() {
        relay.stop();
    }
    drain_kafka(&reader, &mut seen, usize::MAX, Until::Empty, ARRIVE).await;
    stop_watching.store(true, Ordering::Relaxed);
    let Commits { backwards, last } = watcher.join().expect("the watcher");

    eprintln!("the rest arrived {took:?} after the last message was sent; last commits {last:?}");
    assert!(
        backwards.is_empty(),
        "committed offsets moved backwards (partition, from, to): {backwards:?}"
    );
    // A window per event (136 of 384 seen).
    Tally::of(&origins, &seen).assert_whole("scale-out", WINDOW * events.len());
}

/// Seconds from a restart after SIGKILL until the relay has relayed 100
/// new messages; with `instance_id`, as the static member it was.
async fn resume_after_sigkill(instance_id: Option<&str>) -> Duration {
    let bootstrap = common::kafka_bootstrap();
    let source = common::unique("resume-src");
    let sink = common::unique("resume-dst");
    common::kafka::create_topic(&source, 2).await;
    common::kafka::create_topic(&sink, 1).await;
    let setup = RelaySetup::new(
        WINDOW,
        &bootstrap,
        &format!(
            r#"name = "resume"
from = {{ kafka = "k", topic = "{source}", group = "{source}-relay" }}
to = {{ kafka = "k", topic = "{sink}" }}"#
        ),
    );
    // A session of 20 s: the dead member's partitions wait that long
    // unless it comes back as itself.
    let mut text = std::fs::read_to_string(&setup.config).expect("config");
    text = text.replace("\"10000\"", "\"20000\"");
    if let Some(id) = instance_id {
        text = text.replace("[relay]\n", &format!("[relay]\ninstance_id = \"{id}\"\n"));
    }
    std::fs::write(&setup.config, text).expect("config");
    let reader = kafka_reader(&bootstrap, &sink);
    let mut seen = Seen::new();

    let relay = setup.start();
    let first = common::flow::send_kafka(&bootstrap, &source, 0, 100).await;
    drain_kafka(&reader, &mut seen, first.len(), Until::Arrived, ARRIVE).await;
    relay.signal("-KILL");
    relay.wait(Duration::from_secs(10));
    let restarted = Instant::now();
    let relay = setup.start();
    let second = common::flow::send_kafka(&bootstrap, &source, 100, 100).await;
    drain_kafka(&reader, &mut seen, 200, Until::Arrived, ARRIVE).await;
    let took = restarted.elapsed();
    relay.stop();
    let mut origins = first;
    origins.extend(second);
    Tally::of(&origins, &seen).assert_whole("resume", WINDOW);
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_an_instance_id_resumes_at_once_after_a_crash() {
    let dynamic = resume_after_sigkill(None).await;
    let id = common::unique("relay");
    let fixed = resume_after_sigkill(Some(&id)).await;
    eprintln!("resumed after SIGKILL: dynamic membership {dynamic:?}, static {fixed:?}");
    assert!(
        dynamic > Duration::from_secs(12),
        "without an instance id the group waits for the dead member's session (20 s): {dynamic:?}"
    );
    assert!(
        fixed < Duration::from_secs(8),
        "as the static member it was, the relay resumes at once: {fixed:?}"
    );
}
