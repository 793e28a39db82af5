//! Staging an OS release: gate it on its extension builds, stream the OS image into the
//! inactive slot, read it back, check the upcoming host from the slot itself, then record the
//! pending generation and give the slot one try. The running OS and its links are not touched.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use upd_channels::manifest::{OsIdentity, Release, Target};
use upd_channels::osrelease::{native_architecture, HostIdentity};

use upd_channels::builds::Plan;

use crate::host::failpoint;
use crate::host::machine::{os_version, Machine};
use crate::host::slot::{SlotError, SlotInfo, Slots};
use crate::ops::release::{BuildGate, GateMode};
use crate::ops::session::{self, wanted, Session};
use crate::ops::store::{self, check_images, store_file_name, Downloaded};
use crate::ops::Error;
use crate::remote::channel;
use crate::remote::fetch::{DeltaSource, FetchItem, Progress, Seed, SeedIndex, SlotRange};
use crate::state::{ExtImage, Generation};

/// What the operator asked for besides the release.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Enabled extensions to leave out of the new generation on purpose.
    pub drop_extensions: Vec<String>,
    /// Allow an explicitly named release older than the running one (still signed).
    pub allow_downgrade: bool,
}

/// What staging did.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    /// The OS release staged.
    pub release: String,
    /// The slot it went to.
    pub slot: String,
    /// The pending generation's id.
    pub generation: u64,
    /// Extension name → version in the new generation.
    pub extensions: BTreeMap<String, String>,
    /// Extensions dropped on the operator's request.
    pub dropped: Vec<String>,
    /// Bytes received for the OS image and extensions.
    pub downloaded: u64,
    /// The release was already staged (the slot was re-armed if needed, nothing fetched).
    pub already_staged: bool,
}

/// The plan for `release` on the host its manifest entry declares, with `drop` left out; refused
/// (naming every blocking extension) unless every other enabled extension has a build that merges.
pub fn gate(
    m: &Machine,
    release: &Release,
    drop: &[String],
    builds: &BuildGate,
) -> Result<(Plan, HostIdentity), Error> {
    for d in drop {
        if !m.settings.extension_enabled(d) {
            return Err(Error::NotEnabled(d.clone()));
        }
    }
    let upcoming = release.os.identity.to_host();
    let wanted: Vec<_> = wanted(m)
        .into_iter()
        .filter(|w| !drop.contains(&w.name))
        .collect();
    let plan = builds.plan(release, &upcoming, &wanted);
    let blockers: Vec<String> = plan.blocked().filter_map(|c| c.problem.clone()).collect();
    if !blockers.is_empty() {
        return Err(Error::Gated {
            release: release.version.to_string(),
            blockers,
        });
    }
    Ok((plan, upcoming))
}

/// Stage `release` (another OS version than the running one) into the inactive slot.
/// `booted_image` is the booted OS image as the manifest still lists it, if it does: a delta
/// download reads that much of the booted slot (all of it when unknown) and plans from the
/// image's own chunk index where it has one, instead of chunking the slot.
///
/// Order: drop a superseded pending generation → gate → forget a previous generation on the
/// target slot (saved) → disarm the slot → stream the OS image and the extension builds → read
/// back and check from inside → record the pending generation (saved) → arm the slot.
pub async fn stage(
    s: &mut Session,
    release: &Release,
    opts: &StageOptions,
    mode: GateMode,
    booted_image: Option<&Target>,
    progress: &dyn Fn() -> Arc<dyn Progress>,
    now: DateTime<Utc>,
) -> Result<StageReport, Error> {
    let m = s.machine.clone();
    let slots = Slots::require(&m)?;
    let booted = slots.booted(&m)?;
    let target = slots.other(&booted).to_string();
    let mut report = StageReport {
        release: release.version.to_string(),
        slot: target.clone(),
        generation: 0,
        extensions: BTreeMap::new(),
        dropped: opts.drop_extensions.clone(),
        downloaded: 0,
        already_staged: false,
    };
    if let Some(p) = s.state.pending.clone() {
        if p.os_version == report.release && p.slot.as_deref() == Some(target.as_str()) {
            rearm(&slots, &target, release)?;
            report.generation = p.id;
            report.extensions = versions(&p);
            report.already_staged = true;
            return Ok(report);
        }
        tracing::info!(superseded = %p.os_version, by = %release.version, "dropping the pending generation");
        if let Some(l) = &p.slot {
            slots.disarm(l)?;
        }
        s.state.drop_pending(now)?;
        s.state.save(&m.state_dir())?;
    }
    let bg = BuildGate::new(&m, &s.state, mode, now);
    let (plan, _) = gate(&m, release, &opts.drop_extensions, &bg)?;
    // The target slot is about to be overwritten: no generation may point at it any more.
    if s.state.previous.as_ref().and_then(|p| p.slot.as_deref()) == Some(target.as_str()) {
        s.state.replace_previous(None);
    }
    s.state.save(&m.state_dir())?;
    slots.disarm(&target)?;
    failpoint::hit("stage-disarmed");
    let slot = slots.slot(&target)?;
    let running = slots.slot(&booted)?;
    // The booted slot's bytes are the seed of a delta download: its image, or the whole slot.
    let mut seed = Seed::range(
        slots.disk.clone(),
        running.offset,
        booted_image.map_or(running.size, |t| t.size.min(running.size)),
    );
    if let Some(ix) = booted_image.and_then(|t| t.chunk_index.as_ref()) {
        seed = seed.with_index(SeedIndex {
            urls: channel::servers(&m)?
                .iter()
                .map(|s| ix.path.url_under(s))
                .collect(),
            size: ix.size,
            sha256: ix.sha256.0,
        });
    }
    report.downloaded = write_slot(&m, &slots, &slot, seed, release, &plan, progress).await?;
    let gen = Generation {
        id: s.state.next_generation_id(),
        os_version: report.release.clone(),
        slot: Some(target.clone()),
        extensions: plan
            .chosen()
            .map(|b| (b.name.to_string(), ExtImage::of(b, store_file_name(b))))
            .collect(),
        created: now,
    };
    report.generation = gen.id;
    report.extensions = versions(&gen);
    // The running generation predates A/B tracking: it lives on the booted slot.
    if let Some(a) = s.state.active.as_mut().filter(|a| a.slot.is_none()) {
        a.slot = Some(booted.clone());
    }
    s.state.set_pending(gen, now)?;
    s.state.save(&m.state_dir())?;
    failpoint::hit("stage-pending");
    slots.arm(&target)?;
    failpoint::hit("stage-armed");
    tracing::info!(release = %release.version, slot = %target, "staged; reboot to switch");
    Ok(report)
}

/// Stream the OS image into `slot` (a delta download from `seed` when the image has a chunk
/// index) and the plan's extension builds into the store, side by side, then read the slot back
/// and check everything from inside against the upcoming host. On a refusal the builds fetched
/// here are removed again. Returns the bytes received.
async fn write_slot(
    m: &Machine,
    slots: &Slots,
    slot: &SlotInfo,
    seed: Seed,
    release: &Release,
    plan: &Plan,
    progress: &dyn Fn() -> Arc<dyn Progress>,
) -> Result<u64, Error> {
    let fetcher = session::fetcher(m)?;
    let os = &release.os.image;
    let servers = channel::servers(m)?;
    let item = FetchItem {
        urls: servers.iter().map(|s| os.path.url_under(s)).collect(),
        dest: slots.disk.clone(),
        size: os.size,
        sha256: os.sha256.0,
        progress: progress(),
        delta: os.chunk_index.as_ref().map(|ix| DeltaSource {
            index_urls: servers.iter().map(|s| ix.path.url_under(s)).collect(),
            index_size: ix.size,
            index_sha256: ix.sha256.0,
            seeds: vec![seed],
        }),
    };
    let range = SlotRange {
        offset: slot.offset,
        capacity: slot.size,
    };
    let mut moved = Downloaded::default();
    let (exts, os_fetch) = tokio::join!(
        store::download(m, &fetcher, plan, progress, &mut moved),
        fetcher.fetch_os_image(&item, range)
    );
    let new_files = exts?;
    let fetched = os_fetch?;
    failpoint::hit("stage-written");
    if let Err(e) = check_staged(slots, slot, release, plan, m) {
        for f in new_files {
            let _ = fs::remove_file(f);
        }
        return Err(e);
    }
    Ok(fetched.bytes_downloaded + moved.bytes)
}

/// Read the slot back and check the upcoming host from inside it, then every chosen extension
/// image against that host.
fn check_staged(
    slots: &Slots,
    slot: &SlotInfo,
    release: &Release,
    plan: &Plan,
    m: &Machine,
) -> Result<(), Error> {
    verify_slot(slots, slot, release)?;
    let osr = slots.os_release(slot)?;
    let bad = |why: String| Error::Incompatible {
        path: slots.disk.join(format!("[slot {}]", slot.label)),
        why,
    };
    let systemd = slots.systemd_version(slot)?;
    let mut inside = OsIdentity::from_release(&osr, native_architecture());
    // A manifest from before upd-channel declared the systemd version says nothing about it.
    inside.systemd = systemd.filter(|_| release.os.identity.systemd.is_some());
    if inside != release.os.identity {
        return Err(bad(format!(
            "its os-release says {}, the signed manifest says {}",
            describe(&inside),
            describe(&release.os.identity)
        )));
    }
    let version = os_version(&osr).unwrap_or_default();
    if version != release.version.to_string() {
        return Err(bad(format!(
            "its os-release gives OS version '{version}', the signed manifest says {}",
            release.version
        )));
    }
    let mut upcoming = HostIdentity::from_os_release(&osr, native_architecture())
        .map_err(|e| bad(e.to_string()))?;
    upcoming.systemd = systemd;
    check_images(m, plan, &upcoming)
}

/// The slot's first `size` bytes must hash to the signed image's SHA-256.
fn verify_slot(slots: &Slots, slot: &SlotInfo, release: &Release) -> Result<(), Error> {
    let os = &release.os.image;
    let got = slots.read_back(slot, os.size)?;
    if got != os.sha256.0 {
        return Err(SlotError::ReadBack {
            label: slot.label.clone(),
            disk: slots.disk.clone(),
            expected: os.sha256.to_hex(),
            actual: hex::encode(got),
        }
        .into());
    }
    Ok(())
}

/// A pending generation whose slot lost its boot priority (cut short between recording and
/// arming): verify the slot again and arm it.
fn rearm(slots: &Slots, label: &str, release: &Release) -> Result<(), Error> {
    let slot = slots.slot(label)?;
    if slot.prio.priority > 0 {
        return Ok(());
    }
    verify_slot(slots, &slot, release)?;
    slots.arm(label)?;
    Ok(())
}

/// `ID=x VERSION_ID=y SYSEXT_LEVEL=z ARCHITECTURE=a`, as os-release spells them.
fn describe(o: &OsIdentity) -> String {
    let mut out = format!("ID={}", o.id);
    if let Some(v) = &o.version_id {
        out += &format!(" VERSION_ID={v}");
    }
    if let Some(l) = &o.sysext_level {
        out += &format!(" SYSEXT_LEVEL={l}");
    }
    out + &format!(" ARCHITECTURE={}", o.architecture)
}

fn versions(g: &Generation) -> BTreeMap<String, String> {
    g.extensions
        .iter()
        .map(|(n, e)| (n.clone(), e.version.clone()))
        .collect()
}
