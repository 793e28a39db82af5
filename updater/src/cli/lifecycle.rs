//! `upd mark-good` and `upd rollback`.

use chrono::Utc;

use super::{exit, print_json, runtime};
use crate::lifecycle::{self, MarkGood, Rollback};
use crate::machine::Machine;
use crate::pull::Session;
use crate::reboot::{self, RebootOutcome};

/// Options of `mark-good`.
#[derive(Debug, clap::Args)]
pub struct MarkGoodArgs {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Options of `rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Apply the reboot strategy afterwards (default: only signal that a reboot is needed).
    #[arg(long)]
    reboot: bool,
}

/// Run `mark-good`; exits 6 when a new OS failed its health checks and was sent back.
pub fn mark_good(m: Machine, a: &MarkGoodArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, true, true, now)?;
    let result = lifecycle::mark_good(&mut s, now)?;
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
        _ => {}
    }
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

/// Run `rollback`.
pub fn rollback(m: Machine, a: &RollbackArgs) -> anyhow::Result<u8> {
    let now = Utc::now();
    let mut s = Session::open(m, true, true, now)?;
    let result = lifecycle::rollback(&mut s, now)?;
    let mut rebooted = None;
    if let Rollback::OsStaged {
        os_version, slot, ..
    } = &result
    {
        let why = format!("rollback: OS {os_version} on {slot} boots next");
        rebooted = Some(if a.reboot {
            runtime()?.block_on(reboot::after_stage(&s.machine, &why, now))?
        } else {
            reboot::signal(&s.machine, &why)?;
            RebootOutcome::Signalled
        });
    }
    if a.json {
        print_json(&serde_json::json!({ "rollback": result, "reboot": rebooted }))?;
        return Ok(exit::OK);
    }
    match &result {
        Rollback::OsStaged {
            generation,
            os_version,
            slot,
        } => eprintln!(
            "upd: rollback staged: generation {generation} (OS {os_version}) on {slot} boots next; reboot to switch"
        ),
        Rollback::Switched { generation } => {
            eprintln!("upd: rolled back: the previous extension set is active (generation {generation})")
        }
    }
    Ok(exit::OK)
}
