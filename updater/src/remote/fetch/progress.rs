//! Download progress reporting: a trait the CLI implements with bars or log lines.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Receives progress of one download; called from the async receive path, so keep it cheap.
pub trait Progress: Send + Sync {
    /// A transfer of `name` with `total` bytes begins; called again (from zero) if the transfer restarts.
    fn start(&self, name: &str, total: u64);
    /// `n` more bytes are held (bytes resumed from a partial file are reported once, right after `start`).
    fn advance(&self, n: u64);
    /// The transfer ended, successfully or not.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _name: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Plain log lines at each tenth of the transfer: what journald should see when stderr is no terminal.
#[derive(Debug, Default)]
pub struct LogProgress {
    name: Mutex<String>,
    total: AtomicU64,
    done: AtomicU64,
}

impl LogProgress {
    /// Bytes held so far in the current transfer.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

impl Progress for LogProgress {
    fn start(&self, name: &str, total: u64) {
        *self
            .name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = name.to_string();
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        tracing::info!(name, total, "download started");
    }

    fn advance(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed).max(1);
        let (a, b) = (before * 10 / total, (before + n) * 10 / total);
        if b > a && b < 10 {
            let name = self
                .name
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            tracing::info!(name, percent = b * 10, "downloading");
        }
    }

    fn finish(&self) {
        let name = self
            .name
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tracing::info!(
            name,
            bytes = self.done.load(Ordering::Relaxed),
            "download ended"
        );
    }
}
