//! tracebridge's traced clients as the tests set them up: spans going to a
//! capture, the test broker named.

use tracebridge::Instrumentation;
use tracebridge::amqp::Channel;
use tracebridge::kafka::producer::FutureProducer;

/// A traced producer on the test broker.
pub fn kafka_producer(instrumentation: Instrumentation) -> FutureProducer {
    let producer: FutureProducer = super::kafka::config().create().expect("producer");
    producer.with_instrumentation(instrumentation)
}

/// A traced channel on `conn`, publisher confirms on.
pub async fn amqp_channel(conn: &lapin::Connection, instrumentation: Instrumentation) -> Channel {
    let channel = Channel::from(conn.create_channel().await.expect("channel"))
        .with_server(&super::amqp_url())
        .with_instrumentation(instrumentation);
    channel
        .confirm_select(Default::default())
        .await
        .expect("confirms");
    channel
}

/// A traced consumer of `rabbit`'s queue on a channel of its own.
pub async fn amqp_consumer(
    rabbit: &super::amqp::Rabbit,
    instrumentation: Instrumentation,
    settle_spans: bool,
) -> tracebridge::amqp::Consumer {
    use lapin::options::{BasicConsumeOptions, BasicQosOptions};
    use lapin::types::FieldTable;
    let channel = Channel::from(rabbit.conn.create_channel().await.expect("channel"))
        .with_server(&super::amqp_url())
        .with_instrumentation(instrumentation)
        .with_settle_spans(settle_spans);
    channel
        .basic_qos(100, BasicQosOptions::default())
        .await
        .expect("qos");
    channel
        .basic_consume(
            rabbit.queue.as_str().into(),
            super::unique("tag").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}
