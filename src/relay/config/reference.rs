//! The configuration reference: every key the file accepts, with its type
//! as written, its default and an example — the one place a default is
//! written in prose. [`markdown`] renders it into
//! `docs/config-reference.md`, and `reference_tests.rs` checks it against
//! the parser both ways: every key here is accepted with this type and
//! this default, and every key the parser accepts is here.

/// One table of the file (`[relay]`, `[kafka.<name>]`, a route's `from`).
pub(super) struct Table {
    /// The table's path, the prefix of its keys' paths: `relay`,
    /// `kafka.<name>`, `route.from`.
    pub(super) path: &'static str,
    /// The heading: how the table is written in the file.
    pub(super) title: &'static str,
    /// One paragraph about it.
    pub(super) about: &'static str,
    /// Its keys, in the order they are documented.
    pub(super) keys: &'static [Key],
    /// Keys the parser accepts in this table that the table does not use
    /// (`from`, `to` and `dead_letter` are read into one struct).
    pub(super) unused: &'static [Unused],
}

/// One key.
pub(super) struct Key {
    /// Its name in its table.
    pub(super) name: &'static str,
    /// Its type, as a user writes it.
    pub(super) ty: Type,
    /// What leaving it out means.
    pub(super) default: Default,
    /// In `from`, `to` and `dead_letter`: the kind of broker it belongs to
    /// (refused with the other kind).
    pub(super) only: Only,
    /// What it does, in one line.
    pub(super) about: &'static str,
    /// A value, as written in TOML (`256`, `"30s"`).
    pub(super) example: &'static str,
}

/// A key's type as written in TOML.
#[derive(Clone, Copy)]
pub(super) enum Type {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// `true` or `false`.
    Bool,
    /// A string humantime reads: `"250ms"`, `"20s"`, `"1m 30s"`, `"1h"`.
    Duration,
    /// A string: an IP address and a port.
    Address,
    /// A string, one of these; an upper-case word (`NAME`) stands for any
    /// non-empty text.
    OneOf(&'static [&'static str]),
    /// An array of strings.
    Strings,
    /// An array of strings, each one of these.
    ListOf(&'static [&'static str]),
    /// An inline table whose values are strings (any keys).
    StringTable,
    /// An inline table of the keys documented under it.
    InlineTable,
    /// A table of the keys documented under it: `[route.correlation]`
    /// after its `[[route]]`, or inline.
    Table,
}

/// What the relay uses when a key is left out.
#[derive(Clone, Copy)]
pub(super) enum Default {
    /// Nothing: the key must be written.
    Required,
    /// This value, as written in TOML.
    Value(&'static str),
    /// The environment variable, when set; else the value as written in
    /// TOML, or nothing.
    Env(&'static str, Option<&'static str>),
    /// Nothing; what that means.
    Unset(&'static str),
    /// Follows from other keys, as described.
    Derived(&'static str),
}

/// Which kind of source or destination a key of `from`, `to` or
/// `dead_letter` belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Only {
    /// Any (and every key outside those three tables).
    Any,
    /// Kafka only.
    Kafka,
    /// AMQP only.
    Amqp,
}

/// A key a table accepts but does not use, and what becomes of it with a
/// Kafka and with an AMQP broker.
pub(super) struct Unused {
    /// Its name.
    pub(super) name: &'static str,
    /// With a Kafka broker.
    pub(super) kafka: Effect,
    /// With an AMQP broker.
    pub(super) amqp: Effect,
}

/// What becomes of an unused key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Effect {
    /// `check` reports it.
    Refused,
    /// It changes nothing.
    Ignored,
}

/// The context formats (`propagation.extract`, `propagation.inject`).
const FORMATS: &[&str] = &[
    "tracecontext",
    "baggage",
    "b3",
    "b3multi",
    "jaeger",
    "cloudevents",
];

/// `as-is`, `hashed`, `omitted`.
const TREATMENTS: &[&str] = &["as-is", "hashed", "omitted"];

/// The keys of `to` and `dead_letter`.
const DESTINATION: &[Key] = &[
    Key {
        name: "kafka",
        ty: Type::String,
        default: Default::Required,
        only: Only::Kafka,
        about: "The `[kafka.<name>]` to write to. Exactly one of `kafka` and `amqp`: it says which kind of destination this is.",
        example: r#""main""#,
    },
    Key {
        name: "amqp",
        ty: Type::String,
        default: Default::Required,
        only: Only::Amqp,
        about: "The `[amqp.<name>]` to publish to.",
        example: r#""rabbit""#,
    },
    Key {
        name: "topic",
        ty: Type::String,
        default: Default::Required,
        only: Only::Kafka,
        about: "The topic; not empty. Records are written with `acks=all`; the delivery report is the confirm.",
        example: r#""billing-events""#,
    },
    Key {
        name: "key",
        ty: Type::String,
        default: Default::Unset("the record key comes from `key_from`"),
        only: Only::Kafka,
        about: "A fixed record key; not with `key_from`.",
        example: r#""billing""#,
    },
    Key {
        name: "key_from",
        ty: Type::OneOf(&["source_key", "header:NAME"]),
        default: Default::Value(r#""source_key""#),
        only: Only::Kafka,
        about: "Where the record key comes from: the source's key (a Kafka key, or the AMQP property `key_mapping` names) or a header of the source message; not with `key`.",
        example: r#""header:x-account""#,
    },
    Key {
        name: "exchange",
        ty: Type::String,
        default: Default::Value(r#""""#),
        only: Only::Amqp,
        about: "The exchange; `\"\"` is the default exchange, which routes by queue name. Publishes are mandatory: an unroutable message is an error.",
        example: r#""fulfillment""#,
    },
    Key {
        name: "routing_key",
        ty: Type::String,
        default: Default::Value(r#""""#),
        only: Only::Amqp,
        about: "A fixed routing key; not with `routing_key_from`.",
        example: r#""order.created""#,
    },
    Key {
        name: "routing_key_from",
        ty: Type::OneOf(&["source_key", "header:NAME"]),
        default: Default::Unset("the fixed `routing_key` is used"),
        only: Only::Amqp,
        about: "The routing key from the source's key or a header of the source message, instead of `routing_key`.",
        example: r#""header:x-route""#,
    },
];

/// Keys of `to` and `dead_letter` that only a source uses.
const DESTINATION_UNUSED: &[Unused] = &[
    Unused {
        name: "group",
        kafka: Effect::Refused,
        amqp: Effect::Refused,
    },
    Unused {
        name: "queue",
        kafka: Effect::Refused,
        amqp: Effect::Refused,
    },
];

/// Every table, in the order of the rendered reference.
pub(super) const TABLES: &[Table] = &[
    Table {
        path: "relay",
        title: "`[relay]`",
        about: "The process's own settings. The table, and each of its keys, may be left out.",
        keys: &[
            Key {
                name: "listen",
                ty: Type::Address,
                default: Default::Value(r#""127.0.0.1:9464""#),
                only: Only::Any,
                about: "Where `/healthz`, `/readyz` and `/metrics` are served: an IP address (not a host name) and a port; port 0 takes any free one.",
                example: r#""0.0.0.0:9464""#,
            },
            Key {
                name: "max_in_flight",
                ty: Type::Integer,
                default: Default::Value("1024"),
                only: Only::Any,
                about: "Messages per route read but not yet confirmed by the sink: at the limit the route stops reading (AMQP prefetch is this), and a crash re-sends at most this many. 1 to 65 535 (an AMQP prefetch count is 16 bits).",
                example: "256",
            },
            Key {
                name: "max_in_flight_bytes",
                ty: Type::Integer,
                default: Default::Value("16777216"),
                only: Only::Any,
                about: "Bytes per route (payload, key and Kafka headers) read but not yet confirmed by the sink: at the limit the route stops reading until a message settles; a message larger than this is relayed alone. Bounds memory when messages are large. An AMQP source also stops reading, and its prefetch follows the messages' sizes so that what RabbitMQ pushes (it has no byte prefetch) fits this budget. 1 to 1 073 741 824 (1 GiB).",
                example: "67108864",
            },
            Key {
                name: "shutdown_timeout",
                ty: Type::Duration,
                default: Default::Value(r#""20s""#),
                only: Only::Any,
                about: "How long SIGTERM or Ctrl-C waits for the messages in flight to be confirmed and acknowledged and the spans flushed.",
                example: r#""30s""#,
            },
            Key {
                name: "service_name",
                ty: Type::String,
                default: Default::Value(r#""tracebridge""#),
                only: Only::Any,
                about: "`service.name` of the relay's spans; `OTEL_SERVICE_NAME` wins when it is set.",
                example: r#""orders-relay""#,
            },
            Key {
                name: "instance_id",
                ty: Type::String,
                default: Default::Unset("dynamic membership"),
                only: Only::Any,
                about: "This relay's stable identity in its Kafka consumer groups (static membership): each Kafka route's consumer joins as `INSTANCE_ID.ROUTE` (`group.instance.id`), so a restarted relay takes its partitions back at once, with no rebalance, instead of after the session timeout. Give every relay of a group its own (`\"${HOSTNAME}\"` in a Kubernetes StatefulSet). A relay that stops for good keeps its partitions idle until `session.timeout.ms` (45 s unless set) passes. Up to 200 ASCII letters, digits, `.`, `_` and `-`.",
                example: r#""${HOSTNAME}""#,
            },
        ],
        unused: &[],
    },
    Table {
        path: "kafka.<name>",
        title: "`[kafka.<name>]`",
        about: "A Kafka cluster, one table per cluster; routes name it in `kafka = \"<name>\"`.",
        keys: &[
            Key {
                name: "bootstrap_servers",
                ty: Type::String,
                default: Default::Required,
                only: Only::Any,
                about: "The brokers to start from, comma-separated `host:port`; not empty.",
                example: r#""kafka-1:9092,kafka-2:9092""#,
            },
            Key {
                name: "properties",
                ty: Type::StringTable,
                default: Default::Value("{}"),
                only: Only::Any,
                about: "librdkafka properties for every consumer and producer of this cluster, applied after tracebridge's own (security, timeouts), each checked by librdkafka. Refused: `bootstrap.servers`, `group.id`, `group.instance.id` (see `[relay] instance_id`), `enable.auto.commit` other than `\"false\"`, `acks` other than `\"all\"`, `enable.idempotence` other than `\"true\"`, `auto.offset.reset` other than `\"earliest\"`. Values whose name says password, secret, token or private are never printed.",
                example: r#"{ "security.protocol" = "SASL_PLAINTEXT", "sasl.mechanism" = "PLAIN", "sasl.password" = "${KAFKA_PASSWORD}" }"#,
            },
        ],
        unused: &[],
    },
    Table {
        path: "amqp.<name>",
        title: "`[amqp.<name>]`",
        about: "A RabbitMQ (AMQP 0-9-1) broker, one table per broker; routes name it in `amqp = \"<name>\"`.",
        keys: &[Key {
            name: "url",
            ty: Type::String,
            default: Default::Required,
            only: Only::Any,
            about: "The broker's `amqp://` URL (`amqps://` needs the `amqp-tls` build feature); its password is never printed.",
            example: r#""amqp://relay:${AMQP_PASSWORD}@rabbit:5672/%2f""#,
        }],
        unused: &[],
    },
    Table {
        path: "route",
        title: "`[[route]]`",
        about: "A route moves messages from one source to one destination, each message kept in its trace, at least once. At least one.",
        keys: &[
            Key {
                name: "name",
                ty: Type::String,
                default: Default::Required,
                only: Only::Any,
                about: "Unique among the routes; in logs (`route`), metrics, spans (`tracebridge.route`) and dead letters.",
                example: r#""orders-to-fulfillment""#,
            },
            Key {
                name: "from",
                ty: Type::InlineTable,
                default: Default::Required,
                only: Only::Any,
                about: "Where messages are read: a Kafka topic or an AMQP queue (its keys: `route.from`).",
                example: r#"{ kafka = "main", topic = "orders", group = "relay" }"#,
            },
            Key {
                name: "to",
                ty: Type::InlineTable,
                default: Default::Required,
                only: Only::Any,
                about: "Where they are written: a Kafka topic or an AMQP exchange (its keys: `route.to`).",
                example: r#"{ amqp = "rabbit", exchange = "fulfillment", routing_key = "order.created" }"#,
            },
            Key {
                name: "propagation",
                ty: Type::InlineTable,
                default: Default::Value("{}"),
                only: Only::Any,
                about: "How trace context is read and written (its keys: `route.propagation`).",
                example: r#"{ mode = "link" }"#,
            },
            Key {
                name: "retry",
                ty: Type::InlineTable,
                default: Default::Value("{}"),
                only: Only::Any,
                about: "How often a message is sent before it is dead-lettered (its keys: `route.retry`).",
                example: r#"{ attempts = 3, backoff = "1s" }"#,
            },
            Key {
                name: "dead_letter",
                ty: Type::InlineTable,
                default: Default::Unset(
                    "transient failures are retried until the sink takes the message, and a message that can never be sent stops the route",
                ),
                only: Only::Any,
                about: "Where a message goes after its last attempt, or at once when it can never be sent, with `x-tracebridge-error`, `-route`, `-source` and `-attempts` headers; a destination like `to` (its keys: `route.dead_letter`).",
                example: r#"{ amqp = "rabbit", exchange = "tracebridge.dlx" }"#,
            },
            Key {
                name: "key_mapping",
                ty: Type::OneOf(&["correlation_id", "message_id", "none"]),
                default: Default::Value(r#""correlation_id""#),
                only: Only::Any,
                about: "The AMQP property a Kafka record key becomes, and is read from, when a route crosses brokers; `none` maps nothing.",
                example: r#""message_id""#,
            },
            Key {
                name: "correlation",
                ty: Type::Table,
                default: Default::Unset("no correlation by request id"),
                only: Only::Any,
                about: "Correlation by request id, for messages whose producer sent no trace context (its keys: `route.correlation`).",
                example: r#"{ request_id = ["header:x-request-id"] }"#,
            },
        ],
        unused: &[],
    },
    Table {
        path: "route.from",
        title: "`route.from`: `from = { … }`",
        about: "The source: a Kafka topic read by a consumer group, or an AMQP queue (manual acks, after the sink's confirm). A key for one kind of broker is refused with the other.",
        keys: &[
            Key {
                name: "kafka",
                ty: Type::String,
                default: Default::Required,
                only: Only::Kafka,
                about: "The `[kafka.<name>]` to read from. Exactly one of `kafka` and `amqp`: it says which kind of source this is.",
                example: r#""main""#,
            },
            Key {
                name: "amqp",
                ty: Type::String,
                default: Default::Required,
                only: Only::Amqp,
                about: "The `[amqp.<name>]` to read from.",
                example: r#""rabbit""#,
            },
            Key {
                name: "topic",
                ty: Type::String,
                default: Default::Required,
                only: Only::Kafka,
                about: "The topic; not empty.",
                example: r#""orders""#,
            },
            Key {
                name: "group",
                ty: Type::String,
                default: Default::Derived("`\"tracebridge-<route name>\"`"),
                only: Only::Kafka,
                about: "The consumer group; its committed offsets are where the route resumes.",
                example: r#""relay""#,
            },
            Key {
                name: "queue",
                ty: Type::String,
                default: Default::Required,
                only: Only::Amqp,
                about: "The queue; not empty.",
                example: r#""billing""#,
            },
        ],
        unused: &[
            Unused {
                name: "exchange",
                kafka: Effect::Refused,
                amqp: Effect::Refused,
            },
            Unused {
                name: "routing_key",
                kafka: Effect::Refused,
                amqp: Effect::Ignored,
            },
            Unused {
                name: "routing_key_from",
                kafka: Effect::Ignored,
                amqp: Effect::Ignored,
            },
            Unused {
                name: "key",
                kafka: Effect::Ignored,
                amqp: Effect::Ignored,
            },
            Unused {
                name: "key_from",
                kafka: Effect::Ignored,
                amqp: Effect::Ignored,
            },
        ],
    },
    Table {
        path: "route.to",
        title: "`route.to`: `to = { … }`",
        about: "The destination: a Kafka topic or an AMQP exchange. A key for one kind of broker is refused with the other.",
        keys: DESTINATION,
        unused: DESTINATION_UNUSED,
    },
    Table {
        path: "route.dead_letter",
        title: "`route.dead_letter`: `dead_letter = { … }`",
        about: "Where a message goes that cannot be delivered: a destination, with the keys of `to`.",
        keys: DESTINATION,
        unused: DESTINATION_UNUSED,
    },
    Table {
        path: "route.propagation",
        title: "`route.propagation`: `propagation = { … }`",
        about: "How the trace context is read from and written to the messages.",
        keys: &[
            Key {
                name: "mode",
                ty: Type::OneOf(&["join", "link"]),
                default: Default::Value(r#""join""#),
                only: Only::Any,
                about: "`join`: the relay's spans continue the incoming trace; `link`: a new trace, linked to it.",
                example: r#""link""#,
            },
            Key {
                name: "link_sampling",
                ty: Type::Bool,
                default: Default::Value("true"),
                only: Only::Any,
                about: "A new trace the relay starts linked to the message's (`mode = \"link\"`, correlation `link`) is kept exactly when the linked context is sampled, so a kept trace never links to a dropped one; needs the consistent sampler (`OTEL_TRACES_SAMPLER=parentbased_probability`), other samplers decide by their own rule.",
                example: "false",
            },
            Key {
                name: "extract",
                ty: Type::ListOf(FORMATS),
                default: Default::Value(r#"["tracecontext", "baggage"]"#),
                only: Only::Any,
                about: "The formats read, in order; the first valid context wins.",
                example: r#"["tracecontext", "b3", "jaeger"]"#,
            },
            Key {
                name: "inject",
                ty: Type::ListOf(FORMATS),
                default: Default::Value(r#"["tracecontext", "baggage"]"#),
                only: Only::Any,
                about: "The formats written; each replaces its headers.",
                example: r#"["tracecontext", "baggage", "b3multi"]"#,
            },
            Key {
                name: "baggage_allowlist",
                ty: Type::Strings,
                default: Default::Unset("every baggage entry is passed on"),
                only: Only::Any,
                about: "The baggage keys passed on; the others are dropped.",
                example: r#"["tenant"]"#,
            },
        ],
        unused: &[],
    },
    Table {
        path: "route.retry",
        title: "`route.retry`: `retry = { … }`",
        about: "How often a message is sent, and how long the relay waits in between.",
        keys: &[
            Key {
                name: "attempts",
                ty: Type::Integer,
                default: Default::Value("5"),
                only: Only::Any,
                about: "Sends per message before it goes to `dead_letter` (without one, the message is tried again); at least 1.",
                example: "3",
            },
            Key {
                name: "backoff",
                ty: Type::Duration,
                default: Default::Value(r#""200ms""#),
                only: Only::Any,
                about: "The first wait between attempts, doubled after each, at most 30 s.",
                example: r#""1s""#,
            },
        ],
        unused: &[],
    },
    Table {
        path: "route.correlation",
        title: "`route.correlation`: `[route.correlation]`",
        about: "Correlation by request id: a message with an id but no trace context is put in the trace recorded for that id. Written `[route.correlation]` after its `[[route]]`, or `correlation = { … }` inside it.",
        keys: &[
            Key {
                name: "request_id",
                ty: Type::ListOf(&[
                    "header:NAME",
                    "correlation_id",
                    "message_id",
                    "key",
                    "json:/POINTER",
                ]),
                default: Default::Value(r#"["header:x-request-id", "correlation_id"]"#),
                only: Only::Any,
                about: "Where the request id is read, in order; the first usable value wins. Headers match in any case, `correlation_id` and `message_id` are AMQP properties, `key` the Kafka key, `json:` an RFC 6901 pointer into a JSON body. At least one.",
                example: r#"["header:x-request-id", "json:/order/id"]"#,
            },
            Key {
                name: "policy",
                ty: Type::OneOf(&["join", "link", "derive"]),
                default: Default::Value(r#""join""#),
                only: Only::Any,
                about: "A message with an id but no context: `join` is a child of the context last recorded for the id, `link` a new trace linked to it, `derive` the trace whose id is HMAC-SHA256(`key`, id), with no store.",
                example: r#""link""#,
            },
            Key {
                name: "fallback",
                ty: Type::OneOf(&["derive", "root"]),
                default: Default::Derived("`\"derive\"` when `key` is set, else `\"root\"`"),
                only: Only::Any,
                about: "What `join` and `link` do when the store has nothing for the id, or fails: the derived trace, or a new one.",
                example: r#""root""#,
            },
            Key {
                name: "key",
                ty: Type::String,
                default: Default::Unset("`derive` cannot be used"),
                only: Only::Any,
                about: "The secret derived trace ids are hashed with; write it as `${VAR}`. Never printed.",
                example: r#""${CORRELATION_KEY}""#,
            },
            Key {
                name: "journey_sampling",
                ty: Type::Bool,
                default: Default::Value("false"),
                only: Only::Any,
                about: "Every trace the relay starts for a message without its own context (`link`, `root`) and every span under the `derive` parent carries the same `rv`, the keyed hash of the request id, so the consistent sampler (`OTEL_TRACES_SAMPLER=parentbased_probability`) keeps or drops one request's traces together, here and downstream. Needs `key`.",
                example: "true",
            },
            Key {
                name: "store",
                ty: Type::OneOf(&["memory", "redis", "redis://HOST:PORT", "rediss://HOST:PORT"]),
                default: Default::Value(r#""memory""#),
                only: Only::Any,
                about: "Where id → context is kept: in this process, or in Redis, shared by relay instances (`redis` is `redis://127.0.0.1:6379`; a URL may add `:PASSWORD@` and `/DB`). Routes with equal store settings share one store.",
                example: r#""redis://:${REDIS_PASSWORD}@redis:6379/0""#,
            },
            Key {
                name: "ttl",
                ty: Type::Duration,
                default: Default::Value(r#""1h""#),
                only: Only::Any,
                about: "How long a recorded context is kept; more than 0.",
                example: r#""10m""#,
            },
            Key {
                name: "max_entries",
                ty: Type::Integer,
                default: Default::Value("100000"),
                only: Only::Any,
                about: "The memory store's bound; at least 1. Not used by Redis.",
                example: "1000000",
            },
            Key {
                name: "store_timeout",
                ty: Type::Duration,
                default: Default::Value(r#""250ms""#),
                only: Only::Any,
                about: "How long one Redis command may take before the message takes the `fallback`. Not used by the memory store.",
                example: r#""100ms""#,
            },
        ],
        unused: &[],
    },
    Table {
        path: "telemetry",
        title: "`[telemetry]`",
        about: "What the relay's spans and metrics record. A key left out takes its environment variable when that is set, else the library's default; a key in the file wins over the environment.",
        keys: &[
            Key {
                name: "semconv_version",
                ty: Type::OneOf(&["1.45", "1.44", "pre-1.26"]),
                default: Default::Env("TRACEBRIDGE_SEMCONV_VERSION", Some(r#""1.45""#)),
                only: Only::Any,
                about: "The version of the messaging semantic conventions that names the attributes (`OTEL_SEMCONV_STABILITY_OPT_IN=messaging/dup` adds the pre-1.26 keys beside them).",
                example: r#""1.44""#,
            },
            Key {
                name: "record_message_keys",
                ty: Type::OneOf(TREATMENTS),
                default: Default::Env("TRACEBRIDGE_RECORD_MESSAGE_KEYS", Some(r#""omitted""#)),
                only: Only::Any,
                about: "How Kafka message keys are recorded (`kafka.message.key`): as they are, HMAC-SHA256 under `attribute_hash_key`, or not at all.",
                example: r#""as-is""#,
            },
            Key {
                name: "record_request_ids",
                ty: Type::OneOf(TREATMENTS),
                default: Default::Env("TRACEBRIDGE_RECORD_REQUEST_IDS", Some(r#""omitted""#)),
                only: Only::Any,
                about: "How request ids are recorded (`messaging.message.conversation_id`).",
                example: r#""as-is""#,
            },
            Key {
                name: "record_captured_headers",
                ty: Type::OneOf(TREATMENTS),
                default: Default::Env("TRACEBRIDGE_RECORD_CAPTURED_HEADERS", Some(r#""as-is""#)),
                only: Only::Any,
                about: "How the values of the `capture_headers` are recorded.",
                example: r#""omitted""#,
            },
            Key {
                name: "capture_headers",
                ty: Type::Strings,
                default: Default::Env("TRACEBRIDGE_CAPTURE_HEADERS", Some("[]")),
                only: Only::Any,
                about: "Headers recorded as `messaging.header.<name>` span attributes (lower case, `-` written `_`); the variable is comma-separated.",
                example: r#"["x-tenant"]"#,
            },
            Key {
                name: "attribute_hash_key",
                ty: Type::String,
                default: Default::Env("TRACEBRIDGE_ATTRIBUTE_HASH_KEY", None),
                only: Only::Any,
                about: "The HMAC key of `hashed`, 16 bytes or more; write it as `${VAR}`. Never printed.",
                example: r#""${ATTRIBUTE_HASH_KEY}""#,
            },
            Key {
                name: "metrics",
                ty: Type::Strings,
                default: Default::Value(
                    r#"["messaging.client.operation.duration", "messaging.process.duration", "messaging.client.sent.messages", "messaging.client.consumed.messages", "tracebridge.messaging.queue_time"]"#,
                ),
                only: Only::Any,
                about: "The messaging metrics recorded, by name; one left out is off and costs nothing per message (`[]`: none).",
                example: r#"["messaging.process.duration"]"#,
            },
        ],
        unused: &[],
    },
];

/// The first line of the rendered reference: where it comes from.
pub(super) const GENERATED_NOTE: &str = "<!-- Generated from src/relay/config/reference.rs: edit the table there, then run `TRACEBRIDGE_WRITE_REFERENCE=1 cargo test --lib relay::config::reference` -->";

/// The reference as Markdown: one section per table.
pub(super) fn markdown() -> String {
    let mut out = String::new();
    out.push_str(GENERATED_NOTE);
    out.push('\n');
    for table in TABLES {
        out.push_str(&format!("\n## {}\n\n{}\n\n", table.title, table.about));
        out.push_str("| key | type | default | description |\n|---|---|---|---|\n");
        for key in table.keys {
            let cells = [
                format!("`{}.{}`", table.path, key.name),
                key.ty.markdown(),
                key.default.markdown(),
                format!(
                    "{}{} Example: `{} = {}`",
                    match key.only {
                        Only::Any => "",
                        Only::Kafka => "Kafka only. ",
                        Only::Amqp => "AMQP only. ",
                    },
                    key.about,
                    key.name,
                    key.example
                ),
            ];
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        if !table.unused.is_empty() {
            let unused: Vec<String> = table
                .unused
                .iter()
                .map(|u| {
                    let effect = match (u.kafka, u.amqp) {
                        (Effect::Refused, Effect::Refused) => "refused".to_owned(),
                        (Effect::Ignored, Effect::Ignored) => "ignored".to_owned(),
                        (kafka, amqp) => {
                            format!("{} with Kafka, {} with AMQP", kafka.word(), amqp.word())
                        }
                    };
                    format!("`{}` ({effect})", u.name)
                })
                .collect();
            out.push_str(&format!(
                "\nAccepted too, because `from`, `to` and `dead_letter` are read alike, but not used here: {}.\n",
                unused.join(", ")
            ));
        }
    }
    out
}

impl Type {
    fn markdown(self) -> String {
        let choices = |choices: &[&str]| {
            choices
                .iter()
                .map(|c| format!("`\"{c}\"`"))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        match self {
            Type::String => "string".into(),
            Type::Integer => "integer".into(),
            Type::Bool => "boolean".into(),
            Type::Duration => "duration".into(),
            Type::Address => "address `\"IP:PORT\"`".into(),
            Type::OneOf(c) => format!("one of {}", choices(c)),
            Type::Strings => "array of strings".into(),
            Type::ListOf(c) => format!("array of {}", choices(c)),
            Type::StringTable => "inline table of strings".into(),
            Type::InlineTable => "inline table".into(),
            Type::Table => "table".into(),
        }
    }
}

impl Default {
    fn markdown(self) -> String {
        match self {
            Default::Required => "required".into(),
            Default::Value(v) => format!("`{v}`"),
            Default::Env(var, Some(v)) => format!("`${var}`, else `{v}`"),
            Default::Env(var, None) => format!("`${var}`, else none"),
            Default::Unset(meaning) => format!("none: {meaning}"),
            Default::Derived(text) => text.into(),
        }
    }
}

impl Effect {
    fn word(self) -> &'static str {
        match self {
            Effect::Refused => "refused",
            Effect::Ignored => "ignored",
        }
    }
}
