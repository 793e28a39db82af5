//! Coordinated reboots: a slot of a fleet-wide reboot semaphore, in etcd (airlock's layout) or from a FleetLock server.
//!
//! The update flow takes a slot before rebooting into a new OS (`acquire`) and gives it back
//! once the new boot was marked good (`release`), so that no more than N machines of a group
//! are down at once.
//!
//! A machine that took a slot and never comes back (it died before `upd mark-good`) keeps
//! its slot until somebody releases it: that is by design, since a machine that did not come
//! back healthy is exactly what the semaphore must stop the rest of the group from repeating.
//! Airlock and locksmith behave the same. An operator frees the slot with
//! [`EtcdLock::force_release`], or with etcdctl by rewriting the semaphore without the dead
//! holder (see the [`etcd`] module), or for FleetLock through the lock server's own tools.

pub mod etcd;
pub mod fleetlock;
pub mod gateway;
pub mod semaphore;

pub use etcd::EtcdLock;
pub use fleetlock::FleetLock;
pub use semaphore::Semaphore;

/// The answer of a lock service to a request for a reboot slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This machine holds a slot (it may have held it already).
    Acquired,
    /// Every slot is taken or the service refused; try again later.
    Denied {
        /// Why, in the service's words (the holders, or the server's error text).
        reason: String,
    },
}

/// What went wrong while talking to a lock service (a full semaphore is not an error but [`Outcome::Denied`]).
#[derive(Debug, thiserror::Error)]
pub enum RebootLockError {
    /// No etcd endpoint was given.
    #[error("etcd-lock: no etcd endpoints configured (ETCD_ENDPOINTS)")]
    NoEndpoints,
    /// An endpoint could not be reached (connection refused, timeout); the next one is tried.
    #[error("etcd endpoint {endpoint}: cannot reach it: {source}")]
    EtcdUnreachable {
        /// The endpoint tried last.
        endpoint: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// etcd answered with an error status.
    #[error("etcd endpoint {endpoint}: {path} answered HTTP {status}: {message}")]
    EtcdStatus {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path called (`/v3/kv/range`, `/v3/kv/txn`).
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's error message, or the body.
        message: String,
    },
    /// etcd answered 200 with something that is not the expected JSON.
    #[error("etcd endpoint {endpoint}: {path} answered something unexpected: {why}")]
    EtcdBadAnswer {
        /// The endpoint that answered.
        endpoint: String,
        /// The gateway path called.
        path: &'static str,
        /// What was wrong with it.
        why: String,
    },
    /// The semaphore key holds a value that is not airlock's JSON layout.
    #[error("etcd endpoint {endpoint}: key {key} is not an airlock semaphore: {why}")]
    BadSemaphore {
        /// The endpoint read from.
        endpoint: String,
        /// The semaphore key.
        key: String,
        /// The decoding error.
        why: String,
    },
    /// Every compare-and-swap lost to another writer, too many times in a row.
    #[error("etcd endpoint {endpoint}: key {key} still contended after {attempts} compare-and-swap attempts")]
    Contended {
        /// The endpoint written to.
        endpoint: String,
        /// The semaphore key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The FleetLock server could not be reached.
    #[error("FleetLock {url}: cannot reach it: {source}")]
    FleetLockUnreachable {
        /// The request URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The FleetLock server refused to release (steady-state) the slot.
    #[error("FleetLock {url}: HTTP {status}: {reason}")]
    FleetLockRefused {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's `kind: value` error text.
        reason: String,
    },
}
