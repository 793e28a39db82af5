//! os-release / extension-release: parse, re-render, re-parse to the same fields; the
//! compatibility rules never panic on what parsed.

use upd_channels::compat;
use upd_channels::osrelease::{HostIdentity, OsRelease};

/// `KEY="value"` with the characters systemd's parser unescapes inside double quotes escaped.
fn render(os: &OsRelease) -> String {
    os.iter()
        .map(|(k, v)| {
            let mut line = format!("{k}=\"");
            for c in v.chars() {
                if matches!(c, '"' | '\\' | '`' | '$') {
                    line.push('\\');
                }
                line.push(c);
            }
            line + "\"\n"
        })
        .collect()
}

/// The input is an extension-release; its first half also serves as the host's os-release.
pub fn osrelease(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    let Ok(ext) = OsRelease::parse(text) else {
        return;
    };
    let back = OsRelease::parse(&render(&ext)).expect("a rendered os-release parses");
    assert_eq!(back, ext, "rendered as {:?}", render(&ext));
    let half = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    if let Ok(host) = OsRelease::parse(&text[..half]) {
        if let Ok(host) = HostIdentity::from_os_release(&host, "x86-64") {
            let _ = compat::check("ext.raw", "ext", &ext, &host);
        }
    }
}
