//! `upd-channel add-release`: a release read from its images, added to a channel's draft.

use std::path::PathBuf;

use anyhow::{Context, Result};
use semver::Version;
use upd_channels::name::Name;
use upd_channels::osrelease::native_architecture;
use upd_channels::version::OsVersion;
use upd_publish::repo::{Added, ExtSource, Repo};

use crate::common;

/// Arguments of `add-release`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The repository directory.
    #[arg(long)]
    repo: PathBuf,
    /// The channel whose draft gets the release.
    #[arg(long, value_parser = common::channel)]
    channel: Name,
    /// The OS (USR) image; its os-release gives ID, VERSION_ID and the version.
    #[arg(long)]
    os_image: PathBuf,
    /// The release version (default: IMAGE_VERSION, else VERSION_ID of the image).
    #[arg(long)]
    version: Option<OsVersion>,
    /// An extension build, NAME=PATH[:EXTVERSION] (default version: its SYSEXT_VERSION_ID).
    #[arg(long = "ext", value_parser = parse_ext)]
    exts: Vec<ExtSource>,
    /// The systemd architecture of the OS build.
    #[arg(long, default_value_t = native_architecture().to_string())]
    arch: String,
}

/// `NAME=PATH[:EXTVERSION]`; the name must be a safe file name.
fn parse_ext(s: &str) -> Result<ExtSource, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=PATH[:EXTVERSION]"))?;
    let name = Name::new(name).map_err(|e| format!("extension name: {e}"))?;
    let (image, version) = match rest.rsplit_once(':') {
        Some((path, v)) if Version::parse(v).is_ok() => (path, Some(Version::parse(v).unwrap())),
        Some((_, v)) if !v.contains('/') => {
            return Err(format!(
                "extension {name}: version '{v}' is not a semantic version"
            ))
        }
        _ => (rest, None),
    };
    Ok(ExtSource {
        name,
        image: PathBuf::from(image),
        version,
    })
}

/// Checks everything first, then imports the images and writes the draft once.
pub fn run(args: Args) -> Result<()> {
    let repo = Repo::new(&args.repo);
    let (release, added) = repo
        .add_release(
            &args.channel,
            &args.os_image,
            args.version.as_ref(),
            &args.exts,
            &args.arch,
        )
        .with_context(|| format!("adding a release to channel '{}'", args.channel))?;
    match added {
        Added::Release => println!(
            "added release {} ({} {}, {} bytes) to the draft of '{}'",
            release.version,
            release.os.identity.id,
            release.os.image.path,
            release.os.image.size,
            args.channel
        ),
        Added::Extensions(n) => println!(
            "added {n} extension build(s) to release {} in the draft of '{}'",
            release.version, args.channel
        ),
    }
    for e in &release.extensions {
        println!(
            "  extension {} {} -> {} ({} bytes)",
            e.name, e.version, e.image.path, e.image.size
        );
    }
    println!(
        "sign it with: upd-channel sign --repo {} --channel {} --key KEY",
        args.repo.display(),
        args.channel
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ext;

    #[test]
    fn ext_argument_forms() {
        // NAME=PATH, NAME=PATH:VERSION, and names that could climb out of the store.
        let e = parse_ext("hello=/tmp/h.raw").unwrap();
        assert_eq!((e.name.as_str(), e.version), ("hello", None));
        let e = parse_ext("hello=/tmp/h.raw:1.2.3").unwrap();
        assert_eq!(e.image.to_str(), Some("/tmp/h.raw"));
        assert_eq!(e.version.unwrap().to_string(), "1.2.3");
        assert!(parse_ext("../x=/tmp/h.raw")
            .unwrap_err()
            .contains("extension name"));
        assert!(parse_ext("hello=/tmp/h.raw:1.x")
            .unwrap_err()
            .contains("not a semantic version"));
        assert!(parse_ext("hello").is_err());
    }
}
