//! The guards that look at more than one key: names the brokers refuse,
//! and routes that would relay their own output again. A place is a Kafka
//! topic or an AMQP queue on a broker known by any of its addresses
//! (`localhost` and `127.0.0.1` are one broker); a route writes to a queue
//! when it publishes to the default exchange with that queue's name as a
//! fixed routing key (other exchanges' bindings live in the broker, not the
//! file).

use std::collections::{BTreeMap, BTreeSet};

use super::{KeySource, Route, Sink, Source};

/// Kafka's limit on a topic name.
const TOPIC_MAX: usize = 249;
/// AMQP short strings (exchange, queue and routing key names).
const SHORT_STRING_MAX: usize = 255;

/// A topic or queue, where messages wait.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Kafka {
        servers: BTreeSet<String>,
        topic: String,
    },
    Amqp {
        server: String,
        queue: String,
    },
}

impl Place {
    /// Whether both name the same topic or queue of the same broker.
    fn same(&self, other: &Place) -> bool {
        match (self, other) {
            (
                Place::Kafka { servers, topic },
                Place::Kafka {
                    servers: other_servers,
                    topic: other_topic,
                },
            ) => topic == other_topic && !servers.is_disjoint(other_servers),
            (a @ Place::Amqp { .. }, b @ Place::Amqp { .. }) => a == b,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Place::Kafka { topic, .. } => format!("Kafka topic `{topic}`"),
            Place::Amqp { queue, .. } => format!("AMQP queue `{queue}`"),
        }
    }
}

/// `host:port` as one broker is known whatever it is called: lower case,
/// the loopback names as one, the default port written.
fn address(host_port: &str, default_port: u16) -> String {
    let text = host_port.trim().to_ascii_lowercase();
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => {
            (host.to_owned(), port.to_owned())
        }
        _ => (text.clone(), default_port.to_string()),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host {
        "localhost" | "127.0.0.1" | "::1" | "0.0.0.0" => "loopback",
        other => other,
    };
    format!("{host}:{port}")
}

fn kafka_servers(bootstrap: &str) -> BTreeSet<String> {
    bootstrap
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| address(s.trim().trim_start_matches("plaintext://"), 9092))
        .collect()
}

/// An AMQP URL's broker and virtual host.
fn amqp_server(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!(
            "{}/{}",
            address(
                &format!("{}:{}", uri.authority.host, uri.authority.port),
                5672
            ),
            uri.vhost
        ),
        Err(_) => url.to_owned(),
    }
}

fn source_place(source: &Source) -> Place {
    match source {
        Source::Kafka { broker, topic, .. } => Place::Kafka {
            servers: kafka_servers(&broker.bootstrap_servers),
            topic: topic.clone(),
        },
        Source::Amqp { broker, queue } => Place::Amqp {
            server: amqp_server(&broker.url),
            queue: queue.clone(),
        },
    }
}

/// Where a sink's messages wait, when the file says.
fn sink_place(sink: &Sink) -> Option<Place> {
    match sink {
        Sink::Kafka { broker, topic, .. } => Some(Place::Kafka {
            servers: kafka_servers(&broker.bootstrap_servers),
            topic: topic.clone(),
        }),
        Sink::Amqp {
            broker,
            exchange,
            routing_key: KeySource::Fixed(queue),
        } if exchange.is_empty() => Some(Place::Amqp {
            server: amqp_server(&broker.url),
            queue: queue.clone(),
        }),
        Sink::Amqp { .. } => None,
    }
}

/// Names a broker refuses, in one route's source and sinks.
pub(super) fn names(at: &str, route: &Route, problems: &mut Vec<String>) {
    let mut check = |key: &str, what: &str, name: &str, max: usize, kafka: bool| {
        if name.len() > max {
            problems.push(format!(
                "{at}: {key}: the {what} name has {} bytes; the broker allows {max}",
                name.len()
            ));
        } else if kafka
            && let Some(bad) = name
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            problems.push(format!(
                "{at}: {key}: the topic name `{name}` has {bad:?}; Kafka allows ASCII letters, digits, `.`, `_` and `-`"
            ));
        }
    };
    match &route.source {
        Source::Kafka { topic, .. } => check("from.topic", "topic", topic, TOPIC_MAX, true),
        Source::Amqp { queue, .. } => {
            check("from.queue", "queue", queue, SHORT_STRING_MAX, false);
        }
    }
    let sinks = std::iter::once(("to", &route.sink))
        .chain(route.dead_letter.iter().map(|d| ("dead_letter", d)));
    for (key, sink) in sinks {
        match sink {
            Sink::Kafka { topic, .. } => {
                check(&format!("{key}.topic"), "topic", topic, TOPIC_MAX, true);
            }
            Sink::Amqp {
                exchange,
                routing_key,
                ..
            } => {
                check(
                    &format!("{key}.exchange"),
                    "exchange",
                    exchange,
                    SHORT_STRING_MAX,
                    false,
                );
                if let KeySource::Fixed(fixed) = routing_key {
                    check(
                        &format!("{key}.routing_key"),
                        "routing key",
                        fixed,
                        SHORT_STRING_MAX,
                        false,
                    );
                }
            }
        }
    }
}

/// Routes that would relay their own output again: a cycle through the
/// routes' sources and sinks (one route writing to its own source, or A
/// to B's source while B writes to A's), and a dead letter written to any
/// route's source (a dead letter would be relayed, and could fail again).
/// `routes` pairs each route with its location in the file.
pub(super) fn loops(routes: &[(String, &Route)], problems: &mut Vec<String>) {
    let sources: Vec<Place> = routes
        .iter()
        .map(|(_, r)| source_place(&r.source))
        .collect();
    let reads = |place: &Place| -> Vec<usize> {
        sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.same(place))
            .map(|(i, _)| i)
            .collect()
    };
    // Route i feeds route j when i's sink is j's source.
    let feeds: Vec<Vec<usize>> = routes
        .iter()
        .map(|(_, r)| sink_place(&r.sink).map(|p| reads(&p)).unwrap_or_default())
        .collect();
    let mut reported = BTreeSet::new();
    for start in 0..routes.len() {
        if let Some(cycle) = cycle_from(start, &feeds)
            && reported.insert(canonical(&cycle))
        {
            let (at, _) = &routes[start];
            let path: Vec<String> = cycle
                .iter()
                .map(|&i| format!("`{}`", routes[i].1.name))
                .collect();
            let message = if cycle.len() == 1 {
                format!(
                    "{at}: to: writes to the route's own source ({}): every message would be relayed again, forever",
                    sources[start].describe()
                )
            } else {
                format!(
                    "{at}: to: routes {} → {} form a cycle: every message would be relayed around it, forever",
                    path.join(" → "),
                    path[0]
                )
            };
            problems.push(message);
        }
    }
    for (at, route) in routes {
        let Some(place) = route.dead_letter.as_ref().and_then(sink_place) else {
            continue;
        };
        for reader in reads(&place) {
            let whose = if std::ptr::eq(routes[reader].1, *route) {
                "the route's own source".to_owned()
            } else {
                format!("the source of route `{}`", routes[reader].1.name)
            };
            problems.push(format!(
                "{at}: dead_letter: writes to {whose} ({}): dead letters would be relayed again",
                place.describe()
            ));
        }
    }
}

/// The cycle through `start`, if any (route indexes, `start` first).
fn cycle_from(start: usize, feeds: &[Vec<usize>]) -> Option<Vec<usize>> {
    // Breadth first from start, remembering how each route was reached.
    let mut came_from: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in &feeds[at] {
            if next == start {
                let mut cycle = vec![at];
                let mut back = at;
                while back != start {
                    back = came_from[&back];
                    cycle.push(back);
                }
                cycle.reverse();
                cycle.dedup();
                return Some(cycle);
            }
            if let std::collections::btree_map::Entry::Vacant(e) = came_from.entry(next) {
                e.insert(at);
                queue.push_back(next);
            }
        }
    }
    None
}

/// A cycle's routes, sorted: one report per cycle, whichever route found it.
fn canonical(cycle: &[usize]) -> Vec<usize> {
    let mut sorted = cycle.to_vec();
    sorted.sort_unstable();
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_broker_by_any_of_its_names() {
        assert_eq!(address("LOCALHOST:9092", 9092), address("127.0.0.1", 9092));
        assert_eq!(address("[::1]:9093", 9092), "loopback:9093");
        assert_ne!(address("kafka-1:9092", 9092), address("kafka-2:9092", 9092));
        assert!(!kafka_servers("a:1,localhost:9092").is_disjoint(&kafka_servers("127.0.0.1:9092")));
        assert_eq!(
            amqp_server("amqp://guest:guest@LocalHost:5672/%2f"),
            amqp_server("amqp://127.0.0.1")
        );
    }

    #[test]
    fn a_cycle_is_found_from_any_of_its_routes() {
        // 0 → 1 → 2 → 0, 3 alone.
        let feeds = vec![vec![1], vec![2], vec![0], vec![]];
        assert_eq!(cycle_from(0, &feeds), Some(vec![0, 1, 2]));
        assert_eq!(cycle_from(1, &feeds), Some(vec![1, 2, 0]));
        assert_eq!(cycle_from(3, &feeds), None);
        assert_eq!(cycle_from(0, &[vec![0]]), Some(vec![0]));
    }
}
