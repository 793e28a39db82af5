//! The documented exit codes and the one mapping from an error to its code.

use crate::ops::switch::SwitchError;
use crate::ops::Error;
use crate::remote::channel::ChannelError;
use crate::remote::fetch::FetchError;
use crate::remote::trust::TrustError;
use upd_channels::manifest::SchemaError;
use upd_channels::verify::ManifestError;
use upd_keys::KeyError;

/// Success (for `check`: nothing new).
pub const OK: u8 = 0;
/// A failure not listed below.
pub const FAILURE: u8 = 1;
/// Bad command line (clap).
pub const USAGE: u8 = 2;
/// Another upd holds the lock.
pub const LOCKED: u8 = 3;
/// The channel was refused: a document was fetched and failed its check (signature, root,
/// expiry, serial, channel name or schema).
pub const REFUSED: u8 = 4;
/// An image would not merge on its host, or differs from what the manifest declares.
pub const INCOMPATIBLE: u8 = 5;
/// The new set did not merge as expected and was switched back.
pub const ROLLED_BACK: u8 = 6;
/// A download failed: no answer, a timeout or stall, an HTTP error (5xx, 404 of the manifest), a
/// wrong hash, more bytes than allowed (images and manifests alike), no space.
pub const DOWNLOAD: u8 = 7;
/// An OS release is blocked: an enabled extension has no build that merges on it.
pub const BLOCKED: u8 = 8;
/// `check`: an update is available.
pub const UPDATE_AVAILABLE: u8 = 100;

/// The exit code of a failed command: that of the first operation error in the chain, else
/// [`FAILURE`] (configuration, reboot strategy, output).
pub fn of(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(FAILURE, of_op)
}

/// The exit code of an operation's error.
pub fn of_op(e: &Error) -> u8 {
    match e {
        Error::Lock(_) => LOCKED,
        // Not a verdict on a document: the server did not hand one over (whole).
        Error::Channel(
            ChannelError::Trust(TrustError::Fetch(_))
            | ChannelError::Refused {
                source:
                    ManifestError::Schema(SchemaError::TooLarge { .. })
                    | ManifestError::Signature(KeyError::EnvelopeTooLarge { .. }),
                ..
            },
        ) => DOWNLOAD,
        Error::Channel(ChannelError::Refused { .. } | ChannelError::Trust(_)) => REFUSED,
        Error::Incompatible { .. } | Error::Fetch(FetchError::SlotTooSmall { .. }) => INCOMPATIBLE,
        Error::Gated { .. } => BLOCKED,
        Error::Switch(SwitchError::RolledBack { .. }) => ROLLED_BACK,
        Error::Fetch(_) | Error::Fetches(_) | Error::Channel(ChannelError::Fetch(_)) => DOWNLOAD,
        _ => FAILURE,
    }
}

/// Every documented exit code: its number, its name (the `kind` of a `--json` error) and what it
/// means. `upd --help` and upd(8) print this table; [`kind`] reads it.
pub const TABLE: [(u8, &str, &str); 10] = [
    (OK, "ok", "success (for `check`: nothing new)"),
    (
        FAILURE,
        "failure",
        "a failure not listed below (configuration, output, ...)",
    ),
    (USAGE, "usage", "bad command line"),
    (LOCKED, "locked", "another upd holds the lock"),
    (
        REFUSED,
        "refused",
        "the channel was refused: a fetched document failed its check",
    ),
    (
        INCOMPATIBLE,
        "incompatible",
        "an image would not merge on this host, or differs from its manifest",
    ),
    (
        ROLLED_BACK,
        "rolled_back",
        "the new set did not merge as expected and was switched back",
    ),
    (
        DOWNLOAD,
        "download",
        "a download failed (no answer, timeout, HTTP error, hash, size, space)",
    ),
    (
        BLOCKED,
        "blocked",
        "an OS release is blocked: an enabled extension has no build for it",
    ),
    (
        UPDATE_AVAILABLE,
        "update_available",
        "`check`: an update is available",
    ),
];

/// The name of an exit code, the `kind` of a `--json` error (`failure` for a code not in
/// [`TABLE`]).
pub fn kind(code: u8) -> &'static str {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("failure", |(_, name, _)| name)
}

/// The exit-code section of `upd --help`, one line per code of [`TABLE`].
pub fn help() -> String {
    let mut s = String::from("Exit codes:\n");
    for (code, name, meaning) in TABLE {
        s += &format!("  {code:>3}  {name:<16} {meaning}\n");
    }
    s
}

#[cfg(test)]
mod tests;
