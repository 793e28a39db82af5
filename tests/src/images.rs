//! Real sysext and USR images (squashfs / erofs) built by code at test time, from a few identity fields.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ring::rand::{SecureRandom, SystemRandom};

/// The filesystem an image is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `mksquashfs` (squashfs-tools).
    Squashfs,
    /// `mkfs.erofs` (erofs-utils; Debian 12's knows only lz4/lz4hc).
    Erofs,
}

/// Identity and content of one system extension image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysextSpec {
    /// Extension name (the image is linked as `NAME.raw`); written as `SYSEXT_ID=`.
    pub name: String,
    /// The extension's own version, written as `SYSEXT_VERSION_ID=` and used in the file name.
    pub version: String,
    /// `ID=` of the host it is built for (or `_any`).
    pub id: String,
    /// `VERSION_ID=` of the host it is built for.
    pub version_id: Option<String>,
    /// `SYSEXT_LEVEL=` it needs (takes precedence over VERSION_ID in systemd's check).
    pub sysext_level: Option<String>,
    /// `ARCHITECTURE=` (systemd spelling, e.g. `x86-64`).
    pub architecture: Option<String>,
    /// `SYSEXT_SCOPE=` (e.g. `system initrd`).
    pub scope: Option<String>,
    /// Suffix of the release file inside the image; `None` means the name (what systemd requires).
    pub release_file_name: Option<String>,
    /// Filesystem of the image.
    pub format: Format,
    /// A program `usr/bin/BIN` that prints TEXT, to prove the extension is merged.
    pub program: Option<(String, String)>,
    /// Bytes of random filler (incompressible) to make the image big.
    pub pad_bytes: u64,
    /// Derive the filler from this seed instead of the system's random generator: two builds
    /// with the same seed share it byte for byte (a minor update, for delta downloads).
    pub filler_seed: Option<u64>,
}

impl SysextSpec {
    /// A squashfs extension `name` at `version` for host `id` / `version_id`, with a program `name` printing
    /// `"<name> <version>"`.
    pub fn new(name: &str, version: &str, id: &str, version_id: &str) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            id: id.to_string(),
            version_id: Some(version_id.to_string()),
            sysext_level: None,
            architecture: None,
            scope: None,
            release_file_name: None,
            format: Format::Squashfs,
            program: Some((name.to_string(), format!("{name} {version}"))),
            pad_bytes: 0,
            filler_seed: None,
        }
    }

    /// The same spec built as erofs.
    pub fn erofs(mut self) -> Self {
        self.format = Format::Erofs;
        self
    }

    /// The bytes of `usr/lib/extension-release.d/extension-release.<release_file_name>` inside the image.
    pub fn release_content(&self) -> Vec<u8> {
        let mut text = format!("ID={}\n", self.id);
        let optional = [
            ("VERSION_ID", &self.version_id),
            ("SYSEXT_LEVEL", &self.sysext_level),
            ("ARCHITECTURE", &self.architecture),
            ("SYSEXT_SCOPE", &self.scope),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                text.push_str(&format!("{key}={}\n", quote(v)));
            }
        }
        text.push_str(&format!(
            "SYSEXT_ID={}\nSYSEXT_VERSION_ID={}\n",
            self.name,
            quote(&self.version)
        ));
        text.into_bytes()
    }

    /// The file name `build_sysext` gives the image: `<name>-<version>.raw` (link it as `<name>.raw`).
    pub fn file_name(&self) -> String {
        format!("{}-{}.raw", self.name, self.version)
    }
}

/// Identity of an OS (USR) build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsSpec {
    /// `ID=`.
    pub id: String,
    /// `VERSION_ID=`.
    pub version_id: String,
    /// `SYSEXT_LEVEL=`, if the OS declares one.
    pub sysext_level: Option<String>,
    /// `VERSION=` (human version, e.g. `3815.2.0`).
    pub version: String,
    /// Bytes of incompressible filler in `share/<id>/filler.bin`, to make the image big.
    pub pad_bytes: u64,
    /// Derive the filler from this seed: two OS versions with the same seed share it byte for
    /// byte (a minor OS update, for delta downloads).
    pub filler_seed: Option<u64>,
}

impl OsSpec {
    /// An OS `id` at `version_id`, with VERSION equal to VERSION_ID and no SYSEXT_LEVEL.
    pub fn new(id: &str, version_id: &str) -> Self {
        Self {
            id: id.into(),
            version_id: version_id.into(),
            sysext_level: None,
            version: version_id.into(),
            pad_bytes: 0,
            filler_seed: None,
        }
    }

    /// The bytes of `usr/lib/os-release` for this OS.
    pub fn os_release(&self) -> Vec<u8> {
        let mut text = format!(
            "NAME=\"upd test OS\"\nID={}\nVERSION_ID={}\nVERSION={}\n",
            self.id,
            quote(&self.version_id),
            quote(&self.version)
        );
        if let Some(level) = &self.sysext_level {
            text.push_str(&format!("SYSEXT_LEVEL={}\n", quote(level)));
        }
        text.into_bytes()
    }
}

/// Quote an os-release value when it holds anything beyond `[A-Za-z0-9._-]`.
fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        v.to_string()
    } else {
        format!(
            "\"{}\"",
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
        )
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().expect("fixture paths have a parent"))
        .unwrap_or_else(|e| panic!("create directory for {}: {e}", path.display()));
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Write `len` random (incompressible) bytes to `path`, from `seed` when given (xorshift64).
fn write_filler(path: &Path, len: u64, seed: Option<u64>) {
    let rng = SystemRandom::new();
    let mut x = seed.map(|s| s | 1);
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        match &mut x {
            Some(x) => buf[..n].iter_mut().for_each(|b| {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                *b = (*x >> 24) as u8;
            }),
            None => rng.fill(&mut buf[..n]).expect("system random generator"),
        }
        f.write_all(&buf[..n])
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        left -= n as u64;
    }
}

/// Run a tool (an image builder, sgdisk, losetup), panicking with its output on failure;
/// return its stdout.
pub(crate) fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pack directory `tree` into image file `out` (replacing it), all files owned by root.
pub fn make_image(format: Format, tree: &Path, out: &Path) {
    let _ = fs::remove_file(out);
    let mut cmd = match format {
        Format::Squashfs => {
            let mut c = Command::new("mksquashfs");
            c.arg(tree)
                .arg(out)
                .args(["-quiet", "-no-progress", "-noappend", "-all-root"]);
            c
        }
        Format::Erofs => {
            let mut c = Command::new("mkfs.erofs");
            c.args(["--quiet", "-zlz4", "--all-root"])
                .arg(out)
                .arg(tree);
            c
        }
    };
    run_tool(&mut cmd);
}

/// Build the sysext image described by `spec` into `out_dir/<name>-<version>.raw` and return its path.
pub fn build_sysext(spec: &SysextSpec, out_dir: &Path) -> PathBuf {
    let tree = tempfile::tempdir_in(out_dir).expect("staging directory for an image tree");
    let usr = tree.path().join("usr");
    let release_name = spec.release_file_name.as_deref().unwrap_or(&spec.name);
    let release = usr
        .join("lib/extension-release.d")
        .join(format!("extension-release.{release_name}"));
    write_file(&release, &spec.release_content(), 0o644);
    if let Some((bin, text)) = &spec.program {
        let script = format!("#!/bin/sh\necho '{}'\n", text.replace('\'', "'\\''"));
        write_file(&usr.join("bin").join(bin), script.as_bytes(), 0o755);
    }
    if spec.pad_bytes > 0 {
        let dir = usr.join("share").join(&spec.name);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        write_filler(&dir.join("filler.bin"), spec.pad_bytes, spec.filler_seed);
    }
    let out = out_dir.join(spec.file_name());
    make_image(spec.format, tree.path(), &out);
    out
}

/// Write a minimal /usr tree for `os` into `dir` (which plays /usr): `lib/os-release` and an empty `bin/`.
pub fn populate_usr_dir(dir: &Path, os: &OsSpec) {
    write_file(&dir.join("lib/os-release"), &os.os_release(), 0o644);
    fs::create_dir_all(dir.join("bin"))
        .unwrap_or_else(|e| panic!("create {}/bin: {e}", dir.display()));
}

/// Build a squashfs USR image for `os` (its filesystem root is /usr: `lib/os-release` at the top) into
/// `out_dir/usr-<version>.img` and return its path.
pub fn build_os_usr(os: &OsSpec, out_dir: &Path) -> PathBuf {
    let tree = tempfile::tempdir_in(out_dir).expect("staging directory for a USR tree");
    populate_usr_dir(tree.path(), os);
    if os.pad_bytes > 0 {
        let dir = tree.path().join("share").join(&os.id);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        write_filler(&dir.join("filler.bin"), os.pad_bytes, os.filler_seed);
    }
    let out = out_dir.join(format!("usr-{}.img", os.version));
    make_image(Format::Squashfs, tree.path(), &out);
    out
}

/// Hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let (_, digest) = upd_durable::hash_file(path).unwrap_or_else(|e| panic!("{e}"));
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_content_carries_every_given_field() {
        let mut spec = SysextSpec::new("tools", "1.2", "debian", "12");
        spec.sysext_level = Some("1.0".into());
        spec.architecture = Some("x86-64".into());
        spec.scope = Some("system initrd".into());
        let text = String::from_utf8(spec.release_content()).unwrap();
        assert_eq!(
            text,
            "ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\nARCHITECTURE=x86-64\nSYSEXT_SCOPE=\"system initrd\"\n\
             SYSEXT_ID=tools\nSYSEXT_VERSION_ID=1.2\n"
        );
    }

    #[test]
    fn os_release_includes_level_only_when_set() {
        let mut os = OsSpec::new("upd-os", "3815.2.0");
        assert!(!String::from_utf8(os.os_release())
            .unwrap()
            .contains("SYSEXT_LEVEL"));
        os.sysext_level = Some("2".into());
        assert!(String::from_utf8(os.os_release())
            .unwrap()
            .contains("\nSYSEXT_LEVEL=2\n"));
    }

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn built_images_are_real_filesystems_of_the_requested_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SysextSpec::new("big", "1", "debian", "12");
        spec.pad_bytes = 3 << 20;
        let squash = build_sysext(&spec, dir.path());
        let head = fs::read(&squash).unwrap();
        assert_eq!(&head[..4], b"hsqs", "squashfs magic");
        assert!(
            head.len() as u64 > spec.pad_bytes,
            "random filler does not compress"
        );
        let erofs = build_sysext(
            &SysextSpec::new("small", "1", "debian", "12").erofs(),
            dir.path(),
        );
        let head = fs::read(&erofs).unwrap();
        // EROFS superblock magic 0xE0F5E1E2 (little endian) at byte 1024.
        assert_eq!(&head[1024..1028], &[0xe2, 0xe1, 0xf5, 0xe0]);
    }
}
