//! Where each chunk of the target comes from: the verified prefix of `.partial`, a chunk of an
//! image this machine already holds, or the server (runs of neighbouring chunks, one range each).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use ring::digest::{Context, SHA256};
use upd_channels::chunks::{chunk_stream, sha256, Chunk, ChunkIndex};
use upd_durable::PathError;

use super::{Out, Seed};

/// A chunk found in a local image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// Which seed (index into the seed list).
    pub seed: usize,
    /// Its offset in that seed.
    pub offset: u64,
}

/// The plan of a delta download.
pub(crate) struct Plan {
    /// Chunks `0..held` are already in `.partial`, verified.
    pub held: usize,
    /// SHA-256 state over exactly the held bytes.
    pub ctx: Context,
    /// For each chunk, where a local image holds it (`None`: fetch it).
    pub found: Vec<Option<Found>>,
    /// For each seed, whether its chunks were taken from its own index (its bytes unread).
    pub trusted: Vec<bool>,
}

impl Plan {
    /// Bytes of the target that come from local images.
    pub fn reusable(&self, index: &ChunkIndex) -> u64 {
        self.found[self.held..]
            .iter()
            .zip(&index.chunks[self.held..])
            .filter(|(f, _)| f.is_some())
            .map(|(_, c)| u64::from(c.length))
            .sum()
    }
}

/// A run of neighbouring chunks to fetch: chunks `first..end`, one byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub first: usize,
    pub end: usize,
}

/// Bounds of one multi-range request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most ranges in the request.
    pub ranges: usize,
    /// Longest `Range` header value (servers refuse long header lines: 8 KiB for nginx and Apache).
    pub header: usize,
    /// Most bytes of reusable chunks between the first and the last range: they are copied while
    /// the response waits, so a long copy would leave the connection idle.
    pub reuse: u64,
}

/// The runs of missing chunks of the next request, from chunk `from` (which is missing): at most
/// `limits.ranges` of them, their `Range` header at most `limits.header` long (the first always
/// fits), the reusable bytes between them at most `limits.reuse`.
pub(crate) fn runs(
    found: &[Option<Found>],
    index: &ChunkIndex,
    from: usize,
    limits: Limits,
) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut header = "bytes=".len();
    let mut reuse = 0u64;
    let mut i = from;
    while i < found.len() && out.len() < limits.ranges.max(1) {
        let first = i;
        while i < found.len() && found[i].is_none() {
            i += 1;
        }
        let run = Run { first, end: i };
        let (a, b) = span(index, run);
        let len = format!("{a}-{}", b - 1).len() + usize::from(!out.is_empty());
        if !out.is_empty() && header + len > limits.header {
            break;
        }
        header += len;
        out.push(run);
        // The reusable chunks up to the next missing one.
        let gap_start = i;
        while i < found.len() && found[i].is_some() {
            i += 1;
        }
        if i == found.len() {
            break;
        }
        reuse +=
            index.chunks[i].offset - index.chunks.get(gap_start).map_or(index.size, |c| c.offset);
        if reuse > limits.reuse {
            break;
        }
    }
    out
}

/// Image bytes `start..stop` of a run.
pub(crate) fn span(index: &ChunkIndex, run: Run) -> (u64, u64) {
    (
        index.chunks[run.first].offset,
        index.chunks[run.end - 1].end(),
    )
}

/// Build the plan: keep the longest prefix of `out` whose chunks match the index (cutting a
/// partial file there), then note where each missing chunk is in the seeds: read from a seed's
/// own index where `seed_indexes` has one (nothing of the seed is read; the copy re-hashes each
/// chunk), found by chunking the seed with the index's parameters otherwise. A seed that cannot
/// be read is skipped: it was only a shortcut.
pub(crate) fn plan(
    index: &ChunkIndex,
    out: &Out,
    seeds: &[Seed],
    seed_indexes: &[Option<ChunkIndex>],
) -> Result<Plan, PathError> {
    let (held, ctx) = match out.slot {
        None => verified_prefix(index, &out.path)?,
        Some(offset) => slot_prefix(index, &out.path, offset)?,
    };
    let mut want: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, c) in index.chunks.iter().enumerate().skip(held) {
        want.entry(c.sha256).or_default().push(i);
    }
    let mut found = vec![None; index.chunks.len()];
    let mut trusted = vec![false; seeds.len()];
    for (n, seed) in seeds.iter().enumerate() {
        if want.is_empty() {
            break;
        }
        if let Some(Some(own)) = seed_indexes.get(n) {
            trusted[n] = true;
            for c in &own.chunks {
                note(&mut want, &mut found, n, c);
            }
        } else if let Err(e) = scan(index, seed, n, &mut want, &mut found) {
            tracing::debug!(seed = %seed.path.display(), offset = seed.offset, error = %e, "local image not usable for chunks");
        }
    }
    Ok(Plan {
        held,
        ctx,
        found,
        trusted,
    })
}

/// Chunk `c` of seed `n` is here: every wanted chunk with its hash is found there.
fn note(
    want: &mut HashMap<[u8; 32], Vec<usize>>,
    found: &mut [Option<Found>],
    n: usize,
    c: &Chunk,
) {
    if let Some(chunks) = want.remove(&c.sha256) {
        for i in chunks {
            found[i] = Some(Found {
                seed: n,
                offset: c.offset,
            });
        }
    }
}

/// Seed `n` does not hold what its index says: forget what was taken from it for chunks
/// `from..`, then chunk it and note what it really holds of those still missing.
pub(crate) fn rescan(
    index: &ChunkIndex,
    from: usize,
    seed: &Seed,
    n: usize,
    found: &mut [Option<Found>],
) {
    let mut want: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, f) in found.iter_mut().enumerate().skip(from) {
        if f.is_some_and(|f| f.seed == n) {
            *f = None;
        }
        if f.is_none() {
            want.entry(index.chunks[i].sha256).or_default().push(i);
        }
    }
    if let Err(e) = scan(index, seed, n, &mut want, found) {
        tracing::debug!(seed = %seed.path.display(), offset = seed.offset, error = %e, "local image not usable for chunks");
    }
}

/// Chunk `seed`'s byte range as the publisher chunked the image, noting each wanted chunk.
fn scan(
    index: &ChunkIndex,
    seed: &Seed,
    n: usize,
    want: &mut HashMap<[u8; 32], Vec<usize>>,
    found: &mut [Option<Found>],
) -> io::Result<()> {
    let mut file = File::open(&seed.path)?;
    file.seek(SeekFrom::Start(seed.offset))?;
    let range = file.take(seed.len.unwrap_or(u64::MAX));
    for c in chunk_stream(BufReader::with_capacity(1 << 20, range), index.params) {
        let (c, _) = c?;
        note(want, found, n, &c);
    }
    Ok(())
}

/// Chunks at the start of `partial` that match the index, the hash state over them, and the
/// file cut to exactly them (a missing file holds none).
fn verified_prefix(index: &ChunkIndex, partial: &Path) -> Result<(usize, Context), PathError> {
    let mut ctx = Context::new(&SHA256);
    let file = match OpenOptions::new().read(true).write(true).open(partial) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, ctx)),
        Err(e) => return Err(PathError::new("open", partial, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| PathError::new("stat", partial, e))?
        .len();
    let mut held = 0;
    let mut buf = Vec::new();
    for c in &index.chunks {
        if c.end() > len {
            break;
        }
        buf.resize(c.length as usize, 0);
        file.read_exact_at(&mut buf, c.offset)
            .map_err(|e| PathError::new("read", partial, e))?;
        if sha256(&buf) != c.sha256 {
            break;
        }
        ctx.update(&buf);
        held += 1;
    }
    let keep = index.chunks.get(held).map_or(index.size, |c| c.offset);
    if keep != len {
        file.set_len(keep)
            .map_err(|e| PathError::new("truncate", partial, e))?;
    }
    Ok((held, ctx))
}

/// Chunks at the start of an OS slot (bytes from `offset` of the disk `disk`) that already
/// match the index, as a run cut short left them (the slot is only overwritten, never cut).
fn slot_prefix(
    index: &ChunkIndex,
    disk: &Path,
    offset: u64,
) -> Result<(usize, Context), PathError> {
    let mut ctx = Context::new(&SHA256);
    let file = File::open(disk).map_err(|e| PathError::new("open", disk, e))?;
    let mut held = 0;
    let mut buf = Vec::new();
    for c in &index.chunks {
        buf.resize(c.length as usize, 0);
        file.read_exact_at(&mut buf, offset + c.offset)
            .map_err(|e| PathError::new("read", disk, e))?;
        if sha256(&buf) != c.sha256 {
            break;
        }
        ctx.update(&buf);
        held += 1;
    }
    Ok((held, ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use upd_channels::chunks::{self, ChunkIndex};

    fn at(seed: usize) -> Option<Found> {
        Some(Found { seed, offset: 0 })
    }

    /// An index of `n` chunks of 1000 bytes each.
    fn index(n: usize) -> ChunkIndex {
        let data: Vec<u8> = (0..n * 1000).map(|i| (i % 251) as u8).collect();
        let mut ix = ChunkIndex::build(&data[..], chunks::DEFAULT_PARAMS).unwrap();
        ix.chunks = (0..n)
            .map(|i| upd_channels::chunks::Chunk {
                offset: i as u64 * 1000,
                length: 1000,
                sha256: sha256(&data[i * 1000..(i + 1) * 1000]),
            })
            .collect();
        ix
    }

    const WIDE: Limits = Limits {
        ranges: 64,
        header: 8192,
        reuse: u64::MAX,
    };

    #[test]
    fn neighbours_to_fetch_become_one_range_each() {
        // Fetch, fetch, copy, fetch, copy, copy, fetch fetch fetch: three ranges in one request.
        let f = [None, None, at(0), None, at(1), at(0), None, None, None];
        let ix = index(f.len());
        let r = |first, end| Run { first, end };
        assert_eq!(runs(&f, &ix, 0, WIDE), vec![r(0, 2), r(3, 4), r(6, 9)]);
        assert_eq!(runs(&f, &ix, 7, WIDE), vec![r(7, 9)]);
        assert_eq!(span(&ix, r(3, 4)), (3000, 4000));
        // Single ranges: one run a request.
        let one = Limits { ranges: 1, ..WIDE };
        assert_eq!(runs(&f, &ix, 0, one), vec![r(0, 2)]);
        assert_eq!(runs(&f, &ix, 3, one), vec![r(3, 4)]);
    }

    #[test]
    fn a_seed_with_its_own_index_is_planned_unread() {
        // The seed's file does not even exist: its index alone says where the chunks are, and
        // the seed is marked trusted (the copy re-hashes). A rescan of it, once its bytes prove
        // other than the index says, forgets those places from the chunk given on.
        let ix = index(6);
        let dir = tempfile::tempdir().unwrap();
        let out = Out {
            path: dir.path().join("b.partial"),
            slot: None,
        };
        let gone = Seed::file(dir.path().join("not-there"));
        let mut own = ix.clone();
        own.chunks.retain(|c| c.offset != 2000);
        let p = plan(&ix, &out, std::slice::from_ref(&gone), &[Some(own.clone())]).unwrap();
        assert_eq!(p.trusted, vec![true]);
        assert_eq!(p.held, 0);
        let at = |o| Some(Found { seed: 0, offset: o });
        assert_eq!(
            p.found,
            vec![at(0), at(1000), None, at(3000), at(4000), at(5000)]
        );
        let mut found = p.found.clone();
        rescan(&ix, 3, &gone, 0, &mut found);
        assert_eq!(found, vec![at(0), at(1000), None, None, None, None]);
        // Without its index the same seed offers nothing (it cannot be read).
        let p = plan(&ix, &out, std::slice::from_ref(&gone), &[None]).unwrap();
        assert_eq!((p.trusted, p.found), (vec![false], vec![None; 6]));
    }

    #[test]
    fn requests_are_bounded() {
        // Every other chunk missing: 50 runs.
        let f: Vec<_> = (0..100)
            .map(|i| if i % 2 == 0 { None } else { at(0) })
            .collect();
        let ix = index(f.len());
        assert_eq!(runs(&f, &ix, 0, Limits { ranges: 8, ..WIDE }).len(), 8);
        // "bytes=0-999" is 11, each further ",2000-2999" 10: 41 bytes hold four ranges.
        assert_eq!(runs(&f, &ix, 0, Limits { header: 41, ..WIDE }).len(), 4);
        // A header too short for even one still asks the first.
        assert_eq!(runs(&f, &ix, 0, Limits { header: 3, ..WIDE }).len(), 1);
        // 2500 bytes of reuse allowed between ranges: two gaps of 1000 pass, the third stops.
        assert_eq!(
            runs(
                &f,
                &ix,
                0,
                Limits {
                    reuse: 2500,
                    ..WIDE
                }
            )
            .len(),
            3
        );
    }
}
