//! The machine root (`--root DIR`): re-roots absolute machine paths under a directory without letting `..` out.

use std::path::{Component, Path, PathBuf};

/// The directory that stands for `/` on the machine upd manages (`/` itself in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// A root at `dir` (as given by `--root`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// The real root, `/`.
    pub fn host() -> Self {
        Root(PathBuf::from("/"))
    }

    /// The directory standing for `/`.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// Whether this is the real `/` (paths are then used as they are).
    pub fn is_host(&self) -> bool {
        self.0 == Path::new("/")
    }

    /// Re-root the machine path `p` under this root. `..` is resolved lexically and never climbs
    /// above the root; a relative `p` is taken from the root too.
    pub fn join(&self, p: &Path) -> PathBuf {
        let mut rel: Vec<&std::ffi::OsStr> = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(s) => rel.push(s),
                Component::ParentDir => {
                    rel.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        let mut out = self.0.clone();
        out.extend(rel);
        out
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerooting_never_climbs_out() {
        let r = Root::new("/tmp/m");
        assert_eq!(
            r.join(Path::new("/etc/upd/upd.conf")),
            Path::new("/tmp/m/etc/upd/upd.conf")
        );
        assert_eq!(
            r.join(Path::new("/../../etc/shadow")),
            Path::new("/tmp/m/etc/shadow")
        );
        assert_eq!(
            r.join(Path::new("/var/lib/../../../x")),
            Path::new("/tmp/m/x")
        );
        assert_eq!(r.join(Path::new("var/./lib")), Path::new("/tmp/m/var/lib"));
        assert_eq!(
            Root::host().join(Path::new("/etc/../etc/x")),
            Path::new("/etc/x")
        );
        assert!(Root::host().is_host() && !r.is_host());
    }
}
