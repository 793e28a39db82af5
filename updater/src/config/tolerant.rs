//! The tolerant load, for `upd boot` and `upd mark-good`: a configuration error that does not say
//! where upd's files and slots are is reported and left out instead of stopping the command, so a
//! typo in upd.conf never degrades a boot or sends a healthy OS back.

use std::path::Path;

use super::{layer_files, raw, ConfigError, Entry, RebootStrategy, Root, Settings};

/// The keys that say where the state, the store, the links, the slots and the health checks are.
/// `upd boot` and `upd mark-good` cannot guess them: a bad value of one of these stays an error.
pub const LOCATION_KEYS: [&str; 8] = [
    "STATE_DIR",
    "STORE_DIR",
    "LINK_DIR",
    "DISK",
    "SLOT_LABELS",
    "KERNEL_CMDLINE",
    "BOOTED_SLOT",
    "HEALTH_DIR",
];

impl ConfigError {
    /// The key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::BadValue { key, .. } => Some(key),
            ConfigError::Incomplete { .. } => Some("REBOOT_STRATEGY"),
            ConfigError::ReportToken { .. } => Some("REPORT_URL"),
            ConfigError::Io(_) | ConfigError::Syntax { .. } => None,
        }
    }

    /// Whether the tolerant load may leave the assignment out and go on.
    fn tolerable(&self) -> bool {
        match self {
            ConfigError::Io(_) => false,
            ConfigError::Syntax { .. } | ConfigError::UnknownKey { .. } => true,
            ConfigError::BadValue { key, .. } => !LOCATION_KEYS.contains(&key.as_str()),
            ConfigError::Incomplete { .. } | ConfigError::ReportToken { .. } => true,
        }
    }
}

impl Settings {
    /// Like [`Settings::load`], but every malformed line, unknown key or bad value of a key
    /// outside [`LOCATION_KEYS`] is left out (the setting keeps its earlier value) and returned
    /// beside the settings; a reboot strategy without what it needs falls back to `off`. An
    /// unreadable file or a bad location value is still the error.
    pub fn load_tolerant(
        root: &Root,
        config_file: Option<&Path>,
        overrides: &[String],
    ) -> Result<(Settings, Vec<ConfigError>), ConfigError> {
        let mut lines = Vec::new();
        for file in layer_files(root)? {
            lines.extend(raw::read_lines(&file)?);
        }
        if let Some(f) = config_file {
            lines.extend(raw::read_lines(f)?);
        }
        lines.extend(raw::parse_overrides(overrides)?.into_iter().map(Ok));
        let mut ignored = Vec::new();
        let mut entries = Vec::new();
        for line in lines {
            match line {
                Ok(e) => entries.push(e),
                Err(e) => ignored.push(e),
            }
        }
        let s = Settings::from_entries_tolerant(&entries, &mut ignored)?;
        Ok((s, ignored))
    }

    /// Apply `entries` in order over the defaults, leaving out (and adding to `ignored`) each one
    /// that is tolerable; the first intolerable one is the error.
    pub fn from_entries_tolerant(
        entries: &[Entry],
        ignored: &mut Vec<ConfigError>,
    ) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        let mut strategy_origin = None;
        for e in entries {
            match s.apply(e) {
                Ok(()) if e.key == "REBOOT_STRATEGY" => strategy_origin = Some(e.origin.clone()),
                Ok(()) => {}
                Err(err) if err.tolerable() => ignored.push(err),
                Err(err) => return Err(err),
            }
        }
        if let Some(origin) = strategy_origin {
            if let Err(err) = s.check_strategy(origin) {
                s.reboot_strategy = RebootStrategy::Off;
                ignored.push(err);
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::{parse_lines, Origin};
    use super::*;

    fn tolerant(text: &str) -> Result<(Settings, Vec<ConfigError>), ConfigError> {
        let origin = |line| Origin::File {
            file: "/etc/upd/upd.conf".into(),
            line,
        };
        let (mut entries, mut ignored) = (Vec::new(), Vec::new());
        for l in parse_lines(text, origin) {
            match l {
                Ok(e) => entries.push(e),
                Err(e) => ignored.push(e),
            }
        }
        let s = Settings::from_entries_tolerant(&entries, &mut ignored)?;
        Ok((s, ignored))
    }

    #[test]
    fn a_typo_is_left_out_and_named() {
        // Issue 10, defect 4: `SERVR=` made `upd boot` fail.
        let (s, ignored) = tolerant(
            "SERVR=http://x/\nLINK_DIR=/run/ext\nno equals\nRETRIES=many\nREBOOT_STRATEGY=window\n",
        )
        .unwrap();
        assert_eq!(s.link_dir, Path::new("/run/ext"));
        assert_eq!(s.retries, Settings::default().retries);
        assert_eq!(s.reboot_strategy, RebootStrategy::Off);
        let said: Vec<String> = ignored.iter().map(ToString::to_string).collect();
        assert_eq!(said.len(), 4, "{said:?}");
        assert!(said[0].contains("upd.conf:3"), "{said:?}");
        assert!(
            said[1].contains("upd.conf:1: unknown key SERVR"),
            "{said:?}"
        );
        assert!(said[2].contains("upd.conf:4") && said[2].contains("RETRIES"));
        assert!(said[3].contains("REBOOT_WINDOW"), "{said:?}");
    }

    #[test]
    fn a_bad_location_is_still_an_error() {
        for bad in ["STATE_DIR=relative", "DISK=disk.img", "SLOT_LABELS=A"] {
            let err = tolerant(bad).unwrap_err();
            assert!(matches!(err, ConfigError::BadValue { .. }), "{bad}: {err}");
        }
        assert!(tolerant("DISK=/dev/vda\nHEALTH_DIR=/etc/h\n")
            .unwrap()
            .1
            .is_empty());
    }
}
