//! The disk side of a download: a blocking thread that appends received chunks with large writes.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use upd_durable::PathError;

/// Bytes gathered into one write(2) at most, when the network is ahead of the disk.
const WRITE_BUF: usize = 1 << 20;
/// Written bytes between two writeback kicks.
const WRITEBACK_STEP: u64 = 16 << 20;
/// Chunks in flight between the network and the disk: bounds memory whatever the file size.
const QUEUE: usize = 16;

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

/// Appends chunks to a partial file on a blocking thread while the network keeps receiving.
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<Result<(), PathError>>,
}

impl ChunkWriter {
    /// Open `path` for appending (truncating it first when `truncate`) and start the writer thread.
    pub(crate) async fn open(path: &Path, truncate: bool) -> Result<Self, PathError> {
        let place = if truncate {
            Place::Truncate
        } else {
            Place::Append
        };
        Self::open_at(path, place).await
    }

    /// Open `path` (which must exist) for writing at byte `offset`, e.g. inside an OS slot of a disk.
    pub(crate) async fn open_at(path: &Path, place: Place) -> Result<Self, PathError> {
        let p = path.to_path_buf();
        let (file, start) = tokio::task::spawn_blocking(move || {
            let err = |e| PathError::new("open", &p, e);
            let mut o = OpenOptions::new();
            o.write(true);
            let mut file = match place {
                Place::Truncate => o.create(true).truncate(true).open(&p).map_err(err)?,
                Place::Append => o.create(true).append(true).open(&p).map_err(err)?,
                Place::At(_) => o.open(&p).map_err(err)?,
            };
            let start = match place {
                Place::At(off) => file
                    .seek(SeekFrom::Start(off))
                    .map_err(|e| PathError::new("seek", &p, e))?,
                _ => file.metadata().map_err(err)?.len(),
            };
            Ok::<_, PathError>((file, start))
        })
        .await
        .expect("open task panicked")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let p = path.to_path_buf();
        let task = tokio::task::spawn_blocking(move || write_loop(file, start, rx, p));
        Ok(Self { tx, task })
    }

    /// Queue one chunk; waits when the disk is behind. An error means the writer stopped: call `close`.
    pub(crate) async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(|_| ())
    }

    /// Stop accepting chunks, wait until everything queued is written, and report the writer's outcome.
    pub(crate) async fn close(self) -> Result<(), PathError> {
        drop(self.tx);
        self.task.await.expect("writer task panicked")
    }
}

fn write_loop(
    mut file: File,
    start: u64,
    mut rx: mpsc::Receiver<Bytes>,
    path: PathBuf,
) -> Result<(), PathError> {
    let err = |e| PathError::new("write", &path, e);
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut kicked = start;
    let mut written = start;
    while let Some(chunk) = rx.blocking_recv() {
        batched += chunk.len();
        batch.push(chunk);
        // Take whatever else is already queued, then write it all with one gathered write.
        while batched < WRITE_BUF {
            match rx.try_recv() {
                Ok(c) => {
                    batched += c.len();
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        write_all_vectored(&mut file, &mut batch).map_err(err)?;
        written += batched as u64;
        batched = 0;
        if written - kicked >= WRITEBACK_STEP {
            start_writeback(&file, kicked, written - kicked);
            kicked = written;
        }
    }
    Ok(())
}

/// Write every chunk of `batch` (emptying it) with gathered writes: no copy into a staging buffer.
fn write_all_vectored(file: &mut File, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < batch.len() {
        let slices: Vec<IoSlice<'_>> = batch[done..].iter().map(|b| IoSlice::new(b)).collect();
        let mut n = file.write_vectored(&slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let first = &mut batch[done];
            if n >= first.len() {
                n -= first.len();
                done += 1;
            } else {
                let _ = first.split_to(n);
                n = 0;
            }
        }
    }
    batch.clear();
    Ok(())
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
