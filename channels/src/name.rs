//! Untrusted names and relative paths from manifests, checked at the boundary.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Longest name accepted (an extension, channel or file name).
pub const MAX_NAME_LEN: usize = 128;
/// Longest relative path accepted.
pub const MAX_PATH_LEN: usize = 1024;

/// Why a name or path from a manifest or a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty where something is required.
    #[error("empty name")]
    Empty,
    /// Longer than the limit.
    #[error("name '{0}…' is longer than {MAX_NAME_LEN} characters")]
    TooLong(String),
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("name '{name}' contains {ch:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar {
        /// The offending name.
        name: String,
        /// The first character not allowed.
        ch: char,
    },
    /// Starts with a dot (hidden entries and `.`/`..` are refused).
    #[error("name '{0}' starts with '.'")]
    LeadingDot(String),
    /// An absolute path.
    #[error("path '{0}' is absolute; only paths relative to the channel are allowed")]
    Absolute(String),
    /// A path with `..`, `.` or an empty component.
    #[error("path '{0}' has a '..', '.' or empty component: it could climb out of the channel")]
    Climbs(String),
    /// A path longer than the limit.
    #[error("path is longer than {MAX_PATH_LEN} characters")]
    PathTooLong,
}

fn check_component(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(s.chars().take(32).collect()));
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            name: s.to_string(),
            ch,
        });
    }
    if s.starts_with('.') {
        return Err(NameError::LeadingDot(s.to_string()));
    }
    Ok(())
}

/// A name in `[A-Za-z0-9._-]`, not empty, not starting with `.`: safe as a file name and a URL segment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Check `s` and wrap it.
    pub fn new(s: &str) -> Result<Self, NameError> {
        check_component(s)?;
        Ok(Self(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A `/`-separated path relative to the channel repository whose every component is a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RelPath(String);

impl RelPath {
    /// Check `s` and wrap it.
    pub fn new(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_PATH_LEN {
            return Err(NameError::PathTooLong);
        }
        if s.starts_with('/') {
            return Err(NameError::Absolute(s.to_string()));
        }
        for comp in s.split('/') {
            match comp {
                "" | "." | ".." => return Err(NameError::Climbs(s.to_string())),
                c => check_component(c)?,
            }
        }
        Ok(Self(s.to_string()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component (a file name).
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// This path under `base`; it cannot leave `base` because no component climbs.
    pub fn under(&self, base: &Path) -> PathBuf {
        self.0.split('/').fold(base.to_path_buf(), |p, c| p.join(c))
    }

    /// This path appended to a base URL (with or without a trailing `/`).
    pub fn url_under(&self, base: &str) -> String {
        format!("{}/{}", base.trim_end_matches('/'), self.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Want = fn(&NameError) -> bool;

    #[test]
    fn names() {
        for ok in ["docker", "docker-24.0_1", "A.b", "x"] {
            assert!(Name::new(ok).is_ok(), "{ok}");
        }
        let cases: &[(&str, Want)] = &[
            ("", |e| *e == NameError::Empty),
            ("..", |e| matches!(e, NameError::LeadingDot(_))),
            (".hidden", |e| matches!(e, NameError::LeadingDot(_))),
            ("a/b", |e| matches!(e, NameError::BadChar { ch: '/', .. })),
            ("a b", |e| matches!(e, NameError::BadChar { ch: ' ', .. })),
            ("dockér", |e| {
                matches!(e, NameError::BadChar { ch: 'é', .. })
            }),
            ("a\0", |e| matches!(e, NameError::BadChar { ch: '\0', .. })),
        ];
        for (input, want) in cases {
            let err = Name::new(input).unwrap_err();
            assert!(want(&err), "{input:?} gave {err:?}");
        }
        assert!(matches!(
            Name::new(&"a".repeat(129)),
            Err(NameError::TooLong(_))
        ));
    }

    #[test]
    fn paths() {
        let p = RelPath::new("images/docker/docker-24.0.raw").unwrap();
        assert_eq!(p.file_name(), "docker-24.0.raw");
        assert_eq!(
            p.under(Path::new("/srv")),
            Path::new("/srv/images/docker/docker-24.0.raw")
        );
        assert_eq!(
            p.url_under("http://h/c/"),
            "http://h/c/images/docker/docker-24.0.raw"
        );
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a/",
            "",
            "a\\..\\b",
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(RelPath::new("/x"), Err(NameError::Absolute(_))));
        assert!(matches!(RelPath::new("a/../b"), Err(NameError::Climbs(_))));
    }

    #[test]
    fn serde_checks_at_the_boundary() {
        assert!(serde_json::from_str::<Name>("\"ok\"").is_ok());
        let err = serde_json::from_str::<RelPath>("\"../../etc/shadow\"").unwrap_err();
        assert!(err.to_string().contains("climb"), "{err}");
    }
}
