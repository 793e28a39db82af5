//! A static HTTP/1.1 server for channel directories, with Range (several ranges answered as
//! `multipart/byteranges`, `ranges.rs`), ETag / If-None-Match,
//! pre-compressed siblings (`X.gz` served for `X` with `Content-Encoding: gzip` to clients that
//! accept it) and file bodies sent with sendfile(2) (development, demos and benchmarks).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

mod ranges;

use ranges::RangeAsk;

/// Read size of the copy loop used where sendfile(2) is refused.
const CHUNK: usize = 256 * 1024;
/// Largest request head (request line and headers) read; a longer one gets 431 and the connection closes.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;
/// Largest request body skipped to keep a connection alive; a longer one closes it after the answer.
const MAX_SKIP: u64 = 64 * 1024;
/// Bytes handed to one sendfile(2) call.
const SENDFILE_STEP: usize = 8 << 20;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The directory to serve is missing or unreadable.
    #[error("channel directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The listening socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The server stopped with an I/O error.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The bound address.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Serve `dir` on `addr` until the process ends.
pub async fn serve(dir: PathBuf, addr: SocketAddr) -> Result<(), ServeError> {
    let (bound, server) = bind(dir.clone(), addr).await?;
    tracing::info!(dir = %dir.display(), addr = %bound, "serving channel directory");
    server.await
}

/// Bind `addr` (port 0 picks a free port) and return the bound address and the future that serves `dir`.
pub async fn bind(
    dir: PathBuf,
    addr: SocketAddr,
) -> Result<
    (
        SocketAddr,
        impl Future<Output = Result<(), ServeError>> + Send,
    ),
    ServeError,
> {
    let root = dir.canonicalize().map_err(|source| ServeError::Dir {
        path: dir.clone(),
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let root = Arc::new(root);
    let fut = async move {
        loop {
            let (sock, _) = match listener.accept().await {
                Ok(c) => c,
                // Out of descriptors, a connection reset before accept: go on serving the others.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
                Err(source) => {
                    return Err(ServeError::Serve {
                        addr: bound,
                        source,
                    })
                }
            };
            let root = Arc::clone(&root);
            tokio::spawn(async move {
                if let Err(e) = connection(&root, sock).await {
                    tracing::debug!(error = %e, "connection ended");
                }
            });
        }
    };
    Ok((bound, fut))
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(libc::EMFILE)
        || e.raw_os_error() == Some(libc::ENFILE)
}

/// One parsed request head.
struct Request {
    method: Method,
    path: String,
    headers: HeaderMap,
    /// The connection stays open after the answer (HTTP/1.1 without `Connection: close`).
    keep_alive: bool,
    /// Request body bytes to skip before the next request (`Content-Length`), if small enough.
    body: Option<u64>,
}

/// What goes after a response head.
enum Body {
    Empty,
    /// `len` bytes of `file` from byte `start`.
    File {
        file: std::fs::File,
        start: u64,
        len: u64,
    },
    /// A `multipart/byteranges` body: each part's head, then its bytes of `file`; then `tail`.
    Multi {
        file: std::fs::File,
        parts: Vec<ranges::Part>,
        tail: Vec<u8>,
    },
}

/// A response: status, headers, body.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Body,
}

/// Serve requests on one connection until the client closes it or asks to.
async fn connection(root: &Path, mut sock: TcpStream) -> io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let req = match read_head(&mut sock, &mut buf).await? {
            Head::Closed => return Ok(()),
            Head::Bad(status) => {
                let mut r = empty(status);
                r.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                write_reply(&mut sock, r, false).await?;
                return Ok(());
            }
            Head::Request(r) => r,
        };
        let mut keep = req.keep_alive;
        match req.body {
            Some(0) => {}
            Some(n) => keep &= skip(&mut sock, &mut buf, n).await?,
            None => keep = false,
        }
        let mut reply = handle(root, &req).await;
        if !keep {
            reply
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        write_reply(&mut sock, reply, req.method == Method::HEAD).await?;
        if !keep {
            let _ = sock.shutdown().await;
            return Ok(());
        }
    }
}

enum Head {
    Request(Request),
    Bad(StatusCode),
    Closed,
}

/// Read until `buf` holds a whole request head, parse it, and drop it from `buf`.
async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Head> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let head = request_of(&req);
                    buf.drain(..n);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                    return Ok(Head::Bad(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Ok(Head::Bad(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
                }
                Err(_) => return Ok(Head::Bad(StatusCode::BAD_REQUEST)),
            }
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn request_of(req: &httparse::Request<'_, '_>) -> Head {
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Head::Bad(StatusCode::BAD_REQUEST);
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Bad(StatusCode::BAD_REQUEST);
    };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Head::Bad(StatusCode::BAD_REQUEST);
        };
        headers.append(k, v);
    }
    let has = |name: &HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let keep_alive = if version >= 1 {
        !has(&header::CONNECTION, "close")
    } else {
        has(&header::CONNECTION, "keep-alive")
    };
    // A chunked body (or any transfer coding) is not read: the connection closes after the answer.
    let body = if headers.contains_key(header::TRANSFER_ENCODING) {
        None
    } else {
        match headers
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()))
        {
            None => Some(0),
            Some(Some(n)) if n <= MAX_SKIP => Some(n),
            Some(_) => None,
        }
    };
    // The path without a query: files have no query.
    let path = path.split(['?', '#']).next().unwrap_or("").to_string();
    Head::Request(Request {
        method,
        path,
        headers,
        keep_alive,
        body,
    })
}

/// Skip `n` request body bytes; false when the client closed first.
async fn skip(sock: &mut TcpStream, buf: &mut Vec<u8>, mut n: u64) -> io::Result<bool> {
    let held = (buf.len() as u64).min(n) as usize;
    buf.drain(..held);
    n -= held as u64;
    let mut chunk = [0u8; 4096];
    while n > 0 {
        let want = (n as usize).min(chunk.len());
        let got = sock.read(&mut chunk[..want]).await?;
        if got == 0 {
            return Ok(false);
        }
        n -= got as u64;
    }
    Ok(true)
}

/// Write the head, then the body (sendfile(2) for a file).
async fn write_reply(sock: &mut TcpStream, reply: Reply, head_only: bool) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        reply.status.as_u16(),
        reply.status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (k, v) in &reply.headers {
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    sock.write_all(&out).await?;
    match reply.body {
        _ if head_only => Ok(()),
        Body::File { file, start, len } if len > 0 => send_file(sock, &file, start, len).await,
        Body::Multi { file, parts, tail } => {
            for p in parts {
                sock.write_all(&p.head).await?;
                send_file(sock, &file, p.start, p.len).await?;
            }
            sock.write_all(&tail).await
        }
        _ => Ok(()),
    }
}

/// Send `len` bytes of `file` from `start` with sendfile(2): the page cache goes to the socket
/// without a copy through this process. Where sendfile is refused, a plain copy loop.
async fn send_file(
    sock: &mut TcpStream,
    file: &std::fs::File,
    start: u64,
    len: u64,
) -> io::Result<()> {
    // The whole body is read once, in order: a larger readahead window.
    let _ = nix::fcntl::posix_fadvise(
        file.as_raw_fd(),
        start as i64,
        len as i64,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
    let (mut off, end) = (i64::try_from(start).map_err(io::Error::other)?, start + len);
    let multi = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    while (off as u64) < end {
        let step = ((end - off as u64) as usize).min(SENDFILE_STEP);
        sock.writable().await?;
        // sendfile(2) may wait for the disk: tell a multi-threaded runtime this worker blocks.
        let mut call = || {
            sock.try_io(Interest::WRITABLE, || {
                sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut off, step)
            })
        };
        let r = if multi {
            tokio::task::block_in_place(call)
        } else {
            call()
        };
        match r {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while being sent",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
                    && off as u64 == start =>
            {
                return copy_file(sock, file, start, len).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The fallback of [`send_file`]: read and write.
async fn copy_file(
    sock: &mut TcpStream,
    file: &std::fs::File,
    start: u64,
    len: u64,
) -> io::Result<()> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::from_std(file.try_clone()?);
    file.seek(io::SeekFrom::Start(start)).await?;
    let mut rest = file.take(len);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = rest.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sock.write_all(&buf[..n]).await?;
    }
}

/// sendfile(2) from `file` at `*off` to the socket `sock`, advancing `*off`.
#[allow(unsafe_code)] // sendfile(2): nix's wrapper needs a feature the workspace does not build
fn sendfile(sock: RawFd, file: RawFd, off: &mut i64, count: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the call; `off` is a valid, exclusive pointer to an
    // off_t for its duration; no other memory is passed.
    let n = unsafe { libc::sendfile(sock, file, off, count) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One request: method check, path resolution, then the conditional / range logic.
async fn handle(root: &Path, req: &Request) -> Reply {
    if req.method != Method::GET && req.method != Method::HEAD {
        let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
        r.headers
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(path) = resolve(root, &req.path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    let path2 = path.clone();
    let headers = req.headers.clone();
    let r = tokio::task::spawn_blocking(move || respond(&path2, &headers))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    match r {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => empty(StatusCode::NOT_FOUND),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "serving file failed");
            empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Map a URL path to a regular file inside `root`, or `None` (404) for anything that could climb out.
fn resolve(root: &Path, url_path: &str) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    let mut any = false;
    for seg in url_path.split('/').filter(|s| !s.is_empty()) {
        let safe = seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !safe || seg == "." || seg == ".." {
            return None;
        }
        path.push(seg);
        any = true;
    }
    // Symlinks inside the channel must not lead out of it either.
    let real = path.canonicalize().ok()?;
    (any && real.starts_with(root) && real.is_file()).then_some(real)
}

/// The strong validator of a file: inode, size and modification time in nanoseconds.
fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.size(), mtime_ns)
}

/// RFC 9110 13.1.2: If-None-Match uses the weak comparison; `*` matches any current representation.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_string();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || strip(t) == strip(etag))
        })
}

/// Whether the client takes `gzip` (RFC 9110 12.5.3: a coding with `q=0` is refused).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// The pre-compressed sibling `X.gz` of `path`, when it exists and is not older than `X`
/// (a publisher writes `X` first, then `X.gz`; an older `.gz` is stale and never served).
fn gzip_sibling(
    path: &Path,
    meta: &std::fs::Metadata,
) -> Option<(std::fs::File, std::fs::Metadata)> {
    let mut name = path.file_name()?.to_os_string();
    name.push(".gz");
    let gz = path.with_file_name(name);
    let file = std::fs::File::open(&gz).ok()?;
    let m = file.metadata().ok()?;
    let newer = (m.mtime(), m.mtime_nsec()) >= (meta.mtime(), meta.mtime_nsec());
    (m.is_file() && newer).then_some((file, m))
}

/// Build the response for an existing regular file (blocking: opens and stats files).
fn respond(path: &Path, headers: &HeaderMap) -> io::Result<Reply> {
    let mut file = std::fs::File::open(path)?;
    let mut meta = file.metadata()?;
    let mut encoded = false;
    if accepts_gzip(headers) {
        if let Some((f, m)) = gzip_sibling(path, &meta) {
            (file, meta, encoded) = (f, m, true);
        }
    }
    let size = meta.len();
    let etag = etag_of(&meta);
    let etag_hv = HeaderValue::from_str(&etag).expect("etag is ASCII");
    let mut h = HeaderMap::new();
    if path.extension().is_some_and(|e| e == "json") {
        // Caches must key on the coding: the same URL has a plain and a gzip representation.
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if encoded {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if none_match(headers, &etag) {
        // No Content-Length here: on a 304 it would claim the size of the full representation.
        h.insert(header::ETAG, etag_hv);
        return Ok(Reply {
            status: StatusCode::NOT_MODIFIED,
            headers: h,
            body: Body::Empty,
        });
    }
    // If-Range: only honour Range when the client's copy is this very version.
    let range_ok = match headers.get(header::IF_RANGE) {
        Some(v) => v.as_bytes() == etag.as_bytes(),
        None => true,
    };
    let ask = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if range_ok => ranges::parse(v, size),
        _ => RangeAsk::Full,
    };
    let (status, start, len) = match ask {
        RangeAsk::Full => (StatusCode::OK, 0, size),
        RangeAsk::Parts(p) if p.len() == 1 => {
            (StatusCode::PARTIAL_CONTENT, p[0].0, p[0].1 - p[0].0 + 1)
        }
        RangeAsk::Parts(p) => {
            let (parts, tail, ct) = ranges::multipart(&p, size, content_type(path));
            let len = parts
                .iter()
                .map(|p| p.head.len() as u64 + p.len)
                .sum::<u64>()
                + tail.len() as u64;
            h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
            h.insert(header::ETAG, etag_hv);
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(header::CONTENT_TYPE, hv(&ct));
            return Ok(Reply {
                status: StatusCode::PARTIAL_CONTENT,
                headers: h,
                body: Body::Multi { file, parts, tail },
            });
        }
        RangeAsk::Unsatisfiable => {
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            return Ok(r);
        }
    };
    h.insert(header::CONTENT_LENGTH, hv(&len.to_string()));
    h.insert(header::ETAG, etag_hv);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            hv(&format!("bytes {start}-{}/{size}", start + len - 1)),
        );
    }
    Ok(Reply {
        status,
        headers: h,
        body: Body::File { file, start, len },
    })
}

/// JSON for manifests and envelopes, raw bytes for everything else.
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("generated header value is ASCII")
}

fn empty(status: StatusCode) -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Reply {
        status,
        headers,
        body: Body::Empty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A raw HTTP/1.1 exchange: status, lower-cased headers, body.
    async fn req(
        addr: SocketAddr,
        method: &str,
        path: &str,
        extra: &str,
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let msg =
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of headers");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, raw[split + 4..].to_vec())
    }

    fn get<'a>(h: &'a [(String, String)], k: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// A channel directory with one 1000-byte image and a secret file next to (outside) it.
    async fn start() -> (tempfile::TempDir, SocketAddr, Vec<u8>) {
        let d = tempfile::tempdir().unwrap();
        let chan = d.path().join("chan");
        std::fs::create_dir_all(chan.join("images")).unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(chan.join("images/a.raw"), &data).unwrap();
        std::fs::write(d.path().join("secret"), b"top secret").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), chan.join("link")).unwrap();
        let (addr, fut) = bind(chan, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        tokio::spawn(fut);
        (d, addr, data)
    }

    #[tokio::test]
    async fn full_get_head_and_conditional() {
        // A plain GET, a HEAD, then a GET revalidating with the ETag from the first answer.
        let (_d, addr, data) = start().await;
        let (st, h, body) = req(addr, "GET", "/images/a.raw", "").await;
        assert_eq!(st, 200);
        assert_eq!(body, data);
        assert_eq!(get(&h, "content-length"), Some("1000"));
        let etag = get(&h, "etag").unwrap().to_string();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong quoted etag: {etag}"
        );

        let (st, h, body) = req(addr, "HEAD", "/images/a.raw", "").await;
        assert_eq!((st, body.len()), (200, 0));
        assert_eq!(get(&h, "content-length"), Some("1000"));

        let (st, _, body) = req(
            addr,
            "GET",
            "/images/a.raw",
            &format!("If-None-Match: \"zz\", {etag}\r\n"),
        )
        .await;
        assert_eq!((st, body.len()), (304, 0));
        let (st, _, _) = req(addr, "GET", "/images/a.raw", "If-None-Match: \"other\"\r\n").await;
        assert_eq!(st, 200);
    }

    #[tokio::test]
    async fn ranges() {
        // The three range forms, then one starting past the end.
        let (_d, addr, data) = start().await;
        for (ask, a, b) in [
            ("10-19", 10, 19),
            ("990-", 990, 999),
            ("-5", 995, 999),
            ("900-5000", 900, 999),
        ] {
            let (st, h, body) = req(
                addr,
                "GET",
                "/images/a.raw",
                &format!("Range: bytes={ask}\r\n"),
            )
            .await;
            assert_eq!(st, 206, "{ask}");
            assert_eq!(body, &data[a..=b], "{ask}");
            assert_eq!(
                get(&h, "content-range"),
                Some(format!("bytes {a}-{b}/1000").as_str())
            );
            assert_eq!(
                get(&h, "content-length"),
                Some((b - a + 1).to_string().as_str())
            );
        }
        let (st, h, body) = req(addr, "GET", "/images/a.raw", "Range: bytes=1000-\r\n").await;
        assert_eq!((st, body.len()), (416, 0));
        assert_eq!(get(&h, "content-range"), Some("bytes */1000"));
    }

    #[tokio::test]
    async fn multi_range_answers_multipart() {
        // Three ranges apart (the last open-ended): one 206 of three parts in the order asked,
        // each with its Content-Range, a Content-Length that counts every byte; a HEAD says the
        // same without a body; overlapping ranges come back coalesced into one single part.
        let (_d, addr, data) = start().await;
        let (st, h, body) = req(
            addr,
            "GET",
            "/images/a.raw",
            "Range: bytes=500-509, 0-9,990-\r\n",
        )
        .await;
        assert_eq!(st, 206);
        let ct = get(&h, "content-type").unwrap();
        let b = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        assert_eq!(get(&h, "content-range"), None);
        assert_eq!(
            get(&h, "content-length"),
            Some(body.len().to_string().as_str())
        );
        let mut expect = Vec::new();
        for (i, (a, z)) in [(500, 509), (0, 9), (990, 999)].into_iter().enumerate() {
            let lead = if i == 0 { "" } else { "\r\n" };
            expect.extend_from_slice(
                format!("{lead}--{b}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{z}/1000\r\n\r\n").as_bytes(),
            );
            expect.extend_from_slice(&data[a..=z]);
        }
        expect.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        assert!(body == expect, "{}", String::from_utf8_lossy(&body));

        let (st, h2, body) = req(addr, "HEAD", "/images/a.raw", "Range: bytes=0-9,20-29\r\n").await;
        assert_eq!((st, body.len()), (206, 0));
        assert!(get(&h2, "content-type")
            .unwrap()
            .starts_with("multipart/byteranges"));

        let (st, h, body) = req(
            addr,
            "GET",
            "/images/a.raw",
            "Range: bytes=0-9,5-19,20-29\r\n",
        )
        .await;
        assert_eq!(st, 206);
        assert_eq!(get(&h, "content-range"), Some("bytes 0-29/1000"));
        assert_eq!(body, &data[..30]);
    }

    #[tokio::test]
    async fn traversal_and_missing_are_404() {
        // Paths that climb out, a symlink leading out, a directory, a missing file and a POST.
        let (_d, addr, _) = start().await;
        for p in [
            "/../secret",
            "/images/../../secret",
            "/%2e%2e/secret",
            "/link",
            "/images",
            "/nope",
            "/",
        ] {
            let (st, _, body) = req(addr, "GET", p, "").await;
            assert_eq!(st, 404, "{p}");
            assert!(
                !body.windows(3).any(|w| w == b"top"),
                "{p} leaked the secret"
            );
        }
        let (st, _, _) = req(addr, "POST", "/images/a.raw", "Content-Length: 0\r\n").await;
        assert_eq!(st, 405);
    }
}
