//! Every documented exit code comes from the error (or the command line) it documents.

use std::path::PathBuf;

use upd_channels::manifest::SchemaError;
use upd_channels::verify::ManifestError;
use upd_channels::version::OsVersion;

use super::*;
use crate::host::lock::LockError;
use crate::host::swap::SwapError;
use crate::host::sysext::SysextError;
use crate::remote::trust::TrustError;
use upd_durable::PathError;

fn not_found() -> FetchError {
    FetchError::NotFound {
        url: "http://127.0.0.1:1/x".into(),
    }
}

fn io() -> PathError {
    PathError::new(
        "read",
        std::path::Path::new("/x"),
        std::io::Error::other("boom"),
    )
}

fn code(e: Error) -> u8 {
    of(&anyhow::Error::new(e).context("while running the command"))
}

#[test]
fn each_documented_failure_has_its_code() {
    let cases: Vec<(Error, u8)> = vec![
        (
            Error::Lock(LockError::Held {
                path: "/var/lib/upd/lock".into(),
                holder: "pid 1: upd pull".into(),
            }),
            LOCKED,
        ),
        (
            Error::Channel(ChannelError::Refused {
                url: "http://127.0.0.1:1/m".into(),
                source: ManifestError::Signature(upd_keys::KeyError::EnvelopeJson(
                    serde_json::from_str::<u8>("x").unwrap_err(),
                )),
            }),
            REFUSED,
        ),
        // Issue 10, defect 10: too large is one cause, one code, whichever check saw it.
        (
            Error::Channel(ChannelError::Refused {
                url: "http://127.0.0.1:1/m".into(),
                source: ManifestError::Schema(SchemaError::TooLarge { size: 2, limit: 1 }),
            }),
            DOWNLOAD,
        ),
        (
            Error::Channel(ChannelError::Fetch(FetchError::ManifestTooLarge {
                url: "http://127.0.0.1:1/m".into(),
                limit: 1,
            })),
            DOWNLOAD,
        ),
        // Issue 10, defect 1: the next root not fetched (no answer, 5xx, stall) is a download failure.
        (
            Error::Channel(ChannelError::Trust(TrustError::Fetch(FetchError::Status {
                url: "http://127.0.0.1:1/roots/2.root.json".into(),
                status: 503,
            }))),
            DOWNLOAD,
        ),
        (
            Error::Channel(ChannelError::Trust(TrustError::NoRoot {
                path: "/usr/share/upd/keys/root.json".into(),
                source: std::io::Error::other("missing"),
            })),
            REFUSED,
        ),
        (
            Error::Incompatible {
                path: PathBuf::from("/x.raw"),
                why: "ID=other".into(),
            },
            INCOMPATIBLE,
        ),
        (
            Error::Fetch(FetchError::SlotTooSmall {
                url: "u".into(),
                device: "/dev/loop0".into(),
                size: 2,
                capacity: 1,
            }),
            INCOMPATIBLE,
        ),
        (
            Error::Switch(SwitchError::RolledBack {
                cause: Box::new(SwapError::Assemble(SysextError::Spawn {
                    bin: "/usr/bin/systemd-sysext".into(),
                    source: std::io::Error::other("gone"),
                })),
            }),
            ROLLED_BACK,
        ),
        (Error::Fetch(not_found()), DOWNLOAD),
        (Error::Fetches(vec![not_found(), not_found()]), DOWNLOAD),
        (Error::Channel(ChannelError::Fetch(not_found())), DOWNLOAD),
        (
            Error::Gated {
                release: "2.0.0".into(),
                blockers: vec!["hello: no build".into()],
            },
            BLOCKED,
        ),
        (
            Error::UnknownOs {
                version: OsVersion::parse("9.0.0").unwrap(),
                channel: "stable".into(),
                known: "1.0.0".into(),
            },
            FAILURE,
        ),
        (Error::Channel(ChannelError::NoServer), FAILURE),
        (Error::Io(io()), FAILURE),
        (Error::Unhealthy("check failed".into()), FAILURE),
    ];
    for (e, want) in cases {
        let text = e.to_string();
        assert_eq!(code(e), want, "{text}");
    }
}

#[test]
fn errors_outside_the_operations_are_failures() {
    assert_eq!(of(&anyhow::anyhow!("bad configuration")), FAILURE);
    let reboot = crate::ops::reboot::RebootError::NoCommand;
    assert_eq!(of(&anyhow::Error::new(reboot)), FAILURE);
}

#[test]
fn a_bad_command_line_is_usage() {
    use clap::Parser;
    let e = crate::cli::Cli::try_parse_from(["upd", "no-such-command"]).unwrap_err();
    assert_eq!(e.exit_code(), i32::from(USAGE));
    let e = crate::cli::Cli::try_parse_from(["upd", "pull", "not a version"]).unwrap_err();
    assert_eq!(e.exit_code(), i32::from(USAGE));
}

#[test]
fn codes_are_distinct() {
    let all = [
        OK,
        FAILURE,
        USAGE,
        LOCKED,
        REFUSED,
        INCOMPATIBLE,
        ROLLED_BACK,
        DOWNLOAD,
        BLOCKED,
        UPDATE_AVAILABLE,
    ];
    let set: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(set.len(), all.len());
}
