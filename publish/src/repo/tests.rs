use chrono::{TimeZone, Utc};
use semver::Version;
use upd_channels::manifest::{
    ExtBuild, ExtIdentity, Manifest, OsBuild, OsIdentity, Release, Target,
};
use upd_channels::version::OsVersion;
use upd_durable::TMP_PREFIX;

use super::*;

fn target(path: &str, byte: u8) -> Target {
    Target {
        path: RelPath::new(path).unwrap(),
        size: 4096,
        sha256: Sha256([byte; 32]),
        chunk_index: None,
    }
}

pub(super) fn release(version: &str, os_byte: u8, exts: &[(&str, &str)]) -> Release {
    let v = OsVersion::parse(version).unwrap();
    let os = OsBuild {
        identity: OsIdentity {
            id: "testos".into(),
            version_id: Some(version.into()),
            sysext_level: None,
            architecture: "x86-64".into(),
            id_like: Vec::new(),
            systemd: None,
        },
        image: target(&format!("images/os/testos-{v}.raw"), os_byte),
    };
    let extensions = exts
        .iter()
        .map(|(name, ev)| {
            ExtBuild::new(
                Name::new(name).unwrap(),
                Version::parse(ev).unwrap(),
                target(&format!("images/ext/{name}/{name}-{ev}-{v}.raw"), 9),
                ExtIdentity {
                    id: "testos".into(),
                    version_id: Some(version.into()),
                    sysext_level: None,
                    architecture: None,
                    scope: None,
                },
            )
        })
        .collect();
    Release::new(v, os, extensions)
}

pub(super) fn draft() -> Manifest {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    Manifest::new(Name::new("stable").unwrap(), now)
}

#[test]
fn releases_are_inserted_in_version_order() {
    // Releases added out of order end up ascending, as the schema requires.
    let mut m = draft();
    for v in ["2.0.0", "1.0.0", "1.5.0"] {
        assert_eq!(
            add_release(&mut m, release(v, 1, &[])).unwrap(),
            Added::Release
        );
    }
    let versions: Vec<String> = m.releases.iter().map(|r| r.version.to_string()).collect();
    assert_eq!(versions, ["1.0.0", "1.5.0", "2.0.0"]);
    m.validate().unwrap();
}

#[test]
fn same_os_image_appends_extension_builds() {
    // A new build of an extension for an already published OS release.
    let mut m = draft();
    add_release(&mut m, release("1.0.0", 1, &[("hello", "1.0.0")])).unwrap();
    let added = add_release(&mut m, release("1.0.0", 1, &[("hello", "1.0.1")])).unwrap();
    assert_eq!(added, Added::Extensions(1));
    assert_eq!(m.releases.len(), 1);
    assert_eq!(m.releases[0].extensions.len(), 2);
}

#[test]
fn different_os_image_or_duplicate_build_is_refused() {
    // The same version with another OS image, then the same extension build twice.
    let mut m = draft();
    add_release(&mut m, release("1.0.0", 1, &[("hello", "1.0.0")])).unwrap();
    let before = m.clone();
    let err = add_release(&mut m, release("1.0.0", 2, &[])).unwrap_err();
    assert!(matches!(err, RepoError::OsImageDiffers { .. }), "{err}");
    assert!(err.to_string().contains("never changes"), "{err}");
    let err = add_release(&mut m, release("1.0.0", 1, &[("hello", "1.0.0")])).unwrap_err();
    assert!(matches!(err, RepoError::DuplicateExt { .. }), "{err}");
    assert_eq!(m, before);
}

#[test]
fn drafts_round_trip_and_a_missing_one_names_init() {
    // A fresh repository directory: no draft, then one saved atomically and loaded back.
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    let err = repo.load_draft(&Name::new("stable").unwrap()).unwrap_err();
    assert!(err.to_string().contains("upd-channel init"), "{err}");
    let mut m = draft();
    add_release(&mut m, release("1.0.0", 1, &[])).unwrap();
    let path = repo.save_draft(&m).unwrap();
    assert_eq!(path, dir.path().join("channels/stable/draft.json"));
    assert_eq!(repo.load_draft(&m.channel).unwrap(), m);
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(TMP_PREFIX))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn import_keeps_identical_and_refuses_different_content() {
    // The same image imported twice is fine; other bytes under the same path are refused.
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path().join("repo"));
    let src = dir.path().join("img");
    std::fs::write(&src, b"image one").unwrap();
    let rel = RelPath::new("images/os/testos-1.0.0.raw").unwrap();
    let t = repo.import_image(&src, &rel).unwrap();
    assert_eq!(t.size, 9);
    assert_eq!(t, repo.import_image(&src, &rel).unwrap());
    std::fs::write(&src, b"image two").unwrap();
    let err = repo.import_image(&src, &rel).unwrap_err();
    assert!(matches!(err, RepoError::ImageExists { .. }), "{err}");
    assert_eq!(std::fs::read(rel.under(repo.root())).unwrap(), b"image one");
}

#[test]
fn image_paths_follow_the_layout_and_refuse_unsafe_ids() {
    // The layout the updater relies on; an os-release ID with a slash cannot make a path.
    let v = OsVersion::parse("1.2.3").unwrap();
    let name = Name::new("hello").unwrap();
    assert_eq!(
        os_image_path("testos", &v).unwrap().as_str(),
        "images/os/testos-1.2.3.raw"
    );
    assert_eq!(
        ext_image_path(&name, &Version::new(2, 0, 0), &v)
            .unwrap()
            .as_str(),
        "images/ext/hello/hello-2.0.0-1.2.3.raw"
    );
    assert!(os_image_path("../x", &v).is_err());
}
