//! Rollout waves over a simulated fleet: shares, monotonicity, reshuffling, wariness, edges.

use crate::version::OsVersion;
use chrono::{DateTime, Duration, TimeZone, Utc};

use super::*;
use crate::manifest::{Rollout, RolloutStep};

const FLEET: usize = 100_000;

/// A seeded SplitMix64, so that the simulated fleet is the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` machine ids as systemd writes them: 32 lowercase hex digits.
fn machine_ids(n: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| format!("{:016x}{:016x}", rng.next(), rng.next()))
        .collect()
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap()
}

fn at_hours(h: f64) -> DateTime<Utc> {
    start() + Duration::milliseconds((h * 3_600_000.0) as i64)
}

fn schedule(steps: &[(f64, f64)]) -> Rollout {
    Rollout {
        start: start(),
        steps: steps
            .iter()
            .map(|&(after_hours, percent)| RolloutStep {
                after_hours,
                percent,
            })
            .collect(),
    }
}

/// A typical schedule: 1 % at once, 10 % after a day, half after two, all after three.
fn waves() -> Rollout {
    schedule(&[(0.0, 1.0), (24.0, 10.0), (48.0, 50.0), (72.0, 100.0)])
}

fn v(s: &str) -> OsVersion {
    OsVersion::parse(s).unwrap()
}

fn positions(ids: &[String], release: &str) -> Vec<f64> {
    let release = v(release);
    ids.iter()
        .map(|id| fleet_position(id, "stable", &release))
        .collect()
}

fn percent_eligible(r: &Rollout, positions: &[f64], now: DateTime<Utc>) -> f64 {
    let n = positions
        .iter()
        .filter(|&&p| eligible(Some(r), p, now))
        .count();
    n as f64 * 100.0 / positions.len() as f64
}

// A fleet of 100,000 machines follows the schedule within half a percentage point at each
// step and between steps.
#[test]
fn fleet_share_follows_the_schedule() {
    let r = waves();
    let pos = positions(&machine_ids(FLEET, 1), "2.0.0");
    let rows = [
        (-1.0, 0.0),
        (0.0, 1.0),
        (12.0, 5.5),
        (24.0, 10.0),
        (36.0, 30.0),
        (48.0, 50.0),
        (60.0, 75.0),
        (72.0, 100.0),
        (500.0, 100.0),
    ];
    for (h, target) in rows {
        assert!(
            (r.share_at(at_hours(h)) - target).abs() < 1e-9,
            "share at {h} h"
        );
        let got = percent_eligible(&r, &pos, at_hours(h));
        // The figure for the record: `cargo test -p upd-channels rollout -- --nocapture`.
        eprintln!("at {h:>5} h: schedule {target:>5.1} %, eligible {got:>7.3} % of 100000");
        assert!(
            (got - target).abs() <= 0.5,
            "at {h} h: {got:.3} % eligible, schedule says {target} %"
        );
    }
}

// Every machine of the fleet, checked every 30 minutes from before the start to past the
// end, never goes from eligible back to not eligible; with wariness too.
#[test]
fn eligibility_never_goes_back() {
    let r = waves();
    let pos = positions(&machine_ids(FLEET, 2), "2.0.0");
    let grid: Vec<DateTime<Utc>> = (-4..=160).map(|i| at_hours(f64::from(i) * 0.5)).collect();
    let mut checked = 0usize;
    for (i, &p) in pos.iter().enumerate() {
        let p = effective_position(p, (i % 5) as f64 / 4.0);
        let mut was = false;
        for &t in &grid {
            let now = eligible(Some(&r), p, t);
            assert!(!was || now, "position {p} lost eligibility at {t}");
            was = now;
        }
        checked += usize::from(was);
    }
    assert_eq!(checked, FLEET, "at 100 % every machine is eligible");
}

// Two releases draw independent samples: at 50 % each, about a quarter of the fleet is in
// the first half of both.
#[test]
fn a_new_release_reshuffles_the_fleet() {
    let ids = machine_ids(FLEET, 3);
    let (a, b) = (positions(&ids, "2.0.0"), positions(&ids, "2.1.0"));
    let r = waves();
    let half = at_hours(48.0);
    let both = a
        .iter()
        .zip(&b)
        .filter(|(&pa, &pb)| eligible(Some(&r), pa, half) && eligible(Some(&r), pb, half))
        .count();
    let got = both as f64 * 100.0 / FLEET as f64;
    assert!((got - 25.0).abs() <= 1.0, "{got:.3} % eligible for both");
    let other_channel = fleet_position(&ids[0], "beta", &v("2.0.0"));
    assert_ne!(other_channel, a[0], "the channel is part of the draw");
}

// For positions across the range, eligible_from names the first millisecond at which
// eligible() says yes, and None where the schedule never gets there.
#[test]
fn eligible_from_agrees_with_eligible() {
    let capped = schedule(&[(2.0, 20.0), (2.0, 40.0), (10.0, 80.0)]);
    for r in [waves(), capped] {
        for p in positions(&machine_ids(2_000, 4), "2.0.0") {
            if let Some(t) = r.eligible_from(p) {
                assert!(eligible(Some(&r), p, t), "{p} not eligible at {t}");
                let before = t - Duration::milliseconds(1);
                assert!(!eligible(Some(&r), p, before), "{p} eligible before {t}");
            } else {
                let last = r.steps.last().unwrap().percent;
                assert!(p * 100.0 > last, "{p} within the final {last} % but None");
                assert!(!eligible(Some(&r), p, at_hours(1e6)));
            }
        }
    }
}

// The most wary machine waits for 100 %, and a schedule that stops short never takes it.
#[test]
fn full_wariness_waits_for_the_whole_fleet() {
    let r = waves();
    let last = effective_position(0.0, 1.0);
    assert_eq!(last, 1.0);
    assert_eq!(r.eligible_from(last), Some(at_hours(72.0)));
    assert!(!eligible(Some(&r), last, at_hours(71.99)));
    assert!(eligible(Some(&r), last, at_hours(72.0)));
    let short = schedule(&[(0.0, 10.0), (48.0, 99.0)]);
    assert_eq!(short.eligible_from(last), None);
    assert!(!eligible(Some(&short), last, at_hours(1e5)));
}

// Wariness moves positions later, monotonically, and never out of [0, 1].
#[test]
fn wariness_formula() {
    assert_eq!(effective_position(0.3, 0.0), 0.3);
    assert!((effective_position(0.2, 0.5) - 0.6).abs() < 1e-12);
    let grid: Vec<f64> = (0..=20).map(|i| f64::from(i) / 20.0).collect();
    for &p in &grid {
        for pair in grid.windows(2) {
            let (lo, hi) = (
                effective_position(p, pair[0]),
                effective_position(p, pair[1]),
            );
            assert!(lo <= hi && (0.0..=1.0).contains(&hi), "p {p} w {pair:?}");
            assert!(effective_position(pair[0], p) <= effective_position(pair[1], p));
        }
    }
    // Out of range or NaN inputs are clamped, NaN towards the careful end.
    assert_eq!(effective_position(0.5, 7.0), 1.0);
    assert_eq!(effective_position(0.5, -1.0), 0.5);
    assert_eq!(effective_position(-3.0, 0.0), 0.0);
    assert_eq!(effective_position(0.5, f64::NAN), 1.0);
    assert_eq!(effective_position(f64::NAN, 0.0), 1.0);
}

// The position is deterministic, in [0, 1), normalises the id as systemd writes it, and its
// encoding is unambiguous (moving a byte between fields changes it).
#[test]
fn fleet_position_is_a_stable_hash() {
    let id = "0123456789abcdef0123456789abcdef";
    let p = fleet_position(id, "stable", &v("1.2.3"));
    assert!((0.0..1.0).contains(&p));
    assert_eq!(p, fleet_position(id, "stable", &v("1.2.3")));
    assert_eq!(
        p,
        fleet_position(&format!(" {}\n", id.to_uppercase()), "stable", &v("1.2.3"))
    );
    assert_ne!(p, fleet_position(id, "stable", &v("1.2.4")));
    assert_ne!(
        fleet_position("ab", "c", &v("1.0.0")),
        fleet_position("a", "bc", &v("1.0.0"))
    );
    assert!((0.0..1.0).contains(&fleet_position("", "stable", &v("1.0.0"))));
    assert_eq!(unit_interval(&[0xff; 32]), 1.0 - 2f64.powi(-53));
    assert_eq!(unit_interval(&[0; 32]), 0.0);
}

// Schedule shapes: ramp from 0 % at start, a step at 0 h, two steps at one hour (a jump),
// the last step held; no rollout admits everyone; nothing is admitted before start.
#[test]
fn schedule_edges() {
    let ramp = schedule(&[(10.0, 50.0)]);
    assert_eq!(ramp.share_at(start()), 0.0);
    assert!((ramp.share_at(at_hours(5.0)) - 25.0).abs() < 1e-9);
    assert_eq!(ramp.share_at(at_hours(99.0)), 50.0);
    let jump = schedule(&[(0.0, 5.0), (4.0, 5.0), (4.0, 60.0)]);
    assert_eq!(jump.share_at(start()), 5.0);
    assert_eq!(jump.share_at(at_hours(3.999)), 5.0);
    assert_eq!(jump.share_at(at_hours(4.0)), 60.0);
    assert_eq!(jump.eligible_from(0.3), Some(at_hours(4.0)));
    assert_eq!(jump.eligible_from(0.01), Some(start()));
    assert_eq!(jump.share_at(start() - Duration::seconds(1)), 0.0);
    assert!(!eligible(Some(&jump), 0.0, start() - Duration::seconds(1)));
    assert!(eligible(None, 0.999, start() - Duration::days(365)));
}

// Odd inputs neither panic nor admit: NaN and out-of-range positions, a step so far away
// that no date can hold it.
#[test]
fn odd_inputs() {
    let r = waves();
    assert_eq!(r.eligible_from(f64::NAN), None);
    assert!(!eligible(Some(&r), f64::NAN, at_hours(1e4)));
    assert_eq!(r.eligible_from(1.5), None);
    assert_eq!(r.eligible_from(-0.5), Some(start()));
    let far = schedule(&[(1e300, 100.0)]);
    assert!(far.share_at(at_hours(1e6)) < 1e-200);
    assert_eq!(far.eligible_from(0.5), None);
    assert_eq!(far.eligible_from(0.0), Some(start()));
}
