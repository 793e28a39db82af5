//! The machine upd manages: its root directory, settings, paths, host identity and owned links.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use upd_channels::osrelease::{native_architecture, HostIdentity, OsRelease};
use upd_channels::version::OsVersion;

use crate::config::{Root, Settings};
use crate::host::sysext::Sysext;
use crate::state::LinkSet;
use upd_durable::PathError;

/// What went wrong reading the machine itself.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// Neither os-release file could be read.
    #[error("cannot read the host's os-release ({path}): {source}")]
    OsRelease {
        /// The last path tried.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// os-release is not usable.
    #[error("host os-release {path} is invalid: {why}")]
    BadOsRelease {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A link in the link directory that upd did not create.
    #[error("{path} is not a link into upd's store ({target}); upd never touches what it did not create")]
    NotOwned {
        /// The link (or file).
        path: PathBuf,
        /// What it is or points at.
        target: String,
    },
    /// I/O on a named path.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The machine: root directory plus validated settings.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `--root`.
    pub root: Root,
    /// Validated configuration.
    pub settings: Settings,
}

/// The running OS as systemd-sysext sees it.
#[derive(Debug, Clone)]
pub struct Host {
    /// Identity for the compatibility rules.
    pub identity: HostIdentity,
    /// OS version: `IMAGE_VERSION`, else `VERSION_ID`, ordered as systemd orders versions.
    pub version: OsVersion,
    /// The raw os-release.
    pub os_release: OsRelease,
}

impl Machine {
    /// A machine at `root` with `settings`.
    pub fn new(root: Root, settings: Settings) -> Self {
        Self { root, settings }
    }

    /// The store directory, re-rooted.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join(&self.settings.store_dir)
    }

    /// The link directory, re-rooted.
    pub fn link_dir(&self) -> PathBuf {
        self.root.join(&self.settings.link_dir)
    }

    /// The state directory, re-rooted.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(&self.settings.state_dir)
    }

    /// Where extension `name`'s image file `file` lives in the store, re-rooted.
    pub fn store_file(&self, name: &str, file: &str) -> PathBuf {
        self.store_dir().join(name).join(file)
    }

    /// The link for extension `name`, re-rooted.
    pub fn link_path(&self, name: &str) -> PathBuf {
        self.link_dir().join(format!("{name}.raw"))
    }

    /// The relative link target from the link directory to a store file; relative so that it
    /// resolves the same under `--root` and on the real machine.
    pub fn link_target(&self, name: &str, file: &str) -> PathBuf {
        let depth = self
            .settings
            .link_dir
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .count();
        let mut t: PathBuf = std::iter::repeat_n("..", depth).collect();
        let store = self
            .settings
            .store_dir
            .strip_prefix("/")
            .unwrap_or(&self.settings.store_dir);
        t.push(store);
        t.push(name);
        t.push(file);
        t
    }

    /// The store file a link target points at (machine path), if it points into the store.
    fn owned(&self, target: &Path) -> Option<PathBuf> {
        let joined = if target.is_absolute() {
            target.to_path_buf()
        } else {
            self.settings.link_dir.join(target)
        };
        let mut norm = PathBuf::from("/");
        for c in joined.components() {
            match c {
                Component::Normal(s) => norm.push(s),
                Component::ParentDir => {
                    norm.pop();
                }
                _ => {}
            }
        }
        norm.starts_with(&self.settings.store_dir).then_some(norm)
    }

    /// The current target of extension `name`'s link: `None` if absent, an error if something
    /// upd does not own is in the way.
    pub fn current_link(&self, name: &str) -> Result<Option<PathBuf>, MachineError> {
        let path = self.link_path(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PathError::new("stat", &path, e).into()),
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(MachineError::NotOwned {
                    path,
                    target: "a regular file or directory".into(),
                })
            }
            Ok(_) => {}
        }
        let target = fs::read_link(&path).map_err(|e| PathError::new("read link", &path, e))?;
        match self.owned(&target) {
            Some(_) => Ok(Some(target)),
            None => Err(MachineError::NotOwned {
                path,
                target: target.display().to_string(),
            }),
        }
    }

    /// Current targets of the links of `names`.
    pub fn current_links<'a>(
        &self,
        names: impl IntoIterator<Item = &'a String>,
    ) -> Result<LinkSet, MachineError> {
        names
            .into_iter()
            .map(|n| Ok((n.clone(), self.current_link(n)?)))
            .collect()
    }

    /// Make the links exactly `set` (only links upd owns), each switched atomically by rename.
    pub fn apply_links(
        &self,
        set: &LinkSet,
        mut after_each: impl FnMut(),
    ) -> Result<(), MachineError> {
        upd_durable::create_dir_durable(&self.link_dir())?;
        for (name, target) in set {
            let link = self.link_path(name);
            let now = self.current_link(name)?;
            if now.as_ref() == target.as_ref() {
                continue;
            }
            if let Some(t) = target {
                upd_durable::symlink_atomic(t, &link)?;
            } else {
                fs::remove_file(&link).map_err(|e| PathError::new("remove link", &link, e))?;
                upd_durable::sync_dir(&self.link_dir())?;
            }
            after_each();
        }
        Ok(())
    }

    /// The re-rooted store file a link target points at.
    pub fn resolve_target(&self, target: &Path) -> Option<PathBuf> {
        self.owned(target).map(|p| self.root.join(&p))
    }

    /// The running OS: os-release from `ROOT/etc/os-release`, else `ROOT/usr/lib/os-release`.
    pub fn host(&self) -> Result<Host, MachineError> {
        let mut last = None;
        for p in ["etc/os-release", "usr/lib/os-release"] {
            let path = self.root.dir().join(p);
            match fs::read_to_string(&path) {
                Ok(text) => {
                    let mut host = host_from(&path, &text)?;
                    // The systemd that merges here is the root's own; unreadable counts as
                    // unknown, which applies the strictest merge rules.
                    host.identity.systemd =
                        upd_image::systemd_version_under(self.root.dir()).unwrap_or(None);
                    return Ok(host);
                }
                Err(e) => last = Some((path, e)),
            }
        }
        let (path, source) = last.expect("tried two paths");
        Err(MachineError::OsRelease { path, source })
    }

    /// The real systemd-sysext for this root.
    pub fn sysext(&self) -> Sysext {
        Sysext::new(&self.settings.sysext_bin, self.root.dir())
    }

    /// The machine id (empty string if unreadable: waves then treat the machine as one of many).
    pub fn machine_id(&self) -> String {
        fs::read_to_string(self.root.join(&self.settings.machine_id_path))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

/// An OS's version as upd counts it: `IMAGE_VERSION`, else `VERSION_ID`.
pub fn os_version(os: &OsRelease) -> Option<&str> {
    os.get_nonempty("IMAGE_VERSION")
        .or(os.get_nonempty("VERSION_ID"))
}

fn host_from(path: &Path, text: &str) -> Result<Host, MachineError> {
    let bad = |why: String| MachineError::BadOsRelease {
        path: path.to_path_buf(),
        why,
    };
    let os = OsRelease::parse(text).map_err(|e| bad(e.to_string()))?;
    let identity = HostIdentity::from_os_release(&os, native_architecture())
        .map_err(|e| bad(e.to_string()))?;
    let v =
        os_version(&os).ok_or_else(|| bad("neither IMAGE_VERSION nor VERSION_ID is set".into()))?;
    let version =
        OsVersion::parse(v).map_err(|e| bad(format!("OS version '{v}' is not a version: {e}")))?;
    Ok(Host {
        identity,
        version,
        os_release: os,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(dir: &Path) -> Machine {
        Machine::new(Root::new(dir), Settings::default())
    }

    #[test]
    fn link_targets_are_relative_and_owned() {
        let d = tempfile::tempdir().unwrap();
        let m = machine(d.path());
        let t = m.link_target("hello", "hello-1.0.0.raw");
        assert_eq!(
            t,
            Path::new("../../var/lib/upd/images/hello/hello-1.0.0.raw")
        );
        assert_eq!(
            m.resolve_target(&t).unwrap(),
            d.path().join("var/lib/upd/images/hello/hello-1.0.0.raw")
        );
        assert!(m.resolve_target(Path::new("../../srv/x.raw")).is_none());
    }

    #[test]
    fn foreign_entries_are_never_owned() {
        let d = tempfile::tempdir().unwrap();
        let m = machine(d.path());
        fs::create_dir_all(m.link_dir()).unwrap();
        fs::write(m.link_path("admin"), b"x").unwrap();
        std::os::unix::fs::symlink("/srv/mine.raw", m.link_path("other")).unwrap();
        assert!(matches!(
            m.current_link("admin"),
            Err(MachineError::NotOwned { .. })
        ));
        assert!(matches!(
            m.current_link("other"),
            Err(MachineError::NotOwned { .. })
        ));
        assert_eq!(m.current_link("absent").unwrap(), None);
        let mut set = LinkSet::new();
        set.insert("hello".into(), Some(m.link_target("hello", "h.raw")));
        m.apply_links(&set, || {}).unwrap();
        assert_eq!(m.current_links(set.keys()).unwrap(), set);
        set.insert("hello".into(), None);
        m.apply_links(&set, || {}).unwrap();
        assert!(!m.link_path("hello").exists());
        assert!(m.link_path("admin").exists());
    }

    #[test]
    fn host_version_from_os_release() {
        let h = host_from(
            Path::new("x"),
            "ID=updos\nVERSION_ID=1\nIMAGE_VERSION=1.2.3\n",
        )
        .unwrap();
        assert_eq!(h.version.to_string(), "1.2.3");
        // Stock Debian: VERSION_ID=12 alone is a version, as systemd counts versions.
        let h = host_from(Path::new("x"), "ID=debian\nVERSION_ID=12\n").unwrap();
        assert_eq!(h.version.to_string(), "12");
        let e = host_from(Path::new("x"), "ID=updos\nVERSION_ID=\"1 beta\"\n").unwrap_err();
        assert!(e.to_string().contains("'1 beta' is not a version"), "{e}");
    }
}
