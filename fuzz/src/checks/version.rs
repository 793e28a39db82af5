//! OS versions: parse, and systemd's order is a total order on every triple of versions.

use std::cmp::Ordering;

use upd_channels::version::OsVersion;

/// Up to three newline-separated versions; each that parses is kept as written, and the order
/// is reflexive, antisymmetric and transitive over them.
pub fn version(data: &[u8]) {
    let Some(text) = super::text(data) else {
        return;
    };
    let vs: Vec<OsVersion> = text
        .split('\n')
        .take(3)
        .filter_map(|s| {
            OsVersion::parse(s)
                .ok()
                .inspect(|v| assert_eq!(v.as_str(), s))
        })
        .collect();
    for a in &vs {
        assert_eq!(a.cmp(a), Ordering::Equal, "{a} vs itself");
        for b in &vs {
            assert_eq!(a.cmp(b), b.cmp(a).reverse(), "{a} vs {b}");
            assert_eq!(a == b, a.cmp(b) == Ordering::Equal);
            for c in &vs {
                if a <= b && b <= c {
                    assert!(a <= c, "{a} <= {b} <= {c} but not {a} <= {c}");
                }
            }
        }
    }
}
