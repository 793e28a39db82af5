//! A fault-injecting HTTP server on 127.0.0.1: drops, stalls, corrupt bytes, wrong lengths and errors, with counters;
//! multi-range requests answered as `multipart/byteranges`, or as servers that do not support them
//! do, or wrongly in each way a client must refuse.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode, Uri};
use axum::Router;
use bytes::Bytes;
use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Bytes per body chunk the server yields.
const CHUNK: u64 = 64 * 1024;

/// What the server does wrong for one path. `times: None` means on every request, `Some(k)` on the first k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Serve correctly.
    Normal,
    /// Close the connection after `at` bytes of this response's body (Content-Length promised more).
    CutAfter {
        /// Body bytes sent before the cut.
        at: u64,
        /// Requests on which to cut.
        times: Option<u32>,
    },
    /// Send `at` bytes of this response's body, then send nothing more, keeping the connection open.
    StallAfter {
        /// Body bytes sent before the stall.
        at: u64,
        /// Requests on which to stall.
        times: Option<u32>,
    },
    /// Flip the byte at this absolute file offset in every response that covers it.
    CorruptByte(u64),
    /// Append `extra` bytes after the content; with `declare` the Content-Length counts them, without it
    /// the body is chunked so the client only learns by counting (endless data).
    Extra {
        /// Bytes appended.
        extra: u64,
        /// Whether Content-Length includes them.
        declare: bool,
    },
    /// Flip the byte at this absolute file offset only in answers to a closed Range request
    /// (`bytes=a-b`, what a delta download asks), not to a whole GET or an open-ended resume.
    CorruptInRange(u64),
    /// Answer every request with the whole file (200), as servers without Range support do.
    IgnoreRange,
    /// Answer `code` (e.g. 500) with an empty body to the first `times` requests, then serve correctly.
    Status {
        /// The HTTP status.
        code: u16,
        /// Requests answered with it.
        times: u32,
    },
    /// Answer a multi-range request with its first range only, as a single-part 206 (legal, RFC
    /// 9110 §14.2: servers may ignore the rest); single ranges as usual.
    FirstRangeOnly,
    /// Answer a multi-range request with the whole file (200), single ranges as usual (nginx
    /// past `max_ranges`, Apache past `MaxRanges`).
    WholeForMultiRange,
    /// Answer a multi-range request with one single-part 206 from the first range's start to the
    /// last one's end (a legal coalescing).
    CoalesceRanges,
    /// Answer multi-range requests with a broken `multipart/byteranges`, this way.
    Multipart(BadMultipart),
}

/// Ways a `multipart/byteranges` answer can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadMultipart {
    /// The second part starts 4096 bytes after the range asked (its bytes those it claims).
    Unasked,
    /// The second part starts 100 bytes before the end of the first.
    Overlap,
    /// The parts in the reverse order.
    Reversed,
    /// `Content-Type: multipart/byteranges` without a boundary.
    NoBoundary,
    /// The body's boundary is not the Content-Type's.
    GarbledBoundary,
    /// The first part carries 10 bytes more than its Content-Range.
    LongPart,
    /// The body ends (Content-Length agreeing) after the first part: no more parts, no close
    /// delimiter.
    Truncated,
}

impl BadMultipart {
    /// Every way, for a test to run them all.
    pub const ALL: [BadMultipart; 7] = [
        BadMultipart::Unasked,
        BadMultipart::Overlap,
        BadMultipart::Reversed,
        BadMultipart::NoBoundary,
        BadMultipart::GarbledBoundary,
        BadMultipart::LongPart,
        BadMultipart::Truncated,
    ];
}

/// Where a path's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Bytes held in memory.
    Memory(Bytes),
    /// A file read (streamed) at request time.
    File(PathBuf),
}

/// Counters for one path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Body bytes handed to the connection (content, corrupt or extra), all requests together.
    pub body_bytes: u64,
    /// The Range header of each request, in order.
    pub ranges: Vec<Option<String>>,
}

impl Stats {
    /// Every closed range asked (`a-b` of `bytes=a-b,c-d`), in order, as inclusive positions.
    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.ranges
            .iter()
            .flatten()
            .flat_map(|r| r.trim().trim_start_matches("bytes=").split(','))
            .filter_map(|spec| {
                let (a, b) = spec.trim().split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            })
            .collect()
    }

    /// Whether the first request asked several ranges and every later one a single range (what
    /// a fetcher does once a server has answered a multi-range request with less).
    pub fn multi_then_single(&self) -> bool {
        let several = |r: &Option<String>| r.as_deref().is_some_and(|r| r.contains(','));
        self.ranges.first().is_some_and(several) && !self.ranges[1..].iter().any(several)
    }

    /// Whether every request asked closed ranges only (what a delta download asks).
    pub fn closed_ranges_only(&self) -> bool {
        self.ranges.iter().all(|r| {
            r.as_deref().is_some_and(|r| {
                r.trim_start_matches("bytes=").split(',').all(|s| {
                    s.split_once('-')
                        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                })
            })
        })
    }
}

struct Entry {
    source: Source,
    size: u64,
    etag: String,
    fault: Fault,
    fired: Arc<AtomicU32>,
    requests: u64,
    sent: Arc<AtomicU64>,
    ranges: Vec<Option<String>>,
}

type Table = Arc<Mutex<HashMap<String, Entry>>>;

/// The running server; stops when dropped.
pub struct FaultServer {
    addr: SocketAddr,
    table: Table,
    task: tokio::task::JoinHandle<()>,
}

impl FaultServer {
    /// Start on an ephemeral 127.0.0.1 port, serving nothing yet.
    pub async fn start() -> io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let table: Table = Arc::default();
        let app = Router::new().fallback(handle).with_state(table.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, table, task })
    }

    /// A two-worker runtime and a server started on it, for synchronous tests; the runtime must
    /// outlive the server.
    pub fn start_with_runtime() -> (tokio::runtime::Runtime, FaultServer) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = rt.block_on(FaultServer::start()).expect("start server");
        (rt, server)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serve `data` at `path` with `fault`, replacing what was there and its counters.
    pub fn put_bytes(&self, path: &str, data: impl Into<Bytes>, fault: Fault) {
        let data: Bytes = data.into();
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        let etag = format!("\"{}\"", hex::encode(&digest.as_ref()[..12]));
        self.insert(
            path,
            Source::Memory(data.clone()),
            data.len() as u64,
            etag,
            fault,
        );
    }

    /// Serve the file at `file` under `path` with `fault`; its size is read now.
    pub fn put_file(&self, path: &str, file: PathBuf, fault: Fault) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&file)?;
        let etag = format!(
            "\"{:x}-{:x}-{:x}\"",
            meta.ino(),
            meta.size(),
            meta.mtime_nsec()
        );
        self.insert(path, Source::File(file), meta.len(), etag, fault);
        Ok(())
    }

    fn insert(&self, path: &str, source: Source, size: u64, etag: String, fault: Fault) {
        let entry = Entry {
            source,
            size,
            etag,
            fault,
            fired: Arc::default(),
            requests: 0,
            sent: Arc::default(),
            ranges: Vec::new(),
        };
        self.table.lock().unwrap().insert(path.to_string(), entry);
    }

    /// Change the fault of `path` (and re-arm its `times` count), keeping its counters.
    pub fn set_fault(&self, path: &str, fault: Fault) {
        let mut t = self.table.lock().unwrap();
        let e = t.get_mut(path).expect("set_fault on a path never put");
        e.fault = fault;
        e.fired = Arc::default();
    }

    /// The counters of `path` (zero if never put).
    pub fn stats(&self, path: &str) -> Stats {
        let t = self.table.lock().unwrap();
        t.get(path).map_or_else(Stats::default, |e| Stats {
            requests: e.requests,
            body_bytes: e.sent.load(Ordering::SeqCst),
            ranges: e.ranges.clone(),
        })
    }

    /// Zero the counters of `path`.
    pub fn reset_stats(&self, path: &str) {
        if let Some(e) = self.table.lock().unwrap().get_mut(path) {
            e.requests = 0;
            e.ranges.clear();
            e.sent.store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Everything a response needs, copied out of the table so the lock is not held while streaming.
struct Plan {
    source: Source,
    /// The body: texts and byte ranges of the content, in order.
    segs: Vec<Seg>,
    fault: Fault,
    active: bool,
    sent: Arc<AtomicU64>,
}

async fn handle(State(table): State<Table>, uri: Uri, headers: HeaderMap) -> Response<Body> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (plan, etag, size) = {
        let mut t = table.lock().unwrap();
        let Some(e) = t.get_mut(uri.path()) else {
            return status(StatusCode::NOT_FOUND);
        };
        e.requests += 1;
        e.ranges.push(range.clone());
        let active = match e.fault {
            Fault::CutAfter { times, .. } | Fault::StallAfter { times, .. } => {
                let n = e.fired.fetch_add(1, Ordering::SeqCst);
                !matches!(times, Some(k) if n >= k)
            }
            Fault::Status { times, .. } => e.fired.fetch_add(1, Ordering::SeqCst) < times,
            Fault::CorruptInRange(_) => range
                .as_deref()
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(_, end)| !end.trim().is_empty()),
            _ => true,
        };
        let plan = Plan {
            source: e.source.clone(),
            segs: Vec::new(),
            fault: e.fault,
            active,
            sent: e.sent.clone(),
        };
        (plan, e.etag.clone(), e.size)
    };
    if let (Fault::Status { code, .. }, true) = (plan.fault, plan.active) {
        return status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if inm.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        let mut r = status(StatusCode::NOT_MODIFIED);
        r.headers_mut().insert(header::ETAG, hv(&etag));
        return r;
    }
    let asked = range
        .as_deref()
        .filter(|_| plan.fault != Fault::IgnoreRange);
    let ranges = match asked.map(|r| parse_ranges(r, size)) {
        None | Some(Some(None)) => Vec::new(),
        Some(Some(Some(v))) => v,
        Some(None) => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            return r;
        }
    };
    let ranges = match (plan.fault, ranges.len()) {
        (_, 0 | 1) => ranges,
        (Fault::WholeForMultiRange, _) => Vec::new(),
        (Fault::FirstRangeOnly, _) => vec![ranges[0]],
        (Fault::CoalesceRanges, _) => vec![(ranges[0].0, ranges[ranges.len() - 1].1)],
        _ => ranges,
    };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = if ranges.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::PARTIAL_CONTENT
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let segs = match ranges.as_slice() {
        [] => vec![Seg::Content(0, size)],
        [(a, b)] => {
            h.insert(
                header::CONTENT_RANGE,
                hv(&format!("bytes {a}-{}/{size}", b - 1)),
            );
            vec![Seg::Content(*a, *b)]
        }
        many => {
            let bad = match plan.fault {
                Fault::Multipart(b) => Some(b),
                _ => None,
            };
            let ct = if bad == Some(BadMultipart::NoBoundary) {
                "multipart/byteranges".to_string()
            } else {
                format!("multipart/byteranges; boundary={BOUNDARY}")
            };
            h.insert(header::CONTENT_TYPE, hv(&ct));
            multipart(many, size, bad)
        }
    };
    let len: u64 = segs.iter().map(Seg::len).sum();
    let declared = match plan.fault {
        Fault::Extra { declare: false, .. } => None,
        Fault::Extra {
            extra,
            declare: true,
        } => Some(len + extra),
        _ => Some(len),
    };
    if let Some(n) = declared {
        h.insert(header::CONTENT_LENGTH, hv(&n.to_string()));
    }
    *r.body_mut() = body(Plan { segs, ..plan });
    r
}

/// The boundary of the multipart answers.
const BOUNDARY: &str = "upd-fault-server-7d1c";

/// One stretch of a response body.
#[derive(Debug, Clone)]
enum Seg {
    /// Literal bytes (multipart delimiters and part headers).
    Text(Bytes),
    /// Content bytes `start..end` (file offsets), corrupted as the fault says.
    Content(u64, u64),
}

impl Seg {
    fn len(&self) -> u64 {
        match self {
            Seg::Text(t) => t.len() as u64,
            Seg::Content(a, b) => b - a,
        }
    }
}

/// The body of a `multipart/byteranges` answer with `ranges` (end-exclusive), made wrong as `bad` says.
fn multipart(ranges: &[(u64, u64)], size: u64, bad: Option<BadMultipart>) -> Vec<Seg> {
    let mut parts = ranges.to_vec();
    match bad {
        Some(BadMultipart::Unasked) => parts[1].0 = (parts[1].0 + 4096).min(parts[1].1 - 1),
        Some(BadMultipart::Overlap) => parts[1].0 = parts[0].1.saturating_sub(100),
        Some(BadMultipart::Reversed) => parts.reverse(),
        Some(BadMultipart::Truncated) => parts.truncate(1),
        _ => {}
    }
    let b = if bad == Some(BadMultipart::GarbledBoundary) {
        "upd-fault-server-7d1d"
    } else {
        BOUNDARY
    };
    let mut segs = Vec::new();
    for (i, (a, z)) in parts.iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        segs.push(Seg::Text(Bytes::from(format!(
            "{lead}--{b}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{}/{size}\r\n\r\n",
            z - 1
        ))));
        segs.push(Seg::Content(*a, *z));
        if i == 0 && bad == Some(BadMultipart::LongPart) {
            segs.push(Seg::Text(Bytes::from_static(b"0123456789")));
        }
    }
    if bad != Some(BadMultipart::Truncated) {
        segs.push(Seg::Text(Bytes::from(format!("\r\n--{b}--\r\n"))));
    }
    segs
}

/// The closed ranges of a Range value, end-exclusive: `Some(Some(v))` (a range past the end
/// dropped), `Some(None)` to ignore the header, `None` for 416.
fn parse_ranges(v: &str, size: u64) -> Option<Option<Vec<(u64, u64)>>> {
    let Some(set) = v.trim().strip_prefix("bytes=") else {
        return Some(None);
    };
    let mut out = Vec::new();
    for spec in set.split(',') {
        let Some((a, b)) = spec.trim().split_once('-') else {
            return Some(None);
        };
        let (start, end) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
            (None, Some(n)) => (size.saturating_sub(n), size),
            (Some(s), None) => (s, size),
            (Some(s), Some(e)) if e >= s => (s, (e + 1).min(size)),
            _ => return Some(None),
        };
        if start < size {
            out.push((start, end));
        }
    }
    (!out.is_empty()).then_some(Some(out))
}

/// The body stream: the planned segments, with the planned fault applied.
fn body(plan: Plan) -> Body {
    let extra_left = match plan.fault {
        Fault::Extra { extra, .. } => extra,
        _ => 0,
    };
    let st = St {
        plan,
        seg: 0,
        pos: None,
        sent_here: 0,
        extra_left,
        file: None,
        done: false,
    };
    Body::from_stream(stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let limit = match (st.plan.fault, st.plan.active) {
            (Fault::CutAfter { at, .. } | Fault::StallAfter { at, .. }, true) => Some(at),
            _ => None,
        };
        if limit.is_some_and(|at| st.sent_here >= at) {
            if let Fault::StallAfter { .. } = st.plan.fault {
                std::future::pending::<()>().await;
            }
            st.done = true;
            return Some((Err(io::Error::other("fault server: connection cut")), st));
        }
        let room = limit.map_or(u64::MAX, |at| at - st.sent_here);
        let chunk = match st.plan.segs.get(st.seg).cloned() {
            Some(Seg::Text(t)) => {
                let n = (t.len() as u64).min(room) as usize;
                if n == t.len() {
                    st.seg += 1;
                } else {
                    st.plan.segs[st.seg] = Seg::Text(t.slice(n..));
                }
                t.slice(..n)
            }
            Some(Seg::Content(a, z)) => {
                let pos = *st.pos.get_or_insert(a);
                let n = CHUNK.min(z - pos).min(room);
                match read(&mut st, pos, n).await {
                    Ok(c) => {
                        if pos + n == z {
                            st.seg += 1;
                            st.pos = None;
                        } else {
                            st.pos = Some(pos + n);
                        }
                        c
                    }
                    Err(e) => {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
            None if st.extra_left > 0 => {
                let n = CHUNK.min(st.extra_left).min(room);
                st.extra_left -= n;
                Bytes::from(vec![0x5a; n as usize])
            }
            None => return None,
        };
        st.sent_here += chunk.len() as u64;
        st.plan.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Some((Ok::<_, io::Error>(chunk), st))
    }))
}

/// The state of one response body stream.
struct St {
    plan: Plan,
    /// The segment being sent.
    seg: usize,
    /// Within a content segment: the next file offset.
    pos: Option<u64>,
    sent_here: u64,
    extra_left: u64,
    /// The open file and its position.
    file: Option<(tokio::fs::File, u64)>,
    done: bool,
}

/// Read `n` content bytes at file offset `a`, corrupting the planned byte.
async fn read(st: &mut St, a: u64, n: u64) -> io::Result<Bytes> {
    let b = a + n;
    let corrupt = match st.plan.fault {
        Fault::CorruptByte(off) if (a..b).contains(&off) => Some((off - a) as usize),
        Fault::CorruptInRange(off) if st.plan.active && (a..b).contains(&off) => {
            Some((off - a) as usize)
        }
        _ => None,
    };
    let mut data = match &st.plan.source {
        Source::Memory(m) if corrupt.is_none() => return Ok(m.slice(a as usize..b as usize)),
        Source::Memory(m) => m[a as usize..b as usize].to_vec(),
        Source::File(p) => {
            if st.file.as_ref().is_none_or(|(_, at)| *at != a) {
                let mut f = match st.file.take() {
                    Some((f, _)) => f,
                    None => tokio::fs::File::open(p).await?,
                };
                f.seek(io::SeekFrom::Start(a)).await?;
                st.file = Some((f, a));
            }
            let (f, at) = st.file.as_mut().expect("opened above");
            let mut buf = vec![0u8; n as usize];
            f.read_exact(&mut buf).await?;
            *at = b;
            buf
        }
    };
    if let Some(i) = corrupt {
        data[i] ^= 0xff;
    }
    Ok(Bytes::from(data))
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("generated header value is ASCII")
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
