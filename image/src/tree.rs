//! Views of an image's file tree: unsquashfs for squashfs, a mounted or extracted directory for erofs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ImageError, ImageFormat};

/// The most bytes kept from a tool's stderr.
const MAX_STDERR: u64 = 16 * 1024;
/// The most bytes of listing accepted from unsquashfs.
const MAX_LISTING: u64 = 8 * 1024 * 1024;

/// What a path inside the image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink(String),
    Other,
}

/// Read-only access to one image's tree; paths are lists of plain components, already resolved.
pub(super) trait Tree {
    /// The image file, for error messages.
    fn image(&self) -> &Path;
    /// The kind of the entry, without following a final symlink; None when absent.
    fn kind(&self, path: &[String]) -> Result<Option<Kind>, ImageError>;
    /// The contents of a regular file, or None when longer than `max_len`.
    fn read(&self, path: &[String], max_len: u64) -> Result<Option<Vec<u8>>, ImageError>;
    /// The names in a directory.
    fn list(&self, dir: &[String]) -> Result<Vec<String>, ImageError>;
}

/// Runs `f` on a view of the image at `image`, whatever its format.
pub(super) fn with_tree<R: Send>(
    image: &Path,
    f: impl FnOnce(&dyn Tree) -> Result<R, ImageError> + Send,
) -> Result<R, ImageError> {
    with_tree_using(image, nix::unistd::geteuid().is_root(), f)
}

/// Like [`with_tree`], choosing whether an erofs image is mounted (root only) or extracted.
pub(super) fn with_tree_using<R: Send>(
    image: &Path,
    mount_erofs: bool,
    f: impl FnOnce(&dyn Tree) -> Result<R, ImageError> + Send,
) -> Result<R, ImageError> {
    match ImageFormat::detect(image)? {
        ImageFormat::Squashfs => f(&Squashfs {
            image: image.to_path_buf(),
        }),
        ImageFormat::Erofs if mount_erofs => with_mounted_erofs(image, f),
        ImageFormat::Erofs => with_extracted_erofs(image, f),
    }
}

/// What a bounded tool run produced.
struct Output {
    success: bool,
    status: String,
    stdout: Vec<u8>,
    /// True when stdout went past the limit (the tool was killed).
    truncated: bool,
    stderr: String,
}

/// Runs a tool, keeping at most `max_stdout` bytes of stdout (killing it beyond) and a bounded stderr.
fn run_bounded(image: &Path, cmd: &mut Command, max_stdout: u64) -> Result<Output, ImageError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let spawn_err = |source| ImageError::Spawn {
        image: image.to_path_buf(),
        tool: tool.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let err_reader = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut err_pipe).take(MAX_STDERR).read_to_end(&mut kept);
        let _ = io::copy(&mut err_pipe, &mut io::sink()); // drain so the tool never blocks
        kept
    });
    let mut stdout = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("stdout is piped")
        .take(max_stdout + 1)
        .read_to_end(&mut stdout);
    let truncated = stdout.len() as u64 > max_stdout;
    if truncated || read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(spawn_err)?;
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default())
        .trim()
        .to_string();
    read.map_err(spawn_err)?;
    stdout.truncate(max_stdout as usize);
    Ok(Output {
        success: status.success(),
        status: status.to_string(),
        stdout,
        truncated,
        stderr,
    })
}

/// A failed tool run as an error naming the image, the tool and its stderr.
fn tool_error(image: &Path, tool: &str, out: &Output) -> ImageError {
    ImageError::Tool {
        image: image.to_path_buf(),
        tool: tool.to_string(),
        status: out.status.clone(),
        stderr: out.stderr.clone(),
    }
}

/// A squashfs image read through `unsquashfs`.
struct Squashfs {
    image: PathBuf,
}

impl Squashfs {
    /// Runs `unsquashfs ARGS IMAGE PATH` and fails on a non-zero exit.
    fn listing(&self, args: &[&str], path: &str) -> Result<String, ImageError> {
        let mut cmd = Command::new("unsquashfs");
        cmd.args(args).arg(&self.image).arg(path);
        let out = run_bounded(&self.image, &mut cmd, MAX_LISTING)?;
        if !out.success || out.truncated {
            return Err(tool_error(
                &self.image,
                &format!("unsquashfs {}", args.join(" ")),
                &out,
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Splits one `unsquashfs -lls` line into its type letter and the rest after the date and time.
fn parse_lls_line(line: &str) -> Option<(char, &str)> {
    let kind = line.chars().next()?;
    // perms owner size date time path; devices print "major, minor" as the size.
    let fields = if matches!(kind, 'c' | 'b') { 6 } else { 5 };
    let mut rest = line;
    for _ in 0..fields {
        rest = rest.trim_start_matches(' ');
        rest = &rest[rest.find(' ')?..];
    }
    Some((kind, &rest[1..]))
}

impl Tree for Squashfs {
    fn image(&self) -> &Path {
        &self.image
    }

    fn kind(&self, path: &[String]) -> Result<Option<Kind>, ImageError> {
        if path.iter().any(|c| c.contains(['*', '?', '[', ']', '\\'])) {
            return Ok(None); // unsquashfs would take it as a pattern; such names are not ours
        }
        let joined = path.join("/");
        let depth = path.len().to_string();
        let text = self.listing(&["-lls", "-d", "", "-max-depth", &depth], &joined)?;
        let want = format!("/{joined}");
        for (kind, rest) in text.lines().filter_map(parse_lls_line) {
            let Some(tail) = rest.strip_prefix(want.as_str()) else {
                continue;
            };
            let found = match (kind, tail) {
                ('d', "") => Kind::Dir,
                ('-', "") => Kind::File,
                ('l', t) if t.starts_with(" -> ") => Kind::Symlink(t[4..].to_string()),
                (_, "") => Kind::Other,
                _ => continue,
            };
            return Ok(Some(found));
        }
        Ok(None)
    }

    fn read(&self, path: &[String], max_len: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let mut cmd = Command::new("unsquashfs");
        cmd.arg("-cat").arg(&self.image).arg(path.join("/"));
        let out = run_bounded(&self.image, &mut cmd, max_len)?;
        if out.truncated {
            return Ok(None);
        }
        if !out.success {
            return Err(tool_error(&self.image, "unsquashfs -cat", &out));
        }
        Ok(Some(out.stdout))
    }

    fn list(&self, dir: &[String]) -> Result<Vec<String>, ImageError> {
        let joined = dir.join("/");
        let depth = (dir.len() + 1).to_string();
        let text = self.listing(&["-l", "-d", "", "-max-depth", &depth], &joined)?;
        let prefix = format!("/{joined}/");
        let names = text.lines().filter_map(|l| l.strip_prefix(prefix.as_str()));
        Ok(names
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_string)
            .collect())
    }
}

/// Runs `f` on a directory tree of the running system (`root`), as if it were an image.
pub(super) fn with_dir<R>(
    root: &Path,
    f: impl FnOnce(&dyn Tree) -> Result<R, ImageError>,
) -> Result<R, ImageError> {
    f(&Dir {
        image: root.to_path_buf(),
        root: root.to_path_buf(),
    })
}

/// A directory holding the image's tree (a mount point or an extraction).
struct Dir {
    image: PathBuf,
    root: PathBuf,
}

impl Dir {
    fn path(&self, path: &[String]) -> PathBuf {
        path.iter().fold(self.root.clone(), |p, c| p.join(c))
    }

    fn io(&self, path: &[String], source: io::Error) -> ImageError {
        ImageError::ReadInner {
            image: self.image.clone(),
            inner: path.join("/"),
            source,
        }
    }
}

impl Tree for Dir {
    fn image(&self) -> &Path {
        &self.image
    }

    fn kind(&self, path: &[String]) -> Result<Option<Kind>, ImageError> {
        let full = self.path(path);
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(path, e)),
        };
        let t = meta.file_type();
        Ok(Some(if t.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| self.io(path, e))?;
            Kind::Symlink(target.to_string_lossy().into_owned())
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            debug_assert!(
                t.is_fifo() || t.is_socket() || t.is_char_device() || t.is_block_device()
            );
            Kind::Other
        }))
    }

    fn read(&self, path: &[String], max_len: u64) -> Result<Option<Vec<u8>>, ImageError> {
        let mut opts = OpenOptions::new();
        opts.read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
        let file: File = opts.open(self.path(path)).map_err(|e| self.io(path, e))?;
        let mut bytes = Vec::new();
        file.take(max_len + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(path, e))?;
        Ok((bytes.len() as u64 <= max_len).then_some(bytes))
    }

    fn list(&self, dir: &[String]) -> Result<Vec<String>, ImageError> {
        let entries = fs::read_dir(self.path(dir)).map_err(|e| self.io(dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.io(dir, e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

/// A temporary directory, naming the image on failure.
fn temp_dir(image: &Path) -> Result<tempfile::TempDir, ImageError> {
    tempfile::Builder::new()
        .prefix(".upd-image-")
        .tempdir()
        .map_err(|source| ImageError::Spawn {
            image: image.to_path_buf(),
            tool: "mkdtemp".into(),
            source,
        })
}

/// Root only: mounts the erofs image read-only in a private mount namespace that only a
/// dedicated thread (and the `mount` it runs) lives in, so the mount is never visible outside
/// and disappears, with its loop device, even if unmounting fails.
fn with_mounted_erofs<R: Send>(
    image: &Path,
    f: impl FnOnce(&dyn Tree) -> Result<R, ImageError> + Send,
) -> Result<R, ImageError> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let ns_err = |what: &str, e: nix::Error| ImageError::Spawn {
        image: image.to_path_buf(),
        tool: what.to_string(),
        source: io::Error::from(e),
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| ns_err("unshare", e))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| ns_err("mount --make-rprivate /", e))?;
            let dir = temp_dir(image)?;
            let mut cmd = Command::new("mount");
            cmd.args(["-o", "ro,loop", "-t", "erofs", "--"])
                .arg(image)
                .arg(dir.path());
            let out = run_bounded(image, &mut cmd, MAX_STDERR)?;
            if !out.success {
                return Err(tool_error(image, "mount -o ro,loop -t erofs", &out));
            }
            let result = f(&Dir {
                image: image.to_path_buf(),
                root: dir.path().to_path_buf(),
            });
            let _ = umount2(dir.path(), MntFlags::MNT_DETACH);
            result
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Unprivileged: extracts the erofs image with `fsck.erofs --extract` into a temporary directory.
fn with_extracted_erofs<R>(
    image: &Path,
    f: impl FnOnce(&dyn Tree) -> Result<R, ImageError>,
) -> Result<R, ImageError> {
    let dir = temp_dir(image)?;
    let root = dir.path().join("root");
    let mut cmd = Command::new("fsck.erofs");
    cmd.arg(format!("--extract={}", root.display())).arg(image);
    let out = run_bounded(image, &mut cmd, MAX_LISTING)?;
    if !out.success {
        return Err(tool_error(image, "fsck.erofs --extract", &out));
    }
    f(&Dir {
        image: image.to_path_buf(),
        root,
    })
}
