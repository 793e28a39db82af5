//! OS versions as systemd orders them: the [UAPI version format].
//!
//! A release's version is its OS's `IMAGE_VERSION` (else `VERSION_ID`): Debian's `12`,
//! Fedora's `39`, Ubuntu's `24.04`, Flatcar's `4081.2.0` and semver's `1.2.3` are all
//! versions. They are ordered by the rule `systemd-analyze compare-versions` applies
//! (`strverscmp_improved()`): numeric segments compare as numbers (leading zeros do not count), `~` marks a pre-release (`2.0.0~rc1` < `2.0.0`), and a `-`, `^` or `.` suffix is
//! newer than the end of the string. Note that semver pre-releases written with `-`
//! (`2.0.0-rc.1`) sort *after* `2.0.0` under this rule, exactly as systemd sorts them; write
//! them with `~`. Extension versions stay semver (see `manifest::ExtBuild`), because users write
//! requirements on them (`docker:~24.0`).
//!
//! The comparison is written here from the specification rather than taken from the
//! `uapi-version` crate: checked against the real `systemd-analyze compare-versions` (the e2e
//! suite's `versions` table), that crate 0.4.0 orders `01` after `1` and `2024.01` after
//! `2024.1`, where systemd counts them equal.
//!
//! [UAPI version format]: https://uapi-group.org/specifications/specs/version_format_specification/

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest OS version accepted.
pub const MAX_VERSION_LEN: usize = 64;

/// Why a string is not an OS version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Empty.
    #[error("empty OS version")]
    Empty,
    /// Longer than [`MAX_VERSION_LEN`].
    #[error("OS version '{0}…' is longer than {MAX_VERSION_LEN} characters")]
    TooLong(String),
    /// A character outside `[A-Za-z0-9._~^+-]`.
    #[error("OS version '{version}' contains {ch:?}; only A-Z a-z 0-9 . _ ~ ^ + - are allowed")]
    BadChar {
        /// The offending version.
        version: String,
        /// The first character not allowed.
        ch: char,
    },
    /// Does not start with a letter or digit.
    #[error("OS version '{0}' must start with a letter or a digit")]
    BadStart(String),
}

/// An OS release version, ordered as systemd orders versions.
///
/// Two versions that systemd considers equal (`1.0` and `1.00`) are equal here too; a
/// manifest may not list both.
#[derive(Debug, Clone)]
pub struct OsVersion(String);

impl OsVersion {
    /// Check `s` and make it a version.
    ///
    /// # Errors
    /// When `s` is empty, too long, starts with neither a letter nor a digit, or holds a
    /// character that no os-release version, UAPI version or semver uses.
    pub fn parse(s: &str) -> Result<Self, VersionError> {
        let Some(first) = s.chars().next() else {
            return Err(VersionError::Empty);
        };
        if s.len() > MAX_VERSION_LEN {
            let head: String = s.chars().take(MAX_VERSION_LEN).collect();
            return Err(VersionError::TooLong(head));
        }
        if let Some(ch) = s.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '^' | '+' | '-'))
        }) {
            return Err(VersionError::BadChar {
                version: s.to_owned(),
                ch,
            });
        }
        if !first.is_ascii_alphanumeric() {
            return Err(VersionError::BadStart(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for OsVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl PartialOrd for OsVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for OsVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OsVersion {}

impl FromStr for OsVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, VersionError> {
        Self::parse(s)
    }
}

impl fmt::Display for OsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for OsVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for OsVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The characters that carry meaning in a version; every other one only separates.
fn significant(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.')
}

/// The length of the leading run of `a` whose bytes satisfy `class`.
fn run(a: &[u8], class: fn(&u8) -> bool) -> usize {
    a.iter().take_while(|c| class(c)).count()
}

/// When `a` or `b` starts with the marker `sep`: the side with it alone is older; when both
/// have it, it is stripped from both and the comparison goes on (`None`).
fn marker(a: &mut &[u8], b: &mut &[u8], sep: u8) -> Option<Ordering> {
    match (a.first() == Some(&sep), b.first() == Some(&sep)) {
        (false, false) => None,
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        (true, true) => {
            (*a, *b) = (&a[1..], &b[1..]);
            None
        }
    }
}

/// systemd's order of two version strings, segment by segment (the UAPI version format).
fn compare(mut a: &[u8], mut b: &[u8]) -> Ordering {
    loop {
        a = &a[a.iter().take_while(|c| !significant(**c)).count()..];
        b = &b[b.iter().take_while(|c| !significant(**c)).count()..];
        // '~' is older than anything, even the end of the other version: a pre-release.
        if let Some(o) = marker(&mut a, &mut b, b'~') {
            return o;
        }
        // At the end of either: the longer one is newer.
        if a.is_empty() || b.is_empty() {
            return a.len().cmp(&b.len());
        }
        // '-' (version-release), '^' (patched) and '.' (point release): the side that has the
        // separator where the other has a segment is older.
        for sep in [b'-', b'^', b'.'] {
            if let Some(o) = marker(&mut a, &mut b, sep) {
                return o;
            }
        }
        let (o, na, nb) = segment(a, b);
        if o != Ordering::Equal {
            return o;
        }
        (a, b) = (&a[na..], &b[nb..]);
    }
}

/// Compares the segments that `a` and `b` start with; returns the order and their lengths.
/// A numeric segment is newer than an alphabetic one; numbers compare by value (leading zeros
/// do not count), words byte by byte, a longer word newer than its prefix.
fn segment(a: &[u8], b: &[u8]) -> (Ordering, usize, usize) {
    let (na, nb) = (run(a, u8::is_ascii_digit), run(b, u8::is_ascii_digit));
    if na > 0 || nb > 0 {
        if (na > 0) != (nb > 0) {
            return ((na > 0).cmp(&(nb > 0)), na, nb);
        }
        let (x, y) = (
            &a[run(a, |c| *c == b'0')..na],
            &b[run(b, |c| *c == b'0')..nb],
        );
        return (x.len().cmp(&y.len()).then_with(|| x.cmp(y)), na, nb);
    }
    let (la, lb) = (
        run(a, u8::is_ascii_alphabetic),
        run(b, u8::is_ascii_alphabetic),
    );
    let n = la.min(lb);
    (a[..n].cmp(&b[..n]).then(la.cmp(&lb)), la, lb)
}

#[cfg(test)]
mod tests;
