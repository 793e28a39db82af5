//! A streaming parser of `multipart/byteranges` bodies (RFC 9110 §14.6, RFC 2046 §5.1.1): each
//! part's `Content-Range` gives its length, so a part's bytes are taken by count, never searched
//! for the boundary, and only the short texts between parts are ever buffered (bounded).
//!
//! The grammar followed, with the body length of each part fixed by its `Content-Range`:
//! 1. `[preamble CRLF] "--" boundary transport-padding CRLF` opens the first part;
//! 2. each part is `headers CRLF` (one `Content-Range`), then exactly its bytes;
//! 3. then `CRLF "--" boundary` and either `"--"` (the close delimiter: done, the epilogue is
//!    ignored) or `transport-padding CRLF` and the next part.

use bytes::{Buf, Bytes, BytesMut};

use super::super::ContentRange;

/// Longest text the parser holds between two parts' bytes (preamble, delimiter, part headers).
pub const MAX_TEXT: usize = 8 * 1024;
/// Most header fields in one part.
const MAX_FIELDS: usize = 16;

/// What the parser found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A part starts; its bytes follow as [`Event::Data`].
    Part(ContentRange),
    /// Bytes of the current part, in order.
    Data(Bytes),
    /// The close delimiter: no part follows.
    End,
}

/// Why a body is not a well-formed `multipart/byteranges`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `--boundary` line within the first [`MAX_TEXT`] bytes (or in the whole body).
    #[error("no boundary line \"--{boundary}\" in the first {MAX_TEXT} bytes of the body")]
    NoBoundary {
        /// The boundary of the Content-Type.
        boundary: String,
    },
    /// After a part's bytes, something else than the delimiter: the part is longer than its
    /// Content-Range says, or the boundary is garbled.
    #[error("after the {len} bytes of part {range}, no delimiter \"--{boundary}\" (a part longer than its Content-Range, or a garbled boundary)")]
    NoDelimiter {
        /// The part before.
        range: ContentRange,
        /// Its length.
        len: u64,
        /// The boundary of the Content-Type.
        boundary: String,
    },
    /// A boundary line followed by something else than `--` or padding and CRLF.
    #[error("a boundary line followed by {0:?}")]
    BadBoundaryLine(String),
    /// Part headers that do not parse, are too long, or lack a single valid Content-Range.
    #[error("part headers: {0}")]
    BadHeaders(String),
    /// The body ended before the close delimiter.
    #[error("the body ended before the closing boundary")]
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the first `--boundary`.
    Preamble,
    /// Just after a `--boundary`: `--` closes, padding and CRLF open a part.
    AfterBoundary,
    /// Reading a part's header fields.
    Headers,
    /// Inside a part's bytes: this many left.
    Body { left: u64 },
    /// After a part's bytes: `CRLF --boundary` must follow.
    Delimiter,
    /// The close delimiter was seen.
    Done,
}

/// The parser: feed it the body's bytes as they arrive, take its events until it needs more.
pub struct Parser {
    /// `--` and the boundary.
    dash: Vec<u8>,
    state: State,
    buf: BytesMut,
    /// The current part's range.
    part: Option<ContentRange>,
}

impl Parser {
    /// A parser for the boundary of the response's Content-Type.
    pub fn new(boundary: &str) -> Self {
        Self {
            dash: [b"--", boundary.as_bytes()].concat(),
            state: State::Preamble,
            buf: BytesMut::new(),
            part: None,
        }
    }

    /// Bytes received; call [`Parser::next`] until it returns `None` before feeding more.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.state != State::Done {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The body ended: an error unless the close delimiter was seen.
    pub fn finish(&self) -> Result<(), ParseError> {
        match self.state {
            State::Done => Ok(()),
            State::Preamble => Err(ParseError::NoBoundary {
                boundary: self.boundary(),
            }),
            _ => Err(ParseError::Truncated),
        }
    }

    fn boundary(&self) -> String {
        String::from_utf8_lossy(&self.dash[2..]).into_owned()
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, ParseError> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Body { left } => {
                    if self.buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (self.buf.len() as u64).min(left) as usize;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Delimiter
                    } else {
                        State::Body { left }
                    };
                    return Ok(Some(Event::Data(self.buf.split_to(n).freeze())));
                }
                State::Preamble => {
                    let at = if self.buf.starts_with(&self.dash) {
                        Some(0)
                    } else {
                        let line = [b"\r\n", &self.dash[..]].concat();
                        memchr::memmem::find(&self.buf, &line).map(|i| i + 2)
                    };
                    let too_long = || ParseError::NoBoundary {
                        boundary: self.boundary(),
                    };
                    match self.bounded(at.map(|i| i + self.dash.len()), too_long)? {
                        Some(n) => {
                            self.buf.advance(n);
                            self.state = State::AfterBoundary;
                        }
                        None => return Ok(None),
                    }
                }
                State::AfterBoundary => {
                    if self.buf.len() < 2 {
                        return Ok(None);
                    }
                    if self.buf.starts_with(b"--") {
                        self.state = State::Done;
                        self.buf.clear();
                        return Ok(Some(Event::End));
                    }
                    let pad = self
                        .buf
                        .iter()
                        .position(|b| *b != b' ' && *b != b'\t')
                        .unwrap_or(self.buf.len());
                    let line = (self.buf.len() >= pad + 2).then_some(pad + 2);
                    let too_long = || ParseError::BadBoundaryLine(self.text());
                    let Some(n) = self.bounded(line, too_long)? else {
                        return Ok(None);
                    };
                    if &self.buf[pad..n] != b"\r\n" {
                        return Err(ParseError::BadBoundaryLine(self.text()));
                    }
                    self.buf.advance(n);
                    self.state = State::Headers;
                }
                State::Headers => {
                    // No field at all: the blank line right after the boundary line.
                    if self.buf.starts_with(b"\r\n") {
                        return Err(ParseError::BadHeaders("no Content-Range".into()));
                    }
                    let end = memchr::memmem::find(&self.buf, b"\r\n\r\n").map(|i| i + 4);
                    let too_long =
                        || ParseError::BadHeaders(format!("longer than {MAX_TEXT} bytes"));
                    let Some(n) = self.bounded(end, too_long)? else {
                        return Ok(None);
                    };
                    let head = self.buf.split_to(n);
                    let range = content_range(&head)?;
                    self.part = Some(range);
                    self.state = State::Body {
                        left: range.last - range.first + 1,
                    };
                    return Ok(Some(Event::Part(range)));
                }
                State::Delimiter => {
                    let want = 2 + self.dash.len();
                    if self.buf.len() < want {
                        let ok = b"\r\n"
                            .iter()
                            .chain(&self.dash)
                            .zip(self.buf.iter())
                            .all(|(a, b)| a == b);
                        if ok {
                            return Ok(None);
                        }
                    } else if self.buf[..2] == *b"\r\n" && self.buf[2..want] == self.dash[..] {
                        self.buf.advance(want);
                        self.state = State::AfterBoundary;
                        continue;
                    }
                    let range = self.part.expect("a part precedes its delimiter");
                    return Err(ParseError::NoDelimiter {
                        range,
                        len: range.last - range.first + 1,
                        boundary: self.boundary(),
                    });
                }
            }
        }
    }

    /// The length of the text awaited (a preamble up to its boundary, a boundary line, a header
    /// block), `None` while more bytes are needed; `too_long` once it is or must be longer than
    /// [`MAX_TEXT`]. The verdict depends only on the body, never on how it arrived in pieces:
    /// text found whole but too long is refused as text not yet complete at that length would be.
    fn bounded(
        &self,
        len: Option<usize>,
        too_long: impl FnOnce() -> ParseError,
    ) -> Result<Option<usize>, ParseError> {
        match len {
            Some(n) if n <= MAX_TEXT => Ok(Some(n)),
            Some(_) => Err(too_long()),
            // Not complete within the bytes held: it will end after them.
            None if self.buf.len() >= MAX_TEXT => Err(too_long()),
            None => Ok(None),
        }
    }

    /// The start of the text held, for an error message.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.buf.len().min(40)]).into_owned()
    }
}

/// The one `Content-Range` of a part's header block (which ends with the blank line).
fn content_range(head: &[u8]) -> Result<ContentRange, ParseError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let fields = match httparse::parse_headers(head, &mut fields) {
        Ok(httparse::Status::Complete((_, f))) => f,
        Ok(httparse::Status::Partial) => return Err(ParseError::BadHeaders("incomplete".into())),
        Err(e) => return Err(ParseError::BadHeaders(e.to_string())),
    };
    let mut ranges = fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("content-range"));
    let (Some(f), None) = (ranges.next(), ranges.next()) else {
        return Err(ParseError::BadHeaders(
            "not exactly one Content-Range".into(),
        ));
    };
    std::str::from_utf8(f.value)
        .ok()
        .and_then(ContentRange::parse)
        .ok_or_else(|| {
            ParseError::BadHeaders(format!(
                "Content-Range {:?}",
                String::from_utf8_lossy(f.value)
            ))
        })
}

/// The boundary of a `multipart/byteranges` Content-Type; `Ok(None)` for any other type.
pub fn boundary_of(content_type: &str) -> Result<Option<String>, String> {
    let Ok(m) = content_type.parse::<mime::Mime>() else {
        return if content_type
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/byteranges")
        {
            Err(format!("unparsable Content-Type {content_type:?}"))
        } else {
            Ok(None)
        };
    };
    if m.type_() != mime::MULTIPART || m.subtype() != "byteranges" {
        return Ok(None);
    }
    // RFC 2046 §5.1.1: 1 to 70 characters of bchars, not ending in a space.
    let b = m
        .get_param(mime::BOUNDARY)
        .map(|b| b.as_str().to_string())
        .ok_or_else(|| format!("Content-Type {content_type:?} has no boundary"))?;
    let bchar = |c: char| c.is_ascii_alphanumeric() || "'()+_,-./:=? ".contains(c);
    if b.is_empty() || b.len() > 70 || b.ends_with(' ') || !b.chars().all(bchar) {
        return Err(format!("Content-Type {content_type:?}: bad boundary {b:?}"));
    }
    Ok(Some(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All events of `body` fed in pieces of `step` bytes, the data of each part joined.
    fn parse(
        body: &[u8],
        boundary: &str,
        step: usize,
    ) -> Result<Vec<(ContentRange, Vec<u8>)>, ParseError> {
        let mut p = Parser::new(boundary);
        let mut parts: Vec<(ContentRange, Vec<u8>)> = Vec::new();
        let mut ended = false;
        for piece in body.chunks(step.max(1)) {
            p.feed(piece);
            while let Some(ev) = p.next_event()? {
                match ev {
                    Event::Part(r) => parts.push((r, Vec::new())),
                    Event::Data(d) => parts.last_mut().unwrap().1.extend_from_slice(&d),
                    Event::End => ended = true,
                }
            }
        }
        p.finish()?;
        assert!(ended);
        Ok(parts)
    }

    fn range(first: u64, last: u64) -> ContentRange {
        ContentRange {
            first,
            last,
            complete: Some(100),
        }
    }

    const GOOD: &[u8] = b"--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-4/100\r\n\r\nhello\r\n--XYZ\r\ncontent-range: bytes 10-12/100\r\n\r\n--X\r\n--XYZ--\r\nepilogue";

    #[test]
    fn parts_in_any_slicing() {
        // The RFC's shape (the second part's bytes look like a boundary start), fed one byte at a
        // time up to all at once: the same two parts.
        for step in [1, 2, 3, 7, 64, GOOD.len()] {
            let parts = parse(GOOD, "XYZ", step).unwrap();
            assert_eq!(
                parts,
                vec![
                    (range(0, 4), b"hello".to_vec()),
                    (range(10, 12), b"--X".to_vec())
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn preamble_and_padding() {
        // A preamble line, a leading CRLF (what nginx sends), transport padding after a boundary.
        let body = b"ignored preamble\r\n--b \t\r\nContent-Range: bytes 1-1/*\r\n\r\nA\r\n--b--";
        let parts = parse(body, "b", 5).unwrap();
        assert_eq!(parts[0].1, b"A");
        assert_eq!(parts[0].0.complete, None);
        let body = b"\r\n--b\r\nContent-Range: bytes 1-2/9\r\n\r\nAB\r\n--b--\r\n";
        assert_eq!(parse(body, "b", 1).unwrap()[0].1, b"AB");
    }

    #[test]
    fn bad_bodies() {
        // A part one byte longer than its Content-Range.
        let long = b"--b\r\nContent-Range: bytes 0-1/9\r\n\r\nABC\r\n--b--";
        assert!(matches!(
            parse(long, "b", 4),
            Err(ParseError::NoDelimiter { .. })
        ));
        // Another boundary than the Content-Type's.
        assert!(matches!(
            parse(GOOD, "XYW", 3),
            Err(ParseError::NoBoundary { .. })
        ));
        let garbled = b"--b\r\nContent-Range: bytes 0-1/9\r\n\r\nAB\r\n--c--";
        assert!(matches!(
            parse(garbled, "b", 100),
            Err(ParseError::NoDelimiter { .. })
        ));
        // The boundary as a prefix of a longer word.
        let word = b"--bb\r\nContent-Range: bytes 0-1/9\r\n\r\nAB\r\n--b--";
        assert!(matches!(
            parse(word, "b", 100),
            Err(ParseError::BadBoundaryLine(_))
        ));
        // No Content-Range, two, one that does not parse.
        for h in [
            "Content-Type: x",
            "Content-Range: bytes 0-1/9\r\nContent-Range: bytes 0-1/9",
            "Content-Range: bytes 5-1/9",
            "Content-Range: items 0-1/9",
        ] {
            let b = format!("--b\r\n{h}\r\n\r\nAB\r\n--b--");
            assert!(
                matches!(
                    parse(b.as_bytes(), "b", 100),
                    Err(ParseError::BadHeaders(_))
                ),
                "{h}"
            );
        }
        let empty = b"--b\r\n\r\nAB\r\n--b--";
        assert!(matches!(
            parse(empty, "b", 100),
            Err(ParseError::BadHeaders(_))
        ));
        // Cut inside a part, inside the delimiter, before the close delimiter.
        for cut in [40, GOOD.len() - 20, GOOD.len() - 18] {
            assert_eq!(
                parse(&GOOD[..cut], "XYZ", 9),
                Err(ParseError::Truncated),
                "{cut}"
            );
        }
    }

    #[test]
    fn text_between_parts_is_bounded() {
        // Endless headers or an endless preamble are refused once past the limit, not buffered.
        let mut p = Parser::new("b");
        p.feed(b"--b\r\nX-Junk: ");
        let filler = vec![b'a'; 1024];
        let mut err = None;
        for _ in 0..(MAX_TEXT / 1024 + 2) {
            p.feed(&filler);
            if let Err(e) = p.next_event() {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(ParseError::BadHeaders(_))), "{err:?}");
        let mut p = Parser::new("b");
        for _ in 0..(MAX_TEXT / 1024 + 2) {
            p.feed(&filler);
            if p.next_event().is_err() {
                return;
            }
        }
        panic!("an endless preamble was accepted");
    }

    #[test]
    fn the_limit_does_not_depend_on_the_slicing() {
        // A preamble, transport padding and a header block each just under, at and just over
        // the limit: fed whole or a byte at a time, the same verdict (whole bodies were once
        // accepted past the limit that pieces were refused at).
        let part = "\r\n\r\nAB\r\n--b--";
        for n in [
            MAX_TEXT - 40,
            MAX_TEXT - 30,
            MAX_TEXT - 3,
            MAX_TEXT,
            MAX_TEXT + 9,
        ] {
            // Each body, and the length of its text element that the limit bounds.
            let bodies = [
                (
                    format!(
                        "{}\r\n--b\r\nContent-Range: bytes 0-1/9{part}",
                        "p".repeat(n)
                    ),
                    n + 5,
                ),
                (
                    format!("--b{}\r\nContent-Range: bytes 0-1/9{part}", " ".repeat(n)),
                    n + 2,
                ),
                (
                    format!(
                        "--b\r\nX-Pad: {}\r\nContent-Range: bytes 0-1/9{part}",
                        "h".repeat(n)
                    ),
                    n + 39,
                ),
            ];
            for (body, text) in bodies {
                let whole = parse(body.as_bytes(), "b", body.len());
                for step in [1, 7, 4096] {
                    assert_eq!(parse(body.as_bytes(), "b", step), whole, "{n} {step}");
                }
                assert_eq!(whole.is_ok(), text <= MAX_TEXT, "{n} {text}: {whole:?}");
            }
        }
    }

    #[test]
    fn boundaries_of_content_types() {
        assert_eq!(boundary_of("application/octet-stream"), Ok(None));
        assert_eq!(
            boundary_of("multipart/byteranges; boundary=3d6b6a416f9b5"),
            Ok(Some("3d6b6a416f9b5".into()))
        );
        assert_eq!(
            boundary_of("Multipart/ByteRanges; charset=x; boundary=\"a b:c\""),
            Ok(Some("a b:c".into()))
        );
        assert!(boundary_of("multipart/byteranges").is_err());
        assert!(boundary_of("multipart/byteranges; boundary=\"\"").is_err());
        assert!(boundary_of(&format!(
            "multipart/byteranges; boundary={}",
            "x".repeat(71)
        ))
        .is_err());
        assert!(boundary_of("multipart/byteranges; boundary=\"a\u{7f}\"").is_err());
    }
}
