//! `upd-channel withdraw`: a release no machine installs any more, optionally redirected.

use anyhow::Result;
use upd_channels::version::OsVersion;
use upd_publish::repo::{withdraw, withdraw_build, BuildRef};

use crate::common;

/// Arguments of `withdraw`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    release: common::ReleaseRef,
    /// A safe release of the channel that machines on the withdrawn one go back to.
    #[arg(long, conflicts_with = "ext")]
    redirect_to: Option<OsVersion>,
    /// Withdraw one extension build of the release instead (NAME=VERSION): no machine takes
    /// it, and machines running it switch to the newest other build of that extension.
    #[arg(long = "ext", value_name = "NAME=VERSION")]
    ext: Option<BuildRef>,
}

/// Marks the release withdrawn in the draft (validated) and writes it.
pub fn run(args: Args) -> Result<()> {
    let r = &args.release;
    if let Some(b) = &args.ext {
        let path = r.edit_draft(|draft, v| Ok(withdraw_build(draft, v, b)?))?;
        println!(
            "build {b} of release {} withdrawn; wrote {}",
            r.version,
            path.display()
        );
        return Ok(());
    }
    let path = r.edit_draft(|draft, v| Ok(withdraw(draft, v, args.redirect_to.clone())?))?;
    match &args.redirect_to {
        Some(to) => println!(
            "release {} withdrawn, machines directed to {to}; wrote {}",
            r.version,
            path.display()
        ),
        None => println!("release {} withdrawn; wrote {}", r.version, path.display()),
    }
    Ok(())
}
