//! A static HTTP server for channel directories, with Range and ETag / If-None-Match (development and demos).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Read size of the file stream: large enough that a 1 GiB file is a few thousand chunks.
const CHUNK: usize = 256 * 1024;

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
    let app = Router::new().fallback(handle).with_state(Arc::new(root));
    let fut = async move {
        axum::serve(listener, app)
            .await
            .map_err(|source| ServeError::Serve {
                addr: bound,
                source,
            })
    };
    Ok((bound, fut))
}

/// One request: method check, path resolution, then the conditional / range logic.
async fn handle(
    State(root): State<Arc<PathBuf>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = empty(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(path) = resolve(&root, uri.path()) else {
        return empty(StatusCode::NOT_FOUND);
    };
    match respond(&path, &headers, method == Method::HEAD).await {
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

/// What a Range header asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// No usable Range: send the whole file.
    Full,
    /// One satisfiable range, inclusive bounds.
    Part(u64, u64),
    /// A syntactically valid range that misses the file.
    Unsatisfiable,
}

/// Parse a single `bytes=` range (RFC 9110 14.1.2); multiple ranges and bad syntax fall back to the whole file.
fn parse_range(value: &str, size: u64) -> RangeAsk {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAsk::Full;
    };
    if spec.contains(',') {
        return RangeAsk::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last n bytes.
        return match b.parse::<u64>() {
            Ok(0) => RangeAsk::Unsatisfiable,
            Ok(_) if size == 0 => RangeAsk::Unsatisfiable,
            Ok(n) => RangeAsk::Part(size.saturating_sub(n), size - 1),
            Err(_) => RangeAsk::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeAsk::Full,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start, end.min(size - 1))
}

/// Build the response for an existing regular file.
async fn respond(path: &Path, headers: &HeaderMap, head: bool) -> io::Result<Response<Body>> {
    let mut file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    let size = meta.len();
    let etag = etag_of(&meta);
    let etag_hv = HeaderValue::from_str(&etag).expect("etag is ASCII");
    if none_match(headers, &etag) {
        // No Content-Length here: on a 304 it would claim the size of the full representation.
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert(header::ETAG, etag_hv);
        return Ok(r);
    }
    // If-Range: only honour Range when the client's copy is this very version.
    let range_ok = match headers.get(header::IF_RANGE) {
        Some(v) => v.as_bytes() == etag.as_bytes(),
        None => true,
    };
    let ask = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if range_ok => parse_range(v, size),
        _ => RangeAsk::Full,
    };
    let (status, start, len) = match ask {
        RangeAsk::Full => (StatusCode::OK, 0, size),
        RangeAsk::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeAsk::Unsatisfiable => {
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            r.headers_mut()
                .insert(header::CONTENT_RANGE, hv(&format!("bytes */{size}")));
            return Ok(r);
        }
    };
    let body = if head || len == 0 {
        Body::empty()
    } else {
        file.seek(io::SeekFrom::Start(start)).await?;
        Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
            file.take(len),
            CHUNK,
        ))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
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
    Ok(r)
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

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
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

    #[test]
    fn range_parser() {
        assert_eq!(parse_range("bytes=0-0", 10), RangeAsk::Part(0, 0));
        assert_eq!(parse_range("bytes=-20", 10), RangeAsk::Part(0, 9));
        assert_eq!(parse_range("bytes=-0", 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), RangeAsk::Full);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), RangeAsk::Full);
        assert_eq!(parse_range("items=0-1", 10), RangeAsk::Full);
        assert_eq!(parse_range("bytes=0-", 0), RangeAsk::Unsatisfiable);
    }
}
