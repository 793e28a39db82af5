//! Refusals of images and manifests: each leaves links, the active generation and the merged set as they were.

use std::fs;

use super::rig::*;
use upd_tests::faultserver::Fault;
use upd_tests::images::SysextSpec;
use upd_tests::sandbox::require_root;

#[test]
fn refusals_leave_links_state_and_merged_set_as_they_were() {
    // A machine on hello 1.0.0 + world 1.0.0; the channel then offers hello builds that are corrupt on the
    // wire, longer than declared, built for another host, mislabelled inside, or a tampered / replayed manifest.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let v1 = fs::read(rig.ch.repo().join(rig.ch.manifest_rel())).unwrap();
    let before = rig.snapshot();
    assert_eq!(before.merged.len(), 2);

    // Bytes on the wire differ from the signed hash; then more bytes than the manifest declares.
    let mut big = ext("hello", "1.1.0");
    big.pad_bytes = 256 * 1024;
    rig.ch.add_extension(OS_VERSION, &big);
    rig.publish();
    let (url, size) = rig.image_url("hello", "1.1.0");
    rig.server.set_fault(&url, Fault::CorruptByte(size / 2));
    refused(&rig, &before, 7, "SHA-256 mismatch");
    rig.server.set_fault(
        &url,
        Fault::Extra {
            extra: 4096,
            declare: true,
        },
    );
    refused(&rig, &before, 7, "more than");
    rig.ch.remove_extension(OS_VERSION, "hello", "1.1.0");

    // Built for another VERSION_ID and declared so: the planner passes it over for hello 1.0.0; when it is
    // the only hello build, hello is kept as it is with a warning naming VERSION_ID.
    let listed = rig.ch.release_mut(OS_VERSION).extensions.clone();
    rig.ch.add_extension(
        OS_VERSION,
        &SysextSpec::new("hello", "1.2.0", OS_ID, "2.0.0"),
    );
    rig.publish();
    refused(&rig, &before, 0, "up to date");
    rig.ch.remove_extension(OS_VERSION, "hello", "1.0.0");
    rig.publish();
    let out = rig.upd_ok(&["pull"], 0);
    assert!(
        out.contains("kept as is") && out.contains("VERSION_ID 2.0.0"),
        "{out}"
    );
    assert_eq!(rig.snapshot(), before, "{out}");
    rig.ch.release_mut(OS_VERSION).extensions = listed;

    // Built for another VERSION_ID while the manifest claims the host's: the image itself is refused.
    let b = rig.ch.add_extension(
        OS_VERSION,
        &SysextSpec::new("hello", "1.3.0", OS_ID, "2.0.0"),
    );
    rig.ch
        .release_mut(OS_VERSION)
        .extensions
        .last_mut()
        .unwrap()
        .release
        .version_id = Some(OS_VERSION.into());
    rig.publish();
    refused(&rig, &before, 5, "VERSION_ID");
    let store = rig.m.root().join("var/lib/upd/images/hello");
    let kept: Vec<_> = fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        !kept
            .iter()
            .any(|n| n.to_string_lossy().starts_with("hello-1.3.0")),
        "refused image {} left in the store: {kept:?}",
        b.image.path
    );
    rig.ch.remove_extension(OS_VERSION, "hello", "1.3.0");

    // The release file inside is named for another image.
    let mut misnamed = ext("hello", "1.4.0");
    misnamed.release_file_name = Some("other".into());
    rig.ch.add_extension(OS_VERSION, &misnamed);
    let latest = rig.publish();
    refused(&rig, &before, 5, "refused image");

    // One byte of the signed payload changed; then the first manifest replayed (lower serial).
    rig.ch.write_manifest_bytes(&tamper(&latest));
    rig.sync();
    refused(&rig, &before, 4, "refused the manifest");
    rig.ch.write_manifest_bytes(&v1);
    rig.sync();
    refused(&rig, &before, 4, "serial");
}

#[test]
fn frozen_and_mixed_channels_are_refused_and_root_rotation_is_followed() {
    // A machine on hello+world 1.0.0; the channel offers hello 1.1.0 in an expired manifest, then in one
    // signed for channel 'beta' served as 'stable', then after a root rotation signed by the new key only.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = rig.snapshot();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    let now = chrono::Utc::now();
    rig.ch.publish_at(
        now - chrono::Duration::days(10),
        now - chrono::Duration::days(1),
    );
    rig.sync();
    refused(&rig, &before, 4, "expired");

    rig.ch.manifest.channel = upd_channels::name::Name::new("beta").unwrap();
    let beta = rig.ch.publish();
    rig.ch.manifest.channel = upd_channels::name::Name::new("stable").unwrap();
    rig.ch.write_manifest_bytes(&beta);
    rig.sync();
    refused(&rig, &before, 4, "this machine follows 'stable'");

    rig.ch.rotate_root();
    rig.publish();
    rig.upd_ok(&["pull"], 0);
    assert_eq!(rig.m.run_program("hello").trim(), "hello 1.1.0");
    assert!(rig.m.root().join("var/lib/upd/roots/2.root.json").exists());
}

#[test]
fn signed_manifest_with_a_climbing_path_is_refused() {
    // The channel key signs a manifest whose hello 1.1.0 image path climbs out of the repository.
    if !require_root() {
        return;
    }
    let mut rig = rig_at_v1();
    let before = rig.snapshot();
    rig.ch.add_extension(OS_VERSION, &ext("hello", "1.1.0"));
    rig.ch.manifest.serial += 1;
    let mut doc: serde_json::Value = serde_json::from_slice(&rig.ch.manifest.to_bytes()).unwrap();
    let builds = doc["releases"][0]["extensions"].as_array_mut().unwrap();
    let last = builds.last_mut().unwrap();
    last["image"]["path"] = "images/../../etc/passwd".into();
    let envelope = rig
        .ch
        .sign_payload(&serde_json::to_vec_pretty(&doc).unwrap());
    rig.ch.write_manifest_bytes(&envelope);
    rig.sync();
    refused(&rig, &before, 4, "refused the manifest");
}
