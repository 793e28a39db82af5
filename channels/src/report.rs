//! The fleet report (schema version 1): what a machine tells its owner's report server after a
//! check, stage, boot, mark-good, fallback or refused update, and the rules that check one.
//!
//! Shared by the machine (`upd`, which builds and sends it) and the report server
//! (`upd-channel fleet serve`, which refuses anything that does not pass [`Report::check`]).
//! Every field is documented in docs/fleet.md; nothing else is ever sent.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The one schema version this code writes and accepts.
pub const REPORT_VERSION: u32 = 1;

/// The largest report body a server accepts (and a machine sends), in bytes.
pub const MAX_REPORT_BYTES: usize = 8 * 1024;

/// The longest string field (group, channel, version, phase, error kind), in bytes.
pub const MAX_FIELD: usize = 128;

/// What happened on the machine just before it reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A check of the channel (`upd check`, or a pull/update that staged nothing).
    Check,
    /// A new OS release was staged (pull/update); `pending` names it.
    Stage,
    /// `upd boot` ran after a boot.
    Boot,
    /// `upd mark-good` ran; with an `error` the health checks failed and the OS was sent back.
    MarkGood,
    /// The boot loader fell back from the pending release (`pending` names it), or its slot
    /// booted another OS.
    Fallback,
    /// An update was refused (channel refused, incompatible image, blocked release).
    Refused,
}

impl Event {
    /// The wire name (`mark-good`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Check => "check",
            Event::Stage => "stage",
            Event::Boot => "boot",
            Event::MarkGood => "mark-good",
            Event::Fallback => "fallback",
            Event::Refused => "refused",
        }
    }
}

/// What booted: the OS version and the generation of upd's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Booted {
    /// The booted OS version (os-release `IMAGE_VERSION`, else `VERSION_ID`).
    pub os: String,
    /// The active generation's number (0 before the first).
    pub generation: u64,
}

/// One report, schema version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Always [`REPORT_VERSION`].
    pub version: u32,
    /// The machine-id: 32 lower-case hex digits.
    pub machine_id: String,
    /// The machine's `GROUP`.
    pub group: Option<String>,
    /// The channel the machine follows.
    pub channel: String,
    /// What happened.
    pub event: Event,
    /// When it happened (RFC 3339).
    pub time: DateTime<Utc>,
    /// What booted.
    pub booted: Booted,
    /// The release the report is about: the staged one, or the one that just failed.
    pub pending: Option<String>,
    /// upd's phase after the event (`idle`, `staged`, `booted-pending`, `fell-back`, ...).
    pub phase: String,
    /// The kind of the failure (upd's exit-code name: `refused`, `rolled_back`, ...), or null.
    pub error: Option<String>,
    /// The machine's effective fleet position for `pending` (0..1), or null.
    pub fleet_position: Option<f64>,
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not JSON, or not a report (missing, unknown or mistyped field).
    #[error("not a version 1 report: {0}")]
    Parse(String),
    /// A field's value is outside what it allows.
    #[error("field {field}: {why}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl Report {
    /// Parse and check a report body.
    pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ReportError::Parse(format!(
                "{} bytes, more than {MAX_REPORT_BYTES}",
                body.len()
            )));
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let r: Report = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ReportError::Parse(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        })?;
        de.end().map_err(|e| ReportError::Parse(e.to_string()))?;
        r.check()?;
        Ok(r)
    }

    /// Check every field's value (the types are checked by parsing).
    pub fn check(&self) -> Result<(), ReportError> {
        let bad = |field, why: String| Err(ReportError::Field { field, why });
        if self.version != REPORT_VERSION {
            return bad(
                "version",
                format!("{} is not {REPORT_VERSION}", self.version),
            );
        }
        let id = &self.machine_id;
        if id.len() != 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return bad("machine_id", "expected 32 lower-case hex digits".into());
        }
        let text = [
            ("group", self.group.as_deref()),
            ("channel", Some(self.channel.as_str())),
            ("booted.os", Some(self.booted.os.as_str())),
            ("pending", self.pending.as_deref()),
            ("phase", Some(self.phase.as_str())),
            ("error", self.error.as_deref()),
        ];
        for (field, value) in text {
            let Some(v) = value else { continue };
            if v.is_empty() || v.len() > MAX_FIELD {
                return bad(field, format!("expected 1 to {MAX_FIELD} bytes"));
            }
            if !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-~+".contains(&b))
            {
                return bad(field, "expected only [A-Za-z0-9._~+-]".into());
            }
        }
        if i64::try_from(self.booted.generation).is_err() {
            return bad("booted.generation", "too large".into());
        }
        if let Some(p) = self.fleet_position {
            if !(0.0..=1.0).contains(&p) {
                return bad("fleet_position", format!("{p} is outside 0..1"));
            }
        }
        Ok(())
    }

    /// What this report says about one release's attempt on this machine, if anything: the
    /// release and the outcome (see [`Outcome`]).
    pub fn outcome(&self) -> Option<(&str, Outcome)> {
        match (&self.pending, self.event, &self.error) {
            (Some(r), Event::Fallback, _) => Some((r, Outcome::FallenBack)),
            (Some(r), Event::MarkGood | Event::Refused, Some(_)) => Some((r, Outcome::Failed)),
            // Other errors (a download, the lock) say nothing about the release.
            (Some(_), _, Some(_)) => None,
            (Some(r), Event::Boot, None) if *r == self.booted.os => Some((r, Outcome::Booted)),
            (Some(r), _, None) => Some((r, Outcome::Staged)),
            (None, Event::MarkGood, None) => Some((&self.booted.os, Outcome::Good)),
            (None, _, _) => None,
        }
    }
}

/// A machine's latest outcome for one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Staged (waits for a reboot).
    Staged,
    /// Booted, waiting for mark-good.
    Booted,
    /// Marked good: the machine runs it.
    Good,
    /// Failed: health checks failed (sent back) or the update was refused.
    Failed,
    /// The boot loader fell back from it.
    FallenBack,
}

impl Outcome {
    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Staged => "staged",
            Outcome::Booted => "booted",
            Outcome::Good => "good",
            Outcome::Failed => "failed",
            Outcome::FallenBack => "fallen-back",
        }
    }

    /// The outcome of a stored name.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Staged,
            Outcome::Booted,
            Outcome::Good,
            Outcome::Failed,
            Outcome::FallenBack,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// Whether it counts against the release (the guard's numerator).
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failed | Outcome::FallenBack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> serde_json::Value {
        serde_json::json!({
            "version": 1, "machine_id": "0123456789abcdef0123456789abcdef", "group": "default",
            "channel": "stable", "event": "stage", "time": "2026-12-03T10:00:00Z",
            "booted": {"os": "1.0.0", "generation": 3}, "pending": "2.0.0", "phase": "staged",
            "error": null, "fleet_position": 0.25
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Report, ReportError> {
        Report::parse(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn a_good_report_parses_and_round_trips() {
        let r = parse(&body()).unwrap();
        assert_eq!(r.event, Event::Stage);
        assert_eq!(r.outcome(), Some(("2.0.0", Outcome::Staged)));
        assert_eq!(serde_json::to_value(&r).unwrap(), body());
    }

    #[test]
    fn bad_reports_are_refused_naming_the_field() {
        let cases: [(&str, serde_json::Value, &str); 8] = [
            ("version", 2.into(), "version"),
            ("machine_id", "ABC".into(), "machine_id"),
            (
                "machine_id",
                "0123456789ABCDEF0123456789ABCDEF".into(),
                "machine_id",
            ),
            ("group", "a/b".into(), "group"),
            ("channel", "".into(), "channel"),
            ("fleet_position", 1.5.into(), "fleet_position"),
            ("event", "reboot".into(), "unknown variant"),
            ("time", "yesterday".into(), "time"),
        ];
        for (field, value, want) in cases {
            let mut v = body();
            v[field] = value;
            let e = parse(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{field}: {e}");
        }
        let mut v = body();
        v["extra"] = 1.into();
        assert!(parse(&v).unwrap_err().to_string().contains("unknown field"));
        let mut v = body();
        v["booted"]["kernel"] = "6.1".into();
        assert!(parse(&v).unwrap_err().to_string().contains("unknown field"));
        let big = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(Report::parse(&big)
            .unwrap_err()
            .to_string()
            .contains("more than"));
    }

    #[test]
    fn outcomes_follow_the_event() {
        let mut r = parse(&body()).unwrap();
        let mut with = |event, pending: Option<&str>, os: &str, error: Option<&str>| {
            r.event = event;
            r.pending = pending.map(Into::into);
            r.booted.os = os.into();
            r.error = error.map(Into::into);
            r.outcome().map(|(v, o)| (v.to_string(), o))
        };
        let two = |o| Some(("2.0.0".to_string(), o));
        assert_eq!(
            with(Event::Boot, Some("2.0.0"), "2.0.0", None),
            two(Outcome::Booted)
        );
        assert_eq!(
            with(Event::Boot, Some("2.0.0"), "1.0.0", None),
            two(Outcome::Staged)
        );
        assert_eq!(
            with(Event::MarkGood, None, "2.0.0", None),
            two(Outcome::Good)
        );
        let sent_back = with(Event::MarkGood, Some("2.0.0"), "2.0.0", Some("rolled_back"));
        assert_eq!(sent_back, two(Outcome::Failed));
        let fell = with(Event::Fallback, Some("2.0.0"), "1.0.0", None);
        assert_eq!(fell, two(Outcome::FallenBack));
        assert_eq!(
            with(Event::Check, Some("2.0.0"), "1.0.0", Some("download")),
            None
        );
        assert_eq!(with(Event::Check, None, "1.0.0", None), None);
        assert_eq!(with(Event::Refused, None, "1.0.0", Some("refused")), None);
    }
}
