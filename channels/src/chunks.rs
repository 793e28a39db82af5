//! Content-defined chunk indexes of images (FastCDC 2020, SHA-256 per chunk): the file format,
//! its validation against the signed manifest, and chunking a byte stream.
//!
//! The index file (`<image>.chunks`, little-endian):
//!
//! ```text
//! 0   8  magic "UPDCIDX1"
//! 8   4  min chunk size     12  4  average chunk size     16  4  max chunk size
//! 20  8  image size         28  8  chunk count N
//! 36  N records of 44 bytes: offset u64, length u32, SHA-256 of the chunk's bytes
//! ```
//!
//! A valid index covers the image exactly: chunk 0 starts at 0, each next chunk starts where
//! the one before ended, the last ends at the image size, every length is in 1..=max.

use std::collections::HashMap;
use std::io::Read;

use fastcdc::v2020::{self, StreamCDC};
use ring::digest::{digest, SHA256};

/// The first bytes of every index file.
pub const MAGIC: &[u8; 8] = b"UPDCIDX1";
/// Bytes before the first record.
pub const HEADER_LEN: usize = 36;
/// Bytes per chunk record.
pub const RECORD_LEN: usize = 44;
/// The largest index a manifest may declare (about 760 000 chunks, a 46 GiB image at 64 KiB).
pub const MAX_INDEX_BYTES: u64 = 32 << 20;

/// FastCDC 2020 chunk size bounds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// No cut before this many bytes (except at the end).
    pub min: u32,
    /// The average chunk size the cut masks aim at.
    pub avg: u32,
    /// A cut at the latest here.
    pub max: u32,
}

/// What `upd-channel` writes: 16 KiB / 64 KiB / 256 KiB (casync's ratios).
pub const DEFAULT_PARAMS: Params = Params {
    min: 16 << 10,
    avg: 64 << 10,
    max: 256 << 10,
};

impl Params {
    /// Whether FastCDC 2020 accepts these bounds (even, ordered, inside its limits).
    pub fn check(&self) -> Result<(), String> {
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&min)
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&avg)
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && [min, avg, max].iter().all(|v| v % 2 == 0);
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes min {min} / avg {avg} / max {max} are outside what FastCDC 2020 accepts"
            ))
        }
    }
}

/// One chunk of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First byte of the chunk in the image.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u32,
    /// SHA-256 of its bytes.
    pub sha256: [u8; 32],
}

impl Chunk {
    /// One past its last byte.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.length)
    }
}

/// The chunks of one image, in order, covering it exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkIndex {
    /// The chunker's bounds (a machine chunks its own images with the same ones).
    pub params: Params,
    /// The image size.
    pub size: u64,
    /// The chunks, in offset order.
    pub chunks: Vec<Chunk>,
}

/// Why an index file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The file does not start with [`MAGIC`] or is shorter than its header.
    #[error("not a chunk index (no UPDCIDX1 header)")]
    Magic,
    /// The length is not header + count × record.
    #[error("the index is {actual} bytes, its header announces {count} chunks ({expected} bytes)")]
    Length {
        /// Chunks announced.
        count: u64,
        /// Bytes that count implies.
        expected: u64,
        /// Bytes held.
        actual: u64,
    },
    /// The chunker bounds are unusable.
    #[error("{0}")]
    Params(String),
    /// The index describes an image of another size than the manifest declares.
    #[error("the index describes {index} bytes, the manifest declares an image of {manifest}")]
    Size {
        /// Size in the index header.
        index: u64,
        /// Size in the manifest.
        manifest: u64,
    },
    /// A chunk does not start where the one before ended (overlap, gap or out of order).
    #[error("chunk {number} starts at byte {offset}, expected {expected} (chunks overlap, leave a gap or are out of order)")]
    Order {
        /// The chunk's position in the index.
        number: usize,
        /// Its offset.
        offset: u64,
        /// Where the one before ended.
        expected: u64,
    },
    /// A chunk is empty or longer than the maximum.
    #[error("chunk {number} is {length} bytes, outside 1..={max}")]
    ChunkLength {
        /// The chunk's position in the index.
        number: usize,
        /// Its length.
        length: u32,
        /// The maximum.
        max: u32,
    },
    /// The chunks end before or after the image.
    #[error("the chunks cover {covered} bytes, the image has {size}")]
    Coverage {
        /// Bytes covered.
        covered: u64,
        /// The image size.
        size: u64,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl ChunkIndex {
    /// Chunk everything `r` yields with `params` (streaming: memory is one `max`-sized buffer).
    pub fn build<R: Read>(r: R, params: Params) -> std::io::Result<Self> {
        let mut chunks = Vec::new();
        let mut size = 0;
        for c in chunk_stream(r, params) {
            let (c, _) = c?;
            size = c.end();
            chunks.push(c);
        }
        Ok(Self {
            params,
            size,
            chunks,
        })
    }

    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + RECORD_LEN * self.chunks.len());
        v.extend_from_slice(MAGIC);
        for p in [self.params.min, self.params.avg, self.params.max] {
            v.extend_from_slice(&p.to_le_bytes());
        }
        v.extend_from_slice(&self.size.to_le_bytes());
        v.extend_from_slice(&(self.chunks.len() as u64).to_le_bytes());
        for c in &self.chunks {
            v.extend_from_slice(&c.offset.to_le_bytes());
            v.extend_from_slice(&c.length.to_le_bytes());
            v.extend_from_slice(&c.sha256);
        }
        v
    }

    /// Parse an index file and check it describes exactly an image of `image_size` bytes.
    pub fn from_bytes(b: &[u8], image_size: u64) -> Result<Self, IndexError> {
        if b.len() < HEADER_LEN || &b[..8] != MAGIC {
            return Err(IndexError::Magic);
        }
        let params = Params {
            min: u32_at(b, 8),
            avg: u32_at(b, 12),
            max: u32_at(b, 16),
        };
        params.check().map_err(IndexError::Params)?;
        let size = u64_at(b, 20);
        let count = u64_at(b, 28);
        let expected = count
            .checked_mul(RECORD_LEN as u64)
            .and_then(|n| n.checked_add(HEADER_LEN as u64))
            .unwrap_or(u64::MAX);
        if expected != b.len() as u64 {
            return Err(IndexError::Length {
                count,
                expected,
                actual: b.len() as u64,
            });
        }
        if size != image_size {
            return Err(IndexError::Size {
                index: size,
                manifest: image_size,
            });
        }
        let mut chunks = Vec::with_capacity(count as usize);
        let mut end = 0u64;
        for (number, rec) in b[HEADER_LEN..].chunks_exact(RECORD_LEN).enumerate() {
            let c = Chunk {
                offset: u64_at(rec, 0),
                length: u32_at(rec, 8),
                sha256: rec[12..44].try_into().expect("32 bytes"),
            };
            if c.offset != end {
                return Err(IndexError::Order {
                    number,
                    offset: c.offset,
                    expected: end,
                });
            }
            if c.length == 0 || c.length > params.max {
                return Err(IndexError::ChunkLength {
                    number,
                    length: c.length,
                    max: params.max,
                });
            }
            end = c.end();
            if end > size {
                return Err(IndexError::Coverage { covered: end, size });
            }
            chunks.push(c);
        }
        if end != size {
            return Err(IndexError::Coverage { covered: end, size });
        }
        Ok(Self {
            params,
            size,
            chunks,
        })
    }

    /// Chunk number of each distinct hash, first occurrence first.
    pub fn by_hash(&self) -> HashMap<[u8; 32], usize> {
        let mut m = HashMap::with_capacity(self.chunks.len());
        for (i, c) in self.chunks.iter().enumerate() {
            m.entry(c.sha256).or_insert(i);
        }
        m
    }
}

/// SHA-256 of `data`, as chunk records hold it.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    digest(&SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The chunks of a byte stream with their bytes, one at a time (memory: one `max`-sized buffer).
pub fn chunk_stream<R: Read>(
    r: R,
    params: Params,
) -> impl Iterator<Item = std::io::Result<(Chunk, Vec<u8>)>> {
    StreamCDC::new(
        r,
        params.min as usize,
        params.avg as usize,
        params.max as usize,
    )
    .map(|c| {
        let c = c.map_err(std::io::Error::from)?;
        let chunk = Chunk {
            offset: c.offset,
            length: u32::try_from(c.length).expect("chunks are at most 16 MiB"),
            sha256: sha256(&c.data),
        };
        Ok((chunk, c.data))
    })
}

#[cfg(test)]
mod tests;
