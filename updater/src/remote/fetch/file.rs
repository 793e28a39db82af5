//! Downloading one target: `.partial` file, Range resume, size limit and SHA-256 in flight, rename on success.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use ring::digest::{Context, SHA256};

use super::writer::{sync_file, ChunkWriter, Place};
use super::{FetchError, FetchOutcome, Fetcher, Progress};
use upd_durable::{rename_durable, PathError};

/// Read size when re-hashing a partial file left by an earlier run.
const REHASH_BUF: usize = 1 << 20;

/// The `.partial` sibling a download of `dest` is written to.
pub fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!("{name}.partial"))
}

/// The bytes held so far: their count and the SHA-256 state over exactly those bytes.
struct Partial {
    path: PathBuf,
    /// Writing into a slot: the byte offset of the slot on the disk at `path` (no file, no rename).
    slot: Option<u64>,
    len: u64,
    ctx: Context,
    /// Some of the bytes held came from an earlier run or from an answer to a Range request.
    resumed: bool,
}

impl Partial {
    /// Take over a partial file from an earlier run (re-hashing it), or start empty; one larger than
    /// `expected` cannot be a prefix of the target and is discarded.
    async fn load(path: PathBuf, expected: u64) -> Result<Self, PathError> {
        tokio::task::spawn_blocking(move || {
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::empty(path)),
                Err(e) => return Err(PathError::new("open", &path, e)),
            };
            let len = file
                .metadata()
                .map_err(|e| PathError::new("stat", &path, e))?
                .len();
            if len > expected {
                fs::remove_file(&path).map_err(|e| PathError::new("remove", &path, e))?;
                return Ok(Self::empty(path));
            }
            let mut ctx = Context::new(&SHA256);
            let mut buf = vec![0u8; REHASH_BUF];
            let mut seen = 0u64;
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| PathError::new("read", &path, e))?;
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
                seen += n as u64;
            }
            Ok(Self {
                path,
                slot: None,
                len: seen,
                ctx,
                resumed: seen > 0,
            })
        })
        .await
        .expect("re-hash task panicked")
    }

    fn empty(path: PathBuf) -> Self {
        Self {
            path,
            slot: None,
            len: 0,
            ctx: Context::new(&SHA256),
            resumed: false,
        }
    }

    /// Remove what was written, if it is a partial file (a slot is simply overwritten next time).
    fn discard(&self) -> Result<(), PathError> {
        match self.slot {
            Some(_) => Ok(()),
            None => {
                fs::remove_file(&self.path).map_err(|e| PathError::new("remove", &self.path, e))
            }
        }
    }

    fn reset(&mut self) {
        self.len = 0;
        self.ctx = Context::new(&SHA256);
        self.resumed = false;
    }
}

/// The target as the manifest declares it, and where it goes.
pub(crate) struct Target<'a> {
    pub url: &'a str,
    pub dest: &'a Path,
    pub size: u64,
    pub sha256: [u8; 32],
    pub progress: &'a dyn Progress,
    /// `Some(offset)`: `dest` is a disk and the bytes go to `offset..offset + size` of it.
    pub slot: Option<u64>,
}

impl Fetcher {
    /// Download `url` to `dest` through `dest.partial`, resuming a partial left by an earlier run.
    ///
    /// Never holds more than `expected_size` bytes, hashes while the bytes stream, retries
    /// connection errors, 5xx and stalls with exponential backoff (each retry resumes), and
    /// renames to `dest` (fsync'd, directory too) only after the SHA-256 matched. On a mismatch
    /// the partial file is deleted.
    pub async fn fetch_target(
        &self,
        url: &str,
        dest: &Path,
        expected_size: u64,
        expected_sha256: [u8; 32],
        progress: &dyn Progress,
    ) -> Result<FetchOutcome, FetchError> {
        let t = Target {
            url,
            dest,
            size: expected_size,
            sha256: expected_sha256,
            progress,
            slot: None,
        };
        self.run_target(&t).await
    }

    /// Stream `url` into an OS slot: bytes `offset..offset + capacity` of the disk `device`,
    /// hashing on the way and never writing past the declared size (refused up front when the
    /// image is larger than the slot). Nothing is renamed: the caller verifies by reading back.
    #[allow(clippy::too_many_arguments)]
    pub async fn fetch_into_slot(
        &self,
        url: &str,
        device: &Path,
        offset: u64,
        capacity: u64,
        expected_size: u64,
        expected_sha256: [u8; 32],
        progress: &dyn Progress,
    ) -> Result<FetchOutcome, FetchError> {
        if expected_size > capacity {
            return Err(FetchError::SlotTooSmall {
                url: url.to_string(),
                device: device.to_path_buf(),
                size: expected_size,
                capacity,
            });
        }
        let t = Target {
            url,
            dest: device,
            size: expected_size,
            sha256: expected_sha256,
            progress,
            slot: Some(offset),
        };
        self.run_target(&t).await
    }

    async fn run_target(&self, t: &Target<'_>) -> Result<FetchOutcome, FetchError> {
        let (dest, progress, expected_size) = (t.dest, t.progress, t.size);
        // A slot is written on the disk device: name the image after its URL instead.
        let named = match t.slot {
            Some(_) => Some(Path::new(t.url.rsplit('/').next().unwrap_or(t.url))),
            None => Some(dest),
        };
        let name = named
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        progress.start(&name, expected_size);
        let result = self.fetch_target_inner(t, &name).await;
        progress.finish();
        result
    }

    async fn fetch_target_inner(
        &self,
        t: &Target<'_>,
        name: &str,
    ) -> Result<FetchOutcome, FetchError> {
        let dir = t.dest.parent().unwrap_or(Path::new("/"));
        upd_durable::create_dir_durable(dir)?;
        let mut part = match t.slot {
            None => Partial::load(partial_path(t.dest), t.size).await?,
            Some(offset) => Partial {
                slot: Some(offset),
                ..Partial::empty(t.dest.to_path_buf())
            },
        };
        t.progress.advance(part.len);
        let mut downloaded = 0u64;
        let mut from_zero_again = true;
        loop {
            self.complete(t, name, &mut part, &mut downloaded).await?;
            let actual = part.ctx.clone().finish();
            if actual.as_ref() == t.sha256 {
                break;
            }
            part.discard()?;
            // Bytes kept from an earlier run or an earlier answer may be what is wrong (a server
            // that answered a Range with another range, say): drop them and start from zero,
            // once; a mismatch over a download from zero is the verdict.
            if part.resumed && std::mem::take(&mut from_zero_again) {
                tracing::warn!(
                    url = t.url,
                    "SHA-256 mismatch over a resumed download: downloading it again from zero"
                );
                part.reset();
                t.progress.start(name, t.size);
                continue;
            }
            return Err(FetchError::HashMismatch {
                url: t.url.to_string(),
                path: t.dest.to_path_buf(),
                expected: hex::encode(t.sha256),
                actual: hex::encode(actual.as_ref()),
            });
        }
        sync_file(&part.path).await?;
        if part.slot.is_none() {
            rename_durable(&part.path, t.dest)?;
        }
        // Bytes of an earlier run's partial that made it into the result (zero if the server restarted us).
        Ok(FetchOutcome {
            bytes_downloaded: downloaded,
            resumed_from: part.len.saturating_sub(downloaded),
            reused: 0,
        })
    }

    /// Bring `part` to the full size, retrying what is retryable with backoff (each retry resumes).
    async fn complete(
        &self,
        t: &Target<'_>,
        name: &str,
        part: &mut Partial,
        downloaded: &mut u64,
    ) -> Result<(), FetchError> {
        self.retrying(t.url, "download", retryable, async || {
            self.attempt(t, name, part, downloaded).await
        })
        .await
    }

    /// Run `op` again after a failure that `retryable` names the retryable cause of, until it
    /// succeeds, fails otherwise, or the configured retries are spent, sleeping the backoff in
    /// between (`op` resumes from whatever the attempts before it kept).
    pub(crate) async fn retrying<T, E>(
        &self,
        url: &str,
        what: &str,
        retryable: impl Fn(&E) -> Option<&FetchError>,
        mut op: impl AsyncFnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let mut attempt = 0u32;
        loop {
            match op().await {
                Err(e) if attempt < self.cfg.retries && retryable(&e).is_some() => {
                    let delay = self.backoff(attempt);
                    let error = retryable(&e).expect("checked");
                    tracing::warn!(url, %error, attempt, ?delay, "{what} failed, retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// Exponential backoff: base, 2*base, 4*base... capped at one minute.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.cfg
            .backoff_base
            .saturating_mul(1 << attempt.min(16))
            .min(Duration::from_mins(1))
    }

    /// One request: bring `part` to the full size or fail. `part` stays consistent with the file on disk.
    async fn attempt(
        &self,
        t: &Target<'_>,
        name: &str,
        part: &mut Partial,
        downloaded: &mut u64,
    ) -> Result<(), FetchError> {
        if part.len == t.size {
            return Ok(());
        }
        let url = t.url.to_string();
        let mut req = self.client.get(t.url);
        if part.len > 0 {
            req = req.header(RANGE, format!("bytes={}-", part.len));
        }
        let mut resp = self.send(req, t.url, part.len).await?;
        let status = resp.status();
        let resume = part.len > 0
            && status == StatusCode::PARTIAL_CONTENT
            && range_start(&resp) == Some(part.len);
        match status {
            StatusCode::NOT_FOUND => return Err(FetchError::NotFound { url }),
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
            StatusCode::RANGE_NOT_SATISFIABLE if part.len > 0 => {
                // The server holds fewer bytes than our partial: it is no prefix of this file, start over next time.
                part.discard()?;
                part.reset();
                return Err(FetchError::Status { url, status: 416 });
            }
            s => {
                return Err(FetchError::Status {
                    url,
                    status: s.as_u16(),
                })
            }
        }
        if !resume && part.len > 0 {
            // A 200, or a 206 for another range: the body starts at byte 0.
            tracing::info!(
                url = t.url,
                held = part.len,
                "server ignored the range, restarting from zero"
            );
            part.reset();
            t.progress.start(name, t.size);
        }
        part.resumed |= resume;
        if resp
            .content_length()
            .is_some_and(|n| part.len.saturating_add(n) > t.size)
        {
            return Err(FetchError::TooLarge { url, limit: t.size });
        }
        let place = match part.slot {
            None if part.len == 0 => Place::Truncate,
            None => Place::Append,
            Some(offset) => Place::At(offset + part.len),
        };
        // The hash goes with the writer (on a thread of its own) and comes back with it.
        let ctx = std::mem::replace(&mut part.ctx, Context::new(&SHA256));
        let writer = ChunkWriter::open_hashing(&part.path, place, ctx).await?;
        let received = self.receive(&mut resp, t, part, &writer, downloaded).await;
        // Always drain the writer, so that the file holds exactly the bytes hashed into `part`.
        part.ctx = writer
            .close_hashed()
            .await?
            .expect("a hashing writer gives its hash back");
        received?;
        if part.len < t.size {
            return Err(FetchError::Truncated {
                url,
                expected: t.size,
                actual: part.len,
            });
        }
        Ok(())
    }

    /// Stream the body into the writer (which hashes it), counting on the way; never past `t.size`.
    async fn receive(
        &self,
        resp: &mut reqwest::Response,
        t: &Target<'_>,
        part: &mut Partial,
        writer: &ChunkWriter,
        downloaded: &mut u64,
    ) -> Result<(), FetchError> {
        loop {
            let chunk = match tokio::time::timeout(self.cfg.stall_timeout, resp.chunk()).await {
                Err(_) => {
                    let (timeout, received) = (self.cfg.stall_timeout, part.len);
                    return Err(FetchError::Stalled {
                        url: t.url.to_string(),
                        timeout,
                        received,
                    });
                }
                Ok(Err(source)) => {
                    return Err(FetchError::Http {
                        url: t.url.to_string(),
                        source,
                    })
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Ok(Some(c))) => c,
            };
            let n = chunk.len() as u64;
            if part.len + n > t.size {
                return Err(FetchError::TooLarge {
                    url: t.url.to_string(),
                    limit: t.size,
                });
            }
            if writer.send(chunk).await.is_err() {
                // The writer stopped on an I/O error; `close` reports it.
                return Ok(());
            }
            part.len += n;
            *downloaded += n;
            t.progress.advance(n);
        }
    }
}

/// `e` itself when a retry may succeed (a connection error, 5xx, a stall, a short body).
pub(crate) fn retryable(e: &FetchError) -> Option<&FetchError> {
    e.is_retryable().then_some(e)
}

/// The first byte position of a 206's `Content-Range: bytes a-b/n`.
pub(crate) fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    ContentRange::parse(v).map(|r| r.first)
}

/// A `Content-Range` value of a 206 answer, `bytes first-last/complete` (RFC 9110 §14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The first byte position.
    pub first: u64,
    /// The last byte position (inclusive), not before `first`.
    pub last: u64,
    /// The complete length, when the server states it (`*` otherwise); beyond `last`.
    pub complete: Option<u64>,
}

impl ContentRange {
    /// Parse the server's (untrusted) value: `None` for anything but `bytes a-b/n` or
    /// `bytes a-b/*` with decimal positions, `a ≤ b`, and `b < n`. Optional whitespace around
    /// the value is allowed, as HTTP field values carry it.
    pub fn parse(value: &str) -> Option<ContentRange> {
        let num = |s: &str| -> Option<u64> {
            // Digits only: `u64::from_str` would also take a leading `+`.
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let (range, complete) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let (first, last) = (num(first)?, num(last)?);
        let complete = match complete {
            "*" => None,
            n => Some(num(n)?),
        };
        (first <= last && complete.is_none_or(|n| last < n)).then_some(ContentRange {
            first,
            last,
            complete,
        })
    }
}

impl std::fmt::Display for ContentRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bytes {}-{}/", self.first, self.last)?;
        match self.complete {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("*"),
        }
    }
}
