//! What a live rdkafka client was configured with: its consumer group and
//! the broker it was pointed at, which its spans must name
//! (`messaging.consumer.group.name`, `server.address`, `server.port`,
//! `messaging.client.id`).
//!
//! The consumer extension ([`super::process`]) works on the application's
//! own rdkafka client, and rdkafka offers no safe way to read a client's
//! configuration back; librdkafka does (`rd_kafka_conf`,
//! `rd_kafka_conf_get`: "to extract configuration properties from a
//! running client"). This file is the crate's only `unsafe` code: two
//! read-only calls on the handle of a client the caller borrows. What they
//! read is cached per client, so a message costs a lock and a comparison.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::sync::{Arc, Mutex};

use rdkafka::bindings as rd;
use rdkafka::client::NativeClient;

use crate::semconv::Endpoint;

/// A client's identity as its spans give it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientIdentity {
    /// `group.id`, when set.
    pub(crate) group: Option<String>,
    /// `server.*` from the first bootstrap server, `messaging.client.id`
    /// when one was set.
    pub(crate) endpoint: Endpoint,
}

/// How many clients' identities are remembered (a process has a few).
const CACHED_CLIENTS: usize = 32;

/// (handle address, handle name, identity), newest last. The name tells a
/// new client at a freed client's address apart: librdkafka numbers every
/// handle of a process (`rdkafka#consumer-3`).
type Cache = Vec<(usize, Box<str>, Arc<ClientIdentity>)>;

static CACHE: Mutex<Cache> = Mutex::new(Vec::new());

/// The identity of `client`, read once and then remembered.
pub(crate) fn identity(client: &NativeClient) -> Arc<ClientIdentity> {
    let address = client.ptr() as usize;
    let name = handle_name(client);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, _, identity)) = cache.iter().find(|(a, n, _)| *a == address && **n == *name) {
        return Arc::clone(identity);
    }
    let identity = Arc::new(read_identity(client));
    cache.retain(|(a, _, _)| *a != address);
    if cache.len() >= CACHED_CLIENTS {
        cache.remove(0);
    }
    cache.push((address, name.into(), Arc::clone(&identity)));
    identity
}

fn read_identity(client: &NativeClient) -> ClientIdentity {
    let servers = config_value(client, c"bootstrap.servers").unwrap_or_default();
    // librdkafka's default client id says nothing about the application.
    let client_id = config_value(client, c"client.id").filter(|id| id != "rdkafka");
    ClientIdentity {
        group: config_value(client, c"group.id").filter(|group| !group.is_empty()),
        endpoint: Endpoint::from_servers(&servers, client_id.as_deref()),
    }
}

/// The handle's name (`rdkafka#consumer-3`).
fn handle_name(client: &NativeClient) -> String {
    // SAFETY: `client` is borrowed, so its handle is alive; rd_kafka_name
    // returns the handle's own NUL-terminated name, valid for as long as
    // the handle, which is copied before the borrow ends.
    let name = unsafe { rd::rd_kafka_name(client.ptr()) };
    if name.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated (above).
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

/// One configuration property of the running client, as a string.
fn config_value(client: &NativeClient, key: &CStr) -> Option<String> {
    // SAFETY: `client` is borrowed, so its handle is alive. rd_kafka_conf
    // returns the handle's own configuration (owned by the handle, never
    // changed after creation); rd_kafka_conf_get only reads it: with a
    // null destination it writes the value's size (NUL included) to
    // `size`; with a destination it writes at most `size` bytes there.
    unsafe {
        let conf = rd::rd_kafka_conf(client.ptr());
        if conf.is_null() {
            return None;
        }
        let mut size = 0usize;
        let found = rd::rd_kafka_conf_get(conf, key.as_ptr(), std::ptr::null_mut(), &mut size);
        if found != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK || size == 0 {
            return None;
        }
        let mut buffer = vec![0u8; size];
        let read = rd::rd_kafka_conf_get(
            conf,
            key.as_ptr(),
            buffer.as_mut_ptr().cast::<c_char>(),
            &mut size,
        );
        if read != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
            return None;
        }
        CStr::from_bytes_until_nul(&buffer)
            .ok()
            .map(|value| value.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    use super::*;

    #[test]
    fn reads_the_group_and_the_broker_of_a_live_consumer() {
        let consumer: BaseConsumer = ClientConfig::new()
            .set(
                "bootstrap.servers",
                "kafka-1.internal:9094,kafka-2.internal:9094",
            )
            .set("group.id", "billing")
            .set("client.id", "billing-worker")
            .create()
            .expect("a consumer (no broker needed)");
        let first = identity(consumer.client().native_client());
        assert_eq!(first.group.as_deref(), Some("billing"));
        assert_eq!(first.endpoint.address.as_deref(), Some("kafka-1.internal"));
        assert_eq!(first.endpoint.port, Some(9094));
        assert_eq!(first.endpoint.client_id.as_deref(), Some("billing-worker"));
        // Cached: the same answer, shared.
        assert!(Arc::ptr_eq(
            &first,
            &identity(consumer.client().native_client())
        ));

        let defaults: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", "localhost")
            .create()
            .expect("a consumer");
        let second = identity(defaults.client().native_client());
        assert_eq!(second.group, None);
        assert_eq!(
            second.endpoint.client_id, None,
            "librdkafka's default id is not recorded"
        );
        assert_eq!(second.endpoint.address.as_deref(), Some("localhost"));
    }
}
