//! A machine report as the fleet server receives it (`Report::parse`: any client with the
//! fleet's token may send one).

use upd_channels::report::Report;

/// What parses passes its own field checks, is written back and parses the same; its outcome
/// names either the pending release or the booted one.
pub fn report(data: &[u8]) {
    let Ok(r) = Report::parse(data) else {
        return;
    };
    r.check().expect("a parsed report passes its checks");
    let json = serde_json::to_vec(&r).expect("a report serialises");
    assert_eq!(Report::parse(&json).expect("written back parses"), r);
    if let Some((release, _)) = r.outcome() {
        assert!(r.pending.as_deref() == Some(release) || r.booted.os == release);
    }
}
