//! Hashing files already on disk (re-checking a cached image before reuse).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::fsutil::PathError;

/// SHA-256 of the file at `path`, read in 1 MiB blocks.
pub fn file_sha256(path: &Path) -> Result<[u8; 32], PathError> {
    let mut f = File::open(path).map_err(|e| PathError::new("open", path, e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| PathError::new("read", path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}
