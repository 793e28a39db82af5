//! The index format: round trip, chunk boundaries that survive an insertion, every malformed index refused.

use super::*;

fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn index_of(d: &[u8]) -> ChunkIndex {
    ChunkIndex::build(d, DEFAULT_PARAMS).unwrap()
}

#[test]
fn round_trip_and_exact_cover() {
    // A 2 MiB pseudo-random image: chunks cover it in order, the file parses back identical.
    let d = data(2 << 20, 7);
    let ix = index_of(&d);
    assert_eq!(ix.size, d.len() as u64);
    assert!(ix.chunks.len() > 8, "about 32 chunks of 64 KiB");
    for c in &ix.chunks {
        let bytes = &d[c.offset as usize..c.end() as usize];
        assert_eq!(sha256(bytes), c.sha256);
    }
    let b = ix.to_bytes();
    assert_eq!(b.len(), HEADER_LEN + RECORD_LEN * ix.chunks.len());
    assert_eq!(ChunkIndex::from_bytes(&b, d.len() as u64).unwrap(), ix);
}

#[test]
fn an_insertion_keeps_most_chunks() {
    // 100 bytes inserted in the middle of 4 MiB: all but a chunk or two keep their hash.
    let a = data(4 << 20, 9);
    let mut b = a.clone();
    b.splice(2 << 20..2 << 20, [0x55u8; 100]);
    let old = index_of(&a).by_hash();
    let new = index_of(&b);
    let missing = new
        .chunks
        .iter()
        .filter(|c| !old.contains_key(&c.sha256))
        .count();
    assert!(missing <= 3, "{missing} of {} chunks new", new.chunks.len());
}

#[test]
fn empty_image_has_no_chunks() {
    let ix = index_of(&[]);
    assert!(ix.chunks.is_empty());
    assert_eq!(ChunkIndex::from_bytes(&ix.to_bytes(), 0).unwrap(), ix);
}

/// Rewrite record `i` of `b` with `offset` and `length`.
fn patch(b: &mut [u8], i: usize, offset: u64, length: u32) {
    let at = HEADER_LEN + i * RECORD_LEN;
    b[at..at + 8].copy_from_slice(&offset.to_le_bytes());
    b[at + 8..at + 12].copy_from_slice(&length.to_le_bytes());
}

#[test]
fn malformed_indexes_are_refused_with_their_reason() {
    let d = data(1 << 20, 3);
    let ix = index_of(&d);
    let good = ix.to_bytes();
    let size = d.len() as u64;
    let (c0, c1) = (ix.chunks[0], ix.chunks[1]);
    let check = |b: &[u8], want: &str, image: u64| {
        let e = ChunkIndex::from_bytes(b, image).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should say {want:?}");
    };
    check(b"UPDCIDX0", "not a chunk index", size);
    let mut b = good.clone();
    b[0] = b'X';
    check(&b, "not a chunk index", size);
    check(&good[..good.len() - 1], "header announces", size);
    let mut b = good.clone();
    b.extend_from_slice(&[0; RECORD_LEN]);
    check(&b, "header announces", size);
    // Claims more bytes than the image the manifest declares.
    check(&good, "the manifest declares an image of", size - 1);
    let mut b = good.clone();
    b[20..28].copy_from_slice(&(size + 4096).to_le_bytes());
    check(&b, "describes", size);
    // Overlapping: chunk 1 starts inside chunk 0.
    let mut b = good.clone();
    patch(&mut b, 1, c1.offset - 1, c1.length);
    check(&b, "chunk 1 starts at byte", size);
    // Out of order: chunks 0 and 1 swapped.
    let mut b = good.clone();
    patch(&mut b, 0, c1.offset, c1.length);
    patch(&mut b, 1, c0.offset, c0.length);
    check(&b, "chunk 0 starts at byte", size);
    // Empty and oversized chunks.
    let mut b = good.clone();
    patch(&mut b, 0, 0, 0);
    check(&b, "outside 1..=", size);
    let mut b = good.clone();
    patch(&mut b, 0, 0, DEFAULT_PARAMS.max + 2);
    check(&b, "outside 1..=", size);
    // Short of the end: the last chunk dropped and the count adjusted.
    let mut b = good[..good.len() - RECORD_LEN].to_vec();
    b[28..36].copy_from_slice(&(ix.chunks.len() as u64 - 1).to_le_bytes());
    check(&b, "the chunks cover", size);
    // Chunker bounds FastCDC refuses.
    let mut b = good.clone();
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    check(&b, "outside what FastCDC 2020 accepts", size);
}
