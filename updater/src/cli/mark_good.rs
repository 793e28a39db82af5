//! `upd mark-good`: health checks, then the booted slot is good (or a new OS is sent back).

use chrono::Utc;

use super::{exit, notify, print_json, runtime};
use crate::host::machine::Machine;
use crate::ops::mark_good::{self, MarkGood};
use crate::ops::reboot;
use crate::ops::session::Session;

/// Options of `mark-good`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

/// Run `mark-good`; exits 6 when a new OS failed its health checks and was sent back.
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, true, true, now)?;
    let result = mark_good::mark_good(&mut s, now)?;
    let mut code = exit::OK;
    let mut rebooted = None;
    match &result {
        MarkGood::Promoted { .. } | MarkGood::AlreadyGood => {
            runtime()?.block_on(reboot::after_good(&s.machine))?;
        }
        MarkGood::SentBack { os_version, .. } => {
            code = exit::ROLLED_BACK;
            let why =
                format!("OS {os_version} failed its health checks; the previous OS boots next");
            rebooted = Some(runtime()?.block_on(reboot::after_stage(&s.machine, &why, now))?);
        }
        MarkGood::NoSlots => {}
    }
    notify::status(&match &result {
        MarkGood::Promoted { os_version, .. } => format!("OS {os_version} is good"),
        MarkGood::AlreadyGood => "the booted OS is good; nothing pending".into(),
        MarkGood::NoSlots => "health checks passed".into(),
        MarkGood::SentBack { os_version, .. } => {
            format!("OS {os_version} failed its health checks; the previous OS boots next")
        }
    });
    if a.json {
        print_json(&serde_json::json!({ "mark_good": result, "reboot": rebooted }))?;
        return Ok(code);
    }
    match &result {
        MarkGood::Promoted {
            generation,
            os_version,
            removed,
        } => eprintln!(
            "upd: OS {os_version} is good: generation {generation} is active; removed {} unused image(s)",
            removed.len()
        ),
        MarkGood::AlreadyGood => eprintln!("upd: nothing pending; the booted slot is marked successful"),
        MarkGood::NoSlots => eprintln!("upd: health checks passed (no OS slots configured)"),
        MarkGood::SentBack { os_version, why } => {
            eprintln!("upd: OS {os_version} marked FAILED: {why}");
            eprintln!("upd: the previous OS boots next; reboot to go back ({rebooted:?})");
        }
    }
    Ok(code)
}
