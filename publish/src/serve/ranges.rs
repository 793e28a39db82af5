//! The Range header (RFC 9110 §14.1.2: one range or a list of them) and the
//! `multipart/byteranges` body that answers several (RFC 9110 §14.6).
//!
//! Limits: more than [`MAX_RANGES`] ranges, or a list with bad syntax, is ignored (the whole
//! file, as Apache past `MaxRanges`); ranges past the end are dropped (none left: 416);
//! overlapping or adjacent ranges are coalesced (RFC 9110 §15.3.7.2 allows it "regardless of the
//! order"), so no byte is sent twice; apart, the ranges are answered in the order asked.

use ring::rand::{SecureRandom, SystemRandom};

/// Most ranges answered in one request.
pub(super) const MAX_RANGES: usize = 128;

/// What a Range header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeAsk {
    /// No usable Range: send the whole file.
    Full,
    /// Satisfiable ranges, inclusive bounds, none overlapping or adjacent another: one is a
    /// single-part 206, several a multipart one.
    Parts(Vec<(u64, u64)>),
    /// A syntactically valid Range that misses the file.
    Unsatisfiable,
}

/// One part of a multipart body.
#[derive(Debug)]
pub(super) struct Part {
    /// The delimiter and the part's header fields.
    pub head: Vec<u8>,
    /// The part's first byte in the file.
    pub start: u64,
    /// Its length.
    pub len: u64,
}

/// Parse a `bytes=` Range value against a file of `size` bytes.
pub(super) fn parse(value: &str, size: u64) -> RangeAsk {
    let Some(set) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Full;
    };
    // RFC 9110 §5.6.1: empty list elements are allowed and ignored.
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if specs.is_empty() || specs.len() > MAX_RANGES {
        return RangeAsk::Full;
    }
    let mut parts = Vec::new();
    for spec in specs {
        match one(spec, size) {
            Err(()) => return RangeAsk::Full,
            Ok(None) => {}
            Ok(Some(r)) => parts.push(r),
        }
    }
    if parts.is_empty() {
        return RangeAsk::Unsatisfiable;
    }
    let mut sorted = parts.clone();
    sorted.sort_unstable();
    if sorted
        .windows(2)
        .any(|w| w[1].0 <= w[0].1.saturating_add(1))
    {
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(parts.len());
        for (a, b) in sorted {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        parts = merged;
    }
    RangeAsk::Parts(parts)
}

/// One range-spec: `Ok(None)` when it misses the file, `Err` for bad syntax.
fn one(spec: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Result<u64, ()> {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().map_err(|_| ())
        } else {
            Err(())
        }
    };
    if a.is_empty() {
        // Suffix range: the last n bytes.
        let n = num(b)?;
        return Ok((n > 0 && size > 0).then(|| (size.saturating_sub(n), size - 1)));
    }
    let start = num(a)?;
    let end = if b.is_empty() { u64::MAX } else { num(b)? };
    if end < start {
        return Err(());
    }
    Ok((start < size).then(|| (start, end.min(size - 1))))
}

/// The parts and closing delimiter of a `multipart/byteranges` body for `ranges` of a file of
/// `size` bytes whose type is `ctype`, and the answer's Content-Type (a fresh random boundary).
pub(super) fn multipart(
    ranges: &[(u64, u64)],
    size: u64,
    ctype: &str,
) -> (Vec<Part>, Vec<u8>, String) {
    let mut raw = [0u8; 12];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the system random generator works");
    let boundary = format!("upd-{}", hex(&raw));
    let parts = ranges
        .iter()
        .enumerate()
        .map(|(i, &(a, b))| Part {
            head: format!(
                "{}--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n",
                if i == 0 { "" } else { "\r\n" }
            )
            .into_bytes(),
            start: a,
            len: b - a + 1,
        })
        .collect();
    let tail = format!("\r\n--{boundary}--\r\n").into_bytes();
    (
        parts,
        tail,
        format!("multipart/byteranges; boundary={boundary}"),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &[(u64, u64)]) -> RangeAsk {
        RangeAsk::Parts(v.to_vec())
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse("bytes=0-0", 10), parts(&[(0, 0)]));
        assert_eq!(parse("bytes=-20", 10), parts(&[(0, 9)]));
        assert_eq!(parse("bytes=-0", 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse("bytes=5-2", 10), RangeAsk::Full);
        assert_eq!(parse("items=0-1", 10), RangeAsk::Full);
        assert_eq!(parse("bytes=0-", 0), RangeAsk::Unsatisfiable);
        assert_eq!(parse("bytes=+1-2", 10), RangeAsk::Full);
    }

    #[test]
    fn range_lists() {
        // Apart: kept in the order asked; empty elements and spaces allowed.
        assert_eq!(parse("bytes=0-1,3-4", 10), parts(&[(0, 1), (3, 4)]));
        assert_eq!(parse("bytes=6-7, ,0-1", 10), parts(&[(6, 7), (0, 1)]));
        // Overlapping or adjacent: sorted and coalesced.
        assert_eq!(parse("bytes=0-4,2-6,8-9", 10), parts(&[(0, 6), (8, 9)]));
        assert_eq!(parse("bytes=5-6,0-4", 10), parts(&[(0, 6)]));
        assert_eq!(parse("bytes=0-1,0-1,0-1", 10), parts(&[(0, 1)]));
        // One past the end is dropped, all past the end is 416, bad syntax anywhere ignores all.
        assert_eq!(parse("bytes=0-1,20-30", 10), parts(&[(0, 1)]));
        assert_eq!(parse("bytes=20-30,40-", 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse("bytes=0-1,x", 10), RangeAsk::Full);
        // Too many ranges: the whole file.
        let many: Vec<String> = (0..=MAX_RANGES)
            .map(|i| format!("{}-{}", i * 3, i * 3))
            .collect();
        assert_eq!(
            parse(&format!("bytes={}", many.join(",")), 1000),
            RangeAsk::Full
        );
        let most = &many[..MAX_RANGES];
        let RangeAsk::Parts(p) = parse(&format!("bytes={}", most.join(",")), 1000) else {
            panic!("{MAX_RANGES} ranges are answered");
        };
        assert_eq!(p.len(), MAX_RANGES);
    }

    #[test]
    fn multipart_heads() {
        let (parts, tail, ct) = multipart(&[(0, 1), (5, 9)], 10, "application/octet-stream");
        let b = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        assert!(b.len() > 20 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        let head = String::from_utf8(parts[1].head.clone()).unwrap();
        assert!(head.starts_with(&format!("\r\n--{b}\r\n")), "{head}");
        assert!(
            head.contains("Content-Range: bytes 5-9/10\r\n\r\n"),
            "{head}"
        );
        assert_eq!((parts[1].start, parts[1].len), (5, 5));
        assert!(parts[0].head.starts_with(b"--"));
        assert_eq!(tail, format!("\r\n--{b}--\r\n").into_bytes());
        // A fresh boundary each time.
        assert_ne!(ct, multipart(&[(0, 1), (5, 9)], 10, "x").2);
    }
}
