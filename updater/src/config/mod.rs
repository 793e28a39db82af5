//! Layered KEY=VALUE configuration: /usr/lib < /run < /etc, drop-ins in name order, validated settings.
//!
//! Files, lowest to highest priority (each under `--root`): `/usr/lib/upd/upd.conf`,
//! `/usr/lib/upd/upd.conf.d/*.conf`, `/run/upd/upd.conf`, `/run/upd/upd.conf.d/*.conf`,
//! `/etc/upd/upd.conf`, `/etc/upd/upd.conf.d/*.conf`, then the `--config FILE`, then `KEY=VALUE`
//! overrides from the command line. Every assignment is applied in that order, so the later one
//! wins; an empty value (`KEY=`) puts a key back to its default. See `systemd/upd/upd.conf.example`.

mod apply;
mod dropin;
mod explain;
mod raw;
mod root;
mod tolerant;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use semver::VersionReq;

pub use dropin::{set_channel, set_extension_enabled, CHANNEL_DROPIN, EXTENSIONS_DROPIN};
pub use explain::{explain, Effective, KEYS};
pub use raw::{parse_lines, parse_text, render_line, Entry, Origin};
pub use root::Root;
pub use tolerant::LOCATION_KEYS;
pub use values::{Name, RebootStrategy};

use crate::rules::window::Window;
use upd_durable::PathError;

/// The configuration directories, lowest priority first; each has `upd.conf` and `upd.conf.d/`.
pub const LAYERS: [&str; 3] = ["/usr/lib/upd", "/run/upd", "/etc/upd"];

/// What can go wrong while reading or checking the configuration; each error names where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A configuration file or directory could not be read.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A line is not `KEY=VALUE`.
    #[error("{origin}: {why}: {line:?}")]
    Syntax {
        /// Where.
        origin: Origin,
        /// The offending line.
        line: String,
        /// What is wrong with it.
        why: String,
    },
    /// A key upd does not know (a typo, most likely).
    #[error("{origin}: unknown key {key}")]
    UnknownKey {
        /// Where.
        origin: Origin,
        /// The key as written.
        key: String,
    },
    /// A value that does not fit its key.
    #[error("{origin}: {key}={value:?}: expected {expected}")]
    BadValue {
        /// Where.
        origin: Origin,
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What the key takes.
        expected: String,
    },
    /// `REPORT_URL` set without `REPORT_TOKEN_FILE`.
    #[error("{origin}: REPORT_URL is set but REPORT_TOKEN_FILE is not: the report server needs the fleet's token")]
    ReportToken {
        /// Where REPORT_URL was set.
        origin: Origin,
    },
    /// A reboot strategy chosen without the setting it needs.
    #[error("{origin}: REBOOT_STRATEGY={strategy} needs {needs} to be set")]
    Incomplete {
        /// Where the strategy was chosen.
        origin: Origin,
        /// The strategy, as written.
        strategy: String,
        /// The missing key.
        needs: &'static str,
    },
}

/// The validated settings. Paths are absolute machine paths: re-root them with [`Root::join`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `SERVER`: base URL of the channel repository (http or https), the first of the list;
    /// none means "not configured".
    pub server: Option<Url>,
    /// `SERVER`'s further URLs: mirrors of the same repository, tried in order after `server`.
    pub mirrors: Vec<Url>,
    /// `CHANNEL`: the channel followed (default `stable`).
    pub channel: Name,
    /// `EXTENSIONS` / `EXTENSION_<name>`: enabled extensions and the versions they may take.
    pub extensions: BTreeMap<Name, VersionReq>,
    /// `STORE_DIR`: the image store (default `/var/lib/upd/images`).
    pub store_dir: PathBuf,
    /// `LINK_DIR`: where the active set's links live (default `/etc/extensions`).
    pub link_dir: PathBuf,
    /// `STATE_DIR`: state file and lock (default `/var/lib/upd`).
    pub state_dir: PathBuf,
    /// `KEYS_DIR`: trusted-root directories in preference order; the first that exists is used.
    pub keys_dirs: Vec<PathBuf>,
    /// `REBOOT_STRATEGY`: off, immediate, window, fleet-lock or etcd-lock (default `off`).
    pub reboot_strategy: RebootStrategy,
    /// `REBOOT_WINDOW`: the maintenance window of the window strategy, parsed when loaded.
    pub reboot_window: Option<Window>,
    /// `FLEET_LOCK_URL`: base URL of the FleetLock server.
    pub fleet_lock_url: Option<Url>,
    /// `ETCD_ENDPOINTS`: etcd client URLs, space-separated.
    pub etcd_endpoints: Vec<Url>,
    /// `GROUP`: the reboot group (default `default`).
    pub group: Name,
    /// `PARALLEL_DOWNLOADS`: concurrent downloads, 1..=16 (default 4).
    pub parallel_downloads: usize,
    /// `CONNECT_TIMEOUT_SECS`: TCP+TLS connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// `STALL_TIMEOUT_SECS`: a transfer receiving nothing this long fails (default 30 s).
    pub stall_timeout: Duration,
    /// `RETRIES`: further attempts after a failed transfer, 0..=20 (default 3).
    pub retries: u32,
    /// `RANGES_PER_REQUEST`: byte ranges a delta download asks in one HTTP request, 1..=64
    /// (default 32; 1: single ranges only).
    pub ranges_per_request: usize,
    /// `MACHINE_ID_PATH`: the machine-id file (default `/etc/machine-id`).
    pub machine_id_path: PathBuf,
    /// `RETENTION`: older generations (beyond active, pending and previous) whose images stay in
    /// the store, 0..=32 (default 0).
    pub retention: usize,
    /// `SYSEXT_BIN`: the systemd-sysext binary, a host path never re-rooted (default `/usr/bin/systemd-sysext`).
    pub sysext_bin: PathBuf,
    /// `WARINESS`: 0.0 (eager) to 1.0 (late) place in rollout waves (default 0.0).
    pub wariness: f64,
    /// `DISK`: the disk holding the OS slots, a block device or a disk image file; a host path,
    /// never re-rooted. None: OS (A/B) updates are off and only extensions update.
    pub disk: Option<PathBuf>,
    /// `SLOT_LABELS`: the GPT partition labels of the two OS slots (default `USR-A USR-B`).
    pub slot_labels: [String; 2],
    /// `KERNEL_CMDLINE`: where the kernel command line is read (default `/proc/cmdline`).
    pub kernel_cmdline: PathBuf,
    /// `BOOTED_SLOT`: the label of the slot that booted, overriding the kernel command line.
    pub booted_slot: Option<String>,
    /// `REBOOT_COMMAND`: the command the `immediate` strategy runs (default `systemctl reboot`).
    pub reboot_command: Vec<String>,
    /// `ETCD_LOCK_SLOTS`: reboot slots of a group's semaphore when upd creates it (default 1).
    pub etcd_lock_slots: u64,
    /// `UPDATE_JITTER_SECS`: `update --unattended` waits a per-machine delay below this first (default 0).
    pub update_jitter: Duration,
    /// `HEALTH_DIR`: executables that must all succeed before `upd mark-good` (default `/etc/upd/health.d`).
    pub health_dir: PathBuf,
    /// `REPORT_URL`: the fleet report server's base URL; none (the default): no reports are sent.
    pub report_url: Option<Url>,
    /// `REPORT_TOKEN_FILE`: the file holding the fleet's bearer token (mode 0600 or stricter).
    pub report_token_file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            mirrors: Vec::new(),
            channel: Name::new("stable").expect("valid"),
            extensions: BTreeMap::new(),
            store_dir: "/var/lib/upd/images".into(),
            link_dir: "/etc/extensions".into(),
            state_dir: "/var/lib/upd".into(),
            keys_dirs: vec!["/etc/upd/keys".into(), "/usr/share/upd/keys".into()],
            reboot_strategy: RebootStrategy::Off,
            reboot_window: None,
            fleet_lock_url: None,
            etcd_endpoints: Vec::new(),
            group: Name::new("default").expect("valid"),
            parallel_downloads: 4,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            retries: 3,
            ranges_per_request: 32,
            machine_id_path: "/etc/machine-id".into(),
            retention: 0,
            sysext_bin: "/usr/bin/systemd-sysext".into(),
            wariness: 0.0,
            disk: None,
            slot_labels: ["USR-A".into(), "USR-B".into()],
            kernel_cmdline: "/proc/cmdline".into(),
            booted_slot: None,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            health_dir: "/etc/upd/health.d".into(),
            etcd_lock_slots: 1,
            update_jitter: Duration::ZERO,
            report_url: None,
            report_token_file: None,
        }
    }
}

impl Settings {
    /// Read every layer under `root`, then `config_file` (a host path, if given), then the
    /// command-line `overrides`, and validate the result.
    pub fn load(
        root: &Root,
        config_file: Option<&Path>,
        overrides: &[String],
    ) -> Result<Settings, ConfigError> {
        Settings::from_entries(&read_entries(root, config_file, overrides)?)
    }

    /// Apply `entries` in order over the defaults and validate the result (no I/O).
    pub fn from_entries(entries: &[Entry]) -> Result<Settings, ConfigError> {
        let mut s = Settings::default();
        let (mut strategy_origin, mut report_origin) = (None, None);
        for e in entries {
            s.apply(e)?;
            if e.key == "REBOOT_STRATEGY" {
                strategy_origin = Some(e.origin.clone());
            }
            if e.key == "REPORT_URL" {
                report_origin = Some(e.origin.clone());
            }
        }
        if let Some(origin) = strategy_origin {
            s.check_strategy(origin)?;
        }
        match report_origin {
            Some(origin) if s.report_url.is_some() && s.report_token_file.is_none() => {
                return Err(ConfigError::ReportToken { origin })
            }
            _ => {}
        }
        Ok(s)
    }

    /// The trusted-root directory to use under `root`: the first of `keys_dirs` that exists.
    pub fn keys_dir(&self, root: &Root) -> PathBuf {
        let dirs: Vec<PathBuf> = self.keys_dirs.iter().map(|d| root.join(d)).collect();
        dirs.iter()
            .find(|d| d.is_dir())
            .unwrap_or(dirs.last().expect("at least one"))
            .clone()
    }

    /// Whether extension `name` is enabled.
    pub fn extension_enabled(&self, name: &str) -> bool {
        Name::new(name).is_ok_and(|n| self.extensions.contains_key(&n))
    }

    fn check_strategy(&self, origin: Origin) -> Result<(), ConfigError> {
        let needs = match self.reboot_strategy {
            RebootStrategy::Window if self.reboot_window.is_none() => "REBOOT_WINDOW",
            RebootStrategy::FleetLock if self.fleet_lock_url.is_none() => "FLEET_LOCK_URL",
            RebootStrategy::EtcdLock if self.etcd_endpoints.is_empty() => "ETCD_ENDPOINTS",
            _ => return Ok(()),
        };
        let strategy = self.reboot_strategy.to_string();
        Err(ConfigError::Incomplete {
            origin,
            strategy,
            needs,
        })
    }
}

/// The configuration files that exist under `root`, lowest priority first.
pub fn layer_files(root: &Root) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    for layer in LAYERS {
        let dir = root.join(Path::new(layer));
        let main = dir.join("upd.conf");
        if main.is_file() {
            files.push(main);
        }
        files.extend(dropins(&dir.join("upd.conf.d"))?);
    }
    Ok(files)
}

/// The `*.conf` files of a drop-in directory in name order (hidden files skipped; missing directory is empty).
fn dropins(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PathError::new("read directory", dir, e).into()),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| PathError::new("read directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".conf") && !name.starts_with('.') && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The entries of every layer under `root`, then of `config_file` (a host path, if given),
/// then the command-line `overrides`, in the order they apply.
pub(super) fn read_entries(
    root: &Root,
    config_file: Option<&Path>,
    overrides: &[String],
) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::new();
    for file in layer_files(root)? {
        entries.extend(raw::read_file(&file)?);
    }
    if let Some(f) = config_file {
        entries.extend(raw::read_file(f)?);
    }
    entries.extend(raw::parse_overrides(overrides)?);
    Ok(entries)
}

#[cfg(test)]
mod tests;
