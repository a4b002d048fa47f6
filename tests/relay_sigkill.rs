//! SIGKILL mid-stream of 10 000 messages, in both directions, then a
//! restart: every message arrives (0 lost), duplicates stay within the
//! in-flight window, and every delivered copy is in its origin trace.
#![cfg(all(feature = "kafka", feature = "amqp"))]

mod common;

use std::time::Duration;

use common::amqp::{ROUTING_KEY, Rabbit};
use common::flow::{
    RelaySetup, Seen, Tally, Until, amqp_to_kafka, drain_amqp, drain_kafka, kafka_reader,
    kafka_to_amqp, publish_amqp, send_kafka,
};

const MESSAGES: usize = 10_000;
const WINDOW: usize = 256;
const ARRIVE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_amqp_sigkill_mid_stream_loses_nothing() {
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique("kill-k2a");
    common::kafka::create_topic(&topic, 3).await;
    let rabbit = Rabbit::new("kill-k2a").await;
    let origins = send_kafka(&bootstrap, &topic, 0, MESSAGES).await;
    let setup = RelaySetup::new(
        WINDOW,
        &bootstrap,
        &kafka_to_amqp("k2a", &topic, &rabbit.exchange),
    );
    let mut seen = Seen::new();

    let relay = setup.start();
    // Killed once a tenth has arrived: well inside the stream.
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        MESSAGES / 10,
        Until::Arrived,
        ARRIVE,
    )
    .await;
    relay.signal("-KILL");
    relay.wait(Duration::from_secs(10));
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        MESSAGES,
        Until::Empty,
        ARRIVE,
    )
    .await;
    let before_restart = seen.len();
    assert!(
        before_restart < MESSAGES,
        "the kill must land mid-stream, but all {MESSAGES} had arrived: the test proved nothing"
    );

    let relay = setup.start();
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        MESSAGES,
        Until::Arrived,
        ARRIVE,
    )
    .await;
    relay.stop();
    // Copies the second run delivered after the last distinct key arrived.
    drain_amqp(
        &rabbit.channel,
        &rabbit.queue,
        &mut seen,
        usize::MAX,
        Until::Empty,
        ARRIVE,
    )
    .await;
    eprintln!("Kafka → AMQP: {before_restart} distinct arrived before the restart");
    Tally::of(&origins, &seen).assert_whole("Kafka → AMQP, SIGKILL mid-stream", WINDOW);
    rabbit.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_to_kafka_sigkill_mid_stream_loses_nothing() {
    let bootstrap = common::kafka_bootstrap();
    let topic = common::unique("kill-a2k");
    common::kafka::create_topic(&topic, 3).await;
    let rabbit = Rabbit::new("kill-a2k").await;
    let channel = rabbit.conn.create_channel().await.expect("channel");
    let origins = publish_amqp(channel, &rabbit.exchange, ROUTING_KEY, 0, MESSAGES).await;
    let setup = RelaySetup::new(
        WINDOW,
        &bootstrap,
        &amqp_to_kafka("a2k", &rabbit.queue, &topic),
    );
    let reader = kafka_reader(&bootstrap, &topic);
    let mut seen = Seen::new();

    let relay = setup.start();
    drain_kafka(&reader, &mut seen, MESSAGES / 10, Until::Arrived, ARRIVE).await;
    relay.signal("-KILL");
    relay.wait(Duration::from_secs(10));
    drain_kafka(&reader, &mut seen, MESSAGES, Until::Empty, ARRIVE).await;
    let before_restart = seen.len();
    assert!(
        before_restart < MESSAGES,
        "the kill must land mid-stream, but all {MESSAGES} had arrived: the test proved nothing"
    );

    let relay = setup.start();
    drain_kafka(&reader, &mut seen, MESSAGES, Until::Arrived, ARRIVE).await;
    relay.stop();
    drain_kafka(&reader, &mut seen, usize::MAX, Until::Empty, ARRIVE).await;
    eprintln!("AMQP → Kafka: {before_restart} distinct arrived before the restart");
    Tally::of(&origins, &seen).assert_whole("AMQP → Kafka, SIGKILL mid-stream", WINDOW);
    rabbit.delete().await;
}
