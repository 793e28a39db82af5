//! Reading a byte range of a disk from the medium (`O_DIRECT`), hashing one block while the next is read.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc;

use ring::digest::{Context, SHA256};

/// Bytes per read.
const BLOCK: usize = 4 << 20;
/// Memory, offset and length alignment of the reads: a multiple of every logical block size in use.
const ALIGN: usize = 4096;
/// Buffers in turn between the reading thread and the hashing one.
const BUFFERS: usize = 3;

/// SHA-256 of bytes `offset..offset + len` of `path`, read with `O_DIRECT`. `Ok(None)` when the
/// device or filesystem refuses `O_DIRECT` or the offset is not aligned (the caller reads
/// through the page cache instead).
pub fn sha256_range(path: &Path, offset: u64, len: u64) -> io::Result<Option<[u8; 32]>> {
    if !offset.is_multiple_of(ALIGN as u64) {
        return Ok(None);
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (full_tx, full_rx) = mpsc::sync_channel::<(Aligned, usize)>(BUFFERS);
    let (free_tx, free_rx) = mpsc::sync_channel::<Aligned>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx.send(Aligned::new()).expect("the receiver is here");
    }
    std::thread::scope(|s| {
        let reader = s.spawn(move || read_blocks(&file, offset, len, &free_rx, &full_tx));
        let mut ctx = Context::new(&SHA256);
        let mut left = len;
        for (buf, n) in full_rx {
            let take = (n as u64).min(left) as usize;
            ctx.update(&buf.bytes()[..take]);
            left -= take as u64;
            // The reader may have finished already: then the buffer is simply dropped.
            let _ = free_tx.send(buf);
        }
        match reader.join().expect("read-back thread panicked")? {
            ReadEnd::Refused => Ok(None),
            ReadEnd::Done if left == 0 => {
                Ok(Some(ctx.finish().as_ref().try_into().expect("32 bytes")))
            }
            ReadEnd::Done => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the disk ended early",
            )),
        }
    })
}

enum ReadEnd {
    Done,
    /// The first read was refused (EINVAL): no `O_DIRECT` here.
    Refused,
}

fn read_blocks(
    file: &File,
    offset: u64,
    len: u64,
    free: &mpsc::Receiver<Aligned>,
    full: &mpsc::SyncSender<(Aligned, usize)>,
) -> io::Result<ReadEnd> {
    let mut pos = 0u64;
    while pos < len {
        let Ok(mut buf) = free.recv() else {
            return Ok(ReadEnd::Done);
        };
        let want = ((len - pos) as usize).min(BLOCK).next_multiple_of(ALIGN);
        let n = match file.read_at(&mut buf.bytes_mut()[..want], offset + pos) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pos == 0 => {
                return Ok(ReadEnd::Refused)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(ReadEnd::Done);
        }
        pos += n as u64;
        if full.send((buf, n)).is_err() {
            return Ok(ReadEnd::Done);
        }
    }
    Ok(ReadEnd::Done)
}

/// A page-aligned buffer of [`BLOCK`] bytes, without `unsafe`: an over-allocated vector used
/// from its first aligned byte on.
struct Aligned {
    mem: Vec<u8>,
    start: usize,
}

impl Aligned {
    fn new() -> Self {
        let mem = vec![0u8; BLOCK + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Self { mem, start }
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + BLOCK]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + BLOCK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_the_range_or_declines() {
        // A file of 9 MiB + 100 bytes: the range from an aligned offset to an unaligned end
        // hashes as the same bytes read normally; an unaligned offset is declined.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        let data: Vec<u8> = (0..(9 << 20) + 100u32)
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        let (off, len) = (8192usize, (9 << 20) + 100 - 8192 - 7);
        let want = ring::digest::digest(&SHA256, &data[off..off + len]);
        assert_eq!(sha256_range(&p, 100, 10).unwrap(), None);
        let Some(got) = sha256_range(&p, off as u64, len as u64).unwrap() else {
            // A filesystem without O_DIRECT (old tmpfs): declining is the documented answer.
            eprintln!("O_DIRECT refused on this filesystem");
            return;
        };
        assert_eq!(got, want.as_ref());
        let err = sha256_range(&p, 0, data.len() as u64 + 5000).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
