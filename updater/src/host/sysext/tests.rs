//! Tests of `sysext`.

use super::*;

fn set(items: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    items
        .iter()
        .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
        .collect()
}

#[test]
fn root_slash_runs_without_root_option() {
    let args = Sysext::system("/").args("merge");
    assert_eq!(
        args,
        vec![OsString::from("--no-pager"), OsString::from("merge")]
    );
}

#[test]
fn other_root_is_passed_and_list_asks_for_json() {
    let args = Sysext::system("/tmp/m 1").args("list");
    let want: Vec<OsString> = ["--no-pager", "--root=/tmp/m 1", "--json=short", "list"]
        .map(Into::into)
        .into();
    assert_eq!(args, want);
}

#[test]
fn parses_list_json_of_252() {
    let out = br#"[{"name":"foo","type":"raw","path":"/r/etc/extensions/foo.raw","time":1795639995198211}]"#;
    let images = parse_list_json(out).unwrap();
    assert_eq!(
        images,
        vec![ListedImage {
            name: "foo".into(),
            kind: "raw".into(),
            path: "/r/etc/extensions/foo.raw".into()
        }]
    );
    assert!(parse_list_json(b"[]\n").unwrap().is_empty());
    assert!(parse_list_json(b"No extensions found.").is_err());
}

#[test]
fn compare_names_missing_extra_and_different() {
    let expected = set(&[("a", "ID=x\n"), ("b", "ID=x\n"), ("c", "ID=x\n")]);
    let actual = set(&[("a", "ID=x\n"), ("c", "ID=y\n"), ("d", "ID=x\n")]);
    match compare_merged(&actual, &expected) {
        Err(SysextError::Mismatch {
            missing,
            extra,
            different,
        }) => {
            assert_eq!(missing, vec!["b"]);
            assert_eq!(extra, vec!["d"]);
            assert_eq!(different, vec!["c"]);
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(compare_merged(&expected, &expected).is_ok());
}

#[test]
fn merged_set_reads_release_files_and_ignores_others() {
    let dir = tempfile::tempdir().unwrap();
    assert!(merged_set(dir.path()).unwrap().is_empty());
    let rel = dir.path().join(RELEASE_DIR);
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.foo"), "ID=debian\n").unwrap();
    fs::write(rel.join("README"), "not a release file").unwrap();
    assert_eq!(
        merged_set(dir.path()).unwrap(),
        set(&[("foo", "ID=debian\n")])
    );
    let err = verify_merged(dir.path(), &set(&[("bar", "ID=debian\n")])).unwrap_err();
    assert!(err.to_string().contains("missing [\"bar\"]"), "{err}");
}

#[test]
fn topmost_mount_decides_the_fstype() {
    let info = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                90 27 0:50 / /tmp/a\\040b/usr ro - ext4 /dev/vda rw\n\
                91 90 0:51 / /tmp/a\\040b/usr ro - overlay overlay ro,lowerdir=x\n";
    assert_eq!(
        mount_fstype(info, Path::new("/tmp/a b/usr")).as_deref(),
        Some("overlay")
    );
    assert_eq!(mount_fstype(info, Path::new("/usr")), None);
}

#[test]
fn unmerged_host_usr_is_not_an_overlay() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("usr")).unwrap();
    assert!(!is_merged(dir.path()).unwrap());
}
