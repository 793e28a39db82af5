//! Progress: indicatif bars when stderr is a terminal, plain log lines otherwise; told to the
//! service manager too under systemd.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::notify::{self, Notifying};
use crate::remote::fetch::{LogProgress, Progress};

/// Makes one progress sink per download.
pub struct Factory {
    multi: Option<MultiProgress>,
}

impl Factory {
    /// Bars on a terminal (unless `plain`), log lines otherwise.
    pub fn new(plain: bool) -> Self {
        let tty = !plain && std::io::stderr().is_terminal();
        Self {
            multi: tty.then(MultiProgress::new),
        }
    }

    /// A sink for one download.
    pub fn make(&self) -> Arc<dyn Progress> {
        let sink: Arc<dyn Progress> = match &self.multi {
            Some(m) => Arc::new(Bar(m.add(ProgressBar::new(0)))),
            None => Arc::new(LogProgress::default()),
        };
        if notify::enabled() {
            return Arc::new(Notifying::new(sink));
        }
        sink
    }
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, name: &str, total: u64) {
        let style = ProgressStyle::with_template(
            "{msg:30} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("valid template");
        self.0.set_style(style);
        self.0.set_message(name.to_string());
        self.0.set_length(total);
        self.0.set_position(0);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish();
    }
}
