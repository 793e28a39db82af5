//! The disk side of a download: a blocking thread that appends received chunks with large writes.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::fsutil::PathError;

/// Size of each write(2) to the partial file.
const WRITE_BUF: usize = 1 << 20;
/// Chunks in flight between the network and the disk: bounds memory whatever the file size.
const QUEUE: usize = 16;

/// Appends chunks to a partial file on a blocking thread while the network keeps receiving.
pub(crate) struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<Result<(), PathError>>,
}

impl ChunkWriter {
    /// Open `path` for appending (truncating it first when `truncate`) and start the writer thread.
    pub(crate) async fn open(path: &Path, truncate: bool) -> Result<Self, PathError> {
        let p = path.to_path_buf();
        let file = tokio::task::spawn_blocking(move || {
            OpenOptions::new()
                .create(true)
                .append(!truncate)
                .write(true)
                .truncate(truncate)
                .open(&p)
                .map_err(|e| PathError::new("open", &p, e))
        })
        .await
        .expect("open task panicked")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let p = path.to_path_buf();
        let task = tokio::task::spawn_blocking(move || write_loop(file, rx, p));
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

fn write_loop(file: File, mut rx: mpsc::Receiver<Bytes>, path: PathBuf) -> Result<(), PathError> {
    let mut w = BufWriter::with_capacity(WRITE_BUF, file);
    while let Some(chunk) = rx.blocking_recv() {
        w.write_all(&chunk)
            .map_err(|e| PathError::new("write", &path, e))?;
    }
    w.flush().map_err(|e| PathError::new("write", &path, e))
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
