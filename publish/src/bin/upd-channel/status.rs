//! `upd-channel status`: a channel's releases with their rollout state and share of the fleet now.

use std::path::PathBuf;

use anyhow::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use upd_channels::manifest::{Manifest, Release};
use upd_channels::name::Name;
use upd_publish::repo::Repo;

use crate::common;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel to describe.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
}

/// The flags of a release as words: ` paused withdrawn redirect_to=V barrier` (empty if none).
pub fn flags(r: &Release) -> String {
    let mut out = String::new();
    for (on, word) in [(r.paused, " paused"), (r.withdrawn, " withdrawn")] {
        if on {
            out.push_str(word);
        }
    }
    if let Some(to) = &r.redirect_to {
        out.push_str(&format!(" redirect_to={to}"));
    }
    if r.barrier {
        out.push_str(" barrier");
    }
    out
}

/// The rollout state of a release at `now`, in words.
pub fn rollout_state(r: &Release, now: DateTime<Utc>) -> String {
    let Some(rollout) = &r.rollout else {
        return "no waves: every machine".to_string();
    };
    let steps: Vec<String> = rollout
        .steps
        .iter()
        .map(|s| format!("{}h:{}%", s.after_hours, s.percent))
        .collect();
    let start = rollout.start.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut text = format!(
        "rollout {:.1}% of the fleet now (from {start}, steps {})",
        rollout.share_at(now),
        steps.join(" ")
    );
    if r.paused {
        text.push_str(", paused: no new machine starts");
    }
    text
}

/// One release as JSON for `--json`.
fn release_json(r: &Release, now: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "version": r.version.to_string(),
        "paused": r.paused,
        "withdrawn": r.withdrawn,
        "barrier": r.barrier,
        "redirect_to": r.redirect_to.as_ref().map(ToString::to_string),
        "rollout": r.rollout,
        "share_now": r.rollout.as_ref().map_or(100.0, |x| x.share_at(now)),
    })
}

/// Whether the draft differs from the signed manifest in anything a machine would see.
fn unsigned_changes(draft: &Manifest, published: Option<&Manifest>) -> bool {
    published.is_none_or(|p| p.releases != draft.releases)
}

/// Prints the draft's releases, and whether the draft is what is signed.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let now = Utc::now();
    let draft = repo.load_draft(&args.channel)?;
    let published = repo.published_manifest(&args.channel)?;
    let changes = unsigned_changes(&draft, published.as_ref());
    if args.json {
        let value = serde_json::json!({
            "channel": draft.channel.as_str(),
            "published_serial": published.as_ref().map(|p| p.serial),
            "published_expires": published.as_ref().map(|p| p.expires),
            "unsigned_changes": changes,
            "releases": draft.releases.iter().map(|r| release_json(r, now)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match &published {
        Some(p) => println!(
            "channel {}: published serial {}, expires {}; {}",
            draft.channel,
            p.serial,
            p.expires.to_rfc3339_opts(SecondsFormat::Secs, true),
            if changes {
                "the draft has unsigned changes (run `upd-channel sign`)"
            } else {
                "the draft is signed"
            }
        ),
        None => println!("channel {}: never signed", draft.channel),
    }
    for r in &draft.releases {
        println!(
            "  release {}{}: {}",
            r.version,
            flags(r),
            rollout_state(r, now)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use upd_channels::manifest::{Rollout, RolloutStep};

    use super::*;

    fn release() -> Release {
        let text = r#"{"version":"2.0.0","os":{"identity":{"id":"testos","architecture":"x86-64"},
            "image":{"path":"images/os/testos-2.0.0.raw","size":1,"sha256":"00000000000000000000000000000000000000000000000000000000000000aa"}}}"#;
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn flags_and_share_are_spelled_out() {
        // A paused, withdrawn, redirected barrier halfway through a 0→100 % day of waves.
        let mut r = release();
        assert_eq!(flags(&r), "");
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(rollout_state(&r, start), "no waves: every machine");
        r.rollout = Some(Rollout {
            start,
            steps: vec![RolloutStep {
                after_hours: 24.0,
                percent: 100.0,
            }],
        });
        (r.paused, r.withdrawn, r.barrier) = (true, true, true);
        r.redirect_to = Some("1.0.0".parse().unwrap());
        assert_eq!(flags(&r), " paused withdrawn redirect_to=1.0.0 barrier");
        let noon = start + chrono::Duration::hours(12);
        assert_eq!(
            rollout_state(&r, noon),
            "rollout 50.0% of the fleet now (from 2026-01-01T00:00:00Z, steps 24h:100%), paused: no new machine starts"
        );
        assert!(rollout_state(&r, start - chrono::Duration::hours(1)).starts_with("rollout 0.0%"));
    }
}
