//! The library's error type.

/// An operation of tracebridge's clients failed. The variant names the
/// operation; `source` is the broker client's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration; the message says where and what.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Connecting to a broker failed.
    #[error("connecting to {target} failed")]
    Connect {
        /// The broker address or URL (without credentials).
        target: String,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
