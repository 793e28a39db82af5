//! What a delta download parses: a server's `multipart/byteranges` answer (unsigned: any mirror
//! or proxy may send it) and the chunk index (signed through the manifest's hash, but parsed
//! with the same care).

use upd::remote::fetch::byteranges::{boundary_of, Event, ParseError, Parser};
use upd::remote::fetch::ContentRange;
use upd_channels::chunks::{ChunkIndex, HEADER_LEN};

/// The parts of `body` fed in pieces of `step` bytes, each part's bytes joined; the events'
/// order checked on the way (bytes only inside a part, each part exactly its range's length,
/// nothing after the close delimiter).
fn parts(
    body: &[u8],
    boundary: &str,
    step: usize,
) -> Result<Vec<(ContentRange, Vec<u8>)>, ParseError> {
    let mut p = Parser::new(boundary);
    let mut out: Vec<(ContentRange, Vec<u8>)> = Vec::new();
    let mut ended = false;
    let whole = |r: &ContentRange, d: &[u8]| d.len() as u64 == r.last - r.first + 1;
    for piece in body.chunks(step.max(1)) {
        p.feed(piece);
        while let Some(ev) = p.next_event()? {
            assert!(!ended, "an event after the close delimiter: {ev:?}");
            match ev {
                Event::Part(r) => {
                    if let Some((r, d)) = out.last() {
                        assert!(whole(r, d), "a part cut short by the next one");
                    }
                    out.push((r, Vec::new()));
                }
                Event::Data(d) => {
                    let (r, got) = out.last_mut().expect("bytes outside a part");
                    got.extend_from_slice(&d);
                    assert!(
                        got.len() as u64 <= r.last - r.first + 1,
                        "a part longer than its range"
                    );
                }
                Event::End => ended = true,
            }
        }
    }
    p.finish()?;
    assert!(ended, "finished without the close delimiter");
    if let Some((r, d)) = out.last() {
        assert!(whole(r, d), "the last part cut short");
    }
    Ok(out)
}

/// The input is `[step][boundary]\n[body]`. The verdict and the parts never depend on how the
/// body arrives in pieces; what parses, written again as a server would write it, parses to the
/// same parts.
pub fn byteranges(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
        return;
    };
    let Ok(b) = std::str::from_utf8(&rest[..nl]) else {
        return;
    };
    // Only boundaries a Content-Type can carry reach the parser.
    let Ok(Some(boundary)) = boundary_of(&format!("multipart/byteranges; boundary=\"{b}\"")) else {
        return;
    };
    let body = &rest[nl + 1..];
    let whole = parts(body, &boundary, body.len());
    let sliced = parts(body, &boundary, usize::from(step));
    // The same parts, or the same kind of refusal (its message quotes the bytes held, which
    // are fewer when the body arrives in pieces).
    match (&whole, &sliced) {
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "the verdict depends on the slicing (step {step}): {a:?} / {b:?}"
        ),
        _ => assert_eq!(
            whole, sliced,
            "the verdict depends on the slicing (step {step})"
        ),
    }
    let Ok(parts_found) = whole else {
        return;
    };
    let mut again = Vec::new();
    for (r, d) in &parts_found {
        again.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Range: {r}\r\n\r\n").as_bytes(),
        );
        again.extend_from_slice(d);
    }
    again.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(
        parts(&again, &boundary, 4096),
        Ok(parts_found),
        "written again"
    );
}

/// A chunk index, parsed for the image size its own header gives: what parses covers the image
/// in order without a gap, each chunk within the bounds, and is written back byte for byte; any
/// other image size is refused.
pub fn chunkindex(data: &[u8]) {
    let size = data
        .get(20..28)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let Ok(ix) = ChunkIndex::from_bytes(data, size) else {
        return;
    };
    assert!(data.len() >= HEADER_LEN);
    let mut end = 0;
    for c in &ix.chunks {
        assert_eq!(c.offset, end, "a gap or an overlap");
        assert!(c.length > 0 && c.length <= ix.params.max, "{c:?}");
        end = c.end();
    }
    assert_eq!(end, ix.size);
    assert_eq!(ix.size, size);
    assert_eq!(ix.to_bytes(), data, "written back");
    assert!(ChunkIndex::from_bytes(data, size.wrapping_add(1)).is_err());
}
