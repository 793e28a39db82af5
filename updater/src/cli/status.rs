//! `upd status`: running OS, phase, generations, links, unfinished switch. Reads only.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{exit, print_json};
use crate::host::machine::Machine;
use crate::host::slot::{SlotInfo, Slots};
use crate::ops::reboot::{last_decision, Decision};
use crate::ops::release::{last_selection, LastSelection};
use crate::ops::session::{observe, View};
use crate::rules::phase::Phase;
use crate::state::{Generation, State, SwitchJournal};

/// Options of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON on stdout.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Serialize)]
struct Status {
    os_version: Option<String>,
    /// Why the OS version is unknown (os-release unreadable or without a version).
    os_error: Option<String>,
    channel: String,
    highest_serial: Option<u64>,
    phase: Option<Phase>,
    active: Option<Generation>,
    pending: Option<Generation>,
    previous: Option<Generation>,
    unfinished_switch: Option<SwitchJournal>,
    links: BTreeMap<String, String>,
    booted_slot: Option<String>,
    slots: Vec<SlotInfo>,
    slot_error: Option<String>,
    reboot_needed: Option<String>,
    failed_releases: Vec<String>,
    held_releases: Vec<String>,
    last_check: Option<LastSelection>,
    last_reboot_decision: Option<Decision>,
}

/// Run it (reads only; takes no lock, writes nothing).
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let v = View::open(m)?;
    let st = gather(&v.machine, &v.state);
    if a.json {
        return print_json(&st).map(|()| exit::OK);
    }
    print_head(&st);
    print_generations(&st);
    Ok(exit::OK)
}

fn gather(m: &Machine, state: &State) -> Status {
    let (mut booted_slot, mut slots, mut slot_error) = (None, Vec::new(), None);
    if let Some(sl) = Slots::of(m) {
        match sl.both() {
            Ok(b) => slots = b.to_vec(),
            Err(e) => slot_error = Some(e.to_string()),
        }
        match sl.booted(m) {
            Ok(b) => booted_slot = Some(b),
            Err(e) => slot_error = Some(e.to_string()),
        }
    }
    let phase = observe(m, state);
    let reboot_needed = match &phase {
        Ok(p) => p.reboot_needed().then(|| staged_text(state)),
        Err(e) => Some(e.to_string()),
    };
    let host = m.host();
    Status {
        os_version: host.as_ref().ok().map(|h| h.version.to_string()),
        os_error: host.as_ref().err().map(ToString::to_string),
        channel: m.settings.channel.to_string(),
        highest_serial: state
            .highest_serial
            .get(m.settings.channel.as_str())
            .copied(),
        phase: phase.ok(),
        active: state.active.clone(),
        pending: state.pending.clone(),
        previous: state.previous.clone(),
        unfinished_switch: state.journal.clone(),
        links: links(m, state),
        booted_slot,
        slots,
        slot_error,
        reboot_needed,
        failed_releases: state.failed_releases.iter().cloned().collect(),
        held_releases: state.held_releases.iter().cloned().collect(),
        last_check: last_selection(m),
        last_reboot_decision: last_decision(m),
    }
}

/// Why a reboot is needed: the armed pending generation.
fn staged_text(state: &State) -> String {
    let p = state
        .pending
        .as_ref()
        .expect("an armed phase has a pending generation");
    format!(
        "generation {} (OS {}) is staged on {} and boots next",
        p.id,
        p.os_version,
        p.slot.as_deref().unwrap_or("?")
    )
}

/// Each managed or enabled extension's link, as shown.
fn links(m: &Machine, state: &State) -> BTreeMap<String, String> {
    let mut names: BTreeSet<String> = state
        .active
        .iter()
        .flat_map(|g| g.extensions.keys().cloned())
        .collect();
    names.extend(m.settings.extensions.keys().map(|n| n.as_str().to_string()));
    names
        .into_iter()
        .map(|n| {
            let shown = match m.current_link(&n) {
                Ok(Some(t)) => t.display().to_string(),
                Ok(None) => "(none)".into(),
                Err(e) => format!("(not upd's: {e})"),
            };
            (n, shown)
        })
        .collect()
}

fn print_head(st: &Status) {
    let os = match (&st.os_version, &st.os_error) {
        (Some(v), _) => v.clone(),
        (None, Some(e)) => format!("unknown ({e})"),
        (None, None) => "unknown".into(),
    };
    println!(
        "OS: {os}  channel: {}  manifest serial: {}",
        st.channel,
        st.highest_serial
            .map_or_else(|| "-".into(), |s| s.to_string())
    );
    if let Some(p) = &st.phase {
        println!("phase: {}", phase_text(*p));
    }
    if let Some(b) = &st.booted_slot {
        println!("booted slot: {b}");
    }
    for sl in &st.slots {
        println!(
            "slot {}: partition {} priority {} tries {} successful {}",
            sl.label, sl.index, sl.prio.priority, sl.prio.tries, sl.prio.successful
        );
    }
    if let Some(e) = &st.slot_error {
        println!("slots: {e}");
    }
    match &st.reboot_needed {
        Some(why) => println!("reboot needed: yes: {why}"),
        None => println!("reboot needed: no"),
    }
    if let Some(d) = &st.last_reboot_decision {
        println!(
            "reboot strategy {}: {} ({})",
            d.strategy,
            d.outcome,
            d.at.format("%Y-%m-%d %H:%M UTC")
        );
    }
    if let Some(c) = &st.last_check {
        let t = c.target.as_deref().unwrap_or("none newer");
        println!(
            "last check {}: target {t}",
            c.at.format("%Y-%m-%d %H:%M UTC")
        );
        for k in &c.passed_over {
            println!("  passed over {}: {}", k.version, k.why);
        }
        if let Some(w) = &c.waiting {
            println!("waiting: {w}");
        }
        for w in &c.builds_waiting {
            println!("  build waits: {w}");
        }
    }
    if !st.failed_releases.is_empty() {
        println!(
            "failed releases (not retried): {}",
            st.failed_releases.join(", ")
        );
    }
    if !st.held_releases.is_empty() {
        println!(
            "held back after a rollback (until a newer release, or `upd pull VERSION`): {}",
            st.held_releases.join(", ")
        );
    }
}

fn phase_text(p: Phase) -> &'static str {
    match p {
        Phase::Idle => "idle",
        Phase::Switching => {
            "an extension switch was cut short (the next upd run finishes or undoes it)"
        }
        Phase::Staged { armed: true } => "a new OS is staged and boots next",
        Phase::Staged { armed: false } => {
            "a new OS is staged but not armed (the next pull re-arms it)"
        }
        Phase::BootedPending => "the new OS booted; waiting for `upd mark-good`",
        Phase::WrongOs => "the pending slot booted another OS (upd boot marks it failed)",
        Phase::FellBack => "the boot loader fell back from the new OS (upd boot marks it failed)",
    }
}

fn print_generations(st: &Status) {
    for (label, g) in [
        ("active", &st.active),
        ("pending", &st.pending),
        ("previous", &st.previous),
    ] {
        let Some(g) = g else {
            println!("{label}: none");
            continue;
        };
        println!(
            "{label}: generation {} (OS {}{}, {})",
            g.id,
            g.os_version,
            g.slot
                .as_deref()
                .map(|s| format!(" on {s}"))
                .unwrap_or_default(),
            g.created.format("%Y-%m-%d %H:%M UTC")
        );
        for (n, e) in &g.extensions {
            println!("    {n} {} [{}]", e.version, &e.sha256[..12]);
        }
    }
    if let Some(j) = &st.unfinished_switch {
        println!("UNFINISHED SWITCH to generation {} ({:?}): the next upd run or `upd boot` finishes or undoes it", j.target.id, j.phase);
    }
    for (n, t) in &st.links {
        println!("link {n}.raw -> {t}");
    }
}
