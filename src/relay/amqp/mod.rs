//! The relay's AMQP room: consuming a queue (`source`) with a prefetch that
//! follows the messages' sizes (`prefetch`), publishing with confirms
//! (`sink`) on a channel that reconnects (`channel`), and translating any
//! message's headers into an AMQP table (`headers`).

pub(crate) mod channel;
pub(crate) mod headers;
pub(crate) mod prefetch;
pub(crate) mod sink;
pub(crate) mod source;

pub(crate) use sink::AmqpSink;
