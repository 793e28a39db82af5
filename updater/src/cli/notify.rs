//! sd_notify(3) for the units (`NotifyAccess=main`): `STATUS=` for each phase and for download
//! progress ("downloading hello 1.1.0: 42 %", at most once a second per download), `STOPPING=1`
//! as the command ends. The units are `Type=oneshot`: started means finished, so no `READY=1`.
//! Without `NOTIFY_SOCKET` (a terminal, a test) nothing is sent.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::remote::fetch::Progress;

/// The least time between two progress statuses of one download.
const EVERY: Duration = Duration::from_secs(1);

/// Whether the service manager listens (`NOTIFY_SOCKET` is set).
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// Tell the service manager what upd is doing now (`systemctl status` shows it).
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// Tell the service manager that upd is finishing.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(state: &[NotifyState]) {
    if !enabled() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// What a download is called in a status: `hello-1.1.0-0a1b2c3d.raw` (a store file) is
/// `hello 1.1.0`, `usr-2.0.0.raw` (an OS image) is `usr 2.0.0`. Display only.
pub fn label(file: &str) -> String {
    let stem = file.strip_suffix(".raw").unwrap_or(file);
    // A store file ends in a hash prefix: `-` and hex digits, at least 8.
    let stem = match stem.rsplit_once('-') {
        Some((s, h)) if h.len() >= 8 && h.bytes().all(|b| b.is_ascii_hexdigit()) => s,
        _ => stem,
    };
    // The version starts at the first `-` followed by a digit.
    let at = stem
        .char_indices()
        .find(|&(i, c)| c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()));
    match at {
        Some((i, _)) => format!("{} {}", &stem[..i], &stem[i + 1..]),
        None => stem.to_string(),
    }
}

/// Whether a progress status is due: the percentage moved and `EVERY` passed since the last one
/// (the first one, at the start, is always due).
fn due(last: Option<(u64, Instant)>, percent: u64, now: Instant) -> bool {
    last.is_none_or(|(p, at)| percent != p && now.duration_since(at) >= EVERY)
}

/// A download's progress, passed on to `inner` and told to the service manager.
pub struct Notifying {
    inner: Arc<dyn Progress>,
    now: Mutex<Transfer>,
}

#[derive(Default)]
struct Transfer {
    label: String,
    total: u64,
    done: u64,
    last: Option<(u64, Instant)>,
}

impl Notifying {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Progress>) -> Self {
        Notifying {
            inner,
            now: Mutex::new(Transfer::default()),
        }
    }

    /// Add `n` bytes and send a status if one is due.
    fn tell(&self, n: u64) {
        let mut t = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        t.done += n;
        let percent = (t.done * 100).checked_div(t.total).unwrap_or(0).min(100);
        let now = Instant::now();
        if due(t.last, percent, now) {
            t.last = Some((percent, now));
            status(&format!("downloading {}: {percent} %", t.label));
        }
    }
}

impl Progress for Notifying {
    fn start(&self, name: &str, total: u64) {
        self.inner.start(name, total);
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = Transfer {
            label: label(name),
            total,
            ..Transfer::default()
        };
        self.tell(0);
    }

    fn advance(&self, n: u64) {
        self.inner.advance(n);
        self.tell(n);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_build() {
        assert_eq!(label("hello-1.1.0-0a1b2c3d4e5f.raw"), "hello 1.1.0");
        assert_eq!(label("my-ext-2.0.0-rc1-deadbeef.raw"), "my-ext 2.0.0-rc1");
        assert_eq!(label("usr-2.0.0.raw"), "usr 2.0.0");
        assert_eq!(label("weird"), "weird");
    }

    #[test]
    fn progress_is_rate_limited() {
        let t0 = Instant::now();
        assert!(due(None, 0, t0));
        assert!(!due(Some((0, t0)), 0, t0 + EVERY * 5), "same percentage");
        assert!(!due(Some((0, t0)), 42, t0 + EVERY / 2), "too soon");
        assert!(due(Some((0, t0)), 42, t0 + EVERY));
    }
}
