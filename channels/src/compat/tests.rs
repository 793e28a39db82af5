//! Tests of `compat`.

use super::*;

/// A host built the way systemd-sysext 252 sees it: os-release fields, uname arch, scope "system".
fn host(id: &str, version: Option<&str>, level: Option<&str>) -> HostIdentity {
    HostIdentity {
        id: id.to_string(),
        version_id: version.map(str::to_string),
        sysext_level: level.map(str::to_string),
        architecture: "x86-64".to_string(),
        scope: Some("system".to_string()),
        id_like: Vec::new(),
        systemd: None,
    }
}

fn rel(text: &str) -> OsRelease {
    OsRelease::parse(text).unwrap()
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn rules_match_systemd_252() {
    let flatcar = host("flatcar", Some("13"), None);
    let leveled = host("flatcar", Some("13"), Some("1.0"));
    let rolling = host("arch", None, None);
    let level_only = host("flatcar", None, Some("1"));
    let img = || s("docker");
    // (why, host, extension-release text, expected verdict)
    let rows: Vec<(&str, &HostIdentity, &str, Result<(), Incompatible>)> = vec![
        // 252 source: "A sysext with no host OS dependency ... can match '_any' host OS,
        // and VERSION_ID or SYSEXT_LEVEL are not required anywhere".
        ("_any ID needs no version", &flatcar, "ID=_any\n", Ok(())),
        (
            "_any ID ignores a wrong VERSION_ID",
            &flatcar,
            "ID=_any\nVERSION_ID=1\n",
            Ok(()),
        ),
        // systemd-sysext(8): ID must match; then SYSEXT_LEVEL if present, else VERSION_ID.
        (
            "same ID and VERSION_ID",
            &flatcar,
            "ID=flatcar\nVERSION_ID=13\n",
            Ok(()),
        ),
        (
            "VERSION_ID differs",
            &flatcar,
            "ID=flatcar\nVERSION_ID=12\n",
            Err(Incompatible::VersionId {
                image: img(),
                extension: s("12"),
                host: s("13"),
            }),
        ),
        (
            "ID differs",
            &flatcar,
            "ID=fedora\nVERSION_ID=13\n",
            Err(Incompatible::Id {
                image: img(),
                extension: s("fedora"),
                host: s("flatcar"),
            }),
        ),
        // 252 source: "If the extension has a sysext API level declared, then it must match
        // the host API level. Otherwise, compare OS version as a whole".
        (
            "SYSEXT_LEVEL on both sides wins over VERSION_ID",
            &leveled,
            "ID=flatcar\nSYSEXT_LEVEL=1.0\nVERSION_ID=7\n",
            Ok(()),
        ),
        (
            "SYSEXT_LEVEL on both sides differs",
            &leveled,
            "ID=flatcar\nSYSEXT_LEVEL=2\nVERSION_ID=13\n",
            Err(Incompatible::SysextLevel {
                image: img(),
                extension: s("2"),
                host: s("1.0"),
            }),
        ),
        (
            "SYSEXT_LEVEL only on the extension: VERSION_ID decides",
            &flatcar,
            "ID=flatcar\nSYSEXT_LEVEL=1.0\nVERSION_ID=12\n",
            Err(Incompatible::VersionId {
                image: img(),
                extension: s("12"),
                host: s("13"),
            }),
        ),
        (
            "SYSEXT_LEVEL only on the host: VERSION_ID decides",
            &leveled,
            "ID=flatcar\nVERSION_ID=13\n",
            Ok(()),
        ),
        (
            "SYSEXT_LEVEL only on the host, VERSION_ID missing",
            &leveled,
            "ID=flatcar\n",
            Err(Incompatible::MissingVersionId {
                image: img(),
                host: s("13"),
            }),
        ),
        // 252 source: host with SYSEXT_LEVEL but no VERSION_ID and no level on the
        // extension falls through every branch and matches.
        (
            "host level only, extension unversioned",
            &level_only,
            "ID=flatcar\n",
            Ok(()),
        ),
        // 252 source: "Rolling releases do not typically set VERSION_ID (eg: ArchLinux)".
        (
            "rolling host, any version",
            &rolling,
            "ID=arch\nVERSION_ID=whatever\n",
            Ok(()),
        ),
        ("rolling host, no version", &rolling, "ID=arch\n", Ok(())),
        // 252 source: ARCHITECTURE "present and not '_any' must match the host".
        (
            "arch absent",
            &flatcar,
            "ID=flatcar\nVERSION_ID=13\n",
            Ok(()),
        ),
        (
            "arch _any",
            &flatcar,
            "ID=flatcar\nVERSION_ID=13\nARCHITECTURE=_any\n",
            Ok(()),
        ),
        (
            "arch empty counts as absent",
            &flatcar,
            "ID=flatcar\nVERSION_ID=13\nARCHITECTURE=\n",
            Ok(()),
        ),
        (
            "arch equal",
            &flatcar,
            "ID=flatcar\nVERSION_ID=13\nARCHITECTURE=x86-64\n",
            Ok(()),
        ),
        (
            "arch mismatch, checked before ID",
            &flatcar,
            "ID=_any\nARCHITECTURE=arm64\n",
            Err(Incompatible::Architecture {
                image: img(),
                extension: s("arm64"),
                host: s("x86-64"),
            }),
        ),
        // systemd-sysext(8): SYSEXT_SCOPE defaults to "system portable".
        (
            "scope absent means system portable",
            &flatcar,
            "ID=_any\n",
            Ok(()),
        ),
        (
            "scope lists system",
            &flatcar,
            "ID=_any\nSYSEXT_SCOPE=\"portable  system\"\n",
            Ok(()),
        ),
        (
            "scope portable-only refused for system",
            &flatcar,
            "ID=_any\nSYSEXT_SCOPE=portable\n",
            Err(Incompatible::Scope {
                image: img(),
                extension: vec![s("portable")],
                host: s("system"),
            }),
        ),
        (
            "scope present but empty lists nothing",
            &flatcar,
            "ID=_any\nSYSEXT_SCOPE=\n",
            Err(Incompatible::Scope {
                image: img(),
                extension: vec![],
                host: s("system"),
            }),
        ),
        // 252 source: "does not contain ID in extension-release but requested to match".
        (
            "missing ID",
            &flatcar,
            "VERSION_ID=13\n",
            Err(Incompatible::MissingId {
                image: img(),
                host: s("flatcar"),
            }),
        ),
        (
            "empty ID is missing",
            &flatcar,
            "ID=\n",
            Err(Incompatible::MissingId {
                image: img(),
                host: s("flatcar"),
            }),
        ),
        // 252 source: "carries no extension-release data, ignoring extension".
        (
            "empty release",
            &flatcar,
            "# nothing\n",
            Err(Incompatible::EmptyRelease { image: img() }),
        ),
    ];
    for (why, host, text, want) in rows {
        assert_eq!(
            check("docker.raw", "docker", &rel(text), host),
            want,
            "{why}"
        );
    }
}

#[test]
fn release_file_must_be_named_after_the_image() {
    // systemd-sysext(8): the file must be extension-release.IMAGE, IMAGE without ".raw".
    let h = host("flatcar", Some("13"), None);
    let ok = rel("ID=flatcar\nVERSION_ID=13\n");
    assert_eq!(check("docker.raw", "docker", &ok, &h), Ok(()));
    assert_eq!(
        check("docker", "docker", &ok, &h),
        Ok(()),
        "a directory image keeps its name"
    );
    let want = Incompatible::ReleaseFileName {
        image: s("docker"),
        found: s("podman"),
    };
    assert_eq!(check("docker.raw", "podman", &ok, &h), Err(want.clone()));
    assert!(want
        .to_string()
        .contains("image 'docker' carries extension-release.podman"));
    let raw = Incompatible::ReleaseFileName {
        image: s("docker"),
        found: s("docker.raw"),
    };
    assert_eq!(check("docker.raw", "docker.raw", &ok, &h), Err(raw));
}

#[test]
fn no_host_scope_skips_the_scope_rule() {
    // 252 source: the scope is only checked "if (host_sysext_scope)".
    let mut h = host("flatcar", None, None);
    h.scope = None;
    assert_eq!(
        check(
            "x.raw",
            "x",
            &rel("ID=flatcar\nSYSEXT_SCOPE=portable\n"),
            &h
        ),
        Ok(())
    );
}

#[test]
fn messages_name_both_values() {
    let h = host("flatcar", Some("13"), None);
    let err = check(
        "docker.raw",
        "docker",
        &rel("ID=flatcar\nVERSION_ID=12\n"),
        &h,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "extension 'docker' is built for VERSION_ID 12, the host has 13"
    );
    let err = check(
        "docker.raw",
        "docker",
        &rel("ID=_any\nARCHITECTURE=arm64\n"),
        &h,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "extension 'docker' is built for architecture arm64, the host is x86-64"
    );
}

/// The one step where 252 and 257 differ: 257 merges an extension whose ID is one of the
/// host's ID_LIKE words; 252, an unknown systemd and the versions between them do not.
#[test]
fn id_like_matches_only_under_257_rules() {
    let ext = rel("ID=debian\nVERSION_ID=12\n");
    let mut h = host("mydistro", Some("12"), None);
    h.id_like = vec!["ubuntu".into(), "debian".into()];
    for (systemd, merges) in [
        (None, false),
        (Some(252), false),
        (Some(256), false),
        (Some(257), true),
        (Some(258), true),
    ] {
        h.systemd = systemd;
        let got = check("x.raw", "x", &ext, &h);
        assert_eq!(got.is_ok(), merges, "systemd {systemd:?}: {got:?}");
        if !merges {
            assert!(matches!(got, Err(Incompatible::Id { .. })), "{got:?}");
        }
    }
    // Under 257's rules the version rules still apply after an ID_LIKE match.
    h.systemd = Some(257);
    let other = rel("ID=debian\nVERSION_ID=13\n");
    assert!(matches!(
        check("x.raw", "x", &other, &h),
        Err(Incompatible::VersionId { .. })
    ));
    // And a host without ID_LIKE is matched by its ID alone, whatever its systemd.
    h.id_like.clear();
    assert!(check("x.raw", "x", &ext, &h).is_err());
    assert_eq!(Rules::of(Some(257)), Rules::Systemd257);
    assert_eq!(Rules::of(None), Rules::Systemd252);
}
