//! Delta downloads by the real upd on a sandbox machine: a minor update of hello moves few bytes;
//! each bad index or chunk falls back to the whole image with exactly one warning, and completes.

use std::fs;

use super::rig::*;
use upd_channels::chunks::{self, ChunkIndex, HEADER_LEN, RECORD_LEN};
use upd_channels::manifest::Sha256;
use upd_tests::faultserver::Fault;
use upd_tests::images::SysextSpec;
use upd_tests::sandbox::require_root;

const WARNING: &str = "delta download not possible";

/// hello `version` with 4 MiB of filler that every version shares (a minor update).
fn hello(version: &str) -> SysextSpec {
    let mut s = ext("hello", version);
    s.pad_bytes = 4 * MIB;
    s.filler_seed = Some(7);
    s
}

/// A channel publishing chunk indexes; a machine that pulled hello 1.0.0; hello 1.1.0 published.
/// Returns the rig and the URL path and size of the 1.1.0 image, and its index's URL path.
fn rig_with_update() -> (Rig, String, u64, String) {
    let mut rig = Rig::new();
    rig.ch.chunk_indexes = true;
    rig.ch.add_extension(OS_VERSION, &hello("1.0.0"));
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.0.0");
    let b = rig.ch.add_extension(OS_VERSION, &hello("1.1.0"));
    rig.publish();
    let ix = b.image.chunk_index.expect("published with an index");
    let (url, size) = rig.image_url("hello", "1.1.0");
    (rig, url, size, format!("/{}", ix.path))
}

/// The pull went through: exit 0, hello 1.1.0 merged, the store copy byte-identical to the
/// published image; returns upd's output.
fn completes(rig: &mut Rig) -> String {
    let out = rig.upd(&["pull"], &[]);
    let text = text_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0", "{text}");
    let b = rig
        .ch
        .release_mut(OS_VERSION)
        .extensions
        .iter()
        .find(|b| b.version.to_string() == "1.1.0")
        .unwrap()
        .clone();
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let copy = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("hello-1.1.0-"))
        .expect("1.1.0 in the store")
        .path();
    assert_eq!(
        fs::read(copy).unwrap(),
        fs::read(rig.ch.file(&b.image)).unwrap()
    );
    text
}

/// The pull fell back to the whole image, said so once, and completed.
fn falls_back(rig: &mut Rig, url: &str, size: u64) {
    let text = completes(rig);
    assert_eq!(text.matches(WARNING).count(), 1, "{text}");
    assert!(
        rig.server.stats(url).body_bytes >= size / 2,
        "the whole image was fetched: {:?}",
        rig.server.stats(url)
    );
}

#[test]
fn minor_update_fetches_only_what_changed() {
    // hello 1.0.0 → 1.1.0 differ in one script and the squashfs tables: the machine reuses the
    // chunks of 1.0.0 and fetches the rest by Range; the server's byte counter shows a small
    // share of the image moved, no warning, and the merged result is 1.1.0.
    if !require_root() {
        return;
    }
    let (mut rig, url, size, _) = rig_with_update();
    let text = completes(&mut rig);
    assert!(!text.contains(WARNING), "{text}");
    let st = rig.server.stats(&url);
    assert!(
        st.body_bytes * 4 < size,
        "{} of {size} bytes served: {:?}",
        st.body_bytes,
        st.ranges
    );
    assert!(st.ranges.iter().all(Option::is_some), "{:?}", st.ranges);
    assert!(text.contains("reused"), "{text}");
}

#[test]
fn index_hash_differs_from_the_manifest() {
    // The server holds an index that is not the one the signed manifest names.
    if !require_root() {
        return;
    }
    let (mut rig, url, size, ix_url) = rig_with_update();
    let path = rig.ch.repo().join(ix_url.trim_start_matches('/'));
    let mut bytes = fs::read(path).unwrap();
    bytes[HEADER_LEN + 20] ^= 1;
    rig.server.put_bytes(&ix_url, bytes, Fault::Normal);
    falls_back(&mut rig, &url, size);
}

#[test]
fn served_chunk_not_matching_its_hash() {
    // The superblock chunk (it differs between builds, so it is fetched) comes back with a
    // flipped byte, only in answers to chunk ranges.
    if !require_root() {
        return;
    }
    let (mut rig, url, size, _) = rig_with_update();
    rig.server.set_fault(&url, Fault::CorruptInRange(100));
    falls_back(&mut rig, &url, size);
}

#[test]
fn server_ignoring_range() {
    // A server without Range support answers the chunk range with the whole image (200).
    if !require_root() {
        return;
    }
    let (mut rig, url, size, _) = rig_with_update();
    rig.server.set_fault(&url, Fault::IgnoreRange);
    falls_back(&mut rig, &url, size);
}

/// Replace hello 1.1.0's index by `edit` of it, named (size, SHA-256) in a newly signed manifest.
fn signed_bad_index(rig: &mut Rig, ix_url: &str, edit: fn(&mut Vec<u8>, &ChunkIndex)) {
    let path = rig.ch.repo().join(ix_url.trim_start_matches('/'));
    let mut bytes = fs::read(&path).unwrap();
    let (_, image_size) = rig.image_url("hello", "1.1.0");
    let ix = ChunkIndex::from_bytes(&bytes, image_size).unwrap();
    edit(&mut bytes, &ix);
    fs::write(&path, &bytes).unwrap();
    for b in &mut rig.ch.release_mut(OS_VERSION).extensions {
        if let Some(r) = b
            .image
            .chunk_index
            .as_mut()
            .filter(|r| path.ends_with(r.path.as_str()))
        {
            r.size = bytes.len() as u64;
            r.sha256 = Sha256(chunks::sha256(&bytes));
        }
    }
    rig.publish();
}

fn patch(b: &mut [u8], i: usize, offset: u64, length: u32) {
    let at = HEADER_LEN + i * RECORD_LEN;
    b[at..at + 8].copy_from_slice(&offset.to_le_bytes());
    b[at + 8..at + 12].copy_from_slice(&length.to_le_bytes());
}

#[test]
fn signed_index_with_bad_chunks() {
    // The signed manifest names an index whose chunks claim more bytes than the image, then
    // one whose chunks overlap, then one out of order: each falls back and completes.
    if !require_root() {
        return;
    }
    let edits: [fn(&mut Vec<u8>, &ChunkIndex); 3] = [
        |b, ix| {
            let last = ix.chunks.len() - 1;
            let c = ix.chunks[last];
            patch(b, last, c.offset, c.length + 4096);
            b[20..28].copy_from_slice(&(ix.size + 4096).to_le_bytes());
        },
        |b, ix| {
            let c = ix.chunks[1];
            patch(b, 1, c.offset - 10, c.length + 10);
        },
        |b, _| {
            let (a, z) = (HEADER_LEN, HEADER_LEN + RECORD_LEN);
            let first = b[a..z].to_vec();
            b.copy_within(z..z + RECORD_LEN, a);
            b[z..z + RECORD_LEN].copy_from_slice(&first);
        },
    ];
    for edit in edits {
        let (mut rig, url, size, ix_url) = rig_with_update();
        signed_bad_index(&mut rig, &ix_url, edit);
        falls_back(&mut rig, &url, size);
    }
}
