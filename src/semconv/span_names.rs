//! The shared span-name cache behind [`Operation::shared_span_name`]: each
//! name formatted once per operation and destination, at most
//! [`SHARED_SPAN_NAMES`] kept.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, RwLock};

use super::{Destination, Operation, SHARED_SPAN_NAMES};

/// The names formatted so far, by the hash of their operation and
/// destination (looked up without building a key), each bucket
/// checked for equality.
type Names = HashMap<u64, Vec<(Operation, Destination, &'static str)>, KeyIsTheHash>;

/// The map's keys are already FNV hashes: hashing them again (SipHash,
/// the default) cost ~90 instructions a lookup.
#[derive(Default, Clone, Copy)]
struct KeyIsTheHash;

impl std::hash::BuildHasher for KeyIsTheHash {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0)
    }
}

static NAMES: LazyLock<RwLock<Names>> = LazyLock::new(RwLock::default);
/// How many names NAMES holds: once it is full, a new name is formatted
/// without taking the write lock.
static KEPT: AtomicUsize = AtomicUsize::new(0);

/// FNV-1a: a few instructions a byte, where SipHash cost ~240 a
/// message. The map is bounded, so colliding names cannot grow it.
struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, value: u64) {
        // Only the map's own keys (already hashes) come this way.
        self.0 ^= value;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) fn shared(operation: Operation, destination: &Destination) -> Cow<'static, str> {
    let names = &*NAMES;
    let mut state = Fnv(0xcbf2_9ce4_8422_2325);
    operation.hash(&mut state);
    destination.hash(&mut state);
    let key = state.finish();
    let found = |names: &Names| {
        names.get(&key).and_then(|bucket| {
            bucket
                .iter()
                .find(|(op, dest, _)| *op == operation && dest == destination)
                .map(|(_, _, name)| *name)
        })
    };
    // A poisoned lock only means another thread panicked mid-insert;
    // the map is still consistent (an insert is one push).
    if let Some(name) = found(&names.read().unwrap_or_else(|e| e.into_inner())) {
        return Cow::Borrowed(name);
    }
    if KEPT.load(Ordering::Relaxed) >= SHARED_SPAN_NAMES {
        return Cow::Owned(operation.span_name(destination));
    }
    let mut map = names.write().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = found(&map) {
        return Cow::Borrowed(name);
    }
    let formatted = operation.span_name(destination);
    // Under the write lock: only one thread counts at a time.
    if KEPT.load(Ordering::Relaxed) >= SHARED_SPAN_NAMES {
        return Cow::Owned(formatted);
    }
    // Kept for the process's life: bounded by SHARED_SPAN_NAMES.
    let name: &'static str = Box::leak(formatted.into_boxed_str());
    map.entry(key)
        .or_default()
        .push((operation, destination.clone(), name));
    KEPT.fetch_add(1, Ordering::Relaxed);
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semconv::Settlement;

    #[test]
    fn shared_span_names_equal_the_formatted_ones_and_are_formatted_once() {
        for (operation, destination) in [
            (Operation::Send, Destination::kafka("shared-orders")),
            (Operation::Process, Destination::kafka("shared-orders")),
            (
                Operation::Send,
                Destination::rabbitmq("shared-x", "order.created"),
            ),
            (
                Operation::Receive,
                Destination::rabbitmq_queue("shared-x", "rk", "shared-q"),
            ),
            (
                Operation::Settle(Settlement::Ack),
                Destination::rabbitmq_queue("shared-x", "rk", "shared-q"),
            ),
        ] {
            let first = operation.shared_span_name(&destination);
            assert_eq!(first, operation.span_name(&destination));
            let second = operation.shared_span_name(&destination);
            assert!(
                matches!((&first, &second), (Cow::Borrowed(a), Cow::Borrowed(b)) if std::ptr::eq(*a, *b)),
                "{first}: the same shared name the second time"
            );
        }
        // Past the bound, names are still right, just formatted each time.
        for n in 0..=SHARED_SPAN_NAMES {
            let destination = Destination::kafka(format!("bound-{n}"));
            assert_eq!(
                Operation::Send.shared_span_name(&destination),
                format!("send bound-{n}")
            );
        }
        let past = Destination::kafka("past-the-bound");
        assert!(matches!(
            Operation::Send.shared_span_name(&past),
            Cow::Owned(_)
        ));
    }
}
