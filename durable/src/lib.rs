//! upd-durable: the one durable-file module of upd and its publisher: atomic writes, renames with directory fsync, temp sweeping, file hashing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Prefix of every temporary entry upd and upd-channel create; entries with it are swept at the start of a run.
pub const TMP_PREFIX: &str = ".upd-tmp-";

/// An I/O error that names the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct PathError {
    /// What was being done ("write", "rename", ...).
    pub op: &'static str,
    /// The path involved.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

impl PathError {
    /// Wrap `source` with the operation and path it belongs to.
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The temporary sibling used while writing `path` durably.
pub fn tmp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{TMP_PREFIX}{name}.{}", std::process::id()))
}

/// fsync a directory, so that renames and creations inside it survive power loss.
pub fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| PathError::new("fsync directory", dir, e))
}

/// Rename `from` over `to` and fsync the destination directory.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), PathError> {
    fs::rename(from, to).map_err(|e| PathError::new("rename onto", to, e))?;
    sync_dir(to.parent().unwrap_or(Path::new("/")))
}

/// Create `dir` and its missing parents, each made durable: the parent of every directory created
/// is fsync'd, so a file later renamed into `dir` and its directory fsync'd survives a power cut
/// (the fsync of `dir` alone does not keep `dir`'s own entry in its parent).
pub fn create_dir_durable(dir: &Path) -> Result<(), PathError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.exists()).collect();
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => continue,
            Err(e) => return Err(PathError::new("create directory", d, e)),
        }
        sync_dir(d.parent().unwrap_or(Path::new("/")))?;
    }
    Ok(())
}

/// Write `bytes` to `path` atomically: temp file in the same directory, write, fsync, rename, fsync the directory
/// (created durably first if missing, see [`create_dir_durable`]).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PathError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    create_dir_durable(dir)?;
    let tmp = tmp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| PathError::new("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| PathError::new("write", &tmp, e))?;
        f.sync_all().map_err(|e| PathError::new("fsync", &tmp, e))?;
        rename_durable(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replace (or create) the symlink `link` so that it points at `target`, atomically by rename.
pub fn symlink_atomic(target: &Path, link: &Path) -> Result<(), PathError> {
    let tmp = tmp_sibling(link);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| PathError::new("create symlink", &tmp, e))?;
    rename_durable(&tmp, link)
}

/// Remove leftovers carrying [`TMP_PREFIX`] from `dir` (missing directory is fine).
pub fn sweep_tmp(dir: &Path) -> Result<usize, PathError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(PathError::new("read directory", dir, e)),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(|e| PathError::new("read directory", dir, e))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let p = entry.path();
            let r = if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            r.map_err(|e| PathError::new("remove leftover", &p, e))?;
            n += 1;
        }
    }
    if n > 0 {
        sync_dir(dir)?;
    }
    Ok(n)
}

/// Size and SHA-256 of the whole file at `path`, streamed in 64 KiB chunks.
pub fn hash_file(path: &Path) -> Result<(u64, [u8; 32]), PathError> {
    let mut f = File::open(path).map_err(|e| PathError::new("open", path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| PathError::new("read", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok((size, out))
}

/// Why a secret file (a token) was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// It could not be read.
    #[error(transparent)]
    Io(#[from] PathError),
    /// Its mode lets the group or others read it.
    #[error("{path}: mode {mode:04o} lets the group or others read this secret; chmod 0600 it")]
    Readable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds no token (empty or only white space), or more than 4 KiB.
    #[error("{path}: expected one token of 1 to 4096 bytes")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Read a secret (a bearer token) from `path`, trimmed of white space; refuse a file that the
/// group or others may read (mode & 0o044), as ssh does with keys.
pub fn read_secret(path: &Path) -> Result<String, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::metadata(path).map_err(|e| PathError::new("stat", path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o044 != 0 {
        return Err(SecretError::Readable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|e| PathError::new("read", path, e))?;
    let token = text.trim();
    if token.is_empty() || token.len() > 4096 {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        fs::write(&p, "  s3cret\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_secret(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 0600"), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&p).unwrap(), "s3cret");
        fs::write(&p, "\n").unwrap();
        assert!(read_secret(&p)
            .unwrap_err()
            .to_string()
            .contains("expected one token"));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        atomic_write(&p, b"one", 0o644).unwrap();
        atomic_write(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_dir_durable_makes_every_missing_parent_and_accepts_an_existing_one() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        create_dir_durable(&deep).unwrap();
        fs::write(d.path().join("file"), b"").unwrap();
        let err = create_dir_durable(&d.path().join("file/x")).unwrap_err();
        assert_eq!(err.op, "create directory");
    }

    #[test]
    fn symlink_switch_and_sweep() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("a.raw");
        symlink_atomic(Path::new("/x/1"), &link).unwrap();
        symlink_atomic(Path::new("/x/2"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("/x/2"));
        fs::write(d.path().join(format!("{TMP_PREFIX}junk")), b"").unwrap();
        assert_eq!(sweep_tmp(d.path()).unwrap(), 1);
        assert!(link.is_symlink());
    }

    #[test]
    fn hash_file_streams_past_one_chunk_and_names_a_missing_path() {
        // A file longer than the 64 KiB read buffer, then a path that does not exist.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&p, &data).unwrap();
        let (size, sha) = hash_file(&p).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(
            sha,
            ring::digest::digest(&ring::digest::SHA256, &data).as_ref()
        );
        let missing = d.path().join("missing");
        let err = hash_file(&missing).unwrap_err();
        assert_eq!((err.op, err.path), ("open", missing));
    }
}
