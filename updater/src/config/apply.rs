//! One `KEY=VALUE` assignment applied over the settings so far: the keys in groups, each value
//! parsed and checked by `values`, an empty value putting the key back to its default.

use std::path::PathBuf;
use std::time::Duration;

use super::{values, ConfigError, Entry, Settings};
use crate::rules::window::Window;

impl Settings {
    /// Apply one assignment over the settings so far: each group of keys below takes its own, and
    /// a key no group takes is an `EXTENSION_<name>` switch or unknown.
    pub(super) fn apply(&mut self, e: &Entry) -> Result<(), ConfigError> {
        let d = Settings::default();
        let taken = self.apply_channel(e, &d)?
            || self.apply_paths(e, &d)?
            || self.apply_reboot(e, &d)?
            || self.apply_transfer(e, &d)?
            || self.apply_os(e, &d)?;
        if taken {
            return Ok(());
        }
        self.apply_extension_switch(e)
    }

    /// What the machine follows: `SERVER`, `CHANNEL`, `GROUP`, `EXTENSIONS`. False: not one of these keys.
    fn apply_channel(&mut self, e: &Entry, d: &Settings) -> Result<bool, ConfigError> {
        match e.key.as_str() {
            "SERVER" => {
                let urls = opt(e, values::http_urls)?.unwrap_or_default();
                let mut urls = urls.into_iter();
                self.server = urls.next();
                self.mirrors = urls.collect();
            }
            "CHANNEL" => self.channel = val(e, d.channel.clone(), values::name)?,
            "GROUP" => self.group = val(e, d.group.clone(), values::name)?,
            "EXTENSIONS" => {
                let items = e.value.split_whitespace().map(values::extension_item);
                self.extensions = items.collect::<Result<_, _>>().map_err(|x| bad(e, x))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The machine paths and the sysext binary. False: not one of these keys.
    fn apply_paths(&mut self, e: &Entry, d: &Settings) -> Result<bool, ConfigError> {
        let path = |default: &PathBuf| val(e, default.clone(), values::abs_path);
        match e.key.as_str() {
            "STORE_DIR" => self.store_dir = path(&d.store_dir)?,
            "LINK_DIR" => self.link_dir = path(&d.link_dir)?,
            "STATE_DIR" => self.state_dir = path(&d.state_dir)?,
            "KEYS_DIR" => {
                self.keys_dirs = val(e, d.keys_dirs.clone(), |v| {
                    v.split_whitespace().map(values::abs_path).collect()
                })?;
            }
            "MACHINE_ID_PATH" => self.machine_id_path = path(&d.machine_id_path)?,
            "SYSEXT_BIN" => self.sysext_bin = path(&d.sysext_bin)?,
            "HEALTH_DIR" => self.health_dir = path(&d.health_dir)?,
            "REPORT_TOKEN_FILE" => self.report_token_file = opt(e, values::abs_path)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// When and how the machine reboots. False: not one of these keys.
    fn apply_reboot(&mut self, e: &Entry, d: &Settings) -> Result<bool, ConfigError> {
        let v = e.value.as_str();
        match e.key.as_str() {
            "REBOOT_STRATEGY" => self.reboot_strategy = val(e, d.reboot_strategy, str::parse)?,
            "REBOOT_WINDOW" => {
                self.reboot_window = opt(e, |v| v.parse::<Window>().map_err(|w| w.to_string()))?;
            }
            "FLEET_LOCK_URL" => self.fleet_lock_url = opt(e, values::http_url)?,
            "REPORT_URL" => self.report_url = opt(e, values::http_url)?,
            "ETCD_ENDPOINTS" => {
                let urls = v.split_whitespace().map(values::http_url);
                self.etcd_endpoints = urls.collect::<Result<_, _>>().map_err(|x| bad(e, x))?;
            }
            "ETCD_LOCK_SLOTS" => {
                self.etcd_lock_slots = val(e, d.etcd_lock_slots, |v| values::int_in(v, 1, 1000))?;
            }
            "REBOOT_COMMAND" => {
                self.reboot_command = val(e, d.reboot_command.clone(), |v| {
                    Ok(v.split_whitespace().map(String::from).collect())
                })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Downloads, the store's retention, the place in rollouts and the start delay. False: not one of these keys.
    fn apply_transfer(&mut self, e: &Entry, d: &Settings) -> Result<bool, ConfigError> {
        match e.key.as_str() {
            "PARALLEL_DOWNLOADS" => {
                self.parallel_downloads =
                    val(e, d.parallel_downloads, |v| values::int_in(v, 1, 16))?;
            }
            "CONNECT_TIMEOUT_SECS" => {
                self.connect_timeout = val(e, d.connect_timeout, |v| values::seconds(v, 600))?;
            }
            "STALL_TIMEOUT_SECS" => {
                self.stall_timeout = val(e, d.stall_timeout, |v| values::seconds(v, 3600))?;
            }
            "RETRIES" => self.retries = val(e, d.retries, |v| values::int_in(v, 0, 20))?,
            "RANGES_PER_REQUEST" => {
                self.ranges_per_request =
                    val(e, d.ranges_per_request, |v| values::int_in(v, 1, 64))?;
            }
            "RETENTION" => self.retention = val(e, d.retention, |v| values::int_in(v, 0, 32))?,
            "WARINESS" => self.wariness = val(e, d.wariness, values::fraction)?,
            "UPDATE_JITTER_SECS" => {
                self.update_jitter = val(e, d.update_jitter, |v| {
                    values::int_in(v, 0u64, 86400)
                        .map(Duration::from_secs)
                        .map_err(|x| format!("{x} (seconds, 0 for none)"))
                })?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The OS slots: the disk, its labels and how the booted one is told. False: not one of these keys.
    fn apply_os(&mut self, e: &Entry, d: &Settings) -> Result<bool, ConfigError> {
        let v = e.value.as_str();
        match e.key.as_str() {
            "DISK" => self.disk = opt(e, values::abs_path)?,
            "SLOT_LABELS" => self.slot_labels = val(e, d.slot_labels.clone(), values::slot_labels)?,
            "KERNEL_CMDLINE" => {
                self.kernel_cmdline = val(e, d.kernel_cmdline.clone(), values::abs_path)?;
            }
            "BOOTED_SLOT" => self.booted_slot = (!v.is_empty()).then(|| v.to_string()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `EXTENSION_<name>=` enables (with a version requirement) or disables one extension; any other
    /// key is unknown.
    fn apply_extension_switch(&mut self, e: &Entry) -> Result<(), ConfigError> {
        let k = e.key.as_str();
        match k.strip_prefix("EXTENSION_").map(values::name) {
            Some(Ok(name)) => match opt(e, values::extension_switch)?.flatten() {
                Some(req) => _ = self.extensions.insert(name, req),
                None => _ = self.extensions.remove(&name),
            },
            Some(Err(expected)) => {
                return Err(bad(e, format!("the key to name an extension: {expected}")))
            }
            None => {
                return Err(ConfigError::UnknownKey {
                    origin: e.origin.clone(),
                    key: k.to_string(),
                })
            }
        }
        Ok(())
    }
}

/// The error for `e`: its value is not what the key takes (`expected`).
fn bad(e: &Entry, expected: String) -> ConfigError {
    ConfigError::BadValue {
        origin: e.origin.clone(),
        key: e.key.clone(),
        value: e.value.clone(),
        expected,
    }
}

/// Parse `e`'s value, or give `default` back for an empty value.
fn val<T>(
    e: &Entry,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    Ok(opt(e, parse)?.unwrap_or(default))
}

/// Parse `e`'s value, or `None` for an empty value.
fn opt<T>(e: &Entry, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>, ConfigError> {
    if e.value.is_empty() {
        return Ok(None);
    }
    parse(&e.value).map(Some).map_err(|x| bad(e, x))
}
