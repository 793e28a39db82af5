//! The fetcher's error type: every variant names the URL or path and the expected and actual values.

use std::path::PathBuf;
use std::time::Duration;

use upd_durable::PathError;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP client could not be built (TLS backend, configuration).
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// Connection, protocol or body error from the HTTP client.
    #[error("GET {url}: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server does not have the file.
    #[error("GET {url}: not found (HTTP 404)")]
    NotFound {
        /// The URL requested.
        url: String,
    },
    /// The server answered with a status other than the ones expected.
    #[error("GET {url}: server answered HTTP {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// No byte arrived for the whole stall timeout (slow-retrieval attack or dead link).
    #[error("GET {url}: stalled, no data for {timeout:?} after {received} bytes")]
    Stalled {
        /// The URL requested.
        url: String,
        /// The stall timeout that elapsed.
        timeout: Duration,
        /// Bytes of the file held so far (partial included).
        received: u64,
    },
    /// The server sent more than the manifest declares (endless-data attack).
    #[error("GET {url}: server sent more than the {limit} bytes the manifest declares")]
    TooLarge {
        /// The URL requested.
        url: String,
        /// The declared size.
        limit: u64,
    },
    /// An OS image larger than the slot it would be written to.
    #[error(
        "{url}: the OS image is {size} bytes, larger than the {capacity}-byte slot on {device}"
    )]
    SlotTooSmall {
        /// The URL of the image.
        url: String,
        /// The disk holding the slot.
        device: PathBuf,
        /// The declared image size.
        size: u64,
        /// The slot's size.
        capacity: u64,
    },
    /// The manifest body exceeds the configured limit.
    #[error("GET {url}: manifest larger than the {limit} byte limit")]
    ManifestTooLarge {
        /// The URL requested.
        url: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A manifest body whose Content-Encoding is unknown, broken, or inflates past the limit.
    #[error("GET {url}: the body {problem}")]
    BadEncoding {
        /// The URL requested.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The body ended before the declared size was reached.
    #[error("GET {url}: body ended after {actual} of the {expected} bytes the manifest declares")]
    Truncated {
        /// The URL requested.
        url: String,
        /// The declared size.
        expected: u64,
        /// Bytes held when the body ended.
        actual: u64,
    },
    /// The downloaded bytes do not have the manifest's SHA-256; the partial file was deleted.
    #[error("{path} from {url}: SHA-256 mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The URL requested.
        url: String,
        /// The destination path.
        path: PathBuf,
        /// Expected digest, hex.
        expected: String,
        /// Actual digest, hex.
        actual: String,
    },
    /// Not enough room on the destination filesystem.
    #[error("not enough free space in {dir}: need {needed} bytes, {available} available")]
    NoSpace {
        /// The directory checked.
        dir: PathBuf,
        /// Bytes needed.
        needed: u64,
        /// Bytes available to unprivileged users.
        available: u64,
    },
    /// A local file operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
}

impl FetchError {
    /// Whether another attempt (resuming from the partial file) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Http { source, .. } => !source.is_builder() && !source.is_redirect(),
            FetchError::Status { status, .. } => {
                (500..600).contains(status) || *status == 429 || *status == 408
            }
            FetchError::Stalled { .. } | FetchError::Truncated { .. } => true,
            _ => false,
        }
    }

    /// Whether the failure is this machine's (no space, a local write, the client, a slot too
    /// small), which another mirror would not change.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            FetchError::Client(_)
                | FetchError::SlotTooSmall { .. }
                | FetchError::NoSpace { .. }
                | FetchError::Io(_)
        )
    }
}
