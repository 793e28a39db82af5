//! The drop-in that `upd ext enable|disable NAME` writes: one `EXTENSION_<name>=on|off|REQ` line per extension.

use std::path::Path;

use super::{layer_files, raw, ConfigError, Name, Origin, Root, Settings};
use upd_durable::atomic_write;

/// The machine path of the drop-in owned by `upd ext enable|disable`.
pub const EXTENSIONS_DROPIN: &str = "/etc/upd/upd.conf.d/50-extensions.conf";

const HEADER: &str = "# Written by `upd ext enable|disable`; edit with care, later drop-ins and upd.conf.d/5[1-9]* win.\n";

/// Enable or disable extension `name` by rewriting the drop-in atomically, keeping its other lines.
/// `current` is the effective configuration: nothing is written when it already agrees. The drop-in
/// first just forgets its own line for `name` (so disable-then-enable restores a vendor pin); only if
/// the other files then disagree does it add `EXTENSION_<name>=on|off`. Returns the settings the
/// files now give (without command-line overrides): a later drop-in may still win over this one.
pub fn set_extension_enabled(
    root: &Root,
    name: &Name,
    enabled: bool,
    current: &Settings,
) -> Result<Settings, ConfigError> {
    if enabled == current.extensions.contains_key(name) {
        return Ok(current.clone());
    }
    let path = root.join(Path::new(EXTENSIONS_DROPIN));
    let mut lines = existing_lines(&path, name)?;
    let mut text = render(&lines);
    let mut after = settings_with(root, &path, &text)?;
    if after.extensions.contains_key(name) != enabled {
        lines.push(format!(
            "EXTENSION_{name}=\"{}\"",
            if enabled { "on" } else { "off" }
        ));
        text = render(&lines);
        after = settings_with(root, &path, &text)?;
    }
    atomic_write(&path, text.as_bytes(), 0o644)?;
    Ok(after)
}

/// The machine path of the drop-in owned by `upd channel NAME`.
pub const CHANNEL_DROPIN: &str = "/etc/upd/upd.conf.d/50-channel.conf";

/// Follow channel `name` from now on by writing its drop-in atomically. Returns the settings the
/// files now give, and whether a later file still overrides the channel (nothing is written then).
pub fn set_channel(root: &Root, name: &Name) -> Result<(Settings, bool), ConfigError> {
    let path = root.join(Path::new(CHANNEL_DROPIN));
    let text = format!(
        "# Written by `upd channel`; later drop-ins and upd.conf.d/5[1-9]* win.\nCHANNEL=\"{name}\"\n"
    );
    let after = settings_with(root, &path, &text)?;
    if after.channel != *name {
        return Ok((after, true));
    }
    atomic_write(&path, text.as_bytes(), 0o644)?;
    Ok((after, false))
}

fn render(lines: &[String]) -> String {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    format!("{HEADER}{body}")
}

/// The assignments already in the drop-in, re-serialised, minus those for `name`.
fn existing_lines(path: &Path, name: &Name) -> Result<Vec<String>, ConfigError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let ours = format!("EXTENSION_{name}");
    let entries = raw::read_file(path)?;
    Ok(entries
        .into_iter()
        .filter(|e| e.key != ours)
        .map(|e| format!("{}=\"{}\"", e.key, e.value))
        .collect())
}

/// The settings the files under `root` would give if `dropin` held `text` (no I/O on `dropin`).
fn settings_with(root: &Root, dropin: &Path, text: &str) -> Result<Settings, ConfigError> {
    let mut files = layer_files(root)?;
    if !files.iter().any(|f| f == dropin) {
        // Its directory is the last layer, so its place is among the trailing files of that directory.
        let at = files
            .iter()
            .position(|f| f.parent() == dropin.parent() && f.as_path() > dropin);
        files.insert(at.unwrap_or(files.len()), dropin.to_path_buf());
    }
    let mut entries = Vec::new();
    for f in files {
        if f == dropin {
            entries.extend(raw::parse_text(text, |line| Origin::File {
                file: f.clone(),
                line,
            })?);
        } else {
            entries.extend(raw::read_file(&f)?);
        }
    }
    Settings::from_entries(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_disable_roundtrip_through_the_layers() {
        // A machine whose vendor config enables two extensions, one pinned.
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let vendor = root.join(Path::new("/usr/lib/upd/upd.conf"));
        std::fs::create_dir_all(vendor.parent().unwrap()).unwrap();
        std::fs::write(&vendor, "EXTENSIONS=hello docker:~24.0\n").unwrap();
        let load = || Settings::load(&root, None, &[]).unwrap();
        let (hello, docker, zed) = (
            Name::new("hello").unwrap(),
            Name::new("docker").unwrap(),
            Name::new("zed").unwrap(),
        );

        let dropin = root.join(Path::new(EXTENSIONS_DROPIN));
        let lines = || {
            std::fs::read_to_string(&dropin)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count()
        };

        assert!(!set_extension_enabled(&root, &hello, false, &load())
            .unwrap()
            .extension_enabled("hello"));
        assert!(set_extension_enabled(&root, &zed, true, &load())
            .unwrap()
            .extension_enabled("zed"));
        let before = std::fs::metadata(&dropin).unwrap().modified().unwrap();
        set_extension_enabled(&root, &zed, true, &load()).unwrap();
        assert_eq!(
            std::fs::metadata(&dropin).unwrap().modified().unwrap(),
            before,
            "a no-op must not write"
        );
        let s = load();
        assert_eq!(
            s.extensions.keys().map(Name::as_str).collect::<Vec<_>>(),
            ["docker", "zed"]
        );
        assert_eq!(lines(), 2);

        // Disable then re-enable docker: the vendor's pin comes back, and the drop-in forgets docker.
        set_extension_enabled(&root, &docker, false, &load()).unwrap();
        assert!(!load().extension_enabled("docker"));
        assert_eq!(lines(), 3);
        let after = set_extension_enabled(&root, &docker, true, &load()).unwrap();
        assert_eq!(
            after.extensions[&docker],
            semver::VersionReq::parse("~24.0").unwrap()
        );
        assert_eq!(load(), after);
        assert_eq!(lines(), 2);

        // A later drop-in that disables zed wins over ours, and the returned settings say so.
        std::fs::write(dropin.with_file_name("60-site.conf"), "EXTENSION_zed=off\n").unwrap();
        set_extension_enabled(&root, &zed, false, &s).unwrap();
        let s = set_extension_enabled(&root, &zed, true, &load()).unwrap();
        assert!(!s.extension_enabled("zed"));
    }
}
