use std::cmp::Ordering::{self, Equal, Greater, Less};

use super::{OsVersion, VersionError};

fn v(s: &str) -> OsVersion {
    OsVersion::parse(s).unwrap()
}

/// The order of real distributions' versions, as systemd orders them (the e2e suite checks the
/// same rule against the real `systemd-analyze compare-versions` on many more pairs).
#[test]
fn orders_real_world_versions() {
    let cases: &[(&str, &str, Ordering)] = &[
        ("12", "13", Less),       // Debian
        ("9", "10", Less),        // numbers, not strings
        ("39", "40", Less),       // Fedora
        ("22.04", "24.04", Less), // Ubuntu
        ("24.04", "24.10", Less),
        ("4081.2.0", "4081.2.1", Less), // Flatcar
        ("4081.2.1", "4152.0.0", Less),
        ("1.2.3", "1.10.0", Less),        // semver
        ("2.0.0~rc1", "2.0.0", Less),     // '~' is a pre-release
        ("2.0.0-rc.1", "2.0.0", Greater), // '-' is a suffix, newer than the end
        ("1.0", "1.00", Equal),
        ("1.0", "1.0.0", Less),
    ];
    for (a, b, want) in cases {
        assert_eq!(v(a).cmp(&v(b)), *want, "{a} vs {b}");
        assert_eq!(v(b).cmp(&v(a)), want.reverse(), "{b} vs {a}");
    }
}

#[test]
fn equal_under_the_rule_is_equal() {
    assert_eq!(v("1.0"), v("1.00"));
    assert_ne!(v("1.0"), v("1.0.0"));
    assert_eq!(v("1.00").to_string(), "1.00", "displayed as written");
}

#[test]
fn refuses_what_no_os_version_looks_like() {
    assert_eq!(OsVersion::parse(""), Err(VersionError::Empty));
    assert!(matches!(
        OsVersion::parse("1.0 beta"),
        Err(VersionError::BadChar { ch: ' ', .. })
    ));
    assert!(matches!(
        OsVersion::parse("1/2"),
        Err(VersionError::BadChar { ch: '/', .. })
    ));
    assert!(matches!(
        OsVersion::parse("-1"),
        Err(VersionError::BadStart(_))
    ));
    assert!(matches!(
        OsVersion::parse("~1"),
        Err(VersionError::BadStart(_))
    ));
    assert!(matches!(
        OsVersion::parse(&"1".repeat(65)),
        Err(VersionError::TooLong(_))
    ));
    for ok in [
        "12",
        "24.04",
        "4081.2.0",
        "1.2.3+build.5",
        "2.0.0~rc1",
        "1^p1",
        "rolling",
        "1_2",
    ] {
        assert_eq!(OsVersion::parse(ok).unwrap().as_str(), ok);
    }
}

#[test]
fn serde_is_the_plain_string_and_checks_at_the_boundary() {
    let x: OsVersion = serde_json::from_str("\"24.04\"").unwrap();
    assert_eq!(serde_json::to_string(&x).unwrap(), "\"24.04\"");
    let e = serde_json::from_str::<OsVersion>("\".12\"").unwrap_err();
    assert!(
        e.to_string()
            .contains("must start with a letter or a digit"),
        "{e}"
    );
}

/// Versions built from every character class the rule knows, `n` of them, reproducibly.
fn generated(n: usize) -> Vec<String> {
    const ALPHABET: &[u8] = b"0019ab.~-^_+";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 7) as usize;
            let mut s = String::from("1");
            for i in 0..len {
                s.push(ALPHABET[((x >> (8 * i)) % ALPHABET.len() as u64) as usize] as char);
            }
            s
        })
        .collect()
}

#[test]
fn the_order_is_total_and_antisymmetric() {
    let vs: Vec<OsVersion> = generated(300).iter().map(|s| v(s)).collect();
    for a in &vs {
        assert_eq!(a.cmp(a), Equal, "{a}");
        for b in &vs {
            assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a} vs {b}");
        }
    }
    let mut sorted = vs.clone();
    sorted.sort();
    for w in sorted.windows(2) {
        assert_ne!(w[0].cmp(&w[1]), Greater, "{} then {}", w[0], w[1]);
    }
}
