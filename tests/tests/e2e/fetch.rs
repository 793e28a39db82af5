//! The upd fetcher against the fault-injecting server: verification, size limits, resume, stalls and retries.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::digest::{digest, SHA256};
use upd::remote::fetch::{
    partial_path, FetchConfig, FetchError, FetchOutcome, Fetcher, ManifestFetch, NoProgress,
};
use upd_tests::faultserver::{Fault, FaultServer};

const MIB: u64 = 1 << 20;

fn image(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn sha(data: &[u8]) -> [u8; 32] {
    digest(&SHA256, data).as_ref().try_into().unwrap()
}

fn fetcher(retries: u32, stall: Duration) -> Fetcher {
    Fetcher::new(FetchConfig {
        timeout_connect: Duration::from_secs(5),
        stall_timeout: stall,
        retries,
        backoff_base: Duration::from_millis(20),
        parallel: 2,
        ranges_per_request: 32,
    })
    .unwrap()
}

/// A server holding `data` at /a.raw with `fault`, and a destination in a fresh directory.
async fn setup(data: &[u8], fault: Fault) -> (FaultServer, tempfile::TempDir, PathBuf) {
    let srv = FaultServer::start().await.unwrap();
    srv.put_bytes("/a.raw", data.to_vec(), fault);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("store/a.raw");
    (srv, dir, dest)
}

async fn get(
    f: &Fetcher,
    srv: &FaultServer,
    dest: &Path,
    data: &[u8],
) -> Result<FetchOutcome, FetchError> {
    f.fetch_target(
        &srv.url("/a.raw"),
        dest,
        data.len() as u64,
        sha(data),
        &NoProgress,
    )
    .await
}

fn len_of(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

#[tokio::test]
async fn normal_download_is_verified() {
    // A well-behaved server: one request, every byte once, the file promoted.
    let data = image(5 * MIB);
    let (srv, _d, dest) = setup(&data, Fault::Normal).await;
    let out = get(&fetcher(0, Duration::from_secs(5)), &srv, &dest, &data)
        .await
        .unwrap();
    assert_eq!(
        out,
        FetchOutcome {
            bytes_downloaded: 5 * MIB,
            resumed_from: 0,
            reused: 0
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(srv.stats("/a.raw").requests, 1);
    assert!(!partial_path(&dest).exists());
}

#[tokio::test]
async fn corrupt_byte_fails_hash_and_leaves_nothing() {
    // One flipped byte in the middle: hash mismatch, neither dest nor partial remains.
    let data = image(2 * MIB);
    let (srv, _d, dest) = setup(&data, Fault::CorruptByte(MIB + 3)).await;
    let err = get(&fetcher(2, Duration::from_secs(5)), &srv, &dest, &data)
        .await
        .unwrap_err();
    let FetchError::HashMismatch {
        expected, actual, ..
    } = &err
    else {
        panic!("expected a hash mismatch: {err}")
    };
    assert_eq!(expected, &hex::encode(sha(&data)));
    assert_ne!(actual, expected);
    assert!(
        err.to_string().contains(expected.as_str()) && err.to_string().contains(actual.as_str())
    );
    assert!(!dest.exists() && !partial_path(&dest).exists());
    assert_eq!(
        srv.stats("/a.raw").requests,
        1,
        "a hash mismatch is not retried"
    );
}

#[tokio::test]
async fn more_bytes_than_declared_are_refused() {
    // Endless data, declared in Content-Length and undeclared (chunked): never more than the manifest size held.
    for declare in [true, false] {
        let data = image(MIB);
        let (srv, _d, dest) = setup(
            &data,
            Fault::Extra {
                extra: 4 * MIB,
                declare,
            },
        )
        .await;
        let err = get(&fetcher(2, Duration::from_secs(5)), &srv, &dest, &data)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit, .. } if limit == MIB),
            "{declare}: {err}"
        );
        assert!(err
            .to_string()
            .contains(&format!("more than the {MIB} bytes the manifest declares")));
        assert!(!dest.exists());
        assert!(len_of(&partial_path(&dest)) <= MIB);
        assert_eq!(
            srv.stats("/a.raw").requests,
            1,
            "endless data is not retried"
        );
    }
}

#[tokio::test]
async fn cut_connection_resumes_with_range() {
    // The connection drops after 3 MiB of an 8 MiB file; the next run resumes and re-sends little.
    let data = image(8 * MIB);
    let (srv, _d, dest) = setup(
        &data,
        Fault::CutAfter {
            at: 3 * MIB,
            times: Some(1),
        },
    )
    .await;
    let f = fetcher(0, Duration::from_secs(5));
    let err = get(&f, &srv, &dest, &data).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let held = len_of(&partial_path(&dest));
    assert!(held > 0 && held <= 3 * MIB, "partial holds {held}");
    let out = get(&f, &srv, &dest, &data).await.unwrap();
    assert_eq!(
        out,
        FetchOutcome {
            bytes_downloaded: 8 * MIB - held,
            resumed_from: held,
            reused: 0
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let st = srv.stats("/a.raw");
    assert_eq!(st.ranges, vec![None, Some(format!("bytes={held}-"))]);
    let resent = st.body_bytes - 8 * MIB;
    assert!(resent <= MIB / 2, "{resent} bytes sent twice");
}

#[tokio::test]
async fn repeated_cuts_are_retried_within_one_call() {
    // Every response is cut after 1 MiB: retries resume each time until the 3 MiB file is whole.
    let data = image(3 * MIB);
    let (srv, _d, dest) = setup(
        &data,
        Fault::CutAfter {
            at: MIB,
            times: None,
        },
    )
    .await;
    let out = get(&fetcher(6, Duration::from_secs(5)), &srv, &dest, &data)
        .await
        .unwrap();
    assert_eq!(out.bytes_downloaded, 3 * MIB);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let st = srv.stats("/a.raw");
    assert!((3..=6).contains(&st.requests), "{st:?}");
    assert!(
        st.ranges[1..]
            .iter()
            .all(|r| r.as_deref().is_some_and(|r| r.starts_with("bytes="))),
        "{st:?}"
    );
    assert!(st.body_bytes - 3 * MIB <= MIB, "{st:?}");
}

#[tokio::test]
async fn stall_times_out_then_resumes() {
    // The server goes silent after 1 MiB: the fetch fails after the stall timeout, keeps the partial, resumes.
    let data = image(3 * MIB);
    let (srv, _d, dest) = setup(
        &data,
        Fault::StallAfter {
            at: MIB,
            times: Some(1),
        },
    )
    .await;
    let f = fetcher(0, Duration::from_millis(400));
    let t0 = Instant::now();
    let err = get(&f, &srv, &dest, &data).await.unwrap_err();
    let waited = t0.elapsed();
    assert!(matches!(err, FetchError::Stalled { .. }), "{err}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let held = len_of(&partial_path(&dest));
    assert!(held > 0, "the partial is kept for resume");
    let out = get(&f, &srv, &dest, &data).await.unwrap();
    assert_eq!(out.resumed_from, held);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    // Two 500s then success; with too few retries the 500 is reported.
    let data = image(MIB);
    let (srv, _d, dest) = setup(
        &data,
        Fault::Status {
            code: 500,
            times: 2,
        },
    )
    .await;
    let out = get(&fetcher(3, Duration::from_secs(5)), &srv, &dest, &data)
        .await
        .unwrap();
    assert_eq!(out.bytes_downloaded, MIB);
    assert_eq!(srv.stats("/a.raw").requests, 3);

    srv.set_fault(
        "/a.raw",
        Fault::Status {
            code: 503,
            times: 5,
        },
    );
    std::fs::remove_file(&dest).unwrap();
    let err = get(&fetcher(1, Duration::from_secs(5)), &srv, &dest, &data)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 503, .. }),
        "{err}"
    );
    assert_eq!(srv.stats("/a.raw").requests, 5);
}

#[tokio::test]
async fn server_ignoring_range_restarts_from_zero() {
    // A partial exists but the server answers 200: the partial is replaced, the result is still exact.
    let data = image(2 * MIB);
    let (srv, _d, dest) = setup(&data, Fault::IgnoreRange).await;
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(partial_path(&dest), &data[..MIB as usize]).unwrap();
    let out = get(&fetcher(0, Duration::from_secs(5)), &srv, &dest, &data)
        .await
        .unwrap();
    assert_eq!(
        out,
        FetchOutcome {
            bytes_downloaded: 2 * MIB,
            resumed_from: 0,
            reused: 0
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert_eq!(
        srv.stats("/a.raw").ranges,
        vec![Some(format!("bytes={MIB}-"))]
    );
}

#[tokio::test]
async fn manifest_etag_gives_not_modified() {
    // A conditional GET with the ETag just received: 304, no body.
    let srv = FaultServer::start().await.unwrap();
    srv.put_bytes("/manifest.json", b"{\"serial\":1}".to_vec(), Fault::Normal);
    let f = fetcher(0, Duration::from_secs(5));
    let url = srv.url("/manifest.json");
    let ManifestFetch::Fetched {
        etag: Some(etag), ..
    } = f.fetch_manifest(&url, None, 4096).await.unwrap()
    else {
        panic!("expected a body with an ETag")
    };
    assert_eq!(
        f.fetch_manifest(&url, Some(&etag), 4096).await.unwrap(),
        ManifestFetch::NotModified
    );
    let before = srv.stats("/manifest.json").body_bytes;
    assert_eq!(before, 12, "the 304 sent no body");
    // Endless manifest: refused while streaming, the limit named.
    srv.put_bytes(
        "/big.json",
        vec![b' '; 10_000],
        Fault::Extra {
            extra: 10 * MIB,
            declare: false,
        },
    );
    let err = f
        .fetch_manifest(&srv.url("/big.json"), None, 64 * 1024)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::ManifestTooLarge { limit: 65536, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn partial_beyond_server_file_is_dropped_on_416() {
    // The server holds 1 MiB, an earlier run left 1.5 MiB of a declared 2 MiB: 416, the partial is dropped.
    let data = image(MIB);
    let (srv, _d, dest) = setup(&data, Fault::Normal).await;
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(partial_path(&dest), image(3 * MIB / 2)).unwrap();
    let f = fetcher(2, Duration::from_secs(5));
    let err = f
        .fetch_target(&srv.url("/a.raw"), &dest, 2 * MIB, [0; 32], &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 416, .. }),
        "{err}"
    );
    assert!(!partial_path(&dest).exists() && !dest.exists());
    assert_eq!(srv.stats("/a.raw").requests, 1);
}
