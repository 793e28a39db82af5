//! Schema and validation rules of the manifest.

use super::*;

const H: &str = "a3f1c2d4e5b6a7980112233445566778899aabbccddeeff00112233445566778";

fn sample() -> serde_json::Value {
    serde_json::json!({
        "schema": 1, "channel": "stable", "serial": 3,
        "issued": "2026-11-01T00:00:00Z", "expires": "2026-12-01T00:00:00Z",
        "releases": [{
            "version": "1.0.0",
            "os": {"identity": {"id": "updos", "version_id": "1.0.0", "architecture": "x86-64"},
                   "image": {"path": "os/usr-1.0.0.raw", "size": 4096, "sha256": H}},
            "extensions": [{"name": "hello", "version": "1.0.0",
                "image": {"path": "ext/hello-1.0.0.raw", "size": 4096, "sha256": H},
                "release": {"id": "updos", "version_id": "1.0.0"}}]
        }]
    })
}

fn parse(v: &serde_json::Value) -> Result<Manifest, SchemaError> {
    Manifest::from_bytes(&serde_json::to_vec(v).unwrap())
}

#[test]
fn sample_parses_and_roundtrips() {
    let m = parse(&sample()).unwrap();
    assert_eq!(m.channel.as_str(), "stable");
    assert_eq!(Manifest::from_bytes(&m.to_bytes()).unwrap(), m);
    assert_eq!(m.releases[0].builds_of("hello").count(), 1);
}

/// Each row breaks one rule; the error must say what.
#[test]
fn each_broken_rule_is_refused_with_its_reason() {
    type Edit = fn(&mut serde_json::Value);
    let rows: &[(&str, Edit, &str)] = &[
        (
            "unsafe ext name",
            |v| v["releases"][0]["extensions"][0]["name"] = "..".into(),
            "starts with",
        ),
        (
            "name with slash",
            |v| v["releases"][0]["extensions"][0]["name"] = "a/b".into(),
            "'/'",
        ),
        (
            "absolute path",
            |v| v["releases"][0]["os"]["image"]["path"] = "/etc/shadow".into(),
            "absolute",
        ),
        (
            "climbing path",
            |v| v["releases"][0]["os"]["image"]["path"] = "os/../../x".into(),
            "climb",
        ),
        (
            "short sha",
            |v| v["releases"][0]["os"]["image"]["sha256"] = "abc".into(),
            "64 hex",
        ),
        (
            "non-hex sha",
            |v| v["releases"][0]["os"]["image"]["sha256"] = H.replace('a', "z").into(),
            "64 hex",
        ),
        (
            "zero size",
            |v| v["releases"][0]["os"]["image"]["size"] = 0.into(),
            "size 0",
        ),
        (
            "negative size",
            |v| v["releases"][0]["os"]["image"]["size"] = (-1).into(),
            "invalid value",
        ),
        (
            "bad OS version",
            |v| v["releases"][0]["version"] = "1.0 beta".into(),
            "only A-Z a-z 0-9 . _ ~ ^ + - are allowed",
        ),
        (
            "extension version not semver",
            |v| v["releases"][0]["extensions"][0]["version"] = "1.0".into(),
            "version",
        ),
        (
            "two versions systemd counts as one",
            |v| {
                let mut r = v["releases"][0].clone();
                v["releases"][0]["version"] = "1.0".into();
                r["version"] = "1.00".into();
                v["releases"].as_array_mut().unwrap().push(r);
            },
            "ascending version order without duplicates: 1.0 then 1.00",
        ),
        (
            "numeric order, not string order",
            |v| {
                let mut r = v["releases"][0].clone();
                v["releases"][0]["version"] = "10".into();
                r["version"] = "9".into();
                v["releases"].as_array_mut().unwrap().push(r);
            },
            "10 then 9",
        ),
        (
            "unknown field",
            |v| v["surprise"] = 1.into(),
            "unknown field",
        ),
        ("schema 2", |v| v["schema"] = 2.into(), "schema 2"),
        (
            "expires before issued",
            |v| v["expires"] = "2026-10-01T00:00:00Z".into(),
            "before issued",
        ),
        (
            "duplicate release",
            |v| {
                let r = v["releases"][0].clone();
                v["releases"].as_array_mut().unwrap().push(r);
            },
            "ascending",
        ),
        (
            "out of order",
            |v| {
                let mut r = v["releases"][0].clone();
                r["version"] = "0.9.0".into();
                v["releases"].as_array_mut().unwrap().push(r);
            },
            "ascending",
        ),
        (
            "duplicate ext build",
            |v| {
                let e = v["releases"][0]["extensions"][0].clone();
                v["releases"][0]["extensions"]
                    .as_array_mut()
                    .unwrap()
                    .push(e);
            },
            "twice",
        ),
        (
            "redirect on live release",
            |v| v["releases"][0]["redirect_to"] = "1.0.0".into(),
            "withdrawn",
        ),
        (
            "redirect nowhere",
            |v| {
                v["releases"][0]["withdrawn"] = true.into();
                v["releases"][0]["redirect_to"] = "0.1.0".into();
            },
            "not a release",
        ),
        (
            "rollout shrinking",
            |v| {
                v["releases"][0]["rollout"] = serde_json::json!({
            "start": "2026-11-02T00:00:00Z",
            "steps": [{"after_hours": 0.0, "percent": 50.0}, {"after_hours": 1.0, "percent": 10.0}]});
            },
            "grow",
        ),
        (
            "rollout over 100",
            |v| {
                v["releases"][0]["rollout"] = serde_json::json!({
            "start": "2026-11-02T00:00:00Z", "steps": [{"after_hours": 0.0, "percent": 101.0}]});
            },
            "outside",
        ),
        (
            "chunk index too large",
            |v| {
                v["releases"][0]["extensions"][0]["image"]["chunk_index"] = serde_json::json!(
                    {"path": "ext/hello-1.0.0.raw.chunks", "size": 1u64 << 40, "sha256": H});
            },
            "chunk index",
        ),
        (
            "chunk index is the image",
            |v| {
                v["releases"][0]["extensions"][0]["image"]["chunk_index"] = serde_json::json!(
                    {"path": "ext/hello-1.0.0.raw", "size": 80, "sha256": H});
            },
            "the image itself",
        ),
        (
            "chunk index climbing",
            |v| {
                v["releases"][0]["extensions"][0]["image"]["chunk_index"] = serde_json::json!(
                    {"path": "../x.chunks", "size": 80, "sha256": H});
            },
            "climb",
        ),
        (
            "chunk index unknown field",
            |v| {
                v["releases"][0]["extensions"][0]["image"]["chunk_index"] = serde_json::json!(
                    {"path": "x.chunks", "size": 80, "sha256": H, "algo": "v2016"});
            },
            "unknown field",
        ),
        (
            "ext without ID",
            |v| v["releases"][0]["extensions"][0]["release"]["id"] = "".into(),
            "no ID",
        ),
    ];
    for (what, edit, needle) in rows {
        let mut v = sample();
        edit(&mut v);
        let err = parse(&v).expect_err(what).to_string();
        assert!(
            err.contains(needle),
            "{what}: error {err:?} does not mention {needle:?}"
        );
    }
}

#[test]
fn chunk_index_is_optional_and_round_trips() {
    // A manifest of before delta downloads has no index; one with an index keeps it through a round trip.
    let m = parse(&sample()).unwrap();
    assert_eq!(m.releases[0].extensions[0].image.chunk_index, None);
    assert!(!String::from_utf8(m.to_bytes())
        .unwrap()
        .contains("chunk_index"));
    let mut v = sample();
    v["releases"][0]["extensions"][0]["image"]["chunk_index"] =
        serde_json::json!({"path": "ext/hello-1.0.0.raw.chunks", "size": 80, "sha256": H});
    let m = parse(&v).unwrap();
    let ix = m.releases[0].extensions[0]
        .image
        .chunk_index
        .as_ref()
        .unwrap();
    assert_eq!(
        (ix.path.as_str(), ix.size),
        ("ext/hello-1.0.0.raw.chunks", 80)
    );
    assert_eq!(Manifest::from_bytes(&m.to_bytes()).unwrap(), m);
}

#[test]
fn oversized_manifest_refused_before_parsing() {
    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(
        Manifest::from_bytes(&big),
        Err(SchemaError::TooLarge { .. })
    ));
}

/// Found by the `manifest` fuzz target: a long number in a rollout step parsed to an f64 one
/// unit in the last place away from the shortest form serde_json writes, so a manifest written
/// back (as the publisher does on every edit) parsed to a different manifest. serde_json's
/// `float_roundtrip` parses correctly rounded.
#[test]
fn long_numbers_round_trip_exactly() {
    let text = serde_json::to_string(&sample()).unwrap().replace(
        "\"version\":\"1.0.0\"}",
        "\"version\":\"1.0.0\",\"rollout\":{\"start\":\"2026-11-02T00:00:00Z\",\"steps\":\
         [{\"after_hours\":0,\"percent\":10},\
         {\"after_hours\":24111111111111111111111111111111111111111111111111111,\"percent\":100}]}}",
    );
    let m = Manifest::from_bytes(text.as_bytes()).unwrap();
    assert!(
        m.releases[0].rollout.is_some(),
        "the rollout was not spliced in: {text}"
    );
    assert_eq!(Manifest::from_bytes(&m.to_bytes()).unwrap(), m);
}
