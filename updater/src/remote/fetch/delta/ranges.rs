//! Fetching runs of missing chunks: several runs in one request (`Range: bytes=a-b,c-d,…`,
//! answered as `multipart/byteranges`), or one run a request from a server that answers single
//! ranges only; the reusable chunks between two runs are copied as the answer gets to them.
//!
//! What is accepted of a 206 to `bytes=R1,…,Rk` (ascending, apart), in image order:
//! 1. a `multipart/byteranges` body whose parts come in the order asked, each starting where the
//!    next range asked starts and ending where one asked ends (a server may coalesce ranges,
//!    RFC 9110 §15.3.7.2: the chunks between come from the answer, verified as any other);
//! 2. a single part (its own `Content-Range`) of the same shape: a server that coalesced all the
//!    ranges, or one that answers only the first (then it is asked single ranges from then on);
//! 3. anything else (a part not asked for, out of order or overlapping, a complete length that is
//!    not the image's, a garbled or missing boundary, a part longer than its range, a body ending
//!    before its close delimiter) falls back to the whole image. A 200 to a multi-range request
//!    (a server with a range limit, or an object store) is asked again with single ranges; a 200
//!    to a single range falls back, as a server ignoring Range does.

use bytes::BytesMut;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use upd_channels::chunks::sha256;

use super::super::writer::ChunkWriter;
use super::byteranges::{self, Event, Parser};
use super::plan::{self, Run};
use super::{place, Assembly, Fail, Job};
use crate::remote::fetch::{ContentRange, FetchError, Fetcher};

/// How the parts of a 206 answer arrive.
enum Parts {
    /// A `multipart/byteranges` body.
    Multi(Parser),
    /// The body is one part: the answer's `Content-Range` (until reported), bytes still to come.
    Single {
        range: Option<ContentRange>,
        left: u64,
    },
}

/// A 206 answer being read as parts.
struct Answer<'u> {
    url: &'u str,
    /// The Range value asked, for messages.
    ask: String,
    resp: reqwest::Response,
    parts: Parts,
}

impl Fetcher {
    /// Ranges to ask `url`'s server in one request.
    pub(crate) fn ranges_for(&self, url: &str) -> usize {
        let single = origin(url).is_some_and(|o| {
            self.single_range
                .lock()
                .expect("single-range set poisoned")
                .contains(&o)
        });
        if single {
            1
        } else {
            self.cfg.ranges_per_request.max(1)
        }
    }

    /// Remember that `url`'s server answers one range a request.
    fn single_ranges_from_now(&self, url: &str, why: &str) {
        let Some(o) = origin(url) else { return };
        let new = self
            .single_range
            .lock()
            .expect("single-range set poisoned")
            .insert(o);
        if new {
            tracing::info!(
                url,
                reason = why,
                "the server does not answer multi-range requests: single ranges from now on"
            );
        }
    }

    /// Fetch `runs` (from chunk `a.done`, which starts the first) with one request, copying the
    /// reusable chunks between them in order; the answer may cover fewer runs (then the caller
    /// asks for the rest).
    pub(super) async fn fetch_runs(
        &self,
        j: Job<'_>,
        runs: &[Run],
        a: &mut Assembly,
        writer: &ChunkWriter,
    ) -> Result<(), Fail> {
        let (img, index) = (j.img, j.index);
        let spans: Vec<(u64, u64)> = runs.iter().map(|r| plan::span(index, *r)).collect();
        let ask = spans
            .iter()
            .map(|(a, b)| format!("{a}-{}", b - 1))
            .collect::<Vec<_>>()
            .join(",");
        let req = self
            .client
            .get(img.url)
            .header(RANGE, format!("bytes={ask}"));
        a.requests += 1;
        let resp = self.send(req, img.url, spans[0].0).await?;
        let parts = match resp.status() {
            StatusCode::PARTIAL_CONTENT => parts_of(&resp, img.url, &ask)?,
            StatusCode::OK if runs.len() > 1 => {
                // nginx past max_ranges, Apache past MaxRanges, object stores: the whole file.
                self.single_ranges_from_now(img.url, "HTTP 200 to a multi-range request");
                return Ok(());
            }
            StatusCode::OK => {
                return Err(Fail::Fallback(format!(
                    "{}: the server did not answer the range {ask} (HTTP 200)",
                    img.url
                )))
            }
            s => {
                return Err(FetchError::Status {
                    url: img.url.to_string(),
                    status: s.as_u16(),
                }
                .into())
            }
        };
        if let Parts::Single { left, .. } = parts {
            if resp.content_length().is_some_and(|n| n > left) {
                return Err(too_much(img.url, &ask));
            }
        }
        let single = matches!(parts, Parts::Single { .. });
        let mut ans = Answer {
            url: img.url,
            ask,
            resp,
            parts,
        };
        let mut want = 0;
        loop {
            let at = index.chunks.get(a.done).map_or(index.size, |c| c.offset);
            let r = match ans.next(self, at, &mut a.fetched).await? {
                Event::End => break,
                Event::Data(_) => return Err(ans.bad("bytes outside any part")),
                Event::Part(r) => r,
            };
            let last = check_part(&ans, img.size, &spans, want, r).map_err(Fail::Fallback)?;
            // The chunks reused before this part, then the part's own, each verified as it completes.
            self.copy_until(j, a, writer, runs[want].first).await?;
            receive(self, j, &mut ans, runs[last].end, a, writer).await?;
            want = last + 1;
        }
        if want == 0 {
            return Err(Fail::Fallback(format!(
                "{}: the answer to {} holds no part",
                img.url, ans.ask
            )));
        }
        if single && want < runs.len() {
            self.single_ranges_from_now(img.url, "one range answered of several");
        }
        Ok(())
    }
}

/// The index of the last run that part `r` covers: it must start where run `want` starts, end
/// where a run ends, and belong to a file of the image's size.
fn check_part(
    ans: &Answer<'_>,
    size: u64,
    spans: &[(u64, u64)],
    want: usize,
    r: ContentRange,
) -> Result<usize, String> {
    let (url, ask) = (ans.url, &ans.ask);
    if let Some(n) = r.complete.filter(|n| *n != size) {
        return Err(format!(
            "{url}: part {r} of the answer to {ask} is of a {n}-byte file, the manifest declares {size} bytes"
        ));
    }
    let Some(&(start, _)) = spans.get(want) else {
        return Err(format!(
            "{url}: part {r} of the answer to {ask} comes after every range asked"
        ));
    };
    if r.first != start {
        let overlap = want > 0 && r.first < spans[want - 1].1;
        return Err(if overlap {
            format!("{url}: part {r} of the answer to {ask} overlaps the part before")
        } else {
            format!(
                "{url}: part {r} of the answer to {ask} was not asked for, or is out of order (the next range asked starts at {start})"
            )
        });
    }
    (want..spans.len())
        .find(|&j| spans[j].1 == r.last + 1)
        .ok_or_else(|| {
            format!("{url}: part {r} of the answer to {ask} does not end where a range asked ends")
        })
}

/// Receive the current part's chunks from `a.done` up to `stop`, each checked against its hash
/// before it is placed.
async fn receive(
    f: &Fetcher,
    j: Job<'_>,
    ans: &mut Answer<'_>,
    stop: usize,
    a: &mut Assembly,
    writer: &ChunkWriter,
) -> Result<(), Fail> {
    let (img, index) = (j.img, j.index);
    let mut buf = BytesMut::new();
    while a.done < stop {
        let c = index.chunks[a.done];
        if buf.len() >= c.length as usize {
            let bytes = buf.split_to(c.length as usize).freeze();
            if sha256(&bytes) != c.sha256 {
                return Err(Fail::Fallback(format!(
                    "{}: the bytes served for chunk {} ({} bytes at {}) do not match its SHA-256",
                    img.url, a.done, c.length, c.offset
                )));
            }
            place(img, a, writer, bytes).await?;
            continue;
        }
        match ans
            .next(f, c.offset + buf.len() as u64, &mut a.fetched)
            .await?
        {
            Event::Data(d) => buf.extend_from_slice(&d),
            // The parser counts a part's bytes: it ends exactly after the chunks it covers.
            Event::Part(_) | Event::End => return Err(ans.bad("a part ended early")),
        }
    }
    Ok(())
}

impl Answer<'_> {
    /// The next event of the answer, reading the body as needed (the stall timeout applies to
    /// each read; `at` is the image byte reached, for the message).
    async fn next(&mut self, f: &Fetcher, at: u64, fetched: &mut u64) -> Result<Event, Fail> {
        loop {
            match &mut self.parts {
                Parts::Multi(p) => {
                    if let Some(ev) = p.next_event().map_err(|e| self.bad(&e.to_string()))? {
                        return Ok(ev);
                    }
                }
                Parts::Single { range, .. } => {
                    if let Some(r) = range.take() {
                        return Ok(Event::Part(r));
                    }
                }
            }
            let got = match tokio::time::timeout(f.cfg.stall_timeout, self.resp.chunk()).await {
                Err(_) => {
                    return Err(Fail::Fetch(FetchError::Stalled {
                        url: self.url.to_string(),
                        timeout: f.cfg.stall_timeout,
                        received: at,
                    }))
                }
                Ok(Err(source)) => {
                    return Err(Fail::Fetch(FetchError::Http {
                        url: self.url.to_string(),
                        source,
                    }))
                }
                Ok(Ok(c)) => c,
            };
            *fetched += got.as_ref().map_or(0, |c| c.len() as u64);
            match (&mut self.parts, got) {
                (Parts::Multi(p), Some(c)) => p.feed(&c),
                (Parts::Multi(p), None) => {
                    p.finish().map_err(|e| self.bad(&e.to_string()))?;
                    return Ok(Event::End);
                }
                (Parts::Single { left, .. }, Some(c)) => {
                    if c.len() as u64 > *left {
                        return Err(too_much(self.url, &self.ask));
                    }
                    *left -= c.len() as u64;
                    return Ok(Event::Data(c));
                }
                (Parts::Single { left: 0, .. }, None) => return Ok(Event::End),
                (Parts::Single { left, .. }, None) => {
                    return Err(Fail::Fetch(FetchError::Truncated {
                        url: self.url.to_string(),
                        expected: at + *left,
                        actual: at,
                    }))
                }
            }
        }
    }

    fn bad(&self, problem: &str) -> Fail {
        Fail::Fallback(format!(
            "{}: the multipart/byteranges answer to {}: {problem}",
            self.url, self.ask
        ))
    }
}

/// How the parts of a 206 come: a multipart body, or the answer's own Content-Range.
fn parts_of(resp: &reqwest::Response, url: &str, ask: &str) -> Result<Parts, Fail> {
    let ct = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match ct.map(byteranges::boundary_of) {
        Some(Err(e)) => Err(Fail::Fallback(format!("{url}: the answer to {ask}: {e}"))),
        Some(Ok(Some(b))) => Ok(Parts::Multi(Parser::new(&b))),
        _ => {
            let r = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(ContentRange::parse)
                .ok_or_else(|| {
                    Fail::Fallback(format!(
                        "{url}: a 206 to {ask} with neither a valid Content-Range nor a multipart body"
                    ))
                })?;
            Ok(Parts::Single {
                range: Some(r),
                left: r.last - r.first + 1,
            })
        }
    }
}

fn too_much(url: &str, ask: &str) -> Fail {
    Fail::Fallback(format!(
        "{url}: more bytes served than the Content-Range of the answer to {ask}"
    ))
}

/// `scheme://host:port` of a URL: the unit that answers multi-range requests or not.
fn origin(url: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}
