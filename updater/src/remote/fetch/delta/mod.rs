//! Delta downloads: the image's signed chunk index, chunks reused from images this machine
//! holds, the rest fetched by HTTP Range from the image itself, all in order into `.partial`.
//!
//! 1. Fetch the index (never more than the manifest's size), check its SHA-256 against the
//!    manifest, parse it and check it covers exactly the declared image size.
//! 2. Keep the chunks of `.partial` an earlier run left that match (resume at chunk
//!    granularity), chunk the local images with the index's parameters, note each reusable chunk.
//! 3. In image order: copy a reusable chunk (re-hashing it), or fetch a run of neighbouring
//!    missing chunks with one Range request (each chunk checked against its hash as it
//!    completes); only verified whole chunks reach `.partial`.
//! 4. The whole image's SHA-256 is the verdict, then the rename, exactly as for a full download.
//!
//! Any problem of the index or of a chunk falls back to the full download (which resumes from
//! the verified chunks) with one warning; a stall or a cut is retried like a full download's.

mod plan;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use reqwest::header::RANGE;
use reqwest::StatusCode;
use ring::digest::Context;
use upd_channels::chunks::{sha256, ChunkIndex};
use upd_durable::{rename_durable, PathError};

use super::file::{partial_path, range_start};
use super::writer::{sync_file, ChunkWriter};
use super::{FetchError, FetchOutcome, Fetcher, Progress};
use plan::{Found, Step};

/// Bytes of local chunks read in one blocking batch (bounds memory whatever the run).
const COPY_BATCH: u64 = 4 << 20;

/// What a delta download needs beyond the image's own target.
#[derive(Debug, Clone)]
pub struct DeltaSource {
    /// The index on each mirror, in the order of the image's URLs.
    pub index_urls: Vec<String>,
    /// The index's size, as the manifest declares it.
    pub index_size: u64,
    /// The index's SHA-256, as the manifest declares it.
    pub index_sha256: [u8; 32],
    /// Images this machine holds that may share chunks (the store's other builds).
    pub seeds: Vec<PathBuf>,
}

/// How a delta attempt ended without a result.
enum Fail {
    /// An error a full download would meet as well (local, or a transport failure after retries).
    Fetch(FetchError),
    /// A problem of the index or of a chunk: the full download takes over.
    Fallback(String),
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
}

/// Progress of the assembly: chunks placed so far, in order.
struct Assembly {
    partial: PathBuf,
    /// Chunks `0..done` are in `.partial`.
    done: usize,
    ctx: Context,
    /// Bytes received from the network (index and chunks).
    fetched: u64,
    /// Bytes copied from local images.
    reused: u64,
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
        };
        tracing::warn!(
            url = img.url,
            reason = %why,
            "delta download not possible, downloading the whole image"
        );
        let mut o = self
            .fetch_target(img.url, img.dest, img.size, img.sha256, img.progress)
            .await?;
        o.bytes_downloaded += fetched;
        Ok(o)
    }

    async fn delta(
        &self,
        img: &Image<'_>,
        d: &DeltaSource,
        fetched: &mut u64,
    ) -> Result<FetchOutcome, Fail> {
        let index = self.fetch_index(img, d, fetched).await?;
        let partial = partial_path(img.dest);
        let dir = img.dest.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(|e| PathError::new("create directory", dir, e))?;
        let (index, plan) = {
            let (p, seeds) = (partial.clone(), d.seeds.clone());
            tokio::task::spawn_blocking(move || {
                let plan = plan::plan(&index, &p, &seeds);
                (index, plan)
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
            "delta download planned"
        );
        let held = index.chunks.get(plan.held).map_or(index.size, |c| c.offset);
        let mut a = Assembly {
            partial,
            done: plan.held,
            ctx: plan.ctx,
            fetched: 0,
            reused: 0,
        };
        img.progress.start(&name_of(img.dest), img.size);
        img.progress.advance(held);
        let r = self
            .assemble(img, &index, &plan.found, &d.seeds, &mut a)
            .await;
        *fetched += a.fetched;
        img.progress.finish();
        r?;
        if a.ctx.clone().finish().as_ref() != img.sha256 {
            std::fs::remove_file(&a.partial)
                .map_err(|e| PathError::new("remove", &a.partial, e))?;
            return Err(Fail::Fallback(
                "the image assembled from its chunks does not have the manifest's SHA-256".into(),
            ));
        }
        sync_file(&a.partial).await?;
        rename_durable(&a.partial, img.dest)?;
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

    /// Place every chunk from `a.done` on, retrying what is retryable (each retry goes on from
    /// the last verified chunk).
    async fn assemble(
        &self,
        img: &Image<'_>,
        index: &ChunkIndex,
        found: &[Option<Found>],
        seeds: &[PathBuf],
        a: &mut Assembly,
    ) -> Result<(), Fail> {
        let mut attempt = 0u32;
        loop {
            let writer = ChunkWriter::open(&a.partial, false).await?;
            let r = self.run_steps(img, index, found, seeds, a, &writer).await;
            writer.close().await?;
            match r {
                Err(Fail::Fetch(e)) if e.is_retryable() && attempt < self.cfg.retries => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(url = img.url, error = %e, attempt, ?delay, "chunk fetch failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn run_steps(
        &self,
        img: &Image<'_>,
        index: &ChunkIndex,
        found: &[Option<Found>],
        seeds: &[PathBuf],
        a: &mut Assembly,
        writer: &ChunkWriter,
    ) -> Result<(), Fail> {
        let steps = plan::steps(found, a.done);
        let mut i = 0;
        while i < steps.len() {
            match steps[i] {
                Step::Fetch { first, end } => {
                    self.fetch_run(img, index, first, end, a, writer).await?;
                    i += 1;
                }
                Step::Copy { .. } => {
                    // A batch of consecutive copies, read on a blocking thread.
                    let mut batch = Vec::new();
                    let mut bytes = 0u64;
                    while let Some(Step::Copy { chunk, from }) = steps.get(i) {
                        if bytes >= COPY_BATCH {
                            break;
                        }
                        batch.push((*chunk, *from));
                        bytes += u64::from(index.chunks[*chunk].length);
                        i += 1;
                    }
                    self.copy_batch(img, index, &batch, seeds, a, writer)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Read chunks from local images, each re-hashed, and place them.
    async fn copy_batch(
        &self,
        img: &Image<'_>,
        index: &ChunkIndex,
        batch: &[(usize, Found)],
        seeds: &[PathBuf],
        a: &mut Assembly,
        writer: &ChunkWriter,
    ) -> Result<(), Fail> {
        let jobs: Vec<_> = batch
            .iter()
            .map(|(i, f)| (index.chunks[*i], seeds[f.seed].clone(), f.offset))
            .collect();
        let read = tokio::task::spawn_blocking(move || {
            jobs.into_iter()
                .map(|(c, seed, offset)| {
                    let mut buf = vec![0u8; c.length as usize];
                    File::open(&seed)
                        .and_then(|f| f.read_exact_at(&mut buf, offset))
                        .map_err(|e| format!("reading {}: {e}", seed.display()))?;
                    if sha256(&buf) != c.sha256 {
                        return Err(format!(
                            "the chunk at byte {offset} of {} changed since it was chunked",
                            seed.display()
                        ));
                    }
                    Ok(Bytes::from(buf))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .expect("copy task panicked")
        .map_err(Fail::Fallback)?;
        for b in read {
            a.reused += b.len() as u64;
            place(img, a, writer, b).await?;
        }
        Ok(())
    }

    /// Fetch chunks `first..end` with one Range request, checking each chunk as it completes.
    async fn fetch_run(
        &self,
        img: &Image<'_>,
        index: &ChunkIndex,
        first: usize,
        end: usize,
        a: &mut Assembly,
        writer: &ChunkWriter,
    ) -> Result<(), Fail> {
        let (start, stop) = (index.chunks[first].offset, index.chunks[end - 1].end());
        let req = self
            .client
            .get(img.url)
            .header(RANGE, format!("bytes={start}-{}", stop - 1));
        let mut resp = self.send(req, img.url, start).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT if range_start(&resp) == Some(start) => {}
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                return Err(Fail::Fallback(format!(
                    "{}: the server did not answer the range {start}-{} (HTTP {})",
                    img.url,
                    stop - 1,
                    resp.status().as_u16()
                )))
            }
            s => {
                return Err(FetchError::Status {
                    url: img.url.to_string(),
                    status: s.as_u16(),
                }
                .into())
            }
        }
        let too_much = || {
            Fail::Fallback(format!(
                "{}: more than the {} bytes of range {start}-{} served",
                img.url,
                stop - start,
                stop - 1
            ))
        };
        if resp.content_length().is_some_and(|n| n > stop - start) {
            return Err(too_much());
        }
        let mut buf = BytesMut::new();
        let mut i = first;
        loop {
            let got = match tokio::time::timeout(self.cfg.stall_timeout, resp.chunk()).await {
                Err(_) => {
                    return Err(Fail::Fetch(FetchError::Stalled {
                        url: img.url.to_string(),
                        timeout: self.cfg.stall_timeout,
                        received: index.chunks[i.min(end - 1)].offset + buf.len() as u64,
                    }))
                }
                Ok(Err(source)) => {
                    return Err(Fail::Fetch(FetchError::Http {
                        url: img.url.to_string(),
                        source,
                    }))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            a.fetched += got.len() as u64;
            buf.extend_from_slice(&got);
            while i < end && buf.len() >= index.chunks[i].length as usize {
                let c = index.chunks[i];
                let bytes = buf.split_to(c.length as usize).freeze();
                if sha256(&bytes) != c.sha256 {
                    return Err(Fail::Fallback(format!(
                        "{}: the bytes served for chunk {i} ({} bytes at {}) do not match its SHA-256",
                        img.url, c.length, c.offset
                    )));
                }
                place(img, a, writer, bytes).await?;
                i += 1;
            }
            if i == end && !buf.is_empty() {
                return Err(too_much());
            }
        }
        if i < end {
            return Err(Fail::Fetch(FetchError::Truncated {
                url: img.url.to_string(),
                expected: stop,
                actual: index.chunks[i].offset + buf.len() as u64,
            }));
        }
        Ok(())
    }
}

/// Hash a verified chunk into the image's digest and queue it behind the ones before.
async fn place(
    img: &Image<'_>,
    a: &mut Assembly,
    writer: &ChunkWriter,
    b: Bytes,
) -> Result<(), Fail> {
    a.ctx.update(&b);
    let n = b.len() as u64;
    if writer.send(b).await.is_err() {
        // The writer stopped on an I/O error; closing it reports which.
        return Err(Fail::Fetch(FetchError::Io(PathError::new(
            "write",
            &a.partial,
            std::io::Error::other("the writer stopped"),
        ))));
    }
    a.done += 1;
    img.progress.advance(n);
    Ok(())
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
