//! `upd config`: each effective setting written as the configuration would write it, and where it
//! came from (the default, a file and line, a drop-in, a `--set`).

use std::path::Path;

use serde::Serialize;

use super::{read_entries, ConfigError, Entry, Origin, Root, Settings};

/// Every key upd knows, in the order `upd config` prints them (`EXTENSION_<name>` keys are shown
/// folded into `EXTENSIONS`).
pub const KEYS: [&str; 31] = [
    "SERVER",
    "CHANNEL",
    "EXTENSIONS",
    "GROUP",
    "STORE_DIR",
    "LINK_DIR",
    "STATE_DIR",
    "KEYS_DIR",
    "MACHINE_ID_PATH",
    "SYSEXT_BIN",
    "HEALTH_DIR",
    "REBOOT_STRATEGY",
    "REBOOT_WINDOW",
    "FLEET_LOCK_URL",
    "ETCD_ENDPOINTS",
    "ETCD_LOCK_SLOTS",
    "REBOOT_COMMAND",
    "PARALLEL_DOWNLOADS",
    "CONNECT_TIMEOUT_SECS",
    "STALL_TIMEOUT_SECS",
    "RETRIES",
    "RANGES_PER_REQUEST",
    "RETENTION",
    "WARINESS",
    "UPDATE_JITTER_SECS",
    "DISK",
    "SLOT_LABELS",
    "KERNEL_CMDLINE",
    "BOOTED_SLOT",
    "REPORT_URL",
    "REPORT_TOKEN_FILE",
];

/// One effective setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    /// The key.
    pub key: &'static str,
    /// The value upd uses, as a configuration line would write it (empty: unset).
    pub value: String,
    /// Where it was set: `default`, `FILE:LINE`, `drop-in FILE:LINE` or `--set #N` (for
    /// `EXTENSIONS`, every assignment that changed the set, separated by `, `).
    pub source: String,
}

/// Load the configuration as [`Settings::load`] does and tell each effective value and its source.
pub fn explain(
    root: &Root,
    config_file: Option<&Path>,
    overrides: &[String],
) -> Result<Vec<Effective>, ConfigError> {
    let entries = read_entries(root, config_file, overrides)?;
    let settings = Settings::from_entries(&entries)?;
    Ok(effective(&settings, &entries))
}

/// Each key of [`KEYS`] with its value in `s` and the entries that set it (no I/O).
pub fn effective(s: &Settings, entries: &[Entry]) -> Vec<Effective> {
    KEYS.iter()
        .map(|&key| {
            let setters: Vec<&Entry> = entries
                .iter()
                .filter(|e| {
                    e.key == key || (key == "EXTENSIONS" && e.key.starts_with("EXTENSION_"))
                })
                .collect();
            let source = match (key, setters.last()) {
                (_, None) => "default".to_string(),
                ("EXTENSIONS", Some(_)) => setters
                    .iter()
                    .map(|e| source_of(&e.origin))
                    .collect::<Vec<_>>()
                    .join(", "),
                (_, Some(e)) => source_of(&e.origin),
            };
            Effective {
                key,
                value: s.show(key),
                source,
            }
        })
        .collect()
}

/// Where an assignment was written, in words.
fn source_of(o: &Origin) -> String {
    match o {
        Origin::File { file, .. } if file.parent().is_some_and(|d| d.ends_with("upd.conf.d")) => {
            format!("drop-in {o}")
        }
        Origin::File { .. } => o.to_string(),
        Origin::CommandLine { index } => format!("--set #{index}"),
    }
}

impl Settings {
    /// The value of `key` as a configuration line would write it (empty for unset; unknown keys
    /// are empty too).
    pub fn show(&self, key: &str) -> String {
        let join = |v: Vec<String>| v.join(" ");
        let path = |p: &Path| p.display().to_string();
        match key {
            // The repository and its mirrors, in order: SERVER takes them all.
            "SERVER" => join(
                self.server
                    .iter()
                    .chain(&self.mirrors)
                    .map(ToString::to_string)
                    .collect(),
            ),
            "CHANNEL" => self.channel.to_string(),
            "EXTENSIONS" => join(
                self.extensions
                    .iter()
                    .map(|(n, r)| match r.to_string().as_str() {
                        "*" => n.to_string(),
                        req => format!("{n}:{}", req.replace(' ', "")),
                    })
                    .collect(),
            ),
            "GROUP" => self.group.to_string(),
            "STORE_DIR" => path(&self.store_dir),
            "LINK_DIR" => path(&self.link_dir),
            "STATE_DIR" => path(&self.state_dir),
            "KEYS_DIR" => join(self.keys_dirs.iter().map(|p| path(p)).collect()),
            "MACHINE_ID_PATH" => path(&self.machine_id_path),
            "SYSEXT_BIN" => path(&self.sysext_bin),
            "HEALTH_DIR" => path(&self.health_dir),
            "REPORT_URL" => self
                .report_url
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            "REPORT_TOKEN_FILE" => self
                .report_token_file
                .as_ref()
                .map(|p| path(p))
                .unwrap_or_default(),
            _ => self.show_more(key),
        }
    }

    /// [`Settings::show`] for the reboot, transfer and OS slot keys.
    fn show_more(&self, key: &str) -> String {
        let secs = |d: std::time::Duration| d.as_secs().to_string();
        match key {
            "REBOOT_STRATEGY" => self.reboot_strategy.to_string(),
            "REBOOT_WINDOW" => self
                .reboot_window
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            "FLEET_LOCK_URL" => self
                .fleet_lock_url
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            "ETCD_ENDPOINTS" => {
                let urls: Vec<String> = self
                    .etcd_endpoints
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                urls.join(" ")
            }
            "ETCD_LOCK_SLOTS" => self.etcd_lock_slots.to_string(),
            "REBOOT_COMMAND" => self.reboot_command.join(" "),
            "PARALLEL_DOWNLOADS" => self.parallel_downloads.to_string(),
            "CONNECT_TIMEOUT_SECS" => secs(self.connect_timeout),
            "STALL_TIMEOUT_SECS" => secs(self.stall_timeout),
            "RETRIES" => self.retries.to_string(),
            "RANGES_PER_REQUEST" => self.ranges_per_request.to_string(),
            "RETENTION" => self.retention.to_string(),
            "WARINESS" => self.wariness.to_string(),
            "UPDATE_JITTER_SECS" => secs(self.update_jitter),
            "DISK" => self
                .disk
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "SLOT_LABELS" => self.slot_labels.join(" "),
            "KERNEL_CMDLINE" => self.kernel_cmdline.display().to_string(),
            "BOOTED_SLOT" => self.booted_slot.clone().unwrap_or_default(),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw;

    fn file(path: &str, text: &str) -> Vec<Entry> {
        raw::parse_text(text, |line| Origin::File {
            file: path.into(),
            line,
        })
        .unwrap()
    }

    #[test]
    fn every_value_written_back_reads_the_same() {
        // A configuration that moves every key off its default; what `upd config` prints must
        // load into the same settings (so the printed values are the effective ones).
        let text = "SERVER=https://u.example/r https://m.example/r\nCHANNEL=beta\nEXTENSIONS=a b:~1.2\nGROUP=g\n\
            STORE_DIR=/s\nLINK_DIR=/l\nSTATE_DIR=/st\nKEYS_DIR=/k\nMACHINE_ID_PATH=/m\n\
            SYSEXT_BIN=/x\nHEALTH_DIR=/h\nREBOOT_STRATEGY=etcd-lock\nREBOOT_WINDOW=Mon-Fri 02:00 1h30m\n\
            FLEET_LOCK_URL=http://f/\nETCD_ENDPOINTS=http://e1:2379/ http://e2:2379/\n\
            ETCD_LOCK_SLOTS=3\nREBOOT_COMMAND=/sbin/reboot now\nPARALLEL_DOWNLOADS=2\n\
            CONNECT_TIMEOUT_SECS=5\nSTALL_TIMEOUT_SECS=7\nRETRIES=1\nRANGES_PER_REQUEST=5\nRETENTION=2\nWARINESS=0.5\n\
            UPDATE_JITTER_SECS=60\nDISK=/dev/vda\nSLOT_LABELS=X Y\nKERNEL_CMDLINE=/c\nBOOTED_SLOT=X\n\
            REPORT_URL=https://fleet.example/\nREPORT_TOKEN_FILE=/t\n";
        let s = Settings::from_entries(&file("/etc/upd/upd.conf", text)).unwrap();
        assert_ne!(s, Settings::default());
        let shown = effective(&s, &file("/etc/upd/upd.conf", text));
        let back: String = shown
            .iter()
            .map(|e| format!("{}={}\n", e.key, e.value))
            .collect();
        assert_eq!(
            Settings::from_entries(&file("/x", &back)).unwrap(),
            s,
            "{back}"
        );
        assert!(shown
            .iter()
            .all(|e| e.source.starts_with("/etc/upd/upd.conf:")));
        // And the defaults, written back, are the defaults.
        let d = effective(&Settings::default(), &[]);
        let back: String = d
            .iter()
            .map(|e| format!("{}={}\n", e.key, e.value))
            .collect();
        assert_eq!(
            Settings::from_entries(&file("/x", &back)).unwrap(),
            Settings::default()
        );
        assert!(d.iter().all(|e| e.source == "default"));
    }

    #[test]
    fn sources_name_file_line_dropin_and_set() {
        let mut entries = file("/etc/upd/upd.conf", "CHANNEL=beta\nEXTENSIONS=a\n");
        entries.extend(file(
            "/etc/upd/upd.conf.d/50-ext.conf",
            "\nEXTENSION_b=on\n",
        ));
        entries
            .extend(raw::parse_overrides(&["RETRIES=0".into(), "CHANNEL=alpha".into()]).unwrap());
        let s = Settings::from_entries(&entries).unwrap();
        let shown = effective(&s, &entries);
        let of = |k: &str| shown.iter().find(|e| e.key == k).unwrap().clone();
        assert_eq!(
            (of("CHANNEL").value, of("CHANNEL").source),
            ("alpha".into(), "--set #2".into())
        );
        assert_eq!(of("RETRIES").source, "--set #1");
        assert_eq!(of("EXTENSIONS").value, "a b");
        assert_eq!(
            of("EXTENSIONS").source,
            "/etc/upd/upd.conf:2, drop-in /etc/upd/upd.conf.d/50-ext.conf:2"
        );
        assert_eq!(of("GROUP").source, "default");
    }
}
