//! Why an operation (pull, stage, switch, boot, mark-good, rollback, gc) stopped: every variant
//! says what and why; `cli::exit` maps each to its documented exit code.

use std::path::PathBuf;

use upd_channels::version::OsVersion;

use crate::host::lock::LockError;
use crate::host::machine::MachineError;
use crate::host::slot::SlotError;
use crate::ops::reboot::RebootError;
use crate::ops::switch::SwitchError;
use crate::remote::channel::ChannelError;
use crate::remote::fetch::FetchError;
use crate::state::{StateError, TransitionError};
use upd_durable::PathError;

/// Why an operation stopped; the machine is left as it was (or on the complete new set).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another upd holds the lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// State file.
    #[error(transparent)]
    State(#[from] StateError),
    /// The machine (os-release, links).
    #[error(transparent)]
    Machine(#[from] MachineError),
    /// Channel, root or manifest.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Downloads.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Several downloads failed.
    #[error("{} download(s) failed: {}", .0.len(), .0.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("; "))]
    Fetches(Vec<FetchError>),
    /// The running OS is not a release of the channel.
    #[error(
        "the running OS {version} is not a release of channel '{channel}' (releases: {known})"
    )]
    UnknownOs {
        /// Host version.
        version: OsVersion,
        /// Channel.
        channel: String,
        /// Known versions.
        known: String,
    },
    /// The OS slots.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// An OS release some enabled extension has no merging build for.
    #[error("OS release {release} is not staged: {}; an extension can be left out on purpose with --drop-extension NAME", .blockers.join("; "))]
    Gated {
        /// The release.
        release: String,
        /// What blocks it, one line per extension.
        blockers: Vec<String>,
    },
    /// `--drop-extension` named an extension that is not enabled.
    #[error("--drop-extension {0}: no such extension is enabled")]
    NotEnabled(String),
    /// The new OS booted and waits for `upd mark-good`.
    #[error("OS {0} booted from the new slot and is not marked good yet; run `upd mark-good` (or `upd rollback`) first")]
    AwaitingMarkGood(String),
    /// Health checks failed and there was no new OS to send back.
    #[error("health checks failed: {0}")]
    Unhealthy(String),
    /// `upd rollback` has nothing to go back to.
    #[error("cannot roll back: {0}")]
    NoRollback(String),
    /// The reboot strategy could not run.
    #[error("reboot: {0}")]
    Reboot(#[from] RebootError),
    /// The release asked for is not in the manifest.
    #[error("release {version} is not in channel '{channel}' (releases: {known})")]
    NoSuchRelease {
        /// Asked for.
        version: OsVersion,
        /// Channel.
        channel: String,
        /// Known versions.
        known: String,
    },
    /// The release asked for is withdrawn.
    #[error("release {0} is withdrawn by the publisher")]
    Withdrawn(OsVersion),
    /// An older OS release was asked for.
    #[error("release {version} is older than the running OS {running}; use `upd rollback` for the previous generation")]
    Downgrade {
        /// Asked for.
        version: OsVersion,
        /// Running.
        running: OsVersion,
    },
    /// An image that systemd-sysext would not merge, or that differs from what the manifest declares.
    #[error("refused image {path}: {why}")]
    Incompatible {
        /// The image.
        path: PathBuf,
        /// The rule that fails.
        why: String,
    },
    /// The switch.
    #[error(transparent)]
    Switch(#[from] SwitchError),
    /// File system.
    #[error(transparent)]
    Io(#[from] PathError),
}

impl From<TransitionError> for Error {
    fn from(e: TransitionError) -> Self {
        Error::State(StateError::from(e))
    }
}
