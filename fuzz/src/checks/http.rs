//! A 206 answer's `Content-Range` (`fetch::ContentRange::parse`), which decides whether a
//! download resumes: what parses is coherent and written back parses the same.

use upd::remote::fetch::ContentRange;

pub fn contentrange(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    let Some(r) = ContentRange::parse(text) else {
        return;
    };
    assert!(
        r.first <= r.last && r.complete.is_none_or(|n| r.last < n),
        "{r:?}"
    );
    let canonical = r.to_string();
    assert_eq!(ContentRange::parse(&canonical), Some(r), "{canonical}");
    // Nothing but digits, the three separators and the surrounding whitespace parsed.
    let inner = text.trim().strip_prefix("bytes ").expect("the unit");
    assert!(
        inner
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-/*".contains(&b)),
        "{text:?}"
    );
}
