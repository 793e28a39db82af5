//! The KEY=VALUE configuration and REBOOT_WINDOW: what `upd config` prints reads back as the
//! same settings; a window's canonical spelling reads back as the same window.

use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Timelike as _};
use upd::config::{parse_lines, parse_text, render_line, Origin, Root, Settings, KEYS};
use upd::rules::window::Window;

fn origin(line: usize) -> Origin {
    Origin::File {
        file: "/etc/upd/upd.conf".into(),
        line,
    }
}

/// One configuration file: parsed, validated, printed as `upd config` prints it (every key,
/// with a trailing `# source` comment), parsed again: the same settings. The tolerant load
/// agrees with the strict one on a valid file. Every path re-rooted stays under the root.
pub fn config(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    let root = Root::new("/r/oot");
    for line in text.lines().take(4) {
        assert!(root.join(Path::new(line)).starts_with("/r/oot"), "{line:?}");
    }
    let lines = parse_lines(text, origin);
    let Ok(entries) = parse_text(text, origin) else {
        return;
    };
    assert_eq!(lines.len(), entries.len());
    let Ok(s) = Settings::from_entries(&entries) else {
        return;
    };
    let mut ignored = Vec::new();
    let tolerant = Settings::from_entries_tolerant(&entries, &mut ignored).expect("valid");
    assert!(ignored.is_empty() && tolerant == s);
    let printed: String = KEYS
        .iter()
        .map(|k| {
            let v = s.show(k);
            let line = render_line(k, &v).unwrap_or_else(|| panic!("{k}={v:?} cannot be written"));
            format!("{line}  # /etc/upd/upd.conf:1\n")
        })
        .collect();
    let again = parse_text(&printed, origin).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    let back = Settings::from_entries(&again).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(back, s, "printed as\n{printed}");
}

/// A `REBOOT_WINDOW` value: its canonical spelling parses to the same window and is a fixed
/// point; the next opening after any instant is inside the window and within a week.
pub fn window(data: &[u8]) {
    let (stamp, rest) = match data.split_first_chunk::<4>() {
        Some((s, r)) => (i64::from(u32::from_le_bytes(*s)), r),
        None => return,
    };
    let Some(text) = super::text(rest) else {
        return;
    };
    let Ok(w) = text.parse::<Window>() else {
        return;
    };
    let canonical = w.to_string();
    let back: Window = canonical.parse().expect("the canonical spelling parses");
    assert_eq!(back, w, "{canonical}");
    assert_eq!(back.to_string(), canonical);
    let local: NaiveDateTime = DateTime::from_timestamp(stamp * 60, 0)
        .expect("in range")
        .naive_utc();
    let next = w.next_start(local);
    assert!(
        w.contains(next),
        "{canonical}: next start {next} after {local} is outside"
    );
    assert!(next >= local.with_nanosecond(0).unwrap_or(local) && (next - local).num_days() <= 7);
}
