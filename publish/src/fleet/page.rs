//! The rollout page (GET /): the channel's status table and an inline SVG chart of machines per
//! booted version over time, failures marked in red. Plain HTML, no script, no external fetch.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::db::{Db, DbError, HistoryRow};
use super::server::DEFAULT_WAVES;
use super::status::{self, FleetStatus};

/// The latest reports the chart replays.
const HISTORY: i64 = 200_000;
/// Points on the time axis.
const BUCKETS: usize = 60;
/// Chart size (px).
const W: f64 = 720.0;
const H: f64 = 240.0;
/// Series colours, cycled (failures are always red).
const COLOURS: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f",
];

/// Render the page of `channel`.
pub async fn render(db: &Db, channel: &str) -> Result<String, DbError> {
    let st = status::status(db, channel, &DEFAULT_WAVES).await?;
    let history = db.history(channel, HISTORY).await?;
    Ok(page(&st, &history))
}

/// Escape text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page (pure).
pub fn page(st: &FleetStatus, history: &[HistoryRow]) -> String {
    let ch = esc(&st.channel);
    let mut h = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>upd fleet: {ch}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}.bad{{color:#d62728;font-weight:bold}}\
         </style></head><body><h1>Channel {ch}</h1>\
         <p id=\"machines\" data-machines=\"{}\">{} machine(s) reporting</p>",
        st.machines, st.machines
    );
    h += &chart(history);
    h += "<h2>Releases</h2><table id=\"releases\"><tr><th>release</th><th>running</th>\
          <th>tried</th><th>staged</th><th>booted</th><th>good</th><th>failed</th>\
          <th>fallen back</th><th>failure share</th></tr>";
    for r in &st.releases {
        let v = esc(&r.version);
        let c = &r.counts;
        let _ = write!(h, "<tr data-release=\"{v}\"><td>{v}</td>");
        for (field, n) in [
            ("running", c.running),
            ("tried", c.tried),
            ("staged", c.staged),
            ("booted", c.booted),
            ("good", c.good),
            ("failed", c.failed),
            ("fallen_back", c.fallen_back),
        ] {
            let class = if n > 0 && (field == "failed" || field == "fallen_back") {
                " class=\"bad\""
            } else {
                ""
            };
            let _ = write!(h, "<td data-field=\"{field}\"{class}>{n}</td>");
        }
        let share = r
            .failure_share
            .map_or("-".into(), |f| format!("{:.1}%", f * 100.0));
        let _ = write!(h, "<td data-field=\"failure_share\">{share}</td></tr>");
    }
    h += "</table></body></html>\n";
    h
}

/// The SVG chart: for each time bucket, machines per booted version (each machine's latest
/// report up to then); red marks where reports carried a failure.
fn chart(history: &[HistoryRow]) -> String {
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        return "<p id=\"chart-empty\">no reports yet</p>".into();
    };
    let (t0, t1) = (first.time_ms, last.time_ms.max(first.time_ms + 1));
    let span = (t1 - t0) as f64;
    let bucket_of = |t: i64| (((t - t0) as f64 / span) * (BUCKETS - 1) as f64).round() as usize;
    let mut latest: HashMap<&str, &str> = HashMap::new();
    let mut series: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut failures = vec![0usize; BUCKETS];
    let mut i = 0;
    for (b, failed) in failures.iter_mut().enumerate() {
        while i < history.len() && bucket_of(history[i].time_ms) <= b {
            let r = &history[i];
            latest.insert(&r.machine_id, &r.os);
            if r.error.is_some() || r.event == "fallback" {
                *failed += 1;
            }
            i += 1;
        }
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for os in latest.values() {
            *counts.entry(os).or_default() += 1;
        }
        for (os, n) in counts {
            series.entry(os).or_insert_with(|| vec![0; BUCKETS])[b] = n;
        }
    }
    let max = series
        .values()
        .flat_map(|v| v.iter().copied())
        .chain(failures.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |b: usize| 40.0 + b as f64 * (W - 60.0) / (BUCKETS - 1) as f64;
    let y = |n: usize| H - 30.0 - n as f64 * (H - 50.0) / max;
    let mut s = format!(
        "<h2>Machines per version over time</h2><svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" \
         width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">\
         <line x1=\"40\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#000\"/>\
         <line x1=\"40\" y1=\"20\" x2=\"40\" y2=\"{0}\" stroke=\"#000\"/>\
         <text x=\"4\" y=\"24\" font-size=\"11\">{2}</text><text x=\"4\" y=\"{0}\" font-size=\"11\">0</text>",
        H - 30.0,
        W - 20.0,
        max as usize
    );
    for (k, (os, v)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let points: Vec<String> = v
            .iter()
            .enumerate()
            .map(|(b, n)| format!("{:.1},{:.1}", x(b), y(*n)))
            .collect();
        let os = esc(os);
        let _ = write!(
            s,
            "<polyline class=\"series\" data-version=\"{os}\" data-last=\"{}\" fill=\"none\" \
             stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{os}</text>",
            v[BUCKETS - 1],
            points.join(" "),
            W - 90.0,
            20.0 + 14.0 * k as f64
        );
    }
    let total: usize = failures.iter().sum();
    let _ = write!(s, "<g id=\"failures\" data-failures=\"{total}\">");
    for (b, n) in failures.iter().enumerate().filter(|(_, n)| **n > 0) {
        let _ = write!(
            s,
            "<circle class=\"failure\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#d62728\">\
             <title>{n} failure report(s)</title></circle>",
            x(b),
            y(*n)
        );
    }
    let _ = write!(
        s,
        "</g><text x=\"40\" y=\"{}\" font-size=\"11\">{}</text><text x=\"{}\" y=\"{}\" \
         font-size=\"11\" text-anchor=\"end\">{}</text></svg>",
        H - 10.0,
        stamp(t0),
        W - 20.0,
        H - 10.0,
        stamp(t1)
    );
    s
}

fn stamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
    })
}
