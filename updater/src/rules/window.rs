//! Maintenance windows of the `window` reboot strategy (`REBOOT_WINDOW`), and per-machine jitter.
//!
//! Syntax of `REBOOT_WINDOW`: one or more windows separated by `;`, each `DAYS HH:MM DURATION`
//! in the machine's local time:
//!
//! - `DAYS`: a day (`Mon` … `Sun`, or the full name, any case), a list `Mon,Wed,Fri`, a range
//!   `Mon-Fri` (a range may wrap: `Sat-Mon`), lists of ranges `Mon-Wed,Sat`, or `*` for every
//!   day. The day is the day the window *opens*.
//! - `HH:MM`: the opening time, 00:00 to 23:59.
//! - `DURATION`: how long it stays open: `30m`, `2h`, `1h30m`; more than 0, at most `168h`.
//!
//! A window may run past midnight and past Sunday into Monday. Examples:
//! `Mon-Fri 02:00 1h` (weeknights), `Sat 23:30 3h; Sun 23:30 3h`, `* 04:00 45m`.
//!
//! The rules take the local time as a [`NaiveDateTime`] so that they are pure; the `*_at`
//! helpers convert an instant with a time zone (`chrono::Local` in production).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike};
use chrono::{Utc, Weekday};
use ring::digest::{Context, SHA256};

const DAY_SECS: i64 = 86_400;
const WEEK_SECS: i64 = 7 * DAY_SECS;
/// The longest window: a whole week (always open).
const MAX_MINUTES: u32 = 7 * 24 * 60;
/// How far past a daylight-saving gap a window start is moved, at most (minutes).
const MAX_GAP_MINUTES: i64 = 24 * 60;

/// Why a `REBOOT_WINDOW` value was refused; each says what was found and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Nothing but separators and blanks.
    #[error("no window given: expected `DAYS HH:MM DURATION` (e.g. `Mon-Fri 02:00 1h`), several separated by ';'")]
    Empty,
    /// Not three fields.
    #[error("window '{window}' has {found} fields: expected `DAYS HH:MM DURATION`, e.g. `Sat,Sun 03:30 2h`")]
    Fields {
        /// The window as written.
        window: String,
        /// How many whitespace-separated fields it has.
        found: usize,
    },
    /// A day, list or range that does not parse.
    #[error("window '{window}': '{days}' is not a set of days: expected a day (Mon..Sun), a list `Mon,Wed`, a range `Mon-Fri`, or `*`")]
    Days {
        /// The window as written.
        window: String,
        /// The `DAYS` field.
        days: String,
    },
    /// An opening time that is not `HH:MM`.
    #[error(
        "window '{window}': '{time}' is not a time of day: expected HH:MM from 00:00 to 23:59"
    )]
    Time {
        /// The window as written.
        window: String,
        /// The `HH:MM` field.
        time: String,
    },
    /// A duration that does not parse or is out of range.
    #[error("window '{window}': '{duration}' is not a duration: expected hours and/or minutes like 30m, 2h or 1h30m, more than 0 and at most 168h")]
    Duration {
        /// The window as written.
        window: String,
        /// The `DURATION` field.
        duration: String,
    },
}

/// A parsed `REBOOT_WINDOW`: the union of one or more weekly windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    spans: Vec<Span>,
}

/// One `DAYS HH:MM DURATION` window.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Span {
    /// Opening days, Monday first.
    days: [bool; 7],
    /// Opening time in minutes after midnight.
    start: u32,
    /// Length in minutes.
    minutes: u32,
}

impl FromStr for Window {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, WindowError> {
        let spans = s
            .split(';')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(Span::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if spans.is_empty() {
            return Err(WindowError::Empty);
        }
        Ok(Self { spans })
    }
}

impl Span {
    fn parse(window: &str) -> Result<Self, WindowError> {
        let fields: Vec<&str> = window.split_whitespace().collect();
        let [days, time, duration] = fields[..] else {
            return Err(WindowError::Fields {
                window: window.to_string(),
                found: fields.len(),
            });
        };
        let owned = || window.to_string();
        Ok(Self {
            days: parse_days(days).ok_or_else(|| WindowError::Days {
                window: owned(),
                days: days.to_string(),
            })?,
            start: parse_time(time).ok_or_else(|| WindowError::Time {
                window: owned(),
                time: time.to_string(),
            })?,
            minutes: parse_duration(duration).ok_or_else(|| WindowError::Duration {
                window: owned(),
                duration: duration.to_string(),
            })?,
        })
    }

    /// Opening instants as seconds after Monday 00:00.
    fn starts(&self) -> impl Iterator<Item = i64> + '_ {
        (0..7)
            .filter(|&d| self.days[d])
            .map(|d| d as i64 * DAY_SECS + i64::from(self.start) * 60)
    }

    fn contains(&self, t: i64) -> bool {
        let len = i64::from(self.minutes) * 60;
        self.starts().any(|s| (t - s).rem_euclid(WEEK_SECS) < len)
    }
}

/// `*`, or comma-separated days and ranges of days (a range may wrap past Sunday).
fn parse_days(s: &str) -> Option<[bool; 7]> {
    if s == "*" {
        return Some([true; 7]);
    }
    let day = |d: &str| Some(d.parse::<Weekday>().ok()?.num_days_from_monday() as usize);
    let mut days = [false; 7];
    for part in s.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(part)?, day(part)?),
        };
        let count = (last + 7 - first) % 7 + 1;
        for i in 0..count {
            days[(first + i) % 7] = true;
        }
    }
    Some(days)
}

/// `HH:MM` (one or two hour digits, two minute digits) as minutes after midnight.
fn parse_time(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let digits = |x: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(h, 1..=2) || !digits(m, 2..=2) {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `<n>h`, `<n>m` or `<n>h<n>m` as minutes, in (0, 168h].
fn parse_duration(s: &str) -> Option<u32> {
    let (hours, rest) = match s.split_once('h') {
        Some((h, rest)) => (number(h)?, rest),
        None => (0, s),
    };
    let minutes = match rest {
        "" => 0,
        r => number(r.strip_suffix('m')?)?,
    };
    let total = hours.checked_mul(60)?.checked_add(minutes)?;
    (total > 0 && total <= MAX_MINUTES).then_some(total)
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 6 {
        return None;
    }
    s.parse().ok()
}

/// Seconds after Monday 00:00 of the week `local` falls in.
fn week_seconds(local: NaiveDateTime) -> i64 {
    i64::from(local.weekday().num_days_from_monday()) * DAY_SECS
        + i64::from(local.time().num_seconds_from_midnight())
}

impl Window {
    /// Whether the local time `local` is inside one of the windows.
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let t = week_seconds(local);
        self.spans.iter().any(|s| s.contains(t))
    }

    /// The next local time a window opens: `local` itself if it is inside one already.
    pub fn next_start(&self, local: NaiveDateTime) -> NaiveDateTime {
        if self.contains(local) {
            return local;
        }
        let t = week_seconds(local);
        let wait = self
            .spans
            .iter()
            .flat_map(Span::starts)
            .map(|s| (s - t).rem_euclid(WEEK_SECS))
            .min()
            .expect("a window has at least one opening");
        local.with_nanosecond(0).expect("0 ns is valid") + TimeDelta::seconds(wait)
    }

    /// Whether the instant `now` is inside a window, in the time zone `tz`.
    pub fn contains_at<Tz: TimeZone>(&self, now: DateTime<Utc>, tz: &Tz) -> bool {
        self.contains(now.with_timezone(tz).naive_local())
    }

    /// The next instant a window opens in the time zone `tz`: `now` if inside one.
    ///
    /// A local opening time that a daylight-saving change skips moves to the first local
    /// minute after the gap; one that occurs twice is taken at its first occurrence not
    /// before `now`.
    pub fn next_start_at<Tz: TimeZone>(&self, now: DateTime<Utc>, tz: &Tz) -> DateTime<Utc> {
        let local = now.with_timezone(tz).naive_local();
        self.next_start_mapped(now, local, |n| {
            tz.from_local_datetime(&n).map(|d| d.with_timezone(&Utc))
        })
    }

    /// [`Window::next_start_at`] with the local-to-UTC mapping passed in (testable without a
    /// real time zone).
    fn next_start_mapped(
        &self,
        now: DateTime<Utc>,
        local: NaiveDateTime,
        to_utc: impl Fn(NaiveDateTime) -> LocalResult<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        if self.contains(local) {
            return now;
        }
        let start = self.next_start(local);
        for minute in 0..=MAX_GAP_MINUTES {
            match to_utc(start + TimeDelta::minutes(minute)) {
                LocalResult::Single(t) => return t.max(now),
                LocalResult::Ambiguous(a, b) => return if a >= now { a } else { b.max(now) },
                LocalResult::None => continue,
            }
        }
        now
    }
}

impl fmt::Display for Window {
    /// The canonical spelling, e.g. `Mon-Fri 02:00 1h; Sat,Sun 03:30 1h30m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.spans.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write_days(f, &s.days)?;
            write!(f, " {:02}:{:02} ", s.start / 60, s.start % 60)?;
            match (s.minutes / 60, s.minutes % 60) {
                (0, m) => write!(f, "{m}m")?,
                (h, 0) => write!(f, "{h}h")?,
                (h, m) => write!(f, "{h}h{m}m")?,
            }
        }
        Ok(())
    }
}

/// Days as `*` or comma-separated runs (`Mon-Fri`, `Sat`), Monday first.
fn write_days(f: &mut fmt::Formatter<'_>, days: &[bool; 7]) -> fmt::Result {
    if days.iter().all(|&d| d) {
        return f.write_str("*");
    }
    let name = |d: usize| Weekday::try_from(d as u8).expect("0..7 is a weekday");
    let mut first = true;
    let mut d = 0;
    while d < 7 {
        if !days[d] {
            d += 1;
            continue;
        }
        let run = (d..7).take_while(|&e| days[e]).count();
        f.write_str(if first { "" } else { "," })?;
        match run {
            1 => write!(f, "{}", name(d))?,
            2 => write!(f, "{},{}", name(d), name(d + 1))?,
            _ => write!(f, "{}-{}", name(d), name(d + run - 1))?,
        }
        first = false;
        d += run;
    }
    Ok(())
}

/// A delay in [0, `max`) that is the same for a machine and `salt` (say the day number) and
/// spread uniformly across machines, so that a fleet does not act in the same second.
///
/// SHA-256 over a domain tag, the length-prefixed machine id and the salt; the first 64 bits
/// scale `max` (capped at u64::MAX nanoseconds, about 584 years). `max` of zero gives zero.
pub fn jitter(machine_id: &str, max: Duration, salt: u64) -> Duration {
    let id = machine_id.trim().to_ascii_lowercase();
    let mut ctx = Context::new(&SHA256);
    ctx.update(b"upd jitter v1");
    ctx.update(&(id.len() as u64).to_be_bytes());
    ctx.update(id.as_bytes());
    ctx.update(&salt.to_be_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&ctx.finish().as_ref()[..8]);
    let max_ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    let ns = (u128::from(u64::from_be_bytes(first)) * u128::from(max_ns)) >> 64;
    Duration::from_nanos(ns as u64)
}

#[cfg(test)]
mod tests;
