//! The disk side of a download: received chunks are hashed on one blocking thread and written on
//! another, with aligned `O_DIRECT` writes where the filesystem takes them, so that the thread
//! reading the network only reads the network.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ring::digest::Context;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use upd_durable::PathError;

/// Bytes gathered into one write(2): with `O_DIRECT` the disk gets requests this large.
const WRITE_BUF: usize = 4 << 20;
/// Memory and file-offset alignment of `O_DIRECT` writes: a page, a multiple of every logical
/// block size in use (512 and 4096).
const ALIGN: usize = 4096;
/// Received bytes between the network and the disk (queued to the hasher or the writer): bounds
/// memory whatever the file size, and lets the network go on while a write waits for the disk.
const IN_FLIGHT: usize = 8 << 20;
/// Unit of the in-flight budget.
const PERMIT: usize = 1024;
/// Written bytes between two writeback kicks (buffered writes only).
const WRITEBACK_STEP: u64 = 16 << 20;

/// Where a writer starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Place {
    /// An empty file (created or truncated).
    Truncate,
    /// After the file's current end (created if missing).
    Append,
    /// At this byte of an existing file or device, overwriting.
    At(u64),
}

/// One queued chunk; its share of the in-flight budget is returned once every consumer dropped it.
type Held = (Bytes, Arc<OwnedSemaphorePermit>);

/// Writes chunks to a partial file (or a slot) on a blocking thread, optionally hashing them on
/// another, while the network keeps receiving.
pub(crate) struct ChunkWriter {
    tx: mpsc::UnboundedSender<Held>,
    hash_tx: Option<mpsc::UnboundedSender<Held>>,
    budget: Arc<Semaphore>,
    task: oneshot::Receiver<Result<(), PathError>>,
    hasher: Option<oneshot::Receiver<Context>>,
}

/// Run `f` on a named thread (so that a profile tells the hashing from the writing), its result
/// delivered to the async side.
fn thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a download thread");
    rx
}

impl ChunkWriter {
    /// Open `path` (which must exist) for writing at byte `offset`, e.g. inside an OS slot of a
    /// disk, without hashing (every download hashes as it writes; the tests need no hash).
    #[cfg(test)]
    pub(crate) async fn open_at(path: &Path, place: Place) -> Result<Self, PathError> {
        Self::start(path, place, None).await
    }

    /// Open `path` for writing at `place`; every chunk sent also goes through `ctx` (on a thread of
    /// its own); [`ChunkWriter::close_hashed`] gives it back, covering exactly the chunks sent.
    pub(crate) async fn open_hashing(
        path: &Path,
        place: Place,
        ctx: Context,
    ) -> Result<Self, PathError> {
        Self::start(path, place, Some(ctx)).await
    }

    async fn start(path: &Path, place: Place, ctx: Option<Context>) -> Result<Self, PathError> {
        let p = path.to_path_buf();
        let sink = tokio::task::spawn_blocking(move || Sink::open(p, place))
            .await
            .expect("open task panicked")?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = thread("upd-write", move || write_loop(sink, rx));
        let (hash_tx, hasher) = match ctx {
            None => (None, None),
            Some(ctx) => {
                let (htx, hrx) = mpsc::unbounded_channel();
                let h = thread("upd-hash", move || hash_loop(ctx, hrx));
                (Some(htx), Some(h))
            }
        };
        Ok(Self {
            tx,
            hash_tx,
            budget: Arc::new(Semaphore::new(IN_FLIGHT / PERMIT)),
            task,
            hasher,
        })
    }

    /// Queue one chunk; waits while [`IN_FLIGHT`] bytes are queued. An error means the writer
    /// stopped: call `close`.
    pub(crate) async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        let want = chunk.len().div_ceil(PERMIT).clamp(1, IN_FLIGHT / PERMIT);
        let permit = Arc::clone(&self.budget)
            .acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX))
            .await
            .map_err(|_| ())?;
        let permit = Arc::new(permit);
        if let Some(h) = &self.hash_tx {
            h.send((chunk.clone(), Arc::clone(&permit)))
                .map_err(|_| ())?;
        }
        self.tx.send((chunk, permit)).map_err(|_| ())
    }

    /// Stop accepting chunks, wait until everything queued is written, and report the writer's outcome.
    #[cfg(test)]
    pub(crate) async fn close(self) -> Result<(), PathError> {
        self.close_hashed().await.map(|_| ())
    }

    /// Stop accepting chunks, wait until everything queued is written, report the writer's
    /// outcome, and give back the hash over every chunk sent (when opened hashing).
    pub(crate) async fn close_hashed(self) -> Result<Option<Context>, PathError> {
        drop(self.tx);
        drop(self.hash_tx);
        let ctx = match self.hasher {
            Some(h) => Some(h.await.expect("hash thread panicked")),
            None => None,
        };
        self.task.await.expect("writer thread panicked")?;
        Ok(ctx)
    }
}

fn hash_loop(mut ctx: Context, mut rx: mpsc::UnboundedReceiver<Held>) -> Context {
    while let Some((chunk, _permit)) = rx.blocking_recv() {
        ctx.update(&chunk);
    }
    ctx
}

fn write_loop(mut sink: Sink, mut rx: mpsc::UnboundedReceiver<Held>) -> Result<(), PathError> {
    while let Some((chunk, permit)) = rx.blocking_recv() {
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let n = sink.buf.take(rest);
            rest = &rest[n..];
            if sink.buf.is_full() {
                sink.flush(false)?;
            }
        }
        drop(permit);
    }
    sink.flush(true)
}

/// A page-aligned buffer of [`WRITE_BUF`] bytes, without `unsafe`: an over-allocated vector
/// used from its first aligned byte on.
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new() -> Self {
        let mem = vec![0u8; WRITE_BUF + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        Self { mem, start, len: 0 }
    }

    /// Copy as much of `data` as fits; returns how much.
    fn take(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(WRITE_BUF - self.len);
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    fn is_full(&self) -> bool {
        self.len == WRITE_BUF
    }

    fn bytes(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// Drop the first `n` bytes, moving the rest to the aligned start.
    fn consume(&mut self, n: usize) {
        let s = self.start;
        self.mem.copy_within(s + n..s + self.len, s);
        self.len -= n;
    }
}

/// The file being written: a buffered descriptor, and an `O_DIRECT` one while the filesystem
/// takes it; `pos` is the file offset of the first byte in `buf`.
struct Sink {
    path: PathBuf,
    file: File,
    direct: Option<File>,
    pos: u64,
    buf: AlignedBuf,
    kicked: u64,
}

impl Sink {
    fn open(path: PathBuf, place: Place) -> Result<Self, PathError> {
        let err = |e| PathError::new("open", &path, e);
        let mut o = OpenOptions::new();
        o.write(true);
        let file = match place {
            Place::Truncate => o.create(true).truncate(true).open(&path).map_err(err)?,
            Place::Append => o.create(true).open(&path).map_err(err)?,
            Place::At(_) => o.open(&path).map_err(err)?,
        };
        let pos = match place {
            Place::At(off) => off,
            _ => file.metadata().map_err(err)?.len(),
        };
        // tmpfs before 6.6, some FUSE and network filesystems refuse O_DIRECT: then buffered only.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .map_err(|e| tracing::debug!(path = %path.display(), error = %e, "no O_DIRECT, buffered writes"))
            .ok();
        Ok(Self {
            path,
            file,
            direct,
            pos,
            buf: AlignedBuf::new(),
            kicked: pos,
        })
    }

    /// Write out the buffer: its aligned part with `O_DIRECT`, an unaligned head (a file resumed
    /// at an odd length) and, when `last`, the unaligned tail through the page cache. The final
    /// fsync (and rename) of the caller makes both durable.
    fn flush(&mut self, last: bool) -> Result<(), PathError> {
        let align = ALIGN as u64;
        let head = ((align - self.pos % align) % align).min(self.buf.len as u64) as usize;
        if head > 0 && self.direct.is_some() {
            self.write_buffered(head)?;
        }
        let body = if self.direct.is_some() {
            self.buf.len / ALIGN * ALIGN
        } else {
            self.buf.len
        };
        if body > 0 {
            self.write_direct(body)?;
        }
        if last && self.buf.len > 0 {
            self.write_buffered(self.buf.len)?;
        }
        Ok(())
    }

    fn write_buffered(&mut self, n: usize) -> Result<(), PathError> {
        self.file
            .write_all_at(&self.buf.bytes()[..n], self.pos)
            .map_err(|e| PathError::new("write", &self.path, e))?;
        self.advance(n);
        if self.pos - self.kicked >= WRITEBACK_STEP {
            start_writeback(&self.file, self.kicked, self.pos - self.kicked);
            self.kicked = self.pos;
        }
        Ok(())
    }

    /// `n` bytes from the buffer's start (aligned when `direct`): `O_DIRECT`, or buffered when
    /// the filesystem refuses it (EINVAL), from then on.
    fn write_direct(&mut self, n: usize) -> Result<(), PathError> {
        let Some(d) = &self.direct else {
            return self.write_buffered(n);
        };
        match d.write_all_at(&self.buf.bytes()[..n], self.pos) {
            Ok(()) => {
                self.advance(n);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(path = %self.path.display(), "O_DIRECT write refused, buffered writes");
                self.direct = None;
                self.write_buffered(n)
            }
            Err(e) => Err(PathError::new("write", &self.path, e)),
        }
    }

    fn advance(&mut self, n: usize) {
        self.buf.consume(n);
        self.pos += n as u64;
    }
}

/// Ask the kernel to start writing back a range now, so the final fsync has little left to wait for.
/// Advisory: a failure only means the fsync does all the work.
#[allow(unsafe_code)] // sync_file_range(2) has no safe wrapper in nix 0.29
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// fsync `path` (a file written by a closed writer) on a blocking thread.
pub(crate) async fn sync_file(path: &Path) -> Result<(), PathError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| PathError::new("fsync", &p, e))
    })
    .await
    .expect("fsync task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every position, so a misplaced write shows.
    fn data(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u32 * 31 + u32::from(seed)) as u8)
            .collect()
    }

    #[tokio::test]
    async fn appends_at_odd_offsets_with_odd_chunks() {
        // A file resumed at an unaligned length, chunks of awkward sizes spanning several
        // buffers: the file holds the old bytes then the new ones exactly, and the hash covers
        // exactly what was sent.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.partial");
        let head = data(5000, 1);
        std::fs::write(&p, &head).unwrap();
        let body = data(WRITE_BUF * 2 + 12345, 2);
        let ctx = Context::new(&ring::digest::SHA256);
        let w = ChunkWriter::open_hashing(&p, Place::Append, ctx)
            .await
            .unwrap();
        for c in body.chunks(65_537) {
            w.send(Bytes::copy_from_slice(c)).await.unwrap();
        }
        let ctx = w.close_hashed().await.unwrap().unwrap();
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), head.len() + body.len());
        assert!(got[..head.len()] == head[..], "the held bytes changed");
        assert!(got[head.len()..] == body[..], "the new bytes differ");
        assert_eq!(
            ctx.finish().as_ref(),
            ring::digest::digest(&ring::digest::SHA256, &body).as_ref()
        );
    }

    #[tokio::test]
    async fn writes_at_an_offset_and_truncates() {
        // Overwriting inside an existing file at an aligned and an unaligned offset leaves the
        // bytes around the range alone; Truncate starts from an empty file.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("disk");
        for off in [8192u64, 3000] {
            std::fs::write(&p, vec![0xAAu8; 3 * WRITE_BUF]).unwrap();
            let body = data(WRITE_BUF + 777, 3);
            let w = ChunkWriter::open_at(&p, Place::At(off)).await.unwrap();
            w.send(Bytes::from(body.clone())).await.unwrap();
            w.close().await.unwrap();
            let got = std::fs::read(&p).unwrap();
            let o = off as usize;
            assert_eq!(got.len(), 3 * WRITE_BUF);
            assert!(
                got[..o].iter().all(|&b| b == 0xAA),
                "before the range, at {off}"
            );
            assert!(got[o..o + body.len()] == body[..], "the range, at {off}");
            assert!(
                got[o + body.len()..].iter().all(|&b| b == 0xAA),
                "after the range, at {off}"
            );
        }
        let w = ChunkWriter::open_at(&p, Place::Truncate).await.unwrap();
        w.send(Bytes::from_static(b"short")).await.unwrap();
        w.close().await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"short");
    }
}
