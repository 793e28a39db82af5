//! Streaming downloads: hash and size limit in flight, .partial files, Range resume, retries, stall timeout.

mod delta;
mod error;
mod file;
mod progress;
mod writer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;

pub use delta::{byteranges, DeltaSource, Seed, SeedIndex, SlotRange};
pub use error::FetchError;
pub use file::{partial_path, ContentRange};
pub use progress::{LogProgress, NoProgress, Progress};

/// Timeouts, retries and parallelism of a [`Fetcher`].
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Longest wait for a TCP (and TLS) connection.
    pub timeout_connect: Duration,
    /// Longest time without a single byte (response headers or body) before the transfer counts as stalled.
    pub stall_timeout: Duration,
    /// Further attempts after a retryable failure (connection error, 5xx, stall, short body).
    pub retries: u32,
    /// First backoff delay; doubled at each retry, capped at one minute.
    pub backoff_base: Duration,
    /// Downloads run at once by [`Fetcher::fetch_all`].
    pub parallel: usize,
    /// Byte ranges a delta download asks in one request (`Range: bytes=a-b,c-d,…`, answered
    /// as `multipart/byteranges`); 1: single ranges only. A server seen answering only one
    /// range is asked single ranges for the rest of the run.
    pub ranges_per_request: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            timeout_connect: Duration::from_secs(15),
            stall_timeout: Duration::from_mins(1),
            retries: 4,
            backoff_base: Duration::from_secs(1),
            parallel: 4,
            ranges_per_request: 32,
        }
    }
}

/// The answer to a conditional manifest request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestFetch {
    /// The server's copy still has the ETag we sent (HTTP 304).
    NotModified,
    /// New bytes, with the server's ETag for the next conditional request.
    Fetched {
        /// The manifest bytes, exactly as served (signatures cover these bytes).
        bytes: Vec<u8>,
        /// The ETag header, if the server sent one.
        etag: Option<String>,
    },
}

/// What one successful target download did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOutcome {
    /// Bytes received from the network by this call.
    pub bytes_downloaded: u64,
    /// Bytes reused from a partial file left by an earlier run.
    pub resumed_from: u64,
    /// Bytes copied from images this machine already held (delta download).
    pub reused: u64,
}

/// One download for [`Fetcher::fetch_all`].
#[derive(Clone)]
pub struct FetchItem {
    /// Where to fetch from: the same file on each mirror, tried in order.
    pub urls: Vec<String>,
    /// The final path.
    pub dest: PathBuf,
    /// The size the manifest declares.
    pub size: u64,
    /// The SHA-256 the manifest declares.
    pub sha256: [u8; 32],
    /// Where progress goes.
    pub progress: Arc<dyn Progress>,
    /// The image's chunk index and the local images to reuse chunks of, for a delta download.
    pub delta: Option<DeltaSource>,
}

/// An HTTP client with upd's download policy.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    cfg: FetchConfig,
    /// Origins (`scheme://host:port`) seen not answering multi-range requests: single ranges
    /// only for them, for the rest of this run (shared by the clones).
    single_range: Arc<Mutex<HashSet<String>>>,
}

impl Fetcher {
    /// Build the client (rustls, no automatic decompression) for `cfg`.
    pub fn new(cfg: FetchConfig) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.timeout_connect)
            .user_agent(concat!("upd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Self {
            client,
            cfg,
            single_range: Arc::default(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &FetchConfig {
        &self.cfg
    }

    /// Fetch a manifest with `If-None-Match: etag`; bodies over `max_len` are refused while streaming.
    ///
    /// Asks for `gzip` (a publisher serves a pre-compressed `manifest.json.gz`): a gzip body is
    /// inflated here, refused when it would inflate past `max_len` (a decompression bomb), and
    /// the bytes returned are always the exact document as published (signatures cover them).
    pub async fn fetch_manifest(
        &self,
        url: &str,
        etag: Option<&str>,
        max_len: u64,
    ) -> Result<ManifestFetch, FetchError> {
        self.retrying(url, "manifest fetch", file::retryable, async || {
            self.manifest_once(url, etag, max_len).await
        })
        .await
    }

    async fn manifest_once(
        &self,
        url: &str,
        etag: Option<&str>,
        max_len: u64,
    ) -> Result<ManifestFetch, FetchError> {
        let mut req = self.client.get(url).header(ACCEPT_ENCODING, "gzip");
        if let Some(tag) = etag {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let mut resp = self.send(req, url, 0).await?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => return Ok(ManifestFetch::NotModified),
            StatusCode::NOT_FOUND => {
                return Err(FetchError::NotFound {
                    url: url.to_string(),
                })
            }
            StatusCode::OK => {}
            s => {
                return Err(FetchError::Status {
                    url: url.to_string(),
                    status: s.as_u16(),
                })
            }
        }
        let too_large = || FetchError::ManifestTooLarge {
            url: url.to_string(),
            limit: max_len,
        };
        if resp.content_length().is_some_and(|n| n > max_len) {
            return Err(too_large());
        }
        let new_etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let gzip = match resp
            .headers()
            .get(CONTENT_ENCODING)
            .map(reqwest::header::HeaderValue::as_bytes)
        {
            None => false,
            Some(v) if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") => true,
            Some(v) if v.eq_ignore_ascii_case(b"identity") => false,
            Some(v) => {
                return Err(FetchError::BadEncoding {
                    url: url.to_string(),
                    problem: format!(
                        "has Content-Encoding {:?}, of which upd only decodes gzip",
                        String::from_utf8_lossy(v)
                    ),
                })
            }
        };
        let mut bytes = Vec::new();
        loop {
            let chunk = match tokio::time::timeout(self.cfg.stall_timeout, resp.chunk()).await {
                Err(_) => {
                    let (timeout, received) = (self.cfg.stall_timeout, bytes.len() as u64);
                    return Err(FetchError::Stalled {
                        url: url.to_string(),
                        timeout,
                        received,
                    });
                }
                Ok(Err(source)) => {
                    return Err(FetchError::Http {
                        url: url.to_string(),
                        source,
                    })
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            if (bytes.len() + chunk.len()) as u64 > max_len {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        if gzip {
            bytes = gunzip(url, &bytes, max_len)?;
        }
        Ok(ManifestFetch::Fetched {
            bytes,
            etag: new_etag,
        })
    }

    /// Send a request, counting the wait for response headers against the connect and stall timeouts.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        held: u64,
    ) -> Result<reqwest::Response, FetchError> {
        let limit = self.cfg.timeout_connect + self.cfg.stall_timeout;
        match tokio::time::timeout(limit, req.send()).await {
            Err(_) => Err(FetchError::Stalled {
                url: url.to_string(),
                timeout: limit,
                received: held,
            }),
            Ok(Err(source)) => Err(FetchError::Http {
                url: url.to_string(),
                source,
            }),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Run [`Fetcher::fetch_target`] for every item, at most `parallel` at once; results in item order.
    pub async fn fetch_all(
        &self,
        items: &[FetchItem],
        parallel: usize,
    ) -> Vec<Result<FetchOutcome, FetchError>> {
        stream::iter(items)
            .map(|it| self.fetch_item(it))
            .buffered(parallel.max(1))
            .collect()
            .await
    }
}

impl Fetcher {
    /// One item from its mirrors: a delta download when it has an index and the machine holds
    /// builds to reuse chunks of, else a whole one.
    async fn fetch_item(&self, it: &FetchItem) -> Result<FetchOutcome, FetchError> {
        self.from_mirrors(&it.urls, |url| async move {
            // No other build to take chunks from (a first pull): the index could only add a
            // request and a second hashing pass; the whole download is the cheaper path.
            let Some(d) = it.delta.as_ref().filter(|d| !d.seeds.is_empty()) else {
                return self
                    .fetch_target(url, &it.dest, it.size, it.sha256, it.progress.as_ref())
                    .await;
            };
            let mirror = it.urls.iter().position(|u| u == url).unwrap_or(0);
            let img = delta::Image {
                url,
                index_url: d.index_urls.get(mirror).map_or("", String::as_str),
                dest: &it.dest,
                size: it.size,
                sha256: it.sha256,
                progress: it.progress.as_ref(),
                slot: None,
            };
            self.fetch_delta(&img, d).await
        })
        .await
    }

    /// Run `fetch` on each of `urls` (the same file on each mirror) until one succeeds: a
    /// mirror that 404s, stalls, errs or serves bytes whose hash or size is wrong is passed
    /// over for the next (a partial it left is resumed there, and the hash is still the
    /// verdict). An error of this machine (no space, a local write) stops at once. All
    /// failing, the first mirror's error is returned.
    pub async fn from_mirrors<'a, F, Fut>(
        &self,
        urls: &'a [String],
        fetch: F,
    ) -> Result<FetchOutcome, FetchError>
    where
        F: Fn(&'a str) -> Fut,
        Fut: std::future::Future<Output = Result<FetchOutcome, FetchError>>,
    {
        let mut first = None;
        for url in urls {
            match fetch(url).await {
                Ok(o) => return Ok(o),
                Err(e) if e.is_local() => return Err(e),
                Err(e) => {
                    if urls.len() > 1 {
                        tracing::warn!(url = %url, error = %e, "passed over a mirror");
                    }
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.expect("every item names at least one URL"))
    }
}

/// Inflate a gzip body, refusing to produce more than `max_len` bytes (a decompression bomb
/// stops there: memory stays bounded by the limit) and refusing anything but one whole gzip
/// member.
fn gunzip(url: &str, gz: &[u8], max_len: u64) -> Result<Vec<u8>, FetchError> {
    use std::io::Read;
    let bad = |problem: String| FetchError::BadEncoding {
        url: url.to_string(),
        problem,
    };
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(gz).take(max_len + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| bad(format!("is not valid gzip: {e}")))?;
    if out.len() as u64 > max_len {
        return Err(bad(format!(
            "inflates past the {max_len}-byte limit (refused as a decompression bomb)"
        )));
    }
    Ok(out)
}

/// Fail unless the filesystem holding `dir` has `needed` bytes available to unprivileged users.
pub fn ensure_free_space(dir: &Path, needed: u64) -> Result<(), FetchError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        FetchError::Io(upd_durable::PathError::new(
            "statvfs",
            dir,
            std::io::Error::from(e),
        ))
    })?;
    let available = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
    if available < needed {
        return Err(FetchError::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
