//! Fetcher tests against the real `upd-channel serve` server on an ephemeral loopback port.

use super::*;
use ring::digest::{digest, SHA256};

/// A served channel directory holding `files`, and a download directory.
struct World {
    tmp: tempfile::TempDir,
    base: String,
    out: PathBuf,
}

async fn world(files: &[(&str, &[u8])]) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let chan = tmp.path().join("chan");
    std::fs::create_dir_all(&chan).unwrap();
    for (name, data) in files {
        std::fs::write(chan.join(name), data).unwrap();
    }
    let (addr, fut) = upd_publish::serve::bind(chan, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    tokio::spawn(fut);
    let out = tmp.path().join("out");
    World {
        tmp,
        base: format!("http://{addr}"),
        out,
    }
}

impl World {
    /// The served channel directory.
    fn chan(&self) -> PathBuf {
        self.tmp.path().join("chan")
    }

    /// `OUT/a.raw`, a download destination whose `.partial` an earlier run left holding `partial`.
    fn dest_with_partial(&self, partial: &[u8]) -> PathBuf {
        let dest = self.out.join("a.raw");
        std::fs::create_dir_all(&self.out).unwrap();
        std::fs::write(partial_path(&dest), partial).unwrap();
        dest
    }
}

fn sha(data: &[u8]) -> [u8; 32] {
    digest(&SHA256, data).as_ref().try_into().unwrap()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 253) as u8).collect()
}

fn fetcher() -> Fetcher {
    let cfg = FetchConfig {
        retries: 1,
        backoff_base: Duration::from_millis(10),
        ..FetchConfig::default()
    };
    Fetcher::new(cfg).unwrap()
}

#[tokio::test]
async fn download_verifies_and_promotes() {
    // A 3 MiB image fetched whole: lands at dest, no partial left.
    let img = data(3 << 20);
    let w = world(&[("a.raw", &img)]).await;
    let dest = w.out.join("a.raw");
    let progress = LogProgress::default();
    let out = fetcher()
        .fetch_target(
            &format!("{}/a.raw", w.base),
            &dest,
            img.len() as u64,
            sha(&img),
            &progress,
        )
        .await;
    assert_eq!(
        out.unwrap(),
        FetchOutcome {
            bytes_downloaded: img.len() as u64,
            resumed_from: 0,
            reused: 0
        }
    );
    assert_eq!(progress.done(), img.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), img);
    assert!(!partial_path(&dest).exists());
}

#[tokio::test]
async fn resumes_from_partial_of_earlier_run() {
    // An earlier run left the first 1 MiB + 7 bytes: only the rest is downloaded.
    let img = data(2 << 20);
    let w = world(&[("a.raw", &img)]).await;
    let held = (1 << 20) + 7;
    let dest = w.dest_with_partial(&img[..held]);
    let url = format!("{}/a.raw", w.base);
    let out = fetcher()
        .fetch_target(&url, &dest, img.len() as u64, sha(&img), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        out,
        FetchOutcome {
            bytes_downloaded: (img.len() - held) as u64,
            resumed_from: held as u64,
            reused: 0
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), img);
}

#[tokio::test]
async fn complete_partial_is_verified_without_download() {
    // An earlier run got every byte but died before the rename: re-hashed and promoted, nothing fetched.
    let img = data(300_000);
    let w = world(&[]).await;
    let dest = w.dest_with_partial(&img);
    let url = format!("{}/gone.raw", w.base);
    let out = fetcher()
        .fetch_target(&url, &dest, img.len() as u64, sha(&img), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        out,
        FetchOutcome {
            bytes_downloaded: 0,
            resumed_from: 300_000,
            reused: 0
        }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), img);
}

#[tokio::test]
async fn poisoned_partial_is_dropped_and_fetched_again_from_zero_in_the_same_run() {
    // Regression (issue 16, defect 6): a partial whose bytes differ from the served file, as a
    // 206 answer starting at 0 leaves it: the resumed download mismatches, is dropped and is
    // fetched again from zero in the same run, which succeeds.
    let img = data(100_000);
    let w = world(&[("a.raw", &img)]).await;
    let dest = w.dest_with_partial(&[0u8; 5000]);
    let url = format!("{}/a.raw", w.base);
    let got = fetcher()
        .fetch_target(&url, &dest, img.len() as u64, sha(&img), &NoProgress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), img);
    assert_eq!(got.resumed_from, 0, "nothing of the poisoned partial kept");
    assert!(!partial_path(&dest).exists());
}

#[tokio::test]
async fn mismatch_from_zero_fails_hash_and_is_deleted() {
    // The served file differs from the declared hash: after the one fresh retry of a resumed
    // download, the mismatch names both digests and nothing is left behind.
    let img = data(100_000);
    let w = world(&[("a.raw", &img)]).await;
    let dest = w.dest_with_partial(&img[..5000]);
    let url = format!("{}/a.raw", w.base);
    let declared = sha(b"another image");
    let err = fetcher()
        .fetch_target(&url, &dest, img.len() as u64, declared, &NoProgress)
        .await
        .unwrap_err();
    match &err {
        FetchError::HashMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &hex::encode(declared));
            assert_eq!(actual, &hex::encode(sha(&img)));
        }
        e => panic!("expected a hash mismatch, got {e}"),
    }
    assert!(!dest.exists() && !partial_path(&dest).exists());
}

#[tokio::test]
async fn oversized_partial_is_discarded() {
    // A partial longer than the declared size cannot be a prefix: fetched again from zero.
    let img = data(10_000);
    let w = world(&[("a.raw", &img)]).await;
    let dest = w.dest_with_partial(&data(20_000));
    let url = format!("{}/a.raw", w.base);
    let out = fetcher()
        .fetch_target(&url, &dest, img.len() as u64, sha(&img), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        out,
        FetchOutcome {
            bytes_downloaded: 10_000,
            resumed_from: 0,
            reused: 0
        }
    );
}

#[tokio::test]
async fn larger_file_than_declared_is_refused() {
    // The manifest declares fewer bytes than the server has.
    let img = data(10_000);
    let w = world(&[("a.raw", &img)]).await;
    let dest = w.out.join("a.raw");
    let url = format!("{}/a.raw", w.base);
    let err = fetcher()
        .fetch_target(&url, &dest, 9_999, sha(&img[..9_999]), &NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 9_999, .. }),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("more than the 9999 bytes the manifest declares"));
    assert!(!dest.exists());
}

#[tokio::test]
async fn manifest_conditional_get_limit_and_404() {
    // First fetch returns the ETag; sending it back yields NotModified; a small limit refuses the body.
    let m = br#"{"serial": 7}"#;
    let w = world(&[("manifest.json", m)]).await;
    let url = format!("{}/manifest.json", w.base);
    let f = fetcher();
    let ManifestFetch::Fetched { bytes, etag } =
        f.fetch_manifest(&url, None, 1 << 20).await.unwrap()
    else {
        panic!("expected a body")
    };
    assert_eq!(bytes, m);
    let etag = etag.expect("server sends an ETag");
    assert_eq!(
        f.fetch_manifest(&url, Some(&etag), 1 << 20).await.unwrap(),
        ManifestFetch::NotModified
    );
    let stale = f
        .fetch_manifest(&url, Some("\"old\""), 1 << 20)
        .await
        .unwrap();
    assert!(matches!(stale, ManifestFetch::Fetched { .. }));
    let err = f.fetch_manifest(&url, None, 5).await.unwrap_err();
    assert!(
        matches!(err, FetchError::ManifestTooLarge { limit: 5, .. }),
        "{err}"
    );
    let err = f
        .fetch_manifest(&format!("{}/nope.json", w.base), None, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::NotFound { .. }) && err.to_string().contains("nope.json"),
        "{err}"
    );
}

#[tokio::test]
async fn fetch_all_keeps_item_order() {
    // Three items, two at a time, one of them missing on the server.
    let (a, b) = (data(70_000), data(1234));
    let w = world(&[("a.raw", &a), ("b.raw", &b)]).await;
    let item = |name: &str, d: &[u8]| FetchItem {
        urls: vec![format!("{}/{name}", w.base)],
        dest: w.out.join(name),
        size: d.len() as u64,
        sha256: sha(d),
        progress: Arc::new(LogProgress::default()),
        delta: None,
    };
    let items = vec![
        item("a.raw", &a),
        item("missing.raw", &b),
        item("b.raw", &b),
    ];
    let res = fetcher().fetch_all(&items, 2).await;
    assert_eq!(res.len(), 3);
    assert_eq!(res[0].as_ref().unwrap().bytes_downloaded, 70_000);
    assert!(matches!(res[1], Err(FetchError::NotFound { .. })));
    assert_eq!(std::fs::read(w.out.join("b.raw")).unwrap(), b);
}

#[test]
fn free_space_and_backoff() {
    let d = tempfile::tempdir().unwrap();
    ensure_free_space(d.path(), 1).unwrap();
    let err = ensure_free_space(d.path(), u64::MAX).unwrap_err();
    assert!(
        err.to_string().contains(&d.path().display().to_string()),
        "{err}"
    );
    assert!(matches!(
        err,
        FetchError::NoSpace {
            needed: u64::MAX,
            ..
        }
    ));
    let f = fetcher();
    assert_eq!(f.backoff(0), Duration::from_millis(10));
    assert_eq!(f.backoff(3), Duration::from_millis(80));
    assert_eq!(f.backoff(40), Duration::from_mins(1));
    assert_eq!(
        partial_path(Path::new("/s/a.raw")),
        Path::new("/s/a.raw.partial")
    );
}

#[test]
fn content_range_is_parsed_strictly() {
    // Only `bytes a-b/n` (or `/*`) with a ≤ b < n is a range to resume from; before, anything
    // after "bytes " up to a '-' was taken as the start ("bytes 5-3/10" resumed at 5).
    let ok = |first, last, complete| {
        Some(ContentRange {
            first,
            last,
            complete,
        })
    };
    let cases = [
        ("bytes 0-9/10", ok(0, 9, Some(10))),
        (" bytes 100-199/* ", ok(100, 199, None)),
        ("bytes 5-3/10", None),
        ("bytes 5-10/10", None),
        ("bytes 5", None),
        ("bytes +5-6/7", None),
        ("bytes */10", None),
        ("bytes 1-2/", None),
        (
            "bytes 18446744073709551615-18446744073709551615/*",
            ok(u64::MAX, u64::MAX, None),
        ),
        ("bytes 18446744073709551616-1/*", None),
        ("items 0-1/2", None),
    ];
    for (value, want) in cases {
        assert_eq!(ContentRange::parse(value), want, "{value:?}");
        if let Some(r) = want {
            assert_eq!(ContentRange::parse(&r.to_string()), want);
        }
    }
}

/// gzip of `data` at the best level, as the publisher writes `manifest.json.gz`.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn manifest_gzip_sibling_is_inflated_to_the_exact_bytes() {
    // A channel with manifest.json and its pre-compressed sibling: upd asks for gzip, gets the
    // smaller body, and returns exactly the published bytes; the ETag of the gzip
    // representation revalidates to NotModified.
    let m: Vec<u8> = (0..4000u32)
        .flat_map(|i| format!("{{\"n\": {}}},", i % 97).into_bytes())
        .collect();
    let gz = gzip(&m);
    let w = world(&[("manifest.json", &m)]).await;
    // Written after the plain file (never older, or the server would not serve it).
    std::fs::write(w.chan().join("manifest.json.gz"), &gz).unwrap();
    let url = format!("{}/manifest.json", w.base);
    let f = fetcher();
    let ManifestFetch::Fetched { bytes, etag } =
        f.fetch_manifest(&url, None, 1 << 20).await.unwrap()
    else {
        panic!("expected a body")
    };
    assert!(
        bytes == m,
        "the inflated manifest differs from the published one"
    );
    let resp = reqwest::Client::new()
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    assert_eq!(resp.bytes().await.unwrap().len(), gz.len());
    assert_eq!(
        f.fetch_manifest(&url, etag.as_deref(), 1 << 20)
            .await
            .unwrap(),
        ManifestFetch::NotModified
    );
}

#[tokio::test]
async fn manifest_decompression_bomb_is_refused() {
    // A server whose manifest.json.gz is 8 MiB of zeros in about 8 KiB: the body is under the
    // limit, its inflation is not; upd stops at the limit with an error that says so.
    let w = world(&[("manifest.json", b"{}")]).await;
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 64 << 10);
    std::fs::write(w.chan().join("manifest.json.gz"), &bomb).unwrap();
    let url = format!("{}/manifest.json", w.base);
    let err = fetcher()
        .fetch_manifest(&url, None, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::BadEncoding { .. })
            && err.to_string().contains("decompression bomb")
            && err.to_string().contains("1048576"),
        "{err}"
    );
    // A body that claims gzip but is not: refused, naming the problem.
    std::fs::write(w.chan().join("manifest.json.gz"), b"not gzip at all").unwrap();
    let err = fetcher()
        .fetch_manifest(&url, None, 1 << 20)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid gzip"), "{err}");
}

#[tokio::test]
async fn delta_through_the_dev_servers_multipart_answers() {
    // A 4 MiB image of which a local copy holds all but 5 stretches, served by the real dev
    // server with its chunk index: one multi-range request answered as multipart/byteranges,
    // the image lands byte for byte, most of it reused.
    let mut x = 7u64;
    let old: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mut new = old.clone();
    for k in 0..5 {
        let at = 200_000 + k * 800_000;
        for b in &mut new[at..at + 2000] {
            *b = !*b;
        }
    }
    let ix =
        upd_channels::chunks::ChunkIndex::build(&new[..], upd_channels::chunks::DEFAULT_PARAMS)
            .unwrap()
            .to_bytes();
    let w = world(&[("a.raw", &new), ("a.raw.chunks", &ix)]).await;
    std::fs::create_dir_all(&w.out).unwrap();
    let seed = w.out.join("a-1.raw");
    std::fs::write(&seed, &old).unwrap();
    let item = FetchItem {
        urls: vec![format!("{}/a.raw", w.base)],
        dest: w.out.join("a.raw"),
        size: new.len() as u64,
        sha256: sha(&new),
        progress: Arc::new(NoProgress),
        delta: Some(DeltaSource {
            index_urls: vec![format!("{}/a.raw.chunks", w.base)],
            index_size: ix.len() as u64,
            index_sha256: sha(&ix),
            seeds: vec![Seed::file(seed)],
        }),
    };
    let f = fetcher();
    let out = f
        .fetch_all(std::slice::from_ref(&item), 1)
        .await
        .pop()
        .unwrap()
        .unwrap();
    assert!(std::fs::read(&item.dest).unwrap() == new);
    assert!(out.reused > new.len() as u64 * 3 / 4, "{out:?}");
    assert!(out.bytes_downloaded < new.len() as u64 / 4, "{out:?}");
    // The dev server answered several ranges: this server is still asked several at once.
    assert_eq!(f.ranges_for(&item.urls[0]), 32);
}
