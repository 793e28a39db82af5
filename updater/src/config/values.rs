//! Typed configuration values: names, the reboot strategy, and the parsers that check each value.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use semver::VersionReq;

pub use upd_channels::name::Name;

/// A channel, group or extension name, in the manifest's alphabet (one newtype for both).
pub fn name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| {
        format!("a name of 1-128 characters from [A-Za-z0-9._-], not starting with '.' ({e})")
    })
}

/// When and how a machine reboots into a staged OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebootStrategy {
    /// Stage only and signal that a reboot is needed.
    Off,
    /// Reboot as soon as the new OS is staged.
    Immediate,
    /// Reboot only inside the maintenance window (`REBOOT_WINDOW`).
    Window,
    /// Take a slot from a FleetLock server (`FLEET_LOCK_URL`) before rebooting.
    FleetLock,
    /// Take a slot of an etcd reboot semaphore (`ETCD_ENDPOINTS`) before rebooting.
    EtcdLock,
}

impl RebootStrategy {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Immediate => "immediate",
            Self::Window => "window",
            Self::FleetLock => "fleet-lock",
            Self::EtcdLock => "etcd-lock",
        }
    }
}

impl fmt::Display for RebootStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RebootStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" => Self::Off,
            "immediate" => Self::Immediate,
            "window" => Self::Window,
            "fleet-lock" => Self::FleetLock,
            "etcd-lock" => Self::EtcdLock,
            _ => return Err("one of off, immediate, window, fleet-lock, etcd-lock".into()),
        })
    }
}

/// An http or https URL.
pub fn http_url(v: &str) -> Result<Url, String> {
    const EXPECTED: &str = "an http:// or https:// URL";
    let u = Url::parse(v).map_err(|e| format!("{EXPECTED} ({e})"))?;
    match u.scheme() {
        "http" | "https" if u.host().is_some() => Ok(u),
        _ => Err(EXPECTED.into()),
    }
}

/// One or more http(s) URLs separated by white space (a repository and its mirrors).
pub fn http_urls(v: &str) -> Result<Vec<Url>, String> {
    v.split_whitespace().map(http_url).collect()
}

/// An absolute path.
pub fn abs_path(v: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(v);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err("an absolute path".into())
    }
}

/// An integer in `lo..=hi`.
pub fn int_in<T: FromStr + PartialOrd + fmt::Display + Copy>(
    v: &str,
    lo: T,
    hi: T,
) -> Result<T, String> {
    v.parse::<T>()
        .ok()
        .filter(|n| *n >= lo && *n <= hi)
        .ok_or_else(|| format!("an integer from {lo} to {hi}"))
}

/// A number of seconds in `1..=max`, as a duration.
pub fn seconds(v: &str, max: u64) -> Result<Duration, String> {
    int_in(v, 1u64, max)
        .map(Duration::from_secs)
        .map_err(|e| format!("{e} (seconds)"))
}

/// A fraction in `0.0..=1.0`.
pub fn fraction(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| "a number from 0.0 to 1.0".into())
}

/// Two distinct GPT partition labels, space-separated (`USR-A USR-B`).
pub fn slot_labels(v: &str) -> Result<[String; 2], String> {
    let expected =
        || "two different partition labels separated by a space, such as USR-A USR-B".to_string();
    let parts: Vec<&str> = v.split_whitespace().collect();
    match parts[..] {
        [a, b] if a != b && a.len() <= 36 && b.len() <= 36 => Ok([a.to_string(), b.to_string()]),
        _ => Err(expected()),
    }
}

/// A semver requirement for an extension (`*` for any version).
pub fn requirement(v: &str) -> Result<VersionReq, String> {
    VersionReq::parse(v)
        .map_err(|e| format!("a semver requirement such as ~24.0 or >=1.2,<2 ({e})"))
}

/// One item of `EXTENSIONS`: `NAME` or `NAME:REQUIREMENT` (the requirement without spaces).
pub fn extension_item(item: &str) -> Result<(Name, VersionReq), String> {
    let (name, req) = match item.split_once(':') {
        Some((n, r)) => (n, requirement(r)?),
        None => (item, VersionReq::STAR),
    };
    Ok((self::name(name)?, req))
}

/// The value of an `EXTENSION_<name>` key: `off`, `on`, or a semver requirement (which enables it).
pub fn extension_switch(v: &str) -> Result<Option<VersionReq>, String> {
    match v {
        "off" => Ok(None),
        "on" => Ok(Some(VersionReq::STAR)),
        _ => requirement(v)
            .map(Some)
            .map_err(|e| format!("on, off, or {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Name::new("docker-24.0_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(Name::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn value_parsers() {
        assert!(http_url("https://updates.example.com/ch").is_ok());
        assert!(
            http_url("ftp://x/").is_err()
                && http_url("file:///x").is_err()
                && http_url("x").is_err()
        );
        assert!(abs_path("relative/p").is_err());
        assert_eq!(int_in("16", 1u32, 16), Ok(16));
        assert!(int_in("17", 1u32, 16).unwrap_err().contains("1 to 16"));
        assert!(fraction("1.5").is_err() && fraction("nan").is_err());
        assert_eq!(
            extension_item("docker:~24.0").unwrap().1,
            VersionReq::parse("~24.0").unwrap()
        );
        assert_eq!(extension_item("hello").unwrap().1, VersionReq::STAR);
        assert!(extension_item("a/b").is_err() && extension_item("x:~~1").is_err());
        assert_eq!(extension_switch("off"), Ok(None));
        assert!(extension_switch("maybe")
            .unwrap_err()
            .starts_with("on, off, or"));
        assert_eq!("fleet-lock".parse(), Ok(RebootStrategy::FleetLock));
    }
}
