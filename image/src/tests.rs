//! Tests that build real squashfs and erofs images with mksquashfs / mkfs.erofs and read them back.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::tree::with_tree_using;
use super::*;

/// True when root-only tests can run; otherwise prints a loud SKIP (and fails under CI=true).
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: must run as root under CI=true"
    );
    eprintln!("*** SKIP {test}: needs root (set CI=true to make this a failure) ***");
    false
}

/// Lays out a source tree: entries ending in "/" are directories, "->" makes a symlink.
fn tree(dir: &Path, entries: &[(&str, &str)]) -> PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    for (path, content) in entries {
        let full = src.join(path.trim_end_matches('/'));
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        if path.ends_with('/') {
            fs::create_dir_all(&full).unwrap();
        } else if let Some(target) = content.strip_prefix("-> ") {
            symlink(target, &full).unwrap();
        } else {
            fs::write(&full, content).unwrap();
        }
    }
    src
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn squashfs(dir: &Path, name: &str, entries: &[(&str, &str)]) -> PathBuf {
    let src = tree(&dir.join(format!("{name}.d")), entries);
    let out = dir.join(name);
    run(Command::new("mksquashfs").arg(&src).arg(&out).args([
        "-quiet",
        "-noappend",
        "-no-progress",
    ]));
    out
}

fn erofs(dir: &Path, name: &str, entries: &[(&str, &str)]) -> PathBuf {
    let src = tree(&dir.join(format!("{name}.d")), entries);
    let out = dir.join(name);
    run(Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(&out)
        .arg(&src));
    out
}

const DOCKER: &str = "ID=flatcar\nVERSION_ID=13\n";

/// The tree every format test builds: a release file, symlinks inside the image, a big file.
fn sample() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "usr/lib/extension-release.d/extension-release.docker",
            DOCKER,
        ),
        ("usr/lib/os-release", "ID=flatcar\n"),
        ("etc/os-release", "-> /usr/lib/os-release"), // absolute: relative to the image root
        ("lib", "-> usr/lib"),
        ("escape", "-> ../../../../usr/lib/os-release"), // cannot climb above the image root
        ("loop", "-> loop"),
        ("big", "0123456789abcdef"),
        ("empty/", ""),
    ]
}

/// Checks reading, absence, symlinks, limits and listing through one tree view.
fn exercise(image: &Path, mount: bool) {
    let got = with_tree_using(image, mount, |t| {
        let read = |p: &str| read_in(t, p, 16);
        assert_eq!(
            read("usr/lib/os-release")?.as_deref(),
            Some(&b"ID=flatcar\n"[..])
        );
        assert_eq!(
            read("etc/os-release")?.as_deref(),
            Some(&b"ID=flatcar\n"[..])
        );
        assert_eq!(
            read("lib/os-release")?.as_deref(),
            Some(&b"ID=flatcar\n"[..])
        );
        assert_eq!(read("escape")?.as_deref(), Some(&b"ID=flatcar\n"[..]));
        assert_eq!(read("big")?.as_deref(), Some(&b"0123456789abcdef"[..]));
        assert_eq!(read("usr/lib/nothere")?, None);
        assert_eq!(read("nothere/os-release")?, None);
        assert_eq!(read("big/below")?, None);
        assert!(matches!(
            read_in(t, "big", 9),
            Err(ImageError::TooLarge { max: 9, .. })
        ));
        assert!(matches!(
            read("empty"),
            Err(ImageError::NotRegularFile { .. })
        ));
        assert!(matches!(read("loop"), Err(ImageError::SymlinkLoop { .. })));
        let mut names = t.list(&["usr".into(), "lib".into()])?;
        names.sort();
        assert_eq!(names, ["extension-release.d", "os-release"]);
        Ok(())
    });
    got.unwrap_or_else(|e| panic!("{}: {e}", image.display()));
}

#[test]
fn squashfs_reads_files_symlinks_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let image = squashfs(dir.path(), "docker.raw", &sample());
    assert_eq!(ImageFormat::detect(&image).unwrap(), ImageFormat::Squashfs);
    exercise(&image, false);
}

#[test]
fn erofs_extracted_reads_files_symlinks_and_limits() {
    // The unprivileged path: fsck.erofs --extract into a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let image = erofs(dir.path(), "docker.raw", &sample());
    assert_eq!(ImageFormat::detect(&image).unwrap(), ImageFormat::Erofs);
    exercise(&image, false);
}

#[test]
fn erofs_mounted_reads_files_symlinks_and_limits() {
    // The root path: a read-only loop mount in a private mount namespace.
    if !root_or_skip("erofs_mounted_reads_files_symlinks_and_limits") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = erofs(dir.path(), "docker.raw", &sample());
    exercise(&image, true);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(".upd-image-"),
        "the mount leaked into our namespace"
    );
}

#[test]
fn extension_release_found_wrong_name_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rel = "usr/lib/extension-release.d/extension-release.";
    let podman = format!("{rel}podman");
    let other = format!("{rel}other");
    for (fmt, build) in [
        (
            "squashfs",
            squashfs as fn(&Path, &str, &[(&str, &str)]) -> PathBuf,
        ),
        ("erofs", erofs),
    ] {
        let good = build(d, &format!("good-{fmt}"), &sample());
        let (name, os) = read_extension_release(&good, "docker").unwrap();
        assert_eq!(
            (name.as_str(), os.version_id()),
            ("docker", Some("13")),
            "{fmt}"
        );

        // An image named docker.raw that was built as podman: report what it carries.
        let wrong = build(d, &format!("wrong-{fmt}"), &[(podman.as_str(), DOCKER)]);
        let (name, _) = read_extension_release(&wrong, "docker").unwrap();
        assert_eq!(name, "podman", "{fmt}");

        let none = build(d, &format!("none-{fmt}"), &[("usr/bin/x", "")]);
        let err = read_extension_release(&none, "docker").unwrap_err();
        assert!(
            matches!(&err, ImageError::NoExtensionRelease { found, .. } if found.is_empty()),
            "{err}"
        );
        assert!(
            err.to_string().contains(&none.display().to_string()),
            "{err}"
        );

        let two = build(
            d,
            &format!("two-{fmt}"),
            &[(podman.as_str(), DOCKER), (other.as_str(), DOCKER)],
        );
        let err = read_extension_release(&two, "docker")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("extension-release.other, extension-release.podman"),
            "{err}"
        );

        let bad = build(
            d,
            &format!("bad-{fmt}"),
            &[(&*format!("{rel}docker"), "ID=x\n9BAD=1\n")],
        );
        let err = read_extension_release(&bad, "docker")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("extension-release.docker"),
            "{err}"
        );
    }
}

#[test]
fn os_release_from_usr_partition_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A USR partition image: the filesystem root is /usr.
    let usr_root = squashfs(
        d,
        "usr-root",
        &[("lib/os-release", "ID=flatcar\nVERSION_ID=14\n")],
    );
    assert_eq!(read_os_release(&usr_root).unwrap().version_id(), Some("14"));
    // Built with usr/ at the top.
    let usr_top = erofs(
        d,
        "usr-top",
        &[("usr/lib/os-release", "ID=flatcar\nVERSION_ID=15\n")],
    );
    assert_eq!(read_os_release(&usr_top).unwrap().version_id(), Some("15"));
    // Both: lib/os-release is the one a USR root mounted at /usr shows as /usr/lib/os-release.
    let both = squashfs(
        d,
        "both",
        &[
            ("lib/os-release", "ID=a\n"),
            ("usr/lib/os-release", "ID=b\n"),
        ],
    );
    assert_eq!(read_os_release(&both).unwrap().id(), Some("a"));
    let neither = squashfs(d, "neither", &[("bin/sh", "")]);
    assert!(matches!(
        read_os_release(&neither),
        Err(ImageError::NoOsRelease { .. })
    ));
}

#[test]
fn garbage_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let garbage = d.join("garbage.raw");
    fs::write(&garbage, vec![0x5a; 4096]).unwrap();
    let err = read_file(&garbage, "usr/lib/os-release", 100).unwrap_err();
    assert!(matches!(err, ImageError::UnknownFormat { .. }), "{err}");
    assert!(err.to_string().contains("garbage.raw"), "{err}");

    fs::write(d.join("short.raw"), b"hs").unwrap();
    assert!(matches!(
        ImageFormat::detect(&d.join("short.raw")),
        Err(ImageError::UnknownFormat { .. })
    ));
    assert!(matches!(
        ImageFormat::detect(&d.join("absent.raw")),
        Err(ImageError::Io { .. })
    ));

    // Right magic, corrupt body: the tool's complaint is passed on with the image path.
    let fake_sq = d.join("fake.squashfs");
    fs::write(&fake_sq, [&b"hsqs"[..], &[0xff; 4092]].concat()).unwrap();
    let err = read_file(&fake_sq, "usr/lib/os-release", 100).unwrap_err();
    assert!(matches!(err, ImageError::Tool { .. }), "{err}");
    assert!(err.to_string().contains("fake.squashfs"), "{err}");

    let mut fake_erofs = vec![0u8; 8192];
    fake_erofs[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
    fs::write(d.join("fake.erofs"), &fake_erofs).unwrap();
    for mount in [false, true] {
        if mount && !nix::unistd::geteuid().is_root() {
            continue;
        }
        let err =
            with_tree_using(&d.join("fake.erofs"), mount, |t| read_in(t, "x", 10)).unwrap_err();
        assert!(matches!(err, ImageError::Tool { .. }), "{err}");
        assert!(err.to_string().contains("fake.erofs"), "{err}");
    }
}

#[test]
fn inner_paths_are_plain_relative_paths() {
    for bad in [
        "",
        "/etc/os-release",
        "../x",
        "a/./b",
        "a//b",
        "usr/lib/*",
        "a/[b]",
    ] {
        assert!(
            matches!(components(bad), Err(ImageError::InvalidInnerPath { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(
        components("usr/lib/os-release").unwrap(),
        ["usr", "lib", "os-release"]
    );
}

#[test]
fn systemd_version_from_the_shared_library_name() {
    assert_eq!(
        crate::systemd_of_library("libsystemd-shared-252.so"),
        Some(252)
    );
    assert_eq!(
        crate::systemd_of_library("libsystemd-shared-257.so"),
        Some(257)
    );
    assert_eq!(
        crate::systemd_of_library("libsystemd-shared-256.11-1.fc41.so"),
        Some(256)
    );
    assert_eq!(crate::systemd_of_library("libsystemd-shared-.so"), None);
    assert_eq!(crate::systemd_of_library("libsystemd-shared-25x.so"), None);
    assert_eq!(crate::systemd_of_library("libsystemd-core-257.so"), None);
}

#[test]
fn systemd_version_under_a_root_reads_debians_multiarch_path() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(crate::systemd_version_under(d.path()).unwrap(), None);
    let dir = d.path().join("usr/lib/x86_64-linux-gnu/systemd");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("libsystemd-shared-257.so"), b"").unwrap();
    assert_eq!(crate::systemd_version_under(d.path()).unwrap(), Some(257));
}
