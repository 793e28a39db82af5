//! The one merge rule where systemd 252 and 257 differ, proved on each: an extension whose `ID`
//! is one of the host's `ID_LIKE` words. 257 merges it, and upd (reading the systemd version
//! from the root it runs on) switches to it; 252 does not, and upd passes it over.

use std::fs;

use upd_tests::images::SysextSpec;
use upd_tests::rootfs::Suite;

use super::rig::{on_both, os_version, text_of, Rig};

fn id_like_follows_the_systemd_that_merges(suite: Suite) {
    let Some(mut rig) = Rig::boot(suite, &format!("idlike-{}", suite.systemd)) else {
        return;
    };
    // A Debian derivative: its os-release says it is like "updlike".
    let os_release = rig.root().join("usr/lib/os-release");
    let mut text = fs::read_to_string(&os_release).expect("os-release");
    text.push_str("ID_LIKE=updlike\n");
    fs::write(&os_release, text).expect("write os-release");
    let spec = SysextSpec::new("hello", "1.0.0", "updlike", suite.version_id);
    let build = rig.ch.add_extension(&os_version(suite), &spec);
    rig.publish();

    let out = rig.start_upd();
    let log = rig.journal("upd.service");
    assert!(out.status.success(), "{}\n{log}", text_of(&out));
    if suite.systemd >= 257 {
        assert!(rig.links().contains_key("hello.raw"), "{log}");
        assert_eq!(rig.merged(), ["hello"], "{log}");
        assert_eq!(rig.program("hello"), "hello 1.0.0\n");
    } else {
        assert!(!rig.links().contains_key("hello.raw"), "{log}");
        assert!(rig.merged().is_empty(), "{log}");
        // The real 252 agrees: the same image linked by hand is not merged.
        let image = rig.ch.repo().join(build.image.path.as_str());
        let dir = rig.root().join("var/lib/extensions");
        fs::create_dir_all(&dir).expect("var/lib/extensions");
        fs::copy(&image, dir.join("hello.raw")).expect("copy the image in");
        let refresh = rig.c.exec(&["systemd-sysext", "refresh"]);
        assert!(
            rig.merged().is_empty(),
            "252 merged it: {}",
            text_of(&refresh)
        );
        fs::remove_file(rig.root().join("var/lib/extensions/hello.raw")).unwrap();
    }
    rig.finish();
}
on_both!(id_like_follows_the_systemd_that_merges);
