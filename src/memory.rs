//! How many malloc arenas the relay's threads share.
//!
//! glibc gives each thread that allocates an arena of its own, up to eight
//! a core; every route adds librdkafka threads (which allocate through
//! glibc whatever Rust's allocator is), and each arena keeps freed memory
//! of its own. Two arenas held one route in 45–51 MiB instead of 53–56 MiB
//! (100-byte messages); sixteen routes stayed at 228–271 MiB (229–297
//! without), and moved 11–13k msg/s instead of 10–11k (docs/benchmarks.md).
//! An operator's `MALLOC_ARENA_MAX` wins.

/// The arenas the process's threads share.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas at [`ARENAS`] unless `MALLOC_ARENA_MAX` is
/// set; called first thing in `main`, before any thread starts. Elsewhere
/// (musl, other systems) there is nothing to do.
pub(crate) fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes malloc's own tuning; it is called
        // before any other thread exists. Its result (0 on failure) leaves
        // glibc's default in place, which is merely more memory.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
    }
}
