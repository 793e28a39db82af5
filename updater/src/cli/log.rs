//! Logging: human lines on a terminal or a pipe, and under systemd (stderr is the journal) one
//! line per event with its syslog priority as an `<N>` prefix (sd-daemon(3)) and no timestamp of
//! our own, so that `journalctl -p warning` shows upd's warnings and errors.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Whether stderr is the journal, decided once.
static JOURNAL: OnceLock<bool> = OnceLock::new();

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` names its device and inode
/// (systemd.exec(5)); an inherited variable with a redirected stderr does not count.
pub fn stderr_is_journal() -> bool {
    *JOURNAL.get_or_init(|| {
        std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|v| matches_stderr(&v))
    })
}

fn matches_stderr(stream: &str) -> bool {
    use std::os::fd::AsRawFd;
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr().as_raw_fd())
        .is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// The sd-daemon priority prefix of a level: err, warning, info, debug.
pub fn prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// `<N>message field=value`: what journald stores with priority N.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "{}", prefix(*event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
#[error("invalid UPD_LOG filter '{filter}': {source}")]
pub struct FilterError {
    /// The filter given.
    filter: String,
    /// What the parser said.
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

/// The filter: `UPD_LOG` if set (an invalid one is an error naming it), else by `-v` count.
pub fn filter(upd_log: Option<&str>, verbose: u8) -> Result<EnvFilter, FilterError> {
    if let Some(f) = upd_log {
        return EnvFilter::builder().parse(f).map_err(|source| FilterError {
            filter: f.to_string(),
            source,
        });
    }
    Ok(EnvFilter::new(match verbose {
        0 => "warn,upd=info",
        1 => "info",
        _ => "debug",
    }))
}

/// Start logging to stderr: journal lines under systemd, human lines otherwise.
pub fn init(verbose: u8) -> Result<(), FilterError> {
    let upd_log = std::env::var("UPD_LOG").ok();
    let filter = filter(upd_log.as_deref(), verbose)?;
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_journal() {
        // No colour codes: journald stores the bytes as they come.
        fmt.with_ansi(false).event_format(JournalLine).init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .init();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_filter_is_an_error_naming_it() {
        let e = filter(Some("upd=loud"), 0).unwrap_err();
        assert!(e.to_string().contains("'upd=loud'"), "{e}");
        assert!(filter(Some("upd=debug,warn"), 0).is_ok());
        assert!(filter(None, 2).is_ok());
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(prefix(Level::ERROR), "<3>");
        assert_eq!(prefix(Level::WARN), "<4>");
        assert_eq!(prefix(Level::INFO), "<6>");
        assert_eq!(prefix(Level::DEBUG), "<7>");
    }

    #[test]
    fn a_stream_that_is_not_stderr_is_not_the_journal() {
        assert!(!matches_stderr("garbage"));
        assert!(!matches_stderr("1:2"));
    }
}
