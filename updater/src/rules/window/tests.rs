//! REBOOT_WINDOW parsing, membership across midnight and the week end, next opening, jitter.

use chrono::{FixedOffset, NaiveDate};

use super::*;

/// 2026-11-23 is a Monday: `local(0, 2, 0)` is Monday 02:00, `local(6, ..)` Sunday.
fn local(day: u32, h: u32, m: u32) -> NaiveDateTime {
    (NaiveDate::from_ymd_opt(2026, 11, 23).unwrap() + chrono::Days::new(day.into()))
        .and_hms_opt(h, m, 0)
        .unwrap()
}

fn w(s: &str) -> Window {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

// Each malformed value is refused with the variant that names the wrong field.
#[test]
fn parse_errors_name_the_field() {
    let rows: &[(&str, &str)] = &[
        ("", "no window"),
        (" ; ;", "no window"),
        ("Mon 02:00", "2 fields"),
        ("Mon 02:00 1h extra", "4 fields"),
        ("Mon-Fri 02:00 1h; Sat", "1 fields"),
        ("Mo 02:00 1h", "'Mo' is not a set of days"),
        ("Mon- 02:00 1h", "'Mon-' is not a set of days"),
        ("Mon,,Tue 02:00 1h", "not a set of days"),
        ("Mon-Fri-Sat 02:00 1h", "not a set of days"),
        ("** 02:00 1h", "not a set of days"),
        ("Mon 24:00 1h", "'24:00' is not a time of day"),
        ("Mon 02:60 1h", "not a time of day"),
        ("Mon 2:5 1h", "not a time of day"),
        ("Mon 0200 1h", "not a time of day"),
        ("Mon -1:00 1h", "not a time of day"),
        ("Mon 02:00 0m", "'0m' is not a duration"),
        ("Mon 02:00 0h0m", "not a duration"),
        ("Mon 02:00 90", "not a duration"),
        ("Mon 02:00 1h30", "not a duration"),
        ("Mon 02:00 30s", "not a duration"),
        ("Mon 02:00 169h", "not a duration"),
        ("Mon 02:00 h", "not a duration"),
        ("Mon 02:00 99999999999m", "not a duration"),
    ];
    for (input, want) in rows {
        let err = input.parse::<Window>().expect_err(input).to_string();
        assert!(err.contains(want), "{input:?}: {err}");
        assert!(
            err.contains("expected"),
            "{input:?} says what is expected: {err}"
        );
    }
}

// Accepted spellings, shown back in the canonical form.
#[test]
fn accepted_forms_print_canonically() {
    let rows = [
        ("Mon 02:00 30m", "Mon 02:00 30m"),
        ("mon,WED,friday 2:00 2h", "Mon,Wed,Fri 02:00 2h"),
        ("Mon-Fri 23:30 1h30m", "Mon-Fri 23:30 1h30m"),
        ("Sat-Mon 03:00 90m", "Mon,Sat,Sun 03:00 1h30m"),
        ("Mon-Wed,Fri 01:00 1h", "Mon-Wed,Fri 01:00 1h"),
        (
            "* 04:00 45m ;  Sun 12:00 168h",
            "* 04:00 45m; Sun 12:00 168h",
        ),
        ("Sun-Sun 00:00 1m", "Sun 00:00 1m"),
    ];
    for (input, canonical) in rows {
        let parsed = w(input);
        assert_eq!(parsed.to_string(), canonical, "{input}");
        assert_eq!(w(canonical), parsed, "{canonical} round-trips");
    }
}

// Weeknight window at 23:30 for 90 minutes: open across midnight into the next day, shut
// outside, and Friday's runs into Saturday though Saturday is not listed.
#[test]
fn window_across_midnight() {
    let win = w("Mon-Fri 23:30 1h30m");
    let inside = [
        local(0, 23, 30),
        local(1, 0, 59),
        local(4, 23, 45),
        local(5, 0, 30),
    ];
    let outside = [
        local(0, 23, 29),
        local(1, 1, 0),
        local(0, 12, 0),
        local(5, 23, 30),
        local(6, 23, 59),
        local(0, 0, 30),
    ];
    for t in inside {
        assert!(win.contains(t), "{t} should be inside");
    }
    for t in outside {
        assert!(!win.contains(t), "{t} should be outside");
    }
}

// Sunday 22:00 for 4 hours wraps into Monday 02:00 of the next week.
#[test]
fn window_across_the_week_end() {
    let win = w("Sun 22:00 4h");
    assert!(win.contains(local(6, 22, 0)));
    assert!(win.contains(local(7, 1, 59)), "next Monday");
    assert!(
        win.contains(local(0, 1, 59)),
        "this Monday, from last Sunday"
    );
    assert!(!win.contains(local(0, 2, 0)));
    assert!(!win.contains(local(6, 21, 59)));
    assert_eq!(win.next_start(local(0, 2, 0)), local(6, 22, 0));
    assert_eq!(win.next_start(local(7, 1, 0)), local(7, 1, 0));
    let always = w("Wed 10:00 168h");
    assert!((0..7).all(|d| always.contains(local(d, 10, 0)) && always.contains(local(d, 9, 59))));
}

// The next opening: now if inside, else the nearest opening of any window, later this day,
// tomorrow, or next week; seconds are dropped, never skipping an opening.
#[test]
fn next_start_finds_the_nearest_opening() {
    let win = w("Tue,Thu 03:00 1h; Sat 12:00 30m");
    let rows = [
        (local(1, 3, 30), local(1, 3, 30)),
        (local(1, 2, 59), local(1, 3, 0)),
        (local(1, 4, 0), local(3, 3, 0)),
        (local(3, 5, 0), local(5, 12, 0)),
        (local(5, 12, 30), local(8, 3, 0)),
        (local(6, 23, 59), local(8, 3, 0)),
    ];
    for (now, want) in rows {
        assert_eq!(win.next_start(now), want, "from {now}");
        assert!(win.contains(want));
    }
    let with_secs = local(1, 2, 59) + TimeDelta::milliseconds(30_500);
    assert_eq!(win.next_start(with_secs), local(1, 3, 0));
}

// An instant in UTC is judged in the machine's zone: 01:30 UTC is 03:30 at UTC+2.
#[test]
fn instants_in_a_time_zone() {
    let win = w("Tue 03:00 1h");
    let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
    let now = local(1, 1, 30).and_utc();
    assert!(win.contains_at(now, &plus2));
    assert!(!win.contains_at(now, &Utc));
    assert_eq!(win.next_start_at(now, &plus2), now);
    assert_eq!(win.next_start_at(now, &Utc), local(1, 3, 0).and_utc());
    assert_eq!(
        win.next_start_at(local(1, 2, 0).and_utc(), &plus2),
        local(8, 1, 0).and_utc()
    );
}

// Daylight saving: an opening that the clock skips moves to the first minute after the
// gap; one the clock repeats is taken at the occurrence not before now.
#[test]
fn openings_in_daylight_saving_changes() {
    let win = w("Sun 02:30 1h");
    let before = local(6, 1, 0);
    let now = before.and_utc();
    // Spring forward: 02:00-03:00 local does not exist; local = UTC here otherwise.
    let gap = |n: NaiveDateTime| match n.hour() {
        2 => LocalResult::None,
        _ => LocalResult::Single(n.and_utc()),
    };
    assert_eq!(
        win.next_start_mapped(now, before, gap),
        local(6, 3, 0).and_utc()
    );
    // Fall back: 02:00-03:00 local occurs twice, an hour apart.
    let twice = |n: NaiveDateTime| match n.hour() {
        2 => LocalResult::Ambiguous(n.and_utc(), n.and_utc() + TimeDelta::hours(1)),
        _ => LocalResult::Single(n.and_utc()),
    };
    assert_eq!(
        win.next_start_mapped(now, before, twice),
        local(6, 2, 30).and_utc()
    );
    let second = local(6, 2, 31).and_utc() + TimeDelta::hours(1);
    let shut = w("Sun 02:45 1m");
    assert_eq!(
        shut.next_start_mapped(second, local(6, 2, 31), twice),
        local(6, 2, 45).and_utc() + TimeDelta::hours(1),
        "the first 02:45 is already past"
    );
}

// Jitter is stable per machine and salt, below max, uniform across a fleet, reshuffled by
// the salt, and zero for a zero max.
#[test]
fn jitter_spreads_a_fleet() {
    let max = Duration::from_hours(1);
    let ids: Vec<String> = (0..20_000u64)
        .map(|i| format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
        .collect();
    let mut buckets = [0usize; 10];
    let mut moved = 0;
    for id in &ids {
        let j = jitter(id, max, 20_000);
        assert!(j < max);
        assert_eq!(j, jitter(id, max, 20_000));
        assert_eq!(j, jitter(&id.to_uppercase(), max, 20_000));
        buckets[(j.as_secs_f64() / 360.0) as usize] += 1;
        moved += usize::from(j != jitter(id, max, 20_001));
    }
    for (i, n) in buckets.iter().enumerate() {
        let share = *n as f64 / ids.len() as f64;
        assert!((share - 0.1).abs() < 0.01, "decile {i} holds {share:.4}");
    }
    assert!(moved > ids.len() * 99 / 100, "the salt reshuffles: {moved}");
    assert_eq!(jitter(&ids[0], Duration::ZERO, 1), Duration::ZERO);
    assert_eq!(jitter(&ids[0], Duration::from_nanos(1), 1), Duration::ZERO);
    assert!(jitter(&ids[0], Duration::MAX, 1) < Duration::from_nanos(u64::MAX));
}
