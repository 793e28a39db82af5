//! Delta downloads: the image's signed chunk index, chunks reused from images this machine
//! holds, the rest fetched by HTTP Range from the image itself, all in order into `.partial`
//! (an extension) or into the inactive slot (an OS image).
//!
//! 1. Fetch the index (never more than the manifest's size), check its SHA-256 against the
//!    manifest, parse it and check it covers exactly the declared image size.
//! 2. Keep the chunks of `.partial` (or of the slot) an earlier run left that match (resume at
//!    chunk granularity), then note each reusable chunk of the seeds (byte ranges of local
//!    images: the store's other builds, the booted slot): from a seed's own signed index where
//!    it has one (the booted release's, while the channel lists it: nothing of the seed is read
//!    to plan), by chunking the seed with the index's parameters otherwise.
//! 3. In image order: copy a reusable chunk (re-hashing it), or fetch runs of neighbouring
//!    missing chunks, several runs in one multi-range request where the server answers them
//!    (`ranges.rs`), one a request otherwise (each chunk checked against its hash as it
//!    completes); only verified whole chunks reach `.partial` or the slot.
//! 4. The whole image's SHA-256 is the verdict, then the rename, exactly as for a full download
//!    (a slot is not renamed: the caller reads it back).
//!
//! Any problem of the index or of a chunk falls back to the full download (which resumes from
//! the verified chunks) with one warning; a stall or a cut is retried like a full download's.
//! One exception: a seed planned from its own index whose bytes prove other than the index says
//! (a corrupted region of the booted slot) is chunked after all and the plan made again from the
//! chunk reached, without a warning; a second mismatch in it falls back as above.

pub mod byteranges;
mod plan;
mod ranges;

use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ring::digest::{Context, SHA256};
use upd_channels::chunks::{sha256, ChunkIndex};
use upd_durable::{rename_durable, PathError};

use super::file::partial_path;
use super::writer::{sync_file, ChunkWriter, Place};
use super::{FetchError, FetchItem, FetchOutcome, Fetcher, Progress};
use plan::Found;

/// Bytes of local chunks read in one blocking batch (bounds memory whatever the run).
const COPY_BATCH: u64 = 4 << 20;
/// Bounds of a multi-range request (the number of ranges comes from the configuration).
const LIMITS: plan::Limits = plan::Limits {
    ranges: 1,
    header: 4096,
    reuse: 256 << 20,
};

/// What a delta download needs beyond the image's own target.
#[derive(Debug, Clone)]
pub struct DeltaSource {
    /// The index on each mirror, in the order of the image's URLs.
    pub index_urls: Vec<String>,
    /// The index's size, as the manifest declares it.
    pub index_size: u64,
    /// The index's SHA-256, as the manifest declares it.
    pub index_sha256: [u8; 32],
    /// Byte ranges this machine holds that may share chunks (the store's other builds, the
    /// booted slot).
    pub seeds: Vec<Seed>,
}

/// A readable byte range of a local file or disk that may share chunks with the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The file or disk.
    pub path: PathBuf,
    /// Where the range starts.
    pub offset: u64,
    /// Its length; `None`: to the end of the file.
    pub len: Option<u64>,
    /// The signed chunk index of the image these bytes should be (the booted release's, while
    /// the channel lists it): the plan reads where its chunks are from the index instead of
    /// chunking the bytes, and the copy's re-hash catches bytes that differ from it.
    pub index: Option<SeedIndex>,
}

/// A seed's own chunk index, as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedIndex {
    /// The index on each mirror, tried in order.
    pub urls: Vec<String>,
    /// Its size, as the manifest declares it.
    pub size: u64,
    /// Its SHA-256, as the manifest declares it.
    pub sha256: [u8; 32],
}

impl Seed {
    /// The whole of the file `path`.
    pub fn file(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            len: None,
            index: None,
        }
    }

    /// Bytes `offset..offset + len` of `path` (a slot of a disk, say).
    pub fn range(path: PathBuf, offset: u64, len: u64) -> Self {
        Self {
            path,
            offset,
            len: Some(len),
            index: None,
        }
    }

    /// The same range, planned from `index` (the signed index of the image it holds).
    #[must_use]
    pub fn with_index(self, index: SeedIndex) -> Self {
        Self {
            index: Some(index),
            ..self
        }
    }
}

/// Where an OS image goes: bytes `offset..offset + capacity` of the disk an item names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRange {
    /// The slot's first byte on the disk.
    pub offset: u64,
    /// The slot's size: an image larger than this is refused up front.
    pub capacity: u64,
}

/// The file the chunks are written to.
pub(crate) struct Out {
    /// `.partial` of the destination, or the disk holding the slot.
    pub path: PathBuf,
    /// Writing into a slot: its first byte on the disk at `path` (never cut, never renamed).
    pub slot: Option<u64>,
}

impl Out {
    /// Where chunk bytes at image offset `at` go: appended to the partial file, or into the slot.
    fn place(&self, at: u64) -> Place {
        match self.slot {
            None => Place::Append,
            Some(o) => Place::At(o + at),
        }
    }
}

/// How a delta attempt ended without a result.
enum Fail {
    /// An error a full download would meet as well (local, or a transport failure after retries).
    Fetch(FetchError),
    /// A problem of the index or of a chunk: the full download takes over.
    Fallback(String),
    /// A chunk of seed `.0`, planned from the seed's own index, does not hold what that index
    /// says: the seed is chunked after all, and the plan made again from there.
    Stale(usize),
}

impl Fail {
    /// The transport error a retry may get past, if this is one.
    fn retryable(&self) -> Option<&FetchError> {
        match self {
            Fail::Fetch(e) => super::file::retryable(e),
            Fail::Fallback(_) | Fail::Stale(_) => None,
        }
    }
}

impl From<FetchError> for Fail {
    fn from(e: FetchError) -> Self {
        if e.is_local() || e.is_retryable() {
            Fail::Fetch(e)
        } else {
            Fail::Fallback(e.to_string())
        }
    }
}

impl From<PathError> for Fail {
    fn from(e: PathError) -> Self {
        Fail::Fetch(FetchError::Io(e))
    }
}

/// The image as the manifest declares it.
pub(crate) struct Image<'a> {
    pub url: &'a str,
    pub index_url: &'a str,
    pub dest: &'a Path,
    pub size: u64,
    pub sha256: [u8; 32],
    pub progress: &'a dyn Progress,
    /// `Some`: `dest` is a disk and the image goes into this slot of it.
    pub slot: Option<SlotRange>,
}

/// What every step of one assembly reads: the image, its index, where each chunk is found
/// locally, and the seeds those places are in.
#[derive(Clone, Copy)]
pub(crate) struct Job<'a> {
    pub img: &'a Image<'a>,
    pub index: &'a ChunkIndex,
    pub seeds: &'a [Seed],
}

/// Progress of the assembly: chunks placed so far, in order.
struct Assembly {
    out: Out,
    /// For each chunk, where a local image holds it (`None`: fetch it).
    found: Vec<Option<Found>>,
    /// For each seed, whether its chunks were taken from its own index, unread.
    trusted: Vec<bool>,
    /// Chunks `0..done` are in `.partial`.
    done: usize,
    ctx: Context,
    /// Bytes received from the network (index and chunks).
    fetched: u64,
    /// Bytes copied from local images.
    reused: u64,
    /// Range requests sent.
    requests: u32,
}

impl Fetcher {
    /// Download an image that has a chunk index, reusing the chunks of `d.seeds`; on any index
    /// or chunk problem, warn once and download it whole.
    pub(crate) async fn fetch_delta(
        &self,
        img: &Image<'_>,
        d: &DeltaSource,
    ) -> Result<FetchOutcome, FetchError> {
        let mut fetched = 0;
        let why = match self.delta(img, d, &mut fetched).await {
            Ok(o) => return Ok(o),
            Err(Fail::Fetch(e)) => return Err(e),
            Err(Fail::Fallback(why)) => why,
            Err(Fail::Stale(n)) => format!("seed {n} changed under the download"),
        };
        tracing::warn!(
            url = img.url,
            reason = %why,
            "delta download not possible, downloading the whole image"
        );
        let mut o = match img.slot {
            None => {
                self.fetch_target(img.url, img.dest, img.size, img.sha256, img.progress)
                    .await?
            }
            Some(s) => {
                self.fetch_into_slot(
                    img.url,
                    img.dest,
                    s.offset,
                    s.capacity,
                    img.size,
                    img.sha256,
                    img.progress,
                )
                .await?
            }
        };
        o.bytes_downloaded += fetched;
        Ok(o)
    }

    async fn delta(
        &self,
        img: &Image<'_>,
        d: &DeltaSource,
        fetched: &mut u64,
    ) -> Result<FetchOutcome, Fail> {
        if let Some(s) = img.slot.filter(|s| img.size > s.capacity) {
            return Err(Fail::Fetch(FetchError::SlotTooSmall {
                url: img.url.to_string(),
                device: img.dest.to_path_buf(),
                size: img.size,
                capacity: s.capacity,
            }));
        }
        let index = self.fetch_index(img, d, fetched).await?;
        let out = match img.slot {
            None => {
                let dir = img.dest.parent().unwrap_or(Path::new("/"));
                std::fs::create_dir_all(dir)
                    .map_err(|e| PathError::new("create directory", dir, e))?;
                Out {
                    path: partial_path(img.dest),
                    slot: None,
                }
            }
            Some(s) => Out {
                path: img.dest.to_path_buf(),
                slot: Some(s.offset),
            },
        };
        let seed_indexes = self.seed_indexes(&index, &d.seeds, fetched).await;
        let (index, plan, out) = {
            let seeds = d.seeds.clone();
            tokio::task::spawn_blocking(move || {
                let plan = plan::plan(&index, &out, &seeds, &seed_indexes);
                (index, plan, out)
            })
            .await
            .expect("planning task panicked")
        };
        let plan = plan?;
        tracing::info!(
            url = img.url,
            chunks = index.chunks.len(),
            held = plan.held,
            reusable = plan.reusable(&index),
            seeds = d.seeds.len(),
            from_index = plan.trusted.iter().filter(|t| **t).count(),
            "delta download planned"
        );
        let held = index.chunks.get(plan.held).map_or(index.size, |c| c.offset);
        let mut a = Assembly {
            out,
            found: plan.found,
            trusted: plan.trusted,
            done: plan.held,
            ctx: plan.ctx,
            fetched: 0,
            reused: 0,
            requests: 0,
        };
        img.progress.start(&name_of(img), img.size);
        img.progress.advance(held);
        let job = Job {
            img,
            index: &index,
            seeds: &d.seeds,
        };
        let r = self.assemble(job, &mut a).await;
        *fetched += a.fetched;
        img.progress.finish();
        r?;
        if a.ctx.clone().finish().as_ref() != img.sha256 {
            if a.out.slot.is_none() {
                std::fs::remove_file(&a.out.path)
                    .map_err(|e| PathError::new("remove", &a.out.path, e))?;
            }
            return Err(Fail::Fallback(
                "the image assembled from its chunks does not have the manifest's SHA-256".into(),
            ));
        }
        sync_file(&a.out.path).await?;
        if a.out.slot.is_none() {
            rename_durable(&a.out.path, img.dest)?;
        }
        tracing::info!(
            url = img.url,
            requests = a.requests,
            fetched = *fetched,
            reused = a.reused,
            "delta download complete"
        );
        Ok(FetchOutcome {
            bytes_downloaded: *fetched,
            resumed_from: held,
            reused: a.reused,
        })
    }

    /// The index: at most the declared size, the declared SHA-256, covering exactly the image.
    async fn fetch_index(
        &self,
        img: &Image<'_>,
        d: &DeltaSource,
        fetched: &mut u64,
    ) -> Result<ChunkIndex, Fail> {
        let bytes = match self.fetch_manifest(img.index_url, None, d.index_size).await {
            Ok(super::ManifestFetch::Fetched { bytes, .. }) => bytes,
            Ok(super::ManifestFetch::NotModified) => {
                return Err(Fail::Fallback("index: unexpected HTTP 304".into()))
            }
            Err(FetchError::ManifestTooLarge { url, limit }) => {
                return Err(Fail::Fallback(format!(
                    "chunk index {url} is larger than the {limit} bytes the manifest declares"
                )))
            }
            Err(e) => return Err(Fail::Fallback(format!("chunk index: {e}"))),
        };
        *fetched += bytes.len() as u64;
        let actual = sha256(&bytes);
        if actual != d.index_sha256 || bytes.len() as u64 != d.index_size {
            return Err(Fail::Fallback(format!(
                "chunk index {}: {} bytes with SHA-256 {}, the manifest declares {} bytes with {}",
                img.index_url,
                bytes.len(),
                hex::encode(actual),
                d.index_size,
                hex::encode(d.index_sha256)
            )));
        }
        ChunkIndex::from_bytes(&bytes, img.size)
            .map_err(|e| Fail::Fallback(format!("chunk index {}: {e}", img.index_url)))
    }

    /// Each seed's own index, where it has one that can be fetched, matches the manifest, covers
    /// the seed's length and was cut with the target's parameters; `None` where the seed is to
    /// be chunked instead (and why, in the debug log).
    async fn seed_indexes(
        &self,
        target: &ChunkIndex,
        seeds: &[Seed],
        fetched: &mut u64,
    ) -> Vec<Option<ChunkIndex>> {
        let mut out = Vec::with_capacity(seeds.len());
        for seed in seeds {
            let (Some(si), Some(len)) = (&seed.index, seed.len) else {
                out.push(None);
                continue;
            };
            let mut got = None;
            for url in &si.urls {
                match self.fetch_manifest(url, None, si.size).await {
                    Ok(super::ManifestFetch::Fetched { bytes, .. }) => {
                        *fetched += bytes.len() as u64;
                        let parsed = if sha256(&bytes) == si.sha256 {
                            ChunkIndex::from_bytes(&bytes, len).map_err(|e| e.to_string())
                        } else {
                            Err("not the manifest's SHA-256".into())
                        };
                        got = match parsed {
                            Ok(ix) if ix.params == target.params => Some(ix),
                            Ok(_) => {
                                tracing::debug!(
                                    url,
                                    "seed index cut with other chunk sizes; chunking the seed"
                                );
                                None
                            }
                            Err(e) => {
                                tracing::debug!(url, error = %e, "seed index refused; chunking the seed");
                                None
                            }
                        };
                        break;
                    }
                    Ok(super::ManifestFetch::NotModified) => {}
                    Err(e) => {
                        tracing::debug!(url, error = %e, "seed index not fetched");
                    }
                }
            }
            out.push(got);
        }
        out
    }

    /// Place every chunk from `a.done` on, retrying what is retryable (each retry goes on from
    /// the last verified chunk).
    async fn assemble(&self, j: Job<'_>, a: &mut Assembly) -> Result<(), Fail> {
        self.retrying(j.img.url, "chunk fetch", Fail::retryable, async || {
            let at = j
                .index
                .chunks
                .get(a.done)
                .map_or(j.index.size, |c| c.offset);
            // The image's digest goes on over each chunk placed, on the writer's hashing thread.
            let ctx = std::mem::replace(&mut a.ctx, Context::new(&SHA256));
            let writer = ChunkWriter::open_hashing(&a.out.path, a.out.place(at), ctx).await?;
            let r = self.run_steps(j, a, &writer).await;
            a.ctx = writer.close_hashed().await?.expect("opened hashing");
            r
        })
        .await
    }

    /// From chunk `a.done` to the end: batches of reusable chunks copied, runs of missing ones
    /// fetched, several runs a request where the server answers multi-range requests.
    async fn run_steps(
        &self,
        j: Job<'_>,
        a: &mut Assembly,
        writer: &ChunkWriter,
    ) -> Result<(), Fail> {
        while a.done < j.index.chunks.len() {
            let step = if a.found[a.done].is_some() {
                self.copy_until(j, a, writer, j.index.chunks.len()).await
            } else {
                let limits = plan::Limits {
                    ranges: self.ranges_for(j.img.url),
                    ..LIMITS
                };
                let runs = plan::runs(&a.found, j.index, a.done, limits);
                self.fetch_runs(j, &runs, a, writer).await
            };
            match step {
                Err(Fail::Stale(n)) => self.rescan(j, a, n).await,
                r => r?,
            }
        }
        Ok(())
    }

    /// Seed `n`, planned from its own index, holds other bytes than that index says (a
    /// corrupted or rewritten region): chunk it after all and look for the chunks still to
    /// place (from `a.done` on) in what it really holds; a later mismatch there falls back.
    async fn rescan(&self, j: Job<'_>, a: &mut Assembly, n: usize) {
        tracing::info!(seed = %j.seeds[n].path.display(), "a chunk of the seed differs from its index; chunking the seed");
        a.trusted[n] = false;
        let (index, seed) = (j.index.clone(), j.seeds[n].clone());
        let (from, mut found) = (a.done, std::mem::take(&mut a.found));
        a.found = tokio::task::spawn_blocking(move || {
            plan::rescan(&index, from, &seed, n, &mut found);
            found
        })
        .await
        .expect("planning task panicked");
    }

    /// Copy the reusable chunks from `a.done` up to the first missing one or `stop`, in batches.
    async fn copy_until(
        &self,
        j: Job<'_>,
        a: &mut Assembly,
        writer: &ChunkWriter,
        stop: usize,
    ) -> Result<(), Fail> {
        while a.done < stop {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            let mut i = a.done;
            while let Some(Some(from)) = a.found.get(i).filter(|_| i < stop) {
                if bytes >= COPY_BATCH {
                    break;
                }
                batch.push((i, *from));
                bytes += u64::from(j.index.chunks[i].length);
                i += 1;
            }
            if batch.is_empty() {
                return Ok(());
            }
            self.copy_batch(j, &batch, a, writer).await?;
        }
        Ok(())
    }

    /// Read chunks from local images, each re-hashed, and place them.
    async fn copy_batch(
        &self,
        j: Job<'_>,
        batch: &[(usize, Found)],
        a: &mut Assembly,
        writer: &ChunkWriter,
    ) -> Result<(), Fail> {
        let jobs: Vec<_> = batch
            .iter()
            .map(|(i, f)| {
                let seed = &j.seeds[f.seed];
                let at = seed.offset + f.offset;
                (
                    j.index.chunks[*i],
                    seed.path.clone(),
                    at,
                    f.seed,
                    a.trusted[f.seed],
                )
            })
            .collect();
        // A chunk of a trusted seed that differs from its index is `Stale` (the seed is chunked
        // then); of a chunked seed it means the seed changed since: the full download takes over.
        let read = tokio::task::spawn_blocking(move || {
            // Each seed opened once, and the span of the batch it serves asked of the kernel at
            // once (WILLNEED: read in large requests while the chunks are hashed one by one).
            let mut files: HashMap<usize, File> = HashMap::new();
            for (_, seed, _, n, _) in &jobs {
                if files.contains_key(n) {
                    continue;
                }
                let f = File::open(seed)
                    .map_err(|e| Fail::Fallback(format!("reading {}: {e}", seed.display())))?;
                let spans = jobs.iter().filter(|job| job.3 == *n);
                let start = spans.clone().map(|job| job.2).min().unwrap_or(0);
                let end = spans.map(|(c, _, o, _, _)| o + u64::from(c.length)).max();
                // Only a span about the batch's size (chunks scattered over the seed: no advice).
                let near = end.filter(|e| e - start <= 2 * COPY_BATCH);
                if let Some(len) = near.and_then(|e| NonZeroU64::new(e - start)) {
                    let _ = rustix::fs::fadvise(&f, start, Some(len), rustix::fs::Advice::WillNeed);
                }
                files.insert(*n, f);
            }
            jobs.into_iter()
                .map(|(c, seed, offset, n, trusted)| {
                    let mut buf = vec![0u8; c.length as usize];
                    files[&n]
                        .read_exact_at(&mut buf, offset)
                        .map_err(|e| Fail::Fallback(format!("reading {}: {e}", seed.display())))?;
                    if sha256(&buf) == c.sha256 {
                        Ok(Bytes::from(buf))
                    } else if trusted {
                        Err(Fail::Stale(n))
                    } else {
                        Err(Fail::Fallback(format!(
                            "the chunk at byte {offset} of {} changed since it was chunked",
                            seed.display()
                        )))
                    }
                })
                .collect::<Result<Vec<_>, Fail>>()
        })
        .await
        .expect("copy task panicked")?;
        for b in read {
            a.reused += b.len() as u64;
            place(j.img, a, writer, b).await?;
        }
        Ok(())
    }
}

/// Queue a verified chunk behind the ones before (the writer hashes it into the image's digest).
async fn place(
    img: &Image<'_>,
    a: &mut Assembly,
    writer: &ChunkWriter,
    b: Bytes,
) -> Result<(), Fail> {
    let n = b.len() as u64;
    if writer.send(b).await.is_err() {
        // The writer stopped on an I/O error; closing it reports which.
        return Err(Fail::Fetch(FetchError::Io(PathError::new(
            "write",
            &a.out.path,
            std::io::Error::other("the writer stopped"),
        ))));
    }
    a.done += 1;
    img.progress.advance(n);
    Ok(())
}

/// The name progress shows: the file's, or for a slot (written on the disk) the URL's last part.
fn name_of(img: &Image<'_>) -> String {
    match img.slot {
        Some(_) => img.url.rsplit('/').next().unwrap_or(img.url).to_string(),
        None => img
            .dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

impl Fetcher {
    /// Stream an OS image into slot `slot` of the disk `it.dest`, from the first of its mirrors
    /// that serves it: a delta download when it has an index (the seeds being, say, the booted
    /// slot), else a whole one. Nothing is renamed: the caller verifies by reading back.
    pub async fn fetch_os_image(
        &self,
        it: &FetchItem,
        slot: SlotRange,
    ) -> Result<FetchOutcome, FetchError> {
        let progress: Arc<dyn Progress> = it.progress.clone();
        self.from_mirrors(&it.urls, |url| {
            let progress = progress.clone();
            async move {
                let Some(d) = &it.delta else {
                    return self
                        .fetch_into_slot(
                            url,
                            &it.dest,
                            slot.offset,
                            slot.capacity,
                            it.size,
                            it.sha256,
                            progress.as_ref(),
                        )
                        .await;
                };
                let mirror = it.urls.iter().position(|u| u == url).unwrap_or(0);
                let img = Image {
                    url,
                    index_url: d.index_urls.get(mirror).map_or("", String::as_str),
                    dest: &it.dest,
                    size: it.size,
                    sha256: it.sha256,
                    progress: progress.as_ref(),
                    slot: Some(slot),
                };
                self.fetch_delta(&img, d).await
            }
        })
        .await
    }
}
