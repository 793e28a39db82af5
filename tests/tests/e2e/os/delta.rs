//! OS images as delta downloads by the real upd on a real GPT disk: the chunks of the booted
//! slot are reused, only the rest crosses the wire (several ranges a request where the server
//! answers them), and the staged slot boots.

use std::fs;
use std::os::unix::fs::FileExt;

use upd_channels::manifest::Target;
use upd_tests::channel::Channel;
use upd_tests::disk::{USR_A, USR_B};
use upd_tests::faultserver::{Fault, FaultServer};
use upd_tests::images::OsSpec;
use upd_tests::sandbox::require_root;

use super::rig::{ext, os, serve, set_b, OsRig, V1, V2};

const MIB: u64 = 1 << 20;
const WARNING: &str = "delta download not possible";

/// The OS `version` with 6 MiB of filler every version shares (the rest of a minor update).
fn padded(version: &str) -> OsSpec {
    let mut o = os(version);
    o.pad_bytes = 6 * MIB;
    o.filler_seed = Some(3);
    o
}

/// A channel publishing chunk indexes, release 1.0.0 (padded OS, hello and world) installed and
/// booted from USR-A; release 2.0.0 (the same filler, another os-release) published.
/// Returns the rig, the URL path of the 2.0.0 OS image and its target.
fn rig_with_v2() -> (OsRig, String, Target) {
    let (rt, server) = FaultServer::start_with_runtime();
    let mut ch = Channel::new("stable");
    ch.chunk_indexes = true;
    ch.add_os_release(V1, &padded(V1));
    ch.add_extension(V1, &ext("hello", "1.0.0", V1));
    ch.add_extension(V1, &ext("world", "1.0.0", V1));
    ch.publish();
    serve(&ch, &server);
    let mut rig = OsRig::on(rt, server, ch, &[]);
    rig.ch.add_os_release(V2, &padded(V2));
    rig.ch.add_extension(V2, &ext("hello", "2.0.0", V2));
    rig.ch.add_extension(V2, &ext("world", "2.0.0", V2));
    rig.publish();
    let image = rig
        .ch
        .manifest
        .releases
        .iter()
        .find(|r| r.version.to_string() == V2)
        .unwrap()
        .os
        .image
        .clone();
    assert!(image.chunk_index.is_some(), "published with an index");
    (rig, format!("/{}", image.path), image)
}

/// `upd pull` stages 2.0.0 on USR-B, byte for byte the published image; the reboot runs 2.0.0
/// with set B, and mark-good keeps it. Returns pull's output.
fn stages_and_boots(rig: &mut OsRig, image: &Target) -> String {
    let text = rig.upd_ok(&["pull"], 0);
    assert!(text.contains("OS 2.0.0 staged on USR-B"), "{text}");
    let want = fs::read(rig.ch.file(image)).unwrap();
    assert!(
        rig.disk.read_slot(USR_B, image.size) == want,
        "USR-B holds the image byte for byte"
    );
    assert_eq!(rig.reboot(), USR_B);
    assert_eq!(rig.running_os(), V2);
    assert_eq!(rig.versions(), set_b());
    rig.upd_ok(&["mark-good"], 0);
    assert_eq!(rig.state()["active"]["os_version"], V2);
    rig.disk.verify();
    text
}

#[test]
fn minor_os_update_moves_few_bytes() {
    // 1.0.0 booted from USR-A, 2.0.0 differs in its os-release and the squashfs tables: the
    // chunks of USR-A are reused, the server's byte counter shows under a quarter of the image
    // served (all by range), no warning, and the staged slot boots.
    if !require_root() {
        return;
    }
    let (mut rig, url, image) = rig_with_v2();
    let text = stages_and_boots(&mut rig, &image);
    assert!(!text.contains(WARNING), "{text}");
    // The channel still lists 1.0.0 with its index: the plan came from it, USR-A unread.
    assert!(text.contains("from_index=1"), "{text}");
    assert!(!text.contains("differs from its index"), "{text}");
    let st = rig.server.stats(&url);
    assert!(
        st.body_bytes * 4 < image.size,
        "{} of {} bytes served: {:?}",
        st.body_bytes,
        image.size,
        st.ranges
    );
    assert!(st.ranges.iter().all(Option::is_some), "{:?}", st.ranges);
}

#[test]
fn corrupted_booted_region_is_fetched_again() {
    // 64 KiB of USR-A's filler are overwritten on the disk before the pull: the chunks there no
    // longer match their hashes, so they are fetched like changed ones; USR-B is still exactly
    // the image, and the rest still comes from USR-A.
    if !require_root() {
        return;
    }
    let (mut rig, url, image) = rig_with_v2();
    let a = rig.disk.slot(USR_A);
    let disk = fs::OpenOptions::new()
        .write(true)
        .open(rig.disk.device())
        .unwrap();
    disk.write_all_at(&vec![0x5a; 64 << 10], a.offset + 3 * MIB)
        .unwrap();
    disk.sync_all().unwrap();
    let text = stages_and_boots(&mut rig, &image);
    assert!(!text.contains(WARNING), "{text}");
    // Planned from 1.0.0's signed index, the copy found the region differing and chunked USR-A.
    assert!(text.contains("from_index=1"), "{text}");
    assert!(text.contains("differs from its index"), "{text}");
    let st = rig.server.stats(&url);
    // Each served range, as image byte positions.
    let served = st.spans();
    for at in (3 * MIB..3 * MIB + (64 << 10)).step_by(4096) {
        assert!(
            served.iter().any(|&(a, b)| a <= at && at <= b),
            "byte {at} of the corrupted region was fetched: {served:?}"
        );
    }
    assert!(st.body_bytes * 2 < image.size, "{st:?}");
}

/// Overwrite 64 KiB of USR-A at 1, 3 and 5 MiB into the slot: three regions to fetch again,
/// apart; returns their image offsets.
fn corrupt_three_regions(rig: &OsRig) -> Vec<u64> {
    let a = rig.disk.slot(USR_A);
    let disk = fs::OpenOptions::new()
        .write(true)
        .open(rig.disk.device())
        .unwrap();
    let at = vec![MIB, 3 * MIB, 5 * MIB];
    for o in &at {
        disk.write_all_at(&vec![0x5a; 64 << 10], a.offset + o)
            .unwrap();
    }
    disk.sync_all().unwrap();
    at
}

#[test]
fn booted_slot_reused_through_multi_range() {
    // Three regions of USR-A no longer match: with the changed tables they make several runs
    // to fetch, asked in fewer requests than ranges (multipart/byteranges answers); no warning,
    // most of the image reused, the staged slot boots.
    if !require_root() {
        return;
    }
    let (mut rig, url, image) = rig_with_v2();
    let at = corrupt_three_regions(&rig);
    let text = stages_and_boots(&mut rig, &image);
    assert!(!text.contains(WARNING), "{text}");
    let st = rig.server.stats(&url);
    let spans = st.spans();
    assert!(spans.len() >= 3, "{:?}", st.ranges);
    assert!(
        st.requests < spans.len() as u64,
        "{} requests for {} ranges: {:?}",
        st.requests,
        spans.len(),
        st.ranges
    );
    for o in at {
        assert!(
            spans.iter().any(|&(a, b)| a <= o && o < b),
            "{o}: {spans:?}"
        );
    }
    assert!(st.body_bytes * 2 < image.size, "{st:?}");
}

#[test]
fn server_answering_one_range_of_several() {
    // The same, from a server that answers a multi-range request with its first range only:
    // upd takes it, asks the rest one range a request, no warning, and the slot boots.
    if !require_root() {
        return;
    }
    let (mut rig, url, image) = rig_with_v2();
    rig.server.set_fault(&url, Fault::FirstRangeOnly);
    corrupt_three_regions(&rig);
    let text = stages_and_boots(&mut rig, &image);
    assert!(!text.contains(WARNING), "{text}");
    let st = rig.server.stats(&url);
    assert!(st.closed_ranges_only(), "{:?}", st.ranges);
    assert!(st.multi_then_single(), "{:?}", st.ranges);
    assert!(st.requests >= 3, "{:?}", st.ranges);
    assert!(st.body_bytes * 2 < image.size, "{st:?}");
}

#[test]
fn bad_os_index_falls_back_with_one_warning() {
    // The server holds an OS index that is not the one the signed manifest names: one warning,
    // the image streamed whole into USR-B, and the machine goes on as with a full download.
    if !require_root() {
        return;
    }
    let (mut rig, url, image) = rig_with_v2();
    let ix = image.chunk_index.clone().unwrap();
    let mut bytes = fs::read(ix.path.under(rig.ch.repo())).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    rig.server
        .put_bytes(&format!("/{}", ix.path), bytes, Fault::Normal);
    let text = stages_and_boots(&mut rig, &image);
    assert_eq!(text.matches(WARNING).count(), 1, "{text}");
    let st = rig.server.stats(&url);
    assert_eq!(st.ranges, vec![None], "one whole GET");
    assert_eq!(st.body_bytes, image.size);
}
