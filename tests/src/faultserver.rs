//! A fault-injecting HTTP server on 127.0.0.1: drops, stalls, corrupt bytes, wrong lengths and errors, with counters.

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
    start: u64,
    end: u64,
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
            start: 0,
            end: e.size,
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
    let (code, start, end) = match asked.map(|r| parse_range(r, size)) {
        None | Some(Some(None)) => (StatusCode::OK, 0, size),
        Some(Some(Some((a, b)))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(None) => {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            return r;
        }
    };
    let plan = Plan { start, end, ..plan };
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(header::ETAG, hv(&etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if code == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{}/{size}", end - 1)),
        );
    }
    let declared = match plan.fault {
        Fault::Extra { declare: false, .. } => None,
        Fault::Extra {
            extra,
            declare: true,
        } => Some(end - start + extra),
        _ => Some(end - start),
    };
    if let Some(n) = declared {
        h.insert(header::CONTENT_LENGTH, hv(&n.to_string()));
    }
    *r.body_mut() = body(plan);
    r
}

/// `Some(Some((start, end_exclusive)))` for a satisfiable single range, `Some(None)` to ignore it, `None` for 416.
fn parse_range(v: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let Some((a, b)) = v
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
    else {
        return Some(None);
    };
    let (start, end) = match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (None, Some(n)) => (size.saturating_sub(n), size),
        (Some(s), None) => (s, size),
        (Some(s), Some(e)) if e >= s => (s, (e + 1).min(size)),
        _ => return Some(None),
    };
    (start < size).then_some(Some((start, end)))
}

/// The body stream: content from `start` to `end`, with the planned fault applied.
fn body(plan: Plan) -> Body {
    let extra_left = match plan.fault {
        Fault::Extra { extra, .. } => extra,
        _ => 0,
    };
    let pos = plan.start;
    let st = St {
        plan,
        pos,
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
        let chunk = if st.pos < st.plan.end {
            let n = CHUNK.min(st.plan.end - st.pos).min(room);
            match read(&mut st, n).await {
                Ok(c) => c,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        } else if st.extra_left > 0 {
            let n = CHUNK.min(st.extra_left).min(room);
            st.extra_left -= n;
            Bytes::from(vec![0x5a; n as usize])
        } else {
            return None;
        };
        st.sent_here += chunk.len() as u64;
        st.plan.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Some((Ok::<_, io::Error>(chunk), st))
    }))
}

/// The state of one response body stream.
struct St {
    plan: Plan,
    pos: u64,
    sent_here: u64,
    extra_left: u64,
    file: Option<tokio::fs::File>,
    done: bool,
}

/// Read `n` content bytes at `st.pos`, corrupting the planned byte.
async fn read(st: &mut St, n: u64) -> io::Result<Bytes> {
    let (a, b) = (st.pos, st.pos + n);
    let corrupt = match st.plan.fault {
        Fault::CorruptByte(off) if (a..b).contains(&off) => Some((off - a) as usize),
        Fault::CorruptInRange(off) if st.plan.active && (a..b).contains(&off) => {
            Some((off - a) as usize)
        }
        _ => None,
    };
    let mut data = match &st.plan.source {
        Source::Memory(m) if corrupt.is_none() => {
            st.pos = b;
            return Ok(m.slice(a as usize..b as usize));
        }
        Source::Memory(m) => m[a as usize..b as usize].to_vec(),
        Source::File(p) => {
            if st.file.is_none() {
                let mut f = tokio::fs::File::open(p).await?;
                f.seek(io::SeekFrom::Start(a)).await?;
                st.file = Some(f);
            }
            let mut buf = vec![0u8; n as usize];
            st.file
                .as_mut()
                .expect("opened above")
                .read_exact(&mut buf)
                .await?;
            buf
        }
    };
    if let Some(i) = corrupt {
        data[i] ^= 0xff;
    }
    st.pos = b;
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
