//! `upd status`: running OS, generations, links, unfinished switch.

use serde::Serialize;

use super::{exit, print_json};
use crate::lifecycle;
use crate::machine::Machine;
use crate::slot::Slots;
use crate::state::{Generation, State, SwitchJournal};

/// Options of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Status {
    os_version: Option<String>,
    channel: String,
    highest_serial: Option<u64>,
    active: Option<Generation>,
    pending: Option<Generation>,
    previous: Option<Generation>,
    unfinished_switch: Option<SwitchJournal>,
    links: std::collections::BTreeMap<String, String>,
    booted_slot: Option<String>,
    slots: Vec<crate::slot::SlotInfo>,
    slot_error: Option<String>,
    reboot_needed: Option<String>,
    failed_releases: Vec<String>,
    last_check: Option<crate::target::LastSelection>,
    last_reboot_decision: Option<crate::reboot::Decision>,
}

/// Run it (reads only; takes no lock).
pub fn run(m: Machine, a: &Args) -> anyhow::Result<u8> {
    let state = State::load(&m.state_dir())?;
    let os_version = m.host().ok().map(|h| h.version.to_string());
    let mut links = std::collections::BTreeMap::new();
    let mut names: std::collections::BTreeSet<String> = state
        .active
        .iter()
        .flat_map(|g| g.extensions.keys().cloned())
        .collect();
    names.extend(m.settings.extensions.keys().map(|n| n.as_str().to_string()));
    for n in &names {
        let shown = match m.current_link(n) {
            Ok(Some(t)) => t.display().to_string(),
            Ok(None) => "(none)".into(),
            Err(e) => format!("(not upd's: {e})"),
        };
        links.insert(n.clone(), shown);
    }
    let (mut booted_slot, mut slots, mut slot_error) = (None, Vec::new(), None);
    if let Some(sl) = Slots::of(&m) {
        match sl.both() {
            Ok(b) => slots = b.to_vec(),
            Err(e) => slot_error = Some(e.to_string()),
        }
        match sl.booted(&m) {
            Ok(b) => booted_slot = Some(b),
            Err(e) => slot_error = Some(e.to_string()),
        }
    }
    let reboot_needed =
        lifecycle::reboot_needed(&m, &state).unwrap_or_else(|e| Some(e.to_string()));
    let st = Status {
        os_version,
        channel: m.settings.channel.to_string(),
        highest_serial: state
            .highest_serial
            .get(m.settings.channel.as_str())
            .copied(),
        active: state.active.clone(),
        pending: state.pending.clone(),
        previous: state.previous.clone(),
        unfinished_switch: state.journal.clone(),
        links,
        booted_slot,
        slots,
        slot_error,
        reboot_needed,
        failed_releases: state.failed_releases.iter().cloned().collect(),
        last_check: crate::target::last_selection(&m),
        last_reboot_decision: crate::reboot::last_decision(&m),
    };
    if a.json {
        return print_json(&st).map(|_| exit::OK);
    }
    println!(
        "OS: {}  channel: {}  manifest serial: {}",
        st.os_version.as_deref().unwrap_or("unknown"),
        st.channel,
        st.highest_serial
            .map(|s| s.to_string())
            .unwrap_or("-".into())
    );
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
    }
    if !st.failed_releases.is_empty() {
        println!(
            "failed releases (not retried): {}",
            st.failed_releases.join(", ")
        );
    }
    for (label, g) in [
        ("active", &st.active),
        ("pending", &st.pending),
        ("previous", &st.previous),
    ] {
        match g {
            Some(g) => {
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
            None => println!("{label}: none"),
        }
    }
    if let Some(j) = &st.unfinished_switch {
        println!("UNFINISHED SWITCH to generation {} ({:?}): the next upd run or `upd boot` finishes or undoes it", j.target.id, j.phase);
    }
    for (n, t) in &st.links {
        println!("link {n}.raw -> {t}");
    }
    Ok(exit::OK)
}
