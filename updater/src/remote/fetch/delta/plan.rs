//! Where each chunk of the target comes from: the verified prefix of `.partial`, a chunk of an
//! image this machine already holds, or the server (runs of neighbouring chunks, one range each).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use ring::digest::{Context, SHA256};
use upd_channels::chunks::{chunk_stream, sha256, ChunkIndex};
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

/// One stretch of the work, in image order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Copy chunk `chunk` from a local image.
    Copy { chunk: usize, from: Found },
    /// Fetch chunks `first..end` with one Range request.
    Fetch { first: usize, end: usize },
}

/// The steps that complete the target from chunk `from` on: neighbouring chunks to fetch are
/// coalesced into one range.
pub(crate) fn steps(found: &[Option<Found>], from: usize) -> Vec<Step> {
    let mut out = Vec::new();
    let mut i = from;
    while i < found.len() {
        if let Some(f) = found[i] {
            out.push(Step::Copy { chunk: i, from: f });
            i += 1;
        } else {
            let first = i;
            while i < found.len() && found[i].is_none() {
                i += 1;
            }
            out.push(Step::Fetch { first, end: i });
        }
    }
    out
}

/// Build the plan: keep the longest prefix of `out` whose chunks match the index (cutting a
/// partial file there), then chunk each seed with the index's parameters and note where each
/// missing chunk is. A seed that cannot be read is skipped: it was only a shortcut.
pub(crate) fn plan(index: &ChunkIndex, out: &Out, seeds: &[Seed]) -> Result<Plan, PathError> {
    let (held, ctx) = match out.slot {
        None => verified_prefix(index, &out.path)?,
        Some(offset) => slot_prefix(index, &out.path, offset)?,
    };
    let mut want: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, c) in index.chunks.iter().enumerate().skip(held) {
        want.entry(c.sha256).or_default().push(i);
    }
    let mut found = vec![None; index.chunks.len()];
    for (n, seed) in seeds.iter().enumerate() {
        if want.is_empty() {
            break;
        }
        if let Err(e) = scan(index, seed, n, &mut want, &mut found) {
            tracing::debug!(seed = %seed.path.display(), offset = seed.offset, error = %e, "local image not usable for chunks");
        }
    }
    Ok(Plan { held, ctx, found })
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
        if let Some(chunks) = want.remove(&c.sha256) {
            for i in chunks {
                found[i] = Some(Found {
                    seed: n,
                    offset: c.offset,
                });
            }
        }
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

    fn at(seed: usize) -> Option<Found> {
        Some(Found { seed, offset: 0 })
    }

    #[test]
    fn neighbours_to_fetch_become_one_range() {
        // Fetch, fetch, copy, fetch, copy, copy, fetch fetch fetch: three ranges, three copies.
        let f = [None, None, at(0), None, at(1), at(0), None, None, None];
        let s = steps(&f, 0);
        assert_eq!(
            s,
            vec![
                Step::Fetch { first: 0, end: 2 },
                Step::Copy {
                    chunk: 2,
                    from: Found { seed: 0, offset: 0 }
                },
                Step::Fetch { first: 3, end: 4 },
                Step::Copy {
                    chunk: 4,
                    from: Found { seed: 1, offset: 0 }
                },
                Step::Copy {
                    chunk: 5,
                    from: Found { seed: 0, offset: 0 }
                },
                Step::Fetch { first: 6, end: 9 },
            ]
        );
        assert_eq!(steps(&f, 7), vec![Step::Fetch { first: 7, end: 9 }]);
        assert!(steps(&f, 9).is_empty());
    }
}
