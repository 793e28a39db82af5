//! The fleet report after a command (`REPORT_URL` set): which event the command was, built from
//! the state before and after it, then handed to `remote::fleetreport` (which never fails).

use chrono::Utc;
use upd_channels::report::{Booted, Event, Report, REPORT_VERSION};
use upd_channels::rollout::{effective_position, fleet_position};
use upd_channels::version::OsVersion;

use super::exit;
use crate::host::machine::Machine;
use crate::ops::session::observe;
use crate::remote::fleetreport;
use crate::state::State;

/// The commands that report, by what they do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `check`.
    Check,
    /// `pull`, `update`.
    Pull,
    /// `boot`.
    Boot,
    /// `mark-good`.
    MarkGood,
}

/// What was pending before the command: a release that it failed is reported as its subject.
#[derive(Debug, Clone)]
pub struct Before {
    pending: Option<String>,
}

/// Read what is pending, when reports are on (else nothing is read).
pub fn before(m: &Machine) -> Option<Before> {
    m.settings.report_url.as_ref()?;
    let state = State::load(&m.state_dir()).ok()?;
    Some(Before {
        pending: state.pending.map(|p| p.os_version),
    })
}

/// Build the report of a command of `kind` that ended with exit `code`, and submit it.
pub fn after(m: &Machine, kind: Kind, before: &Before, code: u8) {
    match build(m, kind, before, code) {
        // `upd boot` runs before the network: its report waits for the next command.
        Ok(r) => fleetreport::submit(m, r, kind != Kind::Boot),
        Err(why) => tracing::warn!("fleet report not sent: {why}"),
    }
}

/// The event of a command of `kind` ended with `code`, given whether a release is staged after
/// it and whether the one pending before it was marked failed (pure).
pub fn event(kind: Kind, code: u8, staged: bool, failed_pending: bool) -> Event {
    let refused = matches!(
        code,
        exit::REFUSED | exit::INCOMPATIBLE | exit::BLOCKED | exit::ROLLED_BACK
    );
    match kind {
        Kind::Check | Kind::Pull if refused => Event::Refused,
        Kind::Pull if staged && code == exit::OK => Event::Stage,
        Kind::Check | Kind::Pull => Event::Check,
        Kind::Boot if failed_pending => Event::Fallback,
        Kind::Boot => Event::Boot,
        Kind::MarkGood => Event::MarkGood,
    }
}

fn build(m: &Machine, kind: Kind, before: &Before, code: u8) -> Result<Report, String> {
    let machine_id = m.machine_id().to_ascii_lowercase();
    let state = State::load(&m.state_dir()).map_err(|e| e.to_string())?;
    let os = m
        .host()
        .map(|h| h.version.to_string())
        .map_err(|e| e.to_string())?;
    let phase = observe(m, &state).ok().and_then(|p| {
        serde_json::to_value(p).ok()?["phase"]
            .as_str()
            .map(String::from)
    });
    let failed = before
        .pending
        .clone()
        .filter(|p| state.pending.is_none() && state.failed_releases.contains(p));
    let pending = state
        .pending
        .as_ref()
        .map(|p| p.os_version.clone())
        .or(failed.clone());
    let staged = matches!(phase.as_deref(), Some("staged"));
    let event = event(kind, code, staged, failed.is_some());
    let error = match code {
        exit::OK | exit::UPDATE_AVAILABLE => None,
        c => Some(exit::kind(c).to_string()),
    };
    let fleet_position = pending.as_deref().and_then(|p| {
        let v = OsVersion::parse(p).ok()?;
        let pos = fleet_position(&machine_id, m.settings.channel.as_str(), &v);
        Some(effective_position(pos, m.settings.wariness))
    });
    let report = Report {
        version: REPORT_VERSION,
        machine_id,
        group: Some(m.settings.group.to_string()),
        channel: m.settings.channel.to_string(),
        event,
        time: Utc::now(),
        booted: Booted {
            os,
            generation: state.active.as_ref().map_or(0, |g| g.id),
        },
        pending,
        phase: phase.unwrap_or_else(|| "unknown".into()),
        error,
        fleet_position,
    };
    report.check().map_err(|e| e.to_string())?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_reports_its_event() {
        assert_eq!(event(Kind::Check, exit::OK, false, false), Event::Check);
        assert_eq!(
            event(Kind::Check, exit::UPDATE_AVAILABLE, false, false),
            Event::Check
        );
        assert_eq!(
            event(Kind::Check, exit::REFUSED, false, false),
            Event::Refused
        );
        assert_eq!(event(Kind::Pull, exit::OK, true, false), Event::Stage);
        assert_eq!(event(Kind::Pull, exit::OK, false, false), Event::Check);
        assert_eq!(event(Kind::Pull, exit::DOWNLOAD, true, false), Event::Check);
        assert_eq!(
            event(Kind::Pull, exit::INCOMPATIBLE, false, false),
            Event::Refused
        );
        assert_eq!(event(Kind::Boot, exit::OK, false, true), Event::Fallback);
        assert_eq!(event(Kind::Boot, exit::OK, false, false), Event::Boot);
        assert_eq!(
            event(Kind::MarkGood, exit::ROLLED_BACK, false, false),
            Event::MarkGood
        );
    }
}
