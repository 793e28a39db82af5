//! `fleet status`: per release of a channel, the machines running it (latest report per machine)
//! and each machine's latest outcome for it (staged, booted, good, failed, fallen back), by group
//! and by wave.

use std::collections::BTreeMap;

use serde::Serialize;
use upd_channels::report::Outcome;
use upd_channels::version::OsVersion;

use super::db::{AttemptCount, Db, DbError};

/// Machine counts of one release (or one group or wave of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Machines whose latest report says they booted it.
    pub running: i64,
    /// Machines that tried it (any outcome below).
    pub tried: i64,
    /// Staged, waiting for a reboot.
    pub staged: i64,
    /// Booted, waiting for mark-good.
    pub booted: i64,
    /// Marked good.
    pub good: i64,
    /// Health checks failed (sent back) or the update refused.
    pub failed: i64,
    /// The boot loader fell back from it.
    pub fallen_back: i64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome, n: i64) {
        self.tried += n;
        *match outcome {
            Outcome::Staged => &mut self.staged,
            Outcome::Booted => &mut self.booted,
            Outcome::Good => &mut self.good,
            Outcome::Failed => &mut self.failed,
            Outcome::FallenBack => &mut self.fallen_back,
        } += n;
    }

    /// Failed and fallen back, over the machines that tried; None when none tried.
    pub fn failure_share(&self) -> Option<f64> {
        (self.tried > 0).then(|| (self.failed + self.fallen_back) as f64 / self.tried as f64)
    }
}

/// One wave: the machines whose fleet position is in `[from, to)` percent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Wave {
    /// 1-based; 0 for machines that reported no position.
    pub wave: i64,
    /// Lower bound, percent of the fleet.
    pub from_percent: f64,
    /// Upper bound, percent of the fleet.
    pub to_percent: f64,
    /// The counts (`running` is not split by wave: it is 0 here).
    #[serde(flatten)]
    pub counts: Counts,
}

/// One release of the channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReleaseStatus {
    /// The release.
    pub version: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// (failed + fallen_back) / tried, or null.
    pub failure_share: Option<f64>,
    /// The counts per group ("" for machines that reported none).
    pub groups: BTreeMap<String, Counts>,
    /// The counts per wave that has machines.
    pub waves: Vec<Wave>,
}

/// The whole channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetStatus {
    /// The JSON document's schema version.
    pub schema: u32,
    /// The channel.
    pub channel: String,
    /// Machines that reported on this channel (latest report).
    pub machines: i64,
    /// Reports stored for this channel.
    pub reports: i64,
    /// Releases, newest first.
    pub releases: Vec<ReleaseStatus>,
}

/// Read the channel's status; `bounds` are the waves' upper bounds in percent, ascending.
pub async fn status(db: &Db, channel: &str, bounds: &[f64]) -> Result<FleetStatus, DbError> {
    let fractions: Vec<f64> = bounds.iter().map(|b| b / 100.0).collect();
    // The three counts are independent: on PostgreSQL they run at once, each on a connection of
    // its own (SQLite's pool of one takes them in turn).
    let (running, attempts, reports) = tokio::try_join!(
        db.running(channel),
        db.attempts(channel, &fractions),
        db.report_count(channel)
    )?;
    let mut st = assemble(channel, bounds, &running, &attempts);
    st.reports = reports;
    Ok(st)
}

/// The status from the database's counts (pure).
pub fn assemble(
    channel: &str,
    bounds: &[f64],
    running: &[(String, String, i64)],
    attempts: &[AttemptCount],
) -> FleetStatus {
    let mut rels: BTreeMap<String, ReleaseStatus> = BTreeMap::new();
    let entry = |rels: &mut BTreeMap<String, ReleaseStatus>, v: &str| {
        rels.entry(v.to_string())
            .or_insert_with(|| ReleaseStatus {
                version: v.to_string(),
                counts: Counts::default(),
                failure_share: None,
                groups: BTreeMap::new(),
                waves: Vec::new(),
            })
            .clone()
    };
    let mut machines = 0;
    for (os, group, n) in running {
        machines += n;
        let mut r = entry(&mut rels, os);
        r.counts.running += n;
        r.groups.entry(group.clone()).or_default().running += n;
        rels.insert(os.clone(), r);
    }
    for a in attempts {
        let mut r = entry(&mut rels, &a.version);
        r.counts.add(a.outcome, a.count);
        r.groups
            .entry(a.group.clone())
            .or_default()
            .add(a.outcome, a.count);
        let wave = a.wave + 1;
        if let Some(w) = r.waves.iter_mut().find(|w| w.wave == wave) {
            w.counts.add(a.outcome, a.count);
        } else {
            let (from, to) = wave_bounds(bounds, a.wave);
            let mut counts = Counts::default();
            counts.add(a.outcome, a.count);
            r.waves.push(Wave {
                wave,
                from_percent: from,
                to_percent: to,
                counts,
            });
        }
        rels.insert(a.version.clone(), r);
    }
    let mut releases: Vec<ReleaseStatus> = rels.into_values().collect();
    for r in &mut releases {
        r.failure_share = r.counts.failure_share();
        r.waves.sort_by_key(|w| w.wave);
    }
    releases.sort_by(|a, b| newer_first(&a.version, &b.version));
    FleetStatus {
        schema: 1,
        channel: channel.to_string(),
        machines,
        reports: 0,
        releases,
    }
}

/// The percent range of wave index `i` (-1: unknown position, shown as 0..100).
fn wave_bounds(bounds: &[f64], i: i64) -> (f64, f64) {
    let Ok(i) = usize::try_from(i) else {
        return (0.0, 100.0);
    };
    let from = if i == 0 { 0.0 } else { bounds[i - 1] };
    (from, bounds.get(i).copied().unwrap_or(100.0))
}

/// OS versions compared as systemd compares them, the newest first.
fn newer_first(a: &str, b: &str) -> std::cmp::Ordering {
    match (OsVersion::parse(a), OsVersion::parse(b)) {
        (Ok(x), Ok(y)) => y.cmp(&x),
        _ => b.cmp(a),
    }
}

/// The human table of `fleet status`.
pub fn render(s: &FleetStatus) -> String {
    let mut out = format!(
        "channel {}: {} machine(s) reporting, {} report(s) stored\n",
        s.channel, s.machines, s.reports
    );
    let head = format!(
        "{:<16} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8}\n",
        "release", "running", "tried", "staged", "booted", "good", "failed", "fellbk", "fail%"
    );
    let line = |name: &str, c: &Counts| {
        let share = c
            .failure_share()
            .map_or("-".into(), |f| format!("{:.1}", f * 100.0));
        format!(
            "{name:<16} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {share:>8}\n",
            c.running, c.tried, c.staged, c.booted, c.good, c.failed, c.fallen_back
        )
    };
    out += &head;
    for r in &s.releases {
        out += &line(&r.version, &r.counts);
        for (g, c) in &r.groups {
            let g = if g.is_empty() { "(none)" } else { g };
            out += &line(&format!("  group {g}"), c);
        }
        for w in &r.waves {
            let name = if w.wave == 0 {
                "  wave ?".to_string()
            } else {
                format!("  wave {} <{}%", w.wave, w.to_percent)
            };
            out += &line(&name, &w.counts);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &str, o: Outcome, g: &str, wave: i64, count: i64) -> AttemptCount {
        AttemptCount {
            version: v.into(),
            outcome: o,
            group: g.into(),
            wave,
            count,
        }
    }

    #[test]
    fn counts_add_up_by_release_group_and_wave() {
        let running = [
            ("1.0.0".to_string(), "default".to_string(), 7),
            ("2.0.0".to_string(), "canary".to_string(), 3),
        ];
        let attempts = [
            a("2.0.0", Outcome::Good, "canary", 0, 3),
            a("2.0.0", Outcome::Failed, "default", 1, 2),
            a("2.0.0", Outcome::FallenBack, "default", 1, 1),
            a("2.0.0", Outcome::Staged, "default", -1, 4),
        ];
        let s = assemble("stable", &[10.0, 50.0, 100.0], &running, &attempts);
        assert_eq!(s.machines, 10);
        assert_eq!(s.releases[0].version, "2.0.0", "newest first");
        let r = &s.releases[0];
        assert_eq!(
            (r.counts.running, r.counts.tried, r.counts.good),
            (3, 10, 3)
        );
        assert_eq!(
            (r.counts.failed, r.counts.fallen_back, r.counts.staged),
            (2, 1, 4)
        );
        assert_eq!(r.failure_share, Some(0.3));
        assert_eq!(r.groups["default"].tried, 7);
        assert_eq!(r.groups["canary"].running, 3);
        let waves: Vec<(i64, f64, f64, i64)> = r
            .waves
            .iter()
            .map(|w| (w.wave, w.from_percent, w.to_percent, w.counts.tried))
            .collect();
        assert_eq!(
            waves,
            [(0, 0.0, 100.0, 4), (1, 0.0, 10.0, 3), (2, 10.0, 50.0, 3)]
        );
        assert_eq!(s.releases[1].failure_share, None);
        let text = render(&s);
        assert!(text.contains("2.0.0"), "{text}");
    }
}
