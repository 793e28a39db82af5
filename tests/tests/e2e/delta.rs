//! Delta downloads by the upd fetcher over real HTTP (the fault server on 127.0.0.1): chunks reused
//! from a local image, the rest by Range (several ranges a request where the server answers them);
//! every bad index, chunk or multipart answer falls back to the full download.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use upd::remote::fetch::{
    partial_path, DeltaSource, FetchConfig, FetchError, FetchItem, FetchOutcome, Fetcher,
    NoProgress, Progress, Seed, SeedIndex,
};
use upd_channels::chunks::{self, ChunkIndex, HEADER_LEN, RECORD_LEN};
use upd_tests::faultserver::{BadMultipart, Fault, FaultServer};

const MIB: usize = 1 << 20;

/// Deterministic incompressible bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Version 1 (8 MiB) and version 2: 3000 bytes rewritten at 3 MiB, 500 inserted at 6 MiB.
fn versions() -> (Vec<u8>, Vec<u8>) {
    let v1 = noise(8 * MIB, 11);
    let mut v2 = v1.clone();
    v2[3 * MIB..3 * MIB + 3000].copy_from_slice(&noise(3000, 12));
    v2.splice(6 * MIB..6 * MIB, noise(500, 13));
    (v1, v2)
}

fn fetcher(retries: u32, stall: Duration) -> Fetcher {
    fetcher_asking(retries, stall, 32)
}

/// A fetcher asking at most `ranges` ranges a request.
fn fetcher_asking(retries: u32, stall: Duration, ranges: usize) -> Fetcher {
    Fetcher::new(FetchConfig {
        timeout_connect: Duration::from_secs(5),
        stall_timeout: stall,
        retries,
        backoff_base: Duration::from_millis(20),
        parallel: 1,
        ranges_per_request: ranges,
    })
    .unwrap()
}

/// The server with `/b.raw` (v2, `fault`) and its index `/b.raw.chunks` (the bytes `index`); a
/// store directory holding v1 as the seed.
struct World {
    srv: FaultServer,
    _dir: tempfile::TempDir,
    dest: PathBuf,
    seed: PathBuf,
    v2: Vec<u8>,
}

async fn world(fault: Fault, index: impl FnOnce(&[u8]) -> Vec<u8>) -> World {
    let (v1, v2) = versions();
    let srv = FaultServer::start().await.unwrap();
    srv.put_bytes("/b.raw", v2.clone(), fault);
    srv.put_bytes("/b.raw.chunks", index(&v2), Fault::Normal);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let seed = store.join("b-1.raw");
    std::fs::write(&seed, &v1).unwrap();
    World {
        srv,
        dest: store.join("b-2.raw"),
        seed,
        _dir: dir,
        v2,
    }
}

fn good_index(v2: &[u8]) -> Vec<u8> {
    ChunkIndex::build(v2, chunks::DEFAULT_PARAMS)
        .unwrap()
        .to_bytes()
}

impl World {
    /// The item as `ops::store` builds it; the manifest declares `index_bytes` for the index.
    fn item(&self, index_bytes: &[u8]) -> FetchItem {
        FetchItem {
            urls: vec![self.srv.url("/b.raw")],
            dest: self.dest.clone(),
            size: self.v2.len() as u64,
            sha256: chunks::sha256(&self.v2),
            progress: Arc::new(NoProgress),
            delta: Some(DeltaSource {
                index_urls: vec![self.srv.url("/b.raw.chunks")],
                index_size: index_bytes.len() as u64,
                index_sha256: chunks::sha256(index_bytes),
                seeds: vec![Seed::file(self.seed.clone())],
            }),
        }
    }

    async fn run(&self, f: &Fetcher, item: &FetchItem) -> Result<FetchOutcome, FetchError> {
        f.fetch_all(std::slice::from_ref(item), 1)
            .await
            .pop()
            .unwrap()
    }

    /// The download landed, byte for byte v2, no partial left.
    fn landed(&self) {
        assert!(std::fs::read(&self.dest).unwrap() == self.v2, "dest is v2");
        assert!(!partial_path(&self.dest).exists());
    }

    /// The image was fetched whole, in one plain GET, after whatever the delta attempt asked.
    fn fell_back(&self, out: &FetchOutcome) {
        self.landed();
        let st = self.srv.stats("/b.raw");
        assert_eq!(st.ranges.last(), Some(&None), "{:?}", st.ranges);
        assert_eq!(out.reused, 0);
        assert!(out.bytes_downloaded >= self.v2.len() as u64, "{out:?}");
    }
}

#[tokio::test]
async fn minor_change_fetches_few_bytes_by_range() {
    // v1 in the store, v2 on the server with a good index: most chunks copied from v1, the rest
    // by closed Range requests; far fewer bytes served than the image, the result is exactly v2.
    let w = world(Fault::Normal, good_index).await;
    let ix = good_index(&w.v2);
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&ix))
        .await
        .unwrap();
    w.landed();
    let st = w.srv.stats("/b.raw");
    let size = w.v2.len() as u64;
    assert!(
        st.body_bytes * 10 < size,
        "{} of {size} bytes served",
        st.body_bytes
    );
    assert!(out.reused > size * 9 / 10, "{out:?}");
    assert_eq!(out.bytes_downloaded, st.body_bytes + ix.len() as u64);
    assert!(
        st.closed_ranges_only(),
        "closed ranges only: {:?}",
        st.ranges
    );
    assert!(
        (2..=6).contains(&st.spans().len()),
        "neighbours coalesced: {:?}",
        st.ranges
    );
    assert_eq!(st.requests, 1, "all ranges in one request: {:?}", st.ranges);
}

#[tokio::test]
async fn no_seed_fetches_everything_as_one_range() {
    // Nothing local to reuse: the whole image in one coalesced range, still verified.
    let w = world(Fault::Normal, good_index).await;
    std::fs::remove_file(&w.seed).unwrap();
    let ix = good_index(&w.v2);
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&ix))
        .await
        .unwrap();
    w.landed();
    assert_eq!(out.reused, 0);
    let st = w.srv.stats("/b.raw");
    assert_eq!(st.requests, 1, "{:?}", st.ranges);
    assert_eq!(st.body_bytes, w.v2.len() as u64);
}

#[tokio::test]
async fn cut_range_resumes_at_chunk_granularity() {
    // The first range answer is cut after 600 kB (a few chunks), no retries: the run fails holding whole
    // verified chunks only; the next run keeps them and asks only for what is after them.
    let w = world(
        Fault::CutAfter {
            at: 600_000,
            times: Some(1),
        },
        good_index,
    )
    .await;
    std::fs::remove_file(&w.seed).unwrap();
    let ix = good_index(&w.v2);
    let item = w.item(&ix);
    let err = w
        .run(&fetcher(0, Duration::from_secs(5)), &item)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let held = std::fs::metadata(partial_path(&w.dest)).unwrap().len();
    let index = ChunkIndex::from_bytes(&ix, w.v2.len() as u64).unwrap();
    assert!(held > 0 && held < 600_000, "held {held}");
    assert!(
        index.chunks.iter().any(|c| c.end() == held),
        "{held} is a chunk boundary"
    );
    w.srv.reset_stats("/b.raw");
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &item)
        .await
        .unwrap();
    w.landed();
    assert_eq!(out.resumed_from, held);
    let st = w.srv.stats("/b.raw");
    assert_eq!(
        st.ranges,
        vec![Some(format!("bytes={held}-{}", w.v2.len() - 1))]
    );
}

#[tokio::test]
async fn stalled_range_honours_the_stall_timeout() {
    // The range answer stops after 64 KiB and the connection stays open: the fetch fails as
    // stalled after the 1 s stall timeout (no fallback to a whole download of the same server).
    let w = world(
        Fault::StallAfter {
            at: 64 * 1024,
            times: None,
        },
        good_index,
    )
    .await;
    let ix = good_index(&w.v2);
    let t = Instant::now();
    let err = w
        .run(&fetcher(0, Duration::from_secs(1)), &w.item(&ix))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Stalled { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert!(!w.dest.exists());
}

#[tokio::test]
async fn index_hash_differs_from_the_manifest() {
    // The manifest declares one index, the server holds another: refused, full download.
    let w = world(Fault::Normal, |v2| {
        let mut b = good_index(v2);
        let n = b.len();
        b[n - 1] ^= 1;
        b
    })
    .await;
    let out = w
        .run(
            &fetcher(0, Duration::from_secs(5)),
            &w.item(&good_index(&w.v2)),
        )
        .await
        .unwrap();
    w.fell_back(&out);
    assert_eq!(w.srv.stats("/b.raw").requests, 1);
}

#[tokio::test]
async fn index_larger_than_declared_is_cut_off() {
    // The server sends 1 MiB more index than the manifest declares: not read past the
    // declared size, full download.
    let w = world(Fault::Normal, good_index).await;
    let ix = good_index(&w.v2);
    w.srv.put_bytes(
        "/b.raw.chunks",
        ix.clone(),
        Fault::Extra {
            extra: MIB as u64,
            declare: false,
        },
    );
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&ix))
        .await
        .unwrap();
    w.fell_back(&out);
}

/// A signed-looking index (the manifest declares exactly these bytes) edited by `edit`.
async fn bad_index_falls_back(edit: fn(&mut Vec<u8>, &ChunkIndex)) {
    let (_, v2) = versions();
    let good = ChunkIndex::build(&v2[..], chunks::DEFAULT_PARAMS).unwrap();
    let mut bad = good.to_bytes();
    edit(&mut bad, &good);
    let served = bad.clone();
    let w = world(Fault::Normal, move |_| served).await;
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&bad))
        .await
        .unwrap();
    w.fell_back(&out);
    assert_eq!(
        w.srv.stats("/b.raw").requests,
        1,
        "no range asked on a bad index"
    );
}

fn patch(b: &mut [u8], i: usize, offset: u64, length: u32) {
    let at = HEADER_LEN + i * RECORD_LEN;
    b[at..at + 8].copy_from_slice(&offset.to_le_bytes());
    b[at + 8..at + 12].copy_from_slice(&length.to_le_bytes());
}

#[tokio::test]
async fn index_claiming_more_bytes_than_the_image() {
    // The index describes an image 64 KiB longer than the manifest's (its last chunk grown).
    bad_index_falls_back(|b, ix| {
        let last = ix.chunks.len() - 1;
        let c = ix.chunks[last];
        patch(b, last, c.offset, c.length + 65536);
        b[20..28].copy_from_slice(&(ix.size + 65536).to_le_bytes());
    })
    .await;
    // Same, the header left at the right size: the chunks run past the end.
    bad_index_falls_back(|b, ix| {
        let last = ix.chunks.len() - 1;
        let c = ix.chunks[last];
        patch(b, last, c.offset, c.length + 2);
    })
    .await;
}

#[tokio::test]
async fn overlapping_chunks() {
    // Chunk 5 starts 10 bytes inside chunk 4.
    bad_index_falls_back(|b, ix| {
        let c = ix.chunks[5];
        patch(b, 5, c.offset - 10, c.length + 10);
    })
    .await;
}

#[tokio::test]
async fn out_of_order_chunks() {
    // Records 2 and 3 swapped.
    bad_index_falls_back(|b, _| {
        let (a, z) = (HEADER_LEN + 2 * RECORD_LEN, HEADER_LEN + 3 * RECORD_LEN);
        let rec2 = b[a..a + RECORD_LEN].to_vec();
        b.copy_within(z..z + RECORD_LEN, a);
        b[z..z + RECORD_LEN].copy_from_slice(&rec2);
    })
    .await;
}

#[tokio::test]
async fn served_chunk_not_matching_its_hash() {
    // The server flips a byte inside the changed region, only in answers to chunk ranges: the
    // chunk is refused before it reaches the partial, the full download completes with good bytes.
    let w = world(Fault::CorruptInRange((3 * MIB + 100) as u64), good_index).await;
    let ix = good_index(&w.v2);
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&ix))
        .await
        .unwrap();
    w.landed();
    let st = w.srv.stats("/b.raw");
    // The full download resumed after the verified chunks: an open-ended range, or a whole GET.
    let last = st.ranges.last().unwrap().clone();
    assert!(
        last.as_deref().is_none_or(|r| r.ends_with('-')),
        "{:?}",
        st.ranges
    );
    assert_eq!(out.reused, 0);
}

#[tokio::test]
async fn server_ignoring_range() {
    // The server answers the chunk range with the whole file (200): full download.
    let w = world(Fault::IgnoreRange, good_index).await;
    let ix = good_index(&w.v2);
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&ix))
        .await
        .unwrap();
    w.landed();
    assert_eq!(out.reused, 0);
    assert!(out.bytes_downloaded >= w.v2.len() as u64, "{out:?}");
}

#[tokio::test]
async fn unrelated_seed_offers_nothing() {
    // A store image that shares nothing with v2 offers no chunks: everything is fetched by
    // range, the result is v2.
    let w = world(Fault::Normal, good_index).await;
    std::fs::write(&w.seed, noise(8 * MIB, 99)).unwrap();
    let ix = good_index(&w.v2);
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &w.item(&ix))
        .await
        .unwrap();
    w.landed();
    assert_eq!(out.reused, 0);
    assert_eq!(w.srv.stats("/b.raw").body_bytes, w.v2.len() as u64);
}

/// Overwrites a seed's range with noise the first time a transfer starts: after the plan was
/// made, before any chunk is copied (a local image changing under the download).
struct Clobber {
    path: PathBuf,
    offset: u64,
    len: usize,
    done: AtomicBool,
}

/// Progress that overwrites 8 MiB of `path` at `offset` the first time a transfer starts.
fn clobbered(path: &std::path::Path, offset: u64) -> Arc<Clobber> {
    Arc::new(Clobber {
        path: path.to_path_buf(),
        offset,
        len: 8 * MIB,
        done: AtomicBool::default(),
    })
}

impl Progress for Clobber {
    fn start(&self, _name: &str, _total: u64) {
        use std::os::unix::fs::FileExt;
        if !self.done.swap(true, Ordering::SeqCst) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .unwrap();
            f.write_all_at(&noise(self.len, 77), self.offset).unwrap();
            f.sync_all().unwrap();
        }
    }
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

#[tokio::test]
async fn seed_changing_between_planning_and_copying() {
    // The store image is chunked, then rewritten before its chunks are copied: each copied chunk
    // is re-hashed, the first one fails, and the full download takes over; the result is v2.
    let w = world(Fault::Normal, good_index).await;
    let ix = good_index(&w.v2);
    let mut item = w.item(&ix);
    item.progress = clobbered(&w.seed, 0);
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &item)
        .await
        .unwrap();
    w.fell_back(&out);
}

/// Slot geometry of the OS worlds: a guard, slot A (the booted one, v1), slot B (the target), a guard.
const SLOT: u64 = 10 * MIB as u64;
const A: u64 = MIB as u64;
const B: u64 = A + SLOT;

/// A "disk" file holding v1 in slot A, the rest noise (slot B holds an older OS), and the
/// server with v2 and its index, as [`world`] has it.
async fn os_world(fault: Fault) -> (World, PathBuf, Vec<u8>) {
    let w = world(fault, good_index).await;
    let v1 = std::fs::read(&w.seed).unwrap();
    let mut disk = noise((B + SLOT) as usize + MIB, 5);
    disk[A as usize..A as usize + v1.len()].copy_from_slice(&v1);
    let path = w.seed.with_file_name("disk.img");
    std::fs::write(&path, &disk).unwrap();
    (w, path, disk)
}

impl World {
    /// The OS image item of `ops::stage`: v2 into slot B of `disk`, slot A's v1 as the seed.
    fn os_item(&self, disk: &std::path::Path, index_bytes: &[u8]) -> FetchItem {
        let mut it = self.item(index_bytes);
        it.dest = disk.to_path_buf();
        it.delta.as_mut().unwrap().seeds = vec![Seed::range(disk.to_path_buf(), A, SLOT)];
        it
    }

    async fn run_os(&self, f: &Fetcher, it: &FetchItem) -> Result<FetchOutcome, FetchError> {
        let slot = upd::remote::fetch::SlotRange {
            offset: B,
            capacity: SLOT,
        };
        f.fetch_os_image(it, slot).await
    }

    /// Slot B holds v2; every other byte of the disk is as it was.
    fn staged(&self, disk: &std::path::Path, before: &[u8]) {
        let now = std::fs::read(disk).unwrap();
        let n = self.v2.len();
        assert!(
            now[B as usize..B as usize + n] == self.v2[..],
            "slot B is v2"
        );
        assert!(
            now[..B as usize] == before[..B as usize],
            "slot A untouched"
        );
        assert!(
            now[B as usize + n..] == before[B as usize + n..],
            "nothing written past the image"
        );
    }
}

#[tokio::test]
async fn os_image_reuses_the_booted_slot() {
    // v1 in slot A, v2 on the server: the chunks of v2 found in slot A are copied into slot B,
    // the rest fetched by range; slot B ends byte for byte v2, slot A and the guards untouched.
    let (w, disk, before) = os_world(Fault::Normal).await;
    let ix = good_index(&w.v2);
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &w.os_item(&disk, &ix))
        .await
        .unwrap();
    w.staged(&disk, &before);
    let size = w.v2.len() as u64;
    let st = w.srv.stats("/b.raw");
    assert!(
        st.body_bytes * 10 < size,
        "{} of {size} served",
        st.body_bytes
    );
    assert!(out.reused > size * 9 / 10, "{out:?}");
    assert!(st.ranges.iter().all(Option::is_some), "{:?}", st.ranges);
}

#[tokio::test]
async fn os_image_refetches_a_corrupted_booted_region() {
    // Slot A has 100 bytes flipped at 1 MiB into v1 (its chunk hash no longer matches): that
    // chunk is fetched by range like a changed one, and slot B is still exactly v2.
    let (w, disk, mut before) = os_world(Fault::Normal).await;
    let at = (A + MIB as u64) as usize;
    for b in &mut before[at..at + 100] {
        *b ^= 0xff;
    }
    std::fs::write(&disk, &before).unwrap();
    let ix = good_index(&w.v2);
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &w.os_item(&disk, &ix))
        .await
        .unwrap();
    w.staged(&disk, &before);
    let st = w.srv.stats("/b.raw");
    let index = ChunkIndex::from_bytes(&ix, w.v2.len() as u64).unwrap();
    let hit = index
        .chunks
        .iter()
        .find(|c| c.offset <= MIB as u64 && MIB as u64 + 100 <= c.end())
        .unwrap();
    assert!(
        st.spans()
            .iter()
            .any(|&(a, b)| a <= hit.offset && hit.end() - 1 <= b),
        "the corrupted chunk {hit:?} was fetched: {:?}",
        st.ranges
    );
    assert!(st.body_bytes * 4 < w.v2.len() as u64, "{st:?}");
    assert!(out.reused > 0);
}

#[tokio::test]
async fn os_image_resumes_at_chunk_granularity() {
    // Nothing in slot A to reuse; the range answer is cut after 600 kB, no retries: slot B holds
    // whole verified chunks. The next run keeps them (it reads them back from the slot) and asks
    // only for what follows.
    let (w, disk, before) = os_world(Fault::CutAfter {
        at: 600_000,
        times: Some(1),
    })
    .await;
    let ix = good_index(&w.v2);
    let mut it = w.os_item(&disk, &ix);
    it.delta.as_mut().unwrap().seeds.clear();
    let err = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    w.srv.reset_stats("/b.raw");
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap();
    w.staged(&disk, &before);
    let index = ChunkIndex::from_bytes(&ix, w.v2.len() as u64).unwrap();
    let held = out.resumed_from;
    assert!(held > 0 && held < 600_000, "held {held}");
    assert!(
        index.chunks.iter().any(|c| c.end() == held),
        "{held} is a chunk boundary"
    );
    assert_eq!(
        w.srv.stats("/b.raw").ranges,
        vec![Some(format!("bytes={held}-{}", w.v2.len() - 1))]
    );
}

#[tokio::test]
async fn os_image_with_a_bad_index_falls_back_to_a_full_stream() {
    // The server's index is not the one the manifest declares: the image is streamed whole into
    // slot B (one plain GET), exactly v2.
    let (w, disk, before) = os_world(Fault::Normal).await;
    let mut bad = good_index(&w.v2);
    let n = bad.len();
    bad[n - 1] ^= 1;
    w.srv.put_bytes("/b.raw.chunks", bad, Fault::Normal);
    let out = w
        .run_os(
            &fetcher(0, Duration::from_secs(5)),
            &w.os_item(&disk, &good_index(&w.v2)),
        )
        .await
        .unwrap();
    w.staged(&disk, &before);
    let st = w.srv.stats("/b.raw");
    assert_eq!(st.ranges, vec![None]);
    assert_eq!(out.reused, 0);
}

#[tokio::test]
async fn os_seed_changing_between_planning_and_copying() {
    // Slot A is chunked, then overwritten before its chunks are copied: the first copied chunk
    // fails its re-hash, the full stream takes over, slot B is exactly v2.
    let (w, disk, _) = os_world(Fault::Normal).await;
    let ix = good_index(&w.v2);
    let mut it = w.os_item(&disk, &ix);
    it.progress = clobbered(&disk, A);
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap();
    let before = std::fs::read(&disk).unwrap();
    w.staged(&disk, &before);
    assert_eq!(w.srv.stats("/b.raw").ranges.last(), Some(&None));
    assert_eq!(out.reused, 0);
}

#[tokio::test]
async fn os_image_larger_than_the_slot_is_refused_up_front() {
    // The manifest declares an image larger than slot B: refused before any byte is asked.
    let (w, disk, before) = os_world(Fault::Normal).await;
    let ix = good_index(&w.v2);
    let it = w.os_item(&disk, &ix);
    let slot = upd::remote::fetch::SlotRange {
        offset: B,
        capacity: w.v2.len() as u64 - 1,
    };
    let err = fetcher(0, Duration::from_secs(5))
        .fetch_os_image(&it, slot)
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::SlotTooSmall { .. }), "{err}");
    assert_eq!(std::fs::read(&disk).unwrap(), before);
    assert_eq!(w.srv.stats("/b.raw").requests, 0);
}

/// Version 1 (8 MiB) and version 2 with 12 stretches of 3000 bytes rewritten, 640 KiB apart: a
/// dozen runs of missing chunks with reusable ones between.
fn scattered() -> (Vec<u8>, Vec<u8>) {
    let v1 = noise(8 * MIB, 21);
    let mut v2 = v1.clone();
    for k in 0..12u64 {
        let at = (300 * 1024 + k * 640 * 1024) as usize;
        v2[at..at + 3000].copy_from_slice(&noise(3000, 100 + k));
    }
    (v1, v2)
}

/// [`world`] with the scattered versions.
async fn scattered_world(fault: Fault) -> World {
    let (v1, v2) = scattered();
    let w = world(fault, good_index).await;
    w.srv.put_bytes("/b.raw", v2.clone(), fault);
    w.srv
        .put_bytes("/b.raw.chunks", good_index(&v2), Fault::Normal);
    std::fs::write(&w.seed, &v1).unwrap();
    World { v2, ..w }
}

impl World {
    async fn run_scattered(&self, f: &Fetcher) -> FetchOutcome {
        let ix = good_index(&self.v2);
        let out = self.run(f, &self.item(&ix)).await.unwrap();
        self.landed();
        out
    }

    /// The delta download went on to the end: most bytes reused, no whole GET, no open range.
    fn stayed_delta(&self, out: &FetchOutcome) {
        let st = self.srv.stats("/b.raw");
        assert!(st.closed_ranges_only(), "{:?}", st.ranges);
        assert!(out.reused > self.v2.len() as u64 * 4 / 5, "{out:?}");
    }

    /// The multipart answer was refused: the full download took over (resuming after the
    /// chunks already verified: an open-ended range, or a whole GET), the result is v2.
    fn refused_multipart(&self) {
        self.landed();
        let st = self.srv.stats("/b.raw");
        assert!(
            st.ranges[0].as_deref().is_some_and(|r| r.contains(',')),
            "{:?}",
            st.ranges
        );
        let last = st.ranges.last().unwrap().clone();
        assert!(
            last.as_deref().is_none_or(|r| r.ends_with('-')),
            "{:?}",
            st.ranges
        );
    }
}

#[tokio::test]
async fn multi_range_requests_cut_the_requests() {
    // The same scattered update fetched twice: with single ranges (one request a run), then with
    // multi-range requests (multipart/byteranges answers): the same bytes reused, the same
    // content received, in one request instead of a dozen.
    let w = scattered_world(Fault::Normal).await;
    let single = w
        .run_scattered(&fetcher_asking(0, Duration::from_secs(5), 1))
        .await;
    let one = w.srv.stats("/b.raw");
    std::fs::remove_file(&w.dest).unwrap();
    w.srv.reset_stats("/b.raw");
    let multi = w.run_scattered(&fetcher(0, Duration::from_secs(5))).await;
    let many = w.srv.stats("/b.raw");
    assert!(one.requests >= 10, "{:?}", one.ranges);
    assert!(
        one.ranges.iter().flatten().all(|r| !r.contains(',')),
        "{:?}",
        one.ranges
    );
    assert_eq!(many.requests, 1, "{:?}", many.ranges);
    assert_eq!(many.spans(), one.spans(), "the same ranges asked");
    assert_eq!(multi.reused, single.reused);
    w.stayed_delta(&multi);
    // The multipart framing is all that is added: under 200 bytes a part.
    let parts = many.spans().len() as u64;
    assert!(many.body_bytes > one.body_bytes, "{many:?} {one:?}");
    assert!(
        many.body_bytes < one.body_bytes + 200 * parts,
        "{many:?} {one:?}"
    );
}

#[tokio::test]
async fn server_answering_only_the_first_range() {
    // The server answers a multi-range request with its first range alone (a single-part 206):
    // the fetcher takes it, then asks the rest one range a request, and stays a delta download.
    let w = scattered_world(Fault::FirstRangeOnly).await;
    let out = w.run_scattered(&fetcher(0, Duration::from_secs(5))).await;
    w.stayed_delta(&out);
    let st = w.srv.stats("/b.raw");
    assert!(
        st.multi_then_single(),
        "single ranges after the first answer: {:?}",
        st.ranges
    );
    // Each range of the first request not answered was asked again, alone, in order.
    let of = |r: &[Option<String>]| {
        upd_tests::faultserver::Stats {
            ranges: r.to_vec(),
            ..Default::default()
        }
        .spans()
    };
    assert_eq!(
        of(&st.ranges[1..]),
        of(&st.ranges[..1])[1..],
        "{:?}",
        st.ranges
    );
}

#[tokio::test]
async fn server_answering_multi_range_with_the_whole_file() {
    // The server sends the whole file (200) to a multi-range request, as nginx past max_ranges
    // does, and answers single ranges: asked again one range a request, still a delta download.
    let w = scattered_world(Fault::WholeForMultiRange).await;
    let out = w.run_scattered(&fetcher(0, Duration::from_secs(5))).await;
    w.stayed_delta(&out);
    let st = w.srv.stats("/b.raw");
    assert!(st.multi_then_single(), "{:?}", st.ranges);
    assert!(st.requests >= 10, "{:?}", st.ranges);
}

#[tokio::test]
async fn server_coalescing_the_ranges() {
    // The server answers one part from the first range's start to the last one's end (legal
    // coalescing): one request, the chunks between taken from the answer, each verified.
    let w = scattered_world(Fault::CoalesceRanges).await;
    let out = w.run_scattered(&fetcher(0, Duration::from_secs(5))).await;
    let st = w.srv.stats("/b.raw");
    assert_eq!(st.requests, 1, "{:?}", st.ranges);
    let (first, last) = (st.spans()[0].0, st.spans().last().unwrap().1);
    assert_eq!(st.body_bytes, last + 1 - first);
    assert_eq!(out.reused, w.v2.len() as u64 - st.body_bytes);
}

/// A server answering multi-range requests wrongly in the way `bad`: the answer is refused
/// (before any of its wrong bytes reach the partial) and the full download lands v2.
async fn bad_multipart_falls_back(bad: BadMultipart) {
    let w = scattered_world(Fault::Multipart(bad)).await;
    w.run_scattered(&fetcher(0, Duration::from_secs(5))).await;
    w.refused_multipart();
}

#[tokio::test]
async fn multipart_part_not_asked_for() {
    // The second part's Content-Range starts 4096 bytes after the range asked.
    bad_multipart_falls_back(BadMultipart::Unasked).await;
}

#[tokio::test]
async fn multipart_overlapping_parts() {
    // The second part starts 100 bytes before the end of the first.
    bad_multipart_falls_back(BadMultipart::Overlap).await;
}

#[tokio::test]
async fn multipart_parts_out_of_order() {
    // The parts come last first.
    bad_multipart_falls_back(BadMultipart::Reversed).await;
}

#[tokio::test]
async fn multipart_without_a_boundary() {
    // `Content-Type: multipart/byteranges` with no boundary parameter.
    bad_multipart_falls_back(BadMultipart::NoBoundary).await;
}

#[tokio::test]
async fn multipart_with_a_garbled_boundary() {
    // The body's delimiters use another boundary than the Content-Type's.
    bad_multipart_falls_back(BadMultipart::GarbledBoundary).await;
}

#[tokio::test]
async fn multipart_part_longer_than_its_range() {
    // Ten bytes more in the first part than its Content-Range says.
    bad_multipart_falls_back(BadMultipart::LongPart).await;
}

#[tokio::test]
async fn multipart_answer_ending_early() {
    // The body ends after the first part (its Content-Length agreeing): no close delimiter.
    bad_multipart_falls_back(BadMultipart::Truncated).await;
}

#[tokio::test]
async fn multipart_part_not_matching_its_hash() {
    // A byte flipped inside the fifth rewritten stretch, in range answers only: the chunk is
    // refused before it reaches the partial, the full download lands v2.
    let at = (300 * 1024 + 4 * 640 * 1024 + 100) as u64;
    let w = scattered_world(Fault::CorruptInRange(at)).await;
    w.run_scattered(&fetcher(0, Duration::from_secs(5))).await;
    w.refused_multipart();
}

#[tokio::test]
async fn cut_multipart_answer_resumes_at_chunk_granularity() {
    // The multi-range answer is cut after 20 kB, no retries: the run fails holding whole verified
    // chunks only; the next run keeps them and asks a multi-range request for the rest.
    let w = scattered_world(Fault::CutAfter {
        at: 20_000,
        times: Some(1),
    })
    .await;
    let ix = good_index(&w.v2);
    let item = w.item(&ix);
    let err = w
        .run(&fetcher(0, Duration::from_secs(5)), &item)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let held = std::fs::metadata(partial_path(&w.dest)).unwrap().len();
    let index = ChunkIndex::from_bytes(&ix, w.v2.len() as u64).unwrap();
    assert!(
        index.chunks.iter().any(|c| c.end() == held),
        "{held} is a chunk boundary"
    );
    w.srv.reset_stats("/b.raw");
    let out = w
        .run(&fetcher(0, Duration::from_secs(5)), &item)
        .await
        .unwrap();
    w.landed();
    assert_eq!(out.resumed_from, held);
    let st = w.srv.stats("/b.raw");
    assert_eq!(st.requests, 1, "{:?}", st.ranges);
    assert!(st.spans()[0].0 >= held, "{:?}", st.ranges);
}

#[tokio::test]
async fn os_image_through_multi_range() {
    // The scattered update as an OS image into slot B, slot A's v1 the seed: one multi-range
    // request, slot B exactly v2, slot A and the guards untouched.
    let (v1, v2) = scattered();
    let (w, disk, mut before) = os_world(Fault::Normal).await;
    before[A as usize..A as usize + v1.len()].copy_from_slice(&v1);
    std::fs::write(&disk, &before).unwrap();
    w.srv.put_bytes("/b.raw", v2.clone(), Fault::Normal);
    w.srv
        .put_bytes("/b.raw.chunks", good_index(&v2), Fault::Normal);
    let w = World { v2, ..w };
    let ix = good_index(&w.v2);
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &w.os_item(&disk, &ix))
        .await
        .unwrap();
    w.staged(&disk, &before);
    let st = w.srv.stats("/b.raw");
    assert_eq!(st.requests, 1, "{:?}", st.ranges);
    assert!(st.spans().len() >= 10, "{:?}", st.ranges);
    assert!(out.reused > w.v2.len() as u64 * 4 / 5, "{out:?}");
}

#[tokio::test]
async fn os_slot_refuses_every_bad_multipart_answer() {
    // Each broken multipart answer of the extension tests above, while an OS image streams into
    // slot B with slot A's v1 as the seed: the answer is refused, the full stream takes over,
    // slot B ends exactly v2, slot A and the rest of the disk untouched.
    let (v1, v2) = scattered();
    for bad in BadMultipart::ALL {
        let fault = Fault::Multipart(bad);
        let (w, disk, mut before) = os_world(fault).await;
        before[A as usize..A as usize + v1.len()].copy_from_slice(&v1);
        std::fs::write(&disk, &before).unwrap();
        w.srv.put_bytes("/b.raw", v2.clone(), fault);
        w.srv
            .put_bytes("/b.raw.chunks", good_index(&v2), Fault::Normal);
        let w = World {
            v2: v2.clone(),
            ..w
        };
        let ix = good_index(&w.v2);
        w.run_os(&fetcher(0, Duration::from_secs(5)), &w.os_item(&disk, &ix))
            .await
            .unwrap_or_else(|e| panic!("{bad:?}: {e}"));
        w.staged(&disk, &before);
        let st = w.srv.stats("/b.raw");
        assert!(
            st.ranges[0].as_deref().is_some_and(|r| r.contains(',')),
            "{bad:?}: {:?}",
            st.ranges
        );
        let last = st.ranges.last().unwrap().clone();
        assert!(
            last.as_deref().is_none_or(|r| r.ends_with('-')),
            "{bad:?}: the full stream last: {:?}",
            st.ranges
        );
    }
}

/// [`os_world`] with slot A's own index (v1's, or the bytes `served`) at `/a.raw.chunks`, and
/// the item naming it as the seed's index with the hash of v1's index.
async fn os_world_with_seed_index(served: Option<Vec<u8>>) -> (World, PathBuf, Vec<u8>, FetchItem) {
    let (v1, _) = versions();
    let (w, disk, before) = os_world(Fault::Normal).await;
    let own = good_index(&v1);
    w.srv.put_bytes(
        "/a.raw.chunks",
        served.unwrap_or_else(|| own.clone()),
        Fault::Normal,
    );
    let mut it = w.os_item(&disk, &good_index(&w.v2));
    it.delta.as_mut().unwrap().seeds = vec![Seed::range(disk.clone(), A, v1.len() as u64)
        .with_index(SeedIndex {
            urls: vec![w.srv.url("/a.raw.chunks")],
            size: own.len() as u64,
            sha256: chunks::sha256(&own),
        })];
    (w, disk, before, it)
}

#[tokio::test]
async fn os_image_planned_from_the_booted_images_index() {
    // The booted image's own signed index is known: the plan reads where its chunks are from it
    // (one request for the index, nothing of slot A read to plan), copies them, fetches the
    // rest by closed ranges; slot B exactly v2.
    let (w, disk, before, it) = os_world_with_seed_index(None).await;
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap();
    w.staged(&disk, &before);
    assert_eq!(w.srv.stats("/a.raw.chunks").requests, 1);
    let st = w.srv.stats("/b.raw");
    assert!(st.closed_ranges_only(), "{:?}", st.ranges);
    assert!(out.reused > w.v2.len() as u64 * 4 / 5, "{out:?}");
}

#[tokio::test]
async fn os_slot_differing_from_its_index_is_chunked_after_all() {
    // 64 KiB of slot A differ from the booted image's index: the copy's re-hash finds the first
    // such chunk, slot A is chunked after all and the plan made again from there; the corrupted
    // chunks are fetched by range, no fallback to the whole image, slot B exactly v2.
    let (w, disk, mut before, it) = os_world_with_seed_index(None).await;
    before[A as usize + MIB..A as usize + MIB + (64 << 10)].fill(0x5a);
    std::fs::write(&disk, &before).unwrap();
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap();
    w.staged(&disk, &before);
    let st = w.srv.stats("/b.raw");
    assert!(st.closed_ranges_only(), "{:?}", st.ranges);
    let spans = st.spans();
    for at in (MIB as u64..(MIB + (64 << 10)) as u64).step_by(4096) {
        assert!(
            spans.iter().any(|&(a, b)| a <= at && at <= b),
            "byte {at} of the corrupted region was fetched: {spans:?}"
        );
    }
    assert!(out.reused > w.v2.len() as u64 * 3 / 4, "{out:?}");
}

#[tokio::test]
async fn os_seed_index_not_matching_the_manifest_is_not_used() {
    // The server's copy of the booted image's index is not the signed one: it is not used, slot
    // A is chunked instead, and the download stays a delta download.
    let (v1, _) = versions();
    let mut bad = good_index(&v1);
    let n = bad.len();
    bad[n - 1] ^= 1;
    let (w, disk, before, it) = os_world_with_seed_index(Some(bad)).await;
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap();
    w.staged(&disk, &before);
    assert!(w.srv.stats("/b.raw").closed_ranges_only());
    assert!(out.reused > w.v2.len() as u64 * 4 / 5, "{out:?}");
}

#[tokio::test]
async fn os_slot_rewritten_after_planning_from_its_index() {
    // Slot A is overwritten after a plan made from its index, before any copy: its chunks all
    // fail their re-hash, it is chunked after all (nothing found), and every chunk comes by
    // closed ranges instead; slot B exactly v2.
    let (w, disk, _, mut it) = os_world_with_seed_index(None).await;
    it.progress = clobbered(&disk, A);
    let out = w
        .run_os(&fetcher(0, Duration::from_secs(5)), &it)
        .await
        .unwrap();
    let before = std::fs::read(&disk).unwrap();
    w.staged(&disk, &before);
    let st = w.srv.stats("/b.raw");
    assert!(st.closed_ranges_only(), "{:?}", st.ranges);
    assert_eq!(out.reused, 0, "{out:?}");
}
